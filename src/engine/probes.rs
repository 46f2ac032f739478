//! What the engine asks before it writes: can every range be written, is
//! every destination range empty, and both sides' heads, asked at once.

use super::Run;
use crate::etcd::Side;

impl Run<'_> {
    /// Whether every `to` range accepts writes (a probe that writes nothing).
    pub(super) async fn all_writable(&self) -> bool {
        let all = vec![true; self.plan.mappings.len()];
        unwritable(
            &self.destination,
            self.plan.mappings.iter().map(|m| &m.to[..]),
            &all,
        )
        .await
        .is_none()
    }

    /// Both sides' cluster id and latest revision, if both answer (else
    /// the plan asks again, and reports what failed).
    pub(super) async fn heads(&self) -> Option<[(u64, i64); 2]> {
        let (s, d) = tokio::join!(
            crate::plan::cluster_head(&self.source),
            crate::plan::cluster_head(&self.destination)
        );
        Some([s.ok()?, d.ok()?])
    }

    /// Whether every `to` range is empty, so that no conflict can stop an
    /// `on_conflict: fail` plan after writes began. A key written there by
    /// someone else meanwhile is caught by the guards (exit 3).
    pub(super) async fn destinations_empty(&self) -> bool {
        for m in &self.plan.mappings {
            if !crate::etcd::info::range_is_empty(&self.destination, &m.to)
                .await
                .unwrap_or(false)
            {
                return false;
            }
        }
        true
    }
}

/// The first of `prefixes` (those `wanted`) that `side` refuses to write,
/// with why, by a probe that writes nothing.
pub(super) async fn unwritable<'p>(
    side: &Side,
    prefixes: impl Iterator<Item = &'p [u8]>,
    wanted: &[bool],
) -> Option<(Vec<u8>, String)> {
    for (prefix, _) in prefixes.zip(wanted).filter(|(_, w)| **w) {
        if let Err(why) = crate::check::probe_write(side, prefix).await {
            return Some((prefix.to_vec(), why.to_string()));
        }
    }
    None
}
