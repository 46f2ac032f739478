//! Parallel range reads that avoid etcd's paging cost.
//!
//! A limited Range makes etcd walk its index over the whole rest of the
//! range (to count it), so paging a million keys one page after another
//! walks the index ~100 times over. Here every request is bounded: the
//! range is cut into consecutive pieces of about one page of keys each,
//! sized from the key density seen so far, and several are read at once
//! (`pieces.rs`). Pages are handed on in key order, and only the pieces in
//! flight are held in memory.
//!
//! The first request reads a first page of the whole range; etcd's count
//! of the range and that page's density size the first pieces, and its
//! keys' bytes are the digits of key-space positions (`space.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use etcd_client::GetOptions;
use tokio::sync::mpsc;

use super::pieces::{Pieces, Shared};
use super::scan::{Entry, KeyRange, PageLimits, Pin};
use super::side::Op;
use super::space::Space;
use super::{EtcdError, Side};

/// Pieces read at once per scan unless told otherwise: with
/// [`PIECE_PAGE_BYTES`], 8 MiB in flight, enough for a 50 ms round trip.
pub const DEFAULT_READERS: usize = 4;

/// Pieces read at once by a scan whose values feed writes (a saved plan's
/// values, an apply's plan into an empty destination): the writes are
/// slower than reads by far, so half as many keep ahead of them, and on a
/// 2-core machine shared with both servers the fewer bursts of reading
/// leave the destination more of the CPU (24 interleaved runs of a
/// 100,000-key apply each, 2026-12-08: 1.05 s median against 1.09 s with
/// 4). Each piece holds a page (about 2 MiB) while it waits.
pub const FEEDING_READERS: usize = 2;

/// Page size target of one piece. Fewer, larger requests cost both sides
/// less per key (measured: 1 MiB pages read 1M keys ~20% faster than
/// 256 KiB ones, and 2 MiB pages four at a time beat 1 MiB eight at a
/// time, with the same bytes in flight: see the README); a scan holds about
/// one page per piece read at once.
const PIECE_PAGE_BYTES: usize = 2 << 20;

/// The first page of a whole range, as a scan reads it: up to a few
/// hundred keys, and etcd's count of the range. Reading it walks etcd's
/// index over the whole range (0.15-0.3 s at 1,000,000 keys on etcd
/// 3.4), so apply reads each range's first page alongside its probes
/// (the destination's also says whether its range is empty) and hands it
/// to that range's scan rather than walk the range twice.
#[derive(Debug, Clone)]
pub struct FirstPage {
    /// The revision it was read at.
    pub revision: i64,
    limit: i64,
    entries: Vec<Entry>,
    more: bool,
    count: i64,
}

impl FirstPage {
    /// Whether the range held no key at [`FirstPage::revision`].
    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.entries.is_empty()
    }

    /// The bytes its keys and values hold.
    pub fn bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|e| e.key.len() + e.value.len())
            .sum()
    }

    /// Drops its entries, keeping what it says of the range (its count, so
    /// whether it is empty); a scan then reads the first page again.
    pub fn strip(&mut self) {
        self.entries = Vec::new();
        self.limit = 0;
    }
}

/// How many keys a scan's first page asks for.
fn first_limit(limits: PageLimits) -> i64 {
    limits.first_keys.clamp(1, 256.min(limits.max_keys))
}

/// Reads the first page of `range` at `revision` (the latest when 0).
pub async fn first_page(
    side: &Side,
    range: &KeyRange,
    revision: i64,
    limits: PageLimits,
) -> Result<FirstPage, EtcdError> {
    let limit = first_limit(limits);
    let page =
        super::scan::read_page(side, &range.start, range.end.as_deref(), limit, revision).await?;
    Ok(FirstPage {
        // A read at an older revision answers with the newest in its header.
        revision: if revision > 0 {
            revision
        } else {
            page.revision
        },
        limit,
        entries: page.entries,
        more: page.more,
        count: page.count,
    })
}

/// Sends the range's entries in key order at the pinned revision (pinned
/// here first when it is not yet), reading up to `readers` pieces at once.
/// `counter` counts keys read.
pub async fn scan_parallel(
    side: &Arc<Side>,
    range: &KeyRange,
    pin: &Pin,
    limits: PageLimits,
    readers: usize,
    counter: &AtomicU64,
    tx: &mpsc::Sender<Vec<Entry>>,
) -> Result<(), EtcdError> {
    let scan = Scan {
        range,
        pin,
        limits,
        readers,
    };
    scan_parallel_from(side, scan, None, counter, tx).await
}

