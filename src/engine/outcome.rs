//! How an apply ended, as plain data, and the one pure function from an
//! ending to its exit status: rendering and exit codes both start here.

use crate::apply::{ApplyStats, MoveStats};
use crate::plan::PlanReport;
use crate::status::ExitStatus;

/// What [`Observer::review`] is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Review {
    /// Nothing is written unless this returns `true`.
    Approve,
    /// Approval is not needed (a saved plan, or `auto_approve` without
    /// overlap): shown before any write.
    Show,
    /// The plan is complete and its writes are already under way.
    Overlapped,
}

/// What [`super::Observer::review`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    Approved,
    /// Asked, and the answer was not yes.
    Declined,
    /// Approval was needed, but there is no terminal to ask on.
    NoTerminal,
}

/// How an apply ended, as plain data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Nothing to write.
    NoChanges,
    /// The review said no; nothing was written.
    Cancelled,
    /// Approval was needed and nobody could be asked; nothing was written.
    NeedsApproval,
    /// Stopped (Ctrl-C) before any write.
    InterruptedBeforeWrites,
    /// Every planned write is in place, proven by its transaction.
    Complete,
    /// Someone else wrote planned keys (or, for an undo or a move, keys
    /// changed since): those were left alone.
    Stale,
    /// Stopped with writes not attempted; a rerun resumes.
    Interrupted,
    /// Stopped while an undo restored source keys.
    RestoreInterrupted,
    /// Stopped while deleting moved keys from the source.
    MoveInterrupted,
    /// Keys too large for one request were not written; the rest was.
    TooLarge,
    /// Source values changed since a saved plan (history compacted): their
    /// batch was held back and the run stopped.
    SourceChanged,
}

/// Everything an apply did.
#[derive(Debug, Clone)]
pub struct ApplyOutcome {
    pub end: End,
    pub report: PlanReport,
    /// Whether the target was a saved plan.
    pub saved: bool,
    pub stats: ApplyStats,
    /// An undo of a move: what was put back on the source.
    pub restored: Option<ApplyStats>,
    /// Move mode: what was deleted from the source.
    pub moved: Option<MoveStats>,
    /// An undo: keys changed since the undone apply, left alone.
    pub undo_kept: crate::keys::KeyList,
    /// Keys proven to hold what was planned (see the module docs).
    pub verified: Option<u64>,
    /// The request limit this apply enforced.
    pub max_request_bytes: usize,
}

impl ApplyOutcome {
    /// The source revision the plan was pinned at.
    pub fn source_revision(&self) -> i64 {
        self.report.source.revision
    }
}

/// What the operator is told about an apply: one variant per distinct
/// ending, each with one exit status and one JSON `result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    NoChanges,
    NeedsApproval,
    Cancelled,
    InterruptedBeforeWrites,
    RestoreInterrupted,
    /// Source values changed since a saved plan.
    SourceChanged,
    /// An undo left keys alone that changed since the undone apply.
    UndoKept,
    /// Someone else wrote planned keys.
    Foreign,
    Interrupted,
    /// Move mode kept source keys that changed or did not land.
    MoveKept,
    MoveInterrupted,
    TooLarge,
    Complete,
}

impl Ending {
    /// The exit status of this ending.
    pub fn status(self) -> ExitStatus {
        match self {
            Ending::NoChanges | Ending::Complete => ExitStatus::Success,
            Ending::SourceChanged | Ending::UndoKept | Ending::Foreign | Ending::MoveKept => {
                ExitStatus::Stale
            }
            Ending::NeedsApproval
            | Ending::Cancelled
            | Ending::InterruptedBeforeWrites
            | Ending::RestoreInterrupted
            | Ending::Interrupted
            | Ending::MoveInterrupted
            | Ending::TooLarge => ExitStatus::Failure,
        }
    }

    /// The `result` of the JSON form.
    pub fn json_result(self) -> &'static str {
        match self {
            Ending::NoChanges => "no_changes",
            Ending::NeedsApproval => "needs_approval",
            Ending::Cancelled => "cancelled",
            Ending::InterruptedBeforeWrites => "interrupted_before_writes",
            Ending::RestoreInterrupted => "restore_interrupted",
            Ending::SourceChanged | Ending::UndoKept | Ending::Foreign | Ending::MoveKept => {
                "stale"
            }
            Ending::Interrupted | Ending::MoveInterrupted => "interrupted",
            Ending::TooLarge => "too_large",
            Ending::Complete => "complete",
        }
    }
}

