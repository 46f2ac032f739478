//! The apply workflow as one library call: load or make the plan, review
//! it, guard, write, move, all as streams. A Rust program runs a migration
//! with [`apply`] and an [`Observer`]; the CLI is one such observer.
//!
//! Two shapes, with the same guarantees:
//! - **Overlapped** (a plan file with `auto_approve`): the diff hands each
//!   write, with the value its scan just read at the pinned revision, to the
//!   writer pool as it is found. Scanning, diffing and writing run together.
//!   With `on_conflict: fail` only when every destination range is empty,
//!   since no conflict can then stop the plan after writes began.
//! - **Reviewed** (approval, a saved plan, `on_conflict: fail` over existing
//!   keys, move mode, undo): the whole plan is spilled to a file first and
//!   shown; then the
//!   spill is streamed back, and each batch's values are read from the
//!   source at the pinned revision just before it is written.
//!
//! Verification: every write is a guarded transaction whose response proves
//! the key's state (the compare held and the put or delete happened, or the
//! failure branch's read-back shows the planned value in place), so the
//! proof is collected as the writes settle, with no second pass.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use miette::Diagnostic;
use tokio::sync::mpsc;

use crate::apply::{self, ApplyError, ApplyOptions, ApplyProgress, ApplyStats, Tap, ValueSource};
use crate::diff::Action;
use crate::etcd::parallel::FirstPage;
use crate::etcd::{EtcdError, RetryPolicy, Side};
use crate::keys::KeyList;
use crate::leases::{LeaseBook, LeasePolicy};
use crate::plan::{MAX_REPLANS, PlanError, PlanOptions, PlanReport, Progress};
use crate::planfile::{self, OnConflict, Plan, PlanFileError};
use crate::saved::{SavedPlan, SavedPlanError};
use crate::status::ExitStatus;

mod follow;
mod outcome;
mod preflight;
mod probes;
mod sides;
pub use follow::{FollowNotice, FollowObserver, FollowOutcome, FollowRequest, follow};
pub use outcome::{ApplyOutcome, Approval, End, Ending, Review, ending, exit_status};
pub use sides::{open_sides, sides};

/// What to apply, and how.
#[derive(Debug, Clone)]
pub struct ApplyRequest {
    /// A plan file (YAML) or a saved plan, recognised by its content.
    pub target: PathBuf,
    pub options: ApplyOptions,
    pub policy: RetryPolicy,
    /// Apply a plan file without asking [`Observer::review`] first. With it,
    /// writing overlaps planning where the plan allows.
    pub auto_approve: bool,
    /// For a saved plan: the plan file it was made from, when not at the
    /// path the saved plan records.
    pub plan_file: Option<PathBuf>,
    /// For a saved plan: the key it must be signed with (see
    /// [`crate::saved::sign`]); `None` accepts only an unsigned plan.
    pub signing_key: Option<crate::saved::sign::SigningKey>,
}

/// Hears how an apply goes. Every method has a default but `review`.
pub trait Observer: Send + Sync {
    /// Planning started; `progress` counts keys read per side.
    fn planning(&self, _progress: &Arc<Progress>) {}
    /// History was compacted under a scan; planning starts over.
    fn replanning(&self, _error: &EtcdError, _attempt: u32, _max: u32) {}
    /// The complete plan. For [`Review::Approve`], anything but
    /// [`Approval::Approved`] writes nothing.
    fn review(&self, report: &PlanReport, review: Review) -> Approval;
    /// Writing started; `progress` counts keys settled.
    fn writing(&self, _progress: &Arc<ApplyProgress>) {}
    /// A phase ended, `seconds` after the apply started.
    fn phase(&self, _name: &'static str, _seconds: f64) {}
}

/// Why an apply stopped with an error.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum EngineError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    PlanFile(#[from] PlanFileError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Saved(#[from] SavedPlanError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    SavedCheck(#[from] crate::saved::verify::CheckError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Plan(#[from] PlanError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Apply(#[from] ApplyError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Follow(#[from] crate::follow::FollowError),

    #[error(
        "cannot write to `{}` on the destination: {}",
        crate::keys::display_key(prefix),
        crate::escape::text(why)
    )]
    #[diagnostic(
        code(etcdplan::apply::not_writable),
        help(
            "grant write permission on that prefix to the destination user (see `etcdplan check`); nothing was written"
        )
    )]
    NotWritable { prefix: Vec<u8>, why: String },

    #[error(
        "cannot delete from `{}` on the source: {}",
        crate::keys::display_key(prefix),
        crate::escape::text(why)
    )]
    #[diagnostic(
        code(etcdplan::apply::source_not_writable),
        help(
            "delete_source needs write permission on each `from` range of the source; nothing was written"
        )
    )]
    SourceNotWritable { prefix: Vec<u8>, why: String },
}

