//! Planning: read both sides at pinned revisions and diff them, mapping by
//! mapping. Scans stream through bounded channels into the diff, so memory
//! holds a few pages and the changes, never the whole keyspace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use miette::Diagnostic;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::diff::{self, Change, DiffOptions, SourceDelete, Summary};
use crate::etcd::parallel::{
    DEFAULT_READERS, FEEDING_READERS, FirstPage, Scan, scan_parallel_from,
};
use crate::etcd::{Entry, EtcdError, KeyRange, PageLimits, Pin, Side};
use crate::keys::{KeyList, display_key, prefixes_overlap};
use crate::planfile::{LeaseMode, OnConflict, Plan};
use crate::spool::{Spool, SpoolWriter};

/// One cluster as the plan saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ClusterInfo {
    /// The cluster id from the response headers, as 16 hex digits.
    pub cluster_id: String,
    /// The revision the side was read at.
    pub revision: i64,
    pub endpoints: Vec<String>,
}

/// Counts of one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingReport {
    pub from: Vec<u8>,
    pub to: Vec<u8>,
    pub summary: Summary,
}

/// Everything a plan found: what renderers show and what apply writes.
#[derive(Debug, Clone)]
pub struct PlanReport {
    pub name: Option<String>,
    pub plan_path: String,
    pub file_sha256: String,
    pub source: ClusterInfo,
    pub destination: ClusterInfo,
    pub mappings: Vec<MappingReport>,
    /// Every change, in mapping then key order, spilled to disk: memory
    /// never grows with their number.
    pub changes: Spool<Change>,
    /// Move mode: source keys to delete once the copy is verified.
    pub source_deletes: Spool<SourceDelete>,
    /// The request bytes of the largest single write among the changes, so
    /// that [`PlanReport::too_large`] reads the spill only when one may not fit.
    pub largest_write: usize,
    pub summary: Summary,
    /// The summary was counted from `changes` or checked against them, so a
    /// render may take its counts from it instead of a pass over the spill.
    /// False for a saved plan not yet verified (`show`): its summary is
    /// what the file claims.
    pub summary_counted: bool,
    pub lease_mode: LeaseMode,
    /// Remaining TTL in seconds, at plan time, of each source lease a change
    /// carries (-1: expired).
    pub lease_ttls: BTreeMap<i64, i64>,
    /// The destination's request limit the plan was checked against.
    pub max_request_bytes: usize,
    /// Set on an undo plan (`plan --undo`).
    pub undo: Option<UndoInfo>,
    /// Warnings found by a run besides those [`warnings`] derives from the
    /// counts (a saved plan whose source has moved on). Not saved.
    pub found: Vec<Warning>,
}

/// What makes a plan an undo: its changes put the destination back as it was
/// at the undone plan's destination revision, with values read from the
/// destination's own history there (`source` in the report names that
/// cluster and revision); in move mode it also restores the source keys the
/// apply deleted, from the source's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndoInfo {
    /// The original source cluster, for the move-mode restores.
    pub source_cluster_id: String,
    /// The source revision the undone plan read at: restores read there.
    pub source_revision: i64,
    /// Move mode: source keys to put back, each a create guarded by absence.
    pub restores: Vec<Change>,
}

#[cfg(test)]
impl PlanReport {
    /// A plan of nothing, between two clusters of id 0, for unit tests.
    pub fn empty_for_tests() -> PlanReport {
        let cluster = || ClusterInfo {
            cluster_id: "0".repeat(16),
            revision: 1,
            endpoints: Vec::new(),
        };
        PlanReport {
            name: None,
            plan_path: "plan.yaml".into(),
            file_sha256: String::new(),
            source: cluster(),
            destination: cluster(),
            mappings: Vec::new(),
            changes: Default::default(),
            source_deletes: Default::default(),
            largest_write: 0,
            summary: Default::default(),
            summary_counted: false,
            lease_mode: crate::planfile::LeaseMode::Preserve,
            lease_ttls: Default::default(),
            max_request_bytes: 0,
            undo: None,
            found: Vec::new(),
        }
    }
}

