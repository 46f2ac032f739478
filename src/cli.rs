//! The command line: clap options, kept apart from the validated plan, and
//! `run`, which turns a command into an exit code.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};

use crate::planfile;

/// Exit code: success (and, with `--detailed-exitcode`, no changes).
pub const EXIT_OK: u8 = 0;
/// Exit code: an error, including a usage error.
pub const EXIT_ERROR: u8 = 1;

static NO_COLOR_FLAG: AtomicBool = AtomicBool::new(false);

/// Whether output may use colour: a terminal, no `NO_COLOR`, no `--no-color`.
pub fn color_enabled() -> bool {
    !NO_COLOR_FLAG.load(Ordering::Relaxed)
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stderr().is_terminal()
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

    /// Print the plan file's JSON Schema (the one in schemas/plan.schema.json).
    #[command(after_help = "Example:\n  etcdplan schema > schemas/plan.schema.json")]
    Schema,
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
    match execute(cli.command) {
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

fn execute(command: Command) -> miette::Result<u8> {
    match command {
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
