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
use crate::etcd::{Entry, EtcdError, KeyRange, PageLimits, Pin, Side};
use crate::keys::{display_key, prefixes_overlap};
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
    pub lease_mode: LeaseMode,
    /// Remaining TTL in seconds, at plan time, of each source lease a change
    /// carries (-1: expired).
    pub lease_ttls: BTreeMap<i64, i64>,
    /// The destination's request limit the plan was checked against.
    pub max_request_bytes: usize,
    /// Set on an undo plan (`plan --undo`).
    pub undo: Option<UndoInfo>,
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

/// The request bytes one change's write needs (0 for one that writes nothing).
pub fn write_bytes(c: &Change) -> usize {
    match c.action {
        diff::Action::Create | diff::Action::Update => {
            crate::etcd::write::request_bytes(c.key.len(), c.source.as_ref().map_or(0, |v| v.size))
        }
        diff::Action::Delete => crate::etcd::write::request_bytes(c.key.len(), 0),
        diff::Action::Conflict => 0,
    }
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum PlanError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Etcd(#[from] EtcdError),

    #[error(
        "source and destination are the same cluster ({cluster_id}), and `{to}` overlaps the range `{from}` being read"
    )]
    #[diagnostic(
        code(etcdplan::plan::same_cluster),
        help(
            "within one cluster, `to` must not overlap any `from`: choose a destination prefix outside the ranges being read"
        )
    )]
    SameCluster {
        cluster_id: String,
        from: String,
        to: String,
    },

    #[error(
        "{count} destination key(s) exist with other values, and `on_conflict: fail`:\n{listed}"
    )]
    #[diagnostic(
        code(etcdplan::plan::conflicts),
        help(
            "decide per plan: `on_conflict: overwrite` writes the source values, `on_conflict: keep` leaves these keys as they are"
        )
    )]
    Conflicts { count: u64, listed: String },

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
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            limits: PageLimits::default(),
            shown_limit: 64 << 10,
            source_revision: 0,
            max_request_bytes: crate::etcd::write::DEFAULT_MAX_REQUEST_BYTES,
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
    loop {
        let result = make_plan(
            plan,
            source.clone(),
            destination.clone(),
            options,
            progress.clone(),
        )
        .await;
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
    make_plan_tapped(plan, source, destination, options, progress, None)
        .await
        .map(|(report, _)| report)
}

