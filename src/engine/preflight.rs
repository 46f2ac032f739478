//! What must hold before an apply's first write, asked at once.

use super::probes::unwritable;
use super::{EngineError, Run};
use crate::apply;
use crate::plan::{PlanError, PlanReport};

impl Run<'_> {
    /// Everything that must hold before the first write: sizes, for a saved
    /// plan its clusters and deletes, and write access to every range the
    /// plan writes, on both sides. The network checks only read (or probe
    /// writes that write nothing), so they go at once: a round trip each
    /// saved on a long link. Their errors are told in a fixed order.
    pub(super) async fn preflight(
        &self,
        report: &PlanReport,
        saved: bool,
    ) -> Result<(), EngineError> {
        apply::check_sizes(report, &self.request.options)?;
        // A read of the spill file that failed while rendering stops here.
        report.changes.check().map_err(PlanError::Spill)?;
        let (writes_to, moves_from) = self.written_ranges(report);
        let tos = self.plan.mappings.iter().map(|m| &m.to[..]);
        let froms = self.plan.mappings.iter().map(|m| &m.from[..]);
        let (checked, to, from) = tokio::join!(
            Box::pin(self.saved_checks(report, saved)),
            unwritable(&self.destination, tos, &writes_to),
            unwritable(&self.source, froms, &moves_from)
        );
        checked?;
        if let Some((prefix, why)) = to {
            return Err(EngineError::NotWritable { prefix, why });
        }
        if let Some((prefix, why)) = from {
            return Err(EngineError::SourceNotWritable { prefix, why });
        }
        Ok(())
    }

    /// For a saved plan: its clusters, and that its deletes still delete
    /// what was planned; alongside, whether range compares hold (for the
    /// first guard).
    async fn saved_checks(&self, report: &PlanReport, saved: bool) -> Result<(), EngineError> {
        if !saved {
            return Ok(());
        }
        let undo = report.undo.as_ref();
        let restores_write = undo.is_some_and(|u| u.restores.iter().any(|c| c.action.writes()));
        let (checked, _) = tokio::join!(
            self.check_clusters(report, restores_write),
            Box::pin(crate::etcd::info::range_compares(&self.destination))
        );
        checked?;
        // (Its summary was checked against its entries when it was opened:
        // no delete counted, none listed.)
        if undo.is_none() && report.summary.delete > 0 {
            crate::saved::verify::check_deletes(&self.source, report).await?;
        }
        Ok(())
    }

    /// Which mappings' `to` ranges the plan writes, and which `from` ranges
    /// (move mode deletes from the source; an undo of one restores there).
    /// From the mappings' counts, which match the entries (counted from
    /// them, or checked against them): no pass over the spill file.
    fn written_ranges(&self, report: &PlanReport) -> (Vec<bool>, Vec<bool>) {
        let n = self.plan.mappings.len();
        let mut writes_to = vec![false; n];
        for (w, m) in writes_to.iter_mut().zip(&report.mappings) {
            *w = m.summary.writes() > 0;
        }
        let mut moves_from = vec![false; n];
        let restores = report
            .undo
            .iter()
            .flat_map(|u| &u.restores)
            .filter(|c| c.action.writes());
        let mappings = report.source_deletes.iter().map(|d| d.mapping);
        for m in mappings.chain(restores.map(|c| c.mapping)) {
            if let Some(w) = moves_from.get_mut(m) {
                *w = true;
            }
        }
        (writes_to, moves_from)
    }
}
