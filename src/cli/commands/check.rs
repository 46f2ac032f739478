//! `etcdplan check`: the preflight of both sides.

use std::path::Path;

use super::super::{Ctx, runtime};
use crate::check::{self, CheckOptions};
use crate::planfile;
use crate::render::{self, Format};
use crate::status::ExitStatus;

pub fn run(
    plan: &Path,
    follow: bool,
    checkpoint_key: Option<&str>,
    format: Format,
    ctx: &Ctx,
) -> miette::Result<ExitStatus> {
    let plan = planfile::load(plan)?;
    let checkpoint_key = match checkpoint_key {
        Some(k) => {
            crate::keys::parse_key(k).map_err(|e| miette::miette!("--checkpoint-key: {e}"))?
        }
        None => crate::follow::default_checkpoint_key(&plan),
    };
    let options = CheckOptions {
        checkpoint_key,
        follow,
    };
    let sides = runtime()?.block_on(check::run(&plan, &ctx.policy, &options));
    match format {
        Format::Text => out!("{}", render::check::text(&plan, &sides, follow)),
        Format::Markdown => out!("{}", render::check::markdown(&plan, &sides, follow)),
        Format::Json => outln!("{}", render::check::json(&sides, follow)),
    }
    Ok(if sides.iter().all(|s| s.ok(follow)) {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}
