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
use crate::etcd::{Entry, EtcdError, KeyRange, Op, PageLimits, Pin, Side};
use crate::keys::{display_key, prefixes_overlap};
use crate::planfile::{LeaseMode, OnConflict, Plan};

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
    pub changes: Vec<Change>,
    /// Move mode: source keys to delete once the copy is verified.
    pub source_deletes: Vec<SourceDelete>,
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
    pub fn too_large(&self, max_request_bytes: usize) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(move |c| {
            matches!(c.action, diff::Action::Create | diff::Action::Update)
                && !crate::etcd::write::fits_alone(
                    c.key.len(),
                    c.source.as_ref().map_or(0, |v| v.size),
                    max_request_bytes,
                )
        })
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
    /// Keep the bytes to write (apply needs them).
    pub keep_payload: bool,
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
            keep_payload: false,
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
    if let Some(v2) = side.v2()? {
        return Ok((v2.cluster_id().await?, 0));
    }
    let status = side
        .call(Op::REACH, |mut c| async move { c.status().await })
        .await?;
    Ok(status
        .header()
        .map_or((0, 0), |h| (h.cluster_id(), h.revision())))
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
    let mut changes = Vec::new();
    let mut source_deletes = Vec::new();
    let mut summary = Summary::default();
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
        let (shown_limit, keep_payload) = (options.shown_limit, options.keep_payload);
        let diffed = tokio::task::spawn_blocking(move || {
            let opts = DiffOptions {
                prune,
                on_conflict,
                sensitive: &sensitive,
                shown_limit,
                keep_payload,
                move_source,
                skip_leased,
            };
            diff::diff(index, &mapping_clone, drain(src_rx), drain(dst_rx), &opts)
        })
        .await
        .map_err(|e| PlanError::Internal(e.to_string()))?;
        // A failed scan ends its stream early: its error wins over the diff.
        for task in [src_task, dst_task] {
            task.await
                .map_err(|e| PlanError::Internal(e.to_string()))??;
        }
        summary.add(&diffed.summary);
        mappings.push(MappingReport {
            from: mapping.from.clone(),
            to: mapping.to.clone(),
            summary: diffed.summary,
        });
        changes.extend(diffed.changes);
        source_deletes.extend(diffed.source_deletes);
    }
    if plan.on_conflict == OnConflict::Fail && summary.conflict > 0 {
        let conflicts: Vec<&Change> = changes
            .iter()
            .filter(|c| c.action == diff::Action::Conflict)
            .collect();
        let mut listed: Vec<String> = conflicts
            .iter()
            .take(20)
            .map(|c| format!("  ! {}", display_key(&c.key)))
            .collect();
        if conflicts.len() > 20 {
            listed.push(format!("  … and {} more", conflicts.len() - 20));
        }
        return Err(PlanError::Conflicts {
            count: summary.conflict,
            listed: listed.join("\n"),
        });
    }
    let mut lease_ttls = BTreeMap::new();
    if plan.leases != LeaseMode::Skip {
        for c in &changes {
            if let Some(id) = c.source.as_ref().map(|v| v.lease).filter(|&l| l != 0)
                && !lease_ttls.contains_key(&id)
            {
                lease_ttls.insert(id, lease_ttl(&source, id).await?);
            }
        }
    }
    Ok(PlanReport {
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
        summary,
    })
}

/// The remaining TTL of a lease on `side`, in seconds; -1 when expired.
pub async fn lease_ttl(side: &Side, id: i64) -> Result<i64, EtcdError> {
    let resp = side
        .call(Op::REACH, |mut c| async move {
            c.lease_time_to_live(id, None).await
        })
        .await?;
    Ok(resp.ttl())
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
        crate::etcd::scan::scan(&side, &range, &pin, limits, counter, &tx).await
    });
    (rx, task)
}

/// Turns a channel of pages into an iterator of entries, for the blocking diff.
fn drain(mut rx: mpsc::Receiver<Vec<Entry>>) -> impl Iterator<Item = Entry> {
    std::iter::from_fn(move || rx.blocking_recv()).flatten()
}
