//! Follow mode: after the initial apply, watch the source and apply every
//! later put and delete to the destination in source-revision order, one
//! source transaction as one destination transaction where it fits.
//!
//! Each destination transaction also writes a checkpoint key holding the last
//! applied source revision, so the checkpoint and the data can never
//! disagree: a restart resumes from the checkpoint without losing or
//! duplicating an event. Writes are guarded by the source's previous value
//! (the destination mirrors the source), so a key someone else wrote on the
//! destination is a conflict, reported and never overwritten.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use miette::Diagnostic;
use serde::{Deserialize, Serialize};

use crate::etcd::watch::{self, SourceEvent, Watch, WatchMessage};
use crate::etcd::write::{Guard, Outcome, Put, WriteOp, write_batch};
use crate::etcd::{EtcdError, Side};
use crate::keys::{KeyList, display_key, prefix_end};
use crate::leases::{LeaseBook, Pair};
use crate::planfile::{LeaseMode, Plan};

/// What the checkpoint key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub source_cluster_id: String,
    /// The last source revision whose events are on the destination.
    pub revision: i64,
    /// The plan file it belongs to: a changed plan starts over.
    pub plan_file_sha256: String,
    /// Source lease to destination lease, for the leases follow tends, so
    /// a resumed follow keeps using them.
    #[serde(default)]
    pub leases: Vec<Pair>,
}

/// How follow mode stops and writes.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    pub until_revision: Option<i64>,
    pub cutover_file: Option<PathBuf>,
    pub checkpoint_key: Vec<u8>,
    /// The source cluster's id, as the checkpoint records it.
    pub source_cluster_id: String,
    pub max_txn_ops: usize,
    pub max_txn_bytes: usize,
    /// How often lag is reported.
    pub report_every: Duration,
}

/// Why following ended without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEnd {
    /// Ctrl-C or SIGTERM.
    Interrupted { last_applied: i64 },
    /// `--until-revision` was reached.
    UntilReached { last_applied: i64 },
    /// The cutover file exists and the lag is zero.
    Cutover { last_applied: i64 },
    /// The source compacted past the revision to resume from.
    Compacted {
        last_applied: i64,
        compact_revision: i64,
    },
}

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum FollowError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Etcd(#[from] EtcdError),

    #[error(
        "source revision {revision}: {} destination key(s) were written by someone else while following and were left alone:\n{keys}",
        keys.len()
    )]
    #[diagnostic(
        code(etcdplan::follow::conflict),
        help(
            "stale plan or concurrent writer: find out who writes to the destination, then run `etcdplan plan` again"
        )
    )]
    Conflict { revision: i64, keys: KeyList },

    #[error(
        "the checkpoint key `{}` lies inside a range the plan reads or writes",
        display_key(key)
    )]
    #[diagnostic(
        code(etcdplan::follow::bad_checkpoint_key),
        help(
            "choose a --checkpoint-key outside every `to` range (and every `from` range when both sides are one cluster)"
        )
    )]
    CheckpointKeyOverlaps { key: Vec<u8> },

    #[error(
        "the checkpoint at `{}` is not etcdplan's: {}",
        display_key(key),
        crate::escape::text(why)
    )]
    #[diagnostic(
        code(etcdplan::follow::bad_checkpoint),
        help("delete that key on the destination, or choose another --checkpoint-key")
    )]
    BadCheckpoint { key: Vec<u8>, why: String },

    #[error("--follow needs a plan file, not a saved plan")]
    #[diagnostic(
        code(etcdplan::follow::needs_plan_file),
        help("follow mode plans from the plan file: `etcdplan apply PLAN.yaml --follow`")
    )]
    NeedsPlanFile,

    #[error("--follow needs the v3 API on both sides")]
    #[diagnostic(
        code(etcdplan::follow::v2),
        help(
            "follow mode watches and writes with v3 transactions; plan and apply work with v2 sides"
        )
    )]
    V2,

    #[error(
        "--follow cannot be combined with `delete_source: true`: the source keeps changing while followed"
    )]
    #[diagnostic(
        code(etcdplan::follow::move_mode),
        help(
            "follow first, then after cutover run `etcdplan apply` with `delete_source: true` to remove the moved keys"
        )
    )]
    MoveMode,

    #[error("apply --follow needs a live source: a snapshot file does not change")]
    #[diagnostic(
        code(etcdplan::follow::snapshot),
        help(
            "apply the snapshot's plan without --follow; to follow a cluster, name its `endpoints` as the source"
        )
    )]
    Snapshot,

    #[error("the source watch was cancelled: {}", crate::escape::text(.0))]
    #[diagnostic(
        code(etcdplan::follow::watch_cancelled),
        help("rerun the same command: it resumes from the checkpoint")
    )]
    WatchCancelled(String),
}

