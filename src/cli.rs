//! The command line: clap options, kept apart from the validated plan, and
//! `run`, which turns a command into an exit code.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use std::sync::Arc;

use clap::{Parser, Subcommand};
use miette::{IntoDiagnostic, WrapErr};

use crate::apply::{self, ApplyError, ApplyOptions, ApplyProgress, ApplyStats};
use crate::check;
use crate::engine;
use crate::etcd::{RetryPolicy, Side};
use crate::follow::{FollowEnd, FollowError};
use crate::plan::{MAX_REPLANS, PlanError, PlanOptions, PlanReport, Progress, make_plan_fresh};
use crate::planfile;
use crate::render::{self, Format, RenderOptions};
use crate::saved::SavedPlan;

/// Exit code: success (and, with `--detailed-exitcode`, no changes).
pub const EXIT_OK: u8 = 0;
/// Exit code: an error, including a usage error.
pub const EXIT_ERROR: u8 = 1;
/// Exit code with `--detailed-exitcode`: the plan has changes to apply.
pub const EXIT_CHANGES: u8 = 2;
/// Exit code of `apply`: the plan is stale or someone else wrote meanwhile.
pub const EXIT_STALE: u8 = 3;

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

    /// Seconds one etcd request may go unanswered before it is abandoned
    /// and tried on the next endpoint (a hung member keeps its connection
    /// open and never answers), e.g. --request-timeout 10 for a cluster
    /// known to answer slowly.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = crate::etcd::DEFAULT_REQUEST_TIMEOUT.as_secs_f64(), value_parser = positive_number)]
    pub request_timeout: f64,

    /// Seconds a request may go without an answer from any endpoint,
    /// retries included, before the run fails with a clear error (nothing
    /// already written is lost; a rerun resumes), e.g. --stall-timeout 120.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = crate::etcd::DEFAULT_STALL_TIMEOUT.as_secs_f64(), value_parser = positive_number)]
    pub stall_timeout: f64,

    /// Seconds to establish a connection to an endpoint, e.g. --connect-timeout 1.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 3.0, value_parser = positive_number)]
    pub connect_timeout: f64,

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
        after_help = "Examples:\n  etcdplan plan plans/trident-external-etcd.yaml\n  etcdplan plan plan.yaml --format markdown --detailed-exitcode > comment.md\n  etcdplan plan plan.yaml --out plan.saved.json   # for `etcdplan apply plan.saved.json`\n  etcdplan plan --undo plan.saved.json --out undo.saved.json   # then `etcdplan apply undo.saved.json`"
    )]
    Plan {
        /// The plan file (YAML).
        #[arg(required_unless_present = "undo", conflicts_with = "undo")]
        plan: Option<PathBuf>,
        /// Plan the exact inverse of an applied saved plan, from the
        /// destination's own history: created keys deleted, updated keys
        /// given their earlier values, pruned keys put back (move mode: source
        /// keys restored). Only keys still holding what the apply wrote are
        /// undone. Possible until the destination compacts that history.
        #[arg(long, value_name = "SAVED_PLAN")]
        undo: Option<PathBuf>,
        /// With --undo: the plan file the saved plan was made from, when it
        /// is not at the path the saved plan records.
        #[arg(long, value_name = "PLAN_FILE", requires = "undo")]
        plan_file: Option<PathBuf>,
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
        #[command(flatten)]
        limits: LimitArgs,
    },

    /// Apply a plan: a plan file (plans now, shows the plan, asks for `yes`)
    /// or a saved plan from `plan --out` (applies exactly the reviewed
    /// changes, no question). Guarded, batched, resumable: rerun the same
    /// command after a crash to finish. Exit 0 done, 1 error, 3 stale plan or
    /// concurrent writer.
    #[command(
        after_help = "Examples:\n  etcdplan apply plans/trident-external-etcd.yaml            # asks before writing\n  etcdplan apply plan.yaml --auto-approve --rate 2000       # CI, at most 2000 keys/s\n  etcdplan apply plan.saved.json                            # exactly what was reviewed"
    )]
    Apply(ApplyArgs),

    /// Render a saved plan (from `plan --out`) without any network access.
    #[command(after_help = "Example:\n  etcdplan show plan.saved.json --format markdown")]
    Show {
        /// A saved plan file.
        saved: PathBuf,
        #[command(flatten)]
        output: OutputArgs,
    },

    /// Preflight both clusters: endpoints, TLS, cluster and member ids, the
    /// members, and every permission the run needs, probed without changing
    /// data: the mapped prefixes and the follow checkpoint key. Version,
    /// leader and database size are shown where this user may ask for
    /// Status (current etcd 3.5 answers it to root only); not knowing them
    /// fails nothing. Exit 0 when everything is in place, 1 otherwise.
    #[command(
        after_help = "Examples:\n  etcdplan check plans/trident-external-etcd.yaml\n  etcdplan check plans/trident-external-etcd.yaml --follow --checkpoint-key /trident-etcdplan/checkpoint"
    )]
    Check {
        /// The plan file (YAML).
        plan: PathBuf,
        /// The run will use `apply --follow`: the checkpoint key's
        /// permissions are required, not only reported.
        #[arg(long)]
        follow: bool,
        /// The checkpoint key `apply --follow` will use (default
        /// /etcdplan/checkpoint/<plan name>).
        #[arg(long, value_name = "KEY")]
        checkpoint_key: Option<String>,
    },

    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  etcdplan completions bash > /etc/bash_completion.d/etcdplan\n  etcdplan completions zsh > \"${fpath[1]}/_etcdplan\"\n  etcdplan completions fish > ~/.config/fish/completions/etcdplan.fish"
    )]
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },

    /// Print the man page (roff), or with --out-dir write one page per
    /// command there (the ones in man/).
    #[command(after_help = "Examples:\n  etcdplan man | man -l -\n  etcdplan man --out-dir man/")]
    Man {
        /// Write etcdplan.1 and etcdplan-COMMAND.1 into this folder.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },

    /// Print the plan file's JSON Schema (the one in schemas/plan.schema.json).
    #[command(after_help = "Example:\n  etcdplan schema > schemas/plan.schema.json")]
    Schema,
}

