//! `etcdplan plan`, `show` and `check` against real etcd servers.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Cluster, ClusterSpec, UserSpec, etcdplan, run, side_yaml, write_file, write_plan};
use etcd_client::Permission;

const SECRET: &str = "backend-secret";

/// Source and destination with one of each action.
async fn every_action(on_conflict: &str) -> (Cluster, Cluster, tempfile::TempDir) {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed([
        ("/app/new", "created value".to_string()),
        ("/app/same", "same".to_string()),
        (
            "/app/json",
            r#"{"name":"gold","attributes":{"media":"ssd","iops":1000,"tier":1}}"#.to_string(),
        ),
        (
            "/app/secret/db",
            format!("{{\"password\":\"{SECRET}-new\"}}"),
        ),
        ("/app/skip/x", "excluded".to_string()),
        ("/other/y", "outside the mapping".to_string()),
    ])
    .await;
    dst.seed([
        ("/copy/same", "same".to_string()),
        (
            "/copy/json",
            r#"{"name":"gold","attributes":{"media":"hdd","iops":1000,"tier":1}}"#.to_string(),
        ),
        (
            "/copy/secret/db",
            format!("{{\"password\":\"{SECRET}-old\"}}"),
        ),
        ("/copy/gone", "only in destination".to_string()),
        (
            "/copy/skip/kept",
            "excluded on the destination too".to_string(),
        ),
    ])
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        &src,
        &dst,
        &format!(
            "prefixes:\n  - from: /app/\n    to: /copy/\n    exclude: [/app/skip/]\nprune: true\non_conflict: {on_conflict}\nsensitive: [/app/secret/]\n"
        ),
    );
    (src, dst, dir)
}

/// Replaces what differs between runs (cluster ids, ports, hashes of the
/// file) so snapshots are stable.
fn stable(text: &str) -> String {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"[0-9a-f]{16}", "[cluster-id]");
    settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[port]");
    settings.add_filter(r"sha256 [0-9a-f]{12}…\)", "sha256 [file])");
    settings.add_filter(r"\(sha256 `[0-9a-f]{12}`\)", "(sha256 [file])");
    let _guard = settings.bind_to_scope();
    text.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn text_shows_every_action() {
    let (_src, _dst, dir) = every_action("overwrite").await;
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let text = stable(&ran.stdout);
    insta::with_settings!({filters => vec![
        (r"[0-9a-f]{16}", "[cluster-id]"),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[port]"),
        (r"\(sha256 [0-9a-f]{12}…\)", "(sha256 [file])"),
    ]}, {
        insta::assert_snapshot!("plan_text_every_action", text);
    });
    assert!(
        ran.stdout
            .contains("Plan: 1 to create, 2 to update, 1 to delete, 1 unchanged.")
    );
    assert!(
        !ran.stdout.contains("/copy/skip/"),
        "excluded keys are left alone"
    );
    assert!(
        !ran.stdout.contains("/other/"),
        "keys outside the mapping are not read"
    );
    assert!(!ran.stdout.contains('\u{1b}'), "no colour on a pipe");
    assert!(!ran.stdout.contains(SECRET) && !ran.stderr.contains(SECRET));
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_lists_conflicts_and_fail_refuses() {
    let (_src, _dst, dir) = every_action("keep").await;
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--detailed-exitcode"]));
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stdout.contains("! /copy/json"), "{}", ran.stdout);
    assert!(ran.stdout.contains("! /copy/secret/db"), "{}", ran.stdout);
    assert!(
        ran.stdout.contains(
            "Plan: 1 to create, 0 to update, 1 to delete, 2 conflicting left as is, 1 unchanged."
        ),
        "{}",
        ran.stdout
    );

    let plan = std::fs::read_to_string(dir.path().join("plan.yaml")).expect("plan");
    std::fs::write(
        dir.path().join("plan.yaml"),
        plan.replace("on_conflict: keep", "on_conflict: fail"),
    )
    .expect("rewrite");
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml"]));
    assert_eq!(ran.code, Some(1));
    assert!(
        ran.stderr.contains("etcdplan::plan::conflicts"),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("/copy/json") && ran.stderr.contains("/copy/secret/db"));
    assert!(!ran.stderr.contains(SECRET));
    // The review still sees the whole plan, conflicts included, in every
    // format; nothing is saved.
    assert!(ran.stdout.contains("! /copy/json"), "{}", ran.stdout);
    let args = [
        "plan",
        "plan.yaml",
        "--format",
        "markdown",
        "--out",
        "saved.json",
    ];
    let ran = run(etcdplan(dir.path()).args(args));
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(
        ran.stdout
            .starts_with("<!-- etcdplan-plan: plan.yaml -->\n### etcdplan plan"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains("conflicting, left as is"),
        "{}",
        ran.stdout
    );
    assert!(
        !dir.path().join("saved.json").exists(),
        "a refused plan is not saved"
    );
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--format", "json"]));
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout).expect("the plan as JSON");
    assert_eq!(doc["summary"]["conflict"], 2, "{doc}");
    assert!(!ran.stdout.contains(SECRET));
}

