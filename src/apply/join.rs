//! A saved plan's values, read by one parallel scan per dense mapping and
//! joined with its changes in key order, instead of one source read per
//! batch (measured: the per-batch reads cost the source about three times
//! the CPU of one scan). The join only ever attaches a value the scan read
//! at the plan's revision and that the change's digest (or mod revision)
//! names; whatever it cannot prove (a key out of order, a changed value, a
//! scan that stopped) goes on without a value, and the writer reads it
//! batch by batch as before, with that path's checks.
//!
//! A scan starts at its mapping's first change and is sized by the source
//! keys the plan writes next, not by a first page: etcd counts a first
//! page's whole range (about 30 ms at 100,000 keys, a few tenths of a
//! second at 1,000,000, all of it the source's CPU), and the first write
//! waited for that count.

use std::collections::VecDeque;
use std::iter::Peekable;
use std::sync::atomic::AtomicU64;

use tokio::sync::mpsc;

use super::write::ValueSource;
use crate::diff::{Action, Change};
use crate::etcd::parallel::{FEEDING_READERS, Sample, Scan, scan_parallel_sampled};
use crate::etcd::{Entry, KeyRange, PageLimits, Pin};

/// Where the scans come from: the value source, and each mapping's source
/// prefix (`None` where the mapping is sparse, so its batches read instead).
pub struct Scans {
    runtime: tokio::runtime::Handle,
    values: ValueSource,
    prefixes: Vec<Option<Vec<u8>>>,
}

impl Scans {
    /// Scans for the dense mappings of `values`, `from[m]` being mapping
    /// `m`'s source prefix. None when no mapping is dense, or the source
    /// cannot read at a revision (etcd v2).
    pub fn new(values: &ValueSource, from: Vec<Vec<u8>>) -> Option<Scans> {
        if values.revision <= 0 || values.side.v2().ok()?.is_some() {
            return None;
        }
        let prefixes: Vec<Option<Vec<u8>>> = from
            .into_iter()
            .enumerate()
            .map(|(m, p)| values.dense.get(m).copied().unwrap_or(false).then_some(p))
            .collect();
        prefixes.iter().any(Option::is_some).then(|| Scans {
            runtime: tokio::runtime::Handle::current(),
            values: values.clone(),
            prefixes,
        })
    }

    /// Starts the scan of `mapping`'s source range from `first`'s source
    /// key, when the mapping is dense, its pieces sized by the `sample` of
    /// source keys it writes next.
    fn start(&self, first: &Change, sample: impl FnOnce() -> Sample) -> Option<Joined> {
        let mapping = first.mapping;
        let prefix = self.prefixes.get(mapping)?.clone()?;
        let mut range = KeyRange::prefix(&prefix);
        // The changes come in key order: no key before the first is wanted.
        if first.source_key > range.start {
            range.start.clone_from(&first.source_key);
        }
        let sample = sample();
        let (tx, mut rx) = mpsc::channel(2);
        let (side, revision) = (self.values.side.clone(), self.values.revision);
        self.runtime.spawn(async move {
            let counted = AtomicU64::new(0);
            let pin = Pin::at(revision);
            let scan = Scan {
                range: &range,
                pin: &pin,
                limits: PageLimits::default(),
                readers: FEEDING_READERS,
            };
            let scanned = scan_parallel_sampled(&side, scan, sample, &counted, &tx).await;
            if let Err(e) = scanned {
                tracing::warn!(
                    error = %e,
                    "the scan of a saved plan's source values stopped; the rest are read batch by batch"
                );
            }
        });
        tracing::debug!(
            mapping,
            revision,
            "saved values: one scan of the source range, not a read per batch"
        );
        let pages: Box<dyn Iterator<Item = Entry> + Send> =
            Box::new(std::iter::from_fn(move || rx.blocking_recv()).flatten());
        Some(Joined {
            mapping,
            entries: pages.peekable(),
        })
    }
}

/// Source keys a mapping's scan is sized by: enough for the density of
/// its first pieces, few enough to hold back.
const SAMPLE_KEYS: usize = 256;

