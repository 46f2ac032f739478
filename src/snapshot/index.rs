//! The keyspace of a snapshot at one revision, in key order. The `key`
//! bucket is ordered by revision, so its versions are sorted out of core:
//! runs of a bounded size are sorted in memory and spilled, then merged,
//! keeping each key's last version at or before the revision and dropping
//! deleted keys. The result is a spill file with a sparse index of marks,
//! so a range read starts near its first key. Memory holds one run while
//! sorting, and one version per run while merging.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use etcd_client::proto::PbKeyValue;
use prost::Message as _;
use serde::{Deserialize, Serialize};

use super::bolt::{Bolt, BoltError, BucketRoot};
use crate::spool::{Spool, SpoolWriter};

/// Bytes of versions sorted in memory before a run is spilled.
const RUN_BYTES: usize = 16 << 20;
/// One mark every this many keys.
pub const MARK_EVERY: u64 = 256;

/// One version of a key, as the `key` bucket holds it. Its byte fields are
/// spilled whole (`serde_bytes`), not one byte at a time.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Version {
    #[serde(with = "serde_bytes")]
    key: Vec<u8>,
    main: i64,
    sub: i64,
    tombstone: bool,
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
    create_revision: i64,
    version: i64,
    lease: i64,
}

/// A key as it stood at the index's revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

/// The sorted keyspace at one revision.
pub struct Index {
    entries: Spool<Kept>,
    /// (key, offset, ordinal) of every [`MARK_EVERY`]th entry.
    marks: Vec<(Vec<u8>, u64, u64)>,
    pub keys: u64,
}

/// A revision key of the `key` bucket: 8 bytes of main revision, `_`, 8
/// bytes of sub revision (big-endian), and `t` on a tombstone.
pub fn parse_revision(k: &[u8]) -> Result<(i64, i64, bool), BoltError> {
    let bad = || BoltError::Corrupt("a `key` bucket entry is not a revision".into());
    if !(k.len() == 17 || k.len() == 18) || k[8] != b'_' {
        return Err(bad());
    }
    let main = i64::from_be_bytes(k[0..8].try_into().map_err(|_| bad())?);
    let sub = i64::from_be_bytes(k[9..17].try_into().map_err(|_| bad())?);
    Ok((main, sub, k.len() == 18 && k[17] == b't'))
}

fn io(e: std::io::Error) -> BoltError {
    BoltError::Io(format!("spilling the sorted keys: {e}"))
}

