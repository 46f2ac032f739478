//! Every typing problem of a plan file in one run. serde stops at the first
//! unknown field or bad value, so after each one the offending entry is
//! blanked (its bytes turned to spaces, so that every offset still points
//! into the original text) and the file is read again. What the blanking
//! itself causes (a required field now missing, a parent now empty) is not
//! reported.

use super::Problem;
use super::raw::RawPlan;

/// At most this many problems are collected from one file.
const MAX_PROBLEMS: usize = 50;

/// The problems after which reading can go on without the entry.
const REPAIRABLE: [&str; 4] = [
    "etcdplan::plan_file::unknown_field",
    "etcdplan::plan_file::bad_value",
    "etcdplan::plan_file::wrong_type",
    "etcdplan::plan_file::duplicate_key",
];

/// Reads `text` as a [`RawPlan`], collecting every typing problem: the plan
/// as read with the bad entries blanked (for the rule checks to run on), or
/// `None` when reading had to stop, and the problems.
/// `problem` turns a serde error into a problem whose span is an offset
/// into the (equally long) text it was given.
pub fn read_all(
    text: &str,
    read: impl Fn(&str) -> Result<RawPlan, serde_saphyr::Error>,
    problem: impl Fn(&serde_saphyr::Error, &str) -> Problem,
) -> (Option<RawPlan>, Vec<Problem>) {
    let mut work = text.to_string();
    let mut problems: Vec<Problem> = Vec::new();
    let mut blanked = Blanked::default();
    loop {
        let err = match read(&work) {
            Ok(raw) => return (Some(raw), problems),
            Err(e) => e,
        };
        let p = problem(&err, &work);
        let offset = p.offset();
        let missing = p.code == "etcdplan::plan_file::missing_field";
        let caused = blanked.caused(&work, offset, &err.to_string(), missing);
        if !caused {
            problems.push(p.clone());
        }
        // A missing field cannot be blanked away: reading stops there.
        let go_on = !missing && (caused || REPAIRABLE.contains(&p.code));
        let next = match offset {
            Some(at) if go_on && problems.len() < MAX_PROBLEMS => blanked.entry(&mut work, at),
            _ => false,
        };
        if !next {
            if problems.is_empty() {
                problems.push(p);
            }
            return (None, problems);
        }
    }
}

/// What has been blanked so far: the keys, and the lines whose entries were
/// emptied by it.
#[derive(Default)]
struct Blanked {
    keys: Vec<String>,
    /// (first line start, end) byte ranges that were blanked.
    ranges: Vec<(usize, usize)>,
    /// Line starts of the parents of blanked entries.
    parents: Vec<usize>,
}

impl Blanked {
    /// Whether an error at `offset` comes from an earlier blanking rather
    /// than from the file: a missing field that was blanked, or a problem
    /// inside or at the parent of a blanked entry.
    fn caused(&self, work: &str, offset: Option<usize>, message: &str, missing: bool) -> bool {
        if missing {
            return self
                .keys
                .iter()
                .any(|k| message.contains(&format!("missing field `{k}`")));
        }
        let Some(at) = offset else {
            return false;
        };
        let line = line_start(work, at);
        self.parents.contains(&line) || self.ranges.iter().any(|&(s, e)| at >= s && at < e)
    }

    /// Blanks the entry at `offset`: its line (the key's, walking up from a
    /// value on a line of its own) and every deeper-indented line after it.
    /// Returns false when there is nothing left to blank there.
    fn entry(&mut self, work: &mut String, offset: usize) -> bool {
        let mut start = line_start(work, offset);
        let mut line = line_at(work, start);
        if !is_entry(line) {
            match parent(work, start) {
                Some(p) => {
                    start = p;
                    line = line_at(work, p);
                }
                None => return false,
            }
        }
        if line.trim().is_empty() {
            return false;
        }
        let indent = indent_of(line);
        let mut end = start + line.len();
        while end < work.len() {
            let next = line_at(work, end);
            let blank = next.trim().is_empty() || next.trim_start().starts_with('#');
            if !blank && indent_of(next) <= indent {
                break;
            }
            end += next.len();
        }
        if let Some(key) = key_of(line) {
            self.keys.push(key);
        }
        if let Some(p) = parent(work, start) {
            self.parents.push(p);
        }
        self.ranges.push((start, end));
        // Spaces for every byte but line ends: offsets stay valid.
        let blanked: String = work[start..end]
            .chars()
            .flat_map(|c| {
                let n = if c == '\n' { 0 } else { c.len_utf8() };
                std::iter::repeat_n(' ', n).chain((c == '\n').then_some('\n'))
            })
            .collect();
        work.replace_range(start..end, &blanked);
        true
    }
}

fn line_start(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text[..offset].rfind('\n').map_or(0, |i| i + 1)
}

/// The line starting at `start`, with its `\n`.
fn line_at(text: &str, start: usize) -> &str {
    let rest = &text[start.min(text.len())..];
    rest.find('\n').map_or(rest, |i| &rest[..=i])
}

/// Leading spaces, counting a sequence dash as indentation of its entry.
fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// A line that holds a whole entry: `key: …` or `- …`.
fn is_entry(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("- ") || t.trim_end() == "-" || key_of(line).is_some()
}

/// The key of a `key: value` line (or of `- key: value`).
fn key_of(line: &str) -> Option<String> {
    let t = line.trim_start().trim_start_matches("- ").trim_start();
    let (key, _) = t.split_once(':')?;
    let key = key.trim().trim_matches(['"', '\'']);
    (!key.is_empty() && !key.contains([' ', '{', '[', ','])).then(|| key.to_string())
}

/// The start of the nearest line above `start` that is indented less.
fn parent(text: &str, start: usize) -> Option<usize> {
    let indent = indent_of(line_at(text, start));
    let mut at = start;
    while at > 0 {
        let prev = line_start(text, at - 1);
        let line = line_at(text, prev);
        if !line.trim().is_empty()
            && !line.trim_start().starts_with('#')
            && indent_of(line) < indent
        {
            return Some(prev);
        }
        at = prev;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blanking_keeps_offsets_and_takes_nested_lines() {
        let mut text = "a: 1\nbad:\n  x: 1\n  y: 2\nc: 3\n".to_string();
        let len = text.len();
        let mut b = Blanked::default();
        assert!(b.entry(&mut text, 6));
        assert_eq!(text.len(), len);
        assert_eq!(text, "a: 1\n    \n      \n      \nc: 3\n");
        assert_eq!(b.keys, vec!["bad".to_string()]);
    }

    #[test]
    fn a_value_on_its_own_line_blanks_its_key() {
        let mut text = "top:\n  list:\n    - 5\n  other: 1\n".to_string();
        let mut b = Blanked::default();
        // The `- 5` item is an entry itself.
        let at = text.find("- 5").unwrap_or(0);
        assert!(b.entry(&mut text, at));
        assert_eq!(text, "top:\n  list:\n       \n  other: 1\n");
        assert!(b.caused(&text, text.find("list"), "invalid type: null", false));
    }
}
