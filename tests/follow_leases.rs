//! `apply --follow` with `leases: preserve`: a leased put seen while
//! following reaches the destination on a destination lease with the source
//! lease's remaining TTL; keys sharing a source lease share one destination
//! lease (with the initial apply's keys, and across a restart); a destination
//! lease lives as long as its source lease is kept alive; and a source lease
//! that expires or is revoked takes its keys off the destination.

mod common;

use std::time::{Duration, Instant};

use common::follow::{finish, interrupt, spawn_follow};
use common::{Cluster, write_plan};
use etcd_client::{Client, PutOptions};

const PLAN: &str = "leases: preserve\nprefixes:\n  - from: /f/\n    to: /f/\n";

/// The lease of `key` on `c`; `None` when the key is absent.
async fn lease_of(c: &Cluster, key: &str) -> Option<i64> {
    let mut client = c.client().await;
    let resp = client.get(key, None).await.expect("get");
    resp.kvs().first().map(|kv| kv.lease())
}

/// Waits until `check` holds, for at most `limit`.
async fn until<F, Fut>(limit: Duration, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn put_leased(c: &mut Client, key: &str, lease: i64) {
    c.put(
        key,
        format!("v-{key}"),
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .expect("leased put");
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_preserves_shares_tends_and_ends_leases() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    let mut c = src.client().await;
    // Before following: the initial apply copies /f/seed on its lease.
    let long = c.lease_grant(120, None).await.expect("grant").id();
    put_leased(&mut c, "/f/seed", long).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, PLAN);
    let child = spawn_follow(dir.path(), &[]);
    until(Duration::from_secs(30), "the initial apply", || async {
        lease_of(&dst, "/f/seed").await.is_some()
    })
    .await;

    // While following: two keys on a new lease, one on the initial apply's
    // lease, one on a short lease nobody renews, one on a short lease the
    // source's owner keeps alive.
    let shared = c.lease_grant(60, None).await.expect("grant").id();
    let short = c.lease_grant(3, None).await.expect("grant").id();
    let kept = c.lease_grant(4, None).await.expect("grant").id();
    for (key, lease) in [
        ("/f/a", shared),
        ("/f/b", shared),
        ("/f/c", long),
        ("/f/short", short),
        ("/f/kept", kept),
    ] {
        put_leased(&mut c, key, lease).await;
    }
    until(Duration::from_secs(10), "the leased puts", || async {
        lease_of(&dst, "/f/kept").await.is_some() && lease_of(&dst, "/f/b").await.is_some()
    })
    .await;
    let (a, b) = (lease_of(&dst, "/f/a").await, lease_of(&dst, "/f/b").await);
    assert!(a.is_some_and(|l| l != 0), "a followed put keeps a lease");
    assert_eq!(
        a, b,
        "keys sharing a source lease share one destination lease"
    );
    assert_ne!(
        a,
        Some(shared),
        "the destination lease is the destination's own"
    );
    assert_eq!(
        lease_of(&dst, "/f/c").await,
        lease_of(&dst, "/f/seed").await,
        "a followed put shares the initial apply's lease"
    );
    let mut d = dst.client().await;
    let ttl = d
        .lease_time_to_live(a.unwrap_or_default(), None)
        .await
        .expect("ttl")
        .ttl();
    assert!(
        (45..=60).contains(&ttl),
        "the source lease's remaining TTL: {ttl}"
    );

    // The source owner keeps `kept` alive for 10 s, two and a half times its TTL.
    let (mut keeper, mut acks) = c.lease_keep_alive(kept).await.expect("keep alive");
    for _ in 0..10 {
        keeper.keep_alive().await.expect("keep alive");
        let _ = acks.message().await.expect("ack");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if lease_of(&dst, "/f/kept").await.is_none() {
        interrupt(&child);
        let (_, _, stderr) = finish(child);
        panic!("a destination lease lives while its source lease is kept alive: {stderr}");
    }
    assert!(
        lease_of(&dst, "/f/short").await.is_none(),
        "an expired source lease's key is gone from the destination"
    );

    // A revoke on the source takes its keys off the destination.
    c.lease_revoke(shared).await.expect("revoke");
    until(
        Duration::from_secs(10),
        "the revoke to be followed",
        || async {
            lease_of(&dst, "/f/a").await.is_none() && lease_of(&dst, "/f/b").await.is_none()
        },
    )
    .await;
    interrupt(&child);
    let (code, _, stderr) = finish(child);
    assert_eq!(code, Some(0), "{stderr}");

    // Restarted, follow resumes from its checkpoint and keeps the lease
    // it granted for `long`.
    let child = spawn_follow(dir.path(), &[]);
    put_leased(&mut c, "/f/d", long).await;
    until(
        Duration::from_secs(20),
        "the put after the restart",
        || async { lease_of(&dst, "/f/d").await.is_some() },
    )
    .await;
    assert_eq!(
        lease_of(&dst, "/f/d").await,
        lease_of(&dst, "/f/seed").await,
        "a resumed follow puts keys on the lease it granted before"
    );
    interrupt(&child);
    let (code, _, stderr) = finish(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("Resuming"), "{stderr}");
}