/// The default checkpoint key for a plan.
pub fn default_checkpoint_key(plan: &Plan) -> Vec<u8> {
    let name = plan
        .name
        .clone()
        .unwrap_or_else(|| plan.file_sha256[..16].to_string());
    format!("/etcdplan/checkpoint/{name}").into_bytes()
}

/// Refuses a checkpoint key that a mapping would read or write.
pub fn check_checkpoint_key(
    plan: &Plan,
    key: &[u8],
    same_cluster: bool,
) -> Result<(), FollowError> {
    let clash = plan
        .mappings
        .iter()
        .any(|m| key.starts_with(&m.to) || (same_cluster && key.starts_with(&m.from)));
    if clash {
        return Err(FollowError::CheckpointKeyOverlaps { key: key.to_vec() });
    }
    Ok(())
}

/// Reads the checkpoint, if there is one.
pub async fn read_checkpoint(
    destination: &Side,
    key: &[u8],
) -> Result<Option<Checkpoint>, FollowError> {
    let Some(value) = watch::get_value(destination, key).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&value)
        .map(Some)
        .map_err(|e| FollowError::BadCheckpoint {
            key: key.to_vec(),
            why: e.to_string(),
        })
}

fn checkpoint_op(key: &[u8], checkpoint: &Checkpoint) -> Put {
    Put {
        key: key.to_vec(),
        value: serde_json::to_vec(checkpoint).unwrap_or_default(),
    }
}

/// Writes the checkpoint on its own (after the initial apply, or when
/// revisions without destination writes moved it).
pub async fn write_checkpoint(
    destination: &Side,
    key: &[u8],
    checkpoint: &Checkpoint,
) -> Result<(), EtcdError> {
    let put = checkpoint_op(key, checkpoint);
    watch::put_value(destination, &put.key, &put.value).await
}

/// The smallest key range covering every `from` prefix: one watch, so
/// events arrive in source-revision order across all mappings.
fn covering_range(plan: &Plan) -> (Vec<u8>, Vec<u8>) {
    if plan.mappings.iter().any(|m| m.from.is_empty()) {
        return (vec![0], vec![0]);
    }
    let start = plan
        .mappings
        .iter()
        .map(|m| m.from.clone())
        .min()
        .unwrap_or_default();
    let ends: Vec<Option<Vec<u8>>> = plan.mappings.iter().map(|m| prefix_end(&m.from)).collect();
    let end = if ends.iter().any(Option::is_none) {
        vec![0]
    } else {
        ends.into_iter().flatten().max().unwrap_or_else(|| vec![0])
    };
    (start, end)
}

