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

use crate::apply::{
    self, ApplyError, ApplyOptions, ApplyProgress, ApplyStats, MoveStats, Tap, ValueSource,
};
use crate::diff::Action;
use crate::etcd::{EtcdError, RetryPolicy, Side};
use crate::leases::{LeaseBook, LeasePolicy};
use crate::plan::{MAX_REPLANS, PlanError, PlanOptions, PlanReport, Progress};
use crate::planfile::{self, LeaseMode, OnConflict, Plan, PlanFileError};
use crate::saved::{SavedPlan, SavedPlanError};

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

/// What [`Observer::review`] is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Review {
    /// Nothing is written unless this returns `true`.
    Approve,
    /// Approval is not needed (a saved plan, or `auto_approve` without
    /// overlap): shown before any write.
    Show,
    /// The plan is complete and its writes are already under way.
    Overlapped,
}

/// Hears how an apply goes. Every method has a default but `review`.
pub trait Observer: Send + Sync {
    /// Planning started; `progress` counts keys read per side.
    fn planning(&self, _progress: &Arc<Progress>) {}
    /// History was compacted under a scan; planning starts over.
    fn replanning(&self, _error: &EtcdError, _attempt: u32, _max: u32) {}
    /// The complete plan. For [`Review::Approve`], `false` cancels.
    fn review(&self, report: &PlanReport, review: Review) -> bool;
    /// Writing started; `progress` counts keys settled.
    fn writing(&self, _progress: &Arc<ApplyProgress>) {}
    /// A phase ended, `seconds` after the apply started.
    fn phase(&self, _name: &'static str, _seconds: f64) {}
}

/// How an apply ended, as plain data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Nothing to write.
    NoChanges,
    /// The review said no; nothing was written.
    Cancelled,
    /// Stopped (Ctrl-C) before any write.
    InterruptedBeforeWrites,
    /// Every planned write is in place, proven by its transaction.
    Complete,
    /// Someone else wrote planned keys (or, for an undo or a move, keys
    /// changed since): those were left alone.
    Stale,
    /// Stopped with writes not attempted; a rerun resumes.
    Interrupted,
    /// Stopped while an undo restored source keys.
    RestoreInterrupted,
    /// Stopped while deleting moved keys from the source.
    MoveInterrupted,
    /// Keys too large for one request were not written; the rest was.
    TooLarge,
    /// Source values changed since a saved plan (history compacted): their
    /// batch was held back and the run stopped.
    SourceChanged,
}

/// Everything an apply did.
#[derive(Debug, Clone)]
pub struct ApplyOutcome {
    pub end: End,
    pub report: PlanReport,
    /// Whether the target was a saved plan.
    pub saved: bool,
    pub stats: ApplyStats,
    /// An undo of a move: what was put back on the source.
    pub restored: Option<ApplyStats>,
    /// Move mode: what was deleted from the source.
    pub moved: Option<MoveStats>,
    /// An undo: keys changed since the undone apply, left alone.
    pub undo_kept: Vec<String>,
    /// Keys proven to hold what was planned (see the module docs).
    pub verified: Option<u64>,
    /// The request limit this apply enforced.
    pub max_request_bytes: usize,
}

impl ApplyOutcome {
    /// The source revision the plan was pinned at.
    pub fn source_revision(&self) -> i64 {
        self.report.source.revision
    }
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
        "cannot write to `{prefix}` on the destination: {}",
        crate::escape::text(why)
    )]
    #[diagnostic(
        code(etcdplan::apply::not_writable),
        help(
            "grant write permission on that prefix to the destination user (see `etcdplan check`); nothing was written"
        )
    )]
    NotWritable { prefix: String, why: String },

    #[error(
        "cannot delete from `{prefix}` on the source: {}",
        crate::escape::text(why)
    )]
    #[diagnostic(
        code(etcdplan::apply::source_not_writable),
        help(
            "delete_source needs write permission on each `from` range of the source; nothing was written"
        )
    )]
    SourceNotWritable { prefix: String, why: String },
}

impl EngineError {
    /// Whether the error means the plan is stale (exit 3 in the CLI).
    pub fn is_stale(&self) -> bool {
        matches!(
            self,
            EngineError::Apply(ApplyError::SourceChanged { .. })
                | EngineError::Follow(crate::follow::FollowError::Conflict { .. })
        )
    }
}

/// The sides of a plan, with a run's retry policy.
pub fn sides(plan: &Plan, policy: &RetryPolicy) -> (Arc<Side>, Arc<Side>) {
    (
        Arc::new(Side::new(&plan.source, policy.clone()).with_probe(plan.probe_prefix(true))),
        Arc::new(Side::new(&plan.destination, policy.clone()).with_probe(plan.probe_prefix(false))),
    )
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
    let loaded = load(request)?;
    apply_loaded(request, loaded, observer, stop).await
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
        Some(report) => run.reviewed(report, true).await,
        None => {
            if request.auto_approve
                && !plan.delete_source
                && run.all_writable().await
                && (plan.on_conflict != OnConflict::Fail || run.destinations_empty().await)
            {
                return run.overlapped().await;
            }
            let report = run.plan_fresh().await?;
            run.reviewed(report, false).await
        }
    }
}

