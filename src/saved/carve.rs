//! Reading a saved plan quickly, without holding it in memory.
//!
//! serde_json reading from a file goes through its reader a byte at a time
//! and copies every string: that was most of what `apply SAVED` did before
//! its first write. Instead the file is scanned once, in chunks, by a
//! scanner that knows only strings and nesting. Each entry of
//! `report.changes` and `report.source_deletes` is cut out, parsed on its
//! own from a slice (strings borrowed) and spilled. The rest (small) is kept
//! as a skeleton in which those two lists are empty, and serde parses it
//! whole. So serde still judges every byte; the scanner only decides where
//! each entry begins and ends, and refuses what it cannot place.

use std::io::Read;
use std::sync::mpsc::{Receiver, SyncSender};

use super::SavedPlan;
use super::verify::Verifier;
use crate::render::{
    ChangesBuilder, DeletesBuilder, JsonChange, JsonChanges, JsonSourceDelete, JsonSourceDeletes,
};

/// A read through the file: the skeleton and the two lists, where found,
/// and the verifier that checked their entries as they were read.
struct Carved {
    skeleton: Vec<u8>,
    changes: Option<JsonChanges>,
    source_deletes: Option<JsonSourceDeletes>,
    verifier: Option<Box<Verifier>>,
}

/// Given the document's head (all before the first carved list, closed
/// into a document of its own), a verifier for the entries that follow.
pub type OnHead<'a> = Box<dyn FnOnce(&[u8]) -> Option<Verifier> + 'a>;

/// The two lists that are carved out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    Changes,
    SourceDeletes,
}

impl List {
    pub fn name(self) -> &'static str {
        match self {
            List::Changes => "changes",
            List::SourceDeletes => "source_deletes",
        }
    }
}

#[derive(Debug)]
pub enum CarveError {
    Read(std::io::Error),
    /// An entry that does not parse, or does not make a change.
    Entry {
        list: List,
        index: u64,
        why: String,
    },
    /// Nesting or commas the scanner cannot place.
    Shape(&'static str),
    /// The spill file the entries go to.
    Spill(String),
    /// The document around the lists.
    Skeleton(serde_json::Error),
}

impl std::fmt::Display for CarveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CarveError::Read(e) => write!(f, "{e}"),
            CarveError::Entry { list, index, why } => {
                write!(f, "report.{}[{index}]: {why}", list.name())
            }
            CarveError::Shape(why) => f.write_str(why),
            CarveError::Spill(why) => write!(f, "cannot spill its entries: {why}"),
            // Its line numbers count the file without the lists' entries.
            CarveError::Skeleton(e) => write!(f, "{e} (not counting the lines of its changes)"),
        }
    }
}

/// What an open `{` or `[` is, as far as carving cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The document's own object.
    Top,
    /// The object under the top's `report`.
    Report,
    List(List),
    Other,
}

/// The member names that lead to a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Report,
    List(List),
    Other,
}

#[derive(Debug)]
struct Frame {
    object: bool,
    role: Role,
    /// The member whose value comes next (objects only).
    key: Key,
    want_key: bool,
}

/// Where the bytes being scanned go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Skeleton,
    Entry,
    /// Commas and blanks between entries.
    Gap,
}

/// Keys longer than this (raw) are none of ours, even spelled in escapes.
const KEY_CAP: usize = 256;
const CHUNK: usize = 256 << 10;

/// The bytes the scanner acts on outside strings.
static SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    let bytes = b"\"{}[],:";
    while i < bytes.len() {
        t[bytes[i] as usize] = true;
        i += 1;
    }
    t
};

struct Scanner<'a> {
    stack: Vec<Frame>,
    in_string: bool,
    escaped: bool,
    /// The raw bytes of a member name that may lead to a list.
    key_bytes: Option<Vec<u8>>,
    /// The name just read, waiting for its `:`.
    pending: Key,
    sink: Sink,
    seg: usize,
    skeleton: Vec<u8>,
    /// Entries cut but not yet handed to the parser.
    batch: Batch,
    /// An entry has begun since the last `[` or `,` of the list.
    entry_open: bool,
    /// A `,` was seen and no entry after it yet.
    after_comma: bool,
    to_parser: SyncSender<Msg>,
    /// Called once, when the first carved list opens.
    on_head: Option<OnHead<'a>>,
}

