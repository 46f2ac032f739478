//! Parallel range reads that avoid etcd's paging cost.
//!
//! A limited Range makes etcd walk its index over the whole rest of the
//! range (to count it), so paging a million keys one page after another
//! walks the index ~100 times over. Here every request is bounded: each
//! reader reads windows `[cursor, window_end)` sized from the key density
//! it has seen, so a request walks about one page of keys. Readers start on
//! equal slices of the key space and, when one runs dry, it takes the upper
//! half of the busiest reader's remaining range (work stealing), so dense
//! regions get split without reading every key first. Pages come out in key
//! order: each slice has its own small channel, drained in slice order.
//!
//! Key-space positions are the 16 bytes after the range's common prefix,
//! read as a big-endian number. Keys that agree on all 16 are paged within
//! one window, which is correct, only slower.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use etcd_client::GetOptions;
use tokio::sync::mpsc;

use super::scan::{Entry, KeyRange, PageLimits, Pin};
use super::side::{MAX_DECODE_BYTES, Op};
use super::{EtcdError, Side};

/// Readers per scan unless told otherwise.
pub const DEFAULT_READERS: usize = 8;

/// Page size target of one reader: small, since several pages per reader
/// may wait in memory for the merge.
const READER_PAGE_BYTES: usize = 256 << 10;

/// Positions in the key space, relative to a common prefix.
#[derive(Debug, Clone)]
struct Space {
    base: Vec<u8>,
}

impl Space {
    fn new(start: &[u8], end: Option<&[u8]>) -> Space {
        let base = match end {
            None => Vec::new(),
            Some(end) => {
                let n = start.iter().zip(end).take_while(|(a, b)| a == b).count();
                start[..n].to_vec()
            }
        };
        Space { base }
    }

    fn num(&self, key: &[u8]) -> u128 {
        if let Some(rest) = key.strip_prefix(self.base.as_slice()) {
            let mut bytes = [0u8; 16];
            let n = rest.len().min(16);
            bytes[..n].copy_from_slice(&rest[..n]);
            u128::from_be_bytes(bytes)
        } else if key < self.base.as_slice() {
            0
        } else {
            u128::MAX
        }
    }

    fn key(&self, n: u128) -> Vec<u8> {
        let bytes = n.to_be_bytes();
        let used = 16 - bytes.iter().rev().take_while(|b| **b == 0).count();
        let mut key = self.base.clone();
        key.extend_from_slice(&bytes[..used]);
        key
    }
}

/// One slice of the range, read by one reader at a time.
struct Slice {
    /// `None`: to the end of the keyspace.
    hi: Option<Vec<u8>>,
    /// Next key to read.
    cursor: Vec<u8>,
    /// Key-space position of the end of the window in flight: others may
    /// not split below it.
    reserved: u128,
    /// Window size, in key-space units, tuned to one page.
    span: u128,
    done: bool,
}

struct Shared {
    slices: Vec<Slice>,
    /// Slice index by `lo`, for the merge.
    order: BTreeMap<Vec<u8>, usize>,
    receivers: Vec<Option<mpsc::Receiver<Vec<Entry>>>>,
}

struct Ctx {
    side: Arc<Side>,
    space: Space,
    revision: i64,
    limits: PageLimits,
    shared: Mutex<Shared>,
    failed: Mutex<Option<EtcdError>>,
    stop: AtomicBool,
}

fn before(key: &[u8], hi: &Option<Vec<u8>>) -> bool {
    hi.as_ref().is_none_or(|h| key < h.as_slice())
}

