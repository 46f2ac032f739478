//! `etcdplan apply`: plan (or load a saved plan), review, write, report.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::super::observer::{CliObserver, tell_outcome};
use super::super::{ApplyArgs, Ctx};
use super::request::apply_request;
use crate::engine;
use crate::status::ExitStatus;

pub async fn run(args: &ApplyArgs, ctx: &Ctx, stop: Arc<AtomicBool>) -> miette::Result<ExitStatus> {
    let request = apply_request(args, ctx)?;
    let mut observer = CliObserver::new(&args.output, ctx);
    if crate::saved::SavedPlan::is_saved_plan(&request.target) {
        observer = observer.saved_as(&request.target);
    }
    let result = engine::apply(&request, &observer, stop).await;
    observer.stop_ticker().await;
    match result {
        Ok(outcome) => {
            tell_outcome(&outcome, &args.output, &ctx.command_line);
            Ok(engine::exit_status(&outcome))
        }
        Err(e) => {
            let status = e.exit_status();
            errln!("{:?}", miette::Report::new(e));
            Ok(status)
        }
    }
}
