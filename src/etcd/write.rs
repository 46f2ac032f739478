//! Guarded batch writes. Every op in a transaction carries a compare: a
//! create only if the key is still absent, an update or delete only if the
//! key's mod revision is still the planned one. A transaction whose guards
//! hold costs one round trip. Only when one fails are its keys read back,
//! at the revision the failure was seen at, to tell which are already in
//! place, which still need writing, and which someone else changed. (A
//! read-back in the failure branch would do it in the same round trip, but
//! every transaction would then carry a read per key through the server's
//! log and apply, for a case that is rare: a rerun finds what is in place by
//! its diff, not by failed guards.)

use std::sync::Arc;
use std::sync::atomic::Ordering;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};

use super::side::{MAX_DECODE_BYTES, Op};
pub use super::types::{
    DEFAULT_MAX_REQUEST_BYTES, Guard, Outcome, Put, TXN_OVERHEAD_BYTES, WriteOp, classify,
    fits_alone, request_bytes,
};
use super::{Entry, EtcdError, Side};

/// Applies a batch (no key twice) and returns one outcome per op, in order.
/// A batch whose guards fail is never half-applied: keys whose guards still
/// hold are retried in a smaller transaction, the others are classified.
/// `extra` ops (a checkpoint) ride along in every transaction that writes.
///
/// When the server refuses the transaction as too large (its
/// --max-request-bytes is lower than assumed), the batch is split in halves
/// until the key that cannot fit stands alone: that key's outcome is
/// [`Outcome::TooLarge`], and the others are written. A batch with `extra`
/// ops is never split, since they must land together.
pub async fn write_batch(
    side: &Side,
    ops: &[WriteOp],
    extra: &[Put],
) -> Result<Vec<Outcome>, EtcdError> {
    match write_whole(side, ops, extra).await {
        Err(EtcdError::RequestTooLarge { .. }) if ops.len() == 1 && extra.is_empty() => {
            tracing::warn!(key = %crate::keys::display_key(&ops[0].key), "the server refused the key as too large");
            Ok(vec![Outcome::TooLarge])
        }
        Err(EtcdError::RequestTooLarge { .. }) if ops.len() > 1 && extra.is_empty() => {
            let (left, right) = ops.split_at(ops.len() / 2);
            let mut out = Box::pin(write_batch(side, left, extra)).await?;
            out.extend(Box::pin(write_batch(side, right, extra)).await?);
            Ok(out)
        }
        other => other,
    }
}

async fn write_whole(
    side: &Side,
    ops: &[WriteOp],
    extra: &[Put],
) -> Result<Vec<Outcome>, EtcdError> {
    if let Some(v2) = side.v2()? {
        if !extra.is_empty() {
            return Err(EtcdError::Request {
                side: side.role,
                operation: "guarded write".into(),
                detail: "v2 has no transactions to carry a checkpoint".into(),
            });
        }
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            outcomes.push(v2.write(op).await?);
        }
        return Ok(outcomes);
    }
    let mut outcomes: Vec<Option<Outcome>> = vec![None; ops.len()];
    let mut pending: Vec<usize> = (0..ops.len()).collect();
    let first_key = ops.first().map(|o| o.key.clone()).unwrap_or_default();
    let op = Op {
        action: "write",
        prefix: &first_key,
    };
    // Boxed: inline, its state would sit in every level of write_batch's
    // halving, too deep for a worker's stack in a debug build.
    let mut span = spannable(ops)
        && !side.span_failed.load(Ordering::Relaxed)
        && Box::pin(super::info::range_compares(side)).await;
    while !pending.is_empty() {
        tracing::trace!(side = %side.role, ops = pending.len(), span, first = %crate::keys::display_key(&ops[pending[0]].key), "guarded transaction");
        // Built per attempt from the ops, so no second copy of the values
        // is held while the request is in flight.
        let resp = side
            .call(op, |c| {
                let txn = guarded_txn(ops, &pending, extra, span);
                async move {
                    c.kv_client()
                        .max_decoding_message_size(MAX_DECODE_BYTES)
                        .txn(txn)
                        .await
                }
            })
            .await?;
        if resp.succeeded() {
            for &i in &pending {
                outcomes[i] = Some(Outcome::Written);
            }
            break;
        }
        let keys: Vec<Vec<u8>> = pending.iter().map(|&i| ops[i].key.clone()).collect();
        let at = resp.header().map_or(0, |h| h.revision());
        let read = match read_chunk(side, keys.clone(), at).await {
            Err(EtcdError::Compacted { .. }) => read_chunk(side, keys, 0).await?,
            other => other?,
        };
        if read.len() != pending.len() {
            return Err(EtcdError::Request {
                side: side.role,
                operation: "guarded write".into(),
                detail: "the server's read-back has fewer answers than keys".into(),
            });
        }
        let mut retry = Vec::new();
        for (&i, entry) in pending.iter().zip(read) {
            let current = entry.map(|e| (e.value, e.mod_revision));
            match classify(&ops[i], current.as_ref().map(|(v, r)| (v.as_slice(), *r))) {
                Some(outcome) => outcomes[i] = Some(outcome),
                None => retry.push(i),
            }
        }
        if span && retry.len() == pending.len() {
            // A key between ours that the plan does not write: guard key
            // by key from now on, here and in later batches.
            tracing::debug!(side = %side.role, "a key inside the batch's span: guarding each key");
            side.span_failed.store(true, Ordering::Relaxed);
            span = false;
            continue;
        }
        span = false;
        // Each failed round settles at least one key, so this ends.
        if retry.len() == pending.len() {
            return Err(EtcdError::Request {
                side: side.role,
                operation: "guarded write".into(),
                detail: "a transaction failed although every guard holds; refusing to loop".into(),
            });
        }
        pending = retry;
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::InPlace))
        .collect())
}