impl PlanReport {
    /// Whether applying would write anything, on either side (an undo's
    /// source restores included).
    pub fn has_writes(&self) -> bool {
        self.summary.has_work()
            || self
                .undo
                .as_ref()
                .is_some_and(|u| u.restores.iter().any(|c| c.action.writes()))
    }

    /// Changes whose key and value cannot fit one request under
    /// `max_request_bytes`, even alone: apply refuses them before writing.
    pub fn too_large(&self, max_request_bytes: usize) -> Vec<Change> {
        if self.largest_write + crate::etcd::write::TXN_OVERHEAD_BYTES <= max_request_bytes {
            return Vec::new();
        }
        self.changes
            .iter()
            .filter(move |c| {
                matches!(c.action, diff::Action::Create | diff::Action::Update)
                    && !crate::etcd::write::fits_alone(
                        c.key.len(),
                        c.source.as_ref().map_or(0, |v| v.size),
                        max_request_bytes,
                    )
            })
            .collect()
    }
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum PlanError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Etcd(#[from] EtcdError),

    #[error(
        "source and destination are the same cluster ({cluster_id}), and `{}` overlaps the range `{}` being read",
        display_key(to),
        display_key(from)
    )]
    #[diagnostic(
        code(etcdplan::plan::same_cluster),
        help(
            "within one cluster, `to` must not overlap any `from`: choose a destination prefix outside the ranges being read"
        )
    )]
    SameCluster {
        cluster_id: String,
        from: Vec<u8>,
        to: Vec<u8>,
    },

    #[error(
        "{count} destination key(s) exist with other values, and `on_conflict: fail`:\n{}",
        conflict_lines(keys, *count)
    )]
    #[diagnostic(
        code(etcdplan::plan::conflicts),
        help(
            "decide per plan: `on_conflict: overwrite` writes the source values, `on_conflict: keep` leaves these keys as they are"
        )
    )]
    Conflicts { count: u64, keys: KeyList },

    #[error("cannot spill the plan's changes to a temporary file")]
    #[diagnostic(
        code(etcdplan::plan::spill),
        help(
            "the changes are kept in the temp folder (TMPDIR) while planning and applying: check that it exists and has free space"
        )
    )]
    Spill(#[source] std::io::Error),

    #[error("internal error while planning: {0}")]
    #[diagnostic(
        code(etcdplan::plan::internal),
        help("this is a bug in etcdplan; please report it with the command you ran")
    )]
    Internal(String),
}

/// Knobs of one planning run.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub limits: PageLimits,
    /// Keep values up to this size to display value diffs.
    pub shown_limit: usize,
    /// Source revision to read at; 0 pins the latest.
    pub source_revision: i64,
    /// The destination's `--max-request-bytes`, to name keys that can never
    /// be written.
    pub max_request_bytes: usize,
    /// The cluster id and latest revision of the source and the destination
    /// when already read (read alongside apply's probes: across a long link,
    /// a round trip less before the first write).
    pub heads: Option<[(u64, i64); 2]>,
    /// A destination revision at which every mapping's `to` range was seen
    /// empty: a plan pinned there does not read them.
    pub empty_at: Option<i64>,
    /// Each mapping's `from` and `to` ranges' first pages, when apply's
    /// probes read them: a scan pinned at a page's revision starts from it.
    pub source_first: Vec<FirstPage>,
    pub destination_first: Vec<FirstPage>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            limits: PageLimits::default(),
            shown_limit: 64 << 10,
            source_revision: 0,
            max_request_bytes: crate::etcd::write::DEFAULT_MAX_REQUEST_BYTES,
            heads: None,
            empty_at: None,
            source_first: Vec::new(),
            destination_first: Vec::new(),
        }
    }
}

/// Keys read so far on each side, for progress displays.
#[derive(Debug, Default)]
pub struct Progress {
    pub source_keys: AtomicU64,
    pub destination_keys: AtomicU64,
}

/// The cluster id of a side, from a status request (which also proves the
/// side is reachable before a long scan starts).
pub async fn cluster_id(side: &Side) -> Result<u64, EtcdError> {
    Ok(cluster_head(side).await?.0)
}

