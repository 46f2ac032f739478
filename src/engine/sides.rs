//! A plan's two sides, ready to use: a snapshot source sorted and served first.

use std::sync::Arc;

use super::EngineError;
use crate::etcd::{RetryPolicy, Side};
use crate::planfile::Plan;

/// The sides of a plan, with a run's retry policy.
pub fn sides(plan: &Plan, policy: &RetryPolicy) -> (Arc<Side>, Arc<Side>) {
    (
        Arc::new(Side::new(&plan.source, policy.clone()).with_probe(plan.probe_prefix(true))),
        Arc::new(Side::new(&plan.destination, policy.clone()).with_probe(plan.probe_prefix(false))),
    )
}

/// [`sides`], with a snapshot source sorted and served first: the
/// returned [`Served`](crate::snapshot::serve::Served) keeps it served, so
/// it must live as long as the sides are used.
pub async fn open_sides(
    plan: &Plan,
    policy: &RetryPolicy,
) -> Result<(Arc<Side>, Arc<Side>, Option<crate::snapshot::serve::Served>), EngineError> {
    let (source, destination) = sides(plan, policy);
    let Some(snap) = &plan.source.snapshot else {
        return Ok((source, destination, None));
    };
    let file = crate::snapshot::Snapshot::open(&snap.path)?;
    let reader = plan.clone();
    let keep = Arc::new(move |k: &[u8]| reader.reads_source_key(k));
    let served = crate::snapshot::serve::serve(file, snap.revision, keep).await?;
    let source = Side::new(&served.config, policy.clone())
        .with_probe(plan.probe_prefix(true))
        .with_local(served.local());
    Ok((Arc::new(source), destination, Some(served)))
}
