//! Strings from outside (keys, values, names, paths, server messages) on
//! their way to a person: one function per output kind, so that nothing a
//! plan file, a saved plan, the source data or a server controls can move
//! the cursor, forge a line, reorder text or hide itself.
//!
//! - [`text`]: a terminal or a log. Characters that do not show as
//!   themselves become `\u{…}`, and `\` becomes `\\`, so the escape is
//!   unambiguous.
//! - [`markdown_code`]: a pull-request comment, as inline code that no
//!   backtick, pipe or newline can leave.
//! - JSON: [`JsonEscaper`], a `serde_json` formatter that writes the same
//!   characters as `\u` escapes.
//!
//! Keys have their own plan-file form ([`crate::keys::display_key`]), which
//! escapes the same characters as `\xNN` bytes so that it can be pasted back
//! into a plan file; it uses [`is_hidden`] too.

use std::fmt::Write as _;

/// Whether a character does not show as itself: controls (C0, DEL, C1),
/// format characters (bidi controls, zero-width characters, the BOM, tag
/// characters), line and paragraph separators, and blank fillers.
pub fn is_hidden(c: char) -> bool {
    if c.is_control() {
        return true;
    }
    matches!(
        c as u32,
        0x00AD
            | 0x034F
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x2028..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// A string for a terminal or a log: hidden characters as `\u{…}`, a
/// backslash as `\\`, everything else as it is.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if is_hidden(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// A string as Markdown inline code: escaped by [`text`] (so it holds no
/// newline), `|` escaped for tables, and fenced by more backticks than any
/// run inside it.
pub fn markdown_code(s: &str) -> String {
    code_span(&text(s))
}

/// Inline code around text that is already free of hidden characters (a
/// key in its plan-file form).
pub fn code_span(escaped: &str) -> String {
    let longest = longest_run(escaped, '`');
    let ticks = "`".repeat(longest + 1);
    let pad = if escaped.starts_with('`') || escaped.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{ticks}{pad}{}{pad}{ticks}", escaped.replace('|', "\\|"))
}

/// The longest run of `c` in `text`.
pub fn longest_run(text: &str, c: char) -> usize {
    let (mut best, mut run) = (0, 0);
    for ch in text.chars() {
        run = if ch == c { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

/// A `serde_json` formatter that writes hidden characters (beyond the C0
/// controls serde_json already escapes) as `\u` escapes, so that raw C1,
/// bidi or invisible characters never reach a tool that shows the JSON.
pub struct JsonEscaper<F>(pub F);

impl JsonEscaper<serde_json::ser::PrettyFormatter<'static>> {
    pub fn pretty() -> Self {
        JsonEscaper(serde_json::ser::PrettyFormatter::new())
    }
}

impl JsonEscaper<serde_json::ser::CompactFormatter> {
    pub fn compact() -> Self {
        JsonEscaper(serde_json::ser::CompactFormatter)
    }
}

impl<F: serde_json::ser::Formatter> serde_json::ser::Formatter for JsonEscaper<F> {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if is_hidden(c) {
                writer.write_all(&fragment.as_bytes()[start..i])?;
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
                start = i + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    // Everything else is the wrapped formatter's.
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn end_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object_key(w)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object_value(w)
    }
}

/// Serialises `value` as pretty JSON through [`JsonEscaper`].
pub fn to_json_writer_pretty<W: std::io::Write, T: serde::Serialize + ?Sized>(
    writer: W,
    value: &T,
) -> serde_json::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(writer, JsonEscaper::pretty());
    value.serialize(&mut ser)
}

/// Serialises `value` as one line of JSON through [`JsonEscaper`].
pub fn to_json_string<T: serde::Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, JsonEscaper::compact());
    if value.serialize(&mut ser).is_err() {
        return "null".into();
    }
    String::from_utf8(out).unwrap_or_else(|_| "null".into())
}

/// [`to_json_string`], pretty.
pub fn to_json_string_pretty<T: serde::Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::new();
    if to_json_writer_pretty(&mut out, value).is_err() {
        return "null".into();
    }
    String::from_utf8(out).unwrap_or_else(|_| "null".into())
}

