//! Apply: the reviewed changes go out in guarded, batched, pipelined
//! transactions. A rerun after a crash finds what is already in place and
//! writes only the rest; a key someone else changed since the plan is never
//! overwritten.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use miette::Diagnostic;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::diff::{Action, Change, SourceDelete};
use crate::etcd::write::{Guard, Outcome, WriteOp, read_sorted, split_ops, write_batch};
use crate::etcd::{EtcdError, Side};
use crate::keys::display_key;
use crate::leases::LeaseBook;
use crate::plan::PlanReport;

/// How writes are batched and paced.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Keys per transaction (each key is one compare and one op per branch).
    pub max_txn_ops: usize,
    /// Request bytes per batched transaction. A key too big for a batch
    /// still goes, alone, when it fits `max_request_bytes`.
    pub max_txn_bytes: usize,
    /// The destination's `--max-request-bytes`: no request may be larger.
    pub max_request_bytes: usize,
    /// Transactions in flight at once.
    pub concurrency: usize,
    /// Keys per second, when limited.
    pub rate: Option<f64>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            max_txn_ops: 128,
            max_txn_bytes: 1 << 20,
            max_request_bytes: crate::etcd::write::DEFAULT_MAX_REQUEST_BYTES,
            concurrency: DEFAULT_CONCURRENCY,
            rate: None,
        }
    }
}

/// Transactions in flight by default. Measured with examples/bench.sh on two
/// local servers (100,000 keys, overlapped apply): 0.76 s at 8, 0.63 s at 16;
/// the raw writer's best is also at 16.
pub const DEFAULT_CONCURRENCY: usize = 16;

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum ApplyError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Etcd(#[from] EtcdError),

    #[error(
        "{count} key(s) cannot fit one request of at most {limit} bytes, even alone; nothing was written:\n{listed}"
    )]
    #[diagnostic(
        code(etcdplan::apply::value_too_large),
        help(
            "etcd refuses requests over its --max-request-bytes (1.5 MiB by default): raise it on the destination and pass the same --max-request-bytes here, or exclude these keys"
        )
    )]
    TooLarge {
        count: usize,
        limit: usize,
        listed: String,
    },

    #[error(
        "{count} key(s) cannot fit one request of at most {limit} bytes, even alone: they were not written, every other key was:\n{listed}"
    )]
    #[diagnostic(
        code(etcdplan::apply::value_too_large),
        help(
            "etcd refuses requests over its --max-request-bytes (1.5 MiB by default): raise it on the destination and pass the same --max-request-bytes here, then rerun to write these keys; or exclude them"
        )
    )]
    SkippedTooLarge {
        count: usize,
        limit: usize,
        listed: String,
    },

    #[error(
        "the destination refused {count} key(s) as too large for one request; every other key was written:\n{listed}"
    )]
    #[diagnostic(
        code(etcdplan::apply::refused_as_too_large),
        help(
            "the destination's --max-request-bytes is lower than {limit} bytes: raise it on the destination (or lower --max-request-bytes here to match it and plan again), then rerun to write these keys"
        )
    )]
    RefusedTooLarge {
        count: usize,
        limit: usize,
        listed: String,
    },

    #[error(
        "the {side} cluster is {found}, but the saved plan was made against {}",
        crate::escape::text(expected)
    )]
    #[diagnostic(
        code(etcdplan::apply::cluster_mismatch),
        help(
            "a saved plan applies only to the clusters it was made for; run `etcdplan plan` against these clusters"
        )
    )]
    ClusterMismatch {
        side: &'static str,
        expected: String,
        found: String,
    },

    #[error("{count} source value(s) differ from what the saved plan reviewed:\n{listed}")]
    #[diagnostic(
        code(etcdplan::apply::source_changed),
        help(
            "the source changed (or its history was compacted) since the plan: run `etcdplan plan` again"
        )
    )]
    SourceChanged { count: usize, listed: String },

    #[error("after apply, {count} planned key(s) do not hold what was planned:\n{listed}")]
    #[diagnostic(
        code(etcdplan::apply::verify_failed),
        help(
            "someone wrote to the destination during the apply; run `etcdplan plan` to see the current difference"
        )
    )]
    VerifyFailed { count: usize, listed: String },

    #[error("internal error while applying: {0}")]
    #[diagnostic(
        code(etcdplan::apply::internal),
        help("this is a bug in etcdplan; please report it with the command you ran")
    )]
    Internal(String),
}

