//! `etcdplan apply` against real etcd servers: full migrations, crashes and
//! reruns, foreign writers, saved plans, a member going down, odd values.

mod common;

use common::{Cluster, ClusterSpec, UserSpec, etcdplan, run, write_file, write_plan};
use etcd_client::Permission;

/// Starts `etcdplan apply plan.yaml --auto-approve` in `dir` as a child
/// process (to kill or interrupt), listing few changes so that its output
/// never fills a pipe nobody reads yet.
fn spawn_apply(dir: &std::path::Path, extra: &[&str]) -> std::process::Child {
    common::etcdplan_child(dir)
        .args(["apply", "plan.yaml", "--auto-approve", "--max-listed", "5"])
        .args(extra)
        .spawn()
        .expect("spawn apply")
}

/// Everything under `prefix` on a cluster, as (key, value) pairs.
async fn dump(c: &Cluster, prefix: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    c.dump(prefix.as_bytes()).await
}

/// The source under `from` with `from` replaced by `to`.
fn mapped(kvs: &[(Vec<u8>, Vec<u8>)], from: &str, to: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    kvs.iter()
        .map(|(k, v)| {
            let mut key = to.as_bytes().to_vec();
            key.extend_from_slice(&k[from.len()..]);
            (key, v.clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn full_trident_migration_with_rewrite_exclusions_and_prune() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed(common::trident_keys(200)).await;
    dst.seed([
        ("/migrated/v1/volume/stale", "{}"),            // pruned
        ("/migrated/v1/txn/keep-me", "{\"op\":\"x\"}"), // excluded: left alone
        ("/unrelated/key", "untouched"),                // outside the mapping
    ])
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /trident/v1/\n    to: /migrated/v1/\n    exclude: [/trident/v1/txn/]\nprune: true\non_conflict: overwrite\nsensitive: [/trident/v1/backend/]\n",
    );
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains("Apply complete:"), "{}", ran.stdout);
    assert!(ran.stdout.contains("1 deleted"), "{}", ran.stdout);
    assert!(ran.stdout.contains("Verified:"), "{}", ran.stdout);
    assert!(!ran.stdout.contains("backend-secret") && !ran.stderr.contains("backend-secret"));

    let source: Vec<_> = dump(&src, "/trident/v1/")
        .await
        .into_iter()
        .filter(|(k, _)| !k.starts_with(b"/trident/v1/txn/"))
        .collect();
    let copied: Vec<_> = dump(&dst, "/migrated/v1/")
        .await
        .into_iter()
        .filter(|(k, _)| !k.starts_with(b"/migrated/v1/txn/"))
        .collect();
    assert_eq!(copied, mapped(&source, "/trident/v1/", "/migrated/v1/"));
    assert_eq!(
        dump(&dst, "/migrated/v1/txn/").await.len(),
        1,
        "excluded key kept"
    );
    assert_eq!(dump(&dst, "/unrelated/").await[0].1, b"untouched");

    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--detailed-exitcode"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stdout);
    assert!(
        ran.stdout
            .contains("No changes. The destination matches the source.")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rerun_after_success_writes_nothing() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed((0..500).map(|i| (format!("/r/{i:04}"), format!("v{i}"))))
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /r/\n");
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--out", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);

    let ran = run(etcdplan(dir.path()).args(["apply", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout
            .contains("Apply complete: 500 created, 0 updated, 0 deleted, 0 already in place.")
    );
    let after_first = dst.revision().await;

    // The saved plan again: everything in place, the revision does not move.
    let ran = run(etcdplan(dir.path()).args(["apply", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout
            .contains("Apply complete: 0 created, 0 updated, 0 deleted, 500 already in place."),
        "{}",
        ran.stdout
    );
    assert_eq!(dst.revision().await, after_first);

    // The plan file again: no changes, nothing written.
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
    assert_eq!(ran.code, Some(0));
    assert!(
        ran.stdout
            .contains("No changes. The destination matches the source.")
    );
    assert_eq!(dst.revision().await, after_first);

    // One new key among 500 unchanged: verified key by key (the sparse path).
    let mut c = src.client().await;
    c.put("/r/zzzz", "late", None).await.expect("put");
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stdout.contains("Apply complete: 1 created"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains("Verified: 1 planned key(s)"),
        "{}",
        ran.stdout
    );

    // JSON result of a no-op.
    let ran = run(etcdplan(dir.path()).args([
        "apply",
        "plan.yaml",
        "--auto-approve",
        "--format",
        "json",
    ]));
    let json: serde_json::Value = serde_json::from_str(&ran.stdout).expect("one JSON object");
    assert_eq!(json["result"], "no_changes");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_several_points_then_rerun_converges() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    let n = 20_000;
    src.seed((0..n).map(|i| {
        (
            format!("/big/{i:06}"),
            format!("{{\"id\":{i},\"pad\":\"{}\"}}", "p".repeat(150)),
        )
    }))
    .await;
    dst.seed([("/outside/a", "1"), ("/big-not/b", "2")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /big/\n");
    let mut progressed = Vec::new();
    // Kill as soon as the destination holds at least this many keys.
    for at_least in [1u64, 6_000, 12_000] {
        let mut child = spawn_apply(dir.path(), &["--concurrency", "2"]);
        dst.wait_for_keys("/big/", at_least).await;
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        progressed.push(dump(&dst, "/big/").await.len());
    }
    assert!(
        progressed.iter().all(|&n| n > 0 && n < 20_000),
        "kills landed mid-run: {progressed:?}"
    );
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains("Verified:"));
    assert_eq!(dump(&dst, "/big/").await, dump(&src, "/big/").await);
    assert_eq!(dump(&dst, "/outside/").await.len(), 1);
    assert_eq!(dump(&dst, "/big-not/").await.len(), 1);
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--detailed-exitcode"]));
    assert_eq!(ran.code, Some(0), "nothing left to do: {}", ran.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_finishes_in_flight_and_says_how_to_resume() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed((0..20_000).map(|i| (format!("/s/{i:06}"), format!("value-{i}"))))
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /s/\n");
    let child = spawn_apply(dir.path(), &["--rate", "4000"]);
    dst.wait_for_keys("/s/", 2_000).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Interrupted after the transactions in flight"),
        "{stderr}"
    );
    assert!(
        // The command as it was run, every flag included (--rate too).
        stderr.contains(
            "Resume with: etcdplan apply plan.yaml --auto-approve --max-listed 5 --rate 4000"
        ),
        "{stderr}"
    );
    let partial = dump(&dst, "/s/").await.len();
    assert!(partial > 0 && partial < 20_000, "{partial}");
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(dump(&dst, "/s/").await, dump(&src, "/s/").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_write_between_plan_and_apply_is_never_overwritten() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed((0..300).map(|i| (format!("/f/{i:04}"), format!("source-{i}"))))
        .await;
    dst.seed([("/f/0200", "old")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /f/\non_conflict: overwrite\n",
    );
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--out", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);

    let mut c = dst.client().await;
    c.put("/f/0100", "foreign-create", None).await.expect("put");
    c.put("/f/0200", "foreign-update", None).await.expect("put");

    let ran = run(etcdplan(dir.path()).args(["apply", "saved.json"]));
    assert_eq!(ran.code, Some(3), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stderr
            .contains("stale plan or concurrent writer: run plan again"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("/f/0100") && ran.stderr.contains("/f/0200"),
        "{}",
        ran.stderr
    );
    let kvs = dump(&dst, "/f/").await;
    let get = |k: &str| {
        kvs.iter()
            .find(|(key, _)| key == k.as_bytes())
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("/f/0100"), Some(b"foreign-create".to_vec()));
    assert_eq!(get("/f/0200"), Some(b"foreign-update".to_vec()));
}

#[tokio::test(flavor = "multi_thread")]
async fn saved_plan_reads_values_at_its_revision_and_checks_compaction() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed([("/v/a", "planned-a"), ("/v/b", "planned-b")])
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /v/\n");
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--out", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    std::fs::copy(
        dir.path().join("saved.json"),
        dir.path().join("saved2.json"),
    )
    .expect("copy");

    // The source changes after the plan: apply writes what was reviewed.
    let mut c = src.client().await;
    c.put("/v/a", "changed-after-plan", None)
        .await
        .expect("put");
    let ran = run(etcdplan(dir.path()).args(["apply", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(dump(&dst, "/v/").await[0].1, b"planned-a");

    // Compacted past the saved revision, with /v/a changed: refused, exit 3.
    let rev = src.revision().await;
    c.compact(rev, None).await.expect("compact");
    let mut d = dst.client().await;
    d.delete("/v/", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .expect("clear");
    let ran = run(etcdplan(dir.path()).args(["apply", "saved2.json"]));
    assert_eq!(ran.code, Some(3), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stderr.contains("etcdplan::apply::source_changed"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("/v/a") && !ran.stderr.contains("/v/b"),
        "{}",
        ran.stderr
    );
    assert!(dump(&dst, "/v/").await.is_empty(), "nothing written");

    // Compacted but unchanged: the current values still match, so it applies.
    c.put("/v/a", "planned-a", None).await.expect("put back");
    let ran = run(etcdplan(dir.path()).args(["apply", "saved2.json"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(dump(&dst, "/v/").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_survives_a_member_stopping_mid_run() {
    let (src, mut dst) = tokio::join!(
        Cluster::plaintext(),
        Cluster::start(ClusterSpec {
            members: 3,
            ..Default::default()
        })
    );
    src.seed((0..15_000).map(|i| (format!("/m/{i:06}"), format!("value-{i}"))))
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /m/\n");
    let child = spawn_apply(dir.path(), &["--rate", "5000"]);
    dst.wait_for_keys("/m/", 1_000).await;
    let before = dump(&dst, "/m/").await.len();
    // Stop the leader: the hardest case, an election mid-run.
    let leader = dst.leader().await;
    dst.stop_member(leader);
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        (1_000..15_000).contains(&before),
        "the member stopped mid-run ({before} keys copied by then)"
    );
    assert!(stdout.contains("Verified: 15,000"), "{stdout}");
    assert_eq!(dump(&dst, "/m/").await, dump(&src, "/m/").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn odd_values_are_copied_byte_for_byte() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    // The largest value etcd's default 1.5 MiB request limit admits: far
    // over a 1 MiB batch, so it goes in a transaction of its own, by default.
    let limit = etcdplan::etcd::write::DEFAULT_MAX_REQUEST_BYTES
        - etcdplan::etcd::write::TXN_OVERHEAD_BYTES
        - 3 * "/o/big".len()
        - 48;
    let big: Vec<u8> = (0..limit).map(|i| (i % 251) as u8).collect();
    src.seed([
        (b"/o/big".to_vec(), big.clone()),
        (b"/o/binary".to_vec(), vec![0, 159, 146, 150, 255, 0, 10]),
        (b"/o/\xff\xfe-key".to_vec(), b"non-utf8 key".to_vec()),
        (b"/o/empty".to_vec(), Vec::new()),
    ])
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /o/\n");
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(dump(&dst, "/o/").await, dump(&src, "/o/").await);

    // One byte more can never fit: `plan` names it (text and JSON); a
    // reviewed (saved) plan is refused before anything is written, and an
    // auto-approved plan file, written as it is planned, writes every other
    // key and names this one.
    let mut c = src.client().await;
    let mut bigger = big.clone();
    bigger.push(1);
    c.put("/o/big", bigger, None).await.expect("put");
    c.put("/o/new", "x", None).await.expect("put");
    let plan = std::fs::read_to_string(dir.path().join("plan.yaml")).expect("plan");
    std::fs::write(
        dir.path().join("plan.yaml"),
        plan + "on_conflict: overwrite\n",
    )
    .expect("write");
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stdout.contains("Cannot be written: 1 key(s)"),
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.contains("✗ /o/big (1,572,"), "{}", ran.stdout);
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--format", "json"]));
    let json: serde_json::Value = serde_json::from_str(&ran.stdout).expect("json");
    assert_eq!(json["too_large"][0]["key"], "/o/big", "{}", ran.stdout);
    assert_eq!(json["max_request_bytes"], 1_572_864);
    let before = dst.revision().await;
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--out", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let ran = run(etcdplan(dir.path()).args(["apply", "saved.json"]));
    assert_eq!(ran.code, Some(1), "{}", ran.stdout);
    assert!(
        ran.stderr.contains("etcdplan::apply::value_too_large"),
        "{}",
        ran.stderr
    );
    assert_eq!(dst.revision().await, before, "nothing written");
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
    assert_eq!(ran.code, Some(1), "{}", ran.stdout);
    assert!(
        ran.stderr.contains("etcdplan::apply::value_too_large"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("/o/big"),
        "names the key: {}",
        ran.stderr
    );
    let copied = dump(&dst, "/o/").await;
    assert!(
        copied.iter().any(|(k, _)| k == b"/o/new"),
        "the rest is written"
    );
    assert!(
        copied
            .iter()
            .all(|(k, v)| k != b"/o/big" || v.len() == big.len()),
        "the key that cannot fit is left as it was"
    );
}

/// A one-member destination with auth on and one user, `migrator`
/// (password `migratorpw`), granted `grants`.
async fn with_migrator(grants: Vec<Permission>) -> Cluster {
    Cluster::start(ClusterSpec {
        members: 1,
        tls: false,
        enable_v2: false,
        users: vec![UserSpec {
            name: "migrator",
            password: "migratorpw",
            grants,
        }],
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn no_write_permission_is_refused_before_any_write() {
    let (src, dst) = tokio::join!(
        Cluster::plaintext(),
        with_migrator(vec![
            Permission::read_write("/ok/").with_prefix(),
            Permission::read("/ro/").with_prefix(),
        ])
    );
    src.seed([("/a/1", "x"), ("/b/1", "y")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "version: 1\nsource:\n{}destination:\n  endpoints: [{}]\n  auth:\n    username: migrator\n    password_env: DST_PW\nprefixes:\n  - from: /a/\n    to: /ok/\n  - from: /b/\n    to: /ro/\n",
        common::side_yaml(&src, None),
        dst.endpoint(0)
    );
    write_file(dir.path(), "plan.yaml", &text);
    let before = dst.revision().await;
    let ran = run(etcdplan(dir.path()).env("DST_PW", "migratorpw").args([
        "apply",
        "plan.yaml",
        "--auto-approve",
    ]));
    assert_eq!(ran.code, Some(1), "{}", ran.stdout);
    assert!(
        ran.stderr.contains("etcdplan::apply::not_writable"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("`/ro/`") && ran.stderr.contains("migrator"),
        "{}",
        ran.stderr
    );
    assert_eq!(
        dst.revision().await,
        before,
        "nothing written, not even /ok/"
    );
}

/// A saved plan's checks before writing go out at once: with two ranges
/// refused, the error still names the first in the plan's order.
#[tokio::test(flavor = "multi_thread")]
async fn a_saved_plan_names_the_first_range_it_cannot_write_and_writes_nothing() {
    let (src, dst) = tokio::join!(
        Cluster::plaintext(),
        with_migrator(vec![
            Permission::read_write("/ok/").with_prefix(),
            Permission::read("/ro1/").with_prefix(),
            Permission::read("/ro2/").with_prefix(),
        ])
    );
    src.seed([("/a/1", "x"), ("/b/1", "y"), ("/c/1", "z")])
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "version: 1\nsource:\n{}destination:\n  endpoints: [{}]\n  auth:\n    username: migrator\n    password_env: DST_PW\nprefixes:\n  - from: /a/\n    to: /ok/\n  - from: /b/\n    to: /ro1/\n  - from: /c/\n    to: /ro2/\n",
        common::side_yaml(&src, None),
        dst.endpoint(0)
    );
    write_file(dir.path(), "plan.yaml", &text);
    let planned = run(etcdplan(dir.path()).env("DST_PW", "migratorpw").args([
        "plan",
        "plan.yaml",
        "--out",
        "saved.json",
    ]));
    assert_eq!(
        planned.code,
        Some(0),
        "{}{}",
        planned.stdout,
        planned.stderr
    );
    let before = dst.revision().await;
    let ran = run(etcdplan(dir.path())
        .env("DST_PW", "migratorpw")
        .args(["apply", "saved.json"]));
    assert_eq!(ran.code, Some(1), "{}", ran.stdout);
    assert!(
        ran.stderr.contains("etcdplan::apply::not_writable"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("`/ro1/`") && !ran.stderr.contains("/ro2/"),
        "the first refused range, in the plan's order: {}",
        ran.stderr
    );
    assert_eq!(
        dst.revision().await,
        before,
        "nothing written, not even /ok/"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_terminal_apply_needs_auto_approve() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed([("/n/1", "x")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /n/\n");
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml"]));
    assert_eq!(ran.code, Some(1));
    assert!(
        ran.stdout.contains("+ /n/1"),
        "the plan is shown: {}",
        ran.stdout
    );
    assert!(ran.stderr.contains("--auto-approve"), "{}", ran.stderr);
    assert!(dump(&dst, "/n/").await.is_empty());

    let ran = run(etcdplan(dir.path()).args([
        "apply",
        "plan.yaml",
        "--auto-approve",
        "--format",
        "json",
    ]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let json: serde_json::Value = serde_json::from_str(&ran.stdout).expect("one JSON object");
    assert_eq!(json["result"], "complete");
    assert_eq!(json["apply"]["created"], 1);
    assert_eq!(json["apply"]["verified"], 1);
    assert_eq!(json["plan"]["summary"]["create"], 1);
}

/// The probes see both destination ranges empty at one revision, and the
/// plan pinned there reads neither again; once they hold keys, a rerun
/// reads them (and finds nothing to do).
#[tokio::test(flavor = "multi_thread")]
async fn destinations_seen_empty_are_not_read_again_and_a_rerun_reads_them() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed((0..300).map(|i| (format!("/a/{i:04}"), format!("a{i}"))))
        .await;
    src.seed((0..5).map(|i| (format!("/b/{i}"), format!("b{i}"))))
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /a/\n    to: /a-copy/\n  - from: /b/\n    to: /b-copy/\n",
    );
    let skipped = "destination seen empty at this revision: not read again";
    let args = ["apply", "plan.yaml", "--auto-approve", "-vv"];
    let ran = run(etcdplan(dir.path()).args(args));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(ran.stderr.matches(skipped).count(), 2, "{}", ran.stderr);
    assert!(ran.stdout.contains("305 created"), "{}", ran.stdout);
    assert_eq!(
        dump(&dst, "/a-copy/").await,
        mapped(&dump(&src, "/a/").await, "/a/", "/a-copy/")
    );
    assert_eq!(
        dump(&dst, "/b-copy/").await,
        mapped(&dump(&src, "/b/").await, "/b/", "/b-copy/")
    );

    let again = run(etcdplan(dir.path()).args(args));
    assert_eq!(again.code, Some(0), "{}\n{}", again.stdout, again.stderr);
    assert!(!again.stderr.contains(skipped), "{}", again.stderr);
    assert!(again.stdout.contains("No changes"), "{}", again.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saved_plan_reads_dense_mappings_by_one_scan_and_sparse_ones_by_batch() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    // /a/: every key a create (dense). /b/: one create among keys already
    // in place (sparse), so its batch reads its one value.
    src.seed((0..700).map(|i| (format!("/a/{i:04}"), format!("a{i}"))))
        .await;
    src.seed((0..50).map(|i| (format!("/b/{i:02}"), format!("b{i}"))))
        .await;
    dst.seed((1..50).map(|i| (format!("/b-copy/{i:02}"), format!("b{i}"))))
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /a/\n    to: /a-copy/\n  - from: /b/\n    to: /b-copy/\n",
    );
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--out", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    // Written after the plan: the apply must write the planned values.
    let mut c = src.client().await;
    c.put("/a/0350", "changed-after-plan", None)
        .await
        .expect("put");
    let before = dump(&src, "/a/").await;

    let ran = run(etcdplan(dir.path()).args(["apply", "saved.json", "-vv"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    let scanned = "saved values: one scan of the source range";
    assert_eq!(ran.stderr.matches(scanned).count(), 1, "{}", ran.stderr);
    assert!(ran.stdout.contains("701 created"), "{}", ran.stdout);
    let mut planned = before.clone();
    let at = planned
        .iter()
        .position(|(k, _)| k == b"/a/0350")
        .expect("key");
    planned[at].1 = b"a350".to_vec();
    assert_eq!(
        dump(&dst, "/a-copy/").await,
        mapped(&planned, "/a/", "/a-copy/")
    );
    assert_eq!(
        dump(&dst, "/b-copy/").await,
        mapped(&dump(&src, "/b/").await, "/b/", "/b-copy/")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_inside_a_batch_span_that_the_plan_does_not_write_is_kept() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed((0..10).map(|i| (format!("/i/{i:04}"), format!("s{i}"))))
        .await;
    // Between two planned creates, in the destination only (kept: no prune).
    dst.seed([("/i/0005x", "theirs")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /i/\n");
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve", "-vv"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stderr.contains("range_compares=true"), "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("a key inside the batch's span: guarding each key"),
        "{}",
        ran.stderr
    );
    assert!(ran.stdout.contains("10 created"), "{}", ran.stdout);
    let mut want = dump(&src, "/i/").await;
    want.push((b"/i/0005x".to_vec(), b"theirs".to_vec()));
    want.sort();
    assert_eq!(dump(&dst, "/i/").await, want);
}
