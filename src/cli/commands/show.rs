//! `etcdplan show`: a saved plan rendered, with no network access.

use std::path::Path;

use super::super::{Ctx, OutputArgs, print_plan};
use crate::plan::PlanError;
use crate::saved::SavedPlan;
use crate::status::ExitStatus;

pub fn run(saved: &Path, output: &OutputArgs, ctx: &Ctx) -> miette::Result<ExitStatus> {
    let plan = SavedPlan::read(saved)?;
    let report = plan.to_report(saved)?;
    print_plan(&report, output, ctx, Some(saved));
    report.changes.check().map_err(PlanError::Spill)?;
    Ok(ExitStatus::Success)
}
