//! Every entry of a saved plan, checked against the plan file's rules before
//! anything is written: an edited artifact can at most leave changes out,
//! never add one that applying the plan file itself could not make.
//!
//! What needs a cluster (a delete only where the source lacks the key at
//! the pinned revision) is [`check_deletes`], which the engine runs before
//! any write too.

use std::sync::Arc;

use miette::Diagnostic;

use crate::diff::{Action, Change, SourceDelete, Summary};
use crate::etcd::write::read_sorted;
use crate::etcd::{EtcdError, Side};
use crate::keys::display_key;
use crate::plan::PlanReport;
use crate::planfile::{OnConflict, Plan};

/// The first entry of a saved plan that its plan file does not allow.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("the saved plan does not match its plan file: {}", self.describe())]
#[diagnostic(
    code(etcdplan::saved_plan::tampered),
    help(
        "nothing was written on either side; the saved plan was edited or does not belong to this plan file: plan again and review that plan"
    )
)]
pub struct Tampered {
    /// Where: `changes`, `source_deletes`, `undo.restores`, `summary`, `mappings`, …
    pub section: &'static str,
    /// The entry's index in that section, when it is one entry.
    pub index: Option<u64>,
    /// The entry's key, as bytes.
    pub key: Option<Vec<u8>>,
    pub why: Why,
}

/// What is wrong with the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    MappingsDiffer,
    LeaseModeDiffers,
    NoSuchMapping {
        mapping: usize,
        mappings: usize,
    },
    OutsideFrom,
    Excluded,
    NotItsDestination,
    DeleteWithoutPrune,
    ActionAgainstOnConflict(Action),
    NotSensitiveAsPlanned,
    OutOfOrder,
    /// The spilled list could not be read back (a local disk error).
    Unreadable,
    SourceDeleteWithoutMove,
    Count {
        field: &'static str,
        listed: u64,
        summary: u64,
    },
    SourceHasKey,
}

impl Tampered {
    fn describe(&self) -> String {
        let mut at = self.section.to_string();
        if let Some(i) = self.index {
            at = format!("{at}[{i}]");
        }
        if let Some(k) = &self.key {
            at = format!("{at} `{}`", display_key(k));
        }
        let why = match &self.why {
            Why::MappingsDiffer => "the mappings are not the plan file's".to_string(),
            Why::LeaseModeDiffers => "`leases` is not the plan file's".to_string(),
            Why::NoSuchMapping { mapping, mappings } => {
                format!("points at mapping {mapping}, and the plan file has {mappings}")
            }
            Why::OutsideFrom => "the source key is not under its mapping's `from`".to_string(),
            Why::Excluded => "the source key is under an `exclude`".to_string(),
            Why::NotItsDestination => {
                "the key is not its mapping's `to` plus the source key's rest".to_string()
            }
            Why::DeleteWithoutPrune => {
                "a delete, and the plan file does not set `prune`".to_string()
            }
            Why::ActionAgainstOnConflict(a) => {
                format!("a {a:?}, which the plan file's `on_conflict` never plans")
            }
            Why::NotSensitiveAsPlanned => {
                "its `sensitive` flag is not what the plan file's `sensitive` prefixes say"
                    .to_string()
            }
            Why::OutOfOrder => "out of key order, or listed twice".to_string(),
            Why::Unreadable => "its spill file could not be read back".to_string(),
            Why::SourceDeleteWithoutMove => {
                "a source delete, and the plan file does not set `delete_source`".to_string()
            }
            Why::Count {
                field,
                listed,
                summary,
            } => format!("lists {listed} {field}, and the summary says {summary}"),
            Why::SourceHasKey => {
                "a delete of a key the source holds at the plan's revision".to_string()
            }
        };
        format!("{at}: {why}")
    }
}

type Result<T> = std::result::Result<T, Tampered>;

