//! How an apply ended, for people (text, Markdown) and machines (JSON):
//! one renderer per format over [`ApplyOutcome`] and its [`Ending`]. Every
//! ending has every form. Keys are shown escaped, the first
//! [`crate::keys::LISTED`] of each list.

use super::{JsonPlan, Told, finding, thousands};
use crate::apply::ApplyStats;
use crate::engine::{ApplyOutcome, End, Ending, ending};
use crate::escape::text as esc;

const STALE: &str = "Error: stale plan or concurrent writer: run plan again.";

/// `Apply complete: 120 created, …` and the like, after `lead`.
pub fn stats_line(lead: &str, s: &ApplyStats) -> String {
    format!(
        "{lead}: {} created, {} updated, {} deleted, {} already in place.",
        thousands(s.created),
        thousands(s.updated),
        thousands(s.deleted),
        thousands(s.already_in_place)
    )
}

/// The text form. `rerun` is the command that resumes the apply: the one
/// that was run, every flag included (see the CLI).
pub fn text(o: &ApplyOutcome, rerun: &str) -> Told {
    let mut t = preamble(o);
    let e = ending(o);
    match e {
        Ending::NoChanges => t.out("\nNothing to apply."),
        Ending::NeedsApproval => t.err(&finding(
            "etcdplan::apply::needs_approval",
            "refusing to apply without a terminal to confirm on",
            "review the plan above, then rerun with --auto-approve; or save it with `etcdplan plan --out FILE` and apply that file",
        )),
        Ending::Cancelled => t.out("Apply cancelled; nothing was written."),
        Ending::InterruptedBeforeWrites => t.err("Interrupted before writing anything."),
        Ending::RestoreInterrupted => t.err(&format!(
            "\nInterrupted while restoring source keys.\nResume with: {}",
            esc(rerun)
        )),
        Ending::SourceChanged => source_changed(o, &mut t),
        Ending::Foreign => {
            let foreign = &o.stats.foreign;
            t.err(&format!(
                "\n{} key(s) were written by someone else since the plan and were left alone:\n{foreign}",
                foreign.len()
            ));
            t.err(&stats_line("So far", &o.stats));
            t.err(STALE);
        }
        Ending::Interrupted => t.err(&format!(
            "\nInterrupted after the transactions in flight: {} of {} changes done, {} not attempted.\n{}\nResume with: {}",
            thousands(o.stats.proven() + o.stats.foreign.len() as u64),
            thousands(o.report.summary.writes()),
            thousands(o.stats.not_attempted),
            stats_line("So far", &o.stats),
            esc(rerun)
        )),
        Ending::UndoKept if o.end == End::Stale => {
            if o.verified.is_some() {
                t.out(&format!("\n{}", stats_line("Apply complete", &o.stats)));
            }
            undo_kept(o, &mut t);
        }
        Ending::UndoKept => {
            complete(o, &mut t);
            undo_kept(o, &mut t);
        }
        Ending::MoveKept | Ending::MoveInterrupted | Ending::TooLarge | Ending::Complete => {
            complete(o, &mut t);
            after_complete(o, e, rerun, &mut t);
        }
    }
    t
}

/// What precedes every ending: source keys an undo put back, and keys not
/// written because their source lease expired.
fn preamble(o: &ApplyOutcome) -> Told {
    let mut t = Told::default();
    if let Some(restored) = &o.restored
        && o.end != End::RestoreInterrupted
        && !(o.end == End::Stale && o.stats.proven() == 0 && !restored.foreign.is_empty())
    {
        t.out(&format!(
            "Restored on the source: {} key(s), {} already in place.",
            thousands(restored.created),
            thousands(restored.already_in_place)
        ));
    }
    let expired = &o.stats.lease_expired;
    if !expired.is_empty() {
        t.err(&format!(
            "{} key(s) not written: their source lease expired since the plan, and expired keys are not resurrected:\n{expired}",
            expired.len()
        ));
    }
    t
}

fn source_changed(o: &ApplyOutcome, t: &mut Told) {
    let keys = &o.stats.source_changed;
    t.err(&finding(
        "etcdplan::apply::source_changed",
        &format!(
            "{} source value(s) differ from what the saved plan reviewed:\n{keys}",
            keys.len()
        ),
        "the source changed (or its history was compacted) since the plan: run `etcdplan plan` again",
    ));
    if o.stats.proven() > 0 {
        t.err(&stats_line("So far", &o.stats));
    }
}

