//! The command line: clap options, kept apart from the validated plan, and
//! `run`, which turns a command into an exit code.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use std::sync::Arc;

use clap::{Parser, Subcommand};
use miette::{IntoDiagnostic, WrapErr};

use crate::check;
use crate::etcd::{RetryPolicy, Side};
use crate::plan::{PlanError, PlanOptions, PlanReport, Progress, make_plan};
use crate::planfile;
use crate::render::{self, Format, RenderOptions};
use crate::saved::SavedPlan;

/// Exit code: success (and, with `--detailed-exitcode`, no changes).
pub const EXIT_OK: u8 = 0;
/// Exit code: an error, including a usage error.
pub const EXIT_ERROR: u8 = 1;
/// Exit code with `--detailed-exitcode`: the plan has changes to apply.
pub const EXIT_CHANGES: u8 = 2;

static NO_COLOR_FLAG: AtomicBool = AtomicBool::new(false);

/// Whether output may use colour: a terminal, no `NO_COLOR`, no `--no-color`.
pub fn color_enabled() -> bool {
    color_enabled_for(std::io::stderr().is_terminal())
}

#[derive(Debug, Parser)]
#[command(
    name = "etcdplan",
    version,
    about = "Plan and apply etcd key migrations between clusters: declare, review, apply.",
    long_about = "Plan and apply etcd key migrations between clusters.\n\n\
        A YAML plan file declares the source and destination clusters, the key prefixes to \
        move (with rewrites and exclusions) and the TLS and auth settings. etcdplan checks it, \
        shows what would change, and writes only what was reviewed.",
    after_help = "Examples:\n  etcdplan validate plans/trident-external-etcd.yaml\n  etcdplan schema > schemas/plan.schema.json"
)]
pub struct Cli {
    /// Never colour the output (the NO_COLOR environment variable does the same).
    #[arg(long, global = true)]
    pub no_color: bool,

    /// More log output on stderr: -v for info, -vv for debug, -vvv for trace.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a plan file offline: syntax, fields, prefixes, endpoints, TLS files
    /// and password variables. Exit 0 when valid, 1 otherwise.
    #[command(after_help = "Example:\n  etcdplan validate plans/trident-external-etcd.yaml")]
    Validate {
        /// The plan file (YAML).
        plan: PathBuf,
    },

    /// Read both clusters at a pinned source revision and show what apply would
    /// change. Writes nothing.
    #[command(
        after_help = "Examples:\n  etcdplan plan plans/trident-external-etcd.yaml\n  etcdplan plan plan.yaml --format markdown --detailed-exitcode > comment.md\n  etcdplan plan plan.yaml --out plan.saved.json   # for `etcdplan apply plan.saved.json`"
    )]
    Plan {
        /// The plan file (YAML).
        plan: PathBuf,
        #[command(flatten)]
        output: OutputArgs,
        /// Save the plan (no values, only hashes) for an exact apply later,
        /// e.g. --out plan.saved.json.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Exit 2 when there are changes to apply, 0 when there are none, 1 on
        /// errors (Terraform's convention, for CI).
        #[arg(long)]
        detailed_exitcode: bool,
    },

    /// Render a saved plan (from `plan --out`) without any network access.
    #[command(after_help = "Example:\n  etcdplan show plan.saved.json --format markdown")]
    Show {
        /// A saved plan file.
        saved: PathBuf,
        #[command(flatten)]
        output: OutputArgs,
    },

    /// Preflight both clusters: endpoints, TLS, versions, cluster ids,
    /// members, database size, and the permissions the plan needs (probed
    /// without changing data). Exit 0 when everything is in place, 1 otherwise.
    #[command(after_help = "Example:\n  etcdplan check plans/trident-external-etcd.yaml")]
    Check {
        /// The plan file (YAML).
        plan: PathBuf,
    },

    /// Print the plan file's JSON Schema (the one in schemas/plan.schema.json).
    #[command(after_help = "Example:\n  etcdplan schema > schemas/plan.schema.json")]
    Schema,
}

/// How a plan is printed.
#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// Output format: text for terminals, markdown for pull-request comments,
    /// json for machines (e.g. --format markdown).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// List at most N changes in text and markdown; the summary still counts
    /// all (e.g. --max-listed 100).
    #[arg(long, value_name = "N")]
    pub max_listed: Option<usize>,
}

impl OutputArgs {
    fn render(&self, report: &PlanReport) -> String {
        let options = RenderOptions {
            color: stdout_color(),
            max_listed: self.max_listed,
        };
        match self.format {
            Format::Text => render::render_text(report, options),
            Format::Markdown => render::render_markdown(report, options),
            Format::Json => render::render_json(report),
        }
    }
}

/// Whether stdout may be coloured.
fn stdout_color() -> bool {
    color_enabled_for(std::io::stdout().is_terminal())
}

fn color_enabled_for(terminal: bool) -> bool {
    !NO_COLOR_FLAG.load(Ordering::Relaxed)
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && terminal
}