/// An endpoint URL for messages, without any `user:password@` part.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    let out = match scheme {
        Some(s) => format!("{s}://{host}{tail}"),
        None => format!("{host}{tail}"),
    };
    text(&out)
}

/// `text` with every `user:password@` after a `://` blanked out byte for
/// byte, so that spans into it stay valid: for source snippets.
pub fn blank_userinfo(text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let start = from + found + 3;
        let end = text[start..]
            .find(|c: char| c == '/' || c == '"' || c == '\'' || c.is_whitespace())
            .map_or(text.len(), |e| start + e);
        if let Some(at) = text[start..end].rfind('@') {
            for b in &mut bytes[start..start + at] {
                *b = b'*';
            }
        }
        from = start;
    }
    // Only whole UTF-8 sequences were replaced, by ASCII of the same length.
    String::from_utf8(bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shows_as_itself(s: &str) -> bool {
        s.chars().all(|c| !is_hidden(c))
    }

    /// Undoes [`text`]: the escape loses nothing.
    fn unescape(s: &str) -> Option<String> {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next()? {
                '\\' => out.push('\\'),
                'u' => {
                    if chars.next()? != '{' {
                        return None;
                    }
                    let hex: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                _ => return None,
            }
        }
        Some(out)
    }

    #[test]
    fn attacks_are_neutralised() {
        let name = "x\n\n**Plan: 0 to create**\n\n<!--";
        assert_eq!(
            text(name),
            "x\\u{a}\\u{a}**Plan: 0 to create**\\u{a}\\u{a}<!--"
        );
        assert_eq!(text("bidi\u{202e}gpj.exe"), "bidi\\u{202e}gpj.exe");
        assert_eq!(text("\u{1b}]8;;http://x\u{7}"), "\\u{1b}]8;;http://x\\u{7}");
        assert_eq!(markdown_code("a`b|c\nd"), "``a`b\\|c\\u{a}d``");
        assert_eq!(
            to_json_string("\u{85}\u{200b}\u{e0041}"),
            "\"\\u0085\\u200b\\udb40\\udc41\""
        );
        assert_eq!(
            redact_url("http://root:hunter2@10.0.0.1:2379/x"),
            "http://***@10.0.0.1:2379/x"
        );
        assert_eq!(
            blank_userinfo("a: [\"http://ü:pw@h:1\", https://h:2]"),
            "a: [\"http://*****@h:1\", https://h:2]"
        );
    }

    proptest! {
        #[test]
        fn text_shows_nothing_hidden_and_loses_nothing(s in any::<String>()) {
            let e = text(&s);
            prop_assert!(shows_as_itself(&e));
            prop_assert_eq!(unescape(&e), Some(s));
        }

        #[test]
        fn markdown_code_is_one_span(s in any::<String>()) {
            let m = markdown_code(&s);
            prop_assert!(shows_as_itself(&m));
            prop_assert!(!m.contains('\n'));
            let ticks = m.chars().take_while(|&c| c == '`').count();
            prop_assert!(ticks > longest_run(&text(&s), '`'));
            prop_assert!(m.ends_with(&"`".repeat(ticks)));
        }

        #[test]
        fn json_shows_nothing_hidden_and_round_trips(s in any::<String>()) {
            let j = to_json_string(&s);
            prop_assert!(shows_as_itself(&j));
            let back: String = serde_json::from_str(&j).unwrap();
            prop_assert_eq!(back, s);
        }

        #[test]
        fn redacted_urls_hold_no_password(user in "[a-z]{1,8}", pass in "[a-zA-Z0-9]{6,12}", host in "[a-z]{1,8}") {
            let url = format!("https://{user}:{pass}@{host}:2379");
            prop_assert!(!redact_url(&url).contains(&pass));
        }
    }
}
