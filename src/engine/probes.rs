//! What the engine asks before it writes: can every range be written, is
//! every destination range empty, and both sides' heads, asked at once.

use super::Run;
use crate::etcd::Side;
use crate::etcd::parallel::{FirstPage, first_page};
use crate::etcd::scan::{KeyRange, PageLimits};

/// What apply asks before it decides how to run.
pub(super) struct Asked {
    /// Every `to` range accepts writes.
    pub writable: bool,
    /// The destination revision at which every `to` range is empty.
    pub empty_at: Option<i64>,
    /// Both sides' cluster id and the revision to pin.
    pub heads: Option<[(u64, i64); 2]>,
    /// The first pages of the `from` and the `to` ranges, read at those
    /// pins.
    pub first: [Vec<FirstPage>; 2],
}

impl Run<'_> {
    /// The probes and the plan's first reads at once: round trips saved on
    /// a long link. (Whether range compares hold is asked here too, for the
    /// first batch's guard.)
    pub(super) async fn probe_all(&self) -> Asked {
        let (writable, probed, read, mut heads, _) = tokio::join!(
            self.all_writable(),
            self.destinations_probed(),
            self.sources_read(),
            self.heads(),
            crate::etcd::info::range_compares(&self.destination)
        );
        // Pinned where these first pages were read, the plan's scans start
        // from them (and, where every destination range was empty, read
        // nothing there): a round trip less on a long link, and each
        // range's index walked once, not twice.
        if let Some(h) = heads.as_mut() {
            for (side, pages) in [(0, &read), (1, &probed)] {
                if let Some(p) = pages {
                    h[side].1 = p.at;
                }
            }
        }
        Asked {
            writable,
            empty_at: probed.as_ref().and_then(Probed::empty_at),
            heads,
            first: [read, probed].map(|p| p.map(|p| p.pages).unwrap_or_default()),
        }
    }

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

    /// Each `to` range's first page, all at one destination revision: the
    /// first answer's, so that they are empty together or not. When every
    /// one is empty, no conflict can stop an `on_conflict: fail` plan after
    /// writes began (a key written there by someone else meanwhile is
    /// caught by the guards, exit 3), and a plan pinned there need not read
    /// them; else the plan's scans start from these pages instead of
    /// walking each range's index once more. `None` when a side cannot say.
    pub(super) async fn destinations_probed(&self) -> Option<Probed> {
        let to = self.plan.mappings.iter().map(|m| KeyRange::prefix(&m.to));
        first_pages(&self.destination, to.collect(), self.plan_options().limits).await
    }

    /// Each `from` range's first page, read alongside the probes (each
    /// walks the range's index in etcd, so the scans start from them).
    pub(super) async fn sources_read(&self) -> Option<Probed> {
        let from = self.plan.mappings.iter().map(|m| KeyRange::prefix(&m.from));
        first_pages(&self.source, from.collect(), self.plan_options().limits).await
    }
}

/// The first page of each range on `side`, as the plan's scans read them
/// (with `limits`), all at the first answer's revision; `None` when any
/// fails, or for a v2 or in-process side.
async fn first_pages(side: &Side, ranges: Vec<KeyRange>, limits: PageLimits) -> Option<Probed> {
    if side.v2().ok()?.is_some() || side.local().is_some() {
        return None;
    }
    let (first, rest) = ranges.split_first()?;
    let head = first_page(side, first, 0, limits).await.ok()?;
    let at = head.revision;
    let others = futures::future::join_all(rest.iter().map(|r| first_page(side, r, at, limits)));
    let mut pages = vec![head];
    for page in others.await {
        pages.push(page.ok()?);
    }
    // Held until each mapping's turn: past a few MiB (large values, many
    // mappings) the later pages are read again instead.
    let mut held = 0;
    for page in &mut pages {
        held += page.bytes();
        if held > HELD_PAGE_BYTES {
            page.strip();
        }
    }
    (at > 0).then_some(Probed { at, pages })
}

/// The first pages' bytes held for the scans, per side.
const HELD_PAGE_BYTES: usize = 16 << 20;

/// The first pages apply's probes read of one side: one per mapping (in
/// the plan's order), at `at`.
pub(super) struct Probed {
    pub at: i64,
    pub pages: Vec<FirstPage>,
}

impl Probed {
    /// The revision at which every `to` range is empty, if they all are.
    pub fn empty_at(&self) -> Option<i64> {
        self.pages
            .iter()
            .all(FirstPage::is_empty)
            .then_some(self.at)
    }
}

/// The first of `prefixes` (those `wanted`, in their order) that `side`
/// refuses to write, with why, by probes that write nothing, all sent at
/// once (one round trip for any number of mappings).
pub(super) async fn unwritable<'p>(
    side: &Side,
    prefixes: impl Iterator<Item = &'p [u8]>,
    wanted: &[bool],
) -> Option<(Vec<u8>, String)> {
    let probed: Vec<&[u8]> = prefixes
        .zip(wanted)
        .filter(|(_, w)| **w)
        .map(|(p, _)| p)
        .collect();
    let answers =
        futures::future::join_all(probed.iter().map(|p| crate::check::probe_write(side, p))).await;
    probed
        .into_iter()
        .zip(answers)
        .find_map(|(prefix, answer)| Some((prefix.to_vec(), answer.err()?.to_string())))
}
