//! Apply: the reviewed changes go out in guarded, batched, pipelined
//! transactions. A rerun after a crash finds what is already in place and
//! writes only the rest; a key someone else changed since the plan is never
//! overwritten.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use miette::Diagnostic;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

use crate::diff::{Action, Change, SourceDelete};
use crate::etcd::scan::scan;
use crate::etcd::write::{Guard, Outcome, WriteOp, read_keys, write_batch};
use crate::etcd::{Entry, EtcdError, KeyRange, PageLimits, Pin, Side};
use crate::keys::display_key;
use crate::plan::PlanReport;
use crate::planfile::LeaseMode;

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
/// local servers: throughput stops growing past about 8.
pub const DEFAULT_CONCURRENCY: usize = 8;

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

    #[error("the {side} cluster is {found}, but the saved plan was made against {expected}")]
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
}

/// Live counters for progress displays.
#[derive(Debug, Default)]
pub struct ApplyProgress {
    pub done: AtomicU64,
    pub total: AtomicU64,
}

/// The guarded write for a change, or `None` for a change that writes
/// nothing. `leases` maps source leases to the destination leases granted.
fn write_op(change: &Change, leases: &HashMap<i64, i64>) -> Option<WriteOp> {
    let guard = match &change.destination {
        None => Guard::Absent,
        Some(v) => Guard::ModRevision(v.mod_revision),
    };
    match change.action {
        Action::Create | Action::Update => Some(WriteOp {
            key: change.key.clone(),
            value: Some(change.payload.clone().unwrap_or_default()),
            guard,
            lease: change
                .source
                .as_ref()
                .and_then(|v| leases.get(&v.lease))
                .copied()
                .unwrap_or(0),
        }),
        Action::Delete => Some(WriteOp {
            key: change.key.clone(),
            value: None,
            guard,
            lease: 0,
        }),
        Action::Conflict => None,
    }
}

/// Refuses, before anything is written, a plan holding a key no request
/// can carry under `max_request_bytes` (sizes come from the plan).
pub fn check_sizes(report: &PlanReport, options: &ApplyOptions) -> Result<(), ApplyError> {
    let keys: Vec<String> = report
        .too_large(options.max_request_bytes)
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

/// Cuts guarded writes into transactions of at most `max_txn_ops` keys and
/// `max_txn_bytes` bytes. Callers hold each key once, so no batch repeats one.
pub(crate) fn batches(
    ops: Vec<(usize, WriteOp)>,
    options: &ApplyOptions,
) -> impl Iterator<Item = Vec<(usize, WriteOp)>> + '_ {
    let mut ops = ops.into_iter().peekable();
    let max_ops = options.max_txn_ops.max(1);
    std::iter::from_fn(move || {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some((_, next)) = ops.peek() {
            let b = next.request_bytes();
            if !batch.is_empty() && (batch.len() >= max_ops || bytes + b > options.max_txn_bytes) {
                break;
            }
            bytes += b;
            batch.extend(ops.next());
        }
        (!batch.is_empty()).then_some(batch)
    })
}

/// The indices of one transaction and what happened to each key.
type BatchResult = (Vec<usize>, Result<Vec<Outcome>, EtcdError>);

