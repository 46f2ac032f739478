//! Apply: the reviewed changes go out in guarded, batched, pipelined
//! transactions. A rerun after a crash finds what is already in place and
//! writes only the rest; a key someone else changed since the plan is never
//! overwritten.

use std::sync::atomic::AtomicU64;

use miette::Diagnostic;
use serde::Serialize;

use crate::etcd::EtcdError;
use crate::keys::{KeyList, SizedKeyList};
use crate::plan::PlanReport;

mod batch;
mod join;
mod moves;
mod pool;
mod write;

pub use batch::{Batcher, Item, Tap, feed_from_spool};
pub use moves::{MoveStats, delete_moved};
pub use write::{BATCHES_QUEUED, ValueSource, apply_changes, apply_spool, write_stream};

/// How writes are batched and paced.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Keys per transaction (each key is one compare and one op per branch).
    pub max_txn_ops: usize,
    /// Request bytes per batched transaction. A key too big for a batch
    /// still goes, alone, when it fits `max_request_bytes`.
    pub max_txn_bytes: usize,
    /// The destination's `--max-request-bytes`: no request may be larger.
    pub max_request_bytes: usize,
    /// The most transactions in flight at once (the window adapts below).
    pub concurrency: usize,
    /// Keys per second, when limited.
    pub rate: Option<f64>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            max_txn_ops: 128,
            max_txn_bytes: 1 << 20,
            max_request_bytes: crate::etcd::write::DEFAULT_MAX_REQUEST_BYTES,
            concurrency: DEFAULT_CONCURRENCY,
            rate: None,
        }
    }
}

/// The most transactions in flight by default: the cap of the adaptive
/// window, high enough for a 50 ms round trip (see examples/bench.sh).
pub const DEFAULT_CONCURRENCY: usize = 128;

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum ApplyError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Etcd(#[from] EtcdError),

    #[error(
        "{} key(s) cannot fit one request of at most {limit} bytes, even alone; nothing was written:\n{keys}",
        keys.0.len()
    )]
    #[diagnostic(
        code(etcdplan::apply::value_too_large),
        help(
            "etcd refuses requests over its --max-request-bytes (1.5 MiB by default): raise it on the destination and pass the same --max-request-bytes here, or exclude these keys"
        )
    )]
    TooLarge { limit: usize, keys: SizedKeyList },

    #[error(
        "the {side} cluster is {found}, but the saved plan was made against {}",
        crate::escape::text(expected)
    )]
    #[diagnostic(
        code(etcdplan::apply::cluster_mismatch),
        help(
            "a saved plan applies only to the clusters it was made for; run `etcdplan plan` against these clusters"
        )
    )]
    ClusterMismatch {
        side: &'static str,
        expected: String,
        found: String,
    },

    #[error("internal error while applying: {0}")]
    #[diagnostic(
        code(etcdplan::apply::internal),
        help("this is a bug in etcdplan; please report it with the command you ran")
    )]
    Internal(String),
}

/// Counts of an apply run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyStats {
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub already_in_place: u64,
    /// Keys someone else wrote since the plan, left alone.
    pub foreign: KeyList,
    /// Keys never attempted because the run stopped early.
    pub not_attempted: u64,
    /// Keys the destination refused as too large, even alone: not written.
    pub too_large: KeyList,
    /// Keys that cannot fit one request under --max-request-bytes, even
    /// alone, found while writing overlapped with the plan: not written.
    pub oversized: KeyList,
    /// Source keys whose value at the pinned revision no longer matches the
    /// plan (history compacted and the key changed): their batch was held back.
    pub source_changed: KeyList,
    /// Keys not written because their source lease expired since the plan.
    pub lease_expired: KeyList,
}

impl ApplyStats {
    /// Keys whose guarded transaction proved they hold the planned state:
    /// a compare that held and wrote, or a read-back showing it in place.
    pub fn proven(&self) -> u64 {
        self.created + self.updated + self.deleted + self.already_in_place
    }

    /// The counts at -v.
    pub fn log(&self) {
        tracing::info!(
            created = self.created,
            updated = self.updated,
            deleted = self.deleted,
            already_in_place = self.already_in_place,
            written_by_someone_else = self.foreign.len(),
            not_attempted = self.not_attempted,
            "written"
        );
    }

    pub fn add(&mut self, other: ApplyStats) {
        self.created += other.created;
        self.updated += other.updated;
        self.deleted += other.deleted;
        self.already_in_place += other.already_in_place;
        self.foreign.extend(other.foreign);
        self.not_attempted += other.not_attempted;
        self.too_large.extend(other.too_large);
        self.oversized.extend(other.oversized);
        self.source_changed.extend(other.source_changed);
        self.lease_expired.extend(other.lease_expired);
    }
}

/// Live counters for progress displays.
#[derive(Debug, Default)]
pub struct ApplyProgress {
    pub done: AtomicU64,
    pub total: AtomicU64,
}

/// Refuses, before anything is written, a plan holding a key no request
/// can carry under `max_request_bytes` (sizes come from the plan).
pub fn check_sizes(report: &PlanReport, options: &ApplyOptions) -> Result<(), ApplyError> {
    let keys: Vec<(Vec<u8>, u64)> = report
        .too_large(options.max_request_bytes)
        .iter()
        .map(|c| {
            (
                c.key.clone(),
                c.source.as_ref().map_or(0, |v| v.size as u64),
            )
        })
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    Err(ApplyError::TooLarge {
        limit: options.max_request_bytes,
        keys: SizedKeyList(keys),
    })
}