/// Counts of an apply run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyStats {
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub already_in_place: u64,
    /// Keys someone else wrote since the plan, left alone.
    pub foreign: Vec<String>,
    /// Keys never attempted because the run stopped early.
    pub not_attempted: u64,
    /// Keys the destination refused as too large, even alone: not written.
    pub too_large: Vec<String>,
    /// Keys that cannot fit one request under --max-request-bytes, even
    /// alone, found while writing overlapped with the plan: not written.
    pub oversized: Vec<String>,
    /// Source keys whose value at the pinned revision no longer matches the
    /// plan (history compacted and the key changed): their batch was held back.
    pub source_changed: Vec<String>,
    /// Keys not written because their source lease expired since the plan.
    pub lease_expired: Vec<String>,
}

impl ApplyStats {
    /// Keys whose guarded transaction proved they hold the planned state:
    /// a compare that held and wrote, or a read-back showing it in place.
    pub fn proven(&self) -> u64 {
        self.created + self.updated + self.deleted + self.already_in_place
    }

    pub fn add(&mut self, other: ApplyStats) {
        self.created += other.created;
        self.updated += other.updated;
        self.deleted += other.deleted;
        self.already_in_place += other.already_in_place;
        self.foreign.extend(other.foreign);
        self.not_attempted += other.not_attempted;
        self.too_large.extend(other.too_large);
        self.oversized.extend(other.oversized);
        self.source_changed.extend(other.source_changed);
        self.lease_expired.extend(other.lease_expired);
    }
}

/// Live counters for progress displays.
#[derive(Debug, Default)]
pub struct ApplyProgress {
    pub done: AtomicU64,
    pub total: AtomicU64,
}

/// Refuses, before anything is written, a plan holding a key no request
/// can carry under `max_request_bytes` (sizes come from the plan).
pub fn check_sizes(report: &PlanReport, options: &ApplyOptions) -> Result<(), ApplyError> {
    let keys: Vec<String> = report
        .too_large(options.max_request_bytes)
        .iter()
        .map(|c| {
            format!(
                "{} ({} bytes)",
                display_key(&c.key),
                c.source.as_ref().map_or(0, |v| v.size)
            )
        })
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    Err(ApplyError::TooLarge {
        count: keys.len(),
        limit: options.max_request_bytes,
        listed: list(&keys),
    })
}

/// One change on its way to the destination, with its value when the
/// caller already holds it (read by the plan's own scan); otherwise the
/// writer reads it from the source just before writing.
#[derive(Debug, Clone)]
pub struct Item {
    pub change: Change,
    pub value: Option<Vec<u8>>,
}

/// Cuts a stream of items (in key order) into transactions of at most
/// `max_txn_ops` keys and `max_txn_bytes` bytes, by the planned value
/// sizes. A batch never spans two mappings (so its source keys are sorted)
/// and never holds a key twice. A key too big for a batch goes alone.
pub struct Batcher {
    max_ops: usize,
    max_bytes: usize,
    max_request_bytes: usize,
    batch: Vec<Item>,
    bytes: usize,
}

impl Batcher {
    pub fn new(options: &ApplyOptions) -> Batcher {
        Batcher {
            max_ops: options.max_txn_ops.max(1),
            max_bytes: options.max_txn_bytes,
            max_request_bytes: options.max_request_bytes,
            batch: Vec::new(),
            bytes: 0,
        }
    }

    /// Whether the change can be written at all under the request limit.
    pub fn fits(&self, change: &Change) -> bool {
        !matches!(change.action, Action::Create | Action::Update)
            || crate::etcd::write::fits_alone(
                change.key.len(),
                change.source.as_ref().map_or(0, |v| v.size),
                self.max_request_bytes,
            )
    }

    /// Adds an item that writes; returns a full batch to send, if any.
    pub fn push(&mut self, item: Item) -> Option<Vec<Item>> {
        let b = crate::plan::write_bytes(&item.change);
        let full = !self.batch.is_empty()
            && (self.batch.len() >= self.max_ops
                || self.bytes + b > self.max_bytes
                || self.batch[0].change.mapping != item.change.mapping);
        let out = if full { self.flush() } else { None };
        self.bytes += b;
        self.batch.push(item);
        out
    }

