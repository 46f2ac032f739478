#![allow(clippy::disallowed_macros)] // the figures go to the test log
//! Memory stays flat: the engine plans and applies a range many times
//! larger than its heap may grow, through the library, with a counting
//! allocator. If the engine collected the range, its changes or their
//! values, the peak would be the range's size, and this test fails. Nothing
//! is timed.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{Cluster, write_plan};
use etcdplan::engine::{self, ApplyRequest, End, Observer, Review};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap growth above the level when it was reset.
fn reset_peak() -> usize {
    let now = LIVE.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    now
}

struct Quiet;

impl Observer for Quiet {
    fn review(
        &self,
        _report: &etcdplan::plan::PlanReport,
        _review: Review,
    ) -> etcdplan::engine::Approval {
        etcdplan::engine::Approval::Approved
    }
}

const KEYS: usize = 50_000;
const VALUE: usize = 2048;
/// What the heap may grow by: far below the range's ~98 MiB; what is in flight (16 transactions
/// of up to 1 MiB, their values read ahead) stays well under it.
const BUDGET: usize = 32 << 20;

#[tokio::test(flavor = "multi_thread")]
async fn plan_and_apply_of_a_large_range_keep_the_heap_flat() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed((0..KEYS).map(|i| {
        let mut v = format!("{i:08}").into_bytes();
        v.resize(VALUE, b'a' + (i % 26) as u8);
        (format!("/m/{i:08}"), v)
    }))
    .await;
    let range_bytes = KEYS * VALUE;
    assert!(range_bytes > 3 * BUDGET);
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /m/\n");
    let plan_path = dir.path().join("plan.yaml");

    // A reviewed plan, saved, then applied from the saved plan: values are
    // read from the source batch by batch.
    let base = reset_peak();
    let plan = etcdplan::planfile::load(&plan_path).expect("plan");
    let (source, destination) =
        etcdplan::engine::sides(&plan, &etcdplan::etcd::RetryPolicy::default());
    let report = etcdplan::plan::make_plan(
        &plan,
        source,
        destination,
        &etcdplan::plan::PlanOptions::default(),
        Arc::new(etcdplan::plan::Progress::default()),
    )
    .await
    .expect("plan");
    assert_eq!(report.summary.create as usize, KEYS);
    let saved = dir.path().join("saved.json");
    etcdplan::saved::SavedPlan::new(&report)
        .write(&saved, None)
        .expect("save");
    drop(report);
    let grew = PEAK.load(Ordering::Relaxed) - base;
    eprintln!("heap grew by {} KiB", grew >> 10);
    assert!(grew < BUDGET, "plan: the heap grew by {grew} bytes");

    // Apply the saved plan, streamed back from its file.
    let base = reset_peak();
    let request = ApplyRequest {
        target: saved,
        options: Default::default(),
        policy: Default::default(),
        auto_approve: false,
        plan_file: None,
        signing_key: None,
    };
    let outcome = engine::apply(&request, &Quiet, Arc::new(AtomicBool::new(false)))
        .await
        .expect("apply saved plan");
    assert_eq!(outcome.end, End::Complete);
    assert_eq!(outcome.stats.created as usize, KEYS);
    drop(outcome);
    let grew = PEAK.load(Ordering::Relaxed) - base;
    eprintln!("heap grew by {} KiB", grew >> 10);
    assert!(
        grew < BUDGET,
        "apply of the saved plan: the heap grew by {grew} bytes"
    );

    // Empty the destination, then the overlapped apply of the plan file.
    let mut c = dst.client().await;
    c.delete("/m/", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .expect("clear");
    let base = reset_peak();
    let request = ApplyRequest {
        target: plan_path.clone(),
        options: Default::default(),
        policy: Default::default(),
        auto_approve: true,
        plan_file: None,
        signing_key: None,
    };
    let outcome = engine::apply(&request, &Quiet, Arc::new(AtomicBool::new(false)))
        .await
        .expect("apply plan file");
    assert_eq!(outcome.end, End::Complete);
    assert_eq!(outcome.stats.created as usize, KEYS);
    assert_eq!(outcome.verified, Some(KEYS as u64));
    drop(outcome);
    let grew = PEAK.load(Ordering::Relaxed) - base;
    eprintln!("heap grew by {} KiB", grew >> 10);
    assert!(
        grew < BUDGET,
        "overlapped apply: the heap grew by {grew} bytes"
    );

    // And the no-op rerun, which only reads.
    let before = dst.revision().await;
    let base = reset_peak();
    let outcome = engine::apply(&request, &Quiet, Arc::new(AtomicBool::new(false)))
        .await
        .expect("rerun");
    assert_eq!(outcome.end, End::NoChanges);
    let grew = PEAK.load(Ordering::Relaxed) - base;
    eprintln!("heap grew by {} KiB", grew >> 10);
    assert!(grew < BUDGET, "no-op rerun: the heap grew by {grew} bytes");
    assert_eq!(dst.revision().await, before, "the rerun wrote nothing");
    let copied = dst.dump(b"/m/").await;
    assert_eq!(copied.len(), KEYS);
    assert!(copied == src.dump(b"/m/").await);
}
