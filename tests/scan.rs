//! The parallel bounded reader against real etcd: whatever the key layout
//! (dense, sparse, long shared prefixes, binary bytes, the prefix itself as
//! a key), however many readers and however small the pages, it yields
//! exactly the keys of one plain read of the range, in key order, at the
//! pinned revision.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use common::{Cluster, write_plan};
use etcdplan::etcd::parallel::{
    FirstPage, Sample, Scan, first_page, scan_parallel, scan_parallel_from, scan_parallel_sampled,
};
use etcdplan::etcd::{Entry, KeyRange, PageLimits, Pin, Side};

fn layout() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut kvs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for i in 0..3000 {
        kvs.push((
            format!("/s/d/{i:06}").into_bytes(),
            format!("v{i}").into_bytes(),
        ));
    }
    // Keys that agree on far more than 16 bytes after the common prefix.
    for i in 0..400 {
        kvs.push((
            format!("/s/long/{}/{i:04}", "a".repeat(40)).into_bytes(),
            vec![b'x'; i % 50],
        ));
    }
    for i in 0..=255u8 {
        kvs.push((vec![b'/', b's', b'/', b'b', 0x00, i], vec![i]));
        kvs.push((vec![b'/', b's', b'/', 0xff, 0xff, i], Vec::new()));
    }
    kvs.push((b"/s/".to_vec(), b"the prefix itself".to_vec()));
    for i in 0..20 {
        kvs.push((format!("/s/z{}", i * 7919).into_bytes(), b"sparse".to_vec()));
    }
    // Outside the range.
    for k in ["/s", "/r/x", "/t/", "/s0"] {
        kvs.push((k.as_bytes().to_vec(), b"outside".to_vec()));
    }
    kvs
}

async fn side_of(cluster: &Cluster) -> (Arc<Side>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        cluster,
        cluster,
        "prefixes:\n  - from: /s/\n    to: /copy/\n",
    );
    let plan = etcdplan::planfile::load(&dir.path().join("plan.yaml")).expect("plan");
    let (source, _) = etcdplan::engine::sides(&plan, &etcdplan::etcd::RetryPolicy::default());
    (source, dir)
}

async fn read(
    side: &Arc<Side>,
    range: &KeyRange,
    pin: &Pin,
    limits: PageLimits,
    readers: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    read_from(side, range, pin, (limits, readers), None).await
}

/// Where a scan starts: from its own first page, a first page read ahead,
/// or a sample of the range's keys.
enum Start {
    Own,
    First(FirstPage),
    Sample(Sample),
}

/// [`read`], through `scan_parallel_from` when given a first page.
async fn read_from(
    side: &Arc<Side>,
    range: &KeyRange,
    pin: &Pin,
    limits: (PageLimits, usize),
    first: Option<FirstPage>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let start = first.map_or(Start::Own, Start::First);
    read_started(side, range, pin, limits, start).await
}