/// The changes of a spill that write, the next few held back on demand: a
/// mapping's values scan sizes its pieces from the source keys the mapping
/// writes next, instead of from a first page whose count walks the source's
/// whole range.
pub struct Ahead<I> {
    changes: I,
    held: VecDeque<std::io::Result<Change>>,
}

impl<I: Iterator<Item = std::io::Result<Change>>> Ahead<I> {
    pub fn new(changes: I) -> Ahead<I> {
        Ahead {
            changes,
            held: VecDeque::new(),
        }
    }

    fn pull(&mut self) -> Option<std::io::Result<Change>> {
        self.changes
            .by_ref()
            .find(|c| c.as_ref().map_or(true, |c| c.action.writes()))
    }

    /// `first`'s source key and those of the next changes of its mapping
    /// that write a value, up to [`SAMPLE_KEYS`], with their mean size.
    pub fn sample(&mut self, first: &Change) -> Sample {
        let held_bytes = |c: &Change| c.source_key.len() + c.source.as_ref().map_or(0, |v| v.size);
        let (mut keys, mut bytes) = (vec![first.source_key.clone()], held_bytes(first));
        let mut at = 0;
        while keys.len() < SAMPLE_KEYS {
            if at == self.held.len() {
                match self.pull() {
                    Some(c) => self.held.push_back(c),
                    None => break,
                }
            }
            match &self.held[at] {
                Ok(c) if c.mapping == first.mapping => {
                    if c.action != Action::Delete {
                        bytes += held_bytes(c);
                        keys.push(c.source_key.clone());
                    }
                }
                _ => break,
            }
            at += 1;
        }
        Sample {
            entry_bytes: bytes / keys.len(),
            keys,
        }
    }
}

impl<I: Iterator<Item = std::io::Result<Change>>> Iterator for Ahead<I> {
    type Item = std::io::Result<Change>;

    fn next(&mut self) -> Option<Self::Item> {
        self.held.pop_front().or_else(|| self.pull())
    }
}

/// The scan of one mapping, consumed in key order from a blocking thread.
struct Joined {
    mapping: usize,
    entries: Peekable<Box<dyn Iterator<Item = Entry> + Send>>,
}

impl Joined {
    /// The value the scan read for `change`'s source key, when it is the
    /// one the plan recorded.
    fn value_for(&mut self, change: &Change) -> Option<Vec<u8>> {
        let planned = change.source.as_ref()?;
        while self
            .entries
            .next_if(|e| e.key < change.source_key)
            .is_some()
        {}
        let entry = self.entries.next_if(|e| e.key == change.source_key)?;
        planned.held_by(&entry).then_some(entry.value)
    }
}

/// Joins changes (in the spill's order) with their mappings' scans, one
/// mapping's scan at a time; dropping a scan's receiver ends it. Each
/// mapping is scanned at most once, so a saved plan whose mappings take
/// turns costs no scan per turn: the later turns read batch by batch.
#[derive(Default)]
pub struct Joiner {
    current: Option<Joined>,
    started: std::collections::BTreeSet<usize>,
}

