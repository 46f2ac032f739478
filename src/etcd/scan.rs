//! Paged range reads at one pinned revision.
//!
//! etcd returns a range in key order. Asking it to sort makes it read the
//! whole range before applying the limit, so these reads never sort. Each
//! page is bounded by a key count that adapts to the value sizes seen, so a
//! page stays near `page_bytes`. The next page starts at the last key plus
//! `\0`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use etcd_client::GetOptions;
use tokio::sync::mpsc;

use super::side::{MAX_DECODE_BYTES, Op};
use super::{EtcdError, Side};

/// One key as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub create_revision: i64,
    pub lease: i64,
}

/// The smallest page target that retries shrink pages to.
const MIN_PAGE_BYTES: usize = 16 << 10;

/// How big a page may get.
#[derive(Debug, Clone, Copy)]
pub struct PageLimits {
    /// Target bytes of keys and values per page.
    pub page_bytes: usize,
    /// Most keys per page.
    pub max_keys: i64,
    /// Keys in the first page, before any size is known.
    pub first_keys: i64,
}

impl Default for PageLimits {
    fn default() -> Self {
        Self {
            page_bytes: 2 << 20,
            max_keys: 10_000,
            first_keys: 1_000,
        }
    }
}

/// A key range `[start, end)`; `end == None` runs to the end of the keyspace.
#[derive(Debug, Clone)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
    /// The prefix it was made from (v2 reads by prefix).
    pub prefix: Vec<u8>,
}

impl KeyRange {
    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: &[u8]) -> KeyRange {
        KeyRange {
            start: if prefix.is_empty() {
                vec![0]
            } else {
                prefix.to_vec()
            },
            end: crate::keys::prefix_end(prefix),
            prefix: prefix.to_vec(),
        }
    }
}

/// The revision a scan reads at: fixed, or pinned by its first response.
#[derive(Debug, Clone)]
pub struct Pin(Arc<AtomicU64>);

impl Pin {
    /// Not pinned yet: the first page reads the latest revision and pins it.
    pub fn latest() -> Pin {
        Pin(Arc::new(AtomicU64::new(0)))
    }

    pub fn at(revision: i64) -> Pin {
        Pin(Arc::new(AtomicU64::new(revision.max(0) as u64)))
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::SeqCst) as i64
    }

    pub(super) fn pin(&self, revision: i64) {
        let _ = self.0.compare_exchange(
            0,
            revision.max(0) as u64,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
}

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