/// Options of `apply`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApplyArgs {
    /// A plan file (YAML) or a saved plan (from `plan --out`), recognised by
    /// its content. A saved plan is applied with the plan file it was made
    /// from, read from disk and checked against the hash it records: its
    /// endpoints, TLS, auth and rules come from that file, never from the
    /// saved plan. With ETCDPLAN_SIGNING_KEY set, only a saved plan signed
    /// with that key is applied.
    pub target: PathBuf,
    /// For a saved plan: the plan file it was made from, when it is not at
    /// the path the saved plan records (relative to the working folder, as
    /// `plan` was given it), e.g. --plan-file plans/trident.yaml.
    #[arg(long, value_name = "PLAN_FILE")]
    pub plan_file: Option<PathBuf>,
    /// Apply a plan file without asking (needed without a terminal, e.g. in CI).
    #[arg(long)]
    pub auto_approve: bool,
    /// Most keys per transaction; etcd refuses more than its --max-txn-ops
    /// (128 by default), e.g. --max-txn-ops 64.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_txn_ops: u64,
    /// Request bytes per batched transaction, e.g. --max-txn-bytes 524288. A
    /// key too big for a batch is still written, alone, when it fits
    /// --max-request-bytes.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_txn_bytes: u64,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Transactions in flight at once, e.g. --concurrency 4.
    #[arg(long, default_value_t = crate::apply::DEFAULT_CONCURRENCY as u64, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub concurrency: u64,
    /// Write at most this many keys per second, so a busy production cluster
    /// is not overrun, e.g. --rate 2000.
    #[arg(long, value_name = "KEYS_PER_SECOND", value_parser = positive_number)]
    pub rate: Option<f64>,
    #[command(flatten)]
    pub output: OutputArgs,
    /// After the apply, keep following the source: apply every later put and
    /// delete in source-revision order until Ctrl-C, --until-revision or
    /// --cutover-file. Resumes from its checkpoint when restarted.
    #[arg(long)]
    pub follow: bool,
    /// With --follow: stop once this source revision is applied, e.g.
    /// --until-revision 123456.
    #[arg(long, value_name = "REVISION", requires = "follow")]
    pub until_revision: Option<i64>,
    /// With --follow: stop as soon as this file exists and the lag is zero,
    /// e.g. --cutover-file /tmp/cutover.
    #[arg(long, value_name = "PATH", requires = "follow")]
    pub cutover_file: Option<PathBuf>,
    /// With --follow: the destination key holding the last applied source
    /// revision (default /etcdplan/checkpoint/<plan name>), e.g.
    /// --checkpoint-key /ops/etcdplan/trident.
    #[arg(long, value_name = "KEY", requires = "follow")]
    pub checkpoint_key: Option<String>,
    /// With --follow: seconds between lag reports, e.g. --progress-every 10.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 5.0,
        requires = "follow"
    )]
    pub progress_every: f64,
}

