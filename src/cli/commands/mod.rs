//! One module per command. Each turns its arguments into a library
//! request, makes one call, renders the result and returns the exit status.

mod apply;
mod check;
mod follow;
mod plan;
mod show;
mod tools;
mod validate;

pub use tools::man_pages;

use super::{Command, Ctx};
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
        Command::Apply(args) => apply::run(args, ctx),
        Command::Show { saved, output } => show::run(&saved, &output, ctx),
        Command::Check {
            plan,
            follow,
            checkpoint_key,
            format,
        } => check::run(&plan, follow, checkpoint_key.as_deref(), format.into(), ctx),
        Command::Validate { plan } => validate::run(&plan),
        Command::Completions { shell } => tools::completions(shell),
        Command::Schema => tools::schema(),
        Command::Man { out_dir } => tools::man(out_dir.as_deref()),
    }
}