/// The first of `prefixes` (those `wanted`) that `side` refuses to write,
/// with why, by a probe that writes nothing.
async fn unwritable<'p>(
    side: &Side,
    prefixes: impl Iterator<Item = &'p [u8]>,
    wanted: &[bool],
) -> Option<(String, String)> {
    for (prefix, _) in prefixes.zip(wanted).filter(|(_, w)| **w) {
        if let Err(why) = crate::check::probe_write(side, prefix).await {
            return Some((crate::keys::display_key(prefix), why.to_string()));
        }
    }
    None
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
        match self.plan.leases {
            LeaseMode::Preserve => LeasePolicy::Grant,
            _ => LeasePolicy::None,
        }
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

    /// Whether every `to` range accepts writes (a probe that writes nothing).
    async fn all_writable(&self) -> bool {
        let all = vec![true; self.plan.mappings.len()];
        unwritable(
            &self.destination,
            self.plan.mappings.iter().map(|m| &m.to[..]),
            &all,
        )
        .await
        .is_none()
    }

    /// Whether every `to` range is empty, so that no conflict can stop an
    /// `on_conflict: fail` plan after writes began. A key written there by
    /// someone else meanwhile is caught by the guards (exit 3).
    async fn destinations_empty(&self) -> bool {
        for m in &self.plan.mappings {
            if !crate::etcd::info::range_is_empty(&self.destination, &m.to)
                .await
                .unwrap_or(false)
            {
                return false;
            }
        }
        true
    }

    /// A plan, started over at a fresh revision when compacted under a scan.
    async fn plan_fresh(&self) -> Result<PlanReport, EngineError> {
        let progress = Arc::new(Progress::default());
        self.observer.planning(&progress);
        let report = crate::plan::make_plan_fresh(
            self.plan,
            self.source.clone(),
            self.destination.clone(),
            &self.plan_options(),
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
    async fn overlapped(&self) -> Result<ApplyOutcome, EngineError> {
        let options = &self.request.options;
        let mut stats = ApplyStats::default();
        let mut replans = 0;
        loop {
            let progress = Arc::new(Progress::default());
            let writes = Arc::new(ApplyProgress::default());
            self.observer.planning(&progress);
            self.observer.writing(&writes);
            let (tx, rx) = mpsc::channel(options.concurrency.max(1));
            let tap = Tap::new(options, tx, writes.clone());
            let leases = self.lease_book(self.lease_policy());
            let planning = async {
                let result = crate::plan::make_plan_tapped(
                    self.plan,
                    self.source.clone(),
                    self.destination.clone(),
                    &self.plan_options(),
                    progress,
                    Some(tap),
                )
                .await;
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
                    return self.settle(report, false, stats, None, Vec::new()).await;
                }
            }
        }
    }

    /// Review first, then stream the spilled plan to the writers.
    async fn reviewed(
        &self,
        mut report: PlanReport,
        saved: bool,
    ) -> Result<ApplyOutcome, EngineError> {
        let options = &self.request.options;
        report.max_request_bytes = options.max_request_bytes;
        let review = if saved || self.request.auto_approve {
            Review::Show
        } else {
            Review::Approve
        };
        let approved = self.observer.review(&report, review);
        let undo = report.undo.clone();
        let undo_kept: Vec<String> = match &undo {
            None => Vec::new(),
            Some(u) => report
                .changes
                .iter()
                .chain(u.restores.iter().cloned())
                .filter(|c| c.action == Action::Conflict)
                .map(|c| crate::keys::display_key(&c.key))
                .collect(),
        };
        let outcome = |end: End, report: PlanReport, undo_kept: Vec<String>| ApplyOutcome {
            end,
            report,
            saved,
            stats: ApplyStats::default(),
            restored: None,
            moved: None,
            undo_kept,
            verified: None,
            max_request_bytes: options.max_request_bytes,
        };
        if !report.has_writes() {
            let end = if undo_kept.is_empty() {
                End::NoChanges
            } else {
                End::Stale
            };
            return Ok(outcome(end, report, undo_kept));
        }
        if !approved {
            return Ok(outcome(End::Cancelled, report, undo_kept));
        }
        apply::check_sizes(&report, options)?;
        let restores_write = undo
            .as_ref()
            .is_some_and(|u| u.restores.iter().any(|c| c.action.writes()));
        if saved {
            self.check_clusters(&report, restores_write).await?;
            if report.undo.is_none() {
                crate::saved::verify::check_deletes(&self.source, &report).await?;
            }
        }
        // Refuse before any write when a range to write is not writable.
        let mut writes_to = vec![false; self.plan.mappings.len()];
        for c in report.changes.iter().filter(|c| c.action.writes()) {
            if let Some(w) = writes_to.get_mut(c.mapping) {
                *w = true;
            }
        }
        report.changes.check().map_err(PlanError::Spill)?;
        let tos = self.plan.mappings.iter().map(|m| &m.to[..]);
        if let Some((prefix, why)) = unwritable(&self.destination, tos, &writes_to).await {
            return Err(EngineError::NotWritable { prefix, why });
        }
        // Move mode deletes from the source; an undo of one restores there.
        let mut moves_from = vec![false; self.plan.mappings.len()];
        for d in report.source_deletes.iter() {
            if let Some(w) = moves_from.get_mut(d.mapping) {
                *w = true;
            }
        }
        for c in undo.iter().flat_map(|u| &u.restores) {
            if c.action.writes()
                && let Some(w) = moves_from.get_mut(c.mapping)
            {
                *w = true;
            }
        }
        let froms = self.plan.mappings.iter().map(|m| &m.from[..]);
        if let Some((prefix, why)) = unwritable(&self.source, froms, &moves_from).await {
            return Err(EngineError::SourceNotWritable { prefix, why });
        }
        if self.stop.load(Ordering::SeqCst) {
            return Ok(outcome(End::InterruptedBeforeWrites, report, undo_kept));
        }
        // Undo of a move: the source keys go back first, so that no moment
        // holds a key on neither side.
        let mut restored = None;
        if let Some(u) = &undo
            && restores_write
        {
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
                options,
                &self.stop,
            )
            .await?;
            let end = if !stats.foreign.is_empty() {
                Some(End::Stale)
            } else if !stats.source_changed.is_empty() {
                Some(End::SourceChanged)
            } else if stats.not_attempted > 0 {
                Some(End::RestoreInterrupted)
            } else {
                None
            };
            if let Some(end) = end {
                let mut out = outcome(end, report, undo_kept);
                if end == End::Stale {
                    out.undo_kept = stats.foreign.clone();
                }
                out.restored = Some(stats);
                return Ok(out);
            }
            restored = Some(stats);
        }
        // An undo reads its values from the destination's own history.
        let (values, policy) = match &undo {
            None => (
                ValueSource::of_report(self.source.clone(), &report),
                self.lease_policy(),
            ),
            Some(_) => (
                ValueSource::of_report(self.destination.clone(), &report),
                LeasePolicy::Same,
            ),
        };
        let leases = self.lease_book(policy);
        let progress = Arc::new(ApplyProgress::default());
        progress
            .total
            .store(report.summary.writes(), Ordering::Relaxed);
        self.observer.writing(&progress);
        let stats = apply::apply_spool(
            self.destination.clone(),
            &report.changes,
            values,
            leases,
            options,
            &self.stop,
            &progress,
        )
        .await?;
        self.phase("written");
        self.settle(report, saved, stats, restored, undo_kept).await
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
        undo_kept: Vec<String>,
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
            let skip: std::collections::HashSet<String> =
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

/// What `apply --follow` needs besides the apply itself.
#[derive(Debug, Clone)]
pub struct FollowRequest {
    /// The initial apply (and the fresh ones after a compaction, which are
    /// auto-approved).
    pub apply: ApplyRequest,
    /// The destination key holding the last applied source revision
    /// (`None`: `/etcdplan/checkpoint/<plan name>`).
    pub checkpoint_key: Option<Vec<u8>>,
    pub until_revision: Option<i64>,
    pub cutover_file: Option<PathBuf>,
    /// Lag reports as JSON lines on stdout instead of text on stderr.
    pub json: bool,
    pub report_every: std::time::Duration,
}

/// Hears how following goes, besides the applies.
pub trait FollowObserver: Observer {
    /// An initial (or post-compaction) apply ended; `false` stops: it did
    /// not complete, and following would build on a partial copy.
    fn applied(&self, outcome: &ApplyOutcome) -> bool;
    /// A line worth telling the operator (resuming, following from, …).
    fn notice(&self, _text: &str) {}
}

/// How following ended.
#[derive(Debug, Clone)]
pub enum FollowOutcome {
    /// Stopped as asked (signal, --until-revision, cutover).
    Stopped(crate::follow::FollowEnd),
    /// An apply did not complete; the observer has its outcome.
    ApplyIncomplete,
}

/// `apply --follow`: the initial apply (skipped when a checkpoint of this
/// plan exists), then following the source; after a compaction past the
/// checkpoint, a fresh plan-and-apply and following again.
pub async fn follow(
    request: &FollowRequest,
    observer: &dyn FollowObserver,
    stop: Arc<AtomicBool>,
) -> Result<FollowOutcome, EngineError> {
    use crate::follow::{self as f, FollowEnd, FollowError, FollowOptions};
    if SavedPlan::is_saved_plan(&request.apply.target) {
        return Err(FollowError::NeedsPlanFile.into());
    }
    let plan = planfile::load(&request.apply.target)?;
    if plan.source.api == planfile::Api::V2 || plan.destination.api == planfile::Api::V2 {
        return Err(FollowError::V2.into());
    }
    if plan.delete_source {
        return Err(FollowError::MoveMode.into());
    }
    let (source, destination) = sides(&plan, &request.apply.policy);
    let (src_id, dst_id) = tokio::try_join!(
        crate::plan::cluster_id(&source),
        crate::plan::cluster_id(&destination)
    )
    .map_err(PlanError::from)?;
    let key = request
        .checkpoint_key
        .clone()
        .unwrap_or_else(|| f::default_checkpoint_key(&plan));
    f::check_checkpoint_key(&plan, &key, src_id == dst_id)?;
    let source_cluster_id = format!("{src_id:016x}");
    let options = FollowOptions {
        until_revision: request.until_revision,
        cutover_file: request.cutover_file.clone(),
        checkpoint_key: key.clone(),
        source_cluster_id: source_cluster_id.clone(),
        json: request.json,
        max_txn_ops: request.apply.options.max_txn_ops,
        max_txn_bytes: request.apply.options.max_txn_bytes,
        report_every: request.report_every,
    };
    // One lease book for the initial apply and the follow after it, so that
    // keys sharing a source lease share one destination lease throughout.
    let policy = match plan.leases {
        LeaseMode::Preserve => LeasePolicy::Grant,
        _ => LeasePolicy::None,
    };
    let book = Arc::new(LeaseBook::new(policy, source.clone(), destination.clone()));
    // The checkpoint must be writable before anything is written: else the
    // initial apply would land and following fail right after it.
    crate::etcd::info::probe_write_key(&destination, &key)
        .await
        .map_err(FollowError::from)?;
    let resume = f::read_checkpoint(&destination, &key).await?.filter(|c| {
        c.source_cluster_id == source_cluster_id && c.plan_file_sha256 == plan.file_sha256
    });
    // The apply that starts (or restarts) following; on success the
    // checkpoint is written at its pinned source revision.
    let initial = |apply: ApplyRequest| {
        let (plan, source, destination, stop, key, book) = (
            plan.clone(),
            source.clone(),
            destination.clone(),
            stop.clone(),
            key.clone(),
            book.clone(),
        );
        let source_cluster_id = source_cluster_id.clone();
        async move {
            let loaded = Loaded {
                plan: plan.clone(),
                source,
                destination: destination.clone(),
                saved: None,
                leases: Some(book.clone()),
            };
            let outcome = apply_loaded(&apply, loaded, observer, stop).await?;
            if !observer.applied(&outcome) {
                return Ok::<_, EngineError>(None);
            }
            let revision = outcome.source_revision();
            let checkpoint = f::Checkpoint {
                source_cluster_id,
                revision,
                plan_file_sha256: plan.file_sha256.clone(),
                leases: book.pairs().await,
            };
            f::write_checkpoint(&destination, &key, &checkpoint)
                .await
                .map_err(FollowError::from)?;
            observer.notice(&format!(
                "Following the source from revision {} (checkpoint `{}`).",
                revision + 1,
                crate::keys::display_key(&key)
            ));
            Ok(Some(revision))
        }
    };
    let mut applied = match resume {
        Some(c) => {
            observer.notice(&format!(
                "Resuming: the checkpoint `{}` says source revision {} is applied; following from {}.",
                crate::keys::display_key(&key),
                c.revision,
                c.revision + 1
            ));
            book.adopt(&c.leases).await.map_err(FollowError::from)?;
            c.revision
        }
        None => match initial(request.apply.clone()).await? {
            Some(revision) => revision,
            None => return Ok(FollowOutcome::ApplyIncomplete),
        },
    };
    loop {
        let end = f::follow(
            &plan,
            source.clone(),
            destination.clone(),
            applied,
            &book,
            &options,
            stop.clone(),
        )
        .await?;
        match end {
            FollowEnd::Compacted {
                last_applied,
                compact_revision,
            } => {
                observer.notice(&format!(
                    "The source compacted its history up to revision {compact_revision}, past revision {} this follow needs: running a fresh plan and apply, then following again.",
                    last_applied + 1
                ));
                let again = ApplyRequest {
                    auto_approve: true,
                    ..request.apply.clone()
                };
                applied = match initial(again).await? {
                    Some(revision) => revision,
                    None => return Ok(FollowOutcome::ApplyIncomplete),
                };
            }
            other => return Ok(FollowOutcome::Stopped(other)),
        }
    }
}
