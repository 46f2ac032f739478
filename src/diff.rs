//! The diff, as plain data: a pure function from the source and destination
//! key streams of one mapping (each in key order) to the changes that make the
//! destination match. No I/O happens here; one merge pass, so memory holds
//! only the changes, never the unchanged keys.

use std::cmp::Ordering;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::etcd::Entry;
use crate::planfile::{Mapping, OnConflict};

/// The sha256 of a value, as changes record it.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// What a change does to a destination key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Only in the source: written.
    Create,
    /// In both with different values: overwritten (`on_conflict: overwrite`).
    Update,
    /// Only in the destination, and `prune: true`: deleted.
    Delete,
    /// In both with different values and `on_conflict` keep or fail: not written.
    Conflict,
}

impl Action {
    /// Whether applying the change writes to the destination.
    pub fn writes(self) -> bool {
        !matches!(self, Action::Conflict)
    }

    pub fn symbol(self) -> char {
        match self {
            Action::Create => '+',
            Action::Update => '~',
            Action::Delete => '-',
            Action::Conflict => '!',
        }
    }
}

/// One side's value of a changed key.
// Byte fields go through `serde_bytes`, so the spill file (postcard) copies
// them whole instead of encoding and decoding them one byte at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Value {
    /// `None`: not recorded. A saved plan keeps no digest of a sensitive
    /// value (it would confirm a guess); its mod revision identifies it.
    #[serde(with = "serde_bytes")]
    pub sha256: Option<[u8; 32]>,
    pub size: usize,
    pub mod_revision: i64,
    pub lease: i64,
    /// The bytes, kept only for displaying a value diff and never for
    /// sensitive keys.
    #[serde(with = "serde_bytes")]
    pub shown: Option<Vec<u8>>,
}

impl Value {
    pub fn sha256_hex(&self) -> Option<String> {
        self.sha256.map(hex::encode)
    }

    /// Whether `entry` holds this value: by digest where one is recorded,
    /// else by mod revision (a key's mod revision names one value exactly).
    pub fn held_by(&self, entry: &Entry) -> bool {
        match &self.sha256 {
            Some(sha) => digest(&entry.value) == *sha,
            None => entry.mod_revision == self.mod_revision,
        }
    }
}

/// One change to one destination key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Change {
    pub action: Action,
    /// Index of the plan's mapping this change belongs to.
    pub mapping: usize,
    /// The destination key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The source key it comes from (for a delete: the key it would come from).
    #[serde(with = "serde_bytes")]
    pub source_key: Vec<u8>,
    /// Under a `sensitive` prefix: its values are never shown.
    pub sensitive: bool,
    /// The source's value (create, update, conflict).
    pub source: Option<Value>,
    /// The destination's current value (update, delete, conflict).
    pub destination: Option<Value>,
    /// The bytes to write, kept only when the caller applies the changes.
    #[serde(with = "serde_bytes")]
    pub payload: Option<Vec<u8>>,
}

impl Change {
    /// The request bytes this change's write needs (0 for one that writes
    /// nothing).
    pub fn write_bytes(&self) -> usize {
        use crate::etcd::write::request_bytes;
        match self.action {
            Action::Create | Action::Update => {
                request_bytes(self.key.len(), self.source.as_ref().map_or(0, |v| v.size))
            }
            Action::Delete => request_bytes(self.key.len(), 0),
            Action::Conflict => 0,
        }
    }
}

/// Move mode: a source key to delete once the destination holds its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SourceDelete {
    pub mapping: usize,
    #[serde(with = "serde_bytes")]
    pub source_key: Vec<u8>,
    /// Where the value lives on the destination.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Under a `sensitive` prefix: no digest leaves the process.
    #[serde(default)]
    pub sensitive: bool,
    /// The key's mod revision at the planned source revision: the guard.
    pub mod_revision: i64,
    /// The value's sha256, checked on the destination before deleting;
    /// `None` for a sensitive key from a saved plan (the bytes are compared
    /// with the source's instead).
    #[serde(with = "serde_bytes")]
    pub sha256: Option<[u8; 32]>,
}

