//! Batching: changes grouped into transactions within the limits (ops,
//! bytes, one mapping each), from the overlapped plan's tap or a spill.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::join::{Ahead, Joiner, Scans};
use super::{ApplyOptions, ApplyProgress};
use crate::diff::{Action, Change};
use crate::keys::KeyList;

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
        let b = item.change.write_bytes();
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
    pub oversized: KeyList,
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
            oversized: KeyList::default(),
            unsent: 0,
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

impl crate::plan::WriteSink for Tap {
    /// Offers one write (called from the blocking diff thread).
    fn offer(&mut self, change: Change, value: Option<Vec<u8>>) {
        if !self.batcher.fits(&change) {
            self.oversized.push(change.key.clone());
            return;
        }
        if let Some(batch) = self.batcher.push(Item { change, value }) {
            self.send(batch);
        }
    }
}

/// Streams the writing changes of a spilled plan into batches on `tx`,
/// from a blocking thread, with the values `scans` read where it has them.
/// Stops early when the writer hangs up.
pub fn feed_from_spool(
    changes: &crate::spool::Spool<Change>,
    options: &ApplyOptions,
    scans: Option<&Scans>,
    tx: &mpsc::Sender<Vec<Item>>,
) -> std::io::Result<()> {
    let mut batcher = Batcher::new(options);
    let mut joiner = Joiner::default();
    let mut ahead = Ahead::new(changes.try_iter());
    while let Some(change) = ahead.next() {
        let change = change?;
        let value = scans.and_then(|s| joiner.value_for(s, &change, || ahead.sample(&change)));
        if let Some(batch) = batcher.push(Item { change, value })
            && tx.blocking_send(batch).is_err()
        {
            return Ok(());
        }
    }
    if let Some(batch) = batcher.flush() {
        let _ = tx.blocking_send(batch);
    }
    Ok(())
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