#[tokio::test(flavor = "multi_thread")]
async fn detailed_exitcode_is_zero_without_changes() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed([("/a/1", "x")]).await;
    dst.seed([("/a/1", "x")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /a/\n");
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--detailed-exitcode"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stdout
            .contains("No changes. The destination matches the source.")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_format_and_non_utf8_keys() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed([
        (b"/bin/\xff\x01".to_vec(), b"\x00\x01binary".to_vec()),
        (b"/bin/text".to_vec(), b"v".to_vec()),
    ])
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /bin/\n    to: '/b\\xfe/'\n",
    );
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--format", "json"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let json: serde_json::Value = serde_json::from_str(&ran.stdout).expect("one JSON object");
    assert_eq!(json["format_version"], "2");
    assert_eq!(json["plan"]["name"], "test-plan");
    assert_eq!(json["plan"]["file_sha256"].as_str().map(str::len), Some(64));
    assert!(json["source"]["revision"].as_i64().is_some_and(|r| r > 1));
    assert_eq!(json["summary"]["create"], 2);
    let changes = json["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 2);
    // /b\xfe/... is not UTF-8: key_base64, never key.
    assert!(
        changes
            .iter()
            .all(|c| c.get("key").is_none() && c.get("key_base64").is_some())
    );
    // In destination key order: /b\xfe/text sorts before /b\xfe/\xff\x01.
    assert_eq!(changes[0]["source_key"], "/bin/text");
    assert!(changes[1].get("source_key_base64").is_some());
    assert!(changes[1].get("source_key").is_none());
    assert_eq!(changes[0]["action"], "create");
    assert_eq!(
        changes[0]["destination_mod_revision"],
        serde_json::Value::Null
    );
    assert_eq!(changes[0]["value_sha256"].as_str().map(str::len), Some(64));
}

#[tokio::test(flavor = "multi_thread")]
async fn markdown_snapshot_and_saved_plan_show() {
    let (src, dst, dir) = every_action("overwrite").await;
    let ran = run(etcdplan(dir.path()).args([
        "plan",
        "plan.yaml",
        "--format",
        "markdown",
        "--out",
        "saved.json",
    ]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    insta::with_settings!({filters => vec![
        (r"[0-9a-f]{16}", "[cluster-id]"),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[port]"),
        (r"\(sha256 `[0-9a-f]{12}`\)", "(sha256 [file])"),
    ]}, {
        insta::assert_snapshot!("plan_markdown_every_action", ran.stdout);
    });
    // show needs no network: stop both clusters first.
    drop((src, dst));
    let saved = std::fs::read_to_string(dir.path().join("saved.json")).expect("saved plan");
    assert!(!saved.contains(SECRET), "a saved plan holds no values");
    assert!(
        !saved.contains("created value"),
        "a saved plan holds no values"
    );
    for format in ["text", "markdown", "json"] {
        let shown = run(etcdplan(dir.path()).args(["show", "saved.json", "--format", format]));
        assert_eq!(shown.code, Some(0), "{}", shown.stderr);
        assert!(
            shown.stdout.contains("/copy/new"),
            "{format}: {}",
            shown.stdout
        );
        assert!(!shown.stdout.contains(SECRET));
    }
    let shown = run(etcdplan(dir.path()).args(["show", "saved.json"]));
    assert!(
        shown
            .stdout
            .contains("Plan: 1 to create, 2 to update, 1 to delete, 1 unchanged.")
    );
    let not_saved = run(etcdplan(dir.path()).args(["show", "plan.yaml"]));
    assert_eq!(not_saved.code, Some(1));
    assert!(not_saved.stderr.contains("etcdplan::saved_plan::invalid"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sensitive_values_never_appear_anywhere() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    let keys = common::trident_keys(5);
    src.seed(keys.clone()).await;
    // An update and a delete of sensitive keys too.
    dst.seed([
        (
            "/trident/v1/backend/ontapnas_10.0.0.1",
            format!("{{\"password\":\"{SECRET}-old\"}}"),
        ),
        (
            "/trident/v1/backend/removed",
            format!("{{\"password\":\"{SECRET}-gone\"}}"),
        ),
    ])
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /trident/v1/\nprune: true\non_conflict: overwrite\nsensitive: [/trident/v1/backend/]\n",
    );
    let mut everything = String::new();
    for format in ["text", "markdown", "json"] {
        let ran = run(etcdplan(dir.path()).args([
            "-vvv",
            "plan",
            "plan.yaml",
            "--format",
            format,
            "--out",
            "saved.json",
        ]));
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
        let marked = if format == "json" {
            "\"sensitive\": true"
        } else {
            "(sensitive, changed)"
        };
        assert!(ran.stdout.contains(marked), "{format}: {}", ran.stdout);
        everything.push_str(&ran.stdout);
        everything.push_str(&ran.stderr);
        everything
            .push_str(&std::fs::read_to_string(dir.path().join("saved.json")).expect("saved"));
        let shown = run(etcdplan(dir.path()).args(["show", "saved.json", "--format", format]));
        everything.push_str(&shown.stdout);
        everything.push_str(&shown.stderr);
    }
    let ran = run(etcdplan(dir.path()).args(["check", "plan.yaml"]));
    everything.push_str(&ran.stdout);
    everything.push_str(&ran.stderr);
    assert!(!everything.contains(SECRET), "a sensitive value leaked");
    // Nor any digest of one, not even a prefix: it would confirm a guess.
    let sensitive_values = keys
        .iter()
        .filter(|(k, _)| k.starts_with("/trident/v1/backend/"))
        .map(|(_, v)| v.clone())
        .chain([
            format!("{{\"password\":\"{SECRET}-old\"}}"),
            format!("{{\"password\":\"{SECRET}-gone\"}}"),
        ]);
    for v in sensitive_values {
        use sha2::Digest as _;
        let digest = hex::encode(sha2::Sha256::digest(v.as_bytes()));
        assert!(
            !everything.contains(&digest[..12]),
            "a digest of {v} leaked"
        );
    }
    // Non-sensitive values still show in updates: the filter is not over-broad.
    assert!(everything.contains("/trident/v1/volume/pvc-0001"));
}

#[tokio::test(flavor = "multi_thread")]
async fn markdown_stays_under_the_comment_limit() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    let long = "x".repeat(60);
    src.seed((0..2500).map(|i| (format!("/big/{long}/{i:05}"), "v".to_string())))
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /big/\n");
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--format", "markdown"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let md = ran.stdout;
    assert!(
        md.chars().count() < 65_000,
        "{} characters",
        md.chars().count()
    );
    assert!(
        md.contains("Plan: 2,500 to create"),
        "the summary counts all"
    );
    assert!(
        md.contains("more to create not listed here (to keep this comment under 65,000 characters): `etcdplan plan plan.yaml --out plan.saved.json && etcdplan show plan.saved.json` lists them all."),
        "{md}"
    );
    assert_eq!(
        md.matches("<details").count(),
        md.matches("</details>").count()
    );
    assert_eq!(md.matches("```").count() % 2, 0, "fences are closed");
    // Whole lines only: every listed key is complete.
    for line in md.lines().filter(|l| l.starts_with("+ ")) {
        assert_eq!(line.len(), "+ /big/".len() + 60 + 6, "{line}");
    }

    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--max-listed", "3"]));
    assert_eq!(
        ran.stdout.lines().filter(|l| l.starts_with("  + ")).count(),
        3
    );
    assert!(
        ran.stdout.contains("… 2,497 more to create not listed (--max-listed 3); etcdplan plan plan.yaml --out plan.saved.json && etcdplan show plan.saved.json lists them all"),
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.contains("Plan: 2,500 to create"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_client_certificates() {
    let (src, dst) = tokio::join!(Cluster::tls(), Cluster::tls());
    src.seed([("/t/a", "1")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /t/\n");
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout.contains("+ /t/a"));
    let ran = run(etcdplan(dir.path()).args(["check", "plan.yaml"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains("source (TLS)"), "{}", ran.stdout);
}

/// Runs `plan` with the given source side YAML and expects a diagnostic code.
fn plan_fails_with(
    dir: &Path,
    source: &str,
    dst: &Cluster,
    code: &str,
    env: &[(&str, &str)],
) -> String {
    let text = format!(
        "version: 1\nsource:\n{source}destination:\n{}prefixes:\n  - from: /t/\n",
        side_yaml(dst, None)
    );
    write_file(dir, "plan.yaml", &text);
    let mut cmd = etcdplan(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let ran = run(cmd.args(["plan", "plan.yaml"]));
    assert_eq!(ran.code, Some(1), "{}", ran.stdout);
    assert!(
        ran.stderr.contains(code),
        "expected {code}:\n{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("source"),
        "names the side:\n{}",
        ran.stderr
    );
    ran.stderr
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_mistakes_are_named() {
    let (tls, plain) = tokio::join!(Cluster::tls(), Cluster::plaintext());
    let files = tls.tls.clone().expect("tls files");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ep = tls.endpoint(0);

    // Wrong CA.
    let err = plan_fails_with(
        d,
        &format!(
            "  endpoints: [{ep}]\n  tls:\n    ca: {}\n    cert: {}\n    key: {}\n",
            files.other_ca.display(),
            files.client_cert.display(),
            files.client_key.display()
        ),
        &plain,
        "etcdplan::etcd::untrusted_server",
        &[],
    );
    assert!(err.contains(&ep), "names the endpoint: {err}");

    // No client certificate, and a certificate from another CA.
    plan_fails_with(
        d,
        &format!(
            "  endpoints: [{ep}]\n  tls:\n    ca: {}\n",
            files.ca.display()
        ),
        &plain,
        "etcdplan::etcd::client_certificate_rejected",
        &[],
    );
    plan_fails_with(
        d,
        &format!(
            "  endpoints: [{ep}]\n  tls:\n    ca: {}\n    cert: {}\n    key: {}\n",
            files.ca.display(),
            files.other_client_cert.display(),
            files.other_client_key.display()
        ),
        &plain,
        "etcdplan::etcd::client_certificate_rejected",
        &[],
    );

    // Plaintext client against the TLS server.
    let http = ep.replace("https://", "http://");
    plan_fails_with(
        d,
        &format!("  endpoints: [{http}]\n"),
        &plain,
        "etcdplan::etcd::plaintext_to_tls",
        &[],
    );

    // TLS client against a plaintext server.
    let https = plain.endpoint(0).replace("http://", "https://");
    plan_fails_with(
        d,
        &format!(
            "  endpoints: [{https}]\n  tls:\n    ca: {}\n",
            files.ca.display()
        ),
        &plain,
        "etcdplan::etcd::tls_to_plaintext",
        &[],
    );
}

async fn rbac_cluster() -> Cluster {
    Cluster::start(ClusterSpec {
        members: 1,
        tls: false,
        enable_v2: false,
        users: vec![
            UserSpec {
                name: "reader",
                password: "readerpw",
                grants: vec![Permission::read("/t/").with_prefix()],
            },
            UserSpec {
                name: "other",
                password: "otherpw",
                grants: vec![Permission::read_write("/elsewhere/").with_prefix()],
            },
        ],
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn rbac_users_and_passwords() {
    let (src, dst) = tokio::join!(rbac_cluster(), Cluster::plaintext());
    src.seed([("/t/a", "1")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let source = |user: &str| {
        format!(
            "  endpoints: [{}]\n  auth:\n    username: {user}\n    password_env: SRC_PW\n",
            src.endpoint(0)
        )
    };

    // The reader may read /t/: the plan works.
    let text = format!(
        "version: 1\nsource:\n{}destination:\n{}prefixes:\n  - from: /t/\n",
        source("reader"),
        side_yaml(&dst, None)
    );
    write_file(d, "plan.yaml", &text);
    let ran = run(etcdplan(d)
        .env("SRC_PW", "readerpw")
        .args(["plan", "plan.yaml"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout.contains("+ /t/a"));

    let err = plan_fails_with(
        d,
        &source("reader"),
        &dst,
        "etcdplan::etcd::authentication_failed",
        &[("SRC_PW", "wrong")],
    );
    assert!(err.contains("`reader`") && !err.contains("wrong"), "{err}");

    let err = plan_fails_with(
        d,
        &source("other"),
        &dst,
        "etcdplan::etcd::permission_denied",
        &[("SRC_PW", "otherpw")],
    );
    assert!(
        err.contains("user `other`") && err.contains("/t/"),
        "names user and prefix: {err}"
    );

    let err = plan_fails_with(
        d,
        &format!("  endpoints: [{}]\n", src.endpoint(0)),
        &dst,
        "etcdplan::etcd::authentication_required",
        &[],
    );
    assert!(err.contains("auth"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_denied_write_and_exits_1() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), rbac_cluster());
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "version: 1\nsource:\n{}destination:\n  endpoints: [{}]\n  auth:\n    username: reader\n    password_env: DST_PW\nprefixes:\n  - from: /t/\n",
        side_yaml(&src, None),
        dst.endpoint(0)
    );
    write_file(dir.path(), "plan.yaml", &text);
    let before = dst.revision().await;
    let ran = run(etcdplan(dir.path())
        .env("DST_PW", "readerpw")
        .args(["check", "plan.yaml"]));
    assert_eq!(ran.code, Some(1), "{}", ran.stdout);
    let row = |needs: &str| {
        ran.stdout
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with(needs) && l.contains(" /t/ "))
            .unwrap_or_default()
            .to_string()
    };
    assert!(row("read").ends_with(" ok"), "{}", ran.stdout);
    assert!(row("write").contains("DENIED"), "{}", ran.stdout);
    assert!(ran.stdout.contains("user `reader`"), "{}", ran.stdout);
    let version = common::etcd_version(&common::etcd_binary());
    assert!(
        ran.stdout.contains(&version),
        "server version {version}: {}",
        ran.stdout
    );
    assert_eq!(dst.revision().await, before, "the probe wrote nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn same_cluster_guard_uses_the_cluster_id() {
    let cluster = Cluster::plaintext().await;
    cluster.seed([("/a/1", "x")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The peer port answers client gRPC too: a different URL, the same cluster.
    let text = format!(
        "version: 1\nsource:\n  endpoints: [{}]\ndestination:\n  endpoints: [{}]\nprefixes:\n  - from: /a/\n    to: /a/copy/\n",
        cluster.endpoint(0),
        cluster.peer_endpoint(0)
    );
    write_file(dir.path(), "plan.yaml", &text);
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml"]));
    assert_eq!(ran.code, Some(1), "{}", ran.stdout);
    assert!(
        ran.stderr.contains("etcdplan::plan::same_cluster"),
        "{}",
        ran.stderr
    );

    // Within one cluster, a disjoint destination is fine.
    write_file(
        dir.path(),
        "plan.yaml",
        &text.replace("to: /a/copy/", "to: /b/"),
    );
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout.contains("+ /b/1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_first_endpoint_does_not_fail_the_plan() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed([("/a/1", "x")]).await;
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let dead2 = format!("http://127.0.0.1:{}", common::free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "version: 1\nsource:\n  endpoints: [{dead}, {}]\ndestination:\n  endpoints: [{dead2}, {}]\nprefixes:\n  - from: /a/\n",
        src.endpoint(0),
        dst.endpoint(0)
    );
    write_file(dir.path(), "plan.yaml", &text);
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout.contains("+ /a/1"));
    let ran = run(etcdplan(dir.path()).args(["check", "plan.yaml"]));
    assert_eq!(
        ran.code,
        Some(0),
        "one live endpoint per side is enough: {}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains("NO"),
        "the dead endpoint is reported: {}",
        ran.stdout
    );
}

/// A writer hammers the source during a plan that reads one key per page:
/// the plan still shows exactly the source as of its pinned revision.
#[tokio::test(flavor = "multi_thread")]
async fn writes_during_the_plan_do_not_change_it() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed((0..300).map(|i| (format!("/p/{i:04}"), format!("v0-{i}"))))
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /p/\n");
    let plan = etcdplan::planfile::load(&path).expect("plan");

    let writer_client = src.client().await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let writer = tokio::spawn(async move {
        let mut c = writer_client;
        let mut n = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let i = n % 400;
            c.put(format!("/p/{i:04}"), format!("changed-{n}"), None)
                .await
                .expect("put");
            n += 1;
        }
        n
    });
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
    struct Silent;
    impl etcdplan::engine::Observer for Silent {
        fn review(
            &self,
            _: &etcdplan::plan::PlanReport,
            _: etcdplan::engine::Review,
        ) -> etcdplan::engine::Approval {
            etcdplan::engine::Approval::Approved
        }
    }
    let report = etcdplan::engine::plan(&plan, source, destination, &options, &Silent)
        .await
        .expect("plan");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.await.expect("writer");
    assert!(
        writes > 10,
        "the writer ran during the plan ({writes} writes)"
    );

    // Read the source as of the pinned revision, in one request.
    let mut c = src.client().await;
    let at = c
        .get(
            "/p/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_revision(report.source.revision),
            ),
        )
        .await
        .expect("read at revision");
    assert_eq!(report.summary.create as usize, at.kvs().len());
    for (change, kv) in report.changes.iter().zip(at.kvs()) {
        use sha2::Digest;
        assert_eq!(change.key, kv.key());
        let sha: [u8; 32] = sha2::Sha256::digest(kv.value()).into();
        assert_eq!(change.source.as_ref().and_then(|v| v.sha256), Some(sha));
    }
}