/// Counts of one diff.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Summary {
    pub create: u64,
    pub update: u64,
    pub delete: u64,
    pub conflict: u64,
    pub unchanged: u64,
    /// Move mode: source keys to delete after the copy.
    #[serde(default)]
    pub delete_source: u64,
    /// `leases: skip`: leased source keys left out on both sides.
    #[serde(default)]
    pub leased_skipped: u64,
}

impl Summary {
    pub fn add(&mut self, other: &Summary) {
        self.create += other.create;
        self.update += other.update;
        self.delete += other.delete;
        self.conflict += other.conflict;
        self.unchanged += other.unchanged;
        self.delete_source += other.delete_source;
        self.leased_skipped += other.leased_skipped;
    }

    /// Changes that write to the destination.
    pub fn writes(&self) -> u64 {
        self.create + self.update + self.delete
    }

    /// Whether applying would write anything, on either side.
    pub fn has_work(&self) -> bool {
        self.writes() + self.delete_source > 0
    }

    /// Counts one change of `action`.
    pub fn count(&mut self, action: Action) {
        match action {
            Action::Create => self.create += 1,
            Action::Update => self.update += 1,
            Action::Delete => self.delete += 1,
            Action::Conflict => self.conflict += 1,
        }
    }
}

/// What the diff needs besides the two streams.
#[derive(Debug, Clone)]
pub struct DiffOptions<'a> {
    pub prune: bool,
    pub on_conflict: OnConflict,
    /// Source prefixes whose values are never kept for display.
    pub sensitive: &'a [Vec<u8>],
    /// Keep values up to this size for displaying value diffs (0: none).
    pub shown_limit: usize,
    /// Keep the bytes to write (for apply).
    pub keep_payload: bool,
    /// Move mode: list the source keys to delete after the copy.
    pub move_source: bool,
    /// `true` for `leases: skip`: leased source keys are left alone on both sides.
    pub skip_leased: bool,
}

/// The changes of one mapping, and its counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub changes: Vec<Change>,
    /// Move mode only.
    pub source_deletes: Vec<SourceDelete>,
    pub summary: Summary,
}

/// Diffs one mapping: `source` holds keys under `from`, `destination` keys
/// under `to`, each in key order. Excluded keys are dropped on both sides.
pub fn diff(
    index: usize,
    mapping: &Mapping,
    source: impl IntoIterator<Item = Entry>,
    destination: impl IntoIterator<Item = Entry>,
    options: &DiffOptions<'_>,
) -> Diff {
    let mut changes = Vec::new();
    let mut source_deletes = Vec::new();
    let summary = diff_into(
        index,
        mapping,
        source,
        destination,
        options,
        |c| changes.push(c),
        |d| source_deletes.push(d),
    );
    Diff {
        changes,
        source_deletes,
        summary,
    }
}

/// Like [`diff`], handing each change to `sink` and, in move mode, each
/// source key to delete to `moved`, as they are found.
pub fn diff_into(
    index: usize,
    mapping: &Mapping,
    source: impl IntoIterator<Item = Entry>,
    destination: impl IntoIterator<Item = Entry>,
    options: &DiffOptions<'_>,
    mut sink: impl FnMut(Change),
    mut moved: impl FnMut(SourceDelete),
) -> Summary {
    // Replacing a common prefix keeps key order, so the mapped stream is sorted.
    let mut src = source
        .into_iter()
        .filter(|e| e.key.starts_with(&mapping.from) && !mapping.excludes_source(&e.key))
        .map(|mut e| {
            let source_key = std::mem::take(&mut e.key);
            e.key = mapping.to_destination(&source_key).unwrap_or_default();
            (source_key, e)
        })
        .peekable();
    let mut dst = destination
        .into_iter()
        .filter(|e| e.key.starts_with(&mapping.to) && !mapping.excludes_destination(&e.key))
        .peekable();
    let mut differ = Differ {
        index,
        mapping,
        options,
        summary: Summary::default(),
    };
    loop {
        let order = match (src.peek(), dst.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((_, s)), Some(d)) => s.key.cmp(&d.key),
        };
        let (s, d) = match order {
            Ordering::Less => (src.next(), None),
            Ordering::Greater => (None, dst.next()),
            Ordering::Equal => (src.next(), dst.next()),
        };
        let (change, delete) = match (s, d) {
            (Some((source_key, s)), None) => differ.only_source(source_key, s),
            (None, Some(d)) => (differ.only_destination(d), None),
            (Some((source_key, s)), Some(d)) => differ.both(source_key, s, d),
            (None, None) => break,
        };
        if let Some(d) = delete {
            moved(d);
        }
        if let Some(c) = change {
            sink(c);
        }
    }
    differ.summary
}

