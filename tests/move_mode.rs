//! Move mode (`delete_source: true`): the planned keys leave the source only
//! once the destination holds and verifies them, each delete guarded by the
//! key's mod revision at the planned source revision.

mod common;

use std::process::{Command as StdCommand, Stdio};
use std::time::Duration;

use common::{Cluster, etcdplan, run, write_plan};

#[tokio::test(flavor = "multi_thread")]
async fn move_copies_then_deletes_from_the_source() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed((0..300).map(|i| (format!("/m/{i:04}"), format!("v{i}"))))
        .await;
    src.seed([
        ("/m/skip/x", "excluded stays"),
        ("/m/clash", "source value"),
        ("/outside/y", "not planned"),
    ])
    .await;
    dst.seed([("/m/0007", "v7"), ("/m/clash", "destination value")])
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /m/\n    exclude: [/m/skip/]\ndelete_source: true\non_conflict: keep\n",
    );
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stdout.contains("300 to delete from the source (move mode), each deleted once the destination holds it, guarded by its mod revision:"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains(
            "Plan: 299 to create, 0 to update, 0 to delete, 1 conflicting left as is, 1 unchanged, 300 to delete from source."
        ),
        "{}",
        ran.stdout
    );
    let check = run(etcdplan(dir.path()).args(["check", "plan.yaml"]));
    assert_eq!(check.code, Some(0), "{}", check.stdout);
    assert!(
        check
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with("write") && l.contains(" /m/ ")),
        "move mode needs write on the source: {}",
        check.stdout
    );

    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout
            .contains("Moved: 300 deleted from the source, 0 already gone."),
        "{}",
        ran.stdout
    );
    let left = src.dump(b"/m/").await;
    let left_keys: Vec<&[u8]> = left.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(
        left_keys,
        [&b"/m/clash"[..], b"/m/skip/x"],
        "only the conflict and the excluded key stay"
    );
    assert_eq!(src.dump(b"/outside/").await.len(), 1);
    let moved = dst.dump(b"/m/").await;
    assert_eq!(moved.len(), 301);
    assert!(moved.contains(&(b"/m/clash".to_vec(), b"destination value".to_vec())));
    assert!(moved.contains(&(b"/m/0123".to_vec(), b"v123".to_vec())));

    // A rerun has nothing left to move.
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout.contains("Nothing to apply."), "{}", ran.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_copy_and_delete_resumes() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed((0..200).map(|i| (format!("/c/{i:04}"), format!("v{i}"))))
        .await;
    let original = src.dump(b"/c/").await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The copy happened, the deletes did not: the state a crash between the
    // two phases leaves.
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /c/\n");
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /c/\ndelete_source: true\n",
    );
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml"]));
    assert!(
        ran.stdout.contains(
            "Plan: 0 to create, 0 to update, 0 to delete, 200 unchanged, 200 to delete from source."
        ),
        "{}",
        ran.stdout
    );
    let before = dst.revision().await;
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(
        dst.revision().await,
        before,
        "nothing rewritten on the destination"
    );
    assert!(src.dump(b"/c/").await.is_empty());
    assert_eq!(dst.dump(b"/c/").await, original);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_the_deletes_then_rerun_converges() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    let n = 20_000;
    src.seed((0..n).map(|i| (format!("/k/{i:06}"), format!("value-{i}"))))
        .await;
    let original = src.dump(b"/k/").await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /k/\ndelete_source: true\n",
    );
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("etcdplan"))
        .current_dir(dir.path())
        .args([
            "apply",
            "plan.yaml",
            "--auto-approve",
            "--max-listed",
            "3",
            "--concurrency",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // Kill once the deletes have started.
    let mut c = src.client().await;
    let mut killed_at = n as i64;
    for _ in 0..6000 {
        let count = c
            .get(
                "/k/",
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_count_only(),
                ),
            )
            .await
            .expect("count")
            .count();
        if count < n as i64 {
            child.kill().expect("kill -9");
            killed_at = count;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = child.wait();
    assert!(killed_at < n as i64, "killed during the delete phase");
    assert_eq!(
        dst.dump(b"/k/").await,
        original,
        "the copy was complete before any delete"
    );
    let ran = run(etcdplan(dir.path()).args([
        "apply",
        "plan.yaml",
        "--auto-approve",
        "--max-listed",
        "3",
    ]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(src.dump(b"/k/").await.is_empty());
    assert_eq!(dst.dump(b"/k/").await, original);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_key_changed_since_the_plan_is_kept() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed((0..50).map(|i| (format!("/s/{i:02}"), format!("v{i}"))))
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /s/\ndelete_source: true\n",
    );
    let ran = run(etcdplan(dir.path()).args([
        "plan",
        "plan.yaml",
        "--out",
        "saved.json",
        "--format",
        "json",
    ]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let json: serde_json::Value = serde_json::from_str(&ran.stdout).expect("JSON");
    assert_eq!(json["summary"]["delete_source"], 50);
    assert_eq!(json["source_deletes"].as_array().map(Vec::len), Some(50));
    assert!(json["source_deletes"][0]["mod_revision"].is_i64());

    let mut c = src.client().await;
    c.put("/s/07", "changed after the plan", None)
        .await
        .expect("put");
    let ran = run(etcdplan(dir.path()).args(["apply", "saved.json"]));
    assert_eq!(ran.code, Some(3), "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stderr.contains("/s/07"), "{}", ran.stderr);
    let left = src.dump(b"/s/").await;
    assert_eq!(
        left,
        vec![(b"/s/07".to_vec(), b"changed after the plan".to_vec())]
    );
    // The destination holds what was reviewed.
    assert_eq!(dst.dump(b"/s/07").await[0].1, b"v7");
}
