//! The review's sections, riskiest first, and how a listing budget is shared
//! among them. Text and Markdown list the same sections in the same order;
//! JSON lists every change in key order, because it is the body of a saved
//! plan and leaves nothing out.

use crate::diff::{Action, Change, SourceDelete};
use crate::plan::PlanReport;

/// A part of the review. A reviewer reads from the top, so what can lose
/// data comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Conflicts,
    Deletes,
    SourceDeletes,
    Updates,
    Creates,
    Restores,
}

/// One listed line of a section: a destination change (or an undo's source
/// restore), or a move's source delete.
pub enum Entry {
    Change(Change),
    SourceDelete(SourceDelete),
}

impl Section {
    pub const RISK_ORDER: [Section; 6] = [
        Section::Conflicts,
        Section::Deletes,
        Section::SourceDeletes,
        Section::Updates,
        Section::Creates,
        Section::Restores,
    ];

    /// As in "7 to delete".
    pub fn label(self) -> &'static str {
        match self {
            Section::Conflicts => "conflicting, left as is",
            Section::Deletes => "to delete",
            Section::SourceDeletes => "to delete from the source (move mode)",
            Section::Updates => "to update",
            Section::Creates => "to create",
            Section::Restores => "to put back on the source (undo of a move)",
        }
    }

    /// How the section's writes are made safe, where that needs saying.
    pub fn how(self) -> Option<&'static str> {
        match self {
            Section::SourceDeletes => {
                Some("each deleted once the destination holds it, guarded by its mod revision")
            }
            Section::Restores => {
                Some("read from the source's history, each put back only while still absent")
            }
            _ => None,
        }
    }

    /// Conflicts and deletes never give way to what ranks below them.
    pub fn risky(self) -> bool {
        matches!(
            self,
            Section::Conflicts | Section::Deletes | Section::SourceDeletes
        )
    }

    fn action(self) -> Option<Action> {
        match self {
            Section::Conflicts => Some(Action::Conflict),
            Section::Deletes => Some(Action::Delete),
            Section::Updates => Some(Action::Update),
            Section::Creates => Some(Action::Create),
            Section::SourceDeletes | Section::Restores => None,
        }
    }

    /// The section's entries in key order, streamed from the spill file.
    pub fn entries<'r>(self, report: &'r PlanReport) -> Box<dyn Iterator<Item = Entry> + 'r> {
        match self {
            Section::SourceDeletes => {
                Box::new(report.source_deletes.iter().map(Entry::SourceDelete))
            }
            Section::Restores => Box::new(
                report
                    .undo
                    .iter()
                    .flat_map(|u| u.restores.iter().cloned())
                    .map(Entry::Change),
            ),
            _ => {
                let action = self.action();
                Box::new(
                    report
                        .changes
                        .iter()
                        .filter(move |c| Some(c.action) == action)
                        .map(Entry::Change),
                )
            }
        }
    }
}

/// How many entries each section of [`Section::RISK_ORDER`] has: from the
/// summary where it was counted from the entries or checked against them,
/// else counted from the entries themselves (an unchecked saved plan's
/// summary is what the file claims, and a reviewer must see what is listed).
pub fn counts(report: &PlanReport) -> [u64; 6] {
    let counted = if report.summary_counted {
        report.summary
    } else {
        let mut s = crate::diff::Summary::default();
        report.changes.iter().for_each(|c| s.count(c.action));
        s
    };
    let mut n = [0u64; 6];
    (n[0], n[1], n[3], n[4]) = (
        counted.conflict,
        counted.delete,
        counted.update,
        counted.create,
    );
    n[2] = report.source_deletes.len();
    n[5] = report.undo.as_ref().map_or(0, |u| u.restores.len() as u64);
    n
}

/// Shares `budget` among the sections of [`Section::RISK_ORDER`], whose
/// `needs` are given in the same order. The risky sections are served
/// first, then the rest from what is left; within each group every section
/// gets a fair share (max-min: one that needs less than its share leaves the
/// remainder to the others). So no conflict or delete is dropped while a
/// create is listed, and a lone update is never crowded out by many creates.
pub fn allot(needs: &[u64; 6], budget: u64) -> [u64; 6] {
    let mut out = [0u64; 6];
    let mut left = budget;
    for risky in [true, false] {
        let group: Vec<usize> = (0..6)
            .filter(|&i| Section::RISK_ORDER[i].risky() == risky)
            .collect();
        let taken = |level: u64| group.iter().map(|&i| needs[i].min(level)).sum::<u64>();
        // The highest level every section may fill up to within what is left.
        let (mut lo, mut hi) = (0, group.iter().map(|&i| needs[i]).max().unwrap_or(0));
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if taken(mid) <= left {
                lo = mid
            } else {
                hi = mid - 1
            }
        }
        for &i in &group {
            out[i] = needs[i].min(lo);
            left -= out[i];
        }
        // What a level cannot split evenly goes to the riskier sections.
        for &i in &group {
            if left > 0 && out[i] < needs[i] {
                out[i] += 1;
                left -= 1;
            }
        }
    }
    out
}

