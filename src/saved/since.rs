//! Whether the source has moved on since a saved plan was made: a saved plan
//! is applied as it was reviewed, with the values of its pinned revision,
//! and the reviewer should hear when the source holds newer ones.

use etcd_client::GetOptions;

use crate::etcd::{EtcdError, Op, Side};
use crate::plan::{PlanReport, Warning};
use crate::planfile::Plan;

/// The mappings whose source range was written or deleted from after the
/// plan's source revision. Cheap: nothing when the source revision has not
/// moved at all, else per mapping one keys-only read of what changed
/// (limit 1) and two count-only reads (a delete leaves no key behind, so
/// the counts at both revisions tell). Best effort: a side that cannot say
/// (v2, compacted history) gives no warning.
pub async fn source_moved_on(side: &Side, plan: &Plan, report: &PlanReport) -> Vec<Warning> {
    if report.undo.is_some() || side.v2().ok().flatten().is_some() {
        return Vec::new();
    }
    let planned = report.source.revision;
    // Another cluster is refused before any write; nothing to compare then.
    let now = match crate::plan::cluster_head(side).await {
        Ok((id, now)) if now > planned && format!("{id:016x}") == report.source.cluster_id => now,
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for m in &plan.mappings {
        if moved(side, &m.from, planned, now).await.unwrap_or(false) {
            out.push(Warning::SourceMovedOn {
                from: m.from.clone(),
                planned,
                now,
            });
        }
    }
    out
}

/// The range of keys under `prefix`, the whole keyspace for an empty one.
fn range(prefix: &[u8]) -> (Vec<u8>, GetOptions) {
    if prefix.is_empty() {
        (vec![0], GetOptions::new().with_from_key())
    } else {
        (prefix.to_vec(), GetOptions::new().with_prefix())
    }
}

async fn moved(side: &Side, prefix: &[u8], planned: i64, now: i64) -> Result<bool, EtcdError> {
    let op = Op {
        action: "read",
        prefix,
    };
    let (key, options) = range(prefix);
    let written = side
        .call(op, |mut c| {
            let (key, options) = (key.clone(), options.clone());
            let options = options
                .with_keys_only()
                .with_min_mod_revision(planned + 1)
                .with_revision(now)
                .with_limit(1);
            async move { c.get(key, Some(options)).await }
        })
        .await?;
    if !written.kvs().is_empty() {
        return Ok(true);
    }
    let count = |at: i64| {
        let (key, options) = (key.clone(), options.clone());
        side.call(op, move |mut c| {
            let (key, options) = (key.clone(), options.clone());
            let options = options.with_count_only().with_revision(at);
            async move { c.get(key, Some(options)).await }
        })
    };
    let (then, later) = (count(planned).await?, count(now).await?);
    Ok(then.count() != later.count())
}
