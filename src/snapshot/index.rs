//! The keyspace of a snapshot at one revision, in key order. The `key`
//! bucket is ordered by revision, so its versions are sorted out of core:
//! runs of a bounded size are sorted in memory and spilled, then merged,
//! keeping each key's last version at or before the revision and dropping
//! deleted keys. The result is a spill file with a sparse index of marks,
//! so a range read starts near its first key. The merge runs on its own
//! thread and readers follow it, so a scan in key order starts as soon as
//! the runs are sorted, not when the whole keyspace is merged. Memory holds
//! one run while sorting, and one version per run while merging.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

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

impl Version {
    /// The order of runs and of the merge: by key, then by revision.
    fn order(&self) -> (&[u8], i64, i64) {
        (&self.key, self.main, self.sub)
    }
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

/// The sorted keyspace at one revision. The merge that writes it runs on
/// its own thread while the keys are already read: a reader follows it and
/// waits for keys not yet merged, so a plan's scan (in key order) starts
/// at once. What needs the whole keyspace (its size, a range's count)
/// waits for the merge to end.
pub struct Index {
    shared: Arc<Shared>,
}

struct Shared {
    merged: Mutex<Merged>,
    grew: Condvar,
    /// Set when the index is dropped: the merge stops.
    abandoned: AtomicBool,
}

/// What the merge has written so far.
#[derive(Default)]
struct Merged {
    /// The spill file, once it holds a record.
    entries: Option<Spool<Kept>>,
    /// (key, offset, ordinal) of every [`MARK_EVERY`]th entry.
    marks: Vec<(Vec<u8>, u64, u64)>,
    /// Entries flushed to the file, and the offset just past them.
    keys: u64,
    offset: u64,
    done: bool,
    failed: Option<String>,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            merged: Mutex::new(Merged::default()),
            grew: Condvar::new(),
            abandoned: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Merged> {
        self.merged.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the merge has flushed past `ordinal`, or ended.
    fn wait_past(&self, ordinal: u64) -> MutexGuard<'_, Merged> {
        let mut m = self.lock();
        while !m.done && m.keys <= ordinal {
            m = self.grew.wait(m).unwrap_or_else(PoisonError::into_inner);
        }
        m
    }

    /// Waits until the merge has ended; its error, if it failed.
    fn wait_done(&self) -> Result<MutexGuard<'_, Merged>, BoltError> {
        let m = self.wait_past(u64::MAX);
        match &m.failed {
            Some(why) => Err(BoltError::Io(why.clone())),
            None => Ok(m),
        }
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        self.shared.abandoned.store(true, Ordering::Relaxed);
    }
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
            runs.push(spill_run(run)?);
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
        tracing::debug!(
            runs = runs.len(),
            read_and_sorted_s = started.elapsed().as_secs_f64(),
            "snapshot versions sorted into runs; merging them"
        );
        Index::merging(runs, started)
    }

    /// Starts merging `runs` on a thread of its own; the index reads what
    /// it has merged so far and waits for the rest.
    fn merging(runs: Vec<Spool<Version>>, started: std::time::Instant) -> Result<Index, BoltError> {
        let shared = Shared::new();
        let merging = shared.clone();
        std::thread::Builder::new()
            .name("snapshot-merge".into())
            .spawn(move || {
                let result = merge(runs, &merging);
                let mut m = merging.lock();
                if let Err(e) = result {
                    m.failed = Some(e.to_string());
                }
                m.done = true;
                merging.grew.notify_all();
                tracing::info!(
                    keys = m.keys,
                    seconds = started.elapsed().as_secs_f64(),
                    failed = m.failed.is_some(),
                    "snapshot keyspace sorted and merged"
                );
            })
            .map_err(|e| BoltError::Io(format!("cannot start the merge: {e}")))?;
        Ok(Index { shared })
    }

    /// How many keys the index holds, once the merge has ended.
    pub fn keys(&self) -> Result<u64, BoltError> {
        Ok(self.shared.wait_done()?.keys)
    }

    /// About how many keys lie at or after `start` and before `end` (to the
    /// end when `None`), from the marks alone: within [`MARK_EVERY`] per
    /// edge. It waits for the merge to end, so it never counts short.
    pub fn estimate(&self, start: &[u8], end: Option<&[u8]>) -> Result<u64, BoltError> {
        let m = self.shared.wait_done()?;
        let ordinal = |at: usize| match at {
            0 => 0,
            i => m.marks[i - 1].2,
        };
        let lo = ordinal(m.marks.partition_point(|(k, _, _)| k.as_slice() < start));
        let hi = match end {
            None => m.keys,
            Some(e) => ordinal(m.marks.partition_point(|(k, _, _)| k.as_slice() < e)),
        };
        Ok(hi.saturating_sub(lo))
    }

    /// The entries from the first key at or after `start`, in key order,
    /// as the merge writes them.
    pub fn from(&self, start: &[u8]) -> impl Iterator<Item = Result<Kept, BoltError>> + use<> {
        // The last mark at or before `start` among those written yet: a
        // later one may follow, so the entries before `start` are skipped.
        let (offset, ordinal) = {
            let m = self.shared.lock();
            match m.marks.partition_point(|(k, _, _)| k.as_slice() <= start) {
                0 => (0, 0),
                i => (m.marks[i - 1].1, m.marks[i - 1].2),
            }
        };
        let start = start.to_vec();
        Follow {
            shared: self.shared.clone(),
            offset,
            ordinal,
            chunk: None,
            ended: false,
        }
        .filter(move |r| r.as_ref().map_or(true, |e| e.key >= start))
    }
}

