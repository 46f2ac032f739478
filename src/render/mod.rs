//! Rendering a plan for people (text), pull requests (Markdown) and machines
//! (JSON). Renderers take the plan as plain data and never touch the
//! network. Sensitive values never reach them: the diff keeps no bytes for
//! display under a `sensitive` prefix, and every renderer shows a hash instead.

pub mod check;
pub mod follow;
mod json;
mod markdown;
pub mod outcome;
pub mod sections;
mod text;

pub use json::{
    ChangesBuilder, DeletesBuilder, JsonChange, JsonChanges, JsonPlan, JsonSourceDelete,
    JsonSourceDeletes, render_json, write_json,
};
pub use markdown::{MARKDOWN_LIMIT, render_markdown};
pub use text::{render_text, write_text};

use similar::{ChangeTag, TextDiff};

use crate::diff::{Action, Change, Value};
use crate::plan::PlanReport;
use crate::planfile::LeaseMode;

/// Output format of `plan`, `show`, `apply` and `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For terminals: a header, each change, a summary line.
    Text,
    /// For pull-request comments: tables and collapsible details.
    Markdown,
    /// For machines: one JSON object (see the README).
    Json,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Text, Format::Markdown, Format::Json];

    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Markdown => "markdown",
            Format::Json => "json",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("`{s}` is not one of text, markdown, json"))
    }
}

/// What a command tells the operator: stdout for the result, stderr for
/// findings and hints. Renderers build it; only the CLI prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Told {
    pub stdout: String,
    pub stderr: String,
}

impl Told {
    pub fn out(&mut self, line: &str) {
        self.stdout.push_str(line);
        self.stdout.push('\n');
    }
    pub fn err(&mut self, line: &str) {
        self.stderr.push_str(line);
        self.stderr.push('\n');
    }
}

/// A warning in words, with its key quoted by `quote` (a code span in
/// Markdown, backticks elsewhere).
pub fn warning_words(w: &crate::plan::Warning, quote: impl Fn(&str) -> String) -> String {
    use crate::plan::Warning;
    let from = quote(&crate::keys::display_key(w.from()));
    match w {
        Warning::EmptySource { .. } => format!(
            "no source key under {from}: this mapping changes nothing there (a typo in `from`?)"
        ),
        Warning::SourceMovedOn { planned, now, .. } => format!(
            "the source has changed under {from} since this plan was made at revision {planned} (it is at {now} now): the apply writes the values that were reviewed, read at revision {planned}; plan again to review the current ones"
        ),
    }
}

/// A warning as a line of text.
pub fn warning_text(w: &crate::plan::Warning) -> String {
    format!("warning: {}", warning_words(w, |k| format!("`{k}`")))
}

/// A finding that is not an error of etcdplan's (a stale plan, keys too
/// large): its code, what happened, and what to do, shaped like the
/// diagnostics so that one grep finds both.
pub fn finding(code: &str, message: &str, help: &str) -> String {
    format!("{code}\n\n  × {message}\n  help: {help}\n")
}

/// Options shared by the renderers.
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions<'a> {
    pub color: bool,
    /// List at most this many changes (the summary always counts all).
    pub max_listed: Option<usize>,
    /// Where the plan is saved, for the command that lists what a budget left out.
    pub saved_as: Option<&'a str>,
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Keys listed at most in the "cannot be written" warning.
const TOO_LARGE_LISTED: usize = 50;

/// The warning about keys no request can carry under the destination's
/// limit, and one line per key (at most [`TOO_LARGE_LISTED`], then a count).
pub fn too_large_warning(report: &PlanReport) -> Option<(String, Vec<String>)> {
    let keys: Vec<Change> = report.too_large(report.max_request_bytes);
    if keys.is_empty() {
        return None;
    }
    let head = format!(
        "Cannot be written: {} key(s) need a request larger than the destination's limit of {} bytes (--max-request-bytes), even alone in a transaction. Apply refuses this plan before writing anything; raise the limit on the destination etcd and here, or exclude these keys:",
        thousands(keys.len() as u64),
        thousands(report.max_request_bytes as u64)
    );
    let mut lines: Vec<String> = keys
        .iter()
        .take(TOO_LARGE_LISTED)
        .map(|c| {
            format!(
                "{} ({} bytes)",
                crate::keys::display_key(&c.key),
                thousands(c.source.as_ref().map_or(0, |v| v.size) as u64)
            )
        })
        .collect();
    if keys.len() > TOO_LARGE_LISTED {
        lines.push(format!(
            "… and {} more",
            thousands((keys.len() - TOO_LARGE_LISTED) as u64)
        ));
    }
    Some((head, lines))
}

