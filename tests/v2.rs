//! etcd v2 sides (`api: v2`), against etcd 3.4 started with --enable-v2:
//! v2 → v3, v3 → v2 and v2 → v2 plan and apply, idempotently and resumably.

mod common;

use std::process::{Command as StdCommand, Stdio};
use std::time::Duration;

use common::{Cluster, etcdplan, run, v2_cluster, v2_dump, v2_seed, write_file};

fn plan_text(src: &Cluster, src_api: &str, dst: &Cluster, dst_api: &str, rest: &str) -> String {
    format!(
        "version: 1\nsource:\n  endpoints: [{}]\n  api: {src_api}\ndestination:\n  endpoints: [{}]\n  api: {dst_api}\n{rest}",
        src.endpoint(0),
        dst.endpoint(0)
    )
}

fn trident(n: usize) -> Vec<(String, String)> {
    common::trident_keys(n)
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_source_to_v3_destination() {
    let (src, dst) = tokio::join!(v2_cluster(), Cluster::plaintext());
    let keys = trident(20);
    v2_seed(&src, &keys).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(
        dir.path(),
        "plan.yaml",
        &plan_text(
            &src,
            "v2",
            &dst,
            "v3",
            "prefixes:\n  - from: /trident/v1/\n",
        ),
    );
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stdout
            .contains(&format!("Plan: {} to create", keys.len())),
        "{}",
        ran.stdout
    );
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    let (v2, _) = v2_dump(&src, "/trident/v1").await;
    assert_eq!(dst.dump(b"/trident/v1/").await, v2);
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
    assert!(ran.stdout.contains("No changes"), "{}", ran.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn v3_source_to_v2_destination_with_guards() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), v2_cluster());
    src.seed(trident(20)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(
        dir.path(),
        "plan.yaml",
        &plan_text(
            &src,
            "v3",
            &dst,
            "v2",
            "prefixes:\n  - from: /trident/v1/\n    to: /moved/v1/\non_conflict: overwrite\n",
        ),
    );
    // A foreign write between plan and apply: exit 3, the value kept.
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--out", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    v2_seed(
        &dst,
        &[("/moved/v1/node/worker-1".into(), "foreign".into())],
    )
    .await;
    let ran = run(etcdplan(dir.path()).args(["apply", "saved.json"]));
    assert_eq!(ran.code, Some(3), "{}\n{}", ran.stdout, ran.stderr);
    let (got, _) = v2_dump(&dst, "/moved/v1").await;
    assert!(got.contains(&(b"/moved/v1/node/worker-1".to_vec(), b"foreign".to_vec())));

    // Plan again and apply: the destination ends equal, a rerun writes nothing.
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--out", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let ran = run(etcdplan(dir.path()).args(["apply", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    let (got, index) = v2_dump(&dst, "/moved/v1").await;
    let expected: Vec<(Vec<u8>, Vec<u8>)> = src
        .dump(b"/trident/v1/")
        .await
        .into_iter()
        .map(|(k, v)| ([b"/moved".as_slice(), &k[b"/trident".len()..]].concat(), v))
        .collect();
    assert_eq!(got, expected);
    let ran = run(etcdplan(dir.path()).args(["apply", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stdout.contains("0 created, 0 updated, 0 deleted"),
        "{}",
        ran.stdout
    );
    assert_eq!(
        v2_dump(&dst, "/moved/v1").await.1,
        index,
        "the v2 index did not move"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_to_v2_resumes_after_kill_9() {
    let (src, dst) = tokio::join!(v2_cluster(), v2_cluster());
    let keys: Vec<(String, String)> = (0..1500)
        .map(|i| (format!("/a/{i:05}"), format!("value-{i}")))
        .collect();
    v2_seed(&src, &keys).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(
        dir.path(),
        "plan.yaml",
        &plan_text(
            &src,
            "v2",
            &dst,
            "v2",
            "prefixes:\n  - from: /a/\n    to: /b/\n",
        ),
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
            "2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    for _ in 0..3000 {
        if v2_dump(&dst, "/b").await.0.len() >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    let partial = v2_dump(&dst, "/b").await.0.len();
    assert!((1..1500).contains(&partial), "killed mid-run: {partial}");
    let ran = run(etcdplan(dir.path()).args([
        "apply",
        "plan.yaml",
        "--auto-approve",
        "--max-listed",
        "3",
    ]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    let (got, _) = v2_dump(&dst, "/b").await;
    let expected: Vec<(Vec<u8>, Vec<u8>)> = keys
        .iter()
        .map(|(k, v)| {
            (
                k.replacen("/a/", "/b/", 1).into_bytes(),
                v.clone().into_bytes(),
            )
        })
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_over_tls_with_client_certificates() {
    let (src, dst) = tokio::join!(
        Cluster::plaintext(),
        Cluster::start(common::ClusterSpec {
            members: 1,
            tls: true,
            enable_v2: true,
            ..Default::default()
        })
    );
    src.seed([("/t/a", "1"), ("/t/dir/b", "2")]).await;
    let tls = dst.tls.clone().expect("tls files");
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "version: 1\nsource:\n  endpoints: [{}]\ndestination:\n  endpoints: [{}]\n  api: v2\n  tls:\n    ca: {}\n    cert: {}\n    key: {}\nprefixes:\n  - from: /t/\n",
        src.endpoint(0),
        dst.endpoint(0),
        tls.ca.display(),
        tls.client_cert.display(),
        tls.client_key.display()
    );
    write_file(dir.path(), "plan.yaml", &text);
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout.contains("Apply complete: 2 created"),
        "{}",
        ran.stdout
    );
    // Reading back over v2 and TLS finds everything in place.
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--detailed-exitcode"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains("No changes"), "{}", ran.stdout);
}

/// Turns on v2 auth with a root user, and takes the guest role's rights away
/// so that only authenticated requests pass.
async fn v2_auth(cluster: &Cluster, password: &str) {
    let http = reqwest::Client::new();
    let base = cluster.endpoint(0);
    let ok = |r: reqwest::Response| {
        assert!(r.status().is_success(), "v2 auth setup: {}", r.status());
    };
    ok(http
        .put(format!("{base}/v2/auth/users/root"))
        .body(format!("{{\"user\":\"root\",\"password\":\"{password}\"}}"))
        .send()
        .await
        .expect("add root"));
    ok(http
        .put(format!("{base}/v2/auth/enable"))
        .send()
        .await
        .expect("enable"));
    ok(http
        .put(format!("{base}/v2/auth/roles/guest"))
        .basic_auth("root", Some(password))
        .body(r#"{"role":"guest","revoke":{"kv":{"read":["/*"],"write":["/*"]}}}"#)
        .send()
        .await
        .expect("revoke guest"));
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_with_basic_auth() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), v2_cluster());
    src.seed([("/p/a", "1")]).await;
    v2_auth(&dst, "v2-root-pw").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "version: 1\nsource:\n  endpoints: [{}]\ndestination:\n  endpoints: [{}]\n  api: v2\n  auth:\n    username: root\n    password_env: DST_PW\nprefixes:\n  - from: /p/\n",
        src.endpoint(0),
        dst.endpoint(0)
    );
    write_file(dir.path(), "plan.yaml", &text);
    let ran = run(etcdplan(dir.path()).env("DST_PW", "wrong").args([
        "apply",
        "plan.yaml",
        "--auto-approve",
    ]));
    assert_eq!(ran.code, Some(1), "{}", ran.stdout);
    assert!(
        ran.stderr.contains("permission denied for user `root`"),
        "{}",
        ran.stderr
    );
    assert!(
        !ran.stderr.contains("wrong"),
        "the password is never printed"
    );
    let ran = run(etcdplan(dir.path()).env("DST_PW", "v2-root-pw").args([
        "apply",
        "plan.yaml",
        "--auto-approve",
    ]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout.contains("Apply complete: 1 created"),
        "{}",
        ran.stdout
    );
}