/// One mapping's diff in progress: what each pairing of keys becomes.
struct Differ<'a> {
    index: usize,
    mapping: &'a Mapping,
    options: &'a DiffOptions<'a>,
    summary: Summary,
}

impl Differ<'_> {
    /// A sensitive prefix covers a key on either side: the source key, or
    /// the destination key it is written to (or deleted from).
    fn sensitive(&self, source_key: &[u8], key: &[u8]) -> bool {
        self.options
            .sensitive
            .iter()
            .any(|p| source_key.starts_with(p) || key.starts_with(p))
    }

    /// Values are kept for display only where a value diff is shown: on
    /// both sides of an update or a conflict, never a create or a delete.
    fn value(&self, e: &Entry, is_sensitive: bool, show: bool) -> Value {
        let limit = self.options.shown_limit;
        Value {
            sha256: Some(digest(&e.value)),
            size: e.value.len(),
            mod_revision: e.mod_revision,
            lease: e.lease,
            shown: (show && !is_sensitive && limit > 0 && e.value.len() <= limit)
                .then(|| e.value.clone()),
        }
    }

    /// A key only the source holds: a create (and in move mode its delete).
    fn only_source(
        &mut self,
        source_key: Vec<u8>,
        s: Entry,
    ) -> (Option<Change>, Option<SourceDelete>) {
        if self.options.skip_leased && s.lease != 0 {
            self.summary.leased_skipped += 1;
            return (None, None);
        }
        let is_sensitive = self.sensitive(&source_key, &s.key);
        self.summary.count(Action::Create);
        let delete = self.options.move_source.then(|| {
            self.summary.delete_source += 1;
            source_delete(self.index, &source_key, &s, is_sensitive)
        });
        let source = Some(self.value(&s, is_sensitive, false));
        // The entry ends here: its bytes move into the payload, not a copy.
        let payload = self.options.keep_payload.then_some(s.value);
        let change = Change {
            action: Action::Create,
            mapping: self.index,
            source,
            destination: None,
            payload,
            key: s.key,
            source_key,
            sensitive: is_sensitive,
        };
        (Some(change), delete)
    }

    /// A key only the destination holds: a delete with `prune`, else not
    /// ours to touch (neither counted as a change nor as unchanged).
    fn only_destination(&mut self, d: Entry) -> Option<Change> {
        if !self.options.prune {
            return None;
        }
        let source_key = self.mapping.to_source(&d.key).unwrap_or_default();
        let is_sensitive = self.sensitive(&source_key, &d.key);
        self.summary.count(Action::Delete);
        Some(Change {
            action: Action::Delete,
            mapping: self.index,
            source: None,
            destination: Some(self.value(&d, is_sensitive, false)),
            payload: None,
            key: d.key,
            source_key,
            sensitive: is_sensitive,
        })
    }

    /// A key both sides hold: unchanged, an update, or a conflict.
    fn both(
        &mut self,
        source_key: Vec<u8>,
        s: Entry,
        d: Entry,
    ) -> (Option<Change>, Option<SourceDelete>) {
        if self.options.skip_leased && s.lease != 0 {
            // Left alone on both sides, like an exclusion.
            self.summary.leased_skipped += 1;
            return (None, None);
        }
        let action = (s.value != d.value).then_some(match self.options.on_conflict {
            OnConflict::Overwrite => Action::Update,
            OnConflict::Keep | OnConflict::Fail => Action::Conflict,
        });
        // Move mode: what ends up on the destination leaves the source; a
        // conflict left as is stays on both.
        let is_sensitive = self.sensitive(&source_key, &s.key);
        let delete = (self.options.move_source && action != Some(Action::Conflict)).then(|| {
            self.summary.delete_source += 1;
            source_delete(self.index, &source_key, &s, is_sensitive)
        });
        let Some(action) = action else {
            self.summary.unchanged += 1;
            return (None, delete);
        };
        self.summary.count(action);
        let source = Some(self.value(&s, is_sensitive, true));
        let destination = Some(self.value(&d, is_sensitive, true));
        let payload = (self.options.keep_payload && action.writes()).then_some(s.value);
        let change = Change {
            action,
            mapping: self.index,
            source,
            destination,
            payload,
            key: s.key,
            source_key,
            sensitive: is_sensitive,
        };
        (Some(change), delete)
    }
}

