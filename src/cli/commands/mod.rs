//! One module per command. Each turns its arguments into a library
//! request, makes one call, renders the result and returns the exit status.

mod apply;
mod check;
mod follow;
mod plan;
mod request;
mod show;
mod tools;
mod validate;

pub use tools::man_pages;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::signals::spawn_signal_watch;
use super::{Command, Ctx, runtime};
use crate::status::ExitStatus;

pub fn execute(command: Command, ctx: &Ctx) -> miette::Result<ExitStatus> {
    match command {
        Command::Plan {
            undo: Some(saved),
            plan_file,
            output,
            out,
            detailed_exitcode,
            ..
        } => plan::undo(
            &saved,
            plan_file.as_deref(),
            &output,
            out.as_deref(),
            detailed_exitcode,
            ctx,
        ),
        Command::Plan {
            plan,
            output,
            out,
            detailed_exitcode,
            limits,
            ..
        } => plan::run(
            plan.as_deref(),
            &output,
            out.as_deref(),
            detailed_exitcode,
            &limits,
            ctx,
        ),
        // Ctrl-C or SIGTERM stops either cleanly: before writing, nothing is
        // written; while writing, the transactions in flight finish first.
        Command::Apply(args) if args.follow => {
            until_stopped(|stop| async move { follow::run(&args, ctx, stop).await })
        }
        Command::Apply(args) => {
            until_stopped(|stop| async move { apply::run(&args, ctx, stop).await })
        }
        Command::Show { saved, output } => show::run(&saved, &output, ctx),
        Command::Check {
            plan,
            follow,
            checkpoint_key,
            format,
        } => check::run(&plan, follow, checkpoint_key.as_deref(), format.into(), ctx),
        Command::Validate { plan, strict } => validate::run(&plan, strict),
        Command::Completions { shell } => tools::completions(shell),
        Command::Schema => tools::schema(),
        Command::Man { out_dir } => tools::man(out_dir.as_deref()),
    }
}

/// Runs `f` on a runtime, with a stop flag that a signal sets.
fn until_stopped<F, Fut>(f: F) -> miette::Result<ExitStatus>
where
    F: FnOnce(Arc<AtomicBool>) -> Fut,
    Fut: std::future::Future<Output = miette::Result<ExitStatus>>,
{
    runtime()?.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let signals = spawn_signal_watch(stop.clone());
        let result = f(stop).await;
        signals.abort();
        result
    })
}