/// The guarded destination writes of one source revision. A leased put
/// goes on the destination lease standing in for its source lease (with
/// `leases: preserve`); a put whose source lease is already gone, or any
/// leased put with `leases: skip`, is not written, and a key whose previous
/// value was such a put is expected absent on the destination.
async fn writes_for(
    plan: &Plan,
    events: &[SourceEvent],
    book: &LeaseBook,
) -> Result<Vec<WriteOp>, EtcdError> {
    let skip = plan.leases == LeaseMode::Skip;
    let mut ops = Vec::new();
    for e in events {
        for m in &plan.mappings {
            if !e.key.starts_with(&m.from) || m.excludes_source(&e.key) {
                continue;
            }
            let Some(key) = m.to_destination(&e.key) else {
                continue;
            };
            let lease = match (&e.value, e.lease) {
                (Some(_), 0) => 0,
                (Some(_), _) if skip => continue,
                (Some(_), id) => match book.lease_for(id).await? {
                    Some(lease) => lease,
                    None => continue,
                },
                (None, _) => 0,
            };
            let prev_missing = e.prev_lease != 0 && (skip || book.is_gone(e.prev_lease).await);
            let guard = match &e.prev {
                Some(prev) if !prev_missing => Guard::Value(prev.clone()),
                _ => Guard::Absent,
            };
            if e.value.is_none() && guard == Guard::Absent {
                // Deleting what is absent here: nothing to write.
                continue;
            }
            ops.push(WriteOp {
                key,
                value: e.value.clone(),
                guard,
                lease,
            });
        }
    }
    Ok(ops)
}

/// What following needs: the plan, both sides, the lease book shared with
/// the initial apply, how to stop, and where lag reports go.
pub struct Follower<'a> {
    pub plan: &'a Plan,
    pub source: Arc<Side>,
    pub destination: Arc<Side>,
    pub book: &'a LeaseBook,
    pub options: &'a FollowOptions,
    pub stop: Arc<AtomicBool>,
    /// Hears a [`LagReport`] every `options.report_every`.
    pub on_lag: &'a (dyn Fn(&LagReport) + Sync),
}

/// How far behind the source following is, as plain data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LagReport {
    pub source_revision: i64,
    pub applied_revision: i64,
    pub lag_revisions: i64,
    pub events_per_second: f64,
    pub seconds_behind: f64,
    pub events_applied: u64,
}

/// Where following stands, between watch messages and ticks.
struct Position {
    last_applied: i64,
    head: i64,
    /// The checkpoint lags `last_applied` and must be written.
    dirty: bool,
    events_applied: u64,
    window_start: Instant,
    window_events: u64,
    behind_since: Option<Instant>,
    last_report: Instant,
    idle_ticks: u32,
}

impl Position {
    fn new(last_applied: i64) -> Position {
        Position {
            last_applied,
            head: last_applied,
            dirty: false,
            events_applied: 0,
            window_start: Instant::now(),
            window_events: 0,
            behind_since: None,
            last_report: Instant::now(),
            idle_ticks: 0,
        }
    }

    fn note_behind(&mut self) {
        if self.last_applied >= self.head {
            self.behind_since = None;
        } else if self.behind_since.is_none() {
            self.behind_since = Some(Instant::now());
        }
    }

    /// The lag report of the window since the last one, and a new window.
    fn lag(&mut self) -> LagReport {
        let secs = self.window_start.elapsed().as_secs_f64().max(0.001);
        let report = LagReport {
            source_revision: self.head,
            applied_revision: self.last_applied,
            lag_revisions: (self.head - self.last_applied).max(0),
            events_per_second: (self.window_events as f64 / secs * 10.0).round() / 10.0,
            seconds_behind: (self.behind_since.map_or(0.0, |t| t.elapsed().as_secs_f64()) * 10.0)
                .round()
                / 10.0,
            events_applied: self.events_applied,
        };
        self.window_start = Instant::now();
        self.window_events = 0;
        self.last_report = Instant::now();
        report
    }
}

/// What one watch message asks of the follower.
enum Step {
    Go,
    Reopen,
    End(FollowEnd),
}

