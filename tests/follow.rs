//! `etcdplan apply --follow` against real etcd servers: a writer hammering
//! the source, kill -9 and restart, compaction past the checkpoint, foreign
//! writes on the destination, and equality at the cutover revision.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::follow::{finish, spawn_follow};
use common::proxy::Proxy;
use common::{Cluster, write_plan, write_plan_via};
use etcd_client::GetOptions;

/// A writer that puts, overwrites and deletes keys under /f/ until stopped,
/// some of them in multi-key transactions.
fn hammer(
    cluster_client: etcd_client::Client,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut c = cluster_client;
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let k = format!("/f/{:04}", n % 700);
            match n % 5 {
                0 => {
                    c.delete(k, None).await.expect("delete");
                }
                1 => {
                    let ops = (0..3)
                        .map(|j| {
                            etcd_client::TxnOp::put(format!("/f/txn/{j}"), format!("{n}"), None)
                        })
                        .collect::<Vec<_>>();
                    c.txn(etcd_client::Txn::new().and_then(ops))
                        .await
                        .expect("txn");
                }
                _ => {
                    c.put(k, format!("{{\"n\":{n}}}"), None).await.expect("put");
                }
            }
            n += 1;
        }
        n
    })
}

/// Source at `revision` under /f/, and the destination now under /f/.
async fn equal_at(src: &Cluster, dst: &Cluster, revision: i64) {
    let mut c = src.client().await;
    let at = c
        .get(
            "/f/",
            Some(GetOptions::new().with_prefix().with_revision(revision)),
        )
        .await
        .expect("read source at revision");
    let source: Vec<(Vec<u8>, Vec<u8>)> = at
        .kvs()
        .iter()
        .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
        .collect();
    assert_eq!(
        dst.dump(b"/f/").await,
        source,
        "destination equals the source at revision {revision}"
    );
}

