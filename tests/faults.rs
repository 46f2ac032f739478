//! Real faults on loopback, through the proxy in tests/common/proxy.rs and
//! signals to etcd itself: connection resets, a blackholed endpoint, a
//! paused member, and auth store churn. Each run must end exactly equal to
//! the source, with exit 0.

mod common;

use std::time::Duration;

use common::proxy::Proxy;
use common::{
    Cluster, ClusterSpec, ROOT_PASSWORD, UserSpec, etcdctl_binary, etcdplan, r_keys, run_async,
    side_yaml, side_yaml_via, write_file, write_plan,
};
use etcd_client::Permission;

/// The source under /r/, renamed to /copy/.
async fn expected(src: &Cluster) -> Vec<(Vec<u8>, Vec<u8>)> {
    src.dump(b"/r/")
        .await
        .into_iter()
        .map(|(k, v)| {
            let mut key = b"/copy/".to_vec();
            key.extend_from_slice(&k[3..]);
            (key, v)
        })
        .collect()
}

const MAPPING: &str = "prefixes:\n  - from: /r/\n    to: /copy/\n";

#[tokio::test(flavor = "multi_thread")]
async fn apply_plan_and_verify_ride_through_repeated_resets() {
    // Plaintext source, TLS destination: a reset must never be mistaken for
    // a protocol mismatch on either.
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::tls());
    src.seed(r_keys(20_000)).await;
    let (src_proxy, dst_proxy) = tokio::join!(
        Proxy::start(src.client_port(0)),
        Proxy::start(dst.client_port(0))
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "version: 1\nsource:\n{}destination:\n{}{MAPPING}",
        side_yaml_via(&src, &[src_proxy.endpoint("http")], None),
        side_yaml_via(&dst, &[dst_proxy.endpoint("https")], None)
    );
    write_file(dir.path(), "plan.yaml", &text);
    for p in [&src_proxy, &dst_proxy] {
        p.reset_after(Duration::from_millis(300), Duration::from_millis(1000));
        // Latency keeps requests in flight, so resets cut them mid-way
        // (measured with requests on 8 connections, as a round trip of 20 ms
        // or more takes: at 3 ms, 0 to 4 of ~55 resets hit one; at 10 ms,
        // 7 to 11).
        p.delay(Duration::from_millis(10));
    }
    // Paced so the apply spans many connection lifetimes.
    let ran = run_async({
        let mut c = etcdplan(dir.path());
        c.env("ETCDPLAN_LOG", "etcdplan=debug").args([
            "apply",
            "plan.yaml",
            "--auto-approve",
            "--max-listed",
            "3",
            "--rate",
            "4000",
        ]);
        c
    })
    .await;
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains("Verified: 20,000"), "{}", ran.stdout);
    let during_apply = src_proxy.resets() + dst_proxy.resets();
    assert!(
        during_apply >= 5,
        "connections were reset during the apply ({during_apply})"
    );
    // The resets cut requests in flight, and those were retried.
    let retried = ran
        .stderr
        .lines()
        .filter(|l| l.contains("request failed") && l.contains("Transient"))
        .count();
    assert!(retried > 0, "resets hit requests in flight: {}", ran.stderr);
    assert_eq!(dst.dump(b"/copy/").await, expected(&src).await);

    // A plan and a no-op rerun through the same resets: nothing to do, and
    // the destination's revision does not move.
    let before = dst.revision().await;
    for args in [
        &["plan", "plan.yaml", "--detailed-exitcode"][..],
        &["apply", "plan.yaml", "--auto-approve", "--max-listed", "3"][..],
    ] {
        let ran = run_async({
            let mut c = etcdplan(dir.path());
            c.args(args);
            c
        })
        .await;
        assert_eq!(
            ran.code,
            Some(0),
            "{args:?}\n{}\n{}",
            ran.stdout,
            ran.stderr
        );
        assert!(
            ran.stdout.contains("No changes."),
            "{args:?}: {}",
            ran.stdout
        );
    }
    assert_eq!(dst.revision().await, before, "the rerun wrote nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blackholed_endpoint_fails_over_to_the_next() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed(r_keys(12_000)).await;
    // Two ways to the one destination member; the first goes dark mid-run.
    let (dark, other) = tokio::join!(
        Proxy::start(dst.client_port(0)),
        Proxy::start(dst.client_port(0))
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "version: 1\nsource:\n{}destination:\n{}{MAPPING}",
        side_yaml(&src, None),
        side_yaml_via(&dst, &[dark.endpoint("http"), other.endpoint("http")], None)
    );
    write_file(dir.path(), "plan.yaml", &text);
    let apply = run_async({
        let mut c = etcdplan(dir.path());
        c.args([
            "apply",
            "plan.yaml",
            "--auto-approve",
            "--max-listed",
            "3",
            "--rate",
            "3000",
            "--request-timeout",
            "2",
        ]);
        c
    });
    let apply = tokio::spawn(apply);
    dst.wait_for_keys("/copy/", 1000).await;
    // Both endpoints are asked at the start and the first to answer carries
    // the run: the busy one goes dark.
    let (busy, spare) = if dark.bytes() >= other.bytes() {
        (&dark, &other)
    } else {
        (&other, &dark)
    };
    let spare_before = spare.bytes();
    busy.blackhole(true);
    let ran = apply.await.expect("apply task");
    assert!(
        spare.bytes() > spare_before + 100_000,
        "the apply moved to the other endpoint"
    );
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stderr.contains(&format!(
            "did not answer in 2 s; trying {}",
            spare.endpoint("http")
        )),
        "the failover is said on stderr: {}",
        ran.stderr
    );
    assert_eq!(dst.dump(b"/copy/").await, expected(&src).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_member_paused_past_the_request_timeout_costs_nothing() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed(r_keys(12_000)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, MAPPING);
    let apply = tokio::spawn(run_async({
        let mut c = etcdplan(dir.path());
        c.args([
            "apply",
            "plan.yaml",
            "--auto-approve",
            "--max-listed",
            "3",
            "--rate",
            "3000",
            "--request-timeout",
            "1",
        ]);
        c
    }));
    dst.wait_for_keys("/copy/", 1000).await;
    let partial = dst.dump(b"/copy/").await.len();
    assert!(
        partial > 0 && partial < 12_000,
        "paused mid-run ({partial} keys written)"
    );
    // SIGSTOP for three request timeouts: requests in flight time out,
    // and may still be applied once the member resumes.
    dst.pause_member(0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    dst.resume_member(0);
    let ran = apply.await.expect("apply task");
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains("Verified: 12,000"), "{}", ran.stdout);
    assert_eq!(dst.dump(b"/copy/").await, expected(&src).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn user_changes_during_an_apply_with_auth_cost_nothing() {
    let src = Cluster::plaintext().await;
    let dst = Cluster::start(ClusterSpec {
        members: 1,
        users: vec![UserSpec {
            name: "mover",
            password: "mover-pw",
            grants: vec![Permission::read_write("/copy/").with_prefix()],
        }],
        ..Default::default()
    })
    .await;
    src.seed(r_keys(12_000)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "version: 1\nsource:\n{}destination:\n{}{MAPPING}",
        side_yaml(&src, None),
        side_yaml(&dst, Some(("mover", "MOVER_PASSWORD")))
    );
    write_file(dir.path(), "plan.yaml", &text);
    let apply = tokio::spawn(run_async({
        let mut c = etcdplan(dir.path());
        c.env("MOVER_PASSWORD", "mover-pw").args([
            "apply",
            "plan.yaml",
            "--auto-approve",
            "--max-listed",
            "3",
            "--rate",
            "3000",
        ]);
        c
    }));
    // Every `user add` moves the auth store revision, which makes every
    // token issued before it stale ("revision of auth store is old").
    tokio::time::sleep(Duration::from_millis(800)).await;
    let endpoint = dst.endpoint(0);
    for n in 0..12 {
        let out = tokio::task::spawn_blocking({
            let endpoint = endpoint.clone();
            move || {
                std::process::Command::new(etcdctl_binary())
                    .env("ETCDCTL_API", "3")
                    .args([
                        "--endpoints",
                        &endpoint,
                        "--user",
                        &format!("root:{ROOT_PASSWORD}"),
                        "user",
                        "add",
                        &format!("churn-{n}"),
                        "--new-user-password",
                        "churn-pw",
                    ])
                    .output()
                    .expect("run etcdctl")
            }
        })
        .await
        .expect("etcdctl thread");
        assert!(
            out.status.success(),
            "etcdctl user add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ran = apply.await.expect("apply task");
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(!ran.stdout.contains("mover-pw") && !ran.stderr.contains("mover-pw"));
    assert_eq!(dst.dump(b"/copy/").await, expected(&src).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_tokens_that_expire_while_following_idle_are_renewed() {
    // Simple tokens expire after a second unused: an idle follow outlives
    // its tokens on both sides.
    let user = |grants: Vec<Permission>| ClusterSpec {
        members: 1,
        users: vec![UserSpec {
            name: "mover",
            password: "mover-pw",
            grants,
        }],
        extra_args: vec!["--auth-token-ttl=1".into()],
        ..Default::default()
    };
    let (src, dst) = tokio::join!(
        Cluster::start(user(vec![Permission::read("/r/").with_prefix()])),
        Cluster::start(user(vec![
            Permission::read_write("/copy/").with_prefix(),
            Permission::read_write("/etcdplan/checkpoint/tokens"),
        ]))
    );
    src.seed(r_keys(100)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "version: 1\nname: tokens\nsource:\n{}destination:\n{}{MAPPING}",
        side_yaml(&src, Some(("mover", "MOVER_PASSWORD"))),
        side_yaml(&dst, Some(("mover", "MOVER_PASSWORD")))
    );
    write_file(dir.path(), "plan.yaml", &text);
    // The fault is real: a client that does not log in again fails after
    // idling as long as the follow will.
    let mut naive = etcd_client::Client::connect(
        [dst.endpoint(0)],
        Some(etcd_client::ConnectOptions::new().with_user("mover", "mover-pw")),
    )
    .await
    .expect("connect");
    naive
        .get("/copy/", None)
        .await
        .expect("a fresh token works");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stale = naive
        .get("/copy/", None)
        .await
        .expect_err("an idle token expires");
    assert!(stale.to_string().contains("invalid auth token"), "{stale}");
    let later = src.revision().await + 1;
    let child = common::etcdplan_child(dir.path())
        .env("MOVER_PASSWORD", "mover-pw")
        .args(["apply", "plan.yaml", "--auto-approve", "--follow"])
        .args([
            "--progress-every",
            "5",
            "--until-revision",
            &later.to_string(),
        ])
        .spawn()
        .expect("spawn follow");
    dst.wait_for_keys("/copy/", 100).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut c = src.client().await;
    c.put("/r/later", "after the tokens expired", None)
        .await
        .expect("put");
    let (code, stdout, stderr) = common::follow::finish(child);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert_eq!(dst.dump(b"/copy/").await, expected(&src).await);
}
