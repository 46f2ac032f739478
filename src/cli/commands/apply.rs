//! `etcdplan apply` (and, with `--follow`, hands over to `follow`).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::super::observer::{CliObserver, tell_outcome};
use super::super::signals::spawn_signal_watch;
use super::super::{ApplyArgs, Ctx, runtime};
use crate::apply::ApplyOptions;
use crate::engine;
use crate::status::ExitStatus;

pub fn run(args: ApplyArgs, ctx: &Ctx) -> miette::Result<ExitStatus> {
    runtime()?.block_on(async {
        // Ctrl-C or SIGTERM from here on stops cleanly: before writing,
        // nothing is written; while writing, the transactions in flight
        // finish first.
        let stop = Arc::new(AtomicBool::new(false));
        let signals = spawn_signal_watch(stop.clone());
        let result = if args.follow {
            super::follow::run(&args, ctx, stop).await
        } else {
            apply(&args, ctx, stop).await
        };
        signals.abort();
        result
    })
}

async fn apply(args: &ApplyArgs, ctx: &Ctx, stop: Arc<AtomicBool>) -> miette::Result<ExitStatus> {
    let request = request(args, ctx)?;
    let observer = CliObserver::new(&args.output, ctx);
    let result = engine::apply(&request, &observer, stop).await;
    observer.swap_ticker(None);
    match result {
        Ok(outcome) => {
            tell_outcome(&outcome, &args.output, &args.target.to_string_lossy());
            Ok(engine::exit_status(&outcome))
        }
        Err(e) => {
            let status = e.exit_status();
            errln!("{:?}", miette::Report::new(e));
            Ok(status)
        }
    }
}

/// The engine's request for `apply`'s arguments.
pub fn request(
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
