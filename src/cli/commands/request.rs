//! The engine's request for `apply`'s arguments, shared by `apply` and
//! `apply --follow`.

use super::super::{ApplyArgs, Ctx};
use crate::apply::ApplyOptions;
use crate::engine::ApplyRequest;
use crate::saved::sign::{SignatureError, SigningKey};

pub fn apply_request(args: &ApplyArgs, ctx: &Ctx) -> Result<ApplyRequest, SignatureError> {
    Ok(ApplyRequest {
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
        signing_key: SigningKey::from_env()?,
    })
}