fn bad(section: &'static str, index: u64, key: &[u8], why: Why) -> Tampered {
    Tampered {
        section,
        index: Some(index),
        key: Some(key.to_vec()),
        why,
    }
}

fn whole(section: &'static str, why: Why) -> Tampered {
    Tampered {
        section,
        index: None,
        key: None,
        why,
    }
}

/// Checks a saved plan (or an undo plan) against `plan`, streaming its
/// spilled changes once.
pub fn check(plan: &Plan, report: &PlanReport) -> Result<()> {
    let mut v = Verifier::new(plan.clone(), report.undo.is_some());
    v.whole(report)?;
    for c in report.changes.try_iter() {
        v.change(&c.map_err(|_| whole("changes", Why::Unreadable))?);
        if v.failed[0].is_some() {
            break;
        }
    }
    v.changes_done(report)?;
    for d in report.source_deletes.try_iter() {
        v.source_delete(&d.map_err(|_| whole("source_deletes", Why::Unreadable))?);
        if v.failed[1].is_some() {
            break;
        }
    }
    v.deletes_done(report)?;
    v.restores(report)
}

/// The checks of [`check`], fed one entry at a time: by [`check`] from the
/// spill, or while a saved plan is read (`carve`), so that no second pass
/// over a million entries stands before the first write. An entry that
/// fails is kept, not returned, so that [`Verifier::finish`] tells the
/// same error, in the same order, as [`check`] would.
pub struct Verifier {
    plan: Plan,
    undo: bool,
    counts: Vec<Summary>,
    order: [Order; 2],
    /// Entries seen: changes, source deletes.
    seen: [u64; 2],
    /// The first entry of each list that failed.
    failed: [Option<Tampered>; 2],
}

impl Verifier {
    /// Checks against `plan`'s rules, for an undo plan when `undo`.
    pub fn new(plan: Plan, undo: bool) -> Verifier {
        Verifier {
            counts: vec![Summary::default(); plan.mappings.len()],
            plan,
            undo,
            order: Default::default(),
            seen: [0; 2],
            failed: [None, None],
        }
    }

    /// The plan file whose rules it checks against.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Whether it checks an undo plan's entries.
    pub fn undo(&self) -> bool {
        self.undo
    }

    /// The next entry of `changes`.
    pub fn change(&mut self, c: &Change) {
        let i = self.seen[0];
        self.seen[0] += 1;
        if self.failed[0].is_some() {
            return;
        }
        let why = match check_change(&self.plan, c, self.undo) {
            Err(why) => why,
            Ok(()) if !self.order[0].next(c.mapping, &c.key) => Why::OutOfOrder,
            Ok(()) => {
                self.counts[c.mapping].count(c.action);
                return;
            }
        };
        self.failed[0] = Some(bad("changes", i, &c.key, why));
    }

    /// The next entry of `source_deletes`.
    pub fn source_delete(&mut self, d: &SourceDelete) {
        let i = self.seen[1];
        self.seen[1] += 1;
        if self.failed[1].is_some() {
            return;
        }
        let why = match check_source_delete(&self.plan, d) {
            Err(why) => why,
            Ok(()) if !self.order[1].next(d.mapping, &d.source_key) => Why::OutOfOrder,
            Ok(()) => return,
        };
        self.failed[1] = Some(bad("source_deletes", i, &d.source_key, why));
    }

    /// After every entry was fed: the checks of the whole report, then the
    /// first failed entry, as [`check`] orders them.
    pub fn finish(mut self, report: &PlanReport) -> Result<()> {
        self.whole(report)?;
        self.changes_done(report)?;
        self.deletes_done(report)?;
        self.restores(report)
    }

