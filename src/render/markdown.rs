//! The pull-request rendering: a per-prefix summary table, then the changes
//! in collapsible `<details>` blocks. The comment stays under GitHub's limit
//! by leaving whole changes out and saying how many, never by cutting text.

use std::fmt::Write as _;

use super::sections::{self, Entry, Section};
use super::{
    DiffLine, RenderOptions, notes, summary_line, thousands, too_large_warning, value_diff,
};
use crate::diff::Change;
use crate::keys::display_key;
use crate::plan::PlanReport;

/// The most characters a rendered comment may have (GitHub allows 65,536).
pub const MARKDOWN_LIMIT: usize = 65_000;

/// Room kept for closing tags and the "not listed" note.
const RESERVE: usize = 600;

use crate::escape::{code_span, longest_run, markdown_code as code};

/// A fenced block whose fence is longer than any backtick run inside.
pub(super) fn fenced(lang: &str, body: &str) -> String {
    let fence = "`".repeat(longest_run(body, '`').max(2) + 1);
    format!("{fence}{lang}\n{body}{fence}\n")
}

fn entry(report: &PlanReport, change: &Change) -> String {
    let mut body = format!("{} {}", change.action.symbol(), display_key(&change.key));
    if let Some(note) = notes(report, change) {
        let _ = write!(body, "  {note}");
    }
    body.push('\n');
    if let Some(lines) = value_diff(change) {
        for l in lines {
            let _ = match l {
                DiffLine::Context(t) => writeln!(body, "  {t}"),
                DiffLine::Removed(t) => writeln!(body, "- {t}"),
                DiffLine::Added(t) => writeln!(body, "+ {t}"),
                DiffLine::Note(t) => writeln!(body, "  {t}"),
            };
        }
    }
    body
}

/// The hidden first line a CI step finds its earlier comment by: stable
/// for one plan file, and made only of characters that cannot end the
/// HTML comment.
pub fn marker(report: &PlanReport) -> String {
    let id: String = report
        .plan_path
        .chars()
        .take(200)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._/-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    // `--` may not appear inside an HTML comment.
    let id = id.replace("--", "-_");
    format!("<!-- etcdplan-plan: {id} -->")
}

/// Which clusters the plan reads and writes, in one sentence.
fn clusters(report: &PlanReport) -> String {
    let endpoints = |list: &[String]| list.iter().map(|e| code(e)).collect::<Vec<_>>().join(", ");
    let (src, dst) = (&report.source, &report.destination);
    match &report.undo {
        None => format!(
            "Source cluster {} at revision {} ({}) → destination cluster {} at revision {} ({}).",
            code(&src.cluster_id),
            src.revision,
            endpoints(&src.endpoints),
            code(&dst.cluster_id),
            dst.revision,
            endpoints(&dst.endpoints),
        ),
        Some(u) => {
            let restores = if u.restores.is_empty() {
                "is not written".to_string()
            } else {
                format!(
                    "gets {} moved key(s) back, read at its revision {}",
                    thousands(u.restores.len() as u64),
                    u.source_revision
                )
            };
            format!(
                "Undo: destination cluster {} ({}) is put back as it was at its revision {}, from its own history; source cluster {} {restores}.",
                code(&dst.cluster_id),
                endpoints(&dst.endpoints),
                src.revision,
                code(&u.source_cluster_id),
            )
        }
    }
}

/// The marker, a one-line summary, both clusters, the plan file, the
/// per-mapping table, the summary and any keys too large to write.
fn header(report: &PlanReport) -> String {
    let mut out = String::new();
    let title = report
        .name
        .as_deref()
        .map_or("etcdplan plan".to_string(), |n| {
            format!("etcdplan plan: {}", code(n))
        });
    let summary = summary_line(report);
    let short = summary.strip_prefix("Plan: ").unwrap_or(&summary);
    let _ = writeln!(out, "{}", marker(report));
    let _ = writeln!(out, "### {title} · {short}\n");
    let _ = writeln!(
        out,
        "{} Plan file {} (sha256 {}).\n",
        clusters(report),
        code(&report.plan_path),
        code(&super::short_hex(&report.file_sha256)),
    );
    let _ = writeln!(
        out,
        "| from | to | create | update | delete | conflict | unchanged |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |"
    );
    for m in &report.mappings {
        let s = &m.summary;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            code_span(&display_key(&m.from)),
            code_span(&display_key(&m.to)),
            thousands(s.create),
            thousands(s.update),
            thousands(s.delete),
            thousands(s.conflict),
            thousands(s.unchanged)
        );
    }
    let _ = writeln!(out, "\n**{summary}**\n");
    for w in crate::plan::warnings(report) {
        let words = super::warning_words(&w, code_span);
        let _ = writeln!(out, "> [!WARNING]\n> {}\n", capitalised(&words));
    }
    if let Some((head, lines)) = too_large_warning(report) {
        let _ = writeln!(out, "> [!CAUTION]\n> {head}");
        for l in lines {
            let _ = writeln!(out, "> - {}", code_span(&l));
        }
        let _ = writeln!(out);
    }
    out
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
}