/// Move mode: the source key behind `entry` (already mapped to its
/// destination key), guarded by its mod revision at the planned revision.
fn source_delete(
    mapping: usize,
    source_key: &[u8],
    entry: &Entry,
    sensitive: bool,
) -> SourceDelete {
    SourceDelete {
        mapping,
        source_key: source_key.to_vec(),
        key: entry.key.clone(),
        sensitive,
        mod_revision: entry.mod_revision,
        sha256: Some(digest(&entry.value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn entries(map: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<Entry> {
        map.iter()
            .enumerate()
            .map(|(i, (k, v))| Entry {
                key: k.clone(),
                value: v.clone(),
                mod_revision: i as i64 + 1,
                create_revision: 1,
                lease: 0,
            })
            .collect()
    }

    fn options(prune: bool, on_conflict: OnConflict) -> DiffOptions<'static> {
        DiffOptions {
            prune,
            on_conflict,
            sensitive: &[],
            shown_limit: 1024,
            keep_payload: true,
            move_source: false,
            skip_leased: false,
        }
    }

    fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
        // Few distinct bytes, so source and destination keys collide often.
        (
            prop_oneof![
                Just(b"/s/".to_vec()),
                Just(b"/d/".to_vec()),
                Just(b"/s/x/".to_vec())
            ],
            proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(0xff)], 0..3),
        )
            .prop_map(|(mut p, s)| {
                p.extend(s);
                p
            })
    }

    fn map_strategy() -> impl Strategy<Value = BTreeMap<Vec<u8>, Vec<u8>>> {
        proptest::collection::btree_map(
            key_strategy(),
            proptest::collection::vec(prop_oneof![Just(b'1'), Just(b'2')], 0..2),
            0..12,
        )
    }

    proptest! {
        /// Applying the changes to an in-memory destination makes the mapped
        /// range equal to the mapped source, and touches nothing else.
        #[test]
        fn applying_the_diff_converges(src in map_strategy(), dst in map_strategy(), prune: bool, exclude: bool) {
            let mapping = Mapping {
                from: b"/s/".to_vec(),
                to: b"/d/".to_vec(),
                exclude: if exclude { vec![b"/s/x/".to_vec()] } else { vec![] },
            };
            let d = diff(0, &mapping, entries(&src), entries(&dst), &options(prune, OnConflict::Overwrite));
            let mut after = dst.clone();
            let mut seen = std::collections::HashSet::new();
            for c in &d.changes {
                prop_assert!(seen.insert(c.key.clone()), "no key twice");
                prop_assert_eq!(mapping.to_source(&c.key), Some(c.source_key.clone()));
                match c.action {
                    Action::Create | Action::Update => { after.insert(c.key.clone(), c.payload.clone().unwrap()); }
                    Action::Delete => { after.remove(&c.key); }
                    Action::Conflict => prop_assert!(false, "overwrite never conflicts"),
                }
            }
            let in_scope = |k: &Vec<u8>| k.starts_with(b"/d/") && !(exclude && k.starts_with(b"/d/x/"));
            let expected: BTreeMap<_, _> = src.iter()
                .filter(|(k, _)| k.starts_with(b"/s/") && !(exclude && k.starts_with(b"/s/x/")))
                .map(|(k, v)| (mapping.to_destination(k).unwrap(), v.clone()))
                .collect();
            let got: BTreeMap<_, _> = after.iter().filter(|(k, _)| in_scope(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
            if prune {
                prop_assert_eq!(&got, &expected);
            } else {
                for (k, v) in &expected { prop_assert_eq!(got.get(k), Some(v)); }
            }
            // Out of scope keys are untouched.
            for (k, v) in &dst {
                if !in_scope(k) { prop_assert_eq!(after.get(k), Some(v)); }
            }
            // A second diff after applying finds nothing to write.
            let again = diff(0, &mapping, entries(&src), entries(&after), &options(prune, OnConflict::Overwrite));
            prop_assert_eq!(again.summary.writes(), 0);
            prop_assert_eq!(again.summary.unchanged, expected.len() as u64);
        }

        /// Move mode: after the writes and the source deletes, nothing in
        /// scope is left on the source, and every deleted source value is on
        /// the destination; a conflict left as is stays on both sides.
        #[test]
        fn moving_empties_the_source_range(src in map_strategy(), dst in map_strategy(), keep: bool) {
            let mapping = Mapping { from: b"/s/".to_vec(), to: b"/d/".to_vec(), exclude: vec![b"/s/x/".to_vec()] };
            let on_conflict = if keep { OnConflict::Keep } else { OnConflict::Overwrite };
            let opts = DiffOptions { move_source: true, ..options(false, on_conflict) };
            let d = diff(0, &mapping, entries(&src), entries(&dst), &opts);
            let mut dest = dst.clone();
            for c in &d.changes {
                if let Some(p) = &c.payload { dest.insert(c.key.clone(), p.clone()); }
            }
            let mut source = src.clone();
            for m in &d.source_deletes {
                let value = source.remove(&m.source_key);
                prop_assert!(value.is_some(), "only existing source keys are deleted");
                let on_dest = dest.get(&m.key).map(|v| digest(v));
                prop_assert_eq!(on_dest, m.sha256, "deleted only where the destination holds it");
            }
            prop_assert_eq!(d.summary.delete_source, d.source_deletes.len() as u64);
            for k in source.keys() {
                let in_scope = k.starts_with(b"/s/") && !k.starts_with(b"/s/x/");
                if in_scope {
                    let conflict = d.changes.iter().any(|c| c.action == Action::Conflict && &c.source_key == k);
                    prop_assert!(conflict, "a source key in scope stays only as a conflict");
                }
            }
        }

        /// keep and fail never write over a differing value.
        #[test]
        fn conflicts_are_never_writes(src in map_strategy(), dst in map_strategy()) {
            let mapping = Mapping { from: b"/s/".to_vec(), to: b"/d/".to_vec(), exclude: vec![] };
            let d = diff(0, &mapping, entries(&src), entries(&dst), &options(false, OnConflict::Keep));
            for c in &d.changes {
                if let Some(existing) = dst.get(&c.key) {
                    prop_assert_eq!(c.action, Action::Conflict);
                    prop_assert!(c.payload.is_none());
                    prop_assert_ne!(Some(existing), src.get(&c.source_key));
                }
            }
        }
    }

    #[test]
    fn sensitive_values_are_never_kept_for_display() {
        let mapping = Mapping {
            from: b"/s/".to_vec(),
            to: b"/s/".to_vec(),
            exclude: vec![],
        };
        let sensitive = vec![b"/s/secret/".to_vec()];
        let src = [(b"/s/secret/a".to_vec(), b"new".to_vec())]
            .into_iter()
            .collect();
        let dst = [(b"/s/secret/a".to_vec(), b"old".to_vec())]
            .into_iter()
            .collect();
        let d = diff(
            0,
            &mapping,
            entries(&src),
            entries(&dst),
            &DiffOptions {
                sensitive: &sensitive,
                ..options(false, OnConflict::Overwrite)
            },
        );
        let c = &d.changes[0];
        assert!(c.sensitive);
        assert_eq!(c.source.as_ref().and_then(|v| v.shown.clone()), None);
        assert_eq!(c.destination.as_ref().and_then(|v| v.shown.clone()), None);
        assert_eq!(c.payload.as_deref(), Some(&b"new"[..]));
    }
}