/// Whether a whole batch can be guarded by one compare over its span: two
/// or more creates (each guarded by absence), keys strictly ascending.
fn spannable(ops: &[WriteOp]) -> bool {
    ops.len() > 1
        && ops
            .iter()
            .all(|o| matches!(o.guard, Guard::Absent) && o.value.is_some())
        && ops.windows(2).all(|w| w[0].key < w[1].key)
}

/// One transaction over the `pending` ops: every guard as a compare, the
/// writes (and `extra`) when all hold, nothing otherwise. With `span` (the
/// ops are [`spannable`] and the server honours range compares), one
/// compare says that no key at all lies between the first and the last:
/// stronger than a compare per key, and cheaper for the server (measured
/// with 128-key batches: about the cost of unguarded puts, where a compare
/// per key cost about 10% more). A key between ours that the plan does
/// not write fails it; the batch is then guarded key by key.
fn guarded_txn(ops: &[WriteOp], pending: &[usize], extra: &[Put], span: bool) -> Txn {
    let mut compares = Vec::with_capacity(pending.len());
    let mut writes = Vec::with_capacity(pending.len());
    if let (true, Some(&first), Some(&last)) = (span, pending.first(), pending.last()) {
        let mut end = ops[last].key.clone();
        end.push(0);
        compares.push(
            Compare::create_revision(ops[first].key.clone(), CompareOp::Equal, 0).with_range(end),
        );
    }
    for &i in pending {
        let o = &ops[i];
        if span {
            writes.push(put_op(o));
            continue;
        }
        compares.push(match &o.guard {
            Guard::Absent => Compare::create_revision(o.key.clone(), CompareOp::Equal, 0),
            Guard::ModRevision(r) => Compare::mod_revision(o.key.clone(), CompareOp::Equal, *r),
            Guard::Value(v) => Compare::value(o.key.clone(), CompareOp::Equal, v.clone()),
        });
        writes.push(put_op(o));
    }
    writes.extend(
        extra
            .iter()
            .map(|p| TxnOp::put(p.key.clone(), p.value.clone(), None)),
    );
    Txn::new().when(compares).and_then(writes)
}

/// The write of one op: a put (with its lease) or a delete.
fn put_op(o: &WriteOp) -> TxnOp {
    match &o.value {
        Some(v) if o.lease != 0 => TxnOp::put(
            o.key.clone(),
            v.clone(),
            Some(PutOptions::new().with_lease(o.lease)),
        ),
        Some(v) => TxnOp::put(o.key.clone(), v.clone(), None),
        None => TxnOp::delete(o.key.clone(), None),
    }
}

/// Cuts guarded writes into transactions of at most `max_ops` keys and
/// `max_bytes` request bytes; a key bigger than that goes alone.
pub fn split_ops(ops: &[WriteOp], max_ops: usize, max_bytes: usize) -> Vec<Vec<WriteOp>> {
    let mut out: Vec<Vec<WriteOp>> = Vec::new();
    let mut bytes = 0;
    for op in ops {
        let b = op.request_bytes();
        match out.last_mut() {
            Some(batch) if batch.len() < max_ops.max(1) && bytes + b <= max_bytes => {
                batch.push(op.clone());
                bytes += b;
            }
            _ => {
                out.push(vec![op.clone()]);
                bytes = b;
            }
        }
    }
    out
}