impl Follower<'_> {
    /// Follows the source from `last_applied + 1` until told to stop.
    pub async fn run(&self, last_applied: i64) -> Result<FollowEnd, FollowError> {
        let (start, end) = covering_range(self.plan);
        let mut at = Position::new(last_applied);
        let every = self.options.report_every;
        let mut ticker = tokio::time::interval(every.min(Duration::from_secs(1)));
        loop {
            // (Re)open the watch from the first revision not yet applied.
            let mut stream = Watch::open(&self.source, &start, &end, at.last_applied + 1).await?;
            loop {
                // Cutover is judged only right after the head was read afresh.
                let mut fresh_head = false;
                tokio::select! {
                    message = stream.next() => match self.on_message(message, &mut at).await? {
                        Step::Go => {}
                        Step::Reopen => break,
                        Step::End(end) => return Ok(end),
                    },
                    _ = ticker.tick() => {
                        self.on_tick(&start, &end, &mut at).await?;
                        fresh_head = true;
                    }
                }
                if let Some(end) = self.finished(&at, fresh_head) {
                    if at.dirty {
                        self.save(at.last_applied).await?;
                    }
                    return Ok(end);
                }
            }
        }
    }

    /// Why to stop now, if at all.
    fn finished(&self, at: &Position, fresh_head: bool) -> Option<FollowEnd> {
        let last_applied = at.last_applied;
        if self.stop.load(Ordering::SeqCst) {
            return Some(FollowEnd::Interrupted { last_applied });
        }
        if self
            .options
            .until_revision
            .is_some_and(|r| last_applied >= r)
        {
            return Some(FollowEnd::UntilReached { last_applied });
        }
        if let Some(file) = &self.options.cutover_file
            && fresh_head
            && file.exists()
            && last_applied >= at.head
        {
            return Some(FollowEnd::Cutover { last_applied });
        }
        None
    }

    /// The checkpoint at `revision`, with the live lease pairs.
    async fn checkpoint(&self, revision: i64) -> Checkpoint {
        Checkpoint {
            source_cluster_id: self.options.source_cluster_id.clone(),
            revision,
            plan_file_sha256: self.plan.file_sha256.clone(),
            leases: self.book.pairs().await,
        }
    }

    async fn save(&self, revision: i64) -> Result<(), FollowError> {
        let checkpoint = self.checkpoint(revision).await;
        write_checkpoint(&self.destination, &self.options.checkpoint_key, &checkpoint).await?;
        Ok(())
    }

    /// Applies one watch message's events, revision by revision.
    async fn on_message(
        &self,
        message: Option<WatchMessage>,
        at: &mut Position,
    ) -> Result<Step, FollowError> {
        let (header_revision, events) = match message {
            Some(WatchMessage::Events {
                header_revision,
                events,
            }) => (header_revision, events),
            None => {
                // The endpoint went away: reopen from the checkpoint of memory.
                tracing::warn!(
                    last_applied = at.last_applied,
                    "source watch broke; reopening"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Ok(Step::Reopen);
            }
            Some(WatchMessage::Compacted { compact_revision }) => {
                if at.dirty {
                    self.save(at.last_applied).await?;
                }
                return Ok(Step::End(FollowEnd::Compacted {
                    last_applied: at.last_applied,
                    compact_revision,
                }));
            }
            Some(WatchMessage::Cancelled { reason }) => {
                return Err(FollowError::WatchCancelled(reason));
            }
        };
        at.head = at.head.max(header_revision);
        // Events at or below a position proven by `settled` are
        // state-neutral (see there) and already accounted for.
        let events: Vec<SourceEvent> = events
            .into_iter()
            .filter(|e| e.revision > at.last_applied)
            .collect();
        if !events.is_empty() {
            at.idle_ticks = 0;
        }
        // Revisions come whole and in order; apply them one by one.
        for group in events.chunk_by(|a, b| a.revision == b.revision) {
            let revision = group[0].revision;
            let ops = writes_for(self.plan, group, self.book).await?;
            let checkpoint = self.checkpoint(revision).await;
            apply_revision(
                &self.destination,
                revision,
                &ops,
                self.options,
                &checkpoint,
                &mut at.dirty,
            )
            .await?;
            at.events_applied += ops.len() as u64;
            at.window_events += ops.len() as u64;
            at.last_applied = revision;
        }
        at.note_behind();
        Ok(Step::Go)
    }

    /// The periodic work: leases, the source head, skipping revisions that
    /// left the range alone, the checkpoint, and the lag report.
    async fn on_tick(
        &self,
        start: &[u8],
        end: &[u8],
        at: &mut Position,
    ) -> Result<(), FollowError> {
        at.idle_ticks += 1;
        self.book.tend().await?;
        at.head = at.head.max(source_head(&self.source, start).await?);
        // Idle and behind: prove the revisions in between did not touch the
        // watched range, then move past them.
        if at.idle_ticks >= 2
            && at.last_applied < at.head
            && settled(&self.source, start, end, at.last_applied, at.head).await?
        {
            at.last_applied = at.head;
            at.dirty = true;
        }
        at.note_behind();
        if at.dirty {
            self.save(at.last_applied).await?;
            at.dirty = false;
        }
        if at.last_report.elapsed() >= self.options.report_every {
            (self.on_lag)(&at.lag());
        }
        Ok(())
    }
}