impl EngineError {
    /// The exit status of a run that ended with this error: a foreign
    /// write met while following is a stale plan (3), the rest failures.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            EngineError::Follow(crate::follow::FollowError::Conflict { .. }) => ExitStatus::Stale,
            _ => ExitStatus::Failure,
        }
    }
}

/// `plan`: both sides read at a pinned source revision, started over at a
/// fresh one when history is compacted under a scan; the observer hears the
/// progress and each start-over.
pub async fn plan(
    plan: &Plan,
    source: Arc<Side>,
    destination: Arc<Side>,
    options: &PlanOptions,
    observer: &dyn Observer,
) -> Result<PlanReport, PlanError> {
    let progress = Arc::new(Progress::default());
    observer.planning(&progress);
    crate::plan::make_plan_fresh(plan, source, destination, options, progress, |e, n| {
        observer.replanning(e, n, MAX_REPLANS)
    })
    .await
}

/// A loaded target: the plan file, its sides, and for a saved plan its report.
pub struct Loaded {
    pub plan: Plan,
    pub source: Arc<Side>,
    pub destination: Arc<Side>,
    pub saved: Option<PlanReport>,
    /// A lease book to write with, shared with a follow that comes after
    /// (`None`: the apply keeps its own).
    pub leases: Option<Arc<LeaseBook>>,
}

/// Loads a plan file or a saved plan (recognised by content).
pub fn load(request: &ApplyRequest) -> Result<Loaded, EngineError> {
    if SavedPlan::is_saved_plan(&request.target) {
        // The plan file on disk steers; the artifact only lists changes.
        let crate::saved::Opened { plan, report } = crate::saved::open(
            &request.target,
            request.plan_file.as_deref(),
            &planfile::ProcessEnv,
            request.signing_key.as_ref(),
        )?;
        let (source, destination) = sides(&plan, &request.policy);
        Ok(Loaded {
            plan,
            source,
            destination,
            saved: Some(report),
            leases: None,
        })
    } else {
        let plan = planfile::load(&request.target)?;
        let (source, destination) = sides(&plan, &request.policy);
        Ok(Loaded {
            plan,
            source,
            destination,
            saved: None,
            leases: None,
        })
    }
}

/// Runs one whole apply. `stop` set (e.g. by Ctrl-C) stops it cleanly:
/// before writing, nothing is written; while writing, the transactions in
/// flight finish first.
pub async fn apply(
    request: &ApplyRequest,
    observer: &dyn Observer,
    stop: Arc<AtomicBool>,
) -> Result<ApplyOutcome, EngineError> {
    let mut loaded = load(request)?;
    // A snapshot source is served for the whole run.
    let (source, _, _served) = open_sides(&loaded.plan, &request.policy).await?;
    loaded.source = source;
    Box::pin(apply_loaded(request, loaded, observer, stop)).await
}

/// [`apply`] of an already loaded target (its sides are reused).
pub async fn apply_loaded(
    request: &ApplyRequest,
    loaded: Loaded,
    observer: &dyn Observer,
    stop: Arc<AtomicBool>,
) -> Result<ApplyOutcome, EngineError> {
    let started = Instant::now();
    let Loaded {
        plan,
        source,
        destination,
        saved,
        leases,
    } = loaded;
    let run = Run {
        request,
        plan: &plan,
        source,
        destination,
        observer,
        stop,
        started,
        leases,
    };
    match saved {
        Some(report) => Box::pin(run.reviewed(report, true)).await,
        None => {
            let (mut heads, mut first) = (None, Default::default());
            if request.auto_approve && !plan.delete_source {
                let asked = Box::pin(run.probe_all()).await;
                let empty_at = asked.empty_at;
                if asked.writable && (plan.on_conflict != OnConflict::Fail || empty_at.is_some()) {
                    // Boxed: the plan and the writers make a large future,
                    // too large for a thread's stack in a debug build.
                    return Box::pin(run.overlapped(asked.heads, empty_at, asked.first)).await;
                }
                // Not overlapped: the plan still starts from those heads.
                (heads, first) = (asked.heads, asked.first);
            }
            let report = Box::pin(run.plan_fresh(heads, first)).await?;
            Box::pin(run.reviewed(report, false)).await
        }
    }
}

/// What restoring the source (undo of a move) came to.
enum Restore {
    Nothing,
    Done(ApplyStats),
    Stopped(End, ApplyStats),
}