/// The command that lists every change: `show` on the saved plan, or how to
/// save one first. Raw text: each renderer escapes it for its output.
pub fn show_command(report: &PlanReport, saved_as: Option<&str>) -> String {
    let quote = |s: &str| shlex::try_quote(s).map_or_else(|_| s.to_string(), |q| q.into_owned());
    match saved_as {
        Some(path) => format!("etcdplan show {}", quote(path)),
        None => format!(
            "etcdplan plan {} --out plan.saved.json && etcdplan show plan.saved.json",
            quote(&report.plan_path)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn risky_sections_are_served_before_creates() {
        // 10,000 creates, 1 update and 7 deletes in a budget of 100.
        let needs = [0, 7, 0, 1, 10_000, 0];
        assert_eq!(allot(&needs, 100), [0, 7, 0, 1, 92, 0]);
        // Deletes alone outgrow the budget: creates get nothing.
        let needs = [3, 500, 0, 2, 10_000, 0];
        assert_eq!(allot(&needs, 100), [3, 97, 0, 0, 0, 0]);
    }

    #[test]
    fn sections_of_a_group_share_fairly() {
        assert_eq!(
            allot(&[0, 0, 0, 5_000, 10_000, 0], 100),
            [0, 0, 0, 50, 50, 0]
        );
        assert_eq!(allot(&[40, 40, 0, 0, 0, 0], 50), [25, 25, 0, 0, 0, 0]);
        // One place left: the update outranks the creates.
        assert_eq!(allot(&[0, 3, 0, 5, 50, 0], 4), [0, 3, 0, 1, 0, 0]);
        assert_eq!(allot(&[0, 0, 0, 5, 50, 0], 5), [0, 0, 0, 3, 2, 0]);
        assert_eq!(allot(&[0, 0, 0, 0, 0, 0], 50), [0; 6]);
        assert_eq!(allot(&[1, 2, 3, 4, 5, 6], 0), [0; 6]);
    }

    fn listed(action: Action) -> crate::diff::Change {
        crate::diff::Change {
            action,
            mapping: 0,
            key: b"/k".to_vec(),
            source_key: b"/k".to_vec(),
            sensitive: false,
            source: None,
            destination: None,
            payload: None,
        }
    }

    #[test]
    fn an_unchecked_summary_is_not_what_the_sections_count() {
        let mut report = PlanReport::empty_for_tests();
        let changes = [Action::Create, Action::Create, Action::Delete].map(listed);
        report.changes = crate::spool::Spool::from_records(&changes).expect("spool");
        // A saved plan whose summary hides its delete.
        report.summary.create = 3;
        report.summary_counted = false;
        assert_eq!(counts(&report), [0, 1, 0, 0, 2, 0]);
        // Once checked, the summary is the entries' count and no pass is made.
        report.summary.create = 2;
        report.summary.delete = 1;
        report.summary_counted = true;
        assert_eq!(counts(&report), [0, 1, 0, 0, 2, 0]);
        report.changes = crate::spool::Spool::empty();
        assert_eq!(counts(&report), [0, 1, 0, 0, 2, 0]);
    }

    proptest! {
        #[test]
        fn allotments_fit_and_respect_risk(
            needs in proptest::array::uniform6(0u64..5_000),
            budget in 0u64..20_000,
        ) {
            let got = allot(&needs, budget);
            prop_assert!(got.iter().sum::<u64>() <= budget);
            for i in 0..6 {
                prop_assert!(got[i] <= needs[i]);
            }
            let risky_short = (0..3).any(|i| got[i] < needs[i]);
            if risky_short {
                prop_assert!((3..6).all(|i| got[i] == 0));
            }
            // Nothing is left unused while some section still needs room.
            let short = (0..6).any(|i| got[i] < needs[i]);
            if short {
                prop_assert_eq!(got.iter().sum::<u64>(), budget);
            }
        }
    }
}
