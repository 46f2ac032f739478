//! `etcdplan plan` and `etcdplan plan --undo`.

use std::path::Path;

use super::super::observer::CliObserver;
use super::super::{Ctx, LimitArgs, OutputArgs, print_plan, runtime};
use crate::engine;
use crate::plan::{PlanError, PlanOptions, PlanReport};
use crate::planfile;
use crate::saved::SavedPlan;
use crate::status::ExitStatus;

pub fn run(
    plan: Option<&Path>,
    output: &OutputArgs,
    out: Option<&Path>,
    detailed_exitcode: bool,
    limits: &LimitArgs,
    ctx: &Ctx,
) -> miette::Result<ExitStatus> {
    let Some(plan) = plan else {
        return Err(miette::miette!("a plan file is required"));
    };
    let plan = planfile::load(plan)?;
    for p in plan.idle_sensitive() {
        errln!(
            "warning: the sensitive prefix `{}` lies under no `from` and no `to`: it hides nothing (a typo?)",
            crate::keys::display_key(p)
        );
    }
    let options = PlanOptions {
        max_request_bytes: limits.max_request_bytes as usize,
        ..PlanOptions::default()
    };
    let observer = CliObserver::new(output, ctx);
    let report = runtime()?.block_on(async {
        let (source, destination, _served) = engine::open_sides(&plan, &ctx.policy).await?;
        let report = engine::plan(&plan, source, destination, &options, &observer).await;
        observer.stop_ticker().await;
        Ok::<_, engine::EngineError>(report?)
    })?;
    // `on_conflict: fail`: the whole plan is still shown, conflicts
    // included, in the chosen format; then exit 1, and nothing is saved.
    if let Err(e) = crate::plan::refuse_conflicts(&plan, &report) {
        print_plan(&report, output, ctx, None);
        return Err(e.into());
    }
    finish(&report, output, out, detailed_exitcode, ctx)
}

pub fn undo(
    saved: &Path,
    plan_file: Option<&Path>,
    output: &OutputArgs,
    out: Option<&Path>,
    detailed_exitcode: bool,
    ctx: &Ctx,
) -> miette::Result<ExitStatus> {
    let key = crate::saved::sign::SigningKey::from_env()?;
    let crate::saved::Opened {
        plan,
        report: applied,
    } = crate::saved::open(saved, plan_file, &planfile::ProcessEnv, key.as_ref())?;
    let (source, destination) = engine::sides(&plan, &ctx.policy);
    let report =
        runtime()?.block_on(crate::undo::plan_undo(&plan, &applied, source, destination))?;
    finish(&report, output, out, detailed_exitcode, ctx)
}

/// Saves the plan when asked, prints it, and picks the exit status.
fn finish(
    report: &PlanReport,
    output: &OutputArgs,
    out: Option<&Path>,
    detailed_exitcode: bool,
    ctx: &Ctx,
) -> miette::Result<ExitStatus> {
    if let Some(path) = out {
        let key = crate::saved::sign::SigningKey::from_env()?;
        SavedPlan::new(report).write(path, key.as_ref())?;
    }
    print_plan(report, output, ctx, out);
    report.changes.check().map_err(PlanError::Spill)?;
    if let Some(path) = out {
        errln!(
            "Saved plan to {}; apply exactly these changes with: etcdplan apply {}",
            path.display(),
            path.display()
        );
    }
    Ok(match (detailed_exitcode, report.has_writes()) {
        (false, _) => ExitStatus::Success,
        (true, true) => ExitStatus::Changes,
        (true, false) => ExitStatus::NoChanges,
    })
}