/// The source's current revision.
async fn source_head(source: &Side, start: &[u8]) -> Result<i64, FollowError> {
    Ok(watch::head_revision(source, start).await?)
}

/// Whether the watched range is in the same state at `head` as at `applied`,
/// so that following may move past the revisions in between without
/// waiting for events. True when no key of the range has a mod revision in
/// `(applied, head]` and the range holds as many keys at both revisions:
/// then every change in between was undone within it (a key created and
/// deleted again), and skipping it leaves the same destination.
///
/// Watch progress reports cannot be used for this: etcd 3.4 answers a
/// progress request with its current revision at once, even while older
/// events of the watch are still queued, and trusting it loses events.
async fn settled(
    source: &Side,
    start: &[u8],
    end: &[u8],
    applied: i64,
    head: i64,
) -> Result<bool, FollowError> {
    if watch::changed_between(source, start, end, applied, head).await? {
        return Ok(false);
    }
    let before = match watch::count_at(source, start, end, applied).await {
        Ok(n) => n,
        // History gone: the watch itself reports the compaction.
        Err(EtcdError::Compacted { .. }) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let after = watch::count_at(source, start, end, head).await?;
    Ok(before == after)
}

/// Applies one source revision: one destination transaction when it fits
/// (the checkpoint rides in it), several when it does not (the checkpoint
/// only in the last, so it never claims a half-applied revision).
async fn apply_revision(
    destination: &Side,
    revision: i64,
    ops: &[WriteOp],
    options: &FollowOptions,
    checkpoint: &Checkpoint,
    dirty: &mut bool,
) -> Result<(), FollowError> {
    if ops.is_empty() {
        *dirty = true;
        return Ok(());
    }
    // The same limits as apply, with one op kept for the checkpoint.
    let parts = crate::etcd::write::split_ops(
        ops,
        options.max_txn_ops.saturating_sub(1).max(1),
        options.max_txn_bytes,
    );
    if parts.len() > 1 {
        tracing::warn!(
            revision,
            ops = ops.len(),
            transactions = parts.len(),
            "a source transaction does not fit one destination transaction; applying it in several (atomic per part, not as a whole)"
        );
    }
    let cp = [checkpoint_op(&options.checkpoint_key, checkpoint)];
    let last = parts.len() - 1;
    let mut foreign = KeyList::default();
    let mut wrote_last = false;
    for (n, batch) in parts.into_iter().enumerate() {
        let extra: &[Put] = if n == last { &cp } else { &[] };
        let outcomes = write_batch(destination, &batch, extra).await?;
        for (op, outcome) in batch.iter().zip(&outcomes) {
            if let Outcome::Foreign { .. } = outcome {
                foreign.push(op.key.clone());
            }
        }
        if n == last {
            wrote_last = outcomes.contains(&Outcome::Written);
        }
    }
    if !foreign.is_empty() {
        return Err(FollowError::Conflict {
            revision,
            keys: foreign,
        });
    }
    // Every key already in place: the checkpoint did not ride along.
    *dirty = !wrote_last;
    Ok(())
}