/// Entries of one list, back to back, with where each ends.
#[derive(Debug)]
struct Batch {
    list: List,
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

/// What the scanner hands the parser.
enum Msg {
    /// A list begins (so an empty one still counts as present).
    Open(List),
    Entries(Batch),
    /// Check the entries that follow with this.
    Verify(Box<Verifier>),
}

/// Entries go to the parser in batches of about this many bytes.
const BATCH: usize = 256 << 10;
/// Batches the scanner may run ahead of the parser.
const AHEAD: usize = 4;

/// Reads a saved plan: the skeleton parsed whole, the lists put in.
pub fn saved_plan(reader: impl Read) -> Result<SavedPlan, CarveError> {
    saved_plan_checked(reader, Box::new(|_| None)).map(|(saved, _)| saved)
}

/// [`saved_plan`], the entries checked as they are parsed by the verifier
/// `on_head` makes from the document's head (none: they are not). The
/// verifier has seen every entry when it is handed back.
pub fn saved_plan_checked(
    reader: impl Read,
    on_head: OnHead<'_>,
) -> Result<(SavedPlan, Option<Box<Verifier>>), CarveError> {
    let carved = carve(reader, on_head)?;
    let mut saved: SavedPlan =
        serde_json::from_slice(&carved.skeleton).map_err(CarveError::Skeleton)?;
    if let Some(changes) = carved.changes {
        saved.report.changes = changes;
    }
    if let Some(deletes) = carved.source_deletes {
        saved.report.source_deletes = deletes;
    }
    Ok((saved, carved.verifier))
}

/// Cuts a saved plan into its skeleton and its two lists, spilled. The
/// entries are parsed on a second thread while the scan goes on: before an
/// apply's first write nothing else runs, so both cores are free.
fn carve(reader: impl Read, on_head: OnHead<'_>) -> Result<Carved, CarveError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(AHEAD);
    std::thread::scope(|scope| {
        let parser = scope.spawn(move || parse(rx));
        let scanned = scan_all(reader, tx, on_head);
        let parsed = parser
            .join()
            .unwrap_or_else(|_| Err(CarveError::Spill("the parser thread failed".into())));
        // The parser stops at the first bad entry, and the scanner stops
        // when the parser does: its error comes first.
        let (changes, source_deletes, verifier) = parsed?;
        Ok(Carved {
            skeleton: scanned?,
            changes,
            source_deletes,
            verifier,
        })
    })
}

/// The scanner's side: returns the skeleton.
fn scan_all(
    mut reader: impl Read,
    to_parser: SyncSender<Msg>,
    on_head: OnHead<'_>,
) -> Result<Vec<u8>, CarveError> {
    let mut s = Scanner {
        stack: Vec::new(),
        in_string: false,
        escaped: false,
        key_bytes: None,
        pending: Key::Other,
        sink: Sink::Skeleton,
        seg: 0,
        skeleton: Vec::new(),
        batch: Batch::new(List::Changes),
        entry_open: false,
        after_comma: false,
        to_parser,
        on_head: Some(on_head),
    };
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CarveError::Read(e)),
        };
        s.scan(&chunk[..n])?;
    }
    if !s.stack.is_empty() || s.in_string {
        return Err(CarveError::Shape("the file ends inside the document"));
    }
    Ok(s.skeleton)
}

impl Batch {
    fn new(list: List) -> Batch {
        Batch {
            list,
            bytes: Vec::new(),
            ends: Vec::new(),
        }
    }
}

type Parsed = (
    Option<JsonChanges>,
    Option<JsonSourceDeletes>,
    Option<Box<Verifier>>,
);

