//! The link's length: across a long one (the test proxy holding every chunk
//! 25 ms each way), etcdplan spreads its requests over 8 connections to the
//! endpoint, because each HTTP/2 connection's window opens small; on
//! loopback it keeps to one. Alone in its binary, so that no other test
//! loads the machine while loopback answers are timed.

mod common;

use std::time::Duration;

use common::proxy::Proxy;
use common::{Cluster, etcdplan, r_keys, run_async, write_plan_via};

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
        write_plan_via(
            dir.path(),
            (&src, &src.endpoints()),
            (&dst, &[proxy.endpoint("http")]),
            &format!("prefixes:\n  - from: /r/\n    to: {to}\n"),
        );
        let ran = run_async({
            let mut c = etcdplan(dir.path());
            c.args(["apply", "plan.yaml", "--auto-approve", "--max-listed", "0"]);
            c
        })
        .await;
        assert_eq!(ran.code, Some(0), "{to}: {}\n{}", ran.stdout, ran.stderr);
        assert_eq!(dst.dump(to.as_bytes()).await.len(), 20_000, "{to}");
    }
    // The long link's round trip is 50 ms or more: the 7 other
    // connections open at once, and requests take all 8 in turn.
    assert_eq!(long.accepted(), 8, "connections across the long link");
    assert_eq!(short.accepted(), 1, "connections across loopback");
}