    /// What the report says of itself: the plan file's mappings and leases.
    fn whole(&self, report: &PlanReport) -> Result<()> {
        // An undo plan reads its values from the destination: its mappings
        // run from each `to` onto itself.
        let undo = self.undo;
        let same = report.mappings.len() == self.plan.mappings.len()
            && report
                .mappings
                .iter()
                .zip(&self.plan.mappings)
                .all(|(r, p)| r.to == p.to && (r.from == p.from || (undo && r.from == p.to)));
        if !same {
            return Err(whole("mappings", Why::MappingsDiffer));
        }
        if report.lease_mode != self.plan.leases {
            return Err(whole("lease_mode", Why::LeaseModeDiffers));
        }
        Ok(())
    }

    fn changes_done(&mut self, report: &PlanReport) -> Result<()> {
        if let Some(e) = self.failed[0].take() {
            return Err(e);
        }
        check_counts(report, &self.counts)
    }

    fn deletes_done(&mut self, report: &PlanReport) -> Result<()> {
        if let Some(e) = self.failed[1].take() {
            return Err(e);
        }
        if self.seen[1] != report.summary.delete_source {
            return Err(whole(
                "summary",
                Why::Count {
                    field: "source deletes",
                    listed: self.seen[1],
                    summary: report.summary.delete_source,
                },
            ));
        }
        Ok(())
    }

    fn restores(&self, report: &PlanReport) -> Result<()> {
        if let Some(u) = &report.undo {
            for (i, c) in u.restores.iter().enumerate() {
                check_restore(&self.plan, c)
                    .map_err(|why| bad("undo.restores", i as u64, &c.key, why))?;
            }
        }
        Ok(())
    }
}

/// Entries come in (mapping, key) order, each once.
#[derive(Default)]
struct Order(Option<(usize, Vec<u8>)>);

impl Order {
    /// Whether `(mapping, key)` comes strictly after the previous entry.
    fn next(&mut self, mapping: usize, key: &[u8]) -> bool {
        let later = self
            .0
            .as_ref()
            .is_none_or(|(m, k)| (*m, k.as_slice()) < (mapping, key));
        // The previous key's buffer is reused: no allocation per entry.
        let (m, k) = self.0.get_or_insert_with(Default::default);
        *m = mapping;
        k.clear();
        k.extend_from_slice(key);
        later
    }
}

/// The listed changes must be the summary's, per mapping and in total.
fn check_counts(report: &PlanReport, counts: &[Summary]) -> Result<()> {
    let mut total = Summary::default();
    for (m, c) in report.mappings.iter().zip(counts) {
        compare(c, &m.summary)?;
        total.add(c);
    }
    compare(&total, &report.summary)
}

fn compare(listed: &Summary, summary: &Summary) -> Result<()> {
    for (field, l, s) in [
        ("creates", listed.create, summary.create),
        ("updates", listed.update, summary.update),
        ("deletes", listed.delete, summary.delete),
        ("conflicts", listed.conflict, summary.conflict),
    ] {
        if l != s {
            return Err(whole(
                "summary",
                Why::Count {
                    field,
                    listed: l,
                    summary: s,
                },
            ));
        }
    }
    Ok(())
}

fn mapping(plan: &Plan, index: usize) -> std::result::Result<&crate::planfile::Mapping, Why> {
    plan.mappings.get(index).ok_or(Why::NoSuchMapping {
        mapping: index,
        mappings: plan.mappings.len(),
    })
}

/// A source key under `from`, not excluded, written at its own place.
fn check_place(
    m: &crate::planfile::Mapping,
    source_key: &[u8],
    key: &[u8],
) -> std::result::Result<(), Why> {
    if !source_key.starts_with(&m.from) {
        return Err(Why::OutsideFrom);
    }
    if m.excludes_source(source_key) {
        return Err(Why::Excluded);
    }
    if !m.maps_to(source_key, key) {
        return Err(Why::NotItsDestination);
    }
    Ok(())
}

