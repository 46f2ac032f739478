//! Key bytes and how they are written in plan files and shown to people.
//!
//! etcd keys are arbitrary bytes, but YAML strings are Unicode. A key prefix in
//! a plan file is therefore read as UTF-8 text with two escapes:
//!
//! - `\xNN` (two hex digits) stands for the single byte `0xNN`;
//! - `\\` stands for one backslash.
//!
//! Any other backslash is an error, so a typo never silently becomes a
//! different key. Write such prefixes in plain or single-quoted YAML scalars
//! (`from: '/app/\xff/'`): in a double-quoted scalar YAML itself would read
//! `\x` first. The same form is used whenever a key is shown.

use std::fmt::Write as _;

/// How many keys a list shows before "… and N more".
pub const LISTED: usize = 20;

/// Keys as data (raw bytes), in the order found. Shown, escaped and cut to
/// the first [`LISTED`], only when displayed: one key per indented line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyList(pub Vec<Vec<u8>>);

impl KeyList {
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn push(&mut self, key: Vec<u8>) {
        self.0.push(key);
    }
    pub fn extend(&mut self, other: KeyList) {
        self.0.extend(other.0);
    }
    pub fn iter(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.0.iter()
    }
    /// Every key in its shown form, for JSON.
    pub fn shown(&self) -> Vec<String> {
        self.0.iter().map(|k| display_key(k)).collect()
    }
}

/// Keys with their sizes in bytes, shown like [`KeyList`] with the size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SizedKeyList(pub Vec<(Vec<u8>, u64)>);

impl std::fmt::Display for SizedKeyList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines = self
            .0
            .iter()
            .map(|(k, size)| format!("  {} ({size} bytes)", display_key(k)));
        write_listed(f, lines, self.0.len())
    }
}

impl From<Vec<Vec<u8>>> for KeyList {
    fn from(keys: Vec<Vec<u8>>) -> Self {
        KeyList(keys)
    }
}

impl serde::Serialize for KeyList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|k| display_key(k)))
    }
}

impl std::fmt::Display for KeyList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines = self.0.iter().map(|k| format!("  {}", display_key(k)));
        write_listed(f, lines, self.0.len())
    }
}

/// The first [`LISTED`] of `lines`, one per line, then how many more of
/// `total` there are.
fn write_listed(
    f: &mut std::fmt::Formatter<'_>,
    lines: impl Iterator<Item = String>,
    total: usize,
) -> std::fmt::Result {
    let shown: Vec<String> = lines.take(LISTED).collect();
    f.write_str(&shown.join("\n"))?;
    if total > LISTED {
        write!(f, "\n  … and {} more", total - LISTED)?;
    }
    Ok(())
}

/// Decodes a prefix written in a plan file into key bytes.
pub fn parse_key(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') => {
                let hex = bytes.get(i + 2..i + 4).ok_or_else(|| {
                    format!("`\\x` at character {} needs two hex digits after it", i + 1)
                })?;
                let hex = std::str::from_utf8(hex).map_err(|_| {
                    format!("`\\x` at character {} needs two hex digits after it", i + 1)
                })?;
                let byte = u8::from_str_radix(hex, 16).map_err(|_| {
                    format!("`\\x{hex}` at character {} is not two hex digits", i + 1)
                })?;
                out.push(byte);
                i += 4;
            }
            Some(&other) => {
                return Err(format!(
                    "unknown escape `\\{}` at character {}: only `\\xNN` (a byte) and `\\\\` (a backslash) are allowed",
                    char::from(other),
                    i + 1
                ));
            }
            None => return Err("a lone `\\` ends the key: write `\\\\` for a backslash".into()),
        }
    }
    Ok(out)
}

/// Shows key bytes in the plan-file form: readable UTF-8 where possible,
/// `\xNN` for bytes that are not printable text, `\\` for a backslash.
pub fn display_key(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len());
    for chunk in key.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if crate::escape::is_hidden(c) => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// The first key after every key that starts with `prefix`: the `range_end`
/// etcd wants for a prefix scan. `None` means "to the end of the keyspace"
/// (etcd spells that as `\0`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Whether the key ranges of two prefixes share any key.
pub fn prefixes_overlap(a: &[u8], b: &[u8]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

#[cfg(test)]
mod tests {

    #[test]
    fn key_lists_show_the_first_twenty_keys_escaped_then_a_count() {
        let list = KeyList(
            (0..25)
                .map(|i| format!("/k/{i}\x01").into_bytes())
                .collect(),
        );
        let shown = list.to_string();
        assert_eq!(shown.lines().count(), 21, "{shown}");
        assert!(shown.starts_with("  /k/0\\x01"), "{shown}");
        assert!(shown.ends_with("  … and 5 more"), "{shown}");
        let sized = SizedKeyList(vec![(b"/big".to_vec(), 2_000_000)]);
        assert_eq!(sized.to_string(), "  /big (2000000 bytes)");
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_round_trip() {
        assert_eq!(parse_key(r"/a/\xff/\\b").unwrap(), b"/a/\xff/\\b".to_vec());
        assert_eq!(display_key(b"/a/\xff/\\b"), r"/a/\xff/\\b");
        assert_eq!(display_key("/ü/\n".as_bytes()), r"/ü/\x0a");
        assert_eq!(
            display_key("/bidi\u{202e}gpj".as_bytes()),
            r"/bidi\xe2\x80\xaegpj"
        );
        assert_eq!(
            display_key("/\u{feff}\u{200b}".as_bytes()),
            r"/\xef\xbb\xbf\xe2\x80\x8b"
        );
    }

    #[test]
    fn bad_escapes_are_errors() {
        assert!(parse_key(r"/a\n").unwrap_err().contains("unknown escape"));
        assert!(parse_key(r"/a\x4").unwrap_err().contains("two hex digits"));
        assert!(
            parse_key(r"/a\xzz")
                .unwrap_err()
                .contains("not two hex digits")
        );
        assert!(parse_key("/a\\").unwrap_err().contains("lone"));
    }

    #[test]
    fn prefix_end_handles_ff() {
        assert_eq!(prefix_end(b"/a/"), Some(b"/a0".to_vec()));
        assert_eq!(prefix_end(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(key in proptest::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(parse_key(&display_key(&key)).unwrap(), key);
        }

        #[test]
        fn displayed_keys_hide_nothing(key in any::<String>(), bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            for k in [key.as_bytes(), &bytes[..]] {
                let shown = display_key(k);
                prop_assert!(shown.chars().all(|c| !crate::escape::is_hidden(c)));
                prop_assert_eq!(parse_key(&shown).unwrap(), k.to_vec());
            }
        }

        #[test]
        fn prefix_end_bounds_the_prefix(prefix in proptest::collection::vec(any::<u8>(), 1..8), suffix in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut key = prefix.clone();
            key.extend_from_slice(&suffix);
            match prefix_end(&prefix) {
                Some(end) => prop_assert!(key < end && prefix <= key),
                None => prop_assert!(prefix.iter().all(|&b| b == 0xff)),
            }
        }
    }
}
