//! Least privilege, as the README grants it: a source user that may read
//! the migrated prefix and nothing else, a destination user that may read
//! and write it and the follow checkpoint key and nothing else. That pair
//! runs `check --follow`, `plan`, `apply` of a saved plan, its undo, and
//! `apply --follow`, over plaintext and over TLS with client certificates,
//! on the etcd version under test (current 3.5 denies Status to them).

mod common;

use std::path::Path;

use common::follow::finish;
use common::{
    Cluster, ClusterSpec, Ran, UserSpec, etcdplan, etcdplan_child, run, side_yaml, write_file,
};
use etcd_client::Permission;

const CHECKPOINT: &str = "/etcdplan/checkpoint/least";

async fn cluster(tls: bool, user: UserSpec) -> Cluster {
    Cluster::start(ClusterSpec {
        members: 1,
        tls,
        users: vec![user],
        ..Default::default()
    })
    .await
}

/// The source and destination, each with its one least-privileged user.
async fn clusters(tls: bool, checkpoint_grant: bool) -> (Cluster, Cluster) {
    let reader = UserSpec {
        name: "reader",
        password: "reader-pw",
        grants: vec![Permission::read("/trident/").with_prefix()],
    };
    let mut grants = vec![Permission::read_write("/trident/").with_prefix()];
    if checkpoint_grant {
        grants.push(Permission::read_write(CHECKPOINT));
    }
    let migrator = UserSpec {
        name: "migrator",
        password: "migrator-pw",
        grants,
    };
    tokio::join!(cluster(tls, reader), cluster(tls, migrator))
}

fn write_least_plan(dir: &Path, src: &Cluster, dst: &Cluster) {
    let text = format!(
        "version: 1\nname: least\nsource:\n{}destination:\n{}leases: preserve\nprefixes:\n  - from: /trident/\n",
        side_yaml(src, Some(("reader", "READER_PW"))),
        side_yaml(dst, Some(("migrator", "MIGRATOR_PW")))
    );
    write_file(dir, "plan.yaml", &text);
}

fn as_users(dir: &Path, args: &[&str]) -> Ran {
    run(etcdplan(dir)
        .env("READER_PW", "reader-pw")
        .env("MIGRATOR_PW", "migrator-pw")
        .args(args))
}

fn ok(ran: &Ran) {
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
}

/// The version `etcd --version` of the binary under test names.
fn version_under_test() -> String {
    common::etcd_version(&common::etcd_binary())
}