    /// The last, partial batch.
    pub fn flush(&mut self) -> Option<Vec<Item>> {
        self.bytes = 0;
        (!self.batch.is_empty()).then(|| std::mem::take(&mut self.batch))
    }
}

/// The plan's hand-off to the writers when writing overlaps the plan: the
/// diff offers each write with the value its scan just read (at the pinned
/// revision), and full batches go to the writer pool. When the channel is
/// full the diff waits, and so do the scans: memory stays bounded.
pub struct Tap {
    batcher: Batcher,
    tx: Option<mpsc::Sender<Vec<Item>>>,
    progress: Arc<ApplyProgress>,
    /// Writes that cannot fit one request under --max-request-bytes.
    pub oversized: Vec<String>,
    /// Writes not sent because the writers stopped.
    pub unsent: u64,
}

impl Tap {
    pub fn new(
        options: &ApplyOptions,
        tx: mpsc::Sender<Vec<Item>>,
        progress: Arc<ApplyProgress>,
    ) -> Tap {
        Tap {
            batcher: Batcher::new(options),
            tx: Some(tx),
            progress,
            oversized: Vec::new(),
            unsent: 0,
        }
    }

    /// Offers one write (called from the blocking diff thread).
    pub fn offer(&mut self, change: Change, value: Option<Vec<u8>>) {
        if !self.batcher.fits(&change) {
            self.oversized.push(display_key(&change.key));
            return;
        }
        if let Some(batch) = self.batcher.push(Item { change, value }) {
            self.send(batch);
        }
    }

    fn send(&mut self, batch: Vec<Item>) {
        let n = batch.len() as u64;
        match &self.tx {
            Some(tx) if tx.blocking_send(batch).is_ok() => {
                self.progress.total.fetch_add(n, Ordering::Relaxed);
            }
            _ => {
                self.tx = None;
                self.unsent += n;
            }
        }
    }

    /// Sends the last batch and hangs up, so the writers finish.
    pub async fn finish(&mut self) {
        if let Some(batch) = self.batcher.flush() {
            let n = batch.len() as u64;
            match self.tx.take() {
                Some(tx) if tx.send(batch).await.is_ok() => {
                    self.progress.total.fetch_add(n, Ordering::Relaxed);
                }
                _ => self.unsent += n,
            }
        }
        self.tx = None;
    }
}

/// Streams the writing changes of a spilled plan into batches on `tx`,
/// from a blocking thread. Returns how many writes it sent; stops early
/// when the writer hangs up.
pub fn feed_from_spool(
    changes: &crate::spool::Spool<Change>,
    options: &ApplyOptions,
    tx: &mpsc::Sender<Vec<Item>>,
) -> std::io::Result<()> {
    let mut batcher = Batcher::new(options);
    for change in changes.try_iter() {
        let change = change?;
        if !change.action.writes() {
            continue;
        }
        if let Some(batch) = batcher.push(Item {
            change,
            value: None,
        }) && tx.blocking_send(batch).is_err()
        {
            return Ok(());
        }
    }
    if let Some(batch) = batcher.flush() {
        let _ = tx.blocking_send(batch);
    }
    Ok(())
}

/// Where the writer reads values the items do not carry: `side` at
/// `revision`, checked against the planned sha256. `dense[m]` says whether
/// mapping `m` writes most keys of its source range (then one bounded range
/// read per batch beats point reads).
#[derive(Clone)]
pub struct ValueSource {
    pub side: Arc<Side>,
    pub revision: i64,
    pub dense: Vec<bool>,
}

impl ValueSource {
    /// Reads the plan's source at its pinned revision.
    pub fn of_report(side: Arc<Side>, report: &PlanReport) -> ValueSource {
        let dense = report
            .mappings
            .iter()
            .map(|m| {
                let s = &m.summary;
                let read = s.create + s.update + s.conflict + s.unchanged + s.leased_skipped;
                (s.create + s.update) * 2 >= read
            })
            .collect();
        ValueSource {
            side,
            revision: report.source.revision,
            dense,
        }
    }
}

/// What one transaction did.
struct Settled {
    items: Vec<Change>,
    outcomes: Vec<Option<Outcome>>,
    source_changed: Vec<String>,
    lease_expired: Vec<String>,
}