/// The summary line: `Plan: 3 to create, 1 to update, 0 to delete, 4,211
/// unchanged.`, with an undo's source restores counted too.
pub fn summary_line(report: &PlanReport) -> String {
    let s = &report.summary;
    let restores = report.undo.as_ref().map_or(0, |u| u.restores.len() as u64);
    if !s.has_work() && s.conflict == 0 && restores == 0 {
        if s.leased_skipped > 0 {
            return format!(
                "No changes. The destination matches the source, except {} leased key(s) skipped (leases: skip).",
                thousands(s.leased_skipped)
            );
        }
        return "No changes. The destination matches the source.".to_string();
    }
    let skipped = if s.leased_skipped > 0 {
        format!(", {} leased skipped", thousands(s.leased_skipped))
    } else {
        String::new()
    };
    let moved = if s.delete_source > 0 {
        format!(", {} to delete from source", thousands(s.delete_source))
    } else {
        String::new()
    };
    let restored = if restores > 0 {
        format!(", {} to put back on the source", thousands(restores))
    } else {
        String::new()
    };
    let conflicts = if s.conflict > 0 {
        format!(", {} conflicting left as is", thousands(s.conflict))
    } else {
        String::new()
    };
    format!(
        "Plan: {} to create, {} to update, {} to delete{conflicts}, {} unchanged{skipped}{moved}{restored}.",
        thousands(s.create),
        thousands(s.update),
        thousands(s.delete),
        thousands(s.unchanged)
    )
}

/// A short hash for people: the first 12 hex digits of a hex string, or
/// the string escaped when it is not hex (a saved plan is untrusted).
pub fn short_hex(hex: &str) -> String {
    if hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex[..12].to_string()
    } else {
        crate::escape::text(hex)
    }
}

/// How a value is described when its bytes are not shown. A sensitive value
/// gets no digest at all: even a short one confirms an offline guess.
pub fn opaque(v: &Value) -> String {
    match &v.sha256 {
        Some(sha) => format!(
            "({} bytes, sha256 {}…)",
            thousands(v.size as u64),
            short_hex(&hex::encode(sha))
        ),
        None => format!("({} bytes)", thousands(v.size as u64)),
    }
}

/// One line of a value diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffLine {
    Context(String),
    Removed(String),
    Added(String),
    /// A hunk header or an elision note.
    Note(String),
}

/// Most lines of one value diff before the rest is elided.
const MAX_DIFF_LINES: usize = 200;

/// The value diff of an update or conflict, or `None` when there are no
/// shown bytes (a create, a delete, a sensitive or too large value).
pub fn value_diff(change: &Change) -> Option<Vec<DiffLine>> {
    if change.sensitive || !matches!(change.action, Action::Update | Action::Conflict) {
        return None;
    }
    let (old_value, new_value) = (change.destination.as_ref()?, change.source.as_ref()?);
    let old = old_value.shown.as_ref()?;
    let new = new_value.shown.as_ref()?;
    let (old, new) = (as_lines(old), as_lines(new));
    let diff = TextDiff::from_lines(&old, &new);
    let mut lines = Vec::new();
    for group in diff.grouped_ops(3) {
        let (first, last) = (group.first()?, group.last()?);
        lines.push(DiffLine::Note(format!(
            "@@ -{},{} +{},{} @@",
            first.old_range().start + 1,
            last.old_range().end - first.old_range().start,
            first.new_range().start + 1,
            last.new_range().end - first.new_range().start
        )));
        for op in &group {
            for change in diff.iter_changes(op) {
                let text = change.value().trim_end_matches('\n').to_string();
                lines.push(match change.tag() {
                    ChangeTag::Equal => DiffLine::Context(text),
                    ChangeTag::Delete => DiffLine::Removed(text),
                    ChangeTag::Insert => DiffLine::Added(text),
                });
            }
        }
    }
    // Pretty-printed JSON can hide what differs (key order, spacing,
    // duplicate keys): say so rather than show an empty diff.
    if lines.is_empty() {
        lines.push(DiffLine::Note(format!(
            "the bytes differ, but not in this view (JSON key order, spacing or duplicate keys): {} → {}",
            opaque(old_value),
            opaque(new_value)
        )));
    }
    if lines.len() > MAX_DIFF_LINES {
        let more = lines.len() - MAX_DIFF_LINES;
        lines.truncate(MAX_DIFF_LINES);
        lines.push(DiffLine::Note(format!("… {more} more diff lines elided")));
    }
    Some(lines)
}

/// A value as diffable lines: JSON pretty-printed, other UTF-8 text as is,
/// binary as a hex dump.
fn as_lines(bytes: &[u8]) -> String {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(text)
            && (json.is_object() || json.is_array())
        {
            return crate::escape::to_json_string_pretty(&json) + "\n";
        }
        if !text
            .chars()
            .any(|c| crate::escape::is_hidden(c) && c != '\n' && c != '\t')
        {
            let mut t = text.to_string();
            if !t.ends_with('\n') {
                t.push('\n');
            }
            return t;
        }
    }
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&format!("{:08x}  {}\n", i * 16, hex.join(" ")));
    }
    out
}

/// What a leased change does with its lease, per `leases:`.
pub fn lease_note(report: &PlanReport, change: &Change) -> Option<String> {
    let lease = change.source.as_ref()?.lease;
    if lease == 0 || !change.action.writes() {
        return None;
    }
    match report.lease_mode {
        LeaseMode::Preserve => Some(match report.lease_ttls.get(&lease) {
            Some(&ttl) if ttl > 0 => format!("(lease {lease:016x}, {ttl} s left)"),
            _ => format!("(lease {lease:016x} expired: not written)"),
        }),
        LeaseMode::Drop => Some(format!(
            "(lease {lease:016x} dropped: written without a lease)"
        )),
        LeaseMode::Skip => None,
    }
}