async fn read_started(
    side: &Arc<Side>,
    range: &KeyRange,
    pin: &Pin,
    (limits, readers): (PageLimits, usize),
    start: Start,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    // A channel of one page: the merge and the readers wait for the consumer.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Entry>>(1);
    let counter = AtomicU64::new(0);
    let (side, range, pin) = (side.clone(), range.clone(), pin.clone());
    let scan = tokio::spawn(async move {
        let scan = Scan {
            range: &range,
            pin: &pin,
            limits,
            readers,
        };
        let result = match start {
            Start::Own => scan_parallel(&side, &range, &pin, limits, readers, &counter, &tx).await,
            Start::First(first) => {
                scan_parallel_from(&side, scan, Some(first), &counter, &tx).await
            }
            Start::Sample(sample) => {
                scan_parallel_sampled(&side, scan, sample, &counter, &tx).await
            }
        };
        (result, counter.into_inner())
    });
    let mut out = Vec::new();
    while let Some(page) = rx.recv().await {
        out.extend(page.into_iter().map(|e| (e.key, e.value)));
    }
    let (result, counted) = scan.await.expect("scan task");
    result.expect("scan");
    assert_eq!(
        counted as usize,
        out.len(),
        "progress counts every key once"
    );
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_reads_equal_one_plain_read_in_key_order() {
    let cluster = Cluster::plaintext().await;
    cluster.seed(layout()).await;
    let (side, _dir) = side_of(&cluster).await;
    let range = KeyRange::prefix(b"/s/");
    let expected = cluster.dump(b"/s/").await;
    assert!(expected.len() > 3000);
    let tiny = PageLimits {
        page_bytes: 100,
        max_keys: 7,
        first_keys: 1,
    };
    for limits in [PageLimits::default(), tiny] {
        for readers in [1, 2, 3, 8, 16] {
            let got = read(&side, &range, &Pin::latest(), limits, readers).await;
            assert_eq!(
                got.len(),
                expected.len(),
                "{readers} readers, {limits:?}: key count"
            );
            assert!(
                got == expected,
                "{readers} readers, {limits:?}: same keys, values and order"
            );
        }
    }

    // First keys all digits, later ones bytes that are no digit: positions
    // learnt from the first page must still cut between the right keys.
    let mut mixed: Vec<(Vec<u8>, Vec<u8>)> = (0..2000)
        .map(|i| (format!("/u/{i:05}").into_bytes(), b"d".to_vec()))
        .collect();
    for i in 0..=255u8 {
        mixed.push((vec![b'/', b'u', b'/', b'5', i, b'q'], vec![i]));
        mixed.push((vec![b'/', b'u', b'/', b'z', 0xfe, i], Vec::new()));
    }
    cluster.seed(mixed).await;
    let expected = cluster.dump(b"/u/").await;
    let medium = PageLimits {
        page_bytes: 4096,
        max_keys: 50,
        first_keys: 50,
    };
    for limits in [PageLimits::default(), medium, tiny] {
        for readers in [2, 8] {
            let got = read(
                &side,
                &KeyRange::prefix(b"/u/"),
                &Pin::latest(),
                limits,
                readers,
            )
            .await;
            assert!(
                got == expected,
                "/u/, {readers} readers, {limits:?}: {} keys, not {}",
                got.len(),
                expected.len()
            );
        }
    }

    // The whole keyspace too (the open-ended range).
    let all = read(&side, &KeyRange::prefix(b""), &Pin::latest(), tiny, 8).await;
    let c = cluster.client().await;
    let plain = c
        .kv_client()
        .get(
            vec![0u8],
            Some(etcd_client::GetOptions::new().with_from_key()),
        )
        .await
        .expect("plain read");
    let plain: Vec<Vec<u8>> = plain.kvs().iter().map(|kv| kv.key().to_vec()).collect();
    let all_keys: Vec<Vec<u8>> = all.into_iter().map(|(k, _)| k).collect();
    assert_eq!(all_keys, plain);
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_reads_stay_at_the_pinned_revision() {
    let cluster = Cluster::plaintext().await;
    cluster.seed(layout()).await;
    let (side, _dir) = side_of(&cluster).await;
    let expected = cluster.dump(b"/s/").await;
    let pinned = Pin::at(cluster.revision().await);
    // Later writes all over the range: new keys, changed values, deletes.
    let mut c = cluster.client().await;
    cluster
        .seed((0..500).map(|i| (format!("/s/d/{:06}x", i * 5), "late")))
        .await;
    c.put("/s/d/000001", "changed", None).await.expect("put");
    c.delete(
        "/s/long/",
        Some(etcd_client::DeleteOptions::new().with_prefix()),
    )
    .await
    .expect("delete");
    let got = read(
        &side,
        &KeyRange::prefix(b"/s/"),
        &pinned,
        PageLimits::default(),
        8,
    )
    .await;
    assert!(
        got == expected,
        "exactly the range as of the pinned revision"
    );
}

/// Apply's probes read each range's first page ahead of the plan, and the
/// scan starts from it: only at the revision it was read at. A scan pinned
/// elsewhere, or given a page whose entries were dropped (held bytes
/// capped), reads the first page again.
#[tokio::test(flavor = "multi_thread")]
async fn a_first_page_read_ahead_is_used_only_at_its_own_revision() {
    let cluster = Cluster::plaintext().await;
    cluster.seed(layout()).await;
    let (side, _dir) = side_of(&cluster).await;
    let range = KeyRange::prefix(b"/s/");
    let limits = (PageLimits::default(), 8);
    let page = first_page(&side, &range, 0, limits.0)
        .await
        .expect("first page");
    assert!(!page.is_empty());
    let before = cluster.dump(b"/s/").await;
    // Writes where the first page lies: the prefix's own key changed, and
    // keys before and inside the page's span.
    cluster
        .seed([("/s/", "changed"), ("/s/\x01", "new"), ("/s/b", "new")])
        .await;
    let after = cluster.dump(b"/s/").await;
    assert_ne!(before, after);
    let then = Pin::at(page.revision);
    let now = Pin::at(cluster.revision().await);

    let got = read_from(&side, &range, &then, limits, Some(page.clone())).await;
    assert!(got == before, "from the page, at its revision");
    let got = read_from(&side, &range, &now, limits, Some(page.clone())).await;
    assert!(got == after, "pinned later: the page is not used");
    let mut stripped = page.clone();
    stripped.strip();
    assert!(
        !stripped.is_empty(),
        "a stripped page still says the range holds keys"
    );
    let got = read_from(&side, &range, &then, limits, Some(stripped)).await;
    assert!(got == before, "a stripped page is read again, at the pin");

    let nothing = KeyRange::prefix(b"/nothing/");
    let empty = first_page(&side, &nothing, 0, limits.0)
        .await
        .expect("first page");
    assert!(empty.is_empty());
}

/// A saved plan's values scan sizes its pieces from the source keys the
/// plan writes next instead of from a first page. Whatever the sample (the
/// range's first keys, every 50th key, two neighbours, keys out of order or
/// outside the range), the scan reads exactly the range, in key order.
#[tokio::test(flavor = "multi_thread")]
async fn sampled_reads_equal_one_plain_read_whatever_the_sample() {
    let cluster = Cluster::plaintext().await;
    cluster.seed(layout()).await;
    let (side, _dir) = side_of(&cluster).await;
    let expected = cluster.dump(b"/s/").await;
    let keys: Vec<Vec<u8>> = expected.iter().map(|(k, _)| k.clone()).collect();
    let pin = Pin::at(cluster.revision().await);
    let sample = |keys: Vec<Vec<u8>>| Sample {
        keys,
        entry_bytes: 20,
    };
    let samples = [
        ("the first keys", sample(keys[..256].to_vec())),
        (
            "every 50th key",
            sample(keys.iter().step_by(50).cloned().collect()),
        ),
        ("two neighbours", sample(keys[1000..1002].to_vec())),
        (
            "out of order",
            sample(vec![keys[9].clone(), keys[3].clone()]),
        ),
        (
            "outside the range",
            sample(vec![b"/r".to_vec(), keys[5].clone()]),
        ),
        ("empty", Sample::default()),
    ];
    let tiny = PageLimits {
        page_bytes: 100,
        max_keys: 7,
        first_keys: 1,
    };
    for (name, sample) in samples {
        for limits in [PageLimits::default(), tiny] {
            for readers in [2, 8] {
                let start = Start::Sample(sample.clone());
                let range = KeyRange::prefix(b"/s/");
                let got = read_started(&side, &range, &pin, (limits, readers), start).await;
                assert!(
                    got == expected,
                    "{name}, {readers} readers, {limits:?}: {} keys, not {}",
                    got.len(),
                    expected.len()
                );
            }
        }
    }
    // From a key inside the range, as a saved plan's first change.
    let mut range = KeyRange::prefix(b"/s/");
    range.start.clone_from(&keys[700]);
    let start = Start::Sample(sample(keys[700..956].to_vec()));
    let got = read_started(&side, &range, &pin, (PageLimits::default(), 2), start).await;
    assert!(got == expected[700..], "from its first key on");
}