/// Fills values, attaches leases and writes one batch.
async fn write_one(
    destination: Arc<Side>,
    values: Option<ValueSource>,
    leases: Arc<LeaseBook>,
    writers: Arc<tokio::sync::Semaphore>,
    batch: Vec<Item>,
) -> Result<Settled, EtcdError> {
    let mut items = batch;
    let mut source_changed = Vec::new();
    let needs: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, it)| it.value.is_none() && it.change.action != Action::Delete)
        .map(|(i, _)| i)
        .collect();
    if !needs.is_empty() {
        let Some(values) = &values else {
            return Err(EtcdError::Request {
                side: destination.role,
                operation: "write".into(),
                detail: "a change without its value and nowhere to read it".into(),
            });
        };
        let keys: Vec<Vec<u8>> = needs
            .iter()
            .map(|&i| items[i].change.source_key.clone())
            .collect();
        let dense = values
            .dense
            .get(items[0].change.mapping)
            .copied()
            .unwrap_or(false);
        let read = match read_sorted(&values.side, &keys, values.revision, dense).await {
            Err(EtcdError::Compacted { .. }) => {
                tracing::warn!(
                    revision = values.revision,
                    "the planned revision is compacted; reading current values and accepting only unchanged ones"
                );
                read_sorted(&values.side, &keys, 0, dense).await?
            }
            other => other?,
        };
        for (&i, entry) in needs.iter().zip(read) {
            let item = &mut items[i];
            match entry {
                Some(e) if item.change.source.as_ref().is_some_and(|v| v.held_by(&e)) => {
                    item.value = Some(e.value);
                }
                _ => source_changed.push(display_key(&item.change.source_key)),
            }
        }
        if !source_changed.is_empty() {
            // Never half a batch: nothing of it is written.
            let n = items.len();
            return Ok(Settled {
                items: items.into_iter().map(|i| i.change).collect(),
                outcomes: vec![None; n],
                source_changed,
                lease_expired: Vec::new(),
            });
        }
    }
    // Values are read ahead; only `concurrency` transactions write at once.
    let _permit = writers
        .acquire_owned()
        .await
        .map_err(|e| EtcdError::Request {
            side: destination.role,
            operation: "write".into(),
            detail: e.to_string(),
        })?;
    let mut lease_expired = Vec::new();
    let mut ops = Vec::with_capacity(items.len());
    let mut kept = Vec::with_capacity(items.len());
    for item in items {
        let c = &item.change;
        let guard = match &c.destination {
            None => Guard::Absent,
            Some(v) => Guard::ModRevision(v.mod_revision),
        };
        let op = match c.action {
            Action::Delete => WriteOp {
                key: c.key.clone(),
                value: None,
                guard,
                lease: 0,
            },
            _ => {
                let Some(lease) = leases
                    .lease_for(c.source.as_ref().map_or(0, |v| v.lease))
                    .await?
                else {
                    lease_expired.push(display_key(&c.key));
                    continue;
                };
                WriteOp {
                    key: c.key.clone(),
                    value: Some(item.value.unwrap_or_default()),
                    guard,
                    lease,
                }
            }
        };
        ops.push(op);
        kept.push(item.change);
    }
    let outcomes = if ops.is_empty() {
        Vec::new()
    } else {
        write_batch(&destination, &ops, &[]).await?
    };
    Ok(Settled {
        items: kept,
        outcomes: outcomes.into_iter().map(Some).collect(),
        source_changed,
        lease_expired,
    })
}