/// The ending of an apply: a pure function of what it did.
pub fn ending(o: &ApplyOutcome) -> Ending {
    let undo_only_kept = o.report.undo.is_some() && !o.undo_kept.is_empty();
    match o.end {
        End::NoChanges => Ending::NoChanges,
        End::NeedsApproval => Ending::NeedsApproval,
        End::Cancelled => Ending::Cancelled,
        End::InterruptedBeforeWrites => Ending::InterruptedBeforeWrites,
        End::RestoreInterrupted => Ending::RestoreInterrupted,
        End::SourceChanged => Ending::SourceChanged,
        End::Stale if undo_only_kept && o.stats.foreign.is_empty() => Ending::UndoKept,
        End::Stale if !o.stats.foreign.is_empty() => Ending::Foreign,
        End::Interrupted => Ending::Interrupted,
        End::Stale | End::MoveInterrupted | End::Complete | End::TooLarge => {
            if let Some(moved) = &o.moved {
                if !moved.changed_on_source.is_empty() || !moved.not_on_destination.is_empty() {
                    return Ending::MoveKept;
                }
                if moved.not_attempted > 0 {
                    return Ending::MoveInterrupted;
                }
            }
            if o.end == End::TooLarge {
                Ending::TooLarge
            } else if !o.undo_kept.is_empty() {
                Ending::UndoKept
            } else if o.end == End::Complete && nothing_to_do(o) {
                // An overlapped apply that found nothing ends as a reviewed
                // one does: the same words, the same JSON.
                Ending::NoChanges
            } else {
                Ending::Complete
            }
        }
    }
}

/// Whether the plan had nothing to write, anywhere.
fn nothing_to_do(o: &ApplyOutcome) -> bool {
    o.report.summary.writes() == 0
        && o.report.source_deletes.is_empty()
        && o.moved.is_none()
        && o.restored.is_none()
        && o.stats.proven() == 0
}

/// The exit status of an apply.
pub fn exit_status(o: &ApplyOutcome) -> ExitStatus {
    ending(o).status()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_report() -> PlanReport {
        PlanReport::empty_for_tests()
    }

    fn outcome(end: End) -> ApplyOutcome {
        ApplyOutcome {
            end,
            report: test_report(),
            saved: false,
            stats: ApplyStats::default(),
            restored: None,
            moved: None,
            undo_kept: Default::default(),
            verified: None,
            max_request_bytes: 0,
        }
    }

    fn foreign(mut o: ApplyOutcome) -> ApplyOutcome {
        o.stats.foreign.push(b"/k".to_vec());
        o
    }

    fn wrote(mut o: ApplyOutcome) -> ApplyOutcome {
        o.report.summary.create = 1;
        o.stats.created = 1;
        o
    }

    fn kept(mut o: ApplyOutcome) -> ApplyOutcome {
        o.undo_kept.push(b"/k".to_vec());
        o
    }

    fn moved(mut o: ApplyOutcome, changed: bool, not_attempted: u64) -> ApplyOutcome {
        let mut m = MoveStats::default();
        if changed {
            m.changed_on_source.push(b"/k".to_vec());
        }
        m.not_attempted = not_attempted;
        o.moved = Some(m);
        o
    }

    fn check(table: Vec<(ApplyOutcome, Ending, ExitStatus)>) {
        for (o, want, status) in table {
            assert_eq!(ending(&o), want, "{:?}", o.end);
            assert_eq!(exit_status(&o), status, "{want:?}");
        }
    }

    #[test]
    fn endings_before_or_instead_of_writes_have_one_exit_status() {
        check(vec![
            (
                outcome(End::NoChanges),
                Ending::NoChanges,
                ExitStatus::Success,
            ),
            (
                outcome(End::NeedsApproval),
                Ending::NeedsApproval,
                ExitStatus::Failure,
            ),
            (
                outcome(End::Cancelled),
                Ending::Cancelled,
                ExitStatus::Failure,
            ),
            (
                outcome(End::InterruptedBeforeWrites),
                Ending::InterruptedBeforeWrites,
                ExitStatus::Failure,
            ),
            (
                outcome(End::RestoreInterrupted),
                Ending::RestoreInterrupted,
                ExitStatus::Failure,
            ),
            (
                outcome(End::SourceChanged),
                Ending::SourceChanged,
                ExitStatus::Stale,
            ),
            (
                outcome(End::Interrupted),
                Ending::Interrupted,
                ExitStatus::Failure,
            ),
        ]);
    }

    #[test]
    fn endings_after_writes_have_one_exit_status() {
        check(vec![
            (
                foreign(outcome(End::Stale)),
                Ending::Foreign,
                ExitStatus::Stale,
            ),
            (
                kept(outcome(End::Stale)),
                Ending::UndoKept,
                ExitStatus::Stale,
            ),
            (
                kept(outcome(End::Complete)),
                Ending::UndoKept,
                ExitStatus::Stale,
            ),
            (
                moved(outcome(End::Complete), true, 0),
                Ending::MoveKept,
                ExitStatus::Stale,
            ),
            (
                moved(outcome(End::MoveInterrupted), false, 3),
                Ending::MoveInterrupted,
                ExitStatus::Failure,
            ),
            (
                outcome(End::TooLarge),
                Ending::TooLarge,
                ExitStatus::Failure,
            ),
            (
                wrote(outcome(End::Complete)),
                Ending::Complete,
                ExitStatus::Success,
            ),
            // An overlapped apply that found nothing to do.
            (
                outcome(End::Complete),
                Ending::NoChanges,
                ExitStatus::Success,
            ),
            (
                moved(outcome(End::Complete), false, 0),
                Ending::Complete,
                ExitStatus::Success,
            ),
        ]);
    }
}
