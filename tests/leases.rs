//! Leases (`leases: preserve | drop | skip`): what every other copier drops.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Cluster, etcdplan, run, write_plan};
use etcd_client::{GetOptions, PutOptions};

/// /l/a and /l/b on one lease (TTL 300 s), /l/c on another (200 s), /l/plain on none.
async fn leased_source() -> Cluster {
    let src = Cluster::plaintext().await;
    let mut c = src.client().await;
    let l1 = c.lease_grant(300, None).await.expect("grant").id();
    let l2 = c.lease_grant(200, None).await.expect("grant").id();
    for (k, l) in [("/l/a", l1), ("/l/b", l1), ("/l/c", l2)] {
        c.put(
            k,
            format!("value of {k}"),
            Some(PutOptions::new().with_lease(l)),
        )
        .await
        .expect("put");
    }
    c.put("/l/plain", "no lease", None).await.expect("put");
    src
}

/// Each key under /l/ on `c` with its lease id.
async fn leases_of(c: &Cluster) -> Vec<(String, i64)> {
    let mut client = c.client().await;
    let resp = client
        .get("/l/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get");
    resp.kvs()
        .iter()
        .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.lease()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn preserve_grants_one_destination_lease_per_source_lease() {
    let (src, dst) = tokio::join!(leased_source(), Cluster::plaintext());
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /l/\n");
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let line = |k: &str| {
        ran.stdout
            .lines()
            .find(|l| l.contains(k))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("/l/a").contains("s left)"),
        "the plan shows the remaining TTL: {}",
        ran.stdout
    );
    assert!(!line("/l/plain").contains("lease"), "{}", ran.stdout);

    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    let got = leases_of(&dst).await;
    let lease = |k: &str| {
        got.iter()
            .find(|(key, _)| key == k)
            .map(|(_, l)| *l)
            .unwrap_or(-1)
    };
    assert_ne!(lease("/l/a"), 0);
    assert_eq!(
        lease("/l/a"),
        lease("/l/b"),
        "keys sharing a source lease share one"
    );
    assert_ne!(lease("/l/c"), 0);
    assert_ne!(lease("/l/c"), lease("/l/a"));
    assert_eq!(lease("/l/plain"), 0);
    let mut d = dst.client().await;
    let ttl = d
        .lease_time_to_live(lease("/l/a"), None)
        .await
        .expect("ttl")
        .ttl();
    assert!(
        (200..=300).contains(&ttl),
        "the remaining TTL carried over: {ttl}"
    );

    // A rerun grants no lease again.
    let before: HashSet<i64> = d
        .leases()
        .await
        .expect("leases")
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    assert_eq!(before.len(), 2);
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout.contains("No changes"), "{}", ran.stdout);
    let after: HashSet<i64> = d
        .leases()
        .await
        .expect("leases")
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_writes_without_leases_and_says_so() {
    let (src, dst) = tokio::join!(leased_source(), Cluster::plaintext());
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /l/\nleases: drop\n",
    );
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml"]));
    assert_eq!(
        ran.stdout
            .matches("dropped: written without a lease")
            .count(),
        3,
        "{}",
        ran.stdout
    );
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let got = leases_of(&dst).await;
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|(_, l)| *l == 0), "{got:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn skip_leaves_leased_keys_out_on_both_sides() {
    let (src, dst) = tokio::join!(leased_source(), Cluster::plaintext());
    dst.seed([("/l/c", "destination's own")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /l/\nleases: skip\nprune: true\non_conflict: overwrite\n",
    );
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml"]));
    assert!(
        ran.stdout.contains(
            "Plan: 1 to create, 0 to update, 0 to delete, 0 unchanged, 3 leased skipped."
        ),
        "{}",
        ran.stdout
    );
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--auto-approve"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let got = dst.dump(b"/l/").await;
    assert_eq!(
        got,
        vec![
            (b"/l/c".to_vec(), b"destination's own".to_vec()),
            (b"/l/plain".to_vec(), b"no lease".to_vec())
        ],
        "neither copied nor pruned nor overwritten"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_whose_lease_expires_before_apply_is_not_resurrected() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    let mut c = src.client().await;
    let short = c.lease_grant(3, None).await.expect("grant").id();
    c.put(
        "/e/short",
        "expires",
        Some(PutOptions::new().with_lease(short)),
    )
    .await
    .expect("put");
    c.put("/e/plain", "stays", None).await.expect("put");
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /e/\n");
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--out", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout.contains("+ /e/short"), "{}", ran.stdout);
    // Wait until the source lease has expired and its key is gone.
    for _ in 0..100 {
        if src.dump(b"/e/short").await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(src.dump(b"/e/short").await.is_empty(), "the lease expired");
    let ran = run(etcdplan(dir.path()).args(["apply", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stderr.contains("not resurrected") && ran.stderr.contains("/e/short"),
        "{}",
        ran.stderr
    );
    assert_eq!(
        dst.dump(b"/e/").await,
        vec![(b"/e/plain".to_vec(), b"stays".to_vec())]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_ids_above_2_53_survive_json_as_the_text_shows_them() {
    let src = Cluster::plaintext().await;
    let dst = Cluster::plaintext().await;
    let mut c = src.client().await;
    // An id that a JSON number would round (to 6012765306785180000 in jq).
    let id: i64 = 6_012_765_306_785_180_153;
    let options = etcd_client::LeaseGrantOptions::new().with_id(id);
    let granted = c.lease_grant(300, Some(options)).await.expect("grant");
    assert_eq!(granted.id(), id);
    c.put("/l/a", "v", Some(PutOptions::new().with_lease(id)))
        .await
        .expect("put");
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /l/\n");
    let hex = format!("{id:016x}");
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--format", "json"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let json: serde_json::Value = serde_json::from_str(&ran.stdout).expect("JSON");
    assert_eq!(json["format_version"], "2");
    assert_eq!(json["changes"][0]["source_lease"], hex.as_str());
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml"]));
    assert!(
        ran.stdout.contains(&format!("(lease {hex}, ")),
        "{}",
        ran.stdout
    );
    // A saved plan keeps the id exactly: apply puts the key on a lease.
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--out", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let ran = run(etcdplan(dir.path()).args(["apply", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    let copied = leases_of(&dst).await;
    assert_eq!(copied.len(), 1);
    assert_ne!(copied[0].1, 0, "written on a destination lease");
}