/// The writer pool: takes batches from `rx` in order and runs them as
/// guarded transactions, `concurrency` at a time and at most `rate` keys per
/// second. Stops dispatching when `stop` is set, a foreign write or a
/// changed source value is found, or a transaction fails, and always waits
/// for the transactions in flight. Nothing it holds grows with the plan:
/// a few batches, and the names of keys that went wrong.
pub async fn write_stream(
    destination: Arc<Side>,
    mut rx: mpsc::Receiver<Vec<Item>>,
    values: Option<ValueSource>,
    leases: Arc<LeaseBook>,
    options: &ApplyOptions,
    stop: &AtomicBool,
    progress: &ApplyProgress,
) -> Result<ApplyStats, ApplyError> {
    let mut stats = ApplyStats::default();
    let mut first_error: Option<ApplyError> = None;
    let mut in_flight: JoinSet<Result<Settled, EtcdError>> = JoinSet::new();
    let mut next_slot = Instant::now();
    let mut halt = false;
    let settle = |joined: Result<Result<Settled, EtcdError>, tokio::task::JoinError>,
                  stats: &mut ApplyStats,
                  first_error: &mut Option<ApplyError>| {
        match joined {
            Ok(Ok(settled)) => {
                stats.source_changed.extend(settled.source_changed);
                stats.lease_expired.extend(settled.lease_expired);
                for (c, outcome) in settled.items.iter().zip(settled.outcomes) {
                    match outcome {
                        Some(Outcome::Written) => match c.action {
                            Action::Create => stats.created += 1,
                            Action::Update => stats.updated += 1,
                            Action::Delete => stats.deleted += 1,
                            Action::Conflict => {}
                        },
                        Some(Outcome::InPlace) => stats.already_in_place += 1,
                        Some(Outcome::Foreign { .. }) => stats.foreign.push(display_key(&c.key)),
                        Some(Outcome::TooLarge) => stats.too_large.push(display_key(&c.key)),
                        None => stats.not_attempted += 1,
                    }
                    progress.done.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(ApplyError::Etcd(e));
            }
            Err(e) => {
                first_error.get_or_insert(ApplyError::Internal(e.to_string()));
            }
        }
    };
    // Batches whose values are read from the source first run ahead of
    // the writes (half as many again in flight), so reads hide behind writes.
    let concurrency = options.concurrency.max(1);
    let writers = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let ahead = if values.is_some() {
        concurrency + concurrency.div_ceil(2)
    } else {
        concurrency
    };
    let started = Instant::now();
    let mut batches = 0u64;
    while let Some(batch) = rx.recv().await {
        batches += 1;
        if !halt {
            while in_flight.len() >= ahead {
                if let Some(joined) = in_flight.join_next().await {
                    settle(joined, &mut stats, &mut first_error);
                }
            }
            halt = stop.load(Ordering::SeqCst)
                || first_error.is_some()
                || !stats.foreign.is_empty()
                || !stats.source_changed.is_empty();
        }
        if halt {
            // Keep draining so the producer finishes; count what is skipped.
            stats.not_attempted += batch.len() as u64;
            continue;
        }
        if let Some(rate) = options.rate.filter(|r| *r > 0.0) {
            tokio::time::sleep_until(next_slot.into()).await;
            next_slot =
                next_slot.max(Instant::now()) + Duration::from_secs_f64(batch.len() as f64 / rate);
        }
        in_flight.spawn(write_one(
            destination.clone(),
            values.clone(),
            leases.clone(),
            writers.clone(),
            batch,
        ));
    }
    tracing::debug!(
        after = started.elapsed().as_secs_f64(),
        batches,
        "last batch dispatched"
    );
    while let Some(joined) = in_flight.join_next().await {
        settle(joined, &mut stats, &mut first_error);
    }
    tracing::debug!(after = started.elapsed().as_secs_f64(), "writes settled");
    match first_error {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}

/// Writes every change of a spilled plan that writes: the spill is streamed
/// into batches, each batch's values are read from `values` just before it
/// is written.
pub async fn apply_spool(
    destination: Arc<Side>,
    changes: &crate::spool::Spool<Change>,
    values: ValueSource,
    leases: Arc<LeaseBook>,
    options: &ApplyOptions,
    stop: &AtomicBool,
    progress: &ApplyProgress,
) -> Result<ApplyStats, ApplyError> {
    let (tx, rx) = mpsc::channel(options.concurrency.max(1));
    let feed = {
        let (changes, options) = (changes.clone(), options.clone());
        tokio::task::spawn_blocking(move || feed_from_spool(&changes, &options, &tx))
    };
    let written = write_stream(
        destination,
        rx,
        Some(values),
        leases,
        options,
        stop,
        progress,
    )
    .await;
    feed.await
        .map_err(|e| ApplyError::Internal(e.to_string()))?
        .map_err(|e| ApplyError::Internal(format!("reading the spilled plan: {e}")))?;
    written
}

/// Undo of a move: put source keys back (`restores`, values read from
/// `values`), each a create guarded by absence.
pub async fn apply_changes(
    side: Arc<Side>,
    changes: Vec<Change>,
    values: ValueSource,
    leases: Arc<LeaseBook>,
    options: &ApplyOptions,
    stop: &AtomicBool,
) -> Result<ApplyStats, ApplyError> {
    let changes = crate::spool::Spool::from_records(&changes)
        .map_err(|e| ApplyError::Internal(format!("spilling the restores: {e}")))?;
    let progress = ApplyProgress::default();
    apply_spool(side, &changes, values, leases, options, stop, &progress).await
}

/// What move mode did on the source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MoveStats {
    /// Source keys this run deleted.
    pub deleted_from_source: u64,
    /// Source keys already gone.
    pub already_gone: u64,
    /// Source keys not deleted because the destination does not hold their
    /// planned value.
    pub not_on_destination: Vec<String>,
    /// Source keys changed since the plan: kept.
    pub changed_on_source: Vec<String>,
    pub not_attempted: u64,
}

/// Source deletes checked and sent per round of [`delete_moved`].
const MOVE_CHUNK: usize = 4096;

/// The source's current value of each delete that carries no digest (a
/// sensitive key from a saved plan); `None` for the others.
async fn source_values_without_digest(
    source: &Arc<Side>,
    chunk: &[SourceDelete],
) -> Result<Vec<Option<crate::etcd::Entry>>, EtcdError> {
    let keys: Vec<Vec<u8>> = chunk
        .iter()
        .filter(|d| d.sha256.is_none())
        .map(|d| d.source_key.clone())
        .collect();
    let mut read = if keys.is_empty() {
        Vec::new().into_iter()
    } else {
        read_sorted(source, &keys, 0, false).await?.into_iter()
    };
    Ok(chunk
        .iter()
        .map(|d| {
            if d.sha256.is_none() {
                read.next().flatten()
            } else {
                None
            }
        })
        .collect())
}

/// Move mode, after the copy: deletes each planned source key, but only
/// once the destination holds its planned value (re-read now), and only if
/// the key's mod revision is still the planned one. Streams the spilled
/// deletes a chunk at a time.
pub async fn delete_moved(
    source: Arc<Side>,
    destination: &Arc<Side>,
    deletes: &crate::spool::Spool<SourceDelete>,
    skip: &std::collections::HashSet<String>,
    options: &ApplyOptions,
    stop: &AtomicBool,
    progress: &ApplyProgress,
) -> Result<MoveStats, ApplyError> {
    let mut stats = MoveStats::default();
    progress.done.store(0, Ordering::Relaxed);
    progress.total.store(deletes.len(), Ordering::Relaxed);
    let mut records = deletes.try_iter();
    loop {
        let mut chunk = Vec::with_capacity(MOVE_CHUNK);
        let mut exhausted = true;
        for d in records.by_ref().take(MOVE_CHUNK) {
            exhausted = false;
            let d =
                d.map_err(|e| ApplyError::Internal(format!("reading the spilled plan: {e}")))?;
            if !skip.contains(&display_key(&d.key)) {
                chunk.push(d);
            }
        }
        if exhausted {
            break;
        }
        if chunk.is_empty() {
            continue;
        }
        if stop.load(Ordering::SeqCst) {
            stats.not_attempted += chunk.len() as u64;
            continue;
        }
        let keys: Vec<Vec<u8>> = chunk.iter().map(|d| d.key.clone()).collect();
        let on_destination = read_sorted(destination, &keys, 0, true).await?;
        let on_source = source_values_without_digest(&source, &chunk).await?;
        let mut eligible = Vec::new();
        for ((d, now), src) in chunk.into_iter().zip(on_destination).zip(on_source) {
            let holds = now.is_some_and(|e| match &d.sha256 {
                Some(sha) => crate::diff::digest(&e.value) == *sha,
                // No digest recorded: the source's value, still at its
                // planned mod revision, is compared byte for byte.
                None => src.is_some_and(|s| s.mod_revision == d.mod_revision && s.value == e.value),
            });
            if holds {
                eligible.push(d);
            } else {
                stats.not_on_destination.push(display_key(&d.source_key));
            }
        }
        let ops: Vec<WriteOp> = eligible
            .iter()
            .map(|d| WriteOp {
                key: d.source_key.clone(),
                value: None,
                guard: Guard::ModRevision(d.mod_revision),
                lease: 0,
            })
            .collect();
        let outcomes = run_guarded(source.clone(), ops, options, stop, progress).await?;
        for (d, outcome) in eligible.iter().zip(outcomes) {
            match outcome {
                Some(Outcome::Written) => stats.deleted_from_source += 1,
                Some(Outcome::InPlace) => stats.already_gone += 1,
                // A delete is a key and nothing else: only a server limit
                // below the key's own size refuses it, and then it stays.
                Some(Outcome::Foreign { .. }) | Some(Outcome::TooLarge) => {
                    stats.changed_on_source.push(display_key(&d.source_key))
                }
                None => stats.not_attempted += 1,
            }
        }
    }
    Ok(stats)
}

/// The indices of one transaction and what happened to each key.
type BatchResult = (Vec<usize>, Result<Vec<Outcome>, EtcdError>);

/// Runs a bounded list of guarded writes, `concurrency` transactions at a
/// time. Returns one outcome per op, `None` for an op never attempted.
async fn run_guarded(
    side: Arc<Side>,
    ops: Vec<WriteOp>,
    options: &ApplyOptions,
    stop: &AtomicBool,
    progress: &ApplyProgress,
) -> Result<Vec<Option<Outcome>>, ApplyError> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; ops.len()];
    let mut first_error: Option<ApplyError> = None;
    let mut in_flight: JoinSet<BatchResult> = JoinSet::new();
    let settle = |joined: Result<BatchResult, tokio::task::JoinError>,
                  outcomes: &mut Vec<Option<Outcome>>,
                  first_error: &mut Option<ApplyError>| match joined {
        Ok((indices, Ok(results))) => {
            for (i, outcome) in indices.into_iter().zip(results) {
                outcomes[i] = Some(outcome);
                progress.done.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok((_, Err(e))) => {
            first_error.get_or_insert(ApplyError::Etcd(e));
        }
        Err(e) => {
            first_error.get_or_insert(ApplyError::Internal(e.to_string()));
        }
    };
    let mut first = 0;
    for batch in split_ops(&ops, options.max_txn_ops, options.max_txn_bytes) {
        while in_flight.len() >= options.concurrency.max(1) {
            if let Some(joined) = in_flight.join_next().await {
                settle(joined, &mut outcomes, &mut first_error);
            }
        }
        if stop.load(Ordering::SeqCst) || first_error.is_some() {
            break;
        }
        // Batches are consecutive runs of `ops`: indices follow on.
        let indices: Vec<usize> = (first..first + batch.len()).collect();
        first += batch.len();
        let side = side.clone();
        in_flight.spawn(async move {
            let result = write_batch(&side, &batch, &[]).await;
            (indices, result)
        });
    }
    while let Some(joined) = in_flight.join_next().await {
        settle(joined, &mut outcomes, &mut first_error);
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(outcomes),
    }
}

/// Lists keys for a message: the first 20, then a count.
pub fn list(keys: &[String]) -> String {
    let mut lines: Vec<String> = keys.iter().take(20).map(|k| format!("  {k}")).collect();
    if keys.len() > 20 {
        lines.push(format!("  … and {} more", keys.len() - 20));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::Value;

    fn change(mapping: usize, key: &str, size: usize) -> Item {
        Item {
            change: Change {
                action: Action::Create,
                mapping,
                key: key.as_bytes().to_vec(),
                source_key: key.as_bytes().to_vec(),
                sensitive: false,
                source: Some(Value {
                    sha256: Some([0; 32]),
                    size,
                    mod_revision: 1,
                    lease: 0,
                    shown: None,
                }),
                destination: None,
                payload: None,
            },
            value: None,
        }
    }

    #[test]
    fn batches_stay_within_ops_bytes_and_one_mapping() {
        let options = ApplyOptions {
            max_txn_ops: 3,
            max_txn_bytes: 1000,
            ..ApplyOptions::default()
        };
        let mut b = Batcher::new(&options);
        let mut batches = Vec::new();
        let items = [
            change(0, "/a", 10),
            change(0, "/b", 10),
            change(0, "/c", 10),
            change(0, "/d", 10),
            change(0, "/e", 900),
            change(1, "/f", 10),
            change(1, "/g", 5000),
        ];
        for it in items {
            batches.extend(b.push(it));
        }
        batches.extend(b.flush());
        let keys: Vec<Vec<String>> = batches
            .iter()
            .map(|b| {
                b.iter()
                    .map(|i| String::from_utf8_lossy(&i.change.key).into_owned())
                    .collect()
            })
            .collect();
        assert_eq!(
            keys,
            vec![
                vec!["/a", "/b", "/c"],
                vec!["/d"],
                vec!["/e"],
                vec!["/f"],
                vec!["/g"]
            ]
        );
    }
}
