//! The write pipeline: batches to guarded transactions, values read from
//! the source just before their batch is written, leases attached, every
//! outcome counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::batch::{Item, feed_from_spool};
use super::join::Scans;
use super::pool::Pool;
use super::{ApplyError, ApplyOptions, ApplyProgress, ApplyStats};
use crate::diff::{Action, Change};
use crate::etcd::window::Window;
use crate::etcd::write::{Guard, Outcome, WriteOp, read_sorted, write_batch};
use crate::etcd::{EtcdError, Side};
use crate::keys::KeyList;
use crate::leases::LeaseBook;
use crate::plan::PlanReport;

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

/// Planned batch bytes held by the writers at once, however wide the
/// window: bounds memory when values are large. A batch in flight holds
/// about four times its bytes (the values read, the transaction, its
/// encoding), so this keeps the writers near 16 MiB; batches of small
/// values (about 32 KiB for 128 keys of 200 B) never reach it.
const IN_FLIGHT_BYTES: usize = 4 << 20;

/// Batches queued between whoever cuts them and the writers.
pub const BATCHES_QUEUED: usize = 8;

/// What one transaction did: each attempted key with its action and its
/// outcome (`None`: not attempted).
struct Settled {
    keys: Vec<(Action, Vec<u8>)>,
    outcomes: Vec<Option<Outcome>>,
    source_changed: KeyList,
    lease_expired: KeyList,
}

/// Fills values, attaches leases and writes one batch.
async fn write_one(
    destination: Arc<Side>,
    values: Option<ValueSource>,
    leases: Arc<LeaseBook>,
    window: Arc<Window>,
    batch: Vec<Item>,
) -> Result<Settled, EtcdError> {
    let mut items = batch;
    let source_changed = fill_values(&destination, values.as_ref(), &mut items).await?;
    if !source_changed.is_empty() {
        // Never half a batch: nothing of it is written.
        let n = items.len();
        return Ok(Settled {
            keys: items
                .into_iter()
                .map(|i| (i.change.action, i.change.key))
                .collect(),
            outcomes: vec![None; n],
            source_changed,
            lease_expired: KeyList::default(),
        });
    }
    // Values are read ahead; only the window's transactions write at once.
    let permit = window.acquire().await;
    let mut lease_expired = KeyList::default();
    let mut ops = Vec::with_capacity(items.len());
    let mut actions = Vec::with_capacity(items.len());
    for item in items {
        let Item { change: c, value } = item;
        let guard = match &c.destination {
            None => Guard::Absent,
            Some(v) => Guard::ModRevision(v.mod_revision),
        };
        let (value, lease) = match c.action {
            Action::Delete => (None, 0),
            _ => match leases
                .lease_for(c.source.as_ref().map_or(0, |v| v.lease))
                .await?
            {
                Some(lease) => (Some(value.unwrap_or_default()), lease),
                None => {
                    lease_expired.push(c.key);
                    continue;
                }
            },
        };
        // The change's key and value move into the op: the write is the
        // last use of either, and the op hands the key back to the counts.
        actions.push(c.action);
        ops.push(WriteOp {
            key: c.key,
            value,
            guard,
            lease,
        });
    }
    let outcomes = if ops.is_empty() {
        drop(permit);
        Vec::new()
    } else {
        let written = write_batch(&destination, &ops, &[]).await;
        permit.done(written.is_ok());
        written?
    };
    Ok(Settled {
        keys: actions
            .into_iter()
            .zip(ops)
            .map(|(action, op)| (action, op.key))
            .collect(),
        outcomes: outcomes.into_iter().map(Some).collect(),
        source_changed,
        lease_expired,
    })
}

/// Reads the values the items lack from the source at the plan's revision
/// (the current ones, accepted only when unchanged, after a compaction).
/// Returns the source keys whose value is no longer what the plan saw.
async fn fill_values(
    destination: &Side,
    values: Option<&ValueSource>,
    items: &mut [Item],
) -> Result<KeyList, EtcdError> {
    let mut source_changed = KeyList::default();
    let needs: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, it)| it.value.is_none() && it.change.action != Action::Delete)
        .map(|(i, _)| i)
        .collect();
    if needs.is_empty() {
        return Ok(source_changed);
    }
    let Some(values) = values else {
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
            _ => source_changed.push(item.change.source_key.clone()),
        }
    }
    Ok(source_changed)
}

