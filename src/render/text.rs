//! The terminal rendering: a header, each change with its symbol, value
//! diffs for updates, and the summary line.

use std::io::Write as _;

use owo_colors::OwoColorize;

use super::sections::{self, Entry, Section};
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
    writeln!(out, "{}", paint(color, &title, |t| t.bold().to_string()))?;
    writeln!(
        out,
        "  {:<12} {} (sha256 {}…)",
        "plan file",
        escape::text(&report.plan_path),
        super::short_hex(&report.file_sha256)
    )?;
    for line in side_lines(report) {
        writeln!(out, "{line}")?;
    }
    let counts = sections::counts(report);
    let allotted = sections::allot(&counts, options.max_listed.map_or(u64::MAX, |n| n as u64));
    for (i, section) in Section::RISK_ORDER.into_iter().enumerate() {
        if counts[i] == 0 {
            continue;
        }
        let how = section.how().map_or(String::new(), |h| format!(", {h}"));
        let head = format!("\n{} {}{how}:", thousands(counts[i]), section.label());
        writeln!(out, "{}", paint(color, &head, |t| t.bold().to_string()))?;
        let listed = write_section(report, section, color, allotted[i], out)?;
        if listed < counts[i] {
            writeln!(
                out,
                "  … {} more {} not listed (--max-listed {}); {} lists them all",
                thousands(counts[i] - listed),
                section.label(),
                options.max_listed.unwrap_or(0),
                escape::text(&sections::show_command(report, options.saved_as))
            )?;
        }
    }
    if let Some((head, lines)) = too_large_warning(report) {
        writeln!(
            out,
            "\n{}",
            paint(color, &head, |t| t.red().bold().to_string())
        )?;
        for l in lines {
            writeln!(out, "  ✗ {l}")?;
        }
    }
    writeln!(out)?;
    let summary = summary_line(report);
    writeln!(out, "{}", paint(color, &summary, |t| t.bold().to_string()))
}

/// Both clusters: what is read, what is written. An undo reads the
/// destination's own history and, in move mode, writes the source too.
fn side_lines(report: &PlanReport) -> Vec<String> {
    match &report.undo {
        None => vec![
            side_line("source", &report.source),
            side_line("destination", &report.destination),
        ],
        Some(u) => {
            let mut lines = vec![
                side_line("destination", &report.destination),
                format!(
                    "  {:<12} put back as it was at its revision {} (values read from its own history)",
                    "undo", report.source.revision
                ),
            ];
            let restores = u.restores.len() as u64;
            lines.push(format!(
                "  {:<12} cluster {}  revision {}  {}",
                "source",
                escape::text(&u.source_cluster_id),
                u.source_revision,
                if restores == 0 {
                    "(not written)".to_string()
                } else {
                    format!("({} moved key(s) put back)", thousands(restores))
                }
            ));
            lines
        }
    }
}

/// At most `limit` entries of one section, each under its mapping when the
/// plan has several. Returns how many were listed.
fn write_section(
    report: &PlanReport,
    section: Section,
    color: bool,
    limit: u64,
    out: &mut impl std::io::Write,
) -> std::io::Result<u64> {
    let mut listed = 0;
    let mut current_mapping = None;
    // `take`, so a section listed up to its limit (or not at all) reads no
    // further into the spill file.
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    for entry in section.entries(report).take(limit) {
        listed += 1;
        let (mapping, line) = match &entry {
            Entry::SourceDelete(d) => (d.mapping, format!("  - {}", display_key(&d.source_key))),
            Entry::Change(c) => (
                c.mapping,
                format!("  {} {}", c.action.symbol(), display_key(&c.key)),
            ),
        };
        if report.mappings.len() > 1 && current_mapping != Some(mapping) {
            current_mapping = Some(mapping);
            if let Some(m) = report.mappings.get(mapping) {
                writeln!(out, "  {} → {}", display_key(&m.from), display_key(&m.to))?;
            }
        }
        let Entry::Change(change) = entry else {
            writeln!(out, "{}", paint(color, &line, |t| t.red().to_string()))?;
            continue;
        };
        let painted = paint(color, &line, |t| match change.action {
            Action::Create => t.green().to_string(),
            Action::Update => t.yellow().to_string(),
            Action::Delete => t.red().to_string(),
            Action::Conflict => t.magenta().to_string(),
        });
        match notes(report, &change) {
            Some(note) => writeln!(out, "{painted}  {note}")?,
            None => writeln!(out, "{painted}")?,
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
            writeln!(out, "{text}")?;
        }
    }
    Ok(listed)
}