/// The parser's side: each entry parsed from its slice and spilled.
fn parse(from_scanner: Receiver<Msg>) -> Result<Parsed, CarveError> {
    let mut changes: Option<ChangesBuilder> = None;
    let mut deletes: Option<DeletesBuilder> = None;
    let mut verifier: Option<Box<Verifier>> = None;
    let mut index = [0u64; 2];
    for msg in from_scanner {
        let batch = match msg {
            Msg::Verify(v) => {
                verifier = Some(v);
                continue;
            }
            Msg::Open(List::Changes) => {
                changes.get_or_insert_with(Default::default);
                continue;
            }
            Msg::Open(List::SourceDeletes) => {
                deletes.get_or_insert_with(Default::default);
                continue;
            }
            Msg::Entries(batch) => batch,
        };
        let list = batch.list;
        let mut start = 0;
        for &end in &batch.ends {
            let entry = &batch.bytes[start..end];
            start = end;
            let at = &mut index[list as usize];
            let bad = |why: String| CarveError::Entry {
                list,
                index: *at,
                why,
            };
            let done = match list {
                List::Changes => {
                    let c: JsonChange =
                        serde_json::from_slice(entry).map_err(|e| bad(e.to_string()))?;
                    changes
                        .get_or_insert_with(Default::default)
                        .push_with(c, |c| verifier.as_mut().map(|v| v.change(c)))
                }
                List::SourceDeletes => {
                    let d: JsonSourceDelete =
                        serde_json::from_slice(entry).map_err(|e| bad(e.to_string()))?;
                    deletes
                        .get_or_insert_with(Default::default)
                        .push_with(d, |d| verifier.as_mut().map(|v| v.source_delete(d)))
                }
            };
            done.map_err(bad)?;
            *at += 1;
        }
    }
    let spill = CarveError::Spill;
    Ok((
        changes
            .map(ChangesBuilder::finish)
            .transpose()
            .map_err(spill)?,
        deletes
            .map(DeletesBuilder::finish)
            .transpose()
            .map_err(spill)?,
        verifier,
    ))
}