async fn every_command_runs_with_least_privilege(tls: bool) {
    let (src, dst) = clusters(tls, true).await;
    src.seed((0..300).map(|i| (format!("/trident/v1/{i:03}"), format!("{{\"i\":{i}}}"))))
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write_least_plan(d, &src, &dst);

    let ran = as_users(d, &["check", "plan.yaml", "--follow"]);
    ok(&ran);
    assert!(!ran.stdout.contains("DENIED"), "{}", ran.stdout);
    assert!(
        ran.stdout.contains(&format!("{CHECKPOINT} (key)")),
        "{}",
        ran.stdout
    );
    if version_under_test().starts_with("3.5.") {
        assert!(
            ran.stdout
                .contains("status: needs root on this etcd (user `migrator` may not ask)"),
            "says what it could not learn, and why: {}",
            ran.stdout
        );
    } else {
        assert!(
            ran.stdout.contains(" 3.4."),
            "3.4 answers Status: {}",
            ran.stdout
        );
    }

    ok(&as_users(d, &["plan", "plan.yaml", "--out", "saved.json"]));
    let ran = as_users(d, &["apply", "saved.json", "--auto-approve", "-vv"]);
    ok(&ran);
    assert!(ran.stdout.contains("Verified: 300"), "{}", ran.stdout);
    // 3.4 answers Status with its version, 3.5 refuses it to this user:
    // both mean range compares hold, so batches are guarded by their span.
    assert!(ran.stderr.contains("range_compares=true"), "{}", ran.stderr);
    assert_eq!(dst.dump(b"/trident/").await, src.dump(b"/trident/").await);

    ok(&as_users(
        d,
        &["plan", "--undo", "saved.json", "--out", "undo.json"],
    ));
    ok(&as_users(d, &["apply", "undo.json", "--auto-approve"]));
    assert!(dst.dump(b"/trident/").await.is_empty(), "undone");

    // Following: the initial apply, then a later put, up to its revision.
    let mut c = src.client().await;
    c.put("/trident/v1/later", "after", None)
        .await
        .expect("put");
    let until = src.revision().await;
    let child = etcdplan_child(d)
        .env("READER_PW", "reader-pw")
        .env("MIGRATOR_PW", "migrator-pw")
        .args([
            "apply",
            "plan.yaml",
            "--auto-approve",
            "--follow",
            "--until-revision",
        ])
        .arg(until.to_string())
        .spawn()
        .expect("spawn follow");
    let (code, stdout, stderr) = finish(child);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert_eq!(dst.dump(b"/trident/").await, src.dump(b"/trident/").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_least_privilege_runs_every_command() {
    every_command_runs_with_least_privilege(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_least_privilege_runs_every_command() {
    every_command_runs_with_least_privilege(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_checkpoint_grant_is_named_whole_before_anything_is_written() {
    let (src, dst) = clusters(false, false).await;
    src.seed([("/trident/a", "1")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write_least_plan(d, &src, &dst);

    // Without --follow the checkpoint is reported, not required.
    let ran = as_users(d, &["check", "plan.yaml"]);
    ok(&ran);
    assert!(
        ran.stdout.contains("apply --follow would fail"),
        "{}",
        ran.stdout
    );
    let grant = ran
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("etcdctl role grant-permission "))
        .unwrap_or_else(|| panic!("a grant command: {}", ran.stdout))
        .to_string();
    assert!(
        grant.ends_with(&format!(" readwrite {CHECKPOINT}")) && !grant.contains("ROLE"),
        "whole on one line, naming the user's role and the key: {grant}"
    );
    let ran = as_users(d, &["check", "plan.yaml", "--follow"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stdout);
    assert!(ran.stdout.contains("Check FAILED"), "{}", ran.stdout);

    // apply --follow stops before its initial apply writes anything.
    let before = dst.revision().await;
    let child = etcdplan_child(d)
        .env("READER_PW", "reader-pw")
        .env("MIGRATOR_PW", "migrator-pw")
        .args(["apply", "plan.yaml", "--auto-approve", "--follow"])
        .spawn()
        .expect("spawn follow");
    let (code, _, stderr) = finish(child);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("etcdplan::etcd::permission_denied"),
        "{stderr}"
    );
    assert!(
        stderr.lines().any(|l| l.contains(&format!(
            "etcdctl role grant-permission ROLE --prefix=true readwrite {CHECKPOINT}"
        ))),
        "one pasteable line: {stderr}"
    );
    assert_eq!(dst.revision().await, before, "nothing written");

    // Pasted as printed (as root), the grant is all the user lacked.
    let words = shlex::split(&grant).expect("a shell command");
    let out = std::process::Command::new(common::etcdctl_binary())
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &dst.endpoint(0), "--user"])
        .arg(format!("root:{}", common::ROOT_PASSWORD))
        .args(&words[1..])
        .output()
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(&as_users(d, &["check", "plan.yaml", "--follow"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn check_says_auth_failed_rather_than_unreachable() {
    let (src, dst) = clusters(false, true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write_least_plan(d, &src, &dst);
    let ran = run(etcdplan(d)
        .env("READER_PW", "reader-pw")
        .env("MIGRATOR_PW", "a wrong password")
        .args(["check", "plan.yaml"]));
    assert_eq!(ran.code, Some(1), "{}", ran.stdout);
    let line = ran
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&dst.endpoint(0)))
        .unwrap_or_else(|| panic!("the endpoint row: {}", ran.stdout));
    assert!(line.contains("auth failed"), "{line}");
    assert!(
        ran.stdout.contains("not checked: authentication failed"),
        "{}",
        ran.stdout
    );
    assert!(!ran.stdout.contains("a wrong password"));
}
