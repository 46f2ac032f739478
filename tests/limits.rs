//! Server limits against real etcd: a request limit below what etcdplan
//! assumes, a destination out of quota (NOSPACE), and history compacted
//! under a plan.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Cluster, ClusterSpec, etcdplan, run, write_plan};
use etcd_client::GetOptions;

#[tokio::test(flavor = "multi_thread")]
async fn a_key_the_destination_refuses_as_too_large_is_named_and_the_rest_written() {
    let src = Cluster::plaintext().await;
    // A destination whose operator lowered --max-request-bytes to 64 KiB.
    let dst = Cluster::start(ClusterSpec {
        members: 1,
        extra_args: vec!["--max-request-bytes=65536".into()],
        ..Default::default()
    })
    .await;
    let mut kvs: Vec<(Vec<u8>, Vec<u8>)> = (0..300)
        .map(|i| (format!("/l/{i:04}").into_bytes(), vec![b'v'; 100]))
        .collect();
    kvs.push((b"/l/0150-big".to_vec(), vec![b'B'; 100_000]));
    src.seed(kvs).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /l/\n");

    // etcdplan assumes the default 1.5 MiB, so the plan holds the key; the
    // server refuses its batch, which is split until the key stands alone.
    let ran = run(etcdplan(dir.path()).args([
        "apply",
        "plan.yaml",
        "--auto-approve",
        "--max-listed",
        "3",
        "--format",
        "json",
    ]));
    assert_eq!(ran.code, Some(1), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stderr.contains("etcdplan::apply::refused_as_too_large"),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("/l/0150-big"), "{}", ran.stderr);
    let json: serde_json::Value = serde_json::from_str(&ran.stdout).expect("json result");
    assert_eq!(json["result"], "too_large");
    assert_eq!(json["apply"]["too_large_keys"][0], "/l/0150-big");
    assert_eq!(json["apply"]["created"], 300);
    let copied = dst.dump(b"/l/").await;
    let mut wanted = src.dump(b"/l/").await;
    wanted.retain(|(k, _)| k != b"/l/0150-big");
    assert_eq!(copied, wanted, "every other key was written");

    // Told the real limit, plan names the key and apply refuses up front.
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--max-request-bytes", "65536"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stdout.contains("Cannot be written: 1 key(s)"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains("✗ /l/0150-big (100,000 bytes)"),
        "{}",
        ran.stdout
    );
    // A reviewed (saved) plan is refused before anything is written.
    let before = dst.revision().await;
    let ran = run(etcdplan(dir.path()).args([
        "plan",
        "plan.yaml",
        "--max-request-bytes",
        "65536",
        "--out",
        "saved.json",
    ]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let ran =
        run(etcdplan(dir.path()).args(["apply", "saved.json", "--max-request-bytes", "65536"]));
    assert_eq!(ran.code, Some(1), "{}", ran.stdout);
    assert!(
        ran.stderr.contains("etcdplan::apply::value_too_large"),
        "{}",
        ran.stderr
    );
    assert_eq!(dst.revision().await, before, "nothing written");
    // An auto-approved plan file writes as it plans: the key is named, not
    // sent, and everything else is in place.
    let ran = run(etcdplan(dir.path()).args([
        "apply",
        "plan.yaml",
        "--auto-approve",
        "--max-request-bytes",
        "65536",
    ]));
    assert_eq!(ran.code, Some(1), "{}", ran.stdout);
    assert!(
        ran.stderr.contains("etcdplan::apply::value_too_large")
            && ran.stderr.contains("/l/0150-big"),
        "{}",
        ran.stderr
    );
    assert_eq!(
        dst.revision().await,
        before,
        "everything else was already in place"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nospace_is_diagnosed_and_a_rerun_after_the_fix_resumes() {
    let src = Cluster::plaintext().await;
    let mut dst = Cluster::start(ClusterSpec {
        members: 1,
        extra_args: vec!["--quota-backend-bytes=3145728".into()],
        ..Default::default()
    })
    .await;
    // About 7 MB: more than twice the destination's 3 MiB quota.
    src.seed((0..120).map(|i| (format!("/q/{i:04}"), vec![b'q'; 60_000])))
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /q/\n");
    // Paced: etcd checks the quota against the size its backend last
    // committed (every 100 ms), so a burst could overshoot it unseen.
    let ran = run(etcdplan(dir.path()).args([
        "apply",
        "plan.yaml",
        "--auto-approve",
        "--max-listed",
        "3",
        "--rate",
        "60",
    ]));
    assert_eq!(ran.code, Some(1), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stderr.contains("etcdplan::etcd::no_space"),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("out of space"), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("etcdctl alarm disarm"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("--quota-backend-bytes"),
        "{}",
        ran.stderr
    );
    let partial = dst.dump(b"/q/").await.len();
    assert!(
        partial > 0 && partial < 120,
        "stopped part way ({partial} keys)"
    );

    // The operator's fix: a larger quota, then disarm the alarm.
    dst.restart_member(0, vec!["--quota-backend-bytes=67108864".into()])
        .await;
    let member = dst.member_id(0).await;
    let mut c = dst.client().await;
    let mut only = etcd_client::AlarmOptions::new();
    only.with_member(member);
    c.alarm(
        etcd_client::AlarmAction::Deactivate,
        etcd_client::AlarmType::Nospace,
        Some(only),
    )
    .await
    .expect("disarm");
    let ran = run(etcdplan(dir.path()).args([
        "apply",
        "plan.yaml",
        "--auto-approve",
        "--max-listed",
        "3",
    ]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout.contains(&format!("{} created", 120 - partial)),
        "{}",
        ran.stdout
    );
    assert_eq!(dst.dump(b"/q/").await, src.dump(b"/q/").await);
}

/// A compaction past the revision a plan reads at, mid-scan: the plan starts
/// over at a fresh revision (and says so) instead of failing, and what it
/// shows is exactly the source at its new revision.
#[tokio::test(flavor = "multi_thread")]
async fn a_plan_compacted_under_its_scan_starts_over_at_a_fresh_revision() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed((0..400).map(|i| (format!("/p/{i:04}"), format!("v0-{i}"))))
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /p/\n");
    let plan = etcdplan::planfile::load(&path).expect("plan");

    // Writes move the revision on; one compaction to the head lands while
    // the first attempt (one key per page) is still reading.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut c = src.client().await;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                c.put(format!("/other/{}", n % 50), format!("{n}"), None)
                    .await
                    .expect("put");
                n += 1;
            }
        })
    };
    let compactor = {
        let mut c = src.client().await;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let head = c
                .get("\0", None)
                .await
                .expect("get")
                .header()
                .expect("h")
                .revision();
            c.compact(head, None).await.expect("compact");
            head
        })
    };
    let options = etcdplan::plan::PlanOptions {
        limits: etcdplan::etcd::PageLimits {
            page_bytes: 1,
            max_keys: 1,
            first_keys: 1,
        },
        ..Default::default()
    };
    let (source, destination) =
        etcdplan::engine::sides(&plan, &etcdplan::etcd::RetryPolicy::default());
    let mut replans = Vec::new();
    let report = etcdplan::plan::make_plan_fresh(
        &plan,
        source,
        destination,
        &options,
        Arc::new(etcdplan::plan::Progress::default()),
        |e, n| replans.push((e.to_string(), n)),
    )
    .await
    .expect("the plan starts over instead of failing");
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    let compacted_at = compactor.await.expect("compactor");
    assert_eq!(replans.len(), 1, "{replans:?}");
    assert!(replans[0].0.contains("compacted"), "{replans:?}");
    assert!(report.source.revision >= compacted_at, "a fresh revision");

    let mut c = src.client().await;
    let at = c
        .get(
            "/p/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_revision(report.source.revision),
            ),
        )
        .await
        .expect("read at the plan's revision");
    assert_eq!(report.summary.create as usize, at.kvs().len());
}
