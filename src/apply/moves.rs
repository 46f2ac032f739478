//! Move mode: after the copy is verified, each moved source key is deleted,
//! guarded by its planned mod revision, only where the destination holds
//! its planned value.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::pool::Pool;
use super::{ApplyError, ApplyOptions, ApplyProgress};
use crate::diff::SourceDelete;
use crate::etcd::window::Window;
use crate::etcd::write::read_sorted;
use crate::etcd::write::{Guard, Outcome, WriteOp, split_ops, write_batch};
use crate::etcd::{EtcdError, Side};
use crate::keys::KeyList;

/// What move mode did on the source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MoveStats {
    /// Source keys this run deleted.
    pub deleted_from_source: u64,
    /// Source keys already gone.
    pub already_gone: u64,
    /// Source keys not deleted because the destination does not hold their
    /// planned value.
    pub not_on_destination: KeyList,
    /// Source keys changed since the plan: kept.
    pub changed_on_source: KeyList,
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
    skip: &std::collections::HashSet<Vec<u8>>,
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
            if !skip.contains(&d.key) {
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
                stats.not_on_destination.push(d.source_key.clone());
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
                    stats.changed_on_source.push(d.source_key.clone())
                }
                None => stats.not_attempted += 1,
            }
        }
    }
    Ok(stats)
}

/// The indices of one transaction and what happened to each key.
/// Runs a bounded list of guarded writes, as many transactions at a time
/// as the adaptive window allows (at most `concurrency`). Returns one
/// outcome per op, `None` for an op never attempted.
async fn run_guarded(
    side: Arc<Side>,
    ops: Vec<WriteOp>,
    options: &ApplyOptions,
    stop: &AtomicBool,
    progress: &ApplyProgress,
) -> Result<Vec<Option<Outcome>>, ApplyError> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; ops.len()];
    let mut settle = |(indices, results): (Vec<usize>, Vec<Outcome>)| {
        for (i, outcome) in indices.into_iter().zip(results) {
            outcomes[i] = Some(outcome);
            progress.done.fetch_add(1, Ordering::Relaxed);
        }
    };
    let window = Window::new(options.concurrency);
    let mut pool = Pool::new(window.limit());
    let mut first = 0;
    for batch in split_ops(&ops, options.max_txn_ops, options.max_txn_bytes) {
        pool.make_room(window.limit(), usize::MAX, &mut settle)
            .await;
        if stop.load(Ordering::SeqCst) || pool.failed() {
            break;
        }
        // Batches are consecutive runs of `ops`: indices follow on.
        let indices: Vec<usize> = (first..first + batch.len()).collect();
        first += batch.len();
        let (side, window) = (side.clone(), window.clone());
        pool.spawn(0, async move {
            let permit = window.acquire().await;
            let results = write_batch(&side, &batch, &[]).await;
            permit.done(results.is_ok());
            Ok((indices, results?))
        });
    }
    pool.finish(&mut settle).await?;
    Ok(outcomes)
}