fn check_change(plan: &Plan, c: &Change, undo: bool) -> std::result::Result<(), Why> {
    let m = mapping(plan, c.mapping)?;
    if undo {
        // An undo puts destination keys back from their own history: each
        // key is its own source, under `to`, and any action may undo one.
        let from = m.to_source(&c.key).ok_or(Why::NotItsDestination)?;
        if c.source_key != c.key || m.excludes_source(&from) {
            return Err(Why::NotItsDestination);
        }
        if c.sensitive != plan.is_sensitive(&from, &c.key) {
            return Err(Why::NotSensitiveAsPlanned);
        }
        return Ok(());
    }
    check_place(m, &c.source_key, &c.key)?;
    match c.action {
        Action::Delete if !plan.prune => return Err(Why::DeleteWithoutPrune),
        Action::Update if plan.on_conflict != OnConflict::Overwrite => {
            return Err(Why::ActionAgainstOnConflict(c.action));
        }
        Action::Conflict if plan.on_conflict == OnConflict::Overwrite => {
            return Err(Why::ActionAgainstOnConflict(c.action));
        }
        _ => {}
    }
    if c.sensitive != plan.is_sensitive(&c.source_key, &c.key) {
        return Err(Why::NotSensitiveAsPlanned);
    }
    Ok(())
}

fn check_source_delete(plan: &Plan, d: &SourceDelete) -> std::result::Result<(), Why> {
    if !plan.delete_source {
        return Err(Why::SourceDeleteWithoutMove);
    }
    let m = mapping(plan, d.mapping)?;
    check_place(m, &d.source_key, &d.key)?;
    if d.sensitive != plan.is_sensitive(&d.source_key, &d.key) {
        return Err(Why::NotSensitiveAsPlanned);
    }
    Ok(())
}

/// An undo of a move puts keys back under `from` on the source.
fn check_restore(plan: &Plan, c: &Change) -> std::result::Result<(), Why> {
    if !plan.delete_source {
        return Err(Why::SourceDeleteWithoutMove);
    }
    let m = mapping(plan, c.mapping)?;
    if !c.key.starts_with(&m.from) || c.source_key != c.key {
        return Err(Why::OutsideFrom);
    }
    if m.excludes_source(&c.key) {
        return Err(Why::Excluded);
    }
    if !matches!(c.action, Action::Create | Action::Conflict) {
        return Err(Why::ActionAgainstOnConflict(c.action));
    }
    Ok(())
}

/// The half that needs the source: a saved plan deletes only keys the
/// source lacks at the pinned revision (else an edited artifact could delete
/// what the plan file would copy). Read in chunks, before any write; after a
/// compaction, the current source answers.
pub async fn check_deletes(
    source: &Arc<Side>,
    report: &PlanReport,
) -> std::result::Result<(), CheckError> {
    const CHUNK: usize = 512;
    let mut deletes = report
        .changes
        .try_iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            Ok(c) if c.action == Action::Delete => Some(Ok((i as u64, c.source_key))),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .peekable();
    while deletes.peek().is_some() {
        let mut chunk: Vec<(u64, Vec<u8>)> = Vec::with_capacity(CHUNK);
        for d in deletes.by_ref().take(CHUNK) {
            chunk.push(d.map_err(|_| whole("changes", Why::Unreadable))?);
        }
        let mut keys: Vec<Vec<u8>> = chunk.iter().map(|(_, k)| k.clone()).collect();
        keys.sort();
        let revision = report.source.revision;
        let found = match read_sorted(source, &keys, revision, false).await {
            Err(EtcdError::Compacted { .. }) => read_sorted(source, &keys, 0, false).await,
            other => other,
        }?;
        let present: std::collections::HashSet<&[u8]> = keys
            .iter()
            .zip(&found)
            .filter(|(_, e)| e.is_some())
            .map(|(k, _)| k.as_slice())
            .collect();
        if let Some((i, key)) = chunk.iter().find(|(_, k)| present.contains(k.as_slice())) {
            return Err(bad("changes", *i, key, Why::SourceHasKey).into());
        }
    }
    Ok(())
}

/// Why [`check_deletes`] stopped.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum CheckError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Tampered(#[from] Tampered),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Etcd(#[from] EtcdError),
}
