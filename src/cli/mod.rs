//! The command line: the only layer that knows clap and the only one that
//! prints. [`run`] parses the arguments, hands the command to its module in
//! `commands/`, and returns one [`ExitStatus`]; everything the user sees is
//! rendered by `crate::render` and printed here.

// The print macros, defined before the modules below so that only they can
// use them (the std ones are disallowed in clippy.toml): a closed stdout or
// stderr (`| head -1`, a CI log that went away) must never panic and turn a
// finished migration into exit 101. Text that was not written is lost.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout();
        let _ = write!(stdout, $($t)*);
        let _ = stdout.flush();
    }};
}
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

pub mod args;
mod commands;
mod observer;
mod progress;
mod prompt;
mod signals;

use std::ffi::OsString;
use std::io::IsTerminal;

use clap::Parser;
use miette::{IntoDiagnostic, WrapErr};

pub use args::{ApplyArgs, Cli, Command, FormatArg, LimitArgs, OutputArgs};
pub use commands::man_pages;

use crate::etcd::RetryPolicy;
use crate::plan::PlanReport;
use crate::render::{self, Format, RenderOptions, Told};
use crate::status::ExitStatus;

/// What every command shares: verbosity, colour, and how hard to try on etcd.
#[derive(Debug, Clone, Default)]
pub struct Ctx {
    /// The command as it was run, quoted for a shell: rerunning it resumes,
    /// so resume hints repeat it whole, every flag included.
    pub command_line: String,
    pub verbose: u8,
    pub no_color: bool,
    pub policy: RetryPolicy,
}

impl Ctx {
    /// Whether text for a stream may be coloured: a terminal, no
    /// `NO_COLOR`, no `--no-color`.
    fn color(&self, terminal: bool) -> bool {
        !self.no_color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && terminal
    }
    pub fn stdout_color(&self) -> bool {
        self.color(std::io::stdout().is_terminal())
    }
    pub fn stderr_color(&self) -> bool {
        self.color(std::io::stderr().is_terminal())
    }
}

/// Parses `args` (program name first) and runs the command.
pub fn run<I, T>(args: I) -> ExitStatus
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Usage errors exit 1, keeping 2 free for "plan has changes".
            return if e.use_stderr() {
                ExitStatus::Failure
            } else {
                ExitStatus::Success
            };
        }
    };
    let ctx = Ctx {
        command_line: command_line(&args),
        verbose: cli.verbose,
        no_color: cli.no_color,
        policy: RetryPolicy {
            request_timeout: std::time::Duration::from_secs_f64(cli.request_timeout),
            connect_timeout: std::time::Duration::from_secs_f64(cli.connect_timeout),
            stall_timeout: std::time::Duration::from_secs_f64(cli.stall_timeout),
            ..RetryPolicy::default()
        },
    };
    install_diagnostics(ctx.stderr_color());
    init_logging(&ctx);
    match commands::execute(cli.command, &ctx) {
        Ok(status) => status,
        Err(report) => {
            errln!("{report:?}");
            ExitStatus::Failure
        }
    }
}

/// `etcdplan` and the arguments after the program name, each quoted for a
/// shell where it needs it.
fn command_line(args: &[OsString]) -> String {
    let words: Vec<String> = std::iter::once("etcdplan".to_string())
        .chain(args.iter().skip(1).map(|a| {
            let a = a.to_string_lossy();
            shlex::try_quote(&a).map_or_else(|_| a.to_string(), |q| q.into_owned())
        }))
        .collect();
    words.join(" ")
}

/// The diagnostic renderer: graphical, coloured on a terminal, and never
/// breaking a line, since a help line may hold a command to paste.
fn install_diagnostics(color: bool) {
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .color(color)
                .wrap_lines(false)
                .build(),
        )
    }));
}

fn init_logging(ctx: &Ctx) {
    let level = match ctx.verbose {
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
        .with_ansi(ctx.stderr_color())
        .try_init();
}

fn runtime() -> miette::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .into_diagnostic()
        .wrap_err("cannot start the async runtime")
}

/// Prints what a renderer built.
fn tell(told: &Told) {
    if !told.stdout.is_empty() {
        out!("{}", told.stdout);
    }
    if !told.stderr.is_empty() {
        use std::io::Write as _;
        let _ = std::io::stderr().write_all(told.stderr.as_bytes());
    }
}

/// Prints a plan on stdout, streamed: a plan of a million changes goes
/// from the spill file to the terminal without being held.
fn print_plan(
    report: &PlanReport,
    output: &OutputArgs,
    ctx: &Ctx,
    saved_as: Option<&std::path::Path>,
) {
    use std::io::Write as _;
    let saved_as = saved_as.map(|p| p.display().to_string());
    let options = RenderOptions {
        color: ctx.stdout_color(),
        max_listed: output.max_listed,
        saved_as: saved_as.as_deref(),
    };
    let mut out = std::io::stdout().lock();
    let written = match Format::from(output.format) {
        Format::Text => render::write_text(report, options, &mut out),
        Format::Json => render::write_json(report, &mut out),
        Format::Markdown => out.write_all(render::render_markdown(report, options).as_bytes()),
    };
    if let Err(e) = written
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        tracing::error!("printing the plan failed: {e}");
    }
    print_warnings(report);
}

/// A plan's warnings, on stderr, whatever the format of stdout.
fn print_warnings(report: &PlanReport) {
    for w in crate::plan::warnings(report) {
        errln!("{}", render::warning_text(&w));
    }
}