/// The cluster id and current revision of a side (0 for v2).
pub async fn cluster_head(side: &Side) -> Result<(u64, i64), EtcdError> {
    crate::etcd::info::cluster_head(side).await
}

/// How many times a plan starts over at a fresh revision when history it
/// was reading is compacted away underneath it.
pub const MAX_REPLANS: u32 = 3;

/// [`make_plan`], started over at a fresh revision (at most [`MAX_REPLANS`]
/// times) when a side compacts the revision a scan was reading at. Nothing
/// has been written at that point, so a fresh plan is exactly what the user
/// asked for. A plan pinned to an explicit source revision is not retried.
/// `on_replan` hears of each restart (to say so on stderr).
pub async fn make_plan_fresh(
    plan: &Plan,
    source: Arc<Side>,
    destination: Arc<Side>,
    options: &PlanOptions,
    progress: Arc<Progress>,
    mut on_replan: impl FnMut(&EtcdError, u32),
) -> Result<PlanReport, PlanError> {
    let mut replans = 0;
    let mut options = options.clone();
    loop {
        let result = make_plan(
            plan,
            source.clone(),
            destination.clone(),
            &options,
            progress.clone(),
        )
        .await;
        // Heads and pages read before the first round are stale for a replan.
        options.heads = None;
        options.source_first = Vec::new();
        options.destination_first = Vec::new();
        match result {
            Err(PlanError::Etcd(e @ EtcdError::Compacted { .. }))
                if options.source_revision == 0 && replans < MAX_REPLANS =>
            {
                replans += 1;
                on_replan(&e, replans);
                progress
                    .source_keys
                    .store(0, std::sync::atomic::Ordering::Relaxed);
                progress
                    .destination_keys
                    .store(0, std::sync::atomic::Ordering::Relaxed);
            }
            other => return other,
        }
    }
}

/// Reads both sides and diffs every mapping.
pub async fn make_plan(
    plan: &Plan,
    source: Arc<Side>,
    destination: Arc<Side>,
    options: &PlanOptions,
    progress: Arc<Progress>,
) -> Result<PlanReport, PlanError> {
    make_plan_tapped::<()>(plan, source, destination, options, progress, None)
        .await
        .map(|(report, _)| report)
}

/// Something a reviewer should hear although nothing is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// No source key lies under this mapping's `from` (after exclusions):
    /// most likely a typo, since the plan then changes nothing there.
    EmptySource { from: Vec<u8> },
    /// A saved plan's source has been written under this `from` since the
    /// plan's revision: the apply writes the reviewed values of `planned`.
    SourceMovedOn {
        from: Vec<u8>,
        planned: i64,
        now: i64,
    },
}

impl Warning {
    /// The `kind` of the warning in JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Warning::EmptySource { .. } => "empty_source",
            Warning::SourceMovedOn { .. } => "source_moved_on",
        }
    }

    /// The mapping's `from` the warning is about.
    pub fn from(&self) -> &[u8] {
        match self {
            Warning::EmptySource { from } | Warning::SourceMovedOn { from, .. } => from,
        }
    }
}

/// The warnings of a plan, from its counts alone (none for an undo, whose
/// "source" is the destination's own history).
pub fn warnings(report: &PlanReport) -> Vec<Warning> {
    if report.undo.is_some() {
        return report.found.clone();
    }
    report
        .mappings
        .iter()
        .filter(|m| {
            let s = &m.summary;
            s.create + s.update + s.conflict + s.unchanged + s.leased_skipped == 0
        })
        .map(|m| Warning::EmptySource {
            from: m.from.clone(),
        })
        .chain(report.found.iter().cloned())
        .collect()
}

/// `on_conflict: fail`: refuses a plan with conflicts, naming the first
/// [`crate::keys::LISTED`]. Called after the plan is shown, so that the
/// review sees every conflict; nothing is saved or written after it.
pub fn refuse_conflicts(plan: &Plan, report: &PlanReport) -> Result<(), PlanError> {
    if plan.on_conflict != OnConflict::Fail || report.summary.conflict == 0 {
        return Ok(());
    }
    let keys: Vec<Vec<u8>> = report
        .changes
        .iter()
        .filter(|c| c.action == diff::Action::Conflict)
        .take(crate::keys::LISTED)
        .map(|c| c.key)
        .collect();
    Err(PlanError::Conflicts {
        count: report.summary.conflict,
        keys: KeyList(keys),
    })
}