type Chunk = Box<dyn Iterator<Item = std::io::Result<Kept>> + Send>;

/// Reads the merged entries in order, waiting for those not yet flushed.
struct Follow {
    shared: Arc<Shared>,
    offset: u64,
    ordinal: u64,
    chunk: Option<Chunk>,
    ended: bool,
}

impl Iterator for Follow {
    type Item = Result<Kept, BoltError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.ended {
            if let Some(r) = self.chunk.as_mut().and_then(Iterator::next) {
                return Some(r.map_err(io));
            }
            self.chunk = None;
            let m = self.shared.wait_past(self.ordinal);
            if let Some(why) = &m.failed {
                self.ended = true;
                return Some(Err(BoltError::Io(why.clone())));
            }
            match &m.entries {
                Some(entries) if m.keys > self.ordinal => {
                    let count = m.keys - self.ordinal;
                    self.chunk = Some(Box::new(entries.try_iter_at(self.offset, count, 64 << 10)));
                    (self.offset, self.ordinal) = (m.offset, m.keys);
                }
                // Ended, and every entry read.
                _ => self.ended = true,
            }
        }
        None
    }
}

/// Sorts `run` by (key, revision) and spills it, leaving it empty.
fn spill_run(run: &mut Vec<Version>) -> Result<Spool<Version>, BoltError> {
    run.sort_by(|a, b| a.order().cmp(&b.order()));
    let mut w = SpoolWriter::new();
    for v in run.drain(..) {
        w.push(&v).map_err(io)?;
    }
    w.finish().map_err(io)
}

/// Merges sorted runs: each key's last version, unless it is a tombstone.
/// The heap holds each run's next version itself, so no key is copied.
fn merge(runs: Vec<Spool<Version>>, shared: &Shared) -> Result<(), BoltError> {
    let mut readers: Vec<_> = runs
        .iter()
        .map(|r| r.try_iter_at(0, r.len(), 64 << 10))
        .collect();
    let mut heap = BinaryHeap::with_capacity(readers.len());
    for (i, r) in readers.iter_mut().enumerate() {
        if let Some(v) = r.next().transpose().map_err(io)? {
            heap.push(Reverse(Head(v, i)));
        }
    }
    let mut out = Sorted::default();
    let mut last: Option<Version> = None;
    while let Some(Reverse(Head(v, i))) = heap.pop() {
        if shared.abandoned.load(Ordering::Relaxed) {
            return Err(BoltError::Io("the index was dropped".into()));
        }
        if let Some(n) = readers[i].next().transpose().map_err(io)? {
            heap.push(Reverse(Head(n, i)));
        }
        if let Some(prev) = last.take()
            && prev.key != v.key
        {
            out.emit(prev, shared)?;
        }
        last = Some(v);
    }
    if let Some(prev) = last {
        out.emit(prev, shared)?;
    }
    out.finish(shared)
}

