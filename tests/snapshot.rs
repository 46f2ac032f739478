//! Plan and apply from an etcd snapshot file (`source: { snapshot: FILE }`),
//! saved by the etcdctl of the etcd under test (the suite runs against 3.4
//! and 3.5), into real destination servers.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Cluster, etcdctl_binary, etcdplan, run, side_yaml, write_file};
use etcd_client::{GetOptions, PutOptions};

/// `etcdctl snapshot save` of `cluster` into `dir/name`.
fn save(cluster: &Cluster, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let out = Command::new(etcdctl_binary())
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &cluster.endpoint(0), "snapshot", "save"])
        .arg(&path)
        .output()
        .expect("etcdctl snapshot save");
    assert!(
        out.status.success(),
        "snapshot save: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// A plan from the snapshot `file` into `dst`, `rest` appended.
fn snapshot_plan(dir: &Path, file: &str, dst: &Cluster, rest: &str) {
    let text = format!(
        "version: 1\nname: restore\nsource:\n  snapshot: {file}\ndestination:\n{}{rest}",
        side_yaml(dst, None),
    );
    write_file(dir, "plan.yaml", &text);
}

/// Every key under `prefix` with its value, as (key, value).
async fn state(c: &Cluster, prefix: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    c.dump(prefix.as_bytes()).await
}

fn mapped(kvs: &[(Vec<u8>, Vec<u8>)], from: &str, to: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    kvs.iter()
        .map(|(k, v)| {
            let rest = &k[from.len()..];
            ([to.as_bytes(), rest].concat(), v.clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prefix_restored_with_a_rewrite_is_the_source_at_the_snapshot_byte_for_byte() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::tls());
    src.seed((0..300).map(|i| {
        (
            format!("/trident/v1/vol/{i:04}"),
            format!("{{\"size\":{i}}}"),
        )
    }))
    .await;
    src.seed([
        ("/trident/v1/bin", vec![0u8, 0xff, 0x80, b'\n']),
        ("/other/x", b"outside".to_vec()),
    ])
    .await;
    let mut c = src.client().await;
    c.put("/trident/v1/vol/0001", "changed before", None)
        .await
        .expect("put");
    c.delete("/trident/v1/vol/0002", None)
        .await
        .expect("delete");
    let at_snapshot = state(&src, "/trident/v1/").await;
    let dir = tempfile::tempdir().expect("tempdir");
    save(&src, dir.path(), "backup.db");
    // Later writes to the source must not appear.
    c.put("/trident/v1/vol/0003", "after the snapshot", None)
        .await
        .expect("put");
    c.put("/trident/v1/late", "after the snapshot", None)
        .await
        .expect("put");
    c.delete("/trident/v1/vol/0004", None)
        .await
        .expect("delete");
    snapshot_plan(
        dir.path(),
        "backup.db",
        &dst,
        "prefixes:\n  - from: /trident/v1/\n    to: /restored/v1/\n",
    );
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--out", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout.contains("snapshot:"), "{}", ran.stdout);
    assert!(
        ran.stdout
            .contains(&format!("Plan: {} to create", at_snapshot.len())),
        "{}",
        ran.stdout
    );
    let ran = run(etcdplan(dir.path()).args(["apply", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    let expected = mapped(&at_snapshot, "/trident/v1/", "/restored/v1/");
    assert_eq!(state(&dst, "/restored/").await, expected);
    assert!(state(&dst, "/other/").await.is_empty());
    // A rerun, fresh or saved, writes nothing.
    let before = dst.revision().await;
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout.contains("No changes"), "{}", ran.stdout);
    let ran = run(etcdplan(dir.path()).args(["apply", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(dst.revision().await, before, "a rerun writes nothing");
    // `show` renders it offline.
    let ran = run(etcdplan(dir.path()).args(["show", "saved.json"]));
    assert!(ran.stdout.contains("snapshot:"), "{}", ran.stdout);
    // The undo takes the restore back.
    let args = ["plan", "--undo", "saved.json", "--out", "undo.json"];
    let ran = run(etcdplan(dir.path()).args(args));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let ran = run(etcdplan(dir.path()).args(["apply", "undo.json"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(state(&dst, "/restored/").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_earlier_revision_is_read_as_it_was_and_one_outside_the_history_is_refused() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed([("/app/a", "1"), ("/app/b", "1")]).await;
    let early = src.revision().await;
    let early_state = state(&src, "/app/").await;
    let mut c = src.client().await;
    c.put("/app/a", "2", None).await.expect("put");
    c.delete("/app/b", None).await.expect("delete");
    c.put("/app/c", "3", None).await.expect("put");
    let dir = tempfile::tempdir().expect("tempdir");
    save(&src, dir.path(), "s.db");
    snapshot_plan(dir.path(), "s.db", &dst, "prefixes:\n  - from: /app/\n");
    let text = std::fs::read_to_string(dir.path().join("plan.yaml")).expect("read");
    let text = text.replace(
        "  snapshot: s.db\n",
        &format!("  snapshot: s.db\n  revision: {early}\n"),
    );
    write_file(dir.path(), "plan.yaml", &text);
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(state(&dst, "/app/").await, early_state);
    // Compacted history is gone from the file: revisions before it are refused.
    c.compact(early + 1, None).await.expect("compact");
    save(&src, dir.path(), "compacted.db");
    let text = text.replace("snapshot: s.db", "snapshot: compacted.db");
    write_file(dir.path(), "plan.yaml", &text);
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml"]));
    assert_eq!(ran.code, Some(1), "{}", ran.stdout);
    assert!(
        ran.stderr.contains("etcdplan::snapshot::revision")
            && ran
                .stderr
                .contains(&format!("revision {early} is not among them")),
        "{}",
        ran.stderr
    );
    let ran = run(etcdplan(dir.path()).args(["check", "plan.yaml"]));
    assert_eq!(ran.code, Some(1), "{}", ran.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_files_are_clear_errors_and_nothing_is_written() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed((0..200).map(|i| (format!("/app/{i:04}"), "x".repeat(100))))
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let good = save(&src, dir.path(), "good.db");
    let bytes = std::fs::read(&good).expect("read");
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0xff;
    // Without its hash, every page past the two meta pages garbled: the
    // tree pages the reader needs are among them (a free page alone would
    // rightly go unnoticed).
    let mut bare_flipped = bytes[..bytes.len() - 32].to_vec();
    for b in &mut bare_flipped[8192..] {
        *b = 0xa5;
    }
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "truncated.db",
            bytes[..bytes.len() / 3].to_vec(),
            "etcdplan::snapshot::damaged",
        ),
        ("flipped.db", flipped, "etcdplan::snapshot::hash_mismatch"),
        ("garbled.db", bare_flipped, "etcdplan::snapshot::damaged"),
        (
            "text.db",
            b"not a database at all\n".to_vec(),
            "etcdplan::snapshot::damaged",
        ),
        ("empty.db", Vec::new(), "etcdplan::snapshot::damaged"),
    ];
    let before = dst.revision().await;
    for (name, content, code) in cases {
        std::fs::write(dir.path().join(name), &content).expect("write");
        snapshot_plan(dir.path(), name, &dst, "prefixes:\n  - from: /app/\n");
        for cmd in [
            &["plan", "plan.yaml"][..],
            &["apply", "plan.yaml", "--auto-approve"][..],
        ] {
            let ran = run(etcdplan(dir.path()).args(cmd));
            assert_eq!(ran.code, Some(1), "{name} {cmd:?}: {}", ran.stderr);
            assert!(ran.stderr.contains(code), "{name}: {}", ran.stderr);
            assert!(ran.stderr.contains(name), "names the file: {}", ran.stderr);
            assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
        }
        // The file is read, never modified.
        assert_eq!(std::fs::read(dir.path().join(name)).expect("read"), content);
    }
    // A folder where the file belongs is refused before anything is read.
    std::fs::create_dir(dir.path().join("folder.db")).expect("mkdir");
    snapshot_plan(
        dir.path(),
        "folder.db",
        &dst,
        "prefixes:\n  - from: /app/\n",
    );
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml"]));
    assert_eq!(ran.code, Some(1));
    assert!(ran.stderr.contains("folder.db"), "{}", ran.stderr);
    assert_eq!(dst.revision().await, before, "nothing was written");
    // The good file, checked.
    snapshot_plan(dir.path(), "good.db", &dst, "prefixes:\n  - from: /app/\n");
    let ran = run(etcdplan(dir.path()).args(["check", "plan.yaml"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    for line in [
        "integrity  sha256 appended by `snapshot save` verified",
        "keys       200 under the plan's prefixes",
    ] {
        assert!(ran.stdout.contains(line), "{line}: {}", ran.stdout);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn leases_in_a_snapshot_get_their_granted_ttl_or_are_dropped_or_skipped() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    let mut c = src.client().await;
    let lease = c.lease_grant(600, None).await.expect("grant").id();
    c.put("/l/leased", "v", Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("put");
    c.put("/l/plain", "p", None).await.expect("put");
    let dir = tempfile::tempdir().expect("tempdir");
    save(&src, dir.path(), "s.db");
    let lease_of = |kvs: &etcd_client::GetResponse| kvs.kvs()[0].lease();
    for (mode, leased_written) in [("skip", false), ("drop", true), ("preserve", true)] {
        let mut d = dst.client().await;
        d.delete("/l/", Some(etcd_client::DeleteOptions::new().with_prefix()))
            .await
            .expect("clean");
        snapshot_plan(
            dir.path(),
            "s.db",
            &dst,
            &format!("prefixes:\n  - from: /l/\nleases: {mode}\n"),
        );
        let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
        assert_eq!(ran.code, Some(0), "{mode}: {}", ran.stderr);
        let got = d.get("/l/leased", None).await.expect("get");
        assert_eq!(got.count() == 1, leased_written, "{mode}");
        if mode == "drop" {
            assert_eq!(lease_of(&got), 0);
        }
        if mode == "preserve" {
            let ttl = d
                .lease_time_to_live(lease_of(&got), None)
                .await
                .expect("ttl");
            // The snapshot holds the granted TTL, not the time left.
            assert!(ttl.ttl() > 590 && ttl.ttl() <= 600, "{}", ttl.ttl());
        }
        let plain = d
            .get("/l/plain", Some(GetOptions::new()))
            .await
            .expect("get");
        assert_eq!(plain.count(), 1, "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn move_mode_follow_and_a_snapshot_destination_are_refused() {
    let dst = Cluster::plaintext().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("s.db"), b"unused").expect("write");
    snapshot_plan(
        dir.path(),
        "s.db",
        &dst,
        "prefixes:\n  - from: /a/\ndelete_source: true\n",
    );
    let ran = run(etcdplan(dir.path()).args(["validate", "plan.yaml"]));
    assert_eq!(ran.code, Some(1));
    assert!(
        ran.stderr.contains("etcdplan::plan_file::snapshot_move"),
        "{}",
        ran.stderr
    );
    snapshot_plan(dir.path(), "s.db", &dst, "prefixes:\n  - from: /a/\n");
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--follow", "--auto-approve"]));
    assert_eq!(ran.code, Some(1));
    assert!(
        ran.stderr.contains("etcdplan::follow::snapshot"),
        "{}",
        ran.stderr
    );
    let text = "version: 1\nsource:\n  endpoints: [http://127.0.0.1:2379]\ndestination:\n  snapshot: s.db\nprefixes:\n  - from: /a/\n";
    write_file(dir.path(), "plan.yaml", text);
    let ran = run(etcdplan(dir.path()).args(["validate", "plan.yaml"]));
    assert_eq!(ran.code, Some(1));
    assert!(
        ran.stderr
            .contains("etcdplan::plan_file::snapshot_destination"),
        "{}",
        ran.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_a_running_etcd_holds_is_refused_and_a_stopped_ones_is_read() {
    let (mut src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed([("/app/a", "1"), ("/app/b", "2")]).await;
    let expected = state(&src, "/app/").await;
    let db = std::fs::read_dir(src.dir.path())
        .expect("data dirs")
        .filter_map(Result::ok)
        .map(|e| e.path().join("member/snap/db"))
        .find(|p| p.is_file())
        .expect("the member's backend");
    let dir = tempfile::tempdir().expect("tempdir");
    snapshot_plan(
        dir.path(),
        &db.display().to_string(),
        &dst,
        "prefixes:\n  - from: /app/\n",
    );
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml"]));
    assert_eq!(ran.code, Some(1), "{}", ran.stdout);
    assert!(
        ran.stderr.contains("etcdplan::snapshot::in_use"),
        "{}",
        ran.stderr
    );
    // Stopped, its backend is a bare db file (no appended sha256): read.
    // etcd commits its backend every 100 ms; SIGKILL loses what it has not.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    src.stop_member(0);
    let ran = run(etcdplan(dir.path()).args(["check", "plan.yaml"]));
    assert!(
        ran.stdout
            .contains("no sha256 appended (a bare db file): not verified"),
        "{}\n{}",
        ran.stdout,
        ran.stderr
    );
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(state(&dst, "/app/").await, expected);
}