/// Where the diff hands each write when writing overlaps the plan (the
/// writer pool's tap): called from the blocking diff thread.
pub trait WriteSink: Send + 'static {
    fn offer(&mut self, change: Change, value: Option<Vec<u8>>);
}

/// A sink that takes nothing, for a plan that only plans.
impl WriteSink for () {
    fn offer(&mut self, _: Change, _: Option<Vec<u8>>) {}
}

/// Conflicts kept for the message: the first [`crate::keys::LISTED`] (the
/// count says how many in all), so memory stays bounded.
fn conflict_lines(keys: &KeyList, count: u64) -> String {
    let mut lines: Vec<String> = keys
        .iter()
        .map(|k| format!("  ! {}", display_key(k)))
        .collect();
    if count > keys.len() as u64 {
        lines.push(format!("  … and {} more", count - keys.len() as u64));
    }
    lines.join("\n")
}

/// What the diffs of all mappings gathered so far.
#[derive(Default)]
struct Gathered {
    mappings: Vec<MappingReport>,
    changes: SpoolWriter<Change>,
    moves: SpoolWriter<SourceDelete>,
    summary: Summary,
    largest_write: usize,
    lease_ids: std::collections::BTreeSet<i64>,
}

/// [`make_plan`], also handing every write, with the value its scan read,
/// to `sink` as the diff finds it: the writers start while the scans are
/// still reading. The sink comes back for the caller to finish.
pub async fn make_plan_tapped<S: WriteSink>(
    plan: &Plan,
    source: Arc<Side>,
    destination: Arc<Side>,
    options: &PlanOptions,
    progress: Arc<Progress>,
    mut sink: Option<S>,
) -> Result<(PlanReport, Option<S>), PlanError> {
    let [(source_id, source_now), (destination_id, destination_now)] = match options.heads {
        Some(heads) => heads,
        None => {
            let (s, d) = tokio::try_join!(cluster_head(&source), cluster_head(&destination))?;
            [s, d]
        }
    };
    if source_id == destination_id {
        same_cluster(plan, source_id)?;
    }
    // Pinned where the cluster ids were read: a round trip less per side
    // than pinning at the first scan, which matters across a long link.
    let pins = (Pin::at(options.source_revision), Pin::latest());
    for (pin, now) in [(&pins.0, source_now), (&pins.1, destination_now)] {
        if now > 0 {
            pin.pin(now);
        }
    }
    let mut got = Gathered::default();
    for (index, mapping) in plan.mappings.iter().enumerate() {
        let sides = (&source, &destination);
        // Boxed: in a debug build the scans and the diff make a future too
        // large for a thread's stack.
        sink = Box::pin(diff_mapping(
            plan, index, mapping, sides, &pins, options, &progress, &mut got, sink,
        ))
        .await?;
    }
    let mut lease_ttls = BTreeMap::new();
    if plan.leases != LeaseMode::Skip {
        for &id in &got.lease_ids {
            lease_ttls.insert(id, crate::etcd::info::lease_ttl(&source, id).await?);
        }
    }
    let cluster = |config: &crate::planfile::SideConfig, id: u64, pin: &Pin| ClusterInfo {
        cluster_id: format!("{id:016x}"),
        revision: pin.get(),
        endpoints: config.shown_endpoints(),
    };
    let report = PlanReport {
        undo: None,
        found: Vec::new(),
        max_request_bytes: options.max_request_bytes,
        lease_mode: plan.leases,
        lease_ttls,
        name: plan.name.clone(),
        plan_path: plan.path.display().to_string(),
        file_sha256: plan.file_sha256.clone(),
        source: cluster(&plan.source, source_id, &pins.0),
        destination: cluster(&plan.destination, destination_id, &pins.1),
        mappings: got.mappings,
        changes: got.changes.finish().map_err(PlanError::Spill)?,
        source_deletes: got.moves.finish().map_err(PlanError::Spill)?,
        largest_write: got.largest_write,
        summary: got.summary,
        summary_counted: true,
    };
    let s = &report.summary;
    tracing::info!(
        source_revision = report.source.revision,
        destination_revision = report.destination.revision,
        create = s.create,
        update = s.update,
        delete = s.delete,
        conflict = s.conflict,
        unchanged = s.unchanged,
        "planned"
    );
    Ok((report, sink))
}