/// The destination's limits, shared by `plan` and `apply`.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// The destination etcd's --max-request-bytes (1.5 MiB unless its
    /// operator changed it): no request is larger. `plan` names every key that
    /// cannot fit under it, and `apply` refuses such a plan before writing,
    /// e.g. --max-request-bytes 10485760.
    #[arg(long, value_name = "BYTES", default_value_t = crate::etcd::write::DEFAULT_MAX_REQUEST_BYTES as u64, value_parser = clap::value_parser!(u64).range(4096..))]
    pub max_request_bytes: u64,
}

/// A finite number above zero, for rates and intervals.
fn positive_number(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{text}` is not a number above zero")),
    }
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
    /// Prints the plan on stdout, streamed: a plan of a million changes
    /// goes from the spill file to the terminal without being held.
    fn print(&self, report: &PlanReport) {
        let options = RenderOptions {
            color: stdout_color(),
            max_listed: self.max_listed,
        };
        let mut out = std::io::stdout().lock();
        let written = match self.format {
            Format::Text => render::write_text(report, options, &mut out),
            Format::Json => render::write_json(report, &mut out),
            Format::Markdown => out.write_all(render::render_markdown(report, options).as_bytes()),
        };
        if let Err(e) = written
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            tracing::error!("printing the plan failed: {e}");
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
    let ctx = Ctx {
        verbose: cli.verbose,
        policy: RetryPolicy {
            request_timeout: std::time::Duration::from_secs_f64(cli.request_timeout),
            connect_timeout: std::time::Duration::from_secs_f64(cli.connect_timeout),
            stall_timeout: std::time::Duration::from_secs_f64(cli.stall_timeout),
            ..RetryPolicy::default()
        },
    };
    match execute(cli.command, &ctx) {
        Ok(code) => code,
        Err(report) => {
            errln!("{report:?}");
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

/// What every command shares: verbosity and how hard to try on etcd.
#[derive(Debug, Clone, Default)]
pub struct Ctx {
    pub verbose: u8,
    pub policy: RetryPolicy,
}

impl Ctx {
    /// Both sides of a plan, connected lazily with this run's policy.
    pub fn sides(&self, plan: &planfile::Plan) -> (Arc<Side>, Arc<Side>) {
        engine::sides(plan, &self.policy)
    }
}

fn execute(command: Command, ctx: &Ctx) -> miette::Result<u8> {
    match command {
        Command::Plan {
            undo: Some(saved),
            plan_file,
            output,
            out,
            detailed_exitcode,
            ..
        } => {
            let key = crate::saved::sign::SigningKey::from_env()?;
            let crate::saved::Opened {
                plan,
                report: applied,
            } = crate::saved::open(
                &saved,
                plan_file.as_deref(),
                &planfile::ProcessEnv,
                key.as_ref(),
            )?;
            let (source, destination) = ctx.sides(&plan);
            let report = runtime()?.block_on(crate::undo::plan_undo(
                &plan,
                &applied,
                source,
                destination,
            ))?;
            finish_plan(&report, &output, out.as_deref(), detailed_exitcode)
        }
        Command::Plan {
            plan,
            output,
            out,
            detailed_exitcode,
            limits,
            ..
        } => {
            let Some(plan) = plan else {
                return Err(miette::miette!("a plan file is required"));
            };
            let plan = planfile::load(&plan)?;
            for p in plan.idle_sensitive() {
                errln!(
                    "warning: the sensitive prefix `{}` lies under no `from` and no `to`: it hides nothing (a typo?)",
                    crate::keys::display_key(p)
                );
            }
            let options = PlanOptions {
                max_request_bytes: limits.max_request_bytes as usize,
                ..PlanOptions::default()
            };
            let (source, destination) = ctx.sides(&plan);
            let report = runtime()?.block_on(plan_with_progress(
                &plan,
                source,
                destination,
                options,
                ctx.verbose,
            ))?;
            finish_plan(&report, &output, out.as_deref(), detailed_exitcode)
        }
        Command::Apply(args) => runtime()?.block_on(apply_command(args, ctx)),
        Command::Show { saved, output } => {
            let plan = SavedPlan::read(&saved)?;
            let report = plan.to_report(&saved)?;
            output.print(&report);
            report.changes.check().map_err(PlanError::Spill)?;
            Ok(EXIT_OK)
        }
        Command::Check {
            plan,
            follow,
            checkpoint_key,
        } => {
            let plan = planfile::load(&plan)?;
            let checkpoint_key = match checkpoint_key {
                Some(k) => crate::keys::parse_key(&k)
                    .map_err(|e| miette::miette!("--checkpoint-key: {e}"))?,
                None => crate::follow::default_checkpoint_key(&plan),
            };
            let options = check::CheckOptions {
                checkpoint_key,
                follow,
            };
            let sides = runtime()?.block_on(check::run(&plan, &ctx.policy, &options));
            out!("{}", check::render(&plan, &sides, follow));
            Ok(if sides.iter().all(|s| s.ok(follow)) {
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
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "etcdplan", &mut std::io::stdout());
            Ok(EXIT_OK)
        }
        Command::Schema => {
            out!("{}", crate::schema::plan_schema_json());
            Ok(EXIT_OK)
        }
        Command::Man { out_dir } => {
            let pages = man_pages().into_diagnostic()?;
            match out_dir {
                None => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&pages[0].1).into_diagnostic()?;
                }
                Some(dir) => {
                    for (name, page) in &pages {
                        let path = dir.join(name);
                        std::fs::write(&path, page)
                            .into_diagnostic()
                            .wrap_err_with(|| format!("cannot write {}", path.display()))?;
                    }
                }
            }
            Ok(EXIT_OK)
        }
    }
}

/// The end of `plan` (and `plan --undo`): save the plan when asked, print
/// it, and pick the exit code.
fn finish_plan(
    report: &PlanReport,
    output: &OutputArgs,
    out: Option<&std::path::Path>,
    detailed_exitcode: bool,
) -> miette::Result<u8> {
    if let Some(path) = out {
        let key = crate::saved::sign::SigningKey::from_env()?;
        SavedPlan::new(report).write(path, key.as_ref())?;
    }
    output.print(report);
    report.changes.check().map_err(PlanError::Spill)?;
    if let Some(path) = out {
        errln!(
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

/// Plans with a progress line on a terminal (keys read per side), and on a
/// pipe a log line every few seconds when `-v` is given. When history is
/// compacted under a scan, plans again at a fresh revision and says so.
pub async fn plan_with_progress(
    plan: &planfile::Plan,
    source: Arc<Side>,
    destination: Arc<Side>,
    options: PlanOptions,
    verbose: u8,
) -> Result<PlanReport, PlanError> {
    let progress = Arc::new(Progress::default());
    let ticker = spawn_progress(progress.clone(), verbose);
    let result = make_plan_fresh(plan, source, destination, &options, progress, |e, n| {
        errln!(
            "{e}: history was compacted while planning; planning again at a fresh revision ({n} of {MAX_REPLANS}). Nothing has been written."
        );
    })
    .await;
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

async fn apply_command(args: ApplyArgs, ctx: &Ctx) -> miette::Result<u8> {
    let json = args.output.format == Format::Json;
    // Ctrl-C or SIGTERM from here on stops cleanly: before writing, nothing is
    // written; while writing, the transactions in flight finish first.
    let stop = Arc::new(AtomicBool::new(false));
    let signals = spawn_signal_watch(stop.clone());
    let result = if args.follow {
        follow_command(args, ctx, json, stop).await
    } else {
        apply_guarded(args, ctx, json, stop)
            .await
            .map(|(code, _)| code)
    };
    signals.abort();
    result
}

/// `apply --follow`, through [`engine::follow`]: the CLI prints each apply
/// as `apply` does, and the notices on stderr.
async fn follow_command(
    args: ApplyArgs,
    ctx: &Ctx,
    json: bool,
    stop: Arc<AtomicBool>,
) -> miette::Result<u8> {
    let checkpoint_key = match &args.checkpoint_key {
        Some(k) => {
            Some(crate::keys::parse_key(k).map_err(|e| miette::miette!("--checkpoint-key: {e}"))?)
        }
        None => None,
    };
    let request = engine::FollowRequest {
        apply: apply_request(&args, ctx)?,
        checkpoint_key,
        until_revision: args.until_revision,
        cutover_file: args.cutover_file.clone(),
        json,
        report_every: std::time::Duration::from_secs_f64(args.progress_every.max(0.1)),
    };
    let observer = FollowCli {
        cli: CliObserver::new(&args, ctx, json),
        args: args.clone(),
        code: std::sync::Mutex::new(None),
    };
    let result = engine::follow(&request, &observer, stop).await;
    observer.cli.swap_ticker(None);
    match result {
        Ok(engine::FollowOutcome::ApplyIncomplete) => Ok(observer
            .code
            .lock()
            .ok()
            .and_then(|c| *c)
            .unwrap_or(EXIT_ERROR)),
        Ok(engine::FollowOutcome::Stopped(end)) => {
            let (why, last_applied) = match end {
                FollowEnd::UntilReached { last_applied } => {
                    ("reached --until-revision", last_applied)
                }
                FollowEnd::Cutover { last_applied } => {
                    ("cutover file found and the lag is zero", last_applied)
                }
                FollowEnd::Interrupted { last_applied }
                | FollowEnd::Compacted { last_applied, .. } => ("interrupted", last_applied),
            };
            if json {
                outln!(
                    "{}",
                    crate::escape::to_json_string(
                        &serde_json::json!({"follow_stopped": {"reason": why, "last_applied_revision": last_applied}})
                    )
                );
            }
            errln!(
                "Follow stopped ({why}): source revision {last_applied} is applied. Resume with: etcdplan apply {} --follow",
                args.target.display()
            );
            Ok(EXIT_OK)
        }
        Err(e @ engine::EngineError::Follow(FollowError::Conflict { .. })) => {
            errln!("{:?}", miette::Report::new(e));
            errln!("Error: stale plan or concurrent writer: run plan again.");
            Ok(EXIT_STALE)
        }
        Err(e) => Err(e.into()),
    }
}

/// The CLI observer of a follow: each apply is reported like `apply`.
struct FollowCli {
    cli: CliObserver,
    args: ApplyArgs,
    code: std::sync::Mutex<Option<u8>>,
}

impl engine::Observer for FollowCli {
    fn planning(&self, progress: &Arc<Progress>) {
        self.cli.planning(progress)
    }
    fn replanning(&self, e: &crate::etcd::EtcdError, n: u32, max: u32) {
        self.cli.replanning(e, n, max)
    }
    fn review(&self, report: &PlanReport, review: engine::Review) -> bool {
        self.cli.review(report, review)
    }
    fn writing(&self, progress: &Arc<ApplyProgress>) {
        self.cli.writing(progress)
    }
}

impl engine::FollowObserver for FollowCli {
    fn applied(&self, outcome: &engine::ApplyOutcome) -> bool {
        self.cli.swap_ticker(None);
        let no_terminal = self.cli.no_terminal.load(Ordering::SeqCst);
        let code =
            report_outcome(&self.args, self.cli.json, outcome, no_terminal).unwrap_or_else(|e| {
                errln!("{e:?}");
                EXIT_ERROR
            });
        if let Ok(mut c) = self.code.lock() {
            *c = Some(code);
        }
        code == EXIT_OK
    }

    fn notice(&self, text: &str) {
        errln!("{text}");
    }
}

/// The CLI as an observer of the engine: spinners and progress bars on a
/// terminal, the plan printed for review, and the approval prompt.
struct CliObserver {
    output: OutputArgs,
    json: bool,
    verbose: u8,
    ticker: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Approval was needed but there is no terminal to ask on.
    no_terminal: AtomicBool,
}

impl CliObserver {
    fn new(args: &ApplyArgs, ctx: &Ctx, json: bool) -> CliObserver {
        CliObserver {
            output: args.output.clone(),
            json,
            verbose: ctx.verbose,
            ticker: std::sync::Mutex::new(None),
            no_terminal: AtomicBool::new(false),
        }
    }

    fn swap_ticker(&self, next: Option<tokio::task::JoinHandle<()>>) {
        if let Ok(mut t) = self.ticker.lock()
            && let Some(old) = std::mem::replace(&mut *t, next)
        {
            old.abort();
        }
    }
}

impl Drop for CliObserver {
    fn drop(&mut self) {
        self.swap_ticker(None);
    }
}

impl engine::Observer for CliObserver {
    fn planning(&self, progress: &Arc<Progress>) {
        self.swap_ticker(Some(spawn_progress(progress.clone(), self.verbose)));
    }

    fn replanning(&self, e: &crate::etcd::EtcdError, n: u32, max: u32) {
        errln!(
            "{e}: history was compacted while planning; planning again at a fresh revision ({n} of {max}). Nothing has been written."
        );
    }

    fn review(&self, report: &PlanReport, review: engine::Review) -> bool {
        if review != engine::Review::Overlapped {
            self.swap_ticker(None);
        }
        if !self.json {
            self.output.print(report);
        }
        if review != engine::Review::Approve || !report.has_writes() {
            return true;
        }
        if !std::io::stdin().is_terminal() {
            self.no_terminal.store(true, Ordering::SeqCst);
            return false;
        }
        out!("\nApply these changes? Only 'yes' will be accepted: ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        answer.trim() == "yes"
    }

    fn writing(&self, progress: &Arc<ApplyProgress>) {
        self.swap_ticker(Some(spawn_apply_progress(progress.clone())));
    }
}

/// Plans (or loads a saved plan) and applies it through the engine, then
/// says how it went. Returns the exit code and the source revision the
/// plan was pinned at.
async fn apply_guarded(
    args: ApplyArgs,
    ctx: &Ctx,
    json: bool,
    stop: Arc<AtomicBool>,
) -> miette::Result<(u8, i64)> {
    let request = apply_request(&args, ctx)?;
    let observer = CliObserver::new(&args, ctx, json);
    let result = engine::apply(&request, &observer, stop).await;
    observer.swap_ticker(None);
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            let code = if e.is_stale() { EXIT_STALE } else { EXIT_ERROR };
            if matches!(
                e,
                engine::EngineError::PlanFile(_)
                    | engine::EngineError::Saved(_)
                    | engine::EngineError::Plan(_)
                    | engine::EngineError::NotWritable { .. }
                    | engine::EngineError::SourceNotWritable { .. }
                    | engine::EngineError::Apply(
                        ApplyError::TooLarge { .. } | ApplyError::ClusterMismatch { .. }
                    )
            ) {
                return Err(e.into());
            }
            errln!("{:?}", miette::Report::new(e));
            return Ok((code, 0));
        }
    };
    let code = report_outcome(
        &args,
        json,
        &outcome,
        observer.no_terminal.load(Ordering::SeqCst),
    )?;
    Ok((code, outcome.source_revision()))
}

/// The engine's request for `apply`'s arguments.
fn apply_request(
    args: &ApplyArgs,
    ctx: &Ctx,
) -> Result<engine::ApplyRequest, crate::saved::sign::SignatureError> {
    Ok(engine::ApplyRequest {
        target: args.target.clone(),
        options: ApplyOptions {
            max_txn_ops: args.max_txn_ops as usize,
            max_txn_bytes: args.max_txn_bytes as usize,
            max_request_bytes: args.limits.max_request_bytes as usize,
            concurrency: args.concurrency as usize,
            rate: args.rate,
        },
        policy: ctx.policy.clone(),
        auto_approve: args.auto_approve,
        plan_file: args.plan_file.clone(),
        signing_key: crate::saved::sign::SigningKey::from_env()?,
    })
}

/// Prints how an apply ended and picks the exit code.
fn report_outcome(
    args: &ApplyArgs,
    json: bool,
    outcome: &engine::ApplyOutcome,
    no_terminal: bool,
) -> miette::Result<u8> {
    use engine::End;
    let (report, stats) = (&outcome.report, &outcome.stats);
    let resume = if outcome.saved {
        format!("etcdplan apply {}", args.target.display())
    } else {
        format!("etcdplan apply {} --auto-approve", args.target.display())
    };
    let print_json = |result: &str| {
        if json {
            print_apply_json(report, stats, result, outcome.verified);
        }
    };
    if let Some(restored) = &outcome.restored
        && !json
        && outcome.end != End::RestoreInterrupted
        && !(outcome.end == End::Stale
            && outcome.stats.proven() == 0
            && !restored.foreign.is_empty())
    {
        outln!(
            "Restored on the source: {} key(s), {} already in place.",
            render::thousands(restored.created),
            render::thousands(restored.already_in_place)
        );
    }
    if !stats.lease_expired.is_empty() {
        errln!(
            "{} key(s) not written: their source lease expired since the plan, and expired keys are not resurrected:\n{}",
            stats.lease_expired.len(),
            apply::list(&stats.lease_expired)
        );
    }
    match outcome.end {
        End::NoChanges => {
            print_json("no_changes");
            if !json {
                outln!("\nNothing to apply.");
            }
            Ok(EXIT_OK)
        }
        End::Cancelled if no_terminal => Err(miette::miette!(
            code = "etcdplan::apply::needs_approval",
            help = "review the plan above, then rerun with --auto-approve; or save it with `etcdplan plan --out FILE` and apply that file",
            "refusing to apply without a terminal to confirm on"
        )),
        End::Cancelled => {
            outln!("Apply cancelled; nothing was written.");
            Ok(EXIT_ERROR)
        }
        End::InterruptedBeforeWrites => {
            errln!("Interrupted before writing anything.");
            Ok(EXIT_ERROR)
        }
        End::RestoreInterrupted => {
            errln!(
                "\nInterrupted while restoring source keys.\nResume with: etcdplan apply {}",
                args.target.display()
            );
            Ok(EXIT_ERROR)
        }
        End::SourceChanged => {
            print_json("stale");
            errln!(
                "{:?}",
                miette::Report::new(ApplyError::SourceChanged {
                    count: stats.source_changed.len(),
                    listed: apply::list(&stats.source_changed),
                })
            );
            if stats.proven() > 0 {
                errln!("{}", stats_line("So far", stats));
            }
            Ok(EXIT_STALE)
        }
        End::Stale
            if report.undo.is_some()
                && !outcome.undo_kept.is_empty()
                && stats.foreign.is_empty() =>
        {
            print_json("stale");
            if outcome.verified.is_some() && !json {
                outln!("\n{}", stats_line("Apply complete", stats));
            }
            Ok(undo_stale(&outcome.undo_kept))
        }
        End::Stale if !stats.foreign.is_empty() => {
            print_json("stale");
            errln!(
                "\n{} key(s) were written by someone else since the plan and were left alone:\n{}",
                stats.foreign.len(),
                apply::list(&stats.foreign)
            );
            errln!("{}", stats_line("So far", stats));
            errln!("Error: stale plan or concurrent writer: run plan again.");
            Ok(EXIT_STALE)
        }
        End::Interrupted => {
            print_json("interrupted");
            errln!(
                "\nInterrupted after the transactions in flight: {} of {} changes done, {} not attempted.\n{}\nResume with: {resume}",
                render::thousands(stats.proven() + stats.foreign.len() as u64),
                render::thousands(report.summary.writes()),
                render::thousands(stats.not_attempted),
                stats_line("So far", stats)
            );
            Ok(EXIT_ERROR)
        }
        End::Stale | End::MoveInterrupted | End::Complete | End::TooLarge => {
            if !json {
                outln!("\n{}", stats_line("Apply complete", stats));
                outln!(
                    "Verified: {} planned key(s) hold what was planned.",
                    render::thousands(outcome.verified.unwrap_or(0))
                );
            }
            if let Some(moved) = &outcome.moved {
                if !json {
                    outln!(
                        "Moved: {} deleted from the source, {} already gone.",
                        render::thousands(moved.deleted_from_source),
                        render::thousands(moved.already_gone)
                    );
                }
                let mut kept = moved.changed_on_source.clone();
                kept.extend(moved.not_on_destination.iter().cloned());
                if !kept.is_empty() {
                    print_json("stale");
                    errln!(
                        "\n{} source key(s) were kept: changed on the source since the plan, or not on the destination with the planned value:\n{}",
                        kept.len(),
                        apply::list(&kept)
                    );
                    errln!("Error: stale plan or concurrent writer: run plan again.");
                    return Ok(EXIT_STALE);
                }
                if moved.not_attempted > 0 {
                    print_json("interrupted");
                    errln!(
                        "\nInterrupted while deleting moved keys from the source: {} not attempted.\nResume with: {resume}",
                        render::thousands(moved.not_attempted)
                    );
                    return Ok(EXIT_ERROR);
                }
            }
            if outcome.end == End::TooLarge {
                print_json("too_large");
                if !stats.oversized.is_empty() {
                    errln!(
                        "{:?}",
                        miette::Report::new(ApplyError::SkippedTooLarge {
                            count: stats.oversized.len(),
                            limit: outcome.max_request_bytes,
                            listed: apply::list(&stats.oversized),
                        })
                    );
                }
                if !stats.too_large.is_empty() {
                    errln!(
                        "{:?}",
                        miette::Report::new(ApplyError::RefusedTooLarge {
                            count: stats.too_large.len(),
                            limit: outcome.max_request_bytes,
                            listed: apply::list(&stats.too_large),
                        })
                    );
                }
                return Ok(EXIT_ERROR);
            }
            if !outcome.undo_kept.is_empty() {
                print_json("stale");
                return Ok(undo_stale(&outcome.undo_kept));
            }
            print_json("complete");
            Ok(EXIT_OK)
        }
    }
}

/// An undo that left keys alone because they changed since the undone
/// apply: says which, and returns exit 3.
fn undo_stale(kept: &[String]) -> u8 {
    errln!(
        "\n{} key(s) changed since the undone apply and were left alone:\n{}",
        kept.len(),
        apply::list(kept)
    );
    errln!("Error: stale plan or concurrent writer: these keys were not undone.");
    EXIT_STALE
}

/// `Apply complete: 120 created, …` and the like, after `lead`.
fn stats_line(lead: &str, s: &ApplyStats) -> String {
    format!(
        "{lead}: {} created, {} updated, {} deleted, {} already in place.",
        render::thousands(s.created),
        render::thousands(s.updated),
        render::thousands(s.deleted),
        render::thousands(s.already_in_place)
    )
}

fn print_apply_json(report: &PlanReport, stats: &ApplyStats, result: &str, verified: Option<u64>) {
    let value = serde_json::json!({
        "format_version": "1",
        "result": result,
        "plan": render::JsonPlan::from_report(report),
        "apply": {
            "created": stats.created,
            "updated": stats.updated,
            "deleted": stats.deleted,
            "already_in_place": stats.already_in_place,
            "not_attempted": stats.not_attempted,
            "foreign_keys": stats.foreign,
            "too_large_keys": stats.too_large,
            "verified": verified,
        }
    });
    outln!("{}", crate::escape::to_json_string_pretty(&value));
}

/// Ctrl-C, SIGTERM or SIGHUP (a closed terminal or SSH session): finish the
/// transactions in flight, then stop with the usual summary.
fn spawn_signal_watch(stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        let term = async {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) {
                (Ok(mut t), Ok(mut h)) => {
                    tokio::select! {
                        _ = t.recv() => {}
                        _ = h.recv() => {}
                    }
                }
                _ => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        errln!(
            "\nStopping: finishing the transactions in flight (press Ctrl-C again to wait; nothing is lost either way)…"
        );
        stop.store(true, Ordering::SeqCst);
    })
}

/// A progress bar on a terminal; on a pipe, a line every 5 seconds.
fn spawn_apply_progress(progress: Arc<ApplyProgress>) -> tokio::task::JoinHandle<()> {
    let terminal = std::io::stderr().is_terminal();
    tokio::spawn(async move {
        let start = std::time::Instant::now();
        if terminal {
            let bar = indicatif::ProgressBar::new(progress.total.load(Ordering::Relaxed));
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} keys  {per_sec}  ETA {eta}",
            ) {
                bar.set_style(style);
            }
            let _guard = ClearOnDrop(bar.clone());
            loop {
                bar.set_length(progress.total.load(Ordering::Relaxed));
                bar.set_position(progress.done.load(Ordering::Relaxed));
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        } else {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                let done = progress.done.load(Ordering::Relaxed);
                let secs = start.elapsed().as_secs_f64().max(0.001);
                errln!(
                    "apply: {} of {} keys ({} keys/s)",
                    render::thousands(done),
                    render::thousands(progress.total.load(Ordering::Relaxed)),
                    render::thousands((done as f64 / secs) as u64)
                );
            }
        }
    })
}

/// The man pages, generated from the clap definitions: `etcdplan.1`, then
/// `etcdplan-COMMAND.1` for each command, as (file name, roff).
pub fn man_pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut command = <Cli as clap::CommandFactory>::command();
    // Building propagates the global options into every command's page.
    command.build();
    let mut pages = Vec::new();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    pages.push(("etcdplan.1".to_string(), page));
    // clap's own `help` command needs no page of its own.
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("etcdplan-{}", sub.get_name());
        // Each page names its command as the shell sees it, with the version.
        let sub = sub
            .clone()
            .name(name.clone())
            .version(command.get_version().unwrap_or_default().to_string());
        let mut page = Vec::new();
        clap_mangen::Man::new(sub).render(&mut page)?;
        pages.push((format!("{name}.1"), page));
    }
    Ok(pages)
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