/// Parses `args` (program name first) and runs the command. Returns the
/// process exit code; everything the user sees is printed here.
pub fn run<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Usage errors exit 1, keeping 2 free for "plan has changes".
            return if e.use_stderr() { EXIT_ERROR } else { EXIT_OK };
        }
    };
    NO_COLOR_FLAG.store(cli.no_color, Ordering::Relaxed);
    init_logging(cli.verbose);
    match execute(cli.command, cli.verbose) {
        Ok(code) => code,
        Err(report) => {
            eprintln!("{report:?}");
            EXIT_ERROR
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ETCDPLAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("etcdplan={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color_enabled())
        .try_init();
}

fn runtime() -> miette::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .into_diagnostic()
        .wrap_err("cannot start the async runtime")
}

fn execute(command: Command, verbose: u8) -> miette::Result<u8> {
    match command {
        Command::Plan {
            plan,
            output,
            out,
            detailed_exitcode,
        } => {
            let plan = planfile::load(&plan)?;
            let report =
                runtime()?.block_on(plan_with_progress(&plan, PlanOptions::default(), verbose))?;
            if let Some(path) = &out {
                SavedPlan::new(&plan, &report).write(path)?;
            }
            print!("{}", output.render(&report));
            if let Some(path) = &out {
                eprintln!(
                    "Saved plan to {}; apply exactly these changes with: etcdplan apply {}",
                    path.display(),
                    path.display()
                );
            }
            Ok(if detailed_exitcode && report.has_writes() {
                EXIT_CHANGES
            } else {
                EXIT_OK
            })
        }
        Command::Show { saved, output } => {
            let plan = SavedPlan::read(&saved)?;
            let report = plan.to_report(&saved)?;
            print!("{}", output.render(&report));
            Ok(EXIT_OK)
        }
        Command::Check { plan } => {
            let plan = planfile::load(&plan)?;
            let sides = runtime()?.block_on(async {
                let source = Side::new(&plan.source, RetryPolicy::quick());
                let destination = Side::new(&plan.destination, RetryPolicy::quick());
                let froms: Vec<Vec<u8>> = plan.mappings.iter().map(|m| m.from.clone()).collect();
                let tos: Vec<Vec<u8>> = plan.mappings.iter().map(|m| m.to.clone()).collect();
                tokio::join!(
                    check::check_side(&source, &froms, &[]),
                    check::check_side(&destination, &tos, &tos)
                )
            });
            let sides = [sides.0, sides.1];
            print!("{}", check::render(&plan, &sides));
            Ok(if sides.iter().all(check::SideCheck::ok) {
                EXIT_OK
            } else {
                EXIT_ERROR
            })
        }
        Command::Validate { plan } => {
            let plan = planfile::load(&plan)?;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", describe(&plan));
            Ok(EXIT_OK)
        }
        Command::Schema => {
            print!("{}", crate::schema::plan_schema_json());
            Ok(EXIT_OK)
        }
    }
}

/// Plans with a progress line on a terminal (keys read per side), and on a
/// pipe a log line every few seconds when `-v` is given.
pub async fn plan_with_progress(
    plan: &planfile::Plan,
    options: PlanOptions,
    verbose: u8,
) -> Result<PlanReport, PlanError> {
    let source = Arc::new(Side::new(&plan.source, RetryPolicy::default()));
    let destination = Arc::new(Side::new(&plan.destination, RetryPolicy::default()));
    let progress = Arc::new(Progress::default());
    let ticker = spawn_progress(progress.clone(), verbose);
    let result = make_plan(plan, source, destination, &options, progress).await;
    ticker.abort();
    let _ = ticker.await;
    result
}

fn spawn_progress(progress: Arc<Progress>, verbose: u8) -> tokio::task::JoinHandle<()> {
    let terminal = std::io::stderr().is_terminal();
    tokio::spawn(async move {
        let read = |p: &Progress| {
            format!(
                "reading: source {} keys, destination {} keys",
                render::thousands(p.source_keys.load(Ordering::Relaxed)),
                render::thousands(p.destination_keys.load(Ordering::Relaxed))
            )
        };
        if terminal {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            let _guard = ClearOnDrop(bar.clone());
            loop {
                bar.set_message(read(&progress));
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        } else if verbose > 0 {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                tracing::info!("{}", read(&progress));
            }
        }
    })
}

/// Clears the spinner when the progress task is aborted.
struct ClearOnDrop(indicatif::ProgressBar);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// One line that says what a valid plan will do.
fn describe(plan: &planfile::Plan) -> String {
    let side = |s: &planfile::SideConfig| {
        format!(
            "{} endpoint{} ({}{})",
            s.endpoints.len(),
            if s.endpoints.len() == 1 { "" } else { "s" },
            if s.uses_tls { "TLS" } else { "plaintext" },
            s.auth
                .as_ref()
                .map(|a| format!(", user {}", a.username))
                .unwrap_or_default()
        )
    };
    format!(
        "{} is valid: {} mapping{}, source {}, destination {}.",
        plan.path.display(),
        plan.mappings.len(),
        if plan.mappings.len() == 1 { "" } else { "s" },
        side(&plan.source),
        side(&plan.destination),
    )
}
