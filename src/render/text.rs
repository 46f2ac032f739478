//! The terminal rendering: a header, each change with its symbol, value
//! diffs for updates, and the summary line.

use std::io::Write as _;

use owo_colors::OwoColorize;

use super::{
    DiffLine, RenderOptions, notes, summary_line, thousands, too_large_warning, value_diff,
};
use crate::diff::Action;
use crate::escape;
use crate::keys::display_key;
use crate::plan::{ClusterInfo, PlanReport};

fn paint(color: bool, text: &str, f: impl Fn(&str) -> String) -> String {
    if color { f(text) } else { text.to_string() }
}

fn side_line(label: &str, c: &ClusterInfo) -> String {
    let endpoints: Vec<String> = c.endpoints.iter().map(|e| escape::text(e)).collect();
    format!(
        "  {label:<12} cluster {}  revision {}  {}",
        escape::text(&c.cluster_id),
        c.revision,
        endpoints.join(", ")
    )
}

/// Renders a plan for a terminal (or a log, with colour off).
pub fn render_text(report: &PlanReport, options: RenderOptions) -> String {
    let mut out = Vec::new();
    let _ = write_text(report, options, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// [`render_text`], streamed to `out`: the changes come from the plan's
/// spill file one by one, so memory does not grow with them.
pub fn write_text(
    report: &PlanReport,
    options: RenderOptions,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(64 << 10, out);
    write_text_to(report, options, &mut out)?;
    out.flush()?;
    report.changes.check()?;
    report.source_deletes.check()
}

fn write_text_to(
    report: &PlanReport,
    options: RenderOptions,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    let color = options.color;
    let title = match &report.name {
        Some(name) => format!("etcdplan plan: {}", escape::text(name)),
        None => "etcdplan plan".to_string(),
    };
    let _ = writeln!(out, "{}", paint(color, &title, |t| t.bold().to_string()));
    let _ = writeln!(
        out,
        "  {:<12} {} (sha256 {}…)",
        "plan file",
        escape::text(&report.plan_path),
        super::short_hex(&report.file_sha256)
    );
    let _ = writeln!(out, "{}", side_line("source", &report.source));
    let _ = writeln!(out, "{}", side_line("destination", &report.destination));
    let limit = options.max_listed.unwrap_or(usize::MAX);
    let mut listed = write_changes(report, color, limit, out);
    listed += write_source_lists(report, color, limit.saturating_sub(listed), out);
    let restores = report.undo.as_ref().map_or(0, |u| u.restores.len() as u64);
    let total = report.changes.len() + report.source_deletes.len() + restores;
    if (listed as u64) < total {
        let _ = writeln!(
            out,
            "\n  … {} more change(s) not listed (--max-listed {})",
            thousands(total - listed as u64),
            limit
        );
    }
    if let Some((head, lines)) = too_large_warning(report) {
        let _ = writeln!(
            out,
            "\n{}",
            paint(color, &head, |t| t.red().bold().to_string())
        );
        for l in lines {
            let _ = writeln!(out, "  ✗ {l}");
        }
    }
    let _ = writeln!(out);
    let summary = summary_line(&report.summary);
    let _ = writeln!(out, "{}", paint(color, &summary, |t| t.bold().to_string()));
    Ok(())
}

/// Each change, under its mapping, with notes and value diffs: at most
/// `limit`. Returns how many were listed.
fn write_changes(
    report: &PlanReport,
    color: bool,
    limit: usize,
    out: &mut impl std::io::Write,
) -> usize {
    let mut listed = 0;
    let mut current_mapping = None;
    for change in report.changes.iter() {
        if listed >= limit {
            break;
        }
        if current_mapping != Some(change.mapping) {
            current_mapping = Some(change.mapping);
            if let Some(m) = report.mappings.get(change.mapping) {
                let _ = writeln!(out);
                let _ = writeln!(out, "{} → {}", display_key(&m.from), display_key(&m.to));
            }
        }
        listed += 1;
        let symbol = change.action.symbol().to_string();
        let line = format!("  {symbol} {}", display_key(&change.key));
        let painted = paint(color, &line, |t| match change.action {
            Action::Create => t.green().to_string(),
            Action::Update => t.yellow().to_string(),
            Action::Delete => t.red().to_string(),
            Action::Conflict => t.magenta().to_string(),
        });
        match notes(report, &change) {
            Some(note) => {
                let _ = writeln!(out, "{painted}  {note}");
            }
            None => {
                let _ = writeln!(out, "{painted}");
            }
        }
        for l in value_diff(&change).into_iter().flatten() {
            let text = match l {
                DiffLine::Context(t) => format!("        {t}"),
                DiffLine::Removed(t) => {
                    paint(color, &format!("      - {t}"), |s| s.red().to_string())
                }
                DiffLine::Added(t) => {
                    paint(color, &format!("      + {t}"), |s| s.green().to_string())
                }
                DiffLine::Note(t) => paint(color, &format!("      {t}"), |s| s.cyan().to_string()),
            };
            let _ = writeln!(out, "{text}");
        }
    }
    listed
}

/// Move mode's source deletes and an undo's source restores: at most
/// `limit` in all. Returns how many were listed.
fn write_source_lists(
    report: &PlanReport,
    color: bool,
    limit: usize,
    out: &mut impl std::io::Write,
) -> usize {
    let mut listed = 0;
    if !report.source_deletes.is_empty() && listed < limit {
        let _ = writeln!(
            out,
            "\nMove: deleted from the source once the destination holds them (guarded by mod revision):"
        );
        for d in report.source_deletes.iter().take(limit) {
            listed += 1;
            let line = format!("  - {}", display_key(&d.source_key));
            let _ = writeln!(out, "{}", paint(color, &line, |t| t.red().to_string()));
        }
    }
    let restores = report.undo.as_ref().map_or(&[][..], |u| &u.restores[..]);
    if !restores.is_empty() && listed < limit {
        let _ = writeln!(
            out,
            "\nUndo of a move: put back on the source from its history (only while still absent):"
        );
        for c in restores.iter().take(limit - listed) {
            listed += 1;
            let line = format!("  {} {}", c.action.symbol(), display_key(&c.key));
            let _ = writeln!(out, "{}", paint(color, &line, |t| t.green().to_string()));
        }
    }
    listed
}
