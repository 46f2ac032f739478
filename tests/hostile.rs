//! Hostile strings, sensitive values, files and process ends, against real
//! etcd servers: what reaches a reviewer is escaped, no digest of a secret
//! leaves etcdplan, named files are regular and capped, spill files have no
//! name, and signals or closed pipes never turn an outcome into a crash.

mod common;

use std::process::Command as StdCommand;

use common::{Cluster, etcdplan, run, write_file, write_plan};
use sha2::Digest as _;

/// Characters that must never reach a terminal or a comment raw.
const HIDDEN: [char; 8] = [
    '\u{1b}',
    '\u{7}',
    '\u{85}',
    '\u{202e}',
    '\u{200b}',
    '\u{feff}',
    '\u{2028}',
    '\u{e0041}',
];

fn spawn(
    dir: &std::path::Path,
    args: &[&str],
    tmp: Option<&std::path::Path>,
) -> std::process::Child {
    let mut cmd = common::etcdplan_child(dir);
    cmd.args(args);
    if let Some(t) = tmp {
        cmd.env("TMPDIR", t);
    }
    cmd.spawn().expect("spawn etcdplan")
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_names_keys_and_values_are_escaped_in_every_format() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    let keys = [
        "/app/bidi\u{202e}gpj.exe",
        "/app/zero\u{200b}width\u{feff}",
        "/app/line\u{2028}sep\u{85}c1",
        "/app/esc\u{1b}]8;;http://evil\u{7}link",
        "/app/tag\u{e0041}",
    ];
    src.seed(keys.iter().map(|k| (k.to_string(), "v".to_string())))
        .await;
    src.seed([("/app/upd", "{\"a\":\"x\u{202e}y\u{1b}[31m\"}")])
        .await;
    dst.seed([("/app/upd", "{\"a\":\"old\"}")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // A name that would forge the summary and hide the plan in a comment,
    // and steer a terminal.
    let name = r#""x\n\n**Plan: 0 to create, 0 to update, 0 to delete, 0 unchanged.**\n\n<!--\e]8;;http://evil\a""#;
    write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /app/\non_conflict: overwrite\n",
    );
    let text = std::fs::read_to_string(dir.path().join("plan.yaml")).expect("plan");
    write_file(
        dir.path(),
        "plan.yaml",
        &text.replace("name: test-plan", &format!("name: {name}")),
    );
    for format in ["text", "markdown", "json"] {
        let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--format", format]));
        assert_eq!(ran.code, Some(0), "{format}: {}", ran.stderr);
        for c in HIDDEN {
            assert!(
                !ran.stdout.contains(c),
                "{format} shows U+{:04X} raw:\n{}",
                c as u32,
                ran.stdout
            );
            assert!(
                !ran.stderr.contains(c),
                "{format} stderr shows U+{:04X} raw",
                c as u32
            );
        }
        assert!(
            !ran.stdout
                .lines()
                .any(|l| l.starts_with("**Plan: 0 to create")),
            "{format}: a forged summary line:\n{}",
            ran.stdout
        );
        if format == "json" {
            let v: serde_json::Value = serde_json::from_str(&ran.stdout).expect("json");
            let listed: Vec<&str> = v["changes"]
                .as_array()
                .expect("changes")
                .iter()
                .filter_map(|c| c["key"].as_str())
                .collect();
            for k in keys {
                assert!(
                    listed.contains(&k),
                    "{k:?} round-trips through JSON: {listed:?}"
                );
            }
        }
        if format == "markdown" {
            assert!(
                ran.stdout.contains("/app/bidi\\xe2\\x80\\xaegpj.exe"),
                "{}",
                ran.stdout
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_describing_itself_with_escapes_is_shown_escaped() {
    // etcd takes any member name; `check` prints members' names and URLs.
    let evil = Cluster::start(common::ClusterSpec {
        members: 1,
        name_prefix: Some("evil\u{1b}]8;;http://x\u{7}\u{202e}\r".into()),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        &evil,
        &evil,
        "prefixes:\n  - from: /a/\n    to: /b/\n",
    );
    let ran = run(etcdplan(dir.path()).args(["check", "plan.yaml"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout
            .contains("evil\\u{1b}]8;;http://x\\u{7}\\u{202e}\\u{d}0"),
        "{}",
        ran.stdout
    );
    for c in HIDDEN.iter().chain(&['\r']) {
        assert!(
            !ran.stdout.contains(*c),
            "U+{:04X} raw:\n{}",
            *c as u32,
            ran.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sensitive_values_move_and_undo_without_any_digest() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    let secrets = [
        "123456",
        "654321-new",
        "654321-old",
        "vault-new",
        "vault-old",
    ];
    src.seed([
        ("/s/pin", "123456"),
        ("/s/other", "654321-new"),
        ("/plain/db", "vault-new"),
    ])
    .await;
    dst.seed([("/s/other", "654321-old"), ("/vault/db", "vault-old")])
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // `/vault/` is sensitive as a destination: the second mapping writes there.
    write_plan(
        d,
        &src,
        &dst,
        "prefixes:\n  - from: /s/\n  - from: /plain/\n    to: /vault/\non_conflict: overwrite\ndelete_source: true\nsensitive: [/s/, /vault/, /nowhere/]\n",
    );
    let mut everything = String::new();
    for format in ["text", "markdown", "json"] {
        let ran = run(etcdplan(d).args([
            "plan",
            "plan.yaml",
            "--format",
            format,
            "--out",
            "saved.json",
        ]));
        assert_eq!(ran.code, Some(0), "{format}: {}", ran.stderr);
        assert!(
            ran.stderr
                .contains("`/nowhere/` lies under no `from` and no `to`"),
            "{}",
            ran.stderr
        );
        everything += &ran.stdout;
        everything += &std::fs::read_to_string(d.join("saved.json")).expect("saved");
    }
    assert!(everything.contains("(sensitive, changed)"), "{everything}");
    for s in secrets {
        let digest = hex::encode(sha2::Sha256::digest(s.as_bytes()));
        assert!(!everything.contains(s), "{s} shown");
        assert!(!everything.contains(&digest[..12]), "a digest of {s} shown");
    }

    // Applied from the saved plan: values checked by mod revision, moved
    // keys compared byte for byte before the source deletes.
    let ran = run(etcdplan(d).args(["apply", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(dst.dump(b"/s/").await.len(), 2);
    assert_eq!(dst.dump(b"/vault/db").await[0].1, b"vault-new");
    assert!(src.dump(b"/s/").await.is_empty(), "moved off the source");

    // And undone: the source restored, the destination as it was.
    let ran = run(etcdplan(d).args(["plan", "--undo", "saved.json", "--out", "undo.json"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    let undo = std::fs::read_to_string(d.join("undo.json")).expect("undo");
    for s in secrets {
        let digest = hex::encode(sha2::Sha256::digest(s.as_bytes()));
        assert!(
            !undo.contains(&digest[..12]),
            "{s} in the undo plan:\n{undo}"
        );
        assert!(
            !ran.stdout.contains(&digest[..12]),
            "{s} in the undo output"
        );
    }
    let ran = run(etcdplan(d).args(["apply", "undo.json"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(src.dump(b"/s/pin").await[0].1, b"123456");
    assert_eq!(dst.dump(b"/s/other").await[0].1, b"654321-old");
    assert_eq!(dst.dump(b"/vault/db").await[0].1, b"vault-old");
}

#[test]
fn named_files_must_be_regular_and_credentials_are_never_echoed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let fifo = d.join("ca.pem");
    let status = StdCommand::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    for ca in ["/dev/zero", "ca.pem", "."] {
        write_file(
            d,
            "plan.yaml",
            &format!(
                "version: 1\nsource:\n  endpoints: [https://127.0.0.1:2379]\n  tls: {{ca: {ca}}}\ndestination:\n  endpoints: [http://127.0.0.1:2479]\nprefixes:\n  - from: /a/\n"
            ),
        );
        let started = std::time::Instant::now();
        let ran = run(etcdplan(d)
            .timeout(std::time::Duration::from_secs(20))
            .args(["validate", "--strict", "plan.yaml"]));
        assert_eq!(ran.code, Some(1), "{ca}: {}", ran.stderr);
        assert!(
            ran.stderr.contains("tls_file_unreadable"),
            "{ca}: {}",
            ran.stderr
        );
        assert!(ran.stderr.contains("regular file"), "{ca}: {}", ran.stderr);
        assert!(
            started.elapsed().as_secs() < 10,
            "{ca} took {:?}",
            started.elapsed()
        );
    }
    write_file(
        d,
        "plan.yaml",
        "version: 1\nsource:\n  endpoints: [\"http://root:hunter2@127.0.0.1:2379\"]\ndestination:\n  endpoints: [\"ftp://admin:pa55word@127.0.0.1:2479\"]\nprefixes:\n  - from: /a/\n",
    );
    let ran = run(etcdplan(d).args(["validate", "plan.yaml"]));
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("carries credentials"), "{}", ran.stderr);
    for secret in ["hunter2", "pa55word", "root:", "admin:"] {
        assert!(
            !ran.stderr.contains(secret),
            "{secret} echoed:\n{}",
            ran.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn out_never_follows_a_planted_link() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed([("/a/1", "v")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write_plan(d, &src, &dst, "prefixes:\n  - from: /a/\n");
    let victim = write_file(d, "victim", "precious");
    for planted in [
        "saved.json.tmp-etcdplan",
        "saved.tmp-etcdplan",
        "saved.json",
    ] {
        std::os::unix::fs::symlink(&victim, d.join(planted)).expect("symlink");
    }
    let ran = run(etcdplan(d).args(["plan", "plan.yaml", "--out", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious"
    );
    let meta = std::fs::symlink_metadata(d.join("saved.json")).expect("saved");
    assert!(
        meta.file_type().is_file(),
        "the link was replaced, not followed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn spill_files_have_no_name_so_no_kill_leaves_one() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed((0..8_000).map(|i| (format!("/k/{i:05}"), format!("value-{i}"))))
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /k/\n");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).expect("tmp");
    let args = [
        "apply",
        "plan.yaml",
        "--auto-approve",
        "--rate",
        "2000",
        "--max-listed",
        "3",
    ];
    let mut child = spawn(dir.path(), &args, Some(&tmp));
    dst.wait_for_keys("/k/", 1_000).await;
    let listed = || std::fs::read_dir(&tmp).expect("ls").count();
    assert_eq!(listed(), 0, "a spill file has a name while the apply runs");
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert_eq!(listed(), 0, "SIGKILL left a spill file behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_ends_an_apply_like_sigterm() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed((0..20_000).map(|i| (format!("/h/{i:06}"), format!("value-{i}"))))
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /h/\n");
    let args = [
        "apply",
        "plan.yaml",
        "--auto-approve",
        "--rate",
        "4000",
        "--max-listed",
        "3",
    ];
    let child = spawn(dir.path(), &args, None);
    dst.wait_for_keys("/h/", 2_000).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "ended by the signal itself: {stderr}"
    );
    assert!(
        stderr.contains("Interrupted after the transactions in flight"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn closed_stdout_and_stderr_never_turn_success_into_a_crash() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed((0..3_000).map(|i| (format!("/c/{i:05}"), format!("value-{i}"))))
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /c/\n");
    let mut child = spawn(dir.path(), &["apply", "plan.yaml", "--auto-approve"], None);
    // `2>&1 | head -0`: both pipes closed before anything is read.
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = child.wait().expect("wait");
    assert_eq!(
        status.code(),
        Some(0),
        "the migration succeeded: {status:?}"
    );
    assert_eq!(dst.dump(b"/c/").await.len(), 3_000);
}
