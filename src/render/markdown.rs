//! The pull-request rendering: a per-prefix summary table, then the changes
//! in collapsible `<details>` blocks. The comment stays under GitHub's limit
//! by leaving whole changes out and saying how many, never by cutting text.

use std::fmt::Write as _;

use super::{
    DiffLine, RenderOptions, notes, summary_line, thousands, too_large_warning, value_diff,
};
use crate::diff::{Action, Change};
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

/// How many entries may still be listed, and whether the size limit was hit.
struct Budget {
    limit: usize,
    listed: usize,
    full: bool,
}

/// Appends one collapsible section of whole entries, while the `--max-listed`
/// and size budgets last; an empty or exhausted section adds nothing.
fn section(
    out: &mut String,
    title: &str,
    entries: impl Iterator<Item = String>,
    budget: &mut Budget,
) {
    if budget.full || budget.listed >= budget.limit {
        return;
    }
    let mut section = format!("<details><summary>{title}</summary>\n\n");
    let mut body = String::new();
    for e in entries {
        if budget.listed >= budget.limit {
            break;
        }
        if out.len() + section.len() + body.len() + e.len() + 20 + RESERVE > MARKDOWN_LIMIT {
            budget.full = true;
            break;
        }
        body.push_str(&e);
        budget.listed += 1;
    }
    if !body.is_empty() {
        section.push_str(&fenced("diff", &body));
        section.push_str("\n</details>\n\n");
        out.push_str(&section);
    }
}

/// The title, both clusters, the plan file, the per-mapping table, the
/// summary and any keys too large to write.
fn header(report: &PlanReport) -> String {
    let mut out = String::new();
    let title = report
        .name
        .as_deref()
        .map_or("etcdplan plan".to_string(), |n| {
            format!("etcdplan plan: {}", code(n))
        });
    let _ = writeln!(out, "### {title}\n");
    let endpoints = |list: &[String]| list.iter().map(|e| code(e)).collect::<Vec<_>>().join(", ");
    let _ = writeln!(
        out,
        "Source cluster {} at revision {} ({}) → destination cluster {} at revision {} ({}). Plan file {} (sha256 {}).\n",
        code(&report.source.cluster_id),
        report.source.revision,
        endpoints(&report.source.endpoints),
        code(&report.destination.cluster_id),
        report.destination.revision,
        endpoints(&report.destination.endpoints),
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
    let _ = writeln!(out, "\n**{}**\n", summary_line(&report.summary));
    for w in crate::plan::warnings(report) {
        let crate::plan::Warning::EmptySource { from } = w;
        let _ = writeln!(
            out,
            "> [!WARNING]\n> No source key under {}: this mapping changes nothing there (a typo in `from`?)\n",
            code_span(&display_key(&from))
        );
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

/// Renders a plan as a Markdown comment of at most [`MARKDOWN_LIMIT`] characters.
pub fn render_markdown(report: &PlanReport, options: RenderOptions) -> String {
    let mut out = header(report);
    let mut budget = Budget {
        limit: options.max_listed.unwrap_or(usize::MAX),
        listed: 0,
        full: false,
    };
    for (action, label) in [
        (Action::Create, "to create"),
        (Action::Update, "to update"),
        (Action::Delete, "to delete"),
        (Action::Conflict, "conflicting, left as is"),
    ] {
        let of_action = || report.changes.iter().filter(move |c| c.action == action);
        let title = format!("{} {label}", thousands(of_action().count() as u64));
        section(
            &mut out,
            &title,
            of_action().map(|c| entry(report, &c)),
            &mut budget,
        );
    }
    let title = format!(
        "{} to delete from source (move mode)",
        thousands(report.source_deletes.len())
    );
    let moved = report
        .source_deletes
        .iter()
        .map(|d| format!("- {}\n", display_key(&d.source_key)));
    section(&mut out, &title, moved, &mut budget);
    let restores = report.undo.as_ref().map_or(&[][..], |u| &u.restores[..]);
    let title = format!(
        "{} to put back on the source (undo of a move)",
        thousands(restores.len() as u64)
    );
    let restored = restores
        .iter()
        .map(|c| format!("{} {}\n", c.action.symbol(), display_key(&c.key)));
    section(&mut out, &title, restored, &mut budget);
    let (limit, listed, full) = (budget.limit, budget.listed, budget.full);
    let total = report.changes.len() + report.source_deletes.len() + restores.len() as u64;
    if (listed as u64) < total {
        let why = if full {
            format!(
                "to keep this comment under {} characters",
                thousands(MARKDOWN_LIMIT as u64)
            )
        } else {
            format!("by --max-listed {limit}")
        };
        let _ = writeln!(
            out,
            "_{} of {} changes are not listed here ({why}); the summary above counts them all, and `etcdplan show` on the saved plan lists every one._",
            thousands(total - listed as u64),
            thousands(total)
        );
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
    fn fences_outgrow_the_body() {
        assert!(fenced("diff", "```\n").starts_with("````diff\n"));
    }
}