impl Index {
    /// Builds the keyspace at `revision` from the `key` bucket at `root`,
    /// keeping only keys `keep` accepts.
    pub fn build(
        bolt: &Bolt,
        root: &BucketRoot,
        revision: i64,
        keep: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Index, BoltError> {
        let started = std::time::Instant::now();
        let mut runs: Vec<Spool<Version>> = Vec::new();
        let mut run: Vec<Version> = Vec::new();
        let mut bytes = 0usize;
        let mut spill = |run: &mut Vec<Version>| -> Result<(), BoltError> {
            run.sort_by(|a, b| (&a.key, a.main, a.sub).cmp(&(&b.key, b.main, b.sub)));
            let mut w = SpoolWriter::new();
            for v in run.drain(..) {
                w.push(&v).map_err(io)?;
            }
            runs.push(w.finish().map_err(io)?);
            Ok(())
        };
        bolt.walk(root, &mut |k, v, _| {
            let (main, sub, tombstone) = parse_revision(k)?;
            // Revision order: nothing after this one can be at or before it.
            if main > revision {
                return Ok(false);
            }
            let kv = PbKeyValue::decode(v).map_err(|e| {
                BoltError::Corrupt(format!("revision {main} holds no key-value record: {e}"))
            })?;
            if !keep(&kv.key) {
                return Ok(true);
            }
            bytes += kv.key.len() + kv.value.len() + 64;
            run.push(Version {
                key: kv.key,
                main,
                sub,
                tombstone,
                value: kv.value,
                create_revision: kv.create_revision,
                version: kv.version,
                lease: kv.lease,
            });
            if bytes >= RUN_BYTES {
                spill(&mut run)?;
                bytes = 0;
            }
            Ok(true)
        })?;
        if !run.is_empty() {
            spill(&mut run)?;
        }
        let read = started.elapsed().as_secs_f64();
        let n = runs.len();
        let index = merge(runs)?;
        tracing::info!(
            runs = n,
            keys = index.keys,
            read_and_sorted_s = read,
            merged_s = started.elapsed().as_secs_f64() - read,
            "snapshot keyspace sorted"
        );
        Ok(index)
    }

    /// About how many keys lie at or after `start` and before `end` (to the
    /// end when `None`), from the marks alone: within [`MARK_EVERY`] per edge.
    pub fn estimate(&self, start: &[u8], end: Option<&[u8]>) -> u64 {
        let ordinal = |at: usize| match at {
            0 => 0,
            i => self.marks[i - 1].2,
        };
        let lo = ordinal(self.marks.partition_point(|(k, _, _)| k.as_slice() < start));
        let hi = match end {
            None => self.keys,
            Some(e) => ordinal(self.marks.partition_point(|(k, _, _)| k.as_slice() < e)),
        };
        hi.saturating_sub(lo)
    }

    /// The entries from the first key at or after `start`, in key order.
    pub fn from(&self, start: &[u8]) -> impl Iterator<Item = Result<Kept, BoltError>> + use<> {
        let at = self
            .marks
            .partition_point(|(k, _, _)| k.as_slice() <= start);
        let (offset, ordinal) = match at {
            0 => (0, 0),
            i => (self.marks[i - 1].1, self.marks[i - 1].2),
        };
        let start = start.to_vec();
        self.entries
            .try_iter_at(offset, self.keys - ordinal, 64 << 10)
            .map(|r| r.map_err(io))
            .filter(move |r| r.as_ref().map_or(true, |e| e.key >= start))
    }
}

/// Merges sorted runs: each key's last version, unless it is a tombstone.
fn merge(runs: Vec<Spool<Version>>) -> Result<Index, BoltError> {
    let mut readers: Vec<_> = runs
        .iter()
        .map(|r| r.try_iter_at(0, r.len(), 64 << 10))
        .collect();
    let mut heads: Vec<Option<Version>> = Vec::with_capacity(readers.len());
    let mut heap = BinaryHeap::new();
    for (i, r) in readers.iter_mut().enumerate() {
        let v = r.next().transpose().map_err(io)?;
        if let Some(v) = &v {
            heap.push(Reverse(((v.key.clone(), v.main, v.sub), i)));
        }
        heads.push(v);
    }
    let mut out = Sorted::default();
    let mut last: Option<Version> = None;
    while let Some(Reverse((_, i))) = heap.pop() {
        let Some(v) = heads[i].take() else {
            continue;
        };
        if let Some(n) = readers[i].next().transpose().map_err(io)? {
            heap.push(Reverse(((n.key.clone(), n.main, n.sub), i)));
            heads[i] = Some(n);
        }
        if let Some(prev) = last.take()
            && prev.key != v.key
        {
            out.emit(prev)?;
        }
        last = Some(v);
    }
    if let Some(prev) = last {
        out.emit(prev)?;
    }
    Ok(Index {
        entries: out.out.finish().map_err(io)?,
        marks: out.marks,
        keys: out.keys,
    })
}

/// The merged output as it is written.
#[derive(Default)]
struct Sorted {
    out: SpoolWriter<Kept>,
    marks: Vec<(Vec<u8>, u64, u64)>,
    keys: u64,
}

impl Sorted {
    fn emit(&mut self, v: Version) -> Result<(), BoltError> {
        if v.tombstone {
            return Ok(());
        }
        if self.keys.is_multiple_of(MARK_EVERY) {
            self.marks
                .push((v.key.clone(), self.out.offset(), self.keys));
        }
        let kept = Kept {
            key: v.key,
            value: v.value,
            create_revision: v.create_revision,
            mod_revision: v.main,
            version: v.version,
            lease: v.lease,
        };
        self.out.push(&kept).map_err(io)?;
        self.keys += 1;
        Ok(())
    }
}