/// What one parallel scan reads.
#[derive(Clone, Copy)]
pub struct Scan<'a> {
    pub range: &'a KeyRange,
    pub pin: &'a Pin,
    pub limits: PageLimits,
    pub readers: usize,
}

/// [`scan_parallel`], starting from `first` when it is this range's first
/// page at the pinned revision (read already, by apply's probe); any other
/// page is not used, and the first page is read again.
pub async fn scan_parallel_from(
    side: &Arc<Side>,
    scan: Scan<'_>,
    first: Option<FirstPage>,
    counter: &AtomicU64,
    tx: &mpsc::Sender<Vec<Entry>>,
) -> Result<(), EtcdError> {
    if let Some(done) = without_pieces(side, &scan, counter, tx).await {
        return done;
    }
    let Scan {
        range,
        pin,
        limits,
        readers,
    } = scan;
    let revision = pin.get();
    // The first page also says how many keys the range holds (etcd counts
    // them anyway): with its density, that sizes the first pieces.
    let first = match first {
        Some(f) if f.revision == revision && f.limit == first_limit(limits) => f,
        _ => first_page(side, range, revision, limits).await?,
    };
    let (page, more, count) = (first.entries, first.more, first.count);
    let n = page.len();
    let bytes: usize = page.iter().map(|e| e.key.len() + e.value.len()).sum();
    // The first keys' bytes are the digits of key-space positions.
    let space = Space::new(
        &range.start,
        range.end.as_deref(),
        page.iter().map(|e| e.key.as_slice()),
    );
    let hi_n = range.end.as_ref().map_or(u128::MAX, |e| space.num(e));
    let (first, last) = (
        page.first().map(|e| space.num(&e.key)),
        page.last().map(|e| e.key.clone()),
    );
    if n > 0 {
        counter.fetch_add(n as u64, Ordering::Relaxed);
        if tx.send(page).await.is_err() {
            return Ok(());
        }
    }
    let Some(mut start) = last.filter(|_| more) else {
        return Ok(());
    };
    start.push(0);
    let lo_n = space.num(&start);
    // etcd counts the range at the pinned revision: exact, so the scan ends
    // as soon as that many keys are read.
    let left = (count > 0).then(|| (count as u128).saturating_sub(n as u128));
    let keys_left = left.unwrap_or(0).max(1);
    let limit = page_limit(limits, bytes / n.max(1));
    // The key space one page covers, scaled from the first page.
    let span = match first {
        Some(f) if n > 1 => lo_n.saturating_sub(f).saturating_mul(limit as u128) / n as u128,
        _ => (hi_n - lo_n) / keys_left * limit as u128,
    };
    let shared = Shared {
        side: side.clone(),
        space,
        revision,
        end: range.end.clone(),
        limit,
    };
    let pieces = Pieces::new(shared, readers, start, span).ramped();
    drain(pieces, left, counter, tx).await
}

/// Keys a range is known to hold, in order, learnt elsewhere (a saved
/// plan's next source keys), and the mean bytes of a key with its value.
/// They size a scan's pieces in place of a first page, whose count walks
/// etcd's index over the whole range (about 30 ms of the server's CPU at
/// 100,000 keys, before anything else is read). The pieces cover the whole
/// range whatever the sample says: a wrong one only misjudges their size.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub keys: Vec<Vec<u8>>,
    pub entry_bytes: usize,
}

impl Sample {
    /// Whether it can size pieces: two keys or more, ascending, in `range`.
    fn fits(&self, range: &KeyRange) -> bool {
        let inside = |k: &Vec<u8>| *k >= range.start && range.end.as_ref().is_none_or(|e| k < e);
        self.keys.len() >= 2
            && self.keys.windows(2).all(|w| w[0] < w[1])
            && self.keys.first().is_some_and(inside)
            && self.keys.last().is_some_and(inside)
    }
}