/// A section's entry as Markdown, and what it costs of the budget: its
/// length, plus room for the longer fence a backtick run in it would need.
fn entry_of(report: &PlanReport, e: &Entry) -> (String, usize) {
    let text = match e {
        Entry::Change(c) => entry(report, c),
        Entry::SourceDelete(d) => format!("- {}\n", display_key(&d.source_key)),
    };
    let cost = text.len() + 2 * longest_run(&text, '`');
    (text, cost)
}

/// The note under a section that could not list everything.
fn not_listed(more: u64, label: &str, why: &str, hint: &str) -> String {
    format!(
        "_{} more {label} not listed here ({why}): {} lists them all._\n\n",
        thousands(more),
        code(hint)
    )
}

fn opening(section: Section, count: u64) -> String {
    let open = if section.risky() { " open" } else { "" };
    format!(
        "<details{open}><summary>{} {}</summary>\n\n",
        thousands(count),
        section.label()
    )
}

/// Renders a plan as a Markdown comment of at most [`MARKDOWN_LIMIT`]
/// characters. Sections come riskiest first; `--max-listed` and the size
/// limit are each shared among them by [`sections::allot`], and what a
/// section cannot list is counted under it, with the command that lists it.
pub fn render_markdown(report: &PlanReport, options: RenderOptions) -> String {
    let mut out = header(report);
    let counts = sections::counts(report);
    let by_count = sections::allot(&counts, options.max_listed.map_or(u64::MAX, |n| n as u64));
    let hint = sections::show_command(report, options.saved_as);
    let size_why = format!(
        "to keep this comment under {} characters",
        thousands(MARKDOWN_LIMIT as u64)
    );
    let fixed: usize = Section::RISK_ORDER
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| {
            let how = s.how().map_or(0, str::len);
            opening(*s, n).len() + how + not_listed(n, s.label(), &size_why, &hint).len() + 40
        })
        .sum();
    let room = MARKDOWN_LIMIT.saturating_sub(out.len() + fixed + RESERVE);
    // First pass: each section's entries as far as the whole room, kept
    // (at most the room, per section) for the second.
    let mut rendered: Vec<Vec<(String, usize)>> = Vec::new();
    let mut needs = [0u64; 6];
    for (i, section) in Section::RISK_ORDER.into_iter().enumerate() {
        let mut kept = Vec::new();
        for e in section.entries(report).take(by_count[i] as usize) {
            let (text, cost) = entry_of(report, &e);
            if needs[i] as usize + cost > room {
                needs[i] += cost as u64;
                break;
            }
            needs[i] += cost as u64;
            kept.push((text, cost));
        }
        rendered.push(kept);
    }
    let by_size = sections::allot(&needs, room as u64);
    for (i, section) in Section::RISK_ORDER.into_iter().enumerate() {
        if counts[i] == 0 {
            continue;
        }
        let mut body = String::new();
        let (mut listed, mut spent) = (0u64, 0usize);
        for (text, cost) in rendered[i].drain(..) {
            if (spent + cost) as u64 > by_size[i] {
                break;
            }
            spent += cost;
            listed += 1;
            body.push_str(&text);
        }
        out.push_str(&opening(section, counts[i]));
        if let Some(how) = section.how() {
            let _ = writeln!(out, "_{how}._\n");
        }
        if !body.is_empty() {
            out.push_str(&fenced("diff", &body));
            out.push('\n');
        }
        if listed < counts[i] {
            let why = if listed == by_count[i] {
                format!("by --max-listed {}", options.max_listed.unwrap_or(0))
            } else {
                size_why.clone()
            };
            out.push_str(&not_listed(
                counts[i] - listed,
                section.label(),
                &why,
                &hint,
            ));
        }
        out.push_str("</details>\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_survive_backticks_and_pipes() {
        assert_eq!(code("/a/b"), "`/a/b`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("a|b"), "`a\\|b`");
        assert_eq!(code("`x"), "`` `x ``");
        assert_eq!(code_span("/a/\\x0a"), "`/a/\\x0a`");
    }

    #[test]
    fn markers_cannot_end_their_comment() {
        let mut report = crate::plan::PlanReport::empty_for_tests();
        report.plan_path = "a--->b c/x-y.yaml".into();
        assert_eq!(marker(&report), "<!-- etcdplan-plan: a-_-_b_c/x-y.yaml -->");
    }

    #[test]
    fn fences_outgrow_the_body() {
        assert!(fenced("diff", "```\n").starts_with("````diff\n"));
    }
}
