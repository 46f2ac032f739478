//! The clap definitions: every command, option and help text. Nothing here
//! runs anything; `commands/` turns these into library requests.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::render::Format;

/// `--format`, as clap reads it; the library's [`Format`] knows no clap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// For terminals: a header, each change, a summary line.
    Text,
    /// For pull-request comments: tables and collapsible details.
    Markdown,
    /// For machines: one JSON object (see the README).
    Json,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Text => Format::Text,
            FormatArg::Markdown => Format::Markdown,
            FormatArg::Json => Format::Json,
        }
    }
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

    /// More log output on stderr: -v what the run did (the endpoint each side
    /// uses, the revisions and counts planned and written, each phase's time,
    /// the slowest request); -vv also every request, with its endpoint and
    /// time, and every retry; -vvv also every change and every transaction.
    /// Values are never logged. ETCDPLAN_LOG (e.g. etcdplan=debug,h2=trace)
    /// overrides this.
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
    /// Check a plan file offline: syntax, fields, prefixes, endpoints and the
    /// other rules, every problem at once. With --strict also the password
    /// variables and TLS files. Exit 0 when valid, 1 otherwise.
    #[command(
        after_help = "Examples:\n  etcdplan validate plans/trident-external-etcd.yaml            # a lint job, no secrets needed\n  etcdplan validate --strict plans/trident-external-etcd.yaml   # where the plan will run"
    )]
    Validate {
        /// The plan file (YAML).
        plan: PathBuf,
        /// Also check the environment this machine gives the plan: every
        /// password variable set, every TLS file present and holding the
        /// right PEM. Without it only the file is checked (syntax, schema,
        /// rules), as a lint job without secrets can.
        #[arg(long)]
        strict: bool,
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
        /// Output format: text tables, markdown, or json.
        #[arg(long, value_enum, default_value = "text")]
        format: FormatArg,
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
    /// The most transactions in flight at once, e.g. --concurrency 4. The
    /// number adapts below this cap: it grows while the latency holds and
    /// shrinks when the destination queues or fails.
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
    pub format: FormatArg,
    /// List at most N changes in text and markdown; the summary still counts
    /// all (e.g. --max-listed 100).
    #[arg(long, value_name = "N")]
    pub max_listed: Option<usize>,
}