/// Everything to say after a change's key, besides its value diff.
pub fn notes(report: &PlanReport, change: &Change) -> Option<String> {
    let notes: Vec<String> = [change_note(change), lease_note(report, change)]
        .into_iter()
        .flatten()
        .collect();
    (!notes.is_empty()).then(|| notes.join("  "))
}

/// What to say after a change's key, besides its value diff.
pub fn change_note(change: &Change) -> Option<String> {
    let (old, new) = (change.destination.as_ref(), change.source.as_ref());
    match change.action {
        Action::Create => None,
        Action::Delete => change.sensitive.then(|| "(sensitive value)".to_string()),
        Action::Update | Action::Conflict => {
            let (old, new) = (old?, new?);
            let prefix = if change.action == Action::Conflict {
                "differs, left as is (on_conflict: keep) "
            } else {
                ""
            };
            if change.sensitive {
                return Some(format!("{prefix}(sensitive, changed)"));
            }
            if value_diff(change).is_some() {
                return (change.action == Action::Conflict).then(|| prefix.trim_end().to_string());
            }
            Some(format!("{prefix}{} → {}", opaque(old), opaque(new)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(4211), "4,211");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    fn update(old: Option<Vec<u8>>, new: Option<Vec<u8>>, sensitive: bool) -> Change {
        let value = |shown: Option<Vec<u8>>, size: usize, byte: u8| Value {
            sha256: Some([byte; 32]),
            size,
            mod_revision: 1,
            lease: 0,
            shown,
        };
        Change {
            action: Action::Update,
            mapping: 0,
            key: b"/k".to_vec(),
            source_key: b"/k".to_vec(),
            sensitive,
            source: Some(value(new, 100_000, 0xbb)),
            destination: Some(value(old, 99_000, 0xaa)),
            payload: None,
        }
    }

    #[test]
    fn long_values_are_elided_with_their_sizes() {
        // Values over the display limit are not kept, so only sizes show.
        let c = update(None, None, false);
        assert_eq!(value_diff(&c), None);
        assert_eq!(
            change_note(&c).as_deref(),
            Some("(99,000 bytes, sha256 aaaaaaaaaaaa…) → (100,000 bytes, sha256 bbbbbbbbbbbb…)")
        );
    }

    #[test]
    fn sensitive_updates_show_no_digest() {
        let c = update(
            Some(b"old-secret".to_vec()),
            Some(b"new-secret".to_vec()),
            true,
        );
        assert_eq!(value_diff(&c), None);
        let note = change_note(&c).unwrap_or_default();
        assert_eq!(note, "(sensitive, changed)");
    }

    #[test]
    fn json_values_diff_line_by_line() {
        let c = update(
            Some(br#"{"a":1,"b":[1,2],"c":"x"}"#.to_vec()),
            Some(br#"{"a":1,"b":[1,3],"c":"x"}"#.to_vec()),
            false,
        );
        let lines = value_diff(&c).unwrap_or_default();
        assert!(
            lines.contains(&DiffLine::Removed("    2".into())),
            "{lines:?}"
        );
        assert!(
            lines.contains(&DiffLine::Added("    3".into())),
            "{lines:?}"
        );
        assert!(
            lines.contains(&DiffLine::Context("  \"a\": 1,".into())),
            "{lines:?}"
        );
    }

    #[test]
    fn json_that_differs_only_in_its_bytes_says_so() {
        for (old, new) in [
            (r#"{"a":1,"b":2}"#, r#"{"b":2,"a":1}"#),
            (r#"{"a":1}"#, r#"{ "a" : 1 }"#),
            (r#"{"a":1,"a":1}"#, r#"{"a":1}"#),
        ] {
            let c = update(
                Some(old.as_bytes().to_vec()),
                Some(new.as_bytes().to_vec()),
                false,
            );
            let lines = value_diff(&c).unwrap_or_default();
            assert!(
                matches!(&lines[..], [DiffLine::Note(n)] if n.starts_with("the bytes differ, but not in this view")),
                "{old} → {new}: {lines:?}"
            );
        }
    }

    #[test]
    fn binary_values_are_hex() {
        assert_eq!(as_lines(&[0, 1, 0xff]), "00000000  00 01 ff\n");
    }

    #[test]
    fn hidden_characters_in_values_never_reach_the_diff() {
        // Text with a bidi control is shown as hex; JSON strings keep `\u`.
        assert!(as_lines("a\u{202e}b".as_bytes()).starts_with("00000000  61 e2 80 ae 62"));
        let json = as_lines(br#"{"a":"x\u202ey\u001b"}"#);
        assert!(json.contains(r"x\u202ey\u001b"), "{json}");
    }

    #[test]
    fn non_hex_digests_never_panic() {
        assert_eq!(short_hex("é".repeat(20).as_str()), "é".repeat(20));
        assert_eq!(short_hex("0123456789abcdef"), "0123456789ab");
    }
}