impl Scanner<'_> {
    fn scan(&mut self, chunk: &[u8]) -> Result<(), CarveError> {
        self.seg = 0;
        let mut i = 0;
        while i < chunk.len() {
            if self.in_string {
                i = self.in_string_at(chunk, i);
                continue;
            }
            let b = chunk[i];
            let list = self.list_level();
            if !SPECIAL[b as usize] && (list.is_none() || self.entry_open) {
                // Blanks, digits, words: nothing to place. (Directly in a
                // list, before an entry, they begin one.)
                i += 1;
                while i < chunk.len() && !SPECIAL[chunk[i] as usize] {
                    i += 1;
                }
                continue;
            }
            if let Some(Role::List(list)) = list {
                self.between_entries(chunk, i, b, list)?;
            } else {
                self.structural(chunk, i, b)?;
            }
            i += 1;
        }
        self.flush(chunk, chunk.len());
        Ok(())
    }

    /// The role of the innermost frame when it is a list being carved and
    /// the scanner stands directly in it (not inside one of its entries).
    fn list_level(&self) -> Option<Role> {
        match self.stack.last() {
            Some(
                f @ Frame {
                    role: Role::List(_),
                    ..
                },
            ) => Some(f.role),
            _ => None,
        }
    }

    /// Inside a string from `i`: returns where scanning goes on.
    fn in_string_at(&mut self, chunk: &[u8], i: usize) -> usize {
        if self.escaped {
            self.escaped = false;
            self.keep_key(&chunk[i..i + 1]);
            return i + 1;
        }
        match memchr::memchr2(b'"', b'\\', &chunk[i..]) {
            None => {
                self.keep_key(&chunk[i..]);
                chunk.len()
            }
            Some(at) => {
                let j = i + at;
                self.keep_key(&chunk[i..j]);
                if chunk[j] == b'\\' {
                    self.escaped = true;
                    self.keep_key(&chunk[j..j + 1]);
                } else {
                    self.in_string = false;
                    self.name_read();
                }
                j + 1
            }
        }
    }

    fn keep_key(&mut self, bytes: &[u8]) {
        if let Some(k) = self.key_bytes.as_mut() {
            if k.len() + bytes.len() > KEY_CAP {
                self.key_bytes = None;
            } else {
                k.extend_from_slice(bytes);
            }
        }
    }

    /// A string ended: if it was a member name worth knowing, which.
    fn name_read(&mut self) {
        let Some(raw) = self.key_bytes.take() else {
            return;
        };
        let Some(frame) = self.stack.last() else {
            return;
        };
        let name = if raw.contains(&b'\\') {
            let mut quoted = Vec::with_capacity(raw.len() + 2);
            quoted.push(b'"');
            quoted.extend_from_slice(&raw);
            quoted.push(b'"');
            serde_json::from_slice::<String>(&quoted).map(String::into_bytes)
        } else {
            Ok(raw)
        };
        self.pending = match (frame.role, name.as_deref()) {
            (Role::Top, Ok(b"report")) => Key::Report,
            (Role::Report, Ok(b"changes")) => Key::List(List::Changes),
            (Role::Report, Ok(b"source_deletes")) => Key::List(List::SourceDeletes),
            _ => Key::Other,
        };
    }

    /// A byte outside strings and outside the lists' own level.
    fn structural(&mut self, chunk: &[u8], i: usize, b: u8) -> Result<(), CarveError> {
        match b {
            b'"' => {
                self.in_string = true;
                let named = self.stack.last().is_some_and(|f| {
                    f.object && f.want_key && matches!(f.role, Role::Top | Role::Report)
                });
                self.key_bytes = named.then(Vec::new);
            }
            b':' => {
                if let Some(f) = self.stack.last_mut() {
                    f.key = std::mem::replace(&mut self.pending, Key::Other);
                    f.want_key = false;
                }
            }
            b',' => {
                if let Some(f) = self.stack.last_mut() {
                    f.key = Key::Other;
                    f.want_key = f.object;
                }
            }
            b'{' | b'[' => self.open(chunk, i, b == b'{')?,
            b'}' | b']' => self.close(b == b'}')?,
            _ => {}
        }
        Ok(())
    }

    fn open(&mut self, chunk: &[u8], i: usize, object: bool) -> Result<(), CarveError> {
        let role = match self.stack.last() {
            None if object => Role::Top,
            Some(p) if p.object && !p.want_key => match (p.role, p.key, object) {
                (Role::Top, Key::Report, true) => Role::Report,
                (Role::Report, Key::List(list), false) => Role::List(list),
                _ => Role::Other,
            },
            _ => Role::Other,
        };
        self.stack.push(Frame {
            object,
            role,
            key: Key::Other,
            want_key: object,
        });
        if let Role::List(list) = role {
            // The `[` stays in the skeleton; the entries do not.
            self.switch(chunk, i + 1, Sink::Gap);
            self.entry_open = false;
            self.after_comma = false;
            self.batch = Batch::new(list);
            self.head_read()?;
            return self.send(Msg::Open(list));
        }
        Ok(())
    }

    /// At the first carved list: the skeleton so far, closed, is the
    /// document's head; a verifier made from it checks the entries.
    fn head_read(&mut self) -> Result<(), CarveError> {
        let Some(on_head) = self.on_head.take() else {
            return Ok(());
        };
        let mut head = self.skeleton.clone();
        head.extend(
            self.stack
                .iter()
                .rev()
                .map(|f| if f.object { b'}' } else { b']' }),
        );
        match on_head(&head) {
            Some(v) => self.send(Msg::Verify(Box::new(v))),
            None => Ok(()),
        }
    }

    fn close(&mut self, object: bool) -> Result<(), CarveError> {
        match self.stack.pop() {
            Some(f) if f.object == object => Ok(()),
            Some(_) => Err(CarveError::Shape("a `}` or `]` that closes the other kind")),
            None => Err(CarveError::Shape("a `}` or `]` that closes nothing")),
        }
    }

    /// A byte directly in a carved list: blanks, commas, its `]`, or the
    /// first byte of an entry.
    fn between_entries(
        &mut self,
        chunk: &[u8],
        i: usize,
        b: u8,
        list: List,
    ) -> Result<(), CarveError> {
        match b {
            b' ' | b'\t' | b'\n' | b'\r' if !self.entry_open => {}
            b',' | b']' => {
                if self.entry_open {
                    self.switch(chunk, i, Sink::Gap);
                    self.entry_done(list)?;
                } else if b == b',' || self.after_comma {
                    return Err(CarveError::Shape("an empty entry in a list"));
                }
                self.after_comma = b == b',';
                if b == b']' {
                    self.switch(chunk, i, Sink::Skeleton);
                    self.stack.pop();
                    self.send_batch()?;
                }
            }
            _ => {
                if !self.entry_open {
                    self.entry_open = true;
                    self.switch(chunk, i, Sink::Entry);
                }
                // The entry's own nesting and strings, scanned as any.
                self.structural(chunk, i, b)?;
            }
        }
        Ok(())
    }

    fn entry_done(&mut self, list: List) -> Result<(), CarveError> {
        self.entry_open = false;
        debug_assert_eq!(self.batch.list, list);
        self.batch.ends.push(self.batch.bytes.len());
        if self.batch.bytes.len() >= BATCH {
            self.send_batch()?;
        }
        Ok(())
    }

    fn send_batch(&mut self) -> Result<(), CarveError> {
        let list = self.batch.list;
        let full = std::mem::replace(&mut self.batch, Batch::new(list));
        if full.ends.is_empty() {
            return Ok(());
        }
        self.send(Msg::Entries(full))
    }

    /// A parser that has stopped has failed: its error is the one told.
    fn send(&self, msg: Msg) -> Result<(), CarveError> {
        self.to_parser
            .send(msg)
            .map_err(|_| CarveError::Spill("the parser stopped".into()))
    }

    /// Sends the bytes since the last switch to the current sink.
    fn flush(&mut self, chunk: &[u8], to: usize) {
        let bytes = &chunk[self.seg..to];
        match self.sink {
            Sink::Skeleton => self.skeleton.extend_from_slice(bytes),
            Sink::Entry => self.batch.bytes.extend_from_slice(bytes),
            Sink::Gap => {}
        }
        self.seg = to;
    }

    fn switch(&mut self, chunk: &[u8], at: usize, sink: Sink) {
        self.flush(chunk, at);
        self.sink = sink;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SHA: &str = "aff14bfebe3b60216f4c7be6f672526e815b0e960b2255b7d6fb5eb5bdc964ce";

    /// A saved plan whose keys hold the bytes a scanner could trip on.
    fn document() -> String {
        let change = |key: &str, extra: &str| {
            format!(
                r#"{{"action": "create", {key}, "source_key": "/s/x", "mapping": 0,
                    "sensitive": false, "value_sha256": "{SHA}", "value_size": 3,
                    "source_mod_revision": 7, "destination_mod_revision": null{extra}}}"#
            )
        };
        let changes = [
            change(r#""key": "/d/a\"],{}[\\""#, ""),
            change(r#""key_base64": "L2Qv/w==""#, ""),
            change(
                r#""key": "/d/\u005d\u0022""#,
                r#", "source_lease": "00000000000000ff", "lease_ttl": 30"#,
            ),
        ]
        .join(",\n      ");
        let delete = format!(
            r#"{{"source_key": "/s/{{[", "key": "/d/]}}", "mapping": 0, "mod_revision": 4, "value_sha256": "{SHA}"}}"#
        );
        format!(
            r#"{{
  "kind": "etcdplan-saved-plan", "saved_format_version": 3, "etcdplan_version": "0.1.0",
  "rep\u006frt": {{
    "format_version": "2",
    "plan": {{"name": "changes", "path": "p.yaml", "file_sha256": "{SHA}"}},
    "source": {{"cluster_id": "00000000000000aa", "revision": 9, "endpoints": ["http://[::1]:1"]}},
    "destination": {{"cluster_id": "00000000000000bb", "revision": 1, "endpoints": []}},
    "summary": {{"create": 3, "update": 0, "delete": 0, "conflict": 0, "unchanged": 0,
                 "delete_source": 1, "leased_skipped": 0}},
    "mappings": [{{"from": "/s/", "to": "/d/", "summary": {{"create": 3, "update": 0,
      "delete": 0, "conflict": 0, "unchanged": 0, "delete_source": 1, "leased_skipped": 0}}}}],
    "changes": [
      {changes}
    ],
    "source_deletes": [ {delete} ],
    "lease_mode": "preserve"
  }}
}}"#
        )
    }

    /// A reader that hands out `n` bytes at a time: every chunk boundary.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// What a reading comes to, lists and all, as one comparable string.
    fn outcome(saved: Result<SavedPlan, String>) -> Result<String, String> {
        let saved = saved?;
        let changes = &saved.report.changes;
        let tail = format!("{:?} {}", changes.lease_ttls, changes.largest_write);
        Ok(serde_json::to_string(&saved).map_err(|e| e.to_string())? + &tail)
    }

    fn carved(bytes: &[u8], step: usize) -> Result<String, String> {
        outcome(saved_plan(Trickle(bytes, step)).map_err(|e| e.to_string()))
    }

    /// serde_json over the whole document, as saved plans were read before.
    fn whole(bytes: &[u8]) -> Result<String, String> {
        outcome(serde_json::from_slice(bytes).map_err(|e| e.to_string()))
    }

    #[test]
    fn carving_reads_what_serde_reads_at_every_chunk_boundary() {
        let doc = document();
        let expected = whole(doc.as_bytes()).expect("the sample is a saved plan");
        assert!(expected.contains(r#"/d/a\"],{}[\\"#), "{expected}");
        assert!(expected.contains("\"source_deletes\":[{"), "{expected}");
        for step in [1, 2, 3, 7, 64, CHUNK] {
            assert_eq!(
                carved(doc.as_bytes(), step),
                Ok(expected.clone()),
                "step {step}"
            );
        }
        // Compact, members sorted (as `jq -cS` leaves it): read the same.
        let value: serde_json::Value = serde_json::from_str(&doc).unwrap();
        let compact = serde_json::to_string(&value).unwrap();
        assert_eq!(carved(compact.as_bytes(), 5), Ok(expected));
    }

    #[test]
    fn misplaced_commas_and_brackets_are_refused() {
        let doc = document();
        let entry_end = doc.find("null},\n").expect("two entries") + 5;
        let cases = [
            (
                "a missing comma",
                format!("{}{}", &doc[..entry_end], &doc[entry_end + 1..]),
            ),
            (
                "a doubled comma",
                format!("{},{}", &doc[..entry_end], &doc[entry_end..]),
            ),
            (
                "a trailing comma",
                doc.replace("30}\n    ],", "30},\n    ],"),
            ),
            (
                "a stray closer",
                doc.replace("\"changes\": [", "\"changes\": []]"),
            ),
            (
                "the other closer",
                doc.replace("30}\n    ],", "30}\n    },"),
            ),
            ("a second document", format!("{doc} {{}}")),
            (
                "an unknown action",
                doc.replacen("\"create\"", "\"make\"", 1),
            ),
        ];
        for (what, bad) in cases {
            assert_ne!(bad, doc, "{what}: the case changes nothing");
            assert!(carved(bad.as_bytes(), 4).is_err(), "{what} was accepted");
            assert!(whole(bad.as_bytes()).is_err(), "{what}: serde accepts it");
        }
    }

    #[test]
    fn an_entry_that_fails_is_named_by_its_place() {
        let first = format!("\"value_sha256\": \"{SHA}\"");
        let doc = document().replacen(&first, "\"value_sha256\": \"not hex\"", 1);
        let err = carved(doc.as_bytes(), CHUNK).unwrap_err();
        assert!(err.starts_with("report.changes[0]: "), "{err}");
    }

    proptest! {
        // Cut anywhere, or one byte changed to one a scanner acts on: the
        // carved reading never panics, and accepts exactly what serde
        // accepts, with the same result.
        #[test]
        fn carving_agrees_with_serde_on_damaged_documents(
            at in 0usize..2000,
            byte in prop::sample::select(b"\"\\{}[],: a0".to_vec()),
            cut in any::<bool>(),
        ) {
            let mut doc = document().into_bytes();
            let at = at % doc.len();
            if cut { doc.truncate(at) } else { doc[at] = byte }
            match (carved(&doc, 3), whole(&doc)) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "carved {:?}, serde {:?}", a, b),
            }
        }
    }
}