/// Runs guarded writes on `side`, `concurrency` transactions at a time and
/// at most `rate` keys per second. Stops dispatching when `stop` is set, a
/// foreign write is found or a transaction fails, and always waits for the
/// transactions in flight. Returns one outcome per op, `None` for an op
/// never attempted.
async fn run_guarded(
    side: Arc<Side>,
    ops: Vec<WriteOp>,
    options: &ApplyOptions,
    stop: &AtomicBool,
    progress: &ApplyProgress,
) -> Result<Vec<Option<Outcome>>, ApplyError> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; ops.len()];
    let mut first_error: Option<ApplyError> = None;
    let mut foreign = false;
    let mut in_flight: JoinSet<BatchResult> = JoinSet::new();
    let mut next_slot = Instant::now();
    let settle = |joined: Result<BatchResult, tokio::task::JoinError>,
                  outcomes: &mut Vec<Option<Outcome>>,
                  first_error: &mut Option<ApplyError>,
                  foreign: &mut bool| match joined {
        Ok((indices, Ok(results))) => {
            for (i, outcome) in indices.into_iter().zip(results) {
                *foreign |= matches!(outcome, Outcome::Foreign { .. });
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
    let indexed: Vec<(usize, WriteOp)> = ops.into_iter().enumerate().collect();
    for batch in batches(indexed, options) {
        while in_flight.len() >= options.concurrency.max(1) {
            if let Some(joined) = in_flight.join_next().await {
                settle(joined, &mut outcomes, &mut first_error, &mut foreign);
            }
        }
        if stop.load(Ordering::SeqCst) || first_error.is_some() || foreign {
            break;
        }
        if let Some(rate) = options.rate.filter(|r| *r > 0.0) {
            tokio::time::sleep_until(next_slot.into()).await;
            next_slot =
                next_slot.max(Instant::now()) + Duration::from_secs_f64(batch.len() as f64 / rate);
        }
        let side = side.clone();
        in_flight.spawn(async move {
            let (indices, ops): (Vec<usize>, Vec<WriteOp>) = batch.into_iter().unzip();
            let result = write_batch(&side, &ops, &[]).await;
            (indices, result)
        });
    }
    while let Some(joined) = in_flight.join_next().await {
        settle(joined, &mut outcomes, &mut first_error, &mut foreign);
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(outcomes),
    }
}

/// Writes every change that writes, through [`run_guarded`].
pub async fn apply_changes(
    destination: Arc<Side>,
    changes: &[Change],
    leases: &HashMap<i64, i64>,
    options: &ApplyOptions,
    stop: Arc<AtomicBool>,
    progress: Arc<ApplyProgress>,
) -> Result<ApplyStats, ApplyError> {
    let (indices, ops): (Vec<usize>, Vec<WriteOp>) = changes
        .iter()
        .enumerate()
        .filter_map(|(i, c)| write_op(c, leases).map(|o| (i, o)))
        .unzip();
    progress.total.store(ops.len() as u64, Ordering::Relaxed);
    let outcomes = run_guarded(destination, ops, options, &stop, &progress).await?;
    let mut stats = ApplyStats::default();
    for (i, outcome) in indices.into_iter().zip(outcomes) {
        let c = &changes[i];
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
    }
    Ok(stats)
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

/// Move mode, after the copy is verified: deletes each planned source key,
/// but only once the destination holds its planned value (re-read now), and
/// only if the key's mod revision is still the planned one.
pub async fn delete_moved(
    source: Arc<Side>,
    destination: &Arc<Side>,
    deletes: &[SourceDelete],
    options: &ApplyOptions,
    stop: Arc<AtomicBool>,
    progress: Arc<ApplyProgress>,
) -> Result<MoveStats, ApplyError> {
    let mut stats = MoveStats::default();
    let keys: Vec<Vec<u8>> = deletes.iter().map(|d| d.key.clone()).collect();
    let on_destination = read_keys(destination, &keys, 0).await?;
    let mut eligible = Vec::new();
    for (d, now) in deletes.iter().zip(on_destination) {
        let holds = now.is_some_and(|(v, _)| <[u8; 32]>::from(Sha256::digest(&v)) == d.sha256);
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
    progress.done.store(0, Ordering::Relaxed);
    progress.total.store(ops.len() as u64, Ordering::Relaxed);
    let outcomes = run_guarded(source, ops, options, &stop, &progress).await?;
    for (d, outcome) in eligible.iter().zip(outcomes) {
        match outcome {
            Some(Outcome::Written) => stats.deleted_from_source += 1,
            Some(Outcome::InPlace) => stats.already_gone += 1,
            Some(Outcome::Foreign { .. }) => {
                stats.changed_on_source.push(display_key(&d.source_key))
            }
            // A delete is a key and nothing else: only a server limit below
            // the key's own size refuses it, and then the key stays.
            Some(Outcome::TooLarge) => stats.changed_on_source.push(display_key(&d.source_key)),
            None => stats.not_attempted += 1,
        }
    }
    Ok(stats)
}

/// What `leases: preserve` did before the writes.
#[derive(Debug, Clone, Default)]
pub struct Leases {
    /// Source lease id to the destination lease granted for it.
    pub map: HashMap<i64, i64>,
    /// Keys not written because their source lease expired since the plan.
    pub expired: Vec<String>,
}

/// `leases: preserve`, right before the writes: for each source lease the
/// writes carry, reads its remaining TTL now and grants one destination lease
/// with that TTL (keys sharing a source lease share it). A key whose source
/// lease has expired since the plan is taken out of the changes: it is not
/// resurrected. Other modes need nothing here.
pub async fn prepare_leases(
    source: &Side,
    destination: &Side,
    report: &mut PlanReport,
) -> Result<Leases, ApplyError> {
    let mut out = Leases::default();
    if report.lease_mode != LeaseMode::Preserve {
        return Ok(out);
    }
    if destination.config.api == crate::planfile::Api::V2 {
        // v2 has no leases: leased keys are written without one.
        if report
            .changes
            .iter()
            .any(|c| c.source.as_ref().is_some_and(|v| v.lease != 0))
        {
            tracing::warn!(
                "the destination speaks v2, which has no leases: leased keys are written without one"
            );
        }
        return Ok(out);
    }
    let mut expired_leases = std::collections::HashSet::new();
    for c in report
        .changes
        .iter()
        .filter(|c| matches!(c.action, Action::Create | Action::Update))
    {
        let Some(id) = c.source.as_ref().map(|v| v.lease).filter(|&l| l != 0) else {
            continue;
        };
        if out.map.contains_key(&id) || expired_leases.contains(&id) {
            continue;
        }
        let ttl = crate::plan::lease_ttl(source, id).await?;
        if ttl <= 0 {
            expired_leases.insert(id);
            continue;
        }
        let op = crate::etcd::Op {
            action: "write",
            prefix: b"",
        };
        let granted = destination
            .call(op, |mut c| async move { c.lease_grant(ttl, None).await })
            .await?;
        out.map.insert(id, granted.id());
    }
    report.changes.retain(|c| {
        let lease = c.source.as_ref().map_or(0, |v| v.lease);
        let gone =
            expired_leases.contains(&lease) && matches!(c.action, Action::Create | Action::Update);
        if gone {
            out.expired.push(display_key(&c.key));
        }
        !gone
    });
    Ok(out)
}

/// Fills each write's payload from the source for a saved plan: read at the
/// saved revision and checked against the saved sha256; if that revision is
/// compacted, the current value is accepted only if its hash still matches.
pub async fn fetch_payloads(source: &Arc<Side>, report: &mut PlanReport) -> Result<(), ApplyError> {
    let revision = report.source.revision;
    fetch_values(source, &mut report.changes, revision).await
}

/// [`fetch_payloads`] for any changes: each create's and update's value is
/// read from `side` at `revision` (its `source_key`) and hash-checked.
pub async fn fetch_values(
    side: &Arc<Side>,
    changes: &mut [Change],
    revision: i64,
) -> Result<(), ApplyError> {
    let wanted: Vec<usize> = changes
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c.action, Action::Create | Action::Update))
        .map(|(i, _)| i)
        .collect();
    let keys: Vec<Vec<u8>> = wanted
        .iter()
        .map(|&i| changes[i].source_key.clone())
        .collect();
    let values = match read_keys(side, &keys, revision).await {
        Ok(v) => v,
        Err(EtcdError::Compacted { .. }) => {
            tracing::warn!(
                revision,
                "the saved revision is compacted; reading current values and accepting only unchanged ones"
            );
            read_keys(side, &keys, 0).await?
        }
        Err(e) => return Err(e.into()),
    };
    let mut changed = Vec::new();
    for (&i, value) in wanted.iter().zip(values) {
        let change = &mut changes[i];
        let expected = change.source.as_ref().map(|v| v.sha256);
        match value {
            Some((bytes, _)) if Some(<[u8; 32]>::from(Sha256::digest(&bytes))) == expected => {
                change.payload = Some(bytes);
            }
            _ => changed.push(display_key(&change.source_key)),
        }
    }
    if !changed.is_empty() {
        return Err(ApplyError::SourceChanged {
            count: changed.len(),
            listed: list(&changed),
        });
    }
    Ok(())
}

/// An undo's leases: a key goes back on the very lease it had, on the same
/// cluster, while that lease lives. A key whose lease has expired since is
/// taken out of the changes (and listed): it is not resurrected.
pub async fn live_leases(side: &Side, changes: &mut Vec<Change>) -> Result<Leases, ApplyError> {
    let mut out = Leases::default();
    let mut dead = std::collections::HashSet::new();
    for c in changes
        .iter()
        .filter(|c| matches!(c.action, Action::Create | Action::Update))
    {
        let Some(id) = c.source.as_ref().map(|v| v.lease).filter(|&l| l != 0) else {
            continue;
        };
        if out.map.contains_key(&id) || dead.contains(&id) {
            continue;
        }
        if crate::plan::lease_ttl(side, id).await? > 0 {
            out.map.insert(id, id);
        } else {
            dead.insert(id);
        }
    }
    changes.retain(|c| {
        let lease = c.source.as_ref().map_or(0, |v| v.lease);
        let gone = dead.contains(&lease) && matches!(c.action, Action::Create | Action::Update);
        if gone {
            out.expired.push(display_key(&c.key));
        }
        !gone
    });
    Ok(out)
}

/// Re-reads every planned key and checks it holds what was planned. A
/// mapping where most keys changed is re-read with one paged scan of its
/// range (far cheaper than per-key reads); a sparse one key by key.
pub async fn verify(destination: &Arc<Side>, report: &PlanReport) -> Result<u64, ApplyError> {
    let mut wrong = Vec::new();
    let mut checked = 0u64;
    for (index, mapping) in report.mappings.iter().enumerate() {
        let planned: Vec<&Change> = report
            .changes
            .iter()
            .filter(|c| c.mapping == index && c.action.writes())
            .collect();
        if planned.is_empty() {
            continue;
        }
        let s = &mapping.summary;
        let range_keys = s.create + s.update + s.conflict + s.unchanged;
        let current = if planned.len() as u64 * 4 >= range_keys {
            scan_planned_parallel(destination, &mapping.to, &planned).await?
        } else {
            let keys: Vec<Vec<u8>> = planned.iter().map(|c| c.key.clone()).collect();
            read_keys(destination, &keys, 0)
                .await?
                .into_iter()
                .map(|v| v.map(|(value, _)| value))
                .collect()
        };
        for (c, now) in planned.iter().zip(current) {
            let ok = match (c.action, now) {
                (Action::Delete, None) => true,
                (Action::Create | Action::Update, Some(v)) => {
                    Some(<[u8; 32]>::from(Sha256::digest(&v)))
                        == c.source.as_ref().map(|s| s.sha256)
                }
                _ => false,
            };
            if !ok {
                wrong.push(display_key(&c.key));
            }
            checked += 1;
        }
    }
    if !wrong.is_empty() {
        return Err(ApplyError::VerifyFailed {
            count: wrong.len(),
            listed: list(&wrong),
        });
    }
    Ok(checked)
}

/// Chunks of planned keys scanned at once by [`scan_planned_parallel`].
const VERIFY_CHUNKS: usize = 4;

/// [`scan_planned`] over contiguous chunks of the (sorted) planned keys in
/// parallel, each scanning only its own key range: etcd 3.4 walks the rest
/// of a range on every page, so short ranges are cheaper as well as
/// concurrent. A v2 side reads whole prefixes, so it gets one scan.
async fn scan_planned_parallel(
    destination: &Arc<Side>,
    to: &[u8],
    planned: &[&Change],
) -> Result<Vec<Option<Vec<u8>>>, ApplyError> {
    let whole = KeyRange::prefix(to);
    if destination.config.api == crate::planfile::Api::V2 || planned.len() < VERIFY_CHUNKS * 1000 {
        return scan_planned(destination, whole, planned).await;
    }
    let size = planned.len().div_ceil(VERIFY_CHUNKS);
    let scans = planned.chunks(size).map(|chunk| {
        let first = chunk.first().map(|c| c.key.clone()).unwrap_or_default();
        let mut end = chunk.last().map(|c| c.key.clone()).unwrap_or_default();
        end.push(0);
        let range = KeyRange {
            start: first,
            end: Some(end),
            prefix: to.to_vec(),
        };
        scan_planned(destination, range, chunk)
    });
    let mut out = Vec::with_capacity(planned.len());
    for part in futures::future::join_all(scans).await {
        out.extend(part?);
    }
    Ok(out)
}

/// The current value of each planned key (in key order), from one paged
/// scan of `range`, which holds all of them.
async fn scan_planned(
    destination: &Arc<Side>,
    range: KeyRange,
    planned: &[&Change],
) -> Result<Vec<Option<Vec<u8>>>, ApplyError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let side = destination.clone();
    let scanner = tokio::spawn(async move {
        let counter = AtomicU64::new(0);
        scan(
            &side,
            &range,
            &Pin::latest(),
            PageLimits::default(),
            &counter,
            &tx,
        )
        .await
    });
    let mut out = Vec::with_capacity(planned.len());
    let mut page: std::vec::IntoIter<Entry> = Vec::new().into_iter();
    let mut next = None;
    for c in planned {
        loop {
            if next.is_none() {
                next = match page.next() {
                    Some(e) => Some(e),
                    None => match rx.recv().await {
                        Some(p) => {
                            page = p.into_iter();
                            continue;
                        }
                        None => None,
                    },
                };
            }
            match &next {
                Some(e) if e.key < c.key => next = None,
                _ => break,
            }
        }
        match next.take() {
            Some(e) if e.key == c.key => out.push(Some(e.value)),
            other => {
                next = other;
                out.push(None);
            }
        }
    }
    drop(rx);
    scanner
        .await
        .map_err(|e| ApplyError::Internal(e.to_string()))??;
    Ok(out)
}

/// Lists keys for a message: the first 20, then a count.
pub fn list(keys: &[String]) -> String {
    let mut lines: Vec<String> = keys.iter().take(20).map(|k| format!("  {k}")).collect();
    if keys.len() > 20 {
        lines.push(format!("  … and {} more", keys.len() - 20));
    }
    lines.join("\n")
}
