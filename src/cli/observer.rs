//! The CLI as an observer of the engine: spinners and progress bars on a
//! terminal, the plan printed for review, the approval prompt, and for a
//! follow each apply's outcome, the notices and the lag reports.

use std::sync::{Arc, Mutex};

use super::progress::{spawn_apply_progress, spawn_progress};
use super::{Ctx, OutputArgs, print_plan, print_warnings, tell};
use crate::apply::ApplyProgress;
use crate::engine::{self, ApplyOutcome, Approval, FollowNotice, Review};
use crate::follow::LagReport;
use crate::plan::{PlanReport, Progress};
use crate::render::{self, Format};

pub struct CliObserver {
    output: OutputArgs,
    ctx: Ctx,
    /// The saved plan being applied, for the command that lists it all.
    saved_as: Option<std::path::PathBuf>,
    ticker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl CliObserver {
    pub fn new(output: &OutputArgs, ctx: &Ctx) -> CliObserver {
        CliObserver {
            output: output.clone(),
            ctx: ctx.clone(),
            saved_as: None,
            ticker: Mutex::new(None),
        }
    }

    /// Names the saved plan this run applies.
    pub fn saved_as(mut self, path: &std::path::Path) -> CliObserver {
        self.saved_as = Some(path.to_path_buf());
        self
    }

    fn json(&self) -> bool {
        Format::from(self.output.format) == Format::Json
    }

    /// Stops the progress task and waits until it is gone, so that its last
    /// frame is drawn before anything printed after it.
    pub async fn stop_ticker(&self) {
        let old = self.ticker.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = old {
            task.abort();
            let _ = task.await;
        }
    }

    /// Replaces the running progress task (aborting the old one).
    pub fn swap_ticker(&self, next: Option<tokio::task::JoinHandle<()>>) {
        if let Ok(mut t) = self.ticker.lock()
            && let Some(old) = std::mem::replace(&mut *t, next)
        {
            old.abort();
        }
    }
}

impl Drop for CliObserver {
    fn drop(&mut self) {
        self.swap_ticker(None);
    }
}

impl engine::Observer for CliObserver {
    fn planning(&self, progress: &Arc<Progress>) {
        self.swap_ticker(Some(spawn_progress(progress.clone(), self.ctx.verbose)));
    }

    fn replanning(&self, e: &crate::etcd::EtcdError, n: u32, max: u32) {
        errln!(
            "{e}: history was compacted while planning; planning again at a fresh revision ({n} of {max}). Nothing has been written."
        );
    }

    fn review(&self, report: &PlanReport, review: Review) -> Approval {
        if review != Review::Overlapped {
            self.swap_ticker(None);
        }
        if self.json() {
            print_warnings(report);
        } else {
            print_plan(report, &self.output, &self.ctx, self.saved_as.as_deref());
        }
        if review != Review::Approve || !report.has_writes() {
            return Approval::Approved;
        }
        super::prompt::approve()
    }

    fn writing(&self, progress: &Arc<ApplyProgress>) {
        self.swap_ticker(Some(spawn_apply_progress(progress.clone())));
    }
}

/// Prints how an apply ended, in the chosen format.
pub fn tell_outcome(outcome: &ApplyOutcome, output: &OutputArgs, rerun: &str) {
    match Format::from(output.format) {
        Format::Json => {
            // The findings still go to stderr; stdout holds only the JSON.
            let told = render::outcome::text(outcome, rerun);
            tell(&render::Told {
                stdout: format!("{}\n", render::outcome::json(outcome)),
                stderr: told.stderr,
            });
        }
        Format::Markdown => out!("{}", render::outcome::markdown(outcome, rerun)),
        Format::Text => tell(&render::outcome::text(outcome, rerun)),
    }
}

/// The CLI observer of a follow: each apply is reported like `apply`.
pub struct FollowCli {
    pub cli: CliObserver,
    /// The command that was run, for resume hints.
    pub rerun: String,
}

impl engine::Observer for FollowCli {
    fn planning(&self, progress: &Arc<Progress>) {
        self.cli.planning(progress)
    }
    fn replanning(&self, e: &crate::etcd::EtcdError, n: u32, max: u32) {
        self.cli.replanning(e, n, max)
    }
    fn review(&self, report: &PlanReport, review: Review) -> Approval {
        self.cli.review(report, review)
    }
    fn writing(&self, progress: &Arc<ApplyProgress>) {
        self.cli.writing(progress)
    }
}

impl engine::FollowObserver for FollowCli {
    fn applied(&self, outcome: &ApplyOutcome) {
        self.cli.swap_ticker(None);
        tell_outcome(outcome, &self.cli.output, &self.rerun);
    }

    fn notice(&self, notice: &FollowNotice) {
        errln!("{}", render::follow::notice_text(notice));
    }

    fn lag(&self, report: &LagReport) {
        if self.cli.json() {
            outln!("{}", render::follow::lag_json(report));
        } else {
            errln!("{}", render::follow::lag_text(report));
        }
    }
}
