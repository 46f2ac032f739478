//! The plain data of talking to etcd: keys read, ranges, pinned
//! revisions, guarded writes and their outcomes. A leaf: it depends on no
//! other part of `etcd`, so the clients (`side`, `v2`) and the operations
//! (`scan`, `write`) all build on it without an import circle.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// One key as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub create_revision: i64,
    pub lease: i64,
}

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

    /// Pins it at `revision`, unless it is pinned already.
    pub fn pin(&self, revision: i64) {
        let _ = self.0.compare_exchange(
            0,
            revision.max(0) as u64,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
}

/// The destination state a write was planned against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// The key must not exist.
    Absent,
    /// The key must still have this mod revision.
    ModRevision(i64),
    /// The key must still hold this value (follow mode: the destination
    /// mirrors the source, so it holds the source's previous value).
    Value(Vec<u8>),
}

/// A plain put riding along in a guarded transaction (follow mode's
/// checkpoint): written exactly when the transaction's writes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// One guarded write.
#[derive(Debug, Clone)]
pub struct WriteOp {
    pub key: Vec<u8>,
    /// `Some(value)` puts it; `None` deletes the key.
    pub value: Option<Vec<u8>>,
    pub guard: Guard,
    /// Destination lease to attach a put to (0: none).
    pub lease: i64,
}

/// Bytes one guarded write adds to a transaction request: the key three
/// times (compare, op, read-back), the value, and framing.
pub fn request_bytes(key_len: usize, value_len: usize) -> usize {
    key_len * 3 + value_len + 48
}

/// etcd's default `--max-request-bytes` (1.5 MiB): the largest request a
/// server accepts unless its operator changed the limit.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 3 << 19;

/// What a transaction adds around its ops: the request header etcd wraps
/// it in (id, user, auth revision) and the framing. Generous on purpose.
pub const TXN_OVERHEAD_BYTES: usize = 512;

/// Whether one key with a value of `value_len` bytes fits a request of at
/// most `max_request_bytes`, alone in its transaction.
pub fn fits_alone(key_len: usize, value_len: usize, max_request_bytes: usize) -> bool {
    request_bytes(key_len, value_len) + TXN_OVERHEAD_BYTES <= max_request_bytes
}

impl WriteOp {
    pub fn request_bytes(&self) -> usize {
        request_bytes(self.key.len(), self.value.as_ref().map_or(0, Vec::len))
    }
}

/// What happened to one key of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// This run wrote it.
    Written,
    /// It already held the target (or was already gone): nothing written.
    InPlace,
    /// Someone else wrote it since the plan: left alone.
    Foreign {
        /// The key's current mod revision, `None` when absent.
        mod_revision: Option<i64>,
    },
    /// The server refused even a transaction holding only this key as too
    /// large: not written, and nothing else held back by it.
    TooLarge,
}

/// Settles one key after its transaction's guards failed. `None` means its
/// guard still holds: write it again.
pub fn classify(op: &WriteOp, current: Option<(&[u8], i64)>) -> Option<Outcome> {
    match (&op.value, current, &op.guard) {
        (None, None, _) => Some(Outcome::InPlace),
        (Some(_), None, Guard::Absent) => None,
        (_, Some((_, rev)), Guard::ModRevision(planned)) if rev == *planned => None,
        (_, Some((value, _)), Guard::Value(prev)) if value == prev.as_slice() => None,
        (Some(target), Some((value, _)), _) if value == target.as_slice() => Some(Outcome::InPlace),
        (_, current, _) => Some(Outcome::Foreign {
            mod_revision: current.map(|(_, r)| r),
        }),
    }
}

/// A read-only keyspace of one revision held in this process (a served
/// snapshot): scans of it skip the network, while every other request of
/// its side still goes to its server.
pub trait LocalKeyspace: Send + Sync {
    /// Hands the entries of `range` on in key order, in pages of about
    /// `page` entries, while `send` returns true.
    fn pages(
        &self,
        range: &KeyRange,
        page: usize,
        send: &mut dyn FnMut(Vec<Entry>) -> bool,
    ) -> Result<(), String>;
}