fn undo_kept(o: &ApplyOutcome, t: &mut Told) {
    t.err(&format!(
        "\n{} key(s) changed since the undone apply and were left alone:\n{}",
        o.undo_kept.len(),
        o.undo_kept
    ));
    t.err("Error: stale plan or concurrent writer: these keys were not undone.");
}

/// The lines of an apply whose writes all settled.
fn complete(o: &ApplyOutcome, t: &mut Told) {
    t.out(&format!("\n{}", stats_line("Apply complete", &o.stats)));
    t.out(&format!(
        "Verified: {} planned key(s) hold what was planned.",
        thousands(o.verified.unwrap_or(0))
    ));
    if let Some(moved) = &o.moved {
        t.out(&format!(
            "Moved: {} deleted from the source, {} already gone.",
            thousands(moved.deleted_from_source),
            thousands(moved.already_gone)
        ));
    }
}

fn after_complete(o: &ApplyOutcome, e: Ending, rerun: &str, t: &mut Told) {
    match (e, &o.moved) {
        (Ending::MoveKept, Some(moved)) => {
            let mut kept = moved.changed_on_source.clone();
            kept.extend(moved.not_on_destination.clone());
            t.err(&format!(
                "\n{} source key(s) were kept: changed on the source since the plan, or not on the destination with the planned value:\n{kept}",
                kept.len()
            ));
            t.err(STALE);
        }
        (Ending::MoveInterrupted, Some(moved)) => t.err(&format!(
            "\nInterrupted while deleting moved keys from the source: {} not attempted.\nResume with: {}",
            thousands(moved.not_attempted),
            esc(rerun)
        )),
        (Ending::TooLarge, _) => too_large(o, t),
        _ => {}
    }
}

fn too_large(o: &ApplyOutcome, t: &mut Told) {
    let (skipped, refused, limit) = (&o.stats.oversized, &o.stats.too_large, o.max_request_bytes);
    if !skipped.is_empty() {
        t.err(&finding(
            "etcdplan::apply::value_too_large",
            &format!(
                "{} key(s) cannot fit one request of at most {limit} bytes, even alone: they were not written, every other key was:\n{skipped}",
                skipped.len()
            ),
            "etcd refuses requests over its --max-request-bytes (1.5 MiB by default): raise it on the destination and pass the same --max-request-bytes here, then rerun to write these keys; or exclude them",
        ));
    }
    if !refused.is_empty() {
        t.err(&finding(
            "etcdplan::apply::refused_as_too_large",
            &format!(
                "the destination refused {} key(s) as too large for one request; every other key was written:\n{refused}",
                refused.len()
            ),
            &format!(
                "the destination's --max-request-bytes is lower than {limit} bytes: raise it on the destination (or lower --max-request-bytes here to match it and plan again), then rerun to write these keys"
            ),
        ));
    }
}

/// The JSON form: one document, whatever the ending.
pub fn json(o: &ApplyOutcome) -> String {
    let s = &o.stats;
    let value = serde_json::json!({
        "format_version": "2",
        "result": ending(o).json_result(),
        "plan": JsonPlan::from_report(&o.report),
        "apply": {
            "created": s.created,
            "updated": s.updated,
            "deleted": s.deleted,
            "already_in_place": s.already_in_place,
            "not_attempted": s.not_attempted,
            "foreign_keys": s.foreign,
            "too_large_keys": s.too_large,
            "verified": o.verified,
        }
    });
    crate::escape::to_json_string_pretty(&value)
}

/// The Markdown form, for a pull-request or job summary: the result and the
/// counts in a table, then the text form's findings in a code block.
pub fn markdown(o: &ApplyOutcome, rerun: &str) -> String {
    let s = &o.stats;
    let mut out = format!(
        "### etcdplan apply: {}\n\n| created | updated | deleted | already in place | not attempted | written by someone else |\n| ---: | ---: | ---: | ---: | ---: | ---: |\n| {} | {} | {} | {} | {} | {} |\n",
        ending(o).json_result(),
        thousands(s.created),
        thousands(s.updated),
        thousands(s.deleted),
        thousands(s.already_in_place),
        thousands(s.not_attempted),
        thousands(s.foreign.len() as u64),
    );
    let told = text(o, rerun);
    let notes = format!("{}{}", told.stdout, told.stderr);
    let notes = notes.trim();
    if !notes.is_empty() {
        out.push('\n');
        out.push_str(&super::markdown::fenced("", &format!("{notes}\n")));
    }
    out
}