/// [`make_plan`], also handing every write, with the value its scan read,
/// to `tap` as the diff finds it: the writers start while the scans are
/// still reading. The tap comes back with what it could not send.
pub async fn make_plan_tapped(
    plan: &Plan,
    source: Arc<Side>,
    destination: Arc<Side>,
    options: &PlanOptions,
    progress: Arc<Progress>,
    tap: Option<crate::apply::Tap>,
) -> Result<(PlanReport, Option<crate::apply::Tap>), PlanError> {
    let mut tap = tap;
    let (source_id, destination_id) =
        tokio::try_join!(cluster_id(&source), cluster_id(&destination))?;
    if source_id == destination_id {
        for m in &plan.mappings {
            if let Some(f) = plan
                .mappings
                .iter()
                .find(|f| prefixes_overlap(&f.from, &m.to))
            {
                return Err(PlanError::SameCluster {
                    cluster_id: format!("{source_id:016x}"),
                    from: display_key(&f.from),
                    to: display_key(&m.to),
                });
            }
        }
    }
    let source_pin = Pin::at(options.source_revision);
    let destination_pin = Pin::latest();
    let mut mappings = Vec::new();
    let mut changes = Some(SpoolWriter::<Change>::new());
    let mut moves = Some(SpoolWriter::<SourceDelete>::new());
    let mut summary = Summary::default();
    let mut largest_write = 0;
    let mut conflicts: Vec<String> = Vec::new();
    let mut lease_ids = std::collections::BTreeSet::new();
    for (index, mapping) in plan.mappings.iter().enumerate() {
        let (src_rx, src_task) = spawn_scan(
            source.clone(),
            KeyRange::prefix(&mapping.from),
            source_pin.clone(),
            options.limits,
            progress.clone(),
            true,
        );
        let (dst_rx, dst_task) = spawn_scan(
            destination.clone(),
            KeyRange::prefix(&mapping.to),
            destination_pin.clone(),
            options.limits,
            progress.clone(),
            false,
        );
        let mapping_clone = mapping.clone();
        let sensitive = plan.sensitive.clone();
        let (prune, on_conflict, move_source) = (plan.prune, plan.on_conflict, plan.delete_source);
        let skip_leased = plan.leases == LeaseMode::Skip;
        let shown_limit = options.shown_limit;
        let (mut out, mut moved) = (
            changes.take().unwrap_or_default(),
            moves.take().unwrap_or_default(),
        );
        let mut mapping_tap = tap.take();
        let diffed = tokio::task::spawn_blocking(move || {
            let opts = DiffOptions {
                prune,
                on_conflict,
                sensitive: &sensitive,
                shown_limit,
                keep_payload: mapping_tap.is_some(),
                move_source,
                skip_leased,
            };
            let mut failed: Option<std::io::Error> = None;
            let mut failed_moves: Option<std::io::Error> = None;
            let mut largest = 0;
            let mut conflicts = Vec::new();
            let mut leases = std::collections::BTreeSet::new();
            let summary = diff::diff_into(
                index,
                &mapping_clone,
                drain(src_rx),
                drain(dst_rx),
                &opts,
                |mut c| {
                    let value = c.payload.take();
                    largest = largest.max(write_bytes(&c));
                    if c.action == diff::Action::Conflict && conflicts.len() < 21 {
                        conflicts.push(display_key(&c.key));
                    }
                    if let Some(l) = c.source.as_ref().map(|v| v.lease).filter(|&l| l != 0) {
                        leases.insert(l);
                    }
                    if failed.is_none()
                        && let Err(e) = out.push(&c)
                    {
                        failed = Some(e);
                    }
                    if let Some(tap) = mapping_tap.as_mut()
                        && c.action.writes()
                    {
                        tap.offer(c, value);
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
            let failed = failed.or(failed_moves);
            (
                summary,
                out,
                moved,
                failed,
                largest,
                conflicts,
                leases,
                mapping_tap,
            )
        })
        .await
        .map_err(|e| PlanError::Internal(e.to_string()))?;
        // A failed scan ends its stream early: its error wins over the diff.
        for task in [src_task, dst_task] {
            task.await
                .map_err(|e| PlanError::Internal(e.to_string()))??;
        }
        let (diff_summary, out, moved, failed, largest, found_conflicts, leases, back) = diffed;
        tap = back;
        if let Some(e) = failed {
            return Err(PlanError::Spill(e));
        }
        changes = Some(out);
        moves = Some(moved);
        largest_write = largest_write.max(largest);
        conflicts.extend(found_conflicts);
        lease_ids.extend(leases);
        summary.add(&diff_summary);
        mappings.push(MappingReport {
            from: mapping.from.clone(),
            to: mapping.to.clone(),
            summary: diff_summary,
        });
    }
    if plan.on_conflict == OnConflict::Fail && summary.conflict > 0 {
        let mut listed: Vec<String> = conflicts
            .iter()
            .take(20)
            .map(|k| format!("  ! {k}"))
            .collect();
        if summary.conflict > 20 {
            listed.push(format!("  … and {} more", summary.conflict - 20));
        }
        return Err(PlanError::Conflicts {
            count: summary.conflict,
            listed: listed.join("\n"),
        });
    }
    let mut lease_ttls = BTreeMap::new();
    if plan.leases != LeaseMode::Skip {
        for id in lease_ids {
            lease_ttls.insert(id, lease_ttl(&source, id).await?);
        }
    }
    if let Some(t) = tap.as_mut() {
        t.finish().await;
    }
    let changes = changes
        .unwrap_or_default()
        .finish()
        .map_err(PlanError::Spill)?;
    let source_deletes = moves
        .unwrap_or_default()
        .finish()
        .map_err(PlanError::Spill)?;
    let report = PlanReport {
        undo: None,
        max_request_bytes: options.max_request_bytes,
        lease_mode: plan.leases,
        lease_ttls,
        name: plan.name.clone(),
        plan_path: plan.path.display().to_string(),
        file_sha256: plan.file_sha256.clone(),
        source: ClusterInfo {
            cluster_id: format!("{source_id:016x}"),
            revision: source_pin.get(),
            endpoints: source.endpoints().map(String::from).collect(),
        },
        destination: ClusterInfo {
            cluster_id: format!("{destination_id:016x}"),
            revision: destination_pin.get(),
            endpoints: destination.endpoints().map(String::from).collect(),
        },
        mappings,
        changes,
        source_deletes,
        largest_write,
        summary,
    };
    Ok((report, tap))
}

/// The remaining TTL of a lease on `side`, in seconds; -1 when expired.
pub async fn lease_ttl(side: &Side, id: i64) -> Result<i64, EtcdError> {
    crate::etcd::info::lease_ttl(side, id).await
}

type ScanTask = tokio::task::JoinHandle<Result<(), EtcdError>>;

/// Starts a scan that feeds pages into a small bounded channel.
fn spawn_scan(
    side: Arc<Side>,
    range: KeyRange,
    pin: Pin,
    limits: PageLimits,
    progress: Arc<Progress>,
    is_source: bool,
) -> (mpsc::Receiver<Vec<Entry>>, ScanTask) {
    let (tx, rx) = mpsc::channel(2);
    let task = tokio::spawn(async move {
        let counter = if is_source {
            &progress.source_keys
        } else {
            &progress.destination_keys
        };
        crate::etcd::parallel::scan_parallel(
            &side,
            &range,
            &pin,
            limits,
            crate::etcd::parallel::DEFAULT_READERS,
            counter,
            &tx,
        )
        .await
    });
    (rx, task)
}

/// Turns a channel of pages into an iterator of entries, for the blocking diff.
fn drain(mut rx: mpsc::Receiver<Vec<Entry>>) -> impl Iterator<Item = Entry> {
    std::iter::from_fn(move || rx.blocking_recv()).flatten()
}