/// Sends the range's entries in key order at the pinned revision (pinned
/// here first when it is not yet), read by `readers` bounded readers in
/// parallel. `counter` counts keys read.
pub async fn scan_parallel(
    side: &Arc<Side>,
    range: &KeyRange,
    pin: &Pin,
    limits: PageLimits,
    readers: usize,
    counter: &AtomicU64,
    tx: &mpsc::Sender<Vec<Entry>>,
) -> Result<(), EtcdError> {
    if side.v2()?.is_some() || readers <= 1 {
        return super::scan::scan(side, range, pin, limits, counter, tx).await;
    }
    if pin.get() == 0 {
        pin_now(side, range, pin).await?;
    }
    let space = Space::new(&range.start, range.end.as_deref());
    let (lo_n, hi_n) = (
        space.num(&range.start),
        range.end.as_ref().map_or(u128::MAX, |e| space.num(e)),
    );
    // Equal slices of the key space to start with.
    let step = (hi_n - lo_n) / readers as u128;
    let mut bounds: Vec<Vec<u8>> = vec![range.start.clone()];
    for i in 1..readers {
        let k = space.key(lo_n + step * i as u128);
        if k > *bounds.last().unwrap_or(&range.start) && before(&k, &range.end) {
            bounds.push(k);
        }
    }
    let mut shared = Shared {
        slices: Vec::new(),
        order: BTreeMap::new(),
        receivers: Vec::new(),
    };
    let mut senders = Vec::new();
    for (i, lo) in bounds.iter().enumerate() {
        let hi = bounds.get(i + 1).cloned().or_else(|| range.end.clone());
        let (stx, srx) = mpsc::channel(2);
        shared.order.insert(lo.clone(), shared.slices.len());
        shared.slices.push(Slice {
            hi,
            cursor: lo.clone(),
            reserved: 0,
            span: (step >> 32).max(1),
            done: false,
        });
        shared.receivers.push(Some(srx));
        senders.push(stx);
    }
    let ctx = Arc::new(Ctx {
        side: side.clone(),
        space,
        revision: pin.get(),
        limits,
        shared: Mutex::new(shared),
        failed: Mutex::new(None),
        stop: AtomicBool::new(false),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (i, stx) in senders.into_iter().enumerate() {
        tasks.spawn(reader(ctx.clone(), i, stx));
    }
    let merged = merge(&ctx, range, counter, tx).await;
    ctx.stop.store(true, Ordering::SeqCst);
    // Readers blocked on a channel see it closed once the merge drops it.
    if let Ok(mut s) = ctx.shared.lock() {
        s.receivers.clear();
    }
    while tasks.join_next().await.is_some() {}
    if let Some(e) = ctx.failed.lock().ok().and_then(|mut f| f.take()) {
        return Err(e);
    }
    merged
}

/// Pins the latest revision with a request that reads nothing.
async fn pin_now(side: &Side, range: &KeyRange, pin: &Pin) -> Result<(), EtcdError> {
    let op = Op {
        action: "read",
        prefix: &range.start,
    };
    let key = range.start.clone();
    let resp = side
        .call(op, |mut c| {
            let key = key.clone();
            async move { c.get(key, Some(GetOptions::new().with_count_only())).await }
        })
        .await?;
    if let Some(h) = resp.header() {
        pin.pin(h.revision());
    }
    Ok(())
}

/// Drains the slices' channels in key order into `tx`.
async fn merge(
    ctx: &Ctx,
    range: &KeyRange,
    counter: &AtomicU64,
    tx: &mpsc::Sender<Vec<Entry>>,
) -> Result<(), EtcdError> {
    let mut next = range.start.clone();
    loop {
        let taken = {
            let mut s = ctx
                .shared
                .lock()
                .map_err(|_| internal(ctx, "scan state poisoned"))?;
            s.order
                .get(&next)
                .copied()
                .map(|i| (i, s.receivers.get_mut(i).and_then(Option::take)))
        };
        let (index, rx) = match taken {
            Some((i, Some(rx))) => (i, rx),
            _ => {
                if ctx.failed.lock().is_ok_and(|f| f.is_some()) || ctx.stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
                return Err(internal(ctx, "a slice of the parallel scan went missing"));
            }
        };
        let mut rx = rx;
        while let Some(page) = rx.recv().await {
            counter.fetch_add(page.len() as u64, Ordering::Relaxed);
            if tx.send(page).await.is_err() {
                return Ok(());
            }
        }
        if ctx.failed.lock().is_ok_and(|f| f.is_some()) {
            return Ok(());
        }
        let hi = {
            let s = ctx
                .shared
                .lock()
                .map_err(|_| internal(ctx, "scan state poisoned"))?;
            s.slices.get(index).map(|sl| sl.hi.clone())
        };
        match hi {
            Some(Some(hi)) if range.end.as_ref() != Some(&hi) => next = hi,
            _ => return Ok(()),
        }
    }
}

fn internal(ctx: &Ctx, why: &str) -> EtcdError {
    EtcdError::Request {
        side: ctx.side.role,
        operation: "parallel read".into(),
        detail: why.into(),
    }
}

/// One reader: reads its slice window by window, then steals.
async fn reader(ctx: Arc<Ctx>, mut index: usize, mut tx: mpsc::Sender<Vec<Entry>>) {
    // Small first pages: several readers start at once, before any value
    // size is known.
    let mut limit = ctx.limits.first_keys.clamp(1, 64.min(ctx.limits.max_keys));
    let page_bytes = ctx.limits.page_bytes.min(READER_PAGE_BYTES);
    loop {
        if ctx.stop.load(Ordering::SeqCst) {
            return;
        }
        // The next window, reserved under the lock.
        let window = {
            let Ok(mut s) = ctx.shared.lock() else { return };
            let Some(slice) = s.slices.get_mut(index) else {
                return;
            };
            if !slice.done && before(&slice.cursor, &slice.hi) {
                let end_n = ctx.space.num(&slice.cursor).saturating_add(slice.span);
                let mut end = ctx.space.key(end_n);
                if end <= slice.cursor {
                    end = slice.cursor.clone();
                    end.push(0);
                }
                let end = match &slice.hi {
                    Some(h) if end >= *h => Some(h.clone()),
                    None if end_n == u128::MAX => None,
                    _ => Some(end),
                };
                slice.reserved = end.as_ref().map_or(u128::MAX, |e| ctx.space.num(e));
                Some((slice.cursor.clone(), end, slice.span))
            } else {
                slice.done = true;
                None
            }
        };
        let Some((start, end, span)) = window else {
            // Done: hang up this slice, take half of the busiest one; while
            // none can be split yet but some still run, wait a moment.
            drop(tx);
            loop {
                match steal(&ctx) {
                    Steal::Got(i, stx) => {
                        index = i;
                        tx = stx;
                        break;
                    }
                    Steal::NotNow => {
                        if ctx.stop.load(Ordering::SeqCst) {
                            return;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    }
                    Steal::AllDone => return,
                }
            }
            continue;
        };
        let result = read_window(&ctx, &start, end.as_deref(), limit).await;
        let (page, more) = match result {
            Ok(r) => r,
            Err(e) => {
                if let Ok(mut f) = ctx.failed.lock() {
                    f.get_or_insert(e);
                }
                ctx.stop.store(true, Ordering::SeqCst);
                return;
            }
        };
        let n = page.len();
        let bytes: usize = page.iter().map(|e| e.key.len() + e.value.len()).sum();
        {
            let Ok(mut s) = ctx.shared.lock() else { return };
            let Some(slice) = s.slices.get_mut(index) else {
                return;
            };
            if more {
                // A full page: the next window starts after it, sized by
                // the key-space distance this page covered.
                if let (Some(first), Some(last)) = (page.first(), page.last()) {
                    let covered = ctx.space.num(&last.key) - ctx.space.num(&first.key);
                    slice.span = covered.max(1);
                    slice.cursor = last.key.clone();
                    slice.cursor.push(0);
                }
            } else {
                // The window held less than a page: go on from its end, with
                // a window grown toward one page.
                match &end {
                    Some(e) => slice.cursor = e.clone(),
                    None => slice.done = true,
                }
                let grow = (limit as usize)
                    .checked_div(n)
                    .map_or(16, |g| g.clamp(1, 16) as u128);
                slice.span = span.saturating_mul(grow).max(1);
            }
            slice.reserved = 0;
        }
        if let Some(average) = bytes.checked_div(n) {
            let average = average.max(1);
            limit = ((page_bytes / average) as i64).clamp(1, ctx.limits.max_keys);
            if tx.send(page).await.is_err() {
                return;
            }
        }
    }
}

enum Steal {
    Got(usize, mpsc::Sender<Vec<Entry>>),
    /// Slices still run, but none can be split now.
    NotNow,
    AllDone,
}

/// Splits the slice with the most key space left (beyond its window in
/// flight) in two, and hands the upper half to the caller.
fn steal(ctx: &Ctx) -> Steal {
    let Ok(mut s) = ctx.shared.lock() else {
        return Steal::AllDone;
    };
    let end_num = |hi: &Option<Vec<u8>>| hi.as_ref().map_or(u128::MAX, |h| ctx.space.num(h));
    let running: Vec<(usize, u128, u128)> = s
        .slices
        .iter()
        .enumerate()
        .filter(|(_, sl)| !sl.done && before(&sl.cursor, &sl.hi))
        .map(|(i, sl)| {
            let from = sl.reserved.max(ctx.space.num(&sl.cursor));
            (i, from, end_num(&sl.hi))
        })
        .collect();
    if running.is_empty() {
        return Steal::AllDone;
    }
    let Some(&(victim, from, to)) = running
        .iter()
        .filter(|(_, from, to)| to.saturating_sub(*from) > 2)
        .max_by_key(|(_, from, to)| to - from)
    else {
        return Steal::NotNow;
    };
    let mid = from + (to - from) / 2;
    let split = ctx.space.key(mid);
    let v = &s.slices[victim];
    if mid <= from || split <= v.cursor || !before(&split, &v.hi) {
        return Steal::NotNow;
    }
    let (hi, span) = (v.hi.clone(), v.span);
    let (stx, srx) = mpsc::channel(2);
    let index = s.slices.len();
    s.slices.push(Slice {
        hi,
        cursor: split.clone(),
        reserved: 0,
        span,
        done: false,
    });
    s.order.insert(split.clone(), index);
    s.receivers.push(Some(srx));
    s.slices[victim].hi = Some(split);
    Steal::Got(index, stx)
}

/// One bounded read: `[start, end)` with `limit`, at the pinned revision.
async fn read_window(
    ctx: &Ctx,
    start: &[u8],
    end: Option<&[u8]>,
    limit: i64,
) -> Result<(Vec<Entry>, bool), EtcdError> {
    let end = end.map_or_else(|| vec![0], <[u8]>::to_vec);
    let op = Op {
        action: "read",
        prefix: start,
    };
    let revision = ctx.revision;
    let tries = std::sync::atomic::AtomicU32::new(0);
    let result = ctx
        .side
        .call(op, |c| {
            let retry = tries.fetch_add(1, Ordering::Relaxed).min(30);
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit((limit >> retry).max(1))
                .with_revision(revision);
            let key = start.to_vec();
            async move {
                c.kv_client()
                    .max_decoding_message_size(MAX_DECODE_BYTES)
                    .get(key, Some(options))
                    .await
            }
        })
        .await;
    let mut resp = match result {
        Err(EtcdError::Compacted { side, .. }) => {
            return Err(EtcdError::Compacted { side, revision });
        }
        other => other?,
    };
    let more = resp.more();
    let page = resp
        .take_kvs()
        .into_iter()
        .map(|kv| {
            let (mod_revision, create_revision, lease) =
                (kv.mod_revision(), kv.create_revision(), kv.lease());
            let (key, value) = kv.into_key_value();
            Entry {
                key,
                value,
                mod_revision,
                create_revision,
                lease,
            }
        })
        .collect();
    Ok((page, more))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_keep_order() {
        let space = Space::new(b"/bench/src/", Some(b"/bench/src0"));
        assert_eq!(space.base, b"/bench/src");
        let a = space.num(b"/bench/src/00000001");
        let b = space.num(b"/bench/src/00000002");
        assert!(a < b);
        assert!(space.key(b) > b"/bench/src/00000001".to_vec());
        assert_eq!(space.key(space.num(b"/bench/src0")), b"/bench/src0");
        assert_eq!(space.num(b"/a"), 0);
        assert_eq!(space.num(b"/z"), u128::MAX);
    }
}
