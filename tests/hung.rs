//! Hung peers: a member paused with SIGSTOP keeps its TCP connections open
//! and answers nothing, the failure a timeout on connect never sees. With one
//! of three members paused, plan and apply never wait for it; with the only
//! endpoint paused, etcdplan says so within seconds and fails within a
//! minute (`--stall-timeout`, default 30 s), instead of hanging. The
//! timings are printed for the record (the test harness owns stderr).
#![allow(clippy::disallowed_macros)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{
    Cluster, ClusterSpec, etcdplan, etcdplan_child, run, side_yaml, side_yaml_via, write_file,
};

const MAPPING: &str = "prefixes:\n  - from: /h/\n";

async fn three() -> Cluster {
    Cluster::start(ClusterSpec {
        members: 3,
        ..Default::default()
    })
    .await
}

/// A follower of `c`, and `c`'s endpoints with that follower first: the
/// member etcdplan would otherwise talk to first.
async fn follower_first(c: &Cluster) -> (usize, Vec<String>) {
    let leader = c.leader().await;
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    let mut endpoints = vec![c.endpoint(follower)];
    endpoints.extend((0..3).filter(|&i| i != follower).map(|i| c.endpoint(i)));
    (follower, endpoints)
}

/// Runs etcdplan in `dir`; returns its exit code, wall time and stderr.
fn timed(dir: &Path, args: &[&str]) -> (Option<i32>, Duration, String, String) {
    let started = Instant::now();
    let ran = run(etcdplan(dir).args(args));
    (ran.code, started.elapsed(), ran.stdout, ran.stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_of_three_members_paused_costs_almost_nothing() {
    let (src, dst) = tokio::join!(three(), three());
    src.seed((0..5000).map(|i| (format!("/h/{i:05}"), format!("{{\"i\":{i}}}"))))
        .await;
    let ((src_paused, src_endpoints), (dst_paused, dst_endpoints)) =
        tokio::join!(follower_first(&src), follower_first(&dst));
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "version: 1\nsource:\n{}destination:\n{}{MAPPING}",
        side_yaml_via(&src, &src_endpoints, None),
        side_yaml_via(&dst, &dst_endpoints, None)
    );
    write_file(dir.path(), "plan.yaml", &text);
    let (code, normal, _, stderr) = timed(dir.path(), &["plan", "plan.yaml"]);
    assert_eq!(code, Some(0), "{stderr}");

    src.pause_member(src_paused);
    dst.pause_member(dst_paused);
    let (code, paused, stdout, stderr) = timed(dir.path(), &["plan", "plan.yaml"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("Plan: 5,000 to create"), "{stdout}");
    assert!(
        paused < normal + Duration::from_secs(2),
        "plan with a paused member took {paused:?}, {normal:?} without"
    );
    assert!(!stderr.contains("did not answer"), "never waited: {stderr}");
    eprintln!("plan: {normal:?} with every member, {paused:?} with one of three paused");

    let (code, took, stdout, stderr) = timed(dir.path(), &["apply", "plan.yaml", "--auto-approve"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("Verified: 5,000"), "{stdout}");
    assert!(!stderr.contains("did not answer"), "never waited: {stderr}");
    assert!(
        took < Duration::from_secs(5),
        "apply with a paused member took {took:?}, longer than one request timeout"
    );
    eprintln!("apply with one of three paused: {took:?}");
    src.resume_member(src_paused);
    dst.resume_member(dst_paused);
    assert_eq!(dst.dump(b"/h/").await, src.dump(b"/h/").await);
}

/// Runs etcdplan with stderr read line by line as it comes: each line with
/// the time it arrived. Kills it after 90 s.
fn watched(dir: &Path, args: &[&str]) -> (Option<i32>, Duration, Vec<(Duration, String)>) {
    let started = Instant::now();
    let mut child = etcdplan_child(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn etcdplan");
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .map(|l| (started.elapsed(), l))
            .collect::<Vec<_>>()
    });
    let deadline = started + Duration::from_secs(90);
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("etcdplan {args:?} still ran after 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = started.elapsed();
    (code, took, reader.join().expect("stderr reader"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_only_endpoint_paused_is_said_at_once_and_fails_within_a_minute() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed([("/h/a", "1")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "version: 1\nsource:\n{}destination:\n{}{MAPPING}",
        side_yaml(&src, None),
        side_yaml(&dst, None)
    );
    write_file(dir.path(), "plan.yaml", &text);
    dst.pause_member(0);

    let (code, took, lines) = watched(dir.path(), &["plan", "plan.yaml"]);
    let all: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
    assert_eq!(code, Some(1), "{all}");
    assert!(
        took < Duration::from_secs(60),
        "failed after {took:?}: {all}"
    );
    let notice = format!(
        "destination {} did not answer in 5 s; retrying",
        dst.endpoint(0)
    );
    let said = lines
        .iter()
        .find(|(_, l)| l.contains(&notice))
        .unwrap_or_else(|| panic!("no notice `{notice}`: {all}"));
    assert!(said.0 < Duration::from_secs(8), "said after {:?}", said.0);
    eprintln!(
        "the only endpoint paused: said after {:?}, failed after {took:?}",
        said.0
    );
    assert!(all.contains("etcdplan::etcd::stalled"), "{all}");
    assert!(
        all.contains("--stall-timeout"),
        "says how the bound is set: {all}"
    );

    // check reports, it does not wait out the member.
    let (code, took, _) = watched(dir.path(), &["check", "plan.yaml"]);
    assert_eq!(code, Some(1));
    assert!(took < Duration::from_secs(20), "check took {took:?}");
    eprintln!("check with the only endpoint paused: {took:?}");
    dst.resume_member(0);
}
