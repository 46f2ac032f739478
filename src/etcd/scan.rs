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
    let end = range.end.clone().unwrap_or_else(|| vec![0]);
    let mut limit = limits.first_keys.clamp(1, limits.max_keys);
    let op = Op {
        action: "read",
        prefix: &range.start,
    };
    let mut page_bytes = limits.page_bytes;
    loop {
        let revision = pin.get();
        let key = start.clone();
        let tries = AtomicU32::new(0);
        let result = side
            .call(op, |c| {
                // A page cut off again and again (a connection that does not
                // live long enough to carry it) is asked for in halves.
                let retry = tries.fetch_add(1, Ordering::Relaxed).min(30);
                let options = GetOptions::new()
                    .with_range(end.clone())
                    .with_limit((limit >> retry).max(1))
                    .with_revision(revision);
                let key = key.clone();
                async move {
                    c.kv_client()
                        .max_decoding_message_size(MAX_DECODE_BYTES)
                        .get(key, Some(options))
                        .await
                }
            })
            .await;
        let mut resp = match result {
            Ok(r) => r,
            Err(EtcdError::Compacted { side, .. }) => {
                return Err(EtcdError::Compacted { side, revision });
            }
            Err(e) => return Err(e),
        };
        if let Some(h) = resp.header() {
            pin.pin(h.revision());
        }
        let more = resp.more();
        let kvs = resp.take_kvs();
        let bytes: usize = kvs.iter().map(|kv| kv.key().len() + kv.value().len()).sum();
        if let Some(last) = kvs.last() {
            start = last.key().to_vec();
            start.push(0);
        }
        let page: Vec<Entry> = kvs
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
        let n = page.len();
        counter.fetch_add(n as u64, Ordering::Relaxed);
        if n > 0 && tx.send(page).await.is_err() {
            return Ok(());
        }
        if !more || n == 0 {
            return Ok(());
        }
        // Pages that needed retries stay smaller from then on.
        let retries = tries.load(Ordering::Relaxed).saturating_sub(1).min(30);
        page_bytes = (page_bytes >> retries).max(MIN_PAGE_BYTES.min(limits.page_bytes));
        // Aim the next page at page_bytes from the average entry size seen.
        let average = (bytes / n).max(1);
        limit = ((page_bytes / average) as i64).clamp(1, limits.max_keys);
    }
}