/// Grants a lease of `ttl` seconds on `side`; returns its id.
pub async fn grant_lease(side: &Side, ttl: i64) -> Result<i64, EtcdError> {
    let op = Op {
        action: "write",
        prefix: b"",
    };
    let granted = side
        .call(op, |mut c| async move { c.lease_grant(ttl, None).await })
        .await?;
    Ok(granted.id())
}

/// Revokes a lease on `side`, deleting its keys; a lease already gone is
/// not an error.
pub async fn revoke_lease(side: &Side, id: i64) -> Result<(), EtcdError> {
    let op = Op {
        action: "write",
        prefix: b"",
    };
    let result = side
        .call(op, |mut c| async move { c.lease_revoke(id).await })
        .await;
    match result {
        Err(EtcdError::Request { detail, .. }) if detail.contains("lease not found") => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Renews a lease on `side` once (to its granted TTL); returns the TTL it
/// now has, 0 when the lease is gone.
pub async fn renew_lease(side: &Side, id: i64) -> Result<i64, EtcdError> {
    side.call(Op::REACH, |mut c| async move {
        let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
        keeper.keep_alive().await?;
        Ok(stream.message().await?.map_or(0, |r| r.ttl()))
    })
    .await
}

/// A key's value and mod revision, `None` when the key is absent.
pub type Current = Option<(Vec<u8>, i64)>;

/// Reads keys in batches of 128, at `revision` (0: the latest), with up to
/// `READ_CONCURRENCY` batches in flight. Returns, in order, each key's value
/// and mod revision, `None` when absent.
pub async fn read_keys(
    side: &Arc<Side>,
    keys: &[Vec<u8>],
    revision: i64,
) -> Result<Vec<Current>, EtcdError> {
    Ok(read_entries(side, keys, revision)
        .await?
        .into_iter()
        .map(|e| e.map(|e| (e.value, e.mod_revision)))
        .collect())
}

/// [`read_keys`] with everything etcd says of each key (its lease too).
pub async fn read_entries(
    side: &Arc<Side>,
    keys: &[Vec<u8>],
    revision: i64,
) -> Result<Vec<Option<Entry>>, EtcdError> {
    let mut chunks: Vec<Option<Vec<Option<Entry>>>> = vec![None; keys.len().div_ceil(128)];
    let mut set = tokio::task::JoinSet::new();
    let mut pending = keys.chunks(128).map(<[Vec<u8>]>::to_vec).enumerate();
    loop {
        while set.len() < READ_CONCURRENCY {
            let Some((i, chunk)) = pending.next() else {
                break;
            };
            let side = side.clone();
            set.spawn(async move { (i, read_chunk(&side, chunk, revision).await) });
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        let (i, result) = joined.map_err(|e| EtcdError::Request {
            side: side.role,
            operation: "read keys".into(),
            detail: e.to_string(),
        })?;
        chunks[i] = Some(result?);
    }
    let out: Vec<_> = chunks.into_iter().flatten().flatten().collect();
    if out.len() != keys.len() {
        return Err(EtcdError::Request {
            side: side.role,
            operation: "read keys".into(),
            detail: format!(
                "asked for {} keys, the server answered {}",
                keys.len(),
                out.len()
            ),
        });
    }
    Ok(out)
}

/// Reads `keys` (sorted, distinct) at `revision` (0: the latest). When they
/// are `dense` in their range, one range read bounded by the first and last
/// key fetches them (etcd walks only that span); whatever it does not cover,
/// and sparse keys, are read one by one in batched transactions.
pub async fn read_sorted(
    side: &Arc<Side>,
    keys: &[Vec<u8>],
    revision: i64,
    dense: bool,
) -> Result<Vec<Option<Entry>>, EtcdError> {
    let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
        return Ok(Vec::new());
    };
    if !dense || keys.len() < 4 || side.v2()?.is_some() {
        return read_entries(side, keys, revision).await;
    }
    let mut end = last.clone();
    end.push(0);
    let page =
        super::scan::read_page(side, first, Some(&end), (keys.len() * 2) as i64, revision).await?;
    let more = page.more;
    let kvs = page.entries;
    // Without `more`, the read covered the whole span; with it, up to its last key.
    let covered_to = if more {
        kvs.last().map(|e| e.key.clone())
    } else {
        None
    };
    let mut found = kvs.into_iter().peekable();
    let mut out: Vec<Option<Entry>> = Vec::with_capacity(keys.len());
    let mut missing = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let covered = !more || covered_to.as_ref().is_some_and(|c| key <= c);
        if !covered {
            missing.push(i);
            out.push(None);
            continue;
        }
        while found.next_if(|e| e.key < *key).is_some() {}
        out.push(found.next_if(|e| e.key == *key));
    }
    if !missing.is_empty() {
        let wanted: Vec<Vec<u8>> = missing.iter().map(|&i| keys[i].clone()).collect();
        for (i, entry) in missing
            .into_iter()
            .zip(read_entries(side, &wanted, revision).await?)
        {
            out[i] = entry;
        }
    }
    Ok(out)
}

/// Batches of reads in flight at once in [`read_entries`].
const READ_CONCURRENCY: usize = 8;

async fn read_chunk(
    side: &Side,
    chunk: Vec<Vec<u8>>,
    revision: i64,
) -> Result<Vec<Option<Entry>>, EtcdError> {
    if let Some(v2) = side.v2()? {
        // v2 cannot read at a revision: current values (callers check hashes).
        let mut out = Vec::with_capacity(chunk.len());
        for key in &chunk {
            out.push(v2.get(key).await?.map(|(value, mod_revision)| Entry {
                key: key.clone(),
                value,
                mod_revision,
                create_revision: 0,
                lease: 0,
            }));
        }
        return Ok(out);
    }
    let reads: Vec<TxnOp> = chunk
        .iter()
        .map(|k| TxnOp::get(k.clone(), Some(GetOptions::new().with_revision(revision))))
        .collect();
    let op = Op {
        action: "read",
        prefix: chunk.first().map_or(&[][..], |k| k.as_slice()),
    };
    let resp = side
        .call(op, |c| {
            let txn = Txn::new().and_then(reads.clone());
            async move {
                c.kv_client()
                    .max_decoding_message_size(MAX_DECODE_BYTES)
                    .txn(txn)
                    .await
            }
        })
        .await;
    let resp = match resp {
        Err(EtcdError::Compacted { side, .. }) => {
            return Err(EtcdError::Compacted { side, revision });
        }
        other => other?,
    };
    Ok(resp
        .op_responses()
        .into_iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(mut g) => {
                Some(g.take_kvs().into_iter().next().map(super::scan::entry_of))
            }
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(guard: Guard) -> WriteOp {
        WriteOp {
            key: b"/k".to_vec(),
            value: Some(b"target".to_vec()),
            guard,
            lease: 0,
        }
    }

    #[test]
    fn only_ascending_creates_are_guarded_by_their_span() {
        let op = |key: &str, guard: Guard, value: Option<&str>| WriteOp {
            key: key.into(),
            value: value.map(Into::into),
            guard,
            lease: 0,
        };
        let create = |key: &str| op(key, Guard::Absent, Some("v"));
        assert!(spannable(&[create("/a"), create("/b"), create("/c")]));
        // One key: nothing to gain.
        assert!(!spannable(&[create("/a")]));
        // Not ascending, or a key twice.
        assert!(!spannable(&[create("/b"), create("/a")]));
        assert!(!spannable(&[create("/a"), create("/a")]));
        // An update or a delete keeps its own guard.
        assert!(!spannable(&[
            create("/a"),
            op("/b", Guard::ModRevision(3), Some("v"))
        ]));
        assert!(!spannable(&[create("/a"), op("/b", Guard::Absent, None)]));
    }

    #[test]
    fn settles_keys_after_a_failed_guard() {
        // Still absent: retry the create.
        assert_eq!(classify(&put(Guard::Absent), None), None);
        // Already holds the target: in place.
        assert_eq!(
            classify(&put(Guard::Absent), Some((b"target", 9))),
            Some(Outcome::InPlace)
        );
        // Holds something else: foreign, never overwritten.
        assert_eq!(
            classify(&put(Guard::Absent), Some((b"other", 9))),
            Some(Outcome::Foreign {
                mod_revision: Some(9)
            })
        );
        // Update whose planned revision still holds: retry.
        assert_eq!(
            classify(&put(Guard::ModRevision(5)), Some((b"old", 5))),
            None
        );
        assert_eq!(
            classify(&put(Guard::ModRevision(5)), Some((b"old", 7))),
            Some(Outcome::Foreign {
                mod_revision: Some(7)
            })
        );
        // Update target deleted by someone: foreign.
        assert_eq!(
            classify(&put(Guard::ModRevision(5)), None),
            Some(Outcome::Foreign { mod_revision: None })
        );
        // Delete: already gone is in place.
        let del = WriteOp {
            key: b"/k".to_vec(),
            value: None,
            guard: Guard::ModRevision(5),
            lease: 0,
        };
        assert_eq!(classify(&del, None), Some(Outcome::InPlace));
        assert_eq!(classify(&del, Some((b"x", 5))), None);
        assert_eq!(
            classify(&del, Some((b"x", 6))),
            Some(Outcome::Foreign {
                mod_revision: Some(6)
            })
        );
    }
}