/// Writes the batches arriving on `rx` with an adaptive number of
/// transactions in flight (at most `options.concurrency`), paced by
/// `options.rate`. With `values`, each batch's values are read from the source first; otherwise the items
/// carry them. Stops starting batches after a signal, an error, a foreign
/// write or a changed source value, and counts the rest as not attempted.
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
    // Someone else wrote, or a source value changed: start no more batches.
    let stale = AtomicBool::new(false);
    let mut settle = |settled: Settled| {
        count(settled, &mut stats, progress);
        if !stats.foreign.is_empty() || !stats.source_changed.is_empty() {
            stale.store(true, Ordering::Relaxed);
        }
    };
    // The window adapts how many transactions write at once, up to
    // --concurrency. Batches whose values are read from the source first
    // run ahead of the writes (half as many again), so reads hide behind
    // writes; and no more than IN_FLIGHT_BYTES of batches are held at once.
    let window = Window::new(options.concurrency.max(1));
    let ahead = |limit: usize| {
        if values.is_some() {
            limit + limit.div_ceil(2)
        } else {
            limit
        }
    };
    let mut pool = Pool::new(ahead(window.limit()));
    let (mut next_slot, mut halt, mut skipped) = (Instant::now(), false, 0u64);
    let halted = |pool: &Pool<Settled>| pool.failed() || stop.load(Ordering::SeqCst);
    while let Some(batch) = rx.recv().await {
        if !halt {
            pool.make_room(ahead(window.limit()), IN_FLIGHT_BYTES, &mut settle)
                .await;
            halt = halted(&pool) || stale.load(Ordering::Relaxed);
        }
        if halt {
            // Keep draining so the producer finishes; count what is skipped.
            skipped += batch.len() as u64;
            continue;
        }
        if let Some(rate) = options.rate.filter(|r| *r > 0.0) {
            tokio::time::sleep_until(next_slot.into()).await;
            next_slot =
                next_slot.max(Instant::now()) + Duration::from_secs_f64(batch.len() as f64 / rate);
        }
        let bytes = batch.iter().map(|i| i.change.write_bytes()).sum();
        pool.spawn(
            bytes,
            write_one(
                destination.clone(),
                values.clone(),
                leases.clone(),
                window.clone(),
                batch,
            ),
        );
    }
    let result = pool.finish(&mut settle).await;
    tracing::info!(
        side = %destination.role,
        most_in_flight = window.peak(),
        "write window"
    );
    stats.not_attempted += skipped;
    result.map(|()| stats)
}

/// Adds one settled transaction to the counts.
fn count(settled: Settled, stats: &mut ApplyStats, progress: &ApplyProgress) {
    stats.source_changed.extend(settled.source_changed);
    stats.lease_expired.extend(settled.lease_expired);
    let settled_keys = settled.keys.len() as u64;
    for ((action, key), outcome) in settled.keys.into_iter().zip(settled.outcomes) {
        match outcome {
            Some(Outcome::Written) => match action {
                Action::Create => stats.created += 1,
                Action::Update => stats.updated += 1,
                Action::Delete => stats.deleted += 1,
                Action::Conflict => {}
            },
            Some(Outcome::InPlace) => stats.already_in_place += 1,
            Some(Outcome::Foreign { .. }) => stats.foreign.push(key),
            Some(Outcome::TooLarge) => stats.too_large.push(key),
            None => stats.not_attempted += 1,
        }
    }
    progress.done.fetch_add(settled_keys, Ordering::Relaxed);
}

/// Writes every change of a spilled plan that writes: the spill is streamed
/// into batches, each batch's values are read from `values` just before it
/// is written. With `from` (each mapping's source prefix in `values`), the
/// dense mappings' values are read by one scan each instead (`join.rs`).
#[allow(clippy::too_many_arguments)]
pub async fn apply_spool(
    destination: Arc<Side>,
    changes: &crate::spool::Spool<Change>,
    values: ValueSource,
    from: Option<Vec<Vec<u8>>>,
    leases: Arc<LeaseBook>,
    options: &ApplyOptions,
    stop: &AtomicBool,
    progress: &ApplyProgress,
) -> Result<ApplyStats, ApplyError> {
    let (tx, rx) = mpsc::channel(BATCHES_QUEUED);
    let scans = from.and_then(|from| Scans::new(&values, from));
    let feed = {
        let (changes, options) = (changes.clone(), options.clone());
        tokio::task::spawn_blocking(move || {
            feed_from_spool(&changes, &options, scans.as_ref(), &tx)
        })
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
    apply_spool(
        side, &changes, values, None, leases, options, stop, &progress,
    )
    .await
}