async fn setup() -> (Cluster, Cluster, tempfile::TempDir) {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed((0..3000).map(|i| (format!("/f/{i:04}"), format!("{{\"seed\":{i}}}"))))
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /f/\nprune: true\non_conflict: overwrite\n",
    );
    (src, dst, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn follows_a_busy_source_until_cutover() {
    let (src, dst, dir) = setup().await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = hammer(src.client().await, stop.clone());
    // The writer runs during the initial copy and during follow.
    let child = spawn_follow(dir.path(), &["--cutover-file", "cutover"]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.expect("writer");
    assert!(writes > 100, "the writer was busy ({writes} writes)");
    let cutover_revision = src.revision().await;
    std::fs::write(dir.path().join("cutover"), "").expect("cutover file");
    let (code, _, stderr) = finish(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("cutover file found and the lag is zero"),
        "{stderr}"
    );
    assert!(
        stderr.contains("follow: source revision"),
        "lag reports: {stderr}"
    );
    equal_at(&src, &dst, cutover_revision).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_and_restart_loses_and_duplicates_nothing() {
    let (src, dst, dir) = setup().await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = hammer(src.client().await, stop.clone());
    let mut child = spawn_follow(dir.path(), &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    child.kill().expect("kill -9");
    let _ = child.wait();
    // The source goes on while nothing follows it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    let until = src.revision().await;
    let child = spawn_follow(dir.path(), &["--until-revision", &until.to_string()]);
    let (code, _, stderr) = finish(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("Resuming: the checkpoint"),
        "restarted from the checkpoint: {stderr}"
    );
    assert!(stderr.contains("reached --until-revision"), "{stderr}");
    // The resume hint is the command that was run, every flag included.
    let rerun = format!(
        "Resume with: etcdplan apply plan.yaml --auto-approve --follow --max-listed 3 --progress-every 0.5 --until-revision {until}"
    );
    assert!(stderr.contains(&rerun), "{stderr}");
    equal_at(&src, &dst, until).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_past_the_checkpoint_replans() {
    let (src, dst, dir) = setup().await;
    let until = src.revision().await;
    let (code, _, stderr) = finish(spawn_follow(
        dir.path(),
        &["--until-revision", &until.to_string()],
    ));
    assert_eq!(code, Some(0), "{stderr}");
    // While nothing follows: more writes, then a compaction past the checkpoint.
    let mut c = src.client().await;
    for i in 0..50 {
        c.put(format!("/f/late/{i}"), "x", None).await.expect("put");
    }
    c.delete("/f/0001", None).await.expect("delete");
    let now = src.revision().await;
    c.compact(now, None).await.expect("compact");
    let (code, _, stderr) = finish(spawn_follow(
        dir.path(),
        &["--until-revision", &now.to_string()],
    ));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("compacted its history"),
        "says so: {stderr}"
    );
    assert_eq!(dst.dump(b"/f/").await, src.dump(b"/f/").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_destination_write_stops_follow_with_exit_3() {
    let (src, dst, dir) = setup().await;
    let child = spawn_follow(dir.path(), &[]);
    // Wait for the initial copy.
    for _ in 0..300 {
        if dst.dump(b"/f/").await.len() == 3000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut d = dst.client().await;
    d.put("/f/0042", "foreign", None)
        .await
        .expect("foreign write");
    let mut c = src.client().await;
    c.put("/f/0042", "from the source", None)
        .await
        .expect("source write");
    let (code, _, stderr) = finish(child);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("/f/0042") && stderr.contains("etcdplan::follow::conflict"),
        "{stderr}"
    );
    let kvs = dst.dump(b"/f/0042").await;
    assert_eq!(kvs[0].1, b"foreign", "never overwritten");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_stops_cleanly_and_json_reports_progress() {
    // A small keyspace, so the initial apply is over quickly.
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed((0..10).map(|i| (format!("/f/{i:04}"), "x"))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /f/\n");
    let child = spawn_follow(dir.path(), &["--format", "json"]);
    for _ in 0..600 {
        if dst.dump(b"/f/").await.len() == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut c = src.client().await;
    c.put("/f/new", "1", None).await.expect("put");
    // Wait until following has applied it, then for a few progress reports.
    for _ in 0..600 {
        if !dst.dump(b"/f/new").await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dst.dump(b"/f/new").await.len(), 1, "followed");
    tokio::time::sleep(Duration::from_secs(2)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let (code, stdout, stderr) = finish(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("Follow stopped (interrupted): source revision"),
        "{stderr}"
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with("{\"follow"))
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["follow"]["applied_revision"].is_i64()),
        "{stdout}"
    );
    let stopped = lines.last().expect("a final line");
    assert!(
        stopped["follow_stopped"]["last_applied_revision"]
            .as_i64()
            .is_some_and(|r| r > 0),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_transaction_too_big_for_one_destination_transaction_is_split_and_said() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed([("/f/seed", "x")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /f/\n");
    let start = src.revision().await;
    let (code, _, stderr) = finish(spawn_follow(
        dir.path(),
        &["--until-revision", &start.to_string()],
    ));
    assert_eq!(code, Some(0), "{stderr}");
    // One source transaction of 40 puts; the destination allows 16 ops per txn.
    let ops: Vec<etcd_client::TxnOp> = (0..40)
        .map(|i| etcd_client::TxnOp::put(format!("/f/big/{i:02}"), format!("{i}"), None))
        .collect();
    let mut c = src.client().await;
    c.txn(etcd_client::Txn::new().and_then(ops))
        .await
        .expect("txn");
    let until = src.revision().await;
    let (code, _, stderr) = finish(spawn_follow(
        dir.path(),
        &[
            "--until-revision",
            &until.to_string(),
            "--max-txn-ops",
            "16",
        ],
    ));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("does not fit one destination transaction"),
        "says so: {stderr}"
    );
    assert_eq!(dst.dump(b"/f/").await, src.dump(b"/f/").await);
}

/// Both sides behind proxies that reset every connection after 0.3-1 s: the
/// initial copy and the follow ride through the resets (the watch reopens
/// from the last applied revision) and end equal to the source.
#[tokio::test(flavor = "multi_thread")]
async fn follows_through_repeated_connection_resets() {
    let (src, dst, dir) = setup().await;
    let (src_proxy, dst_proxy) = tokio::join!(
        Proxy::start(src.client_port(0)),
        Proxy::start(dst.client_port(0))
    );
    write_plan_via(
        dir.path(),
        (&src, &[src_proxy.endpoint("http")]),
        (&dst, &[dst_proxy.endpoint("http")]),
        "prefixes:\n  - from: /f/\nprune: true\non_conflict: overwrite\n",
    );
    for p in [&src_proxy, &dst_proxy] {
        p.reset_after(Duration::from_millis(300), Duration::from_millis(1000));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = hammer(src.client().await, stop.clone());
    let child = spawn_follow(dir.path(), &["--cutover-file", "cutover"]);
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.expect("writer");
    assert!(writes > 100, "the writer was busy ({writes} writes)");
    let cutover_revision = src.revision().await;
    std::fs::write(dir.path().join("cutover"), "").expect("cutover file");
    let (code, _, stderr) = tokio::task::spawn_blocking(move || finish(child))
        .await
        .expect("wait");
    assert_eq!(code, Some(0), "{stderr}");
    let resets = src_proxy.resets() + dst_proxy.resets();
    assert!(resets >= 6, "the proxies reset connections ({resets})");
    equal_at(&src, &dst, cutover_revision).await;
}