/// An undo's conflicts (keys changed since the undone apply): left alone.
fn undo_conflicts(report: &PlanReport) -> KeyList {
    let Some(u) = &report.undo else {
        return KeyList::default();
    };
    report
        .changes
        .iter()
        .chain(u.restores.iter().cloned())
        .filter(|c| c.action == Action::Conflict)
        .map(|c| c.key)
        .collect::<Vec<_>>()
        .into()
}

struct Run<'a> {
    request: &'a ApplyRequest,
    plan: &'a Plan,
    source: Arc<Side>,
    destination: Arc<Side>,
    observer: &'a dyn Observer,
    stop: Arc<AtomicBool>,
    started: Instant,
    leases: Option<Arc<LeaseBook>>,
}

impl Run<'_> {
    fn plan_options(&self) -> PlanOptions {
        PlanOptions {
            max_request_bytes: self.request.options.max_request_bytes,
            ..PlanOptions::default()
        }
    }

    fn phase(&self, name: &'static str) {
        let seconds = self.started.elapsed().as_secs_f64();
        tracing::info!(seconds, "{name}");
        self.observer.phase(name, seconds);
    }

    fn lease_policy(&self) -> LeasePolicy {
        LeasePolicy::of_mode(self.plan.leases)
    }

    /// The lease book to write a plan's changes with: the shared one, or a
    /// new one with `policy`.
    fn lease_book(&self, policy: LeasePolicy) -> Arc<LeaseBook> {
        match &self.leases {
            Some(book) if policy != LeasePolicy::Same => book.clone(),
            _ => Arc::new(LeaseBook::new(
                policy,
                self.source.clone(),
                self.destination.clone(),
            )),
        }
    }

    /// A plan, started over at a fresh revision when compacted under a scan;
    /// its first round pinned at `heads` when they were just read.
    async fn plan_fresh(
        &self,
        heads: Option<[(u64, i64); 2]>,
        [source_first, destination_first]: [Vec<FirstPage>; 2],
    ) -> Result<PlanReport, EngineError> {
        let progress = Arc::new(Progress::default());
        self.observer.planning(&progress);
        let report = crate::plan::make_plan_fresh(
            self.plan,
            self.source.clone(),
            self.destination.clone(),
            &PlanOptions {
                heads,
                source_first,
                destination_first,
                ..self.plan_options()
            },
            progress,
            |e, n| self.observer.replanning(e, n, MAX_REPLANS),
        )
        .await?;
        self.phase("planned");
        Ok(report)
    }

    /// Plan and write together; on a compaction under a scan, the writes
    /// in flight finish and the whole run starts over at a fresh revision
    /// (what was written is then found in place).
    async fn overlapped(
        &self,
        mut heads: Option<[(u64, i64); 2]>,
        empty_at: Option<i64>,
        mut first: [Vec<FirstPage>; 2],
    ) -> Result<ApplyOutcome, EngineError> {
        let options = &self.request.options;
        let mut stats = ApplyStats::default();
        let mut replans = 0;
        loop {
            // Read just before: the first round only (a replan starts afresh).
            let plan_options = PlanOptions {
                heads: heads.take(),
                source_first: std::mem::take(&mut first[0]),
                destination_first: std::mem::take(&mut first[1]),
                empty_at,
                ..self.plan_options()
            };
            let progress = Arc::new(Progress::default());
            let writes = Arc::new(ApplyProgress::default());
            self.observer.planning(&progress);
            self.observer.writing(&writes);
            let (tx, rx) = mpsc::channel(apply::BATCHES_QUEUED);
            let tap = Tap::new(options, tx, writes.clone());
            let leases = self.lease_book(self.lease_policy());
            let planning = async {
                let result = crate::plan::make_plan_tapped(
                    self.plan,
                    self.source.clone(),
                    self.destination.clone(),
                    &plan_options,
                    progress,
                    Some(tap),
                )
                .await;
                let result = match result {
                    Ok((report, Some(mut tap))) => {
                        tap.finish().await;
                        // A conflict can only come from a write meanwhile
                        // (the ranges were empty): refused as before.
                        crate::plan::refuse_conflicts(self.plan, &report)
                            .map(|()| (report, Some(tap)))
                    }
                    other => other,
                };
                if let Ok((report, _)) = &result {
                    // Shown as soon as it is complete, while writes drain.
                    self.phase("planned");
                    self.observer.review(report, Review::Overlapped);
                }
                result
            };
            let writing = apply::write_stream(
                self.destination.clone(),
                rx,
                None,
                leases,
                options,
                &self.stop,
                &writes,
            );
            let (planned, written) = tokio::join!(planning, writing);
            self.phase("written");
            match planned {
                Err(PlanError::Etcd(e @ EtcdError::Compacted { .. })) if replans < MAX_REPLANS => {
                    replans += 1;
                    stats.add(written?);
                    stats.not_attempted = 0;
                    self.observer.replanning(&e, replans, MAX_REPLANS);
                }
                Err(e) => {
                    // The plan's error wins; the writes in flight have finished.
                    let _ = written;
                    return Err(e.into());
                }
                Ok((report, tap)) => {
                    let mut round = written?;
                    if let Some(tap) = tap {
                        round.not_attempted += tap.unsent;
                        round.oversized.extend(tap.oversized);
                    }
                    stats.add(round);
                    stats.log();
                    return self
                        .settle(report, false, stats, None, KeyList::default())
                        .await;
                }
            }
        }
    }

    /// Review first, then stream the spilled plan to the writers: review,
    /// preflight, restore the source (undo of a move), write, settle.
    async fn reviewed(
        &self,
        mut report: PlanReport,
        saved: bool,
    ) -> Result<ApplyOutcome, EngineError> {
        report.max_request_bytes = self.request.options.max_request_bytes;
        // `on_conflict: fail`: the plan is still shown, conflicts included.
        if let Err(e) = crate::plan::refuse_conflicts(self.plan, &report) {
            self.observer.review(&report, Review::Show);
            return Err(e.into());
        }
        if saved {
            let moved = crate::saved::since::source_moved_on(&self.source, self.plan, &report);
            report.found.extend(moved.await);
        }
        let review = if saved || self.request.auto_approve {
            Review::Show
        } else {
            Review::Approve
        };
        let approved = self.observer.review(&report, review);
        let undo_kept = undo_conflicts(&report);
        let early = if !report.has_writes() {
            Some(if undo_kept.is_empty() {
                End::NoChanges
            } else {
                End::Stale
            })
        } else {
            match approved {
                Approval::Approved => None,
                Approval::Declined => Some(End::Cancelled),
                Approval::NoTerminal => Some(End::NeedsApproval),
            }
        };
        if let Some(end) = early {
            return Ok(self.ended(end, report, saved, undo_kept));
        }
        self.preflight(&report, saved).await?;
        if self.stop.load(Ordering::SeqCst) {
            let end = End::InterruptedBeforeWrites;
            return Ok(self.ended(end, report, saved, undo_kept));
        }
        let restored = match self.restore_source(&report).await? {
            Restore::Nothing => None,
            Restore::Done(stats) => Some(stats),
            Restore::Stopped(end, stats) => {
                let mut out = self.ended(end, report, saved, undo_kept);
                if end == End::Stale {
                    out.undo_kept = stats.foreign.clone();
                }
                out.restored = Some(stats);
                return Ok(out);
            }
        };
        let stats = self.write_reviewed(&report).await?;
        self.settle(report, saved, stats, restored, undo_kept).await
    }

    /// An apply that ended before writing.
    fn ended(&self, end: End, report: PlanReport, saved: bool, undo_kept: KeyList) -> ApplyOutcome {
        ApplyOutcome {
            end,
            report,
            saved,
            stats: ApplyStats::default(),
            restored: None,
            moved: None,
            undo_kept,
            verified: None,
            max_request_bytes: self.request.options.max_request_bytes,
        }
    }

    /// Undo of a move: the source keys go back first, so that no moment
    /// holds a key on neither side.
    async fn restore_source(&self, report: &PlanReport) -> Result<Restore, EngineError> {
        let Some(u) = &report.undo else {
            return Ok(Restore::Nothing);
        };
        if !u.restores.iter().any(|c| c.action.writes()) {
            return Ok(Restore::Nothing);
        }
        let values = ValueSource {
            side: self.source.clone(),
            revision: u.source_revision,
            dense: vec![false; self.plan.mappings.len()],
        };
        let leases = Arc::new(LeaseBook::new(
            LeasePolicy::Same,
            self.source.clone(),
            self.source.clone(),
        ));
        let stats = apply::apply_changes(
            self.source.clone(),
            u.restores.clone(),
            values,
            leases,
            &self.request.options,
            &self.stop,
        )
        .await?;
        let end = if !stats.foreign.is_empty() {
            End::Stale
        } else if !stats.source_changed.is_empty() {
            End::SourceChanged
        } else if stats.not_attempted > 0 {
            End::RestoreInterrupted
        } else {
            return Ok(Restore::Done(stats));
        };
        Ok(Restore::Stopped(end, stats))
    }

    /// Streams the reviewed changes to the writers. An undo reads its values
    /// from the destination's own history, on the very same leases.
    async fn write_reviewed(&self, report: &PlanReport) -> Result<ApplyStats, EngineError> {
        let (values, policy) = match &report.undo {
            None => (
                ValueSource::of_report(self.source.clone(), report),
                self.lease_policy(),
            ),
            Some(_) => (
                ValueSource::of_report(self.destination.clone(), report),
                LeasePolicy::Same,
            ),
        };
        let progress = Arc::new(ApplyProgress::default());
        progress
            .total
            .store(report.summary.writes(), Ordering::Relaxed);
        self.observer.writing(&progress);
        // An undo's values are the destination's own: read batch by batch.
        let from = report
            .undo
            .is_none()
            .then(|| report.mappings.iter().map(|m| m.from.clone()).collect());
        // Boxed: the writers' future is large for a thread's stack in a
        // debug build.
        let stats = Box::pin(apply::apply_spool(
            self.destination.clone(),
            &report.changes,
            values,
            from,
            self.lease_book(policy),
            &self.request.options,
            &self.stop,
            &progress,
        ))
        .await?;
        self.phase("written");
        stats.log();
        Ok(stats)
    }

    /// A saved plan names its clusters: refuse to write anywhere else. An
    /// undo reads from the destination's history, and needs the source only
    /// to restore moved keys there.
    async fn check_clusters(
        &self,
        report: &PlanReport,
        restores_write: bool,
    ) -> Result<(), EngineError> {
        let dst_id = crate::plan::cluster_id(&self.destination)
            .await
            .map_err(PlanError::from)?;
        let mut expect = vec![("destination", report.destination.cluster_id.clone(), dst_id)];
        match &report.undo {
            None => {
                let src_id = crate::plan::cluster_id(&self.source)
                    .await
                    .map_err(PlanError::from)?;
                expect.push(("source", report.source.cluster_id.clone(), src_id));
            }
            Some(u) => {
                expect.push(("destination", report.source.cluster_id.clone(), dst_id));
                if restores_write {
                    let src_id = crate::plan::cluster_id(&self.source)
                        .await
                        .map_err(PlanError::from)?;
                    expect.push(("source", u.source_cluster_id.clone(), src_id));
                }
            }
        }
        for (side, expected, found) in expect {
            let found = format!("{found:016x}");
            if expected != found {
                return Err(ApplyError::ClusterMismatch {
                    side,
                    expected,
                    found,
                }
                .into());
            }
        }
        Ok(())
    }

    /// After the writes: how it ended, and in move mode the source deletes.
    async fn settle(
        &self,
        report: PlanReport,
        saved: bool,
        stats: ApplyStats,
        restored: Option<ApplyStats>,
        undo_kept: KeyList,
    ) -> Result<ApplyOutcome, EngineError> {
        let mut out = ApplyOutcome {
            end: End::Complete,
            verified: None,
            report,
            saved,
            stats,
            restored,
            moved: None,
            undo_kept,
            max_request_bytes: self.request.options.max_request_bytes,
        };
        if !out.stats.source_changed.is_empty() {
            out.end = End::SourceChanged;
            return Ok(out);
        }
        if !out.stats.foreign.is_empty() {
            out.end = End::Stale;
            return Ok(out);
        }
        if out.stats.not_attempted > 0 {
            out.end = End::Interrupted;
            return Ok(out);
        }
        out.verified = Some(out.stats.proven());
        if !out.report.source_deletes.is_empty() {
            // Keys refused as too large were not written: their source keys stay.
            let skip: std::collections::HashSet<Vec<u8>> =
                out.stats.too_large.iter().cloned().collect();
            let progress = ApplyProgress::default();
            let moved = apply::delete_moved(
                self.source.clone(),
                &self.destination,
                &out.report.source_deletes,
                &skip,
                &self.request.options,
                &self.stop,
                &progress,
            )
            .await?;
            self.phase("moved");
            out.moved = Some(moved);
            out.end = match &out.moved {
                Some(m) if !m.changed_on_source.is_empty() || !m.not_on_destination.is_empty() => {
                    End::Stale
                }
                Some(m) if m.not_attempted > 0 => End::MoveInterrupted,
                _ => End::Complete,
            };
            if out.end != End::Complete {
                return Ok(out);
            }
        }
        if !out.stats.too_large.is_empty() || !out.stats.oversized.is_empty() {
            out.end = End::TooLarge;
        } else if !out.undo_kept.is_empty() {
            out.end = End::Stale;
        }
        Ok(out)
    }
}