/// On one cluster, no mapping may write where another reads.
fn same_cluster(plan: &Plan, cluster_id: u64) -> Result<(), PlanError> {
    for m in &plan.mappings {
        if let Some(f) = plan
            .mappings
            .iter()
            .find(|f| prefixes_overlap(&f.from, &m.to))
        {
            return Err(PlanError::SameCluster {
                cluster_id: format!("{cluster_id:016x}"),
                from: f.from.clone(),
                to: m.to.clone(),
            });
        }
    }
    Ok(())
}

/// What one mapping's blocking diff needs, owned (it runs on its own thread).
struct DiffInputs {
    index: usize,
    mapping: crate::planfile::Mapping,
    sensitive: Vec<Vec<u8>>,
    prune: bool,
    on_conflict: OnConflict,
    move_source: bool,
    skip_leased: bool,
    shown_limit: usize,
}

impl DiffInputs {
    /// Diffs the two streams, spilling changes to `out` and source deletes
    /// to `moved`, offering writes to `sink`; hands all of them back.
    fn run<S: WriteSink>(
        self,
        source: impl Iterator<Item = Entry>,
        destination: impl Iterator<Item = Entry>,
        mut out: SpoolWriter<Change>,
        mut moved: SpoolWriter<SourceDelete>,
        mut sink: Option<S>,
    ) -> (
        Found,
        SpoolWriter<Change>,
        SpoolWriter<SourceDelete>,
        Option<S>,
    ) {
        let opts = DiffOptions {
            prune: self.prune,
            on_conflict: self.on_conflict,
            sensitive: &self.sensitive,
            shown_limit: self.shown_limit,
            keep_payload: sink.is_some(),
            move_source: self.move_source,
            skip_leased: self.skip_leased,
        };
        let mut found = Found {
            summary: Summary::default(),
            largest: 0,
            leases: Default::default(),
            failed: None,
        };
        let mut failed_moves: Option<std::io::Error> = None;
        found.summary = diff::diff_into(
            self.index,
            &self.mapping,
            source,
            destination,
            &opts,
            |mut c| {
                tracing::trace!(action = ?c.action, key = %crate::keys::display_key(&c.key), "change");
                let value = c.payload.take();
                found.largest = found.largest.max(c.write_bytes());
                if let Some(l) = c.source.as_ref().map(|v| v.lease).filter(|&l| l != 0) {
                    found.leases.insert(l);
                }
                if found.failed.is_none()
                    && let Err(e) = out.push(&c)
                {
                    found.failed = Some(e);
                }
                if let Some(sink) = sink.as_mut()
                    && c.action.writes()
                {
                    sink.offer(c, value);
                }
            },
            |d| {
                if failed_moves.is_none()
                    && let Err(e) = moved.push(&d)
                {
                    failed_moves = Some(e);
                }
            },
        );
        found.failed = found.failed.take().or(failed_moves);
        (found, out, moved, sink)
    }
}

/// What one mapping's diff found, besides the spills it wrote.
struct Found {
    summary: Summary,
    largest: usize,
    leases: std::collections::BTreeSet<i64>,
    failed: Option<std::io::Error>,
}

