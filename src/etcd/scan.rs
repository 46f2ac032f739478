//! Paged range reads at one pinned revision.
//!
//! etcd returns a range in key order. Asking it to sort makes it read the
//! whole range before applying the limit, so these reads never sort. Each
//! page is bounded by a key count that adapts to the value sizes seen, so a
//! page stays near `page_bytes`. The next page starts at the last key plus
//! `\0`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use etcd_client::GetOptions;
use tokio::sync::mpsc;

use super::side::{MAX_DECODE_BYTES, Op};
pub use super::types::{Entry, KeyRange, PageLimits, Pin};
use super::{EtcdError, Side};

/// The smallest page target that retries shrink pages to.
const MIN_PAGE_BYTES: usize = 16 << 10;

/// Sends the range's entries, page by page, in key order, at the pinned
/// revision. Stops early when the receiver is gone. `counter` counts keys
/// read, for progress.
pub async fn scan(
    side: &Side,
    range: &KeyRange,
    pin: &Pin,
    limits: PageLimits,
    counter: &AtomicU64,
    tx: &mpsc::Sender<Vec<Entry>>,
) -> Result<(), EtcdError> {
    if let Some(v2) = side.v2()? {
        // v2 has no paged reads at a revision: one consistent recursive read.
        let (entries, index) = v2.read_prefix(&range.prefix).await?;
        pin.pin(index);
        counter.fetch_add(entries.len() as u64, Ordering::Relaxed);
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            let page: Vec<Entry> = entries.by_ref().take(1000).collect();
            if tx.send(page).await.is_err() {
                break;
            }
        }
        return Ok(());
    }
    let mut start = range.start.clone();
    let mut limit = limits.first_keys.clamp(1, limits.max_keys);
    let mut page_bytes = limits.page_bytes;
    loop {
        let revision = pin.get();
        let page = read_page(side, &start, range.end.as_deref(), limit, revision).await?;
        pin.pin(page.revision);
        let (more, tries) = (page.more, page.retries + 1);
        let page = page.entries;
        let bytes: usize = page.iter().map(|e| e.key.len() + e.value.len()).sum();
        if let Some(last) = page.last() {
            start = last.key.clone();
            start.push(0);
        }
        let n = page.len();
        counter.fetch_add(n as u64, Ordering::Relaxed);
        if n > 0 && tx.send(page).await.is_err() {
            return Ok(());
        }
        if !more || n == 0 {
            return Ok(());
        }
        // Pages that needed retries stay smaller from then on.
        let retries = tries.saturating_sub(1).min(30);
        page_bytes = (page_bytes >> retries).max(MIN_PAGE_BYTES.min(limits.page_bytes));
        // Aim the next page at page_bytes from the average entry size seen.
        let average = (bytes / n).max(1);
        limit = ((page_bytes / average) as i64).clamp(1, limits.max_keys);
    }
}

/// One page of a range read.
#[derive(Debug)]
pub struct Page {
    pub entries: Vec<Entry>,
    /// More keys follow in the range.
    pub more: bool,
    /// How many keys the whole range holds (etcd counts them anyway).
    pub count: i64,
    /// The revision of the response header.
    pub revision: i64,
    /// Times the request was cut off and asked for again.
    pub retries: u32,
}

/// One limited, unsorted Range of `[start, end)` (`None`: to the end of
/// the keyspace) at `revision` (0: the latest). A request cut off again and
/// again (a connection that does not live long enough to carry its answer)
/// is asked for in halves.
pub async fn read_page(
    side: &Side,
    start: &[u8],
    end: Option<&[u8]>,
    limit: i64,
    revision: i64,
) -> Result<Page, EtcdError> {
    let end = end.map_or_else(|| vec![0], <[u8]>::to_vec);
    let op = Op {
        action: "read",
        prefix: start,
    };
    let tries = AtomicU32::new(0);
    let result = side
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
    Ok(Page {
        more: resp.more(),
        count: resp.count(),
        revision: resp.header().map_or(0, |h| h.revision()),
        retries: tries.load(Ordering::Relaxed).saturating_sub(1),
        entries: resp.take_kvs().into_iter().map(entry_of).collect(),
    })
}

/// A key as etcd-client returns it, as an [`Entry`].
pub(super) fn entry_of(kv: etcd_client::KeyValue) -> Entry {
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
}
