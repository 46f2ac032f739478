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

    /// The destination revision at which every `to` range is empty, if
    /// they are, so that no conflict can stop an `on_conflict: fail` plan
    /// after writes began (a key written there by someone else meanwhile is
    /// caught by the guards, exit 3), and a plan pinned there need not read
    /// them.
    pub(super) async fn destinations_empty(&self) -> Option<i64> {
        let mut at = 0;
        for m in &self.plan.mappings {
            // The first answer's revision pins the others: empty together.
            at = crate::etcd::info::empty_at(&self.destination, &m.to, at)
                .await
                .ok()
                .flatten()?;
        }
        (at > 0).then_some(at)
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