/// Scans one mapping on both sides and diffs the two streams on a blocking
/// thread, spilling the changes and offering the writes to `sink`.
#[allow(clippy::too_many_arguments)]
async fn diff_mapping<S: WriteSink>(
    plan: &Plan,
    index: usize,
    mapping: &crate::planfile::Mapping,
    (source, destination): (&Arc<Side>, &Arc<Side>),
    (source_pin, destination_pin): &(Pin, Pin),
    options: &PlanOptions,
    progress: &Arc<Progress>,
    got: &mut Gathered,
    sink: Option<S>,
) -> Result<Option<S>, PlanError> {
    // Every key a write when the destination is empty: then the reads
    // need only keep ahead of the writes (a rerun's reads are its work).
    let empty = options.empty_at == Some(destination_pin.get());
    let readers = match sink {
        Some(_) if empty => FEEDING_READERS,
        _ => DEFAULT_READERS,
    };
    let scan = |side: &Arc<Side>, is_source, prefix: &[u8], pin: &Pin, first| {
        spawn_scan(
            (side.clone(), is_source),
            KeyRange::prefix(prefix),
            (pin.clone(), readers),
            options.limits,
            progress.clone(),
            first,
        )
    };
    // Apply's probes read the ranges' first pages: used when read at these
    // pins (a replan's fresh pins read them again).
    let first = |pages: &[FirstPage]| pages.get(index).cloned();
    let (src_rx, src_task) = scan(
        source,
        true,
        &mapping.from,
        source_pin,
        first(&options.source_first),
    );
    let (dst_rx, dst_task) = if empty {
        tracing::debug!(
            revision = destination_pin.get(),
            to = %crate::keys::display_key(&mapping.to),
            "destination seen empty at this revision: not read again"
        );
        nothing_to_read()
    } else {
        let first = first(&options.destination_first);
        scan(destination, false, &mapping.to, destination_pin, first)
    };
    let inputs = DiffInputs {
        index,
        mapping: mapping.clone(),
        sensitive: plan.sensitive.clone(),
        prune: plan.prune,
        on_conflict: plan.on_conflict,
        move_source: plan.delete_source,
        skip_leased: plan.leases == LeaseMode::Skip,
        shown_limit: options.shown_limit,
    };
    let (out, moved) = (
        std::mem::take(&mut got.changes),
        std::mem::take(&mut got.moves),
    );
    let diffed = tokio::task::spawn_blocking(move || {
        inputs.run(drain(src_rx), drain(dst_rx), out, moved, sink)
    })
    .await
    .map_err(|e| PlanError::Internal(e.to_string()))?;
    // A failed scan ends its stream early: its error wins over the diff.
    for task in [src_task, dst_task] {
        task.await
            .map_err(|e| PlanError::Internal(e.to_string()))??;
    }
    let (found, out, moved, sink) = diffed;
    if let Some(e) = found.failed {
        return Err(PlanError::Spill(e));
    }
    got.changes = out;
    got.moves = moved;
    got.largest_write = got.largest_write.max(found.largest);
    got.lease_ids.extend(found.leases);
    got.summary.add(&found.summary);
    got.mappings.push(MappingReport {
        from: mapping.from.clone(),
        to: mapping.to.clone(),
        summary: found.summary,
    });
    Ok(sink)
}

type ScanTask = tokio::task::JoinHandle<Result<(), EtcdError>>;

/// Starts a scan that feeds pages into a small bounded channel, from
/// `first` when it is the range's first page at `pin`, `readers` pieces
/// read at once.
fn spawn_scan(
    (side, is_source): (Arc<Side>, bool),
    range: KeyRange,
    (pin, readers): (Pin, usize),
    limits: PageLimits,
    progress: Arc<Progress>,
    first: Option<FirstPage>,
) -> (mpsc::Receiver<Vec<Entry>>, ScanTask) {
    let (tx, rx) = mpsc::channel(2);
    let task = tokio::spawn(async move {
        let counter = if is_source {
            &progress.source_keys
        } else {
            &progress.destination_keys
        };
        let scan = Scan {
            range: &range,
            pin: &pin,
            limits,
            readers,
        };
        scan_parallel_from(&side, scan, first, counter, &tx).await
    });
    (rx, task)
}

/// A scan of a range known to be empty: no page, and done.
fn nothing_to_read() -> (mpsc::Receiver<Vec<Entry>>, ScanTask) {
    let (_, rx) = mpsc::channel(1);
    (rx, tokio::spawn(async { Ok(()) }))
}

/// Turns a channel of pages into an iterator of entries, for the blocking diff.
fn drain(mut rx: mpsc::Receiver<Vec<Entry>>) -> impl Iterator<Item = Entry> {
    std::iter::from_fn(move || rx.blocking_recv()).flatten()
}