/// [`scan_parallel`], its pieces sized by `sample` instead of a first page
/// (by a first page when the sample cannot size them). Uncounted, it reads
/// on to the range's end.
pub async fn scan_parallel_sampled(
    side: &Arc<Side>,
    scan: Scan<'_>,
    sample: Sample,
    counter: &AtomicU64,
    tx: &mpsc::Sender<Vec<Entry>>,
) -> Result<(), EtcdError> {
    if !sample.fits(scan.range) {
        return scan_parallel_from(side, scan, None, counter, tx).await;
    }
    if let Some(done) = without_pieces(side, &scan, counter, tx).await {
        return done;
    }
    let Scan {
        range,
        pin,
        limits,
        readers,
    } = scan;
    let keys = &sample.keys;
    let space = Space::new(
        &range.start,
        range.end.as_deref(),
        keys.iter().map(Vec::as_slice),
    );
    let limit = page_limit(limits, sample.entry_bytes);
    let (lo, hi) = match (keys.first(), keys.last()) {
        (Some(lo), Some(hi)) => (space.num(lo), space.num(hi)),
        _ => (0, 0),
    };
    // The key space one page covers, scaled from the sample.
    let gaps = keys.len().saturating_sub(1).max(1) as u128;
    let span = hi.saturating_sub(lo).saturating_mul(limit as u128) / gaps;
    let shared = Shared {
        side: side.clone(),
        space,
        revision: pin.get(),
        end: range.end.clone(),
        limit,
    };
    let pieces = Pieces::new(shared, readers, range.start.clone(), span).ramped();
    drain(pieces, None, counter, tx).await
}

/// Keys per request, for pages of about [`PIECE_PAGE_BYTES`] when a key
/// with its value holds `entry_bytes`.
fn page_limit(limits: PageLimits, entry_bytes: usize) -> i64 {
    let page_bytes = limits.page_bytes.min(PIECE_PAGE_BYTES);
    ((page_bytes / entry_bytes.max(1)) as i64).clamp(1, limits.max_keys)
}

/// The scans that read no pieces (etcd v2, one reader, a served snapshot),
/// done; `None` for the others, then pinned to a revision.
async fn without_pieces(
    side: &Arc<Side>,
    scan: &Scan<'_>,
    counter: &AtomicU64,
    tx: &mpsc::Sender<Vec<Entry>>,
) -> Option<Result<(), EtcdError>> {
    let Scan {
        range,
        pin,
        limits,
        readers,
    } = *scan;
    let v2 = match side.v2() {
        Ok(v2) => v2.is_some(),
        Err(e) => return Some(Err(e)),
    };
    if v2 || readers <= 1 {
        return Some(super::scan::scan(side, range, pin, limits, counter, tx).await);
    }
    if pin.get() == 0
        && let Err(e) = pin_now(side, range, pin).await
    {
        return Some(Err(e));
    }
    let local = side.local()?.clone();
    Some(scan_local(side, local, range, limits, counter, tx).await)
}

/// Hands on the pieces' pages in order; `left`, when etcd counted the
/// range, is how many keys it still holds.
async fn drain(
    mut pieces: Pieces,
    mut left: Option<u128>,
    counter: &AtomicU64,
    tx: &mpsc::Sender<Vec<Entry>>,
) -> Result<(), EtcdError> {
    while let Some(page) = pieces.next().await {
        let page = page?;
        if page.is_empty() {
            continue;
        }
        counter.fetch_add(page.len() as u64, Ordering::Relaxed);
        left = left.map(|l| l.saturating_sub(page.len() as u128));
        if tx.send(page).await.is_err() {
            return Ok(());
        }
        if left == Some(0) {
            // Every key the range holds at this revision is read: the
            // pieces still ahead can only be empty (across a long link, a
            // round trip each).
            return Ok(());
        }
    }
    Ok(())
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

/// A scan of an in-process keyspace (a served snapshot, pinned at its one
/// revision): its pages, on a blocking thread, in key order.
async fn scan_local(
    side: &Side,
    local: Arc<dyn super::types::LocalKeyspace>,
    range: &KeyRange,
    limits: PageLimits,
    counter: &AtomicU64,
    tx: &mpsc::Sender<Vec<Entry>>,
) -> Result<(), EtcdError> {
    let (range, tx) = (range.clone(), tx.clone());
    // In process a page costs no round trip: small pages keep the pages
    // queued for the diff (three at once) from weighing on memory.
    let page = usize::try_from(limits.max_keys)
        .unwrap_or(1000)
        .clamp(1, 2_000);
    let read = tokio::task::spawn_blocking(move || {
        let mut sent = 0u64;
        let result = local.pages(&range, page, &mut |entries| {
            sent += entries.len() as u64;
            tx.blocking_send(entries).is_ok()
        });
        (result, sent)
    })
    .await;
    let failed = |detail: String| EtcdError::Request {
        side: side.role,
        operation: "read the snapshot".into(),
        detail,
    };
    let (result, sent) = read.map_err(|e| failed(e.to_string()))?;
    counter.fetch_add(sent, Ordering::Relaxed);
    result.map_err(failed)
}