/// A run's next version, ordered by (key, revision): runs are read in that
/// order, so the merge sees each key's versions oldest first.
struct Head(Version, usize);

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.0.order() == other.0.order()
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.order().cmp(&other.0.order())
    }
}

/// The merged output as it is written.
#[derive(Default)]
struct Sorted {
    out: SpoolWriter<Kept>,
}

impl Sorted {
    fn emit(&mut self, v: Version, shared: &Shared) -> Result<(), BoltError> {
        if v.tombstone {
            return Ok(());
        }
        if self.out.len().is_multiple_of(MARK_EVERY) {
            self.publish(&v.key, shared)?;
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
        Ok(())
    }

    /// Seals the file and hands the readers its last entries (the thread
    /// then says the merge is done).
    fn finish(self, shared: &Shared) -> Result<(), BoltError> {
        let (keys, offset) = (self.out.len(), self.out.offset());
        let entries = self.out.finish().map_err(io)?;
        let mut m = shared.lock();
        (m.keys, m.offset) = (keys, offset);
        m.entries = Some(entries);
        // A reader waiting past the last mark reads the rest now.
        shared.grew.notify_all();
        Ok(())
    }

    /// Flushes the entries so far, tells the readers, and marks `key` as
    /// the next entry's.
    fn publish(&mut self, key: &[u8], shared: &Shared) -> Result<(), BoltError> {
        let flushed = self.out.flushed().map_err(io)?;
        let offset = self.out.offset();
        let mut m = shared.lock();
        if m.entries.is_none() {
            m.entries = flushed;
        }
        let keys = self.out.len();
        (m.keys, m.offset) = (keys, offset);
        m.marks.push((key.to_vec(), offset, keys));
        shared.grew.notify_all();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn version(key: &str, main: i64, tombstone: bool) -> Version {
        Version {
            key: key.as_bytes().to_vec(),
            main,
            sub: 0,
            tombstone,
            value: format!("{key}@{main}").into_bytes(),
            create_revision: 1,
            version: 1,
            lease: 0,
        }
    }

    /// Runs as `build` spills them: each sorted by (key, revision).
    fn runs(versions: &[Version], per_run: usize) -> Vec<Spool<Version>> {
        versions
            .chunks(per_run)
            .map(|chunk| spill_run(&mut chunk.to_vec()).expect("spill"))
            .collect()
    }

    /// Several thousand keys written twice and some deleted, in revision
    /// order, as the `key` bucket holds them; and the keyspace they leave.
    fn history() -> (Vec<Version>, BTreeMap<Vec<u8>, i64>) {
        let mut versions = Vec::new();
        let mut model = BTreeMap::new();
        let mut rev = 1;
        for round in 0..3 {
            for i in 0..3000 {
                rev += 1;
                let key = format!("/k/{:05}", (i * 7919) % 3000);
                let dead = round == 2 && i % 5 == 0;
                versions.push(version(&key, rev, dead));
                if dead {
                    model.remove(key.as_bytes());
                } else {
                    model.insert(key.into_bytes(), rev);
                }
            }
        }
        (versions, model)
    }

    #[test]
    fn readers_that_follow_the_merge_see_every_live_key_once_in_order() {
        let (versions, model) = history();
        let index = Index::merging(runs(&versions, 700), std::time::Instant::now()).expect("merge");
        // Started at once, while the merge is writing: each reader must wait
        // for what is not yet merged, never end early.
        let starts: Vec<Vec<u8>> = ["", "/k/00000", "/k/01234", "/k/02999", "/k/3", "/l"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        std::thread::scope(|scope| {
            for start in &starts {
                let index = &index;
                let model = &model;
                scope.spawn(move || {
                    let got: Vec<(Vec<u8>, i64)> = index
                        .from(start)
                        .map(|r| r.map(|k| (k.key, k.mod_revision)).expect("read"))
                        .collect();
                    let want: Vec<(Vec<u8>, i64)> = model
                        .range(start.clone()..)
                        .map(|(k, r)| (k.clone(), *r))
                        .collect();
                    assert_eq!(got, want, "from {:?}", String::from_utf8_lossy(start));
                });
            }
        });
        assert_eq!(index.keys().expect("keys"), model.len() as u64);
        let all = index.estimate(b"", None).expect("estimate");
        assert_eq!(all, model.len() as u64);
        let part = index
            .estimate(b"/k/01000", Some(b"/k/02000"))
            .expect("estimate");
        let exact = model
            .range(b"/k/01000".to_vec()..b"/k/02000".to_vec())
            .count() as u64;
        assert!(part.abs_diff(exact) <= 2 * MARK_EVERY, "{part} vs {exact}");
    }

    /// The merge's writer driven by hand: a reader started first gets each
    /// entry only once it is flushed, and ends only when the merge is done.
    #[test]
    fn a_reader_waits_for_entries_not_yet_flushed_and_for_the_end() {
        let shared = Shared::new();
        let index = Index {
            shared: shared.clone(),
        };
        let total = 3 * MARK_EVERY + 17;
        let (tx, rx) = std::sync::mpsc::channel();
        // Waits for what must come are long (a loaded machine is slow);
        // a wait for what must not come is short, and can only pass.
        let long = std::time::Duration::from_secs(30);
        let short = std::time::Duration::from_millis(50);
        let quiet = |rx: &std::sync::mpsc::Receiver<Vec<u8>>| {
            matches!(
                rx.recv_timeout(short),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            )
        };
        std::thread::scope(|scope| {
            let index = &index;
            scope.spawn(move || {
                for kept in index.from(b"/k/") {
                    tx.send(kept.expect("read").key).expect("send");
                }
            });
            let mut out = Sorted::default();
            for i in 0..total {
                out.emit(
                    version(&format!("/k/{i:05}"), 10 + i as i64, false),
                    &shared,
                )
                .expect("emit");
                if i == MARK_EVERY + 3 {
                    // Published up to the last mark, not past it.
                    let seen: Vec<Vec<u8>> = (0..MARK_EVERY)
                        .map(|_| rx.recv_timeout(long).expect("the entries up to the mark"))
                        .collect();
                    assert_eq!(
                        seen.last(),
                        Some(&format!("/k/{:05}", MARK_EVERY - 1).into_bytes())
                    );
                    assert!(quiet(&rx), "an entry past the last mark was read");
                }
            }
            out.finish(&shared).expect("finish");
            // Everything flushed is read, but the reader still waits for the end.
            for _ in MARK_EVERY..total {
                rx.recv_timeout(long).expect("every flushed entry");
            }
            assert!(quiet(&rx), "the reader ended before the merge was done");
            let mut m = shared.lock();
            m.done = true;
            shared.grew.notify_all();
        });
        assert!(
            rx.recv().is_err(),
            "the reader ended once the merge was done"
        );
    }

    #[test]
    fn a_failed_merge_is_an_error_to_its_readers_not_an_early_end() {
        let (versions, _) = history();
        let index = Index::merging(runs(&versions, 700), std::time::Instant::now()).expect("merge");
        {
            let mut m = index.shared.lock();
            m.failed = Some("disk full".into());
            m.done = true;
        }
        assert!(index.from(b"").any(|r| r.is_err()));
        assert!(index.keys().is_err());
        assert!(index.estimate(b"", None).is_err());
    }

    #[test]
    fn values_are_each_keys_last_version() {
        let (versions, model) = history();
        let index =
            Index::merging(runs(&versions, 4096), std::time::Instant::now()).expect("merge");
        for kept in index.from(b"") {
            let kept = kept.expect("read");
            let rev = model[&kept.key];
            let key = String::from_utf8_lossy(&kept.key).into_owned();
            assert_eq!(kept.value, format!("{key}@{rev}").into_bytes());
        }
    }
}
