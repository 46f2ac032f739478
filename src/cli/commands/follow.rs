//! `etcdplan apply --follow`: the initial apply, reported like `apply`,
//! then following until told to stop.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::super::observer::{CliObserver, FollowCli};
use super::super::{ApplyArgs, Ctx};
use super::request::apply_request;
use crate::engine::{self, FollowOutcome};
use crate::render::{self, Format};
use crate::status::ExitStatus;

pub async fn run(args: &ApplyArgs, ctx: &Ctx, stop: Arc<AtomicBool>) -> miette::Result<ExitStatus> {
    let checkpoint_key = match &args.checkpoint_key {
        Some(k) => {
            Some(crate::keys::parse_key(k).map_err(|e| miette::miette!("--checkpoint-key: {e}"))?)
        }
        None => None,
    };
    let request = engine::FollowRequest {
        apply: apply_request(args, ctx)?,
        checkpoint_key,
        until_revision: args.until_revision,
        cutover_file: args.cutover_file.clone(),
        report_every: std::time::Duration::from_secs_f64(args.progress_every.max(0.1)),
    };
    let observer = FollowCli {
        cli: CliObserver::new(&args.output, ctx),
        rerun: ctx.command_line.clone(),
    };
    let result = engine::follow(&request, &observer, stop).await;
    observer.cli.stop_ticker().await;
    match result {
        Ok(FollowOutcome::ApplyIncomplete(outcome)) => Ok(engine::exit_status(&outcome)),
        Ok(FollowOutcome::Stopped(end)) => {
            match Format::from(args.output.format) {
                Format::Json => outln!("{}", render::follow::stopped_json(&end)),
                Format::Markdown => out!("{}", render::follow::stopped_markdown(&end)),
                Format::Text => {}
            }
            errln!("{}", render::follow::stopped_text(&end, &ctx.command_line));
            Ok(ExitStatus::Success)
        }
        Err(e) => {
            let status = e.exit_status();
            errln!("{:?}", miette::Report::new(e));
            if status == ExitStatus::Stale {
                errln!("Error: stale plan or concurrent writer: run plan again.");
            }
            Ok(status)
        }
    }
}