impl Joiner {
    /// The value for `change`, when a scan holds it; a scan that starts is
    /// sized by `sample` (the keys its mapping writes next).
    pub fn value_for(
        &mut self,
        scans: &Scans,
        change: &Change,
        sample: impl FnOnce() -> Sample,
    ) -> Option<Vec<u8>> {
        if change.action == Action::Delete {
            return None;
        }
        if self.current.as_ref().map(|j| j.mapping) != Some(change.mapping) {
            self.current = None;
            if self.started.insert(change.mapping) {
                self.current = scans.start(change, sample);
            }
        }
        self.current.as_mut()?.value_for(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::{Value, digest};

    fn entry(key: &str, value: &str, rev: i64) -> Entry {
        Entry {
            key: key.into(),
            value: value.into(),
            mod_revision: rev,
            create_revision: rev,
            lease: 0,
        }
    }

    fn change(key: &str, value: &str, rev: i64, sha: bool) -> Change {
        Change {
            action: Action::Create,
            mapping: 0,
            key: key.into(),
            source_key: key.into(),
            sensitive: !sha,
            source: Some(Value {
                sha256: sha.then(|| digest(value.as_bytes())),
                size: value.len(),
                mod_revision: rev,
                lease: 0,
                shown: None,
            }),
            destination: None,
            payload: None,
        }
    }

    fn joined(entries: Vec<Entry>) -> Joined {
        let it: Box<dyn Iterator<Item = Entry> + Send> = Box::new(entries.into_iter());
        Joined {
            mapping: 0,
            entries: it.peekable(),
        }
    }

    #[test]
    fn only_the_planned_value_of_the_same_key_is_attached() {
        let mut j = joined(vec![
            entry("/a", "one", 5),
            entry("/b", "two", 6),
            entry("/c", "changed", 7),
            entry("/d", "four", 8),
            entry("/f", "six", 9),
        ]);
        // By digest, skipping keys the plan does not write.
        assert_eq!(
            j.value_for(&change("/b", "two", 6, true)),
            Some(b"two".to_vec())
        );
        // A value other than the planned one: left to the batch read.
        assert_eq!(j.value_for(&change("/c", "three", 7, true)), None);
        // A sensitive key: by mod revision.
        assert_eq!(j.value_for(&change("/d", "x", 3, false)), None);
        // A key the scan does not hold: nothing, and the scan goes on.
        assert_eq!(j.value_for(&change("/e", "five", 9, true)), None);
        assert_eq!(
            j.value_for(&change("/f", "six", 9, false)),
            Some(b"six".to_vec())
        );
        // Out of order (behind the scan) or past its end: nothing.
        assert_eq!(j.value_for(&change("/a", "one", 5, true)), None);
        assert_eq!(j.value_for(&change("/g", "seven", 10, true)), None);
    }

    #[test]
    fn a_change_without_a_planned_source_value_gets_none() {
        let mut j = joined(vec![entry("/a", "one", 5)]);
        let mut c = change("/a", "one", 5, true);
        c.source = None;
        assert_eq!(j.value_for(&c), None);
    }

    #[test]
    fn the_look_ahead_samples_its_mapping_and_hands_every_change_on() {
        let mut changes = Vec::new();
        for i in 0..300 {
            let mut c = change(&format!("/a/{i:03}"), "vvvv", 1, true);
            c.action = match i % 3 {
                0 => Action::Create,
                1 => Action::Conflict,
                _ => Action::Delete,
            };
            changes.push(c);
        }
        let mut other = change("/b/0", "v", 1, true);
        other.mapping = 1;
        changes.push(other);
        let keys: Vec<Vec<u8>> = changes.iter().map(|c| c.key.clone()).collect();
        let mut ahead = Ahead::new(changes.into_iter().map(Ok));
        let first = ahead.next().and_then(Result::ok).expect("a first change");
        let sample = ahead.sample(&first);
        // The first, then the creates after it (no delete, no conflict),
        // not past the mapping's end.
        assert_eq!(sample.keys.len(), 100);
        assert_eq!(sample.keys[0], b"/a/000");
        assert_eq!(sample.keys[1], b"/a/003");
        assert_eq!(sample.keys[99], b"/a/297");
        // The mean of a source key with its value.
        assert_eq!(sample.entry_bytes, 6 + 4);
        // Held back, not lost: conflicts are dropped as before.
        let rest: Vec<Vec<u8>> = ahead.map(|c| c.expect("change").key).collect();
        let wanted: Vec<Vec<u8>> = keys
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i == 300 || i % 3 != 1)
            .skip(1)
            .map(|(_, k)| k)
            .collect();
        assert_eq!(rest, wanted);
    }

    #[test]
    fn a_sample_stops_at_its_size() {
        let changes = (0..1000).map(|i| Ok(change(&format!("/k/{i:04}"), "v", 1, true)));
        let mut ahead = Ahead::new(changes);
        let first = ahead.next().and_then(Result::ok).expect("a first change");
        assert_eq!(ahead.sample(&first).keys.len(), SAMPLE_KEYS);
        assert_eq!(ahead.count(), 999);
    }
}
