//! The link's length: across a long one (the test proxy holding every chunk
//! 25 ms each way), etcdplan spreads its requests over 8 connections to the
//! endpoint, because each HTTP/2 connection's window opens small; on
//! loopback it keeps to one. Alone in its binary, so that no other test
//! loads the machine while loopback answers are timed.

mod common;

use std::time::Duration;

use common::proxy::Proxy;
use common::{Cluster, etcdplan, r_keys, run_async, side_yaml, side_yaml_via, write_file};

#[tokio::test(flavor = "multi_thread")]
async fn a_long_link_takes_8_connections_and_loopback_one() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed(r_keys(20_000)).await;
    let (short, long) = tokio::join!(
        Proxy::start(dst.client_port(0)),
        Proxy::start(dst.client_port(0))
    );
    long.delay(Duration::from_millis(25));
    let dir = tempfile::tempdir().expect("tempdir");
    for (proxy, to) in [(&short, "/short/"), (&long, "/long/")] {
        let text = format!(
            "version: 1\nsource:\n{}destination:\n{}prefixes:\n  - from: /r/\n    to: {to}\n",
            side_yaml(&src, None),
            side_yaml_via(&dst, &[proxy.endpoint("http")], None)
        );
        write_file(dir.path(), "plan.yaml", &text);
        let ran = run_async({
            let mut c = etcdplan(dir.path());
            c.args(["apply", "plan.yaml", "--auto-approve", "--max-listed", "0"]);
            c
        })
        .await;
        assert_eq!(ran.code, Some(0), "{to}: {}\n{}", ran.stdout, ran.stderr);
        assert_eq!(dst.dump(to.as_bytes()).await.len(), 20_000, "{to}");
    }
    // Every request over the long link answered in 50 ms or more: the 7
    // other connections open as their turns come (157 batches and more).
    assert_eq!(long.accepted(), 8, "connections across the long link");
    assert_eq!(short.accepted(), 1, "connections across loopback");
}
