//! `etcdplan plan --undo` against real etcd servers: the inverse of an
//! applied saved plan, rebuilt from the destination's own history.

mod common;

use common::{Cluster, etcdplan, run, write_plan};
use etcd_client::{GetOptions, PutOptions};

/// Every key under `prefix` with its value and lease.
async fn state(c: &Cluster, prefix: &str) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
    let mut client = c.client().await;
    client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .expect("get")
        .kvs()
        .iter()
        .map(|kv| (kv.key().to_vec(), kv.value().to_vec(), kv.lease()))
        .collect()
}

fn ok(ran: &common::Ran) {
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
}

/// A source under /a/ and a destination under /b/ (a rewrite) holding keys
/// the apply updates, prunes (one on a live lease) and leaves alone.
async fn setup() -> (Cluster, Cluster, tempfile::TempDir) {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed((0..300).map(|i| (format!("/a/{i:04}"), format!("{{\"v\":{i}}}"))))
        .await;
    src.seed([("/a/binary", vec![0u8, 255, 10, 0])]).await;
    dst.seed((0..100).map(|i| (format!("/b/{i:04}"), format!("{{\"old\":{i}}}"))))
        .await;
    dst.seed([("/b/zz-stale", "prune me"), ("/b/0050", "{\"v\":50}")])
        .await;
    let mut c = dst.client().await;
    let lease = c.lease_grant(600, None).await.expect("grant").id();
    c.put(
        "/b/zz-leased",
        "pruned, on a lease",
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .expect("put");
    c.put("/unrelated", "kept", None).await.expect("put");
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /a/\n    to: /b/\nprune: true\non_conflict: overwrite\nsensitive: [/a/0001]\n",
    );
    (src, dst, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn undo_across_a_rewrite_gives_back_the_pre_apply_state_byte_for_byte() {
    let (_src, dst, dir) = setup().await;
    let before = state(&dst, "/").await;
    ok(&run(etcdplan(dir.path()).args([
        "plan",
        "plan.yaml",
        "--out",
        "saved.json",
    ])));
    ok(&run(etcdplan(dir.path()).args(["apply", "saved.json"])));
    assert_ne!(state(&dst, "/").await, before, "the apply changed things");

    let ran = run(etcdplan(dir.path()).args([
        "plan",
        "--undo",
        "saved.json",
        "--out",
        "undo.json",
        "--detailed-exitcode",
    ]));
    assert_eq!(ran.code, Some(2), "{}\n{}", ran.stdout, ran.stderr);
    // 201 keys created (/a/0100.. and /a/binary) are deleted, 99 updated keys
    // get their old values (/b/0050 already held the source value), and
    // the two pruned keys come back.
    assert!(
        ran.stdout
            .contains("Plan: 2 to create, 99 to update, 201 to delete"),
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.contains("etcdplan plan: undo of test-plan"));
    let ran = run(etcdplan(dir.path()).args(["show", "undo.json", "--format", "json"]));
    ok(&ran);
    let json: serde_json::Value = serde_json::from_str(&ran.stdout).expect("json");
    assert!(json["undo"].is_object(), "{}", ran.stdout);

    let ran = run(etcdplan(dir.path()).args(["apply", "undo.json"]));
    ok(&ran);
    assert!(ran.stdout.contains("Verified: 302"), "{}", ran.stdout);
    assert_eq!(
        state(&dst, "/").await,
        before,
        "keys, values and leases as before the apply"
    );

    // An undo applied twice writes nothing the second time.
    let revision = dst.revision().await;
    let ran = run(etcdplan(dir.path()).args(["apply", "undo.json"]));
    ok(&ran);
    assert!(
        ran.stdout
            .contains("Apply complete: 0 created, 0 updated, 0 deleted, 302 already in place."),
        "{}",
        ran.stdout
    );
    assert_eq!(dst.revision().await, revision);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_changed_after_the_apply_is_kept_and_the_undo_exits_3() {
    let (_src, dst, dir) = setup().await;
    let before = state(&dst, "/").await;
    ok(&run(etcdplan(dir.path()).args([
        "plan",
        "plan.yaml",
        "--out",
        "saved.json",
    ])));
    ok(&run(etcdplan(dir.path()).args(["apply", "saved.json"])));
    let mut c = dst.client().await;
    c.put("/b/0007", "changed after the apply", None)
        .await
        .expect("put");
    c.put("/b/0250", "changed after the apply", None)
        .await
        .expect("put");

    let ran =
        run(etcdplan(dir.path()).args(["plan", "--undo", "saved.json", "--out", "undo.json"]));
    ok(&ran);
    assert!(ran.stdout.contains("! /b/0007"), "{}", ran.stdout);
    assert!(
        ran.stdout.contains("2 conflicting left as is"),
        "{}",
        ran.stdout
    );
    // A sensitive key's values are never printed, in the undo either.
    assert!(!ran.stdout.contains("\"v\":1}"), "{}", ran.stdout);

    let ran = run(etcdplan(dir.path()).args(["apply", "undo.json"]));
    assert_eq!(ran.code, Some(3), "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stderr.contains("/b/0007"), "{}", ran.stderr);
    let now = state(&dst, "/").await;
    let changed = |k: &[u8]| {
        now.iter()
            .find(|(key, _, _)| key == k)
            .map(|(_, v, _)| v.clone())
    };
    assert_eq!(
        changed(b"/b/0007").as_deref(),
        Some(&b"changed after the apply"[..])
    );
    assert_eq!(
        changed(b"/b/0250").as_deref(),
        Some(&b"changed after the apply"[..])
    );
    // Everything else is back as it was.
    let others = |s: &[(Vec<u8>, Vec<u8>, i64)]| -> Vec<(Vec<u8>, Vec<u8>, i64)> {
        s.iter()
            .filter(|(k, _, _)| k != b"/b/0007" && k != b"/b/0250")
            .cloned()
            .collect()
    };
    assert_eq!(others(&now), others(&before));
}

#[tokio::test(flavor = "multi_thread")]
async fn compacted_history_makes_undo_fail_clearly() {
    let (_src, dst, dir) = setup().await;
    ok(&run(etcdplan(dir.path()).args([
        "plan",
        "plan.yaml",
        "--out",
        "saved.json",
    ])));
    ok(&run(etcdplan(dir.path()).args(["apply", "saved.json"])));
    let mut c = dst.client().await;
    c.compact(dst.revision().await, None)
        .await
        .expect("compact");
    let ran = run(etcdplan(dir.path()).args(["plan", "--undo", "saved.json"]));
    assert_eq!(ran.code, Some(1), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stderr.contains("etcdplan::undo::compacted"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("can no longer be undone"),
        "{}",
        ran.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn undo_of_a_move_restores_the_source_and_removes_the_copies() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed((0..200).map(|i| (format!("/m/{i:04}"), format!("moved {i}"))))
        .await;
    src.seed([("/keep/x", "outside")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /m/\n    to: /n/\ndelete_source: true\n",
    );
    let source_before = state(&src, "/").await;
    let destination_before = state(&dst, "/").await;
    ok(&run(etcdplan(dir.path()).args([
        "plan",
        "plan.yaml",
        "--out",
        "saved.json",
    ])));
    ok(&run(etcdplan(dir.path()).args(["apply", "saved.json"])));
    assert!(state(&src, "/m/").await.is_empty(), "moved away");
    assert_eq!(state(&dst, "/n/").await.len(), 200);

    let ran =
        run(etcdplan(dir.path()).args(["plan", "--undo", "saved.json", "--out", "undo.json"]));
    ok(&ran);
    assert!(
        ran.stdout.contains("put back on the source"),
        "{}",
        ran.stdout
    );
    // The header names both clusters, and the Plan line counts the restores.
    let (src_id, dst_id) = (src.cluster_id().await, dst.cluster_id().await);
    assert!(
        ran.stdout
            .contains(&format!("  destination  cluster {dst_id:016x}  revision "))
            && ran
                .stdout
                .contains(&format!("  source       cluster {src_id:016x}  revision "))
            && ran.stdout.contains("(200 moved key(s) put back)"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout
            .contains("Plan: 0 to create, 0 to update, 200 to delete, 0 unchanged, 200 to put back on the source."),
        "{}",
        ran.stdout
    );
    let md = run(etcdplan(dir.path()).args(["show", "undo.json", "--format", "markdown"]));
    assert!(
        md.stdout
            .contains(&format!("Undo: destination cluster `{dst_id:016x}`"))
            && md.stdout.contains(&format!(
                "source cluster `{src_id:016x}` gets 200 moved key(s) back"
            )),
        "{}",
        md.stdout
    );
    let ran = run(etcdplan(dir.path()).args(["apply", "undo.json"]));
    ok(&ran);
    assert!(
        ran.stdout.contains("Restored on the source: 200 key(s)"),
        "{}",
        ran.stdout
    );
    assert_eq!(state(&src, "/").await, source_before);
    assert_eq!(state(&dst, "/").await, destination_before);

    // Twice: nothing written on either side.
    let (s, d) = (src.revision().await, dst.revision().await);
    ok(&run(etcdplan(dir.path()).args(["apply", "undo.json"])));
    assert_eq!((src.revision().await, dst.revision().await), (s, d));
}
