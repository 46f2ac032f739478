#![allow(clippy::disallowed_macros)] // a measuring tool: it prints its figures
//! Helper for examples/bench.sh: seeds keys, writes the raw baseline, and
//! reads or counts ranges, with the plainest etcd-client code possible.
//!
//! Usage:
//!   benchtool seed  ENDPOINT PREFIX N    # N keys of ~200-byte JSON, 8 txns in flight
//!   benchtool raw   ENDPOINT PREFIX N [IN_FLIGHT]
//!                                        # the same N keys as plain 128-put txns,
//!                                        # IN_FLIGHT (default 1) at a time: the write ceiling
//!                                        # (CONNECTIONS=C spreads them over C connections)
//!   benchtool read  ENDPOINT PREFIX      # read every key and value, paged, no sort
//!   benchtool pread ENDPOINT PREFIX N PARTS
//!                                        # read the N seeded keys as PARTS bounded
//!                                        # sub-ranges in parallel: the read ceiling
//!                                        # (PL=KEYS sets keys per page, default 5000;
//!                                        # CONNECTIONS=C spreads them over C connections)
//!   benchtool scan  ENDPOINT PREFIX [READERS]
//!                                        # etcdplan's own parallel reader alone
//!   benchtool count ENDPOINT PREFIX
//!   benchtool clear ENDPOINT PREFIX
//!   benchtool rev   ENDPOINT

use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp};

fn value(i: u64) -> String {
    format!(
        r#"{{"config":{{"name":"pvc-{i:08}","size":"{}Gi","storageClass":"gold","protocol":"file","accessMode":"ReadWriteOnce"}},"backend":"ontapnas_10.0.0.1","pool":"aggr1","state":"online","orphaned":false}}"#,
        i % 97 + 1
    )
}

fn key(prefix: &str, i: u64) -> String {
    format!("{prefix}{i:08}")
}

fn batch(prefix: &str, from: u64, to: u64) -> Txn {
    let puts: Vec<TxnOp> = (from..to)
        .map(|i| TxnOp::put(key(prefix, i), value(i), None))
        .collect();
    let mode = std::env::var("GUARDED").ok();
    let absent = |i: u64| Compare::create_revision(key(prefix, i), CompareOp::Equal, 0);
    match mode.as_deref() {
        None => return Txn::new().and_then(puts),
        // GUARDED=keys: a compare per put, as etcdplan guards a create.
        Some("keys") => {
            return Txn::new()
                .when((from..to).map(absent).collect::<Vec<_>>())
                .and_then(puts);
        }
        // GUARDED=span: one compare over the batch's span, as etcdplan
        // guards a batch of creates.
        Some("span") => {
            let mut end = key(prefix, to - 1).into_bytes();
            end.push(0);
            return Txn::new()
                .when(vec![absent(from).with_range(end)])
                .and_then(puts);
        }
        Some(_) => {}
    }
    // GUARDED=1: a compare per put, with a read-back of every key should a
    // guard fail (as etcdplan guarded writes before).
    let absent: Vec<Compare> = (from..to).map(absent).collect();
    let reads: Vec<TxnOp> = (from..to)
        .map(|i| TxnOp::get(key(prefix, i), None))
        .collect();
    Txn::new().when(absent).and_then(puts).or_else(reads)
}

/// Who writes a batch of keys, which sets how it tries again.
#[derive(Clone, Copy)]
enum Writer {
    /// Not measured: waits before trying again.
    Seed,
    /// The write ceiling: tries again at once, its time counting the
    /// failed attempt.
    Raw,
}

/// Writes one batch of keys, again after a failure (said on stderr): the
/// puts are idempotent, so a slow fsync that makes etcd answer "request
/// timed out" (seen seeding a second million keys) should not end the
/// benchmark.
async fn put_batch(
    mut c: Client,
    writer: Writer,
    prefix: &str,
    from: u64,
    to: u64,
) -> Result<(), etcd_client::Error> {
    let what = match writer {
        Writer::Seed => "seed",
        Writer::Raw => "raw",
    };
    let mut attempt = 0;
    loop {
        match c.txn(batch(prefix, from, to)).await {
            Ok(_) => return Ok(()),
            Err(e) if attempt >= 5 => return Err(e),
            Err(e) => {
                eprintln!("benchtool {what}: {e}; again");
                attempt += 1;
                if matches!(writer, Writer::Seed) {
                    tokio::time::sleep(std::time::Duration::from_millis(500 << attempt)).await;
                }
            }
        }
    }
}

/// Deletes every key under `prefix`, 100,000 at a time (one delete of a
/// million keys kept etcd applying past its request timeout, which ended a
/// benchmark), trying again after a failure; then compacts, so every figure
/// of a run starts from the same backend state instead of an ever-growing
/// history.
async fn clear(client: &mut Client, prefix: &str) -> Result<(), Box<dyn std::error::Error>> {
    let end = etcdplan::keys::prefix_end(prefix.as_bytes()).unwrap_or_else(|| vec![0]);
    let (mut tried, mut failures) = (false, 0);
    let revision = loop {
        let page = client
            .get(
                prefix,
                Some(
                    GetOptions::new()
                        .with_range(end.clone())
                        .with_keys_only()
                        .with_limit(100_000),
                ),
            )
            .await?;
        let Some(last) = page.kvs().last() else {
            break page.header().map_or(0, |h| h.revision());
        };
        let mut to = last.key().to_vec();
        to.push(0);
        tried = true;
        if let Err(e) = client
            .delete(prefix, Some(DeleteOptions::new().with_range(to)))
            .await
        {
            failures += 1;
            if failures > 5 {
                return Err(e.into());
            }
            eprintln!("benchtool clear: {e}; again");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    };
    // Nothing deleted: the revision may already be compacted.
    if tried {
        client
            .compact(
                revision,
                Some(etcd_client::CompactionOptions::new().with_physical()),
            )
            .await?;
    }
    Ok(())
}

/// `CONNECTIONS` clients of `endpoint` (default 1), each its own connection:
/// requests taken in turn by `clients[i % len]`. Across a long link each
/// HTTP/2 connection's window opens small and grows slowly, so a writer on
/// several connections fills the link sooner (etcdplan uses several too).
async fn clients(
    first: &Client,
    endpoint: &str,
) -> Result<Vec<Client>, Box<dyn std::error::Error>> {
    let n: usize = std::env::var("CONNECTIONS")
        .ok()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1);
    let mut all = vec![first.clone()];
    for _ in 1..n {
        all.push(Client::connect([endpoint], None).await?);
    }
    Ok(all)
}

/// Reads `[start, end)` page by page (no sort) at `revision` (0: pinned by
/// the first page); returns how many keys it read.
async fn read_range(
    client: &Client,
    mut start: Vec<u8>,
    end: Vec<u8>,
    mut revision: i64,
    limit: i64,
) -> Result<u64, etcd_client::Error> {
    let mut total = 0u64;
    loop {
        let resp = client
            .kv_client()
            .max_decoding_message_size(64 << 20)
            .get(
                start.clone(),
                Some(
                    GetOptions::new()
                        .with_range(end.clone())
                        .with_limit(limit)
                        .with_revision(revision),
                ),
            )
            .await?;
        if revision == 0 {
            revision = resp.header().map_or(0, |h| h.revision());
        }
        total += resp.kvs().len() as u64;
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => return Ok(total),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: benchtool seed|raw|read|pread|count|clear|rev ENDPOINT [PREFIX [N [K]]]";
    let (cmd, endpoint) = match (args.get(1), args.get(2)) {
        (Some(c), Some(e)) => (c.as_str(), e.as_str()),
        _ => return Err(usage.into()),
    };
    let prefix = args.get(3).cloned().unwrap_or_default();
    let n: u64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let mut client = Client::connect([endpoint], None).await?;
    match cmd {
        "seed" => {
            let mut set = tokio::task::JoinSet::new();
            let mut from = 0;
            while from < n {
                let to = (from + 128).min(n);
                let (c, p) = (client.clone(), prefix.clone());
                set.spawn(async move { put_batch(c, Writer::Seed, &p, from, to).await });
                if set.len() >= 8
                    && let Some(r) = set.join_next().await
                {
                    r??;
                }
                from = to;
            }
            while let Some(r) = set.join_next().await {
                r??;
            }
        }
        "raw" => {
            let in_flight: usize = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(1);
            let clients = clients(&client, endpoint).await?;
            let mut set = tokio::task::JoinSet::new();
            let mut from = 0;
            while from < n {
                let to = (from + 128).min(n);
                let c = &clients[(from / 128) as usize % clients.len()];
                let (c, p) = (c.clone(), prefix.clone());
                set.spawn(async move { put_batch(c, Writer::Raw, &p, from, to).await });
                if set.len() >= in_flight.max(1)
                    && let Some(r) = set.join_next().await
                {
                    r??;
                }
                from = to;
            }
            while let Some(r) = set.join_next().await {
                r??;
            }
        }
        "pread" => {
            // The seeded keys are PREFIX + 8 digits: the ceiling knows the
            // split points exactly, which a general reader cannot.
            let parts: u64 = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(16);
            let revision = client
                .get("\0", None)
                .await?
                .header()
                .map_or(0, |h| h.revision());
            let clients = clients(&client, endpoint).await?;
            let mut set = tokio::task::JoinSet::new();
            for part in 0..parts {
                let (lo, hi) = (n * part / parts, n * (part + 1) / parts);
                let start = key(&prefix, lo).into_bytes();
                let end = if part + 1 == parts {
                    etcdplan::keys::prefix_end(prefix.as_bytes()).unwrap_or_else(|| vec![0])
                } else {
                    key(&prefix, hi).into_bytes()
                };
                let c = clients[part as usize % clients.len()].clone();
                let limit = std::env::var("PL")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(5000);
                set.spawn(async move { read_range(&c, start, end, revision, limit).await });
            }
            let mut total = 0;
            while let Some(r) = set.join_next().await {
                total += r??;
            }
            println!("{total}");
        }
        "read" => {
            let end = etcdplan::keys::prefix_end(prefix.as_bytes()).unwrap_or_else(|| vec![0]);
            let total = read_range(&client, prefix.as_bytes().to_vec(), end, 0, 5000).await?;
            println!("{total}");
        }
        "scan" => {
            // etcdplan's own parallel reader alone (no diff): where the
            // plan's read time goes.
            let readers: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(8);
            let config = etcdplan::planfile::SideConfig {
                role: etcdplan::planfile::SideRole::Source,
                endpoints: vec![endpoint.to_string()],
                uses_tls: false,
                api: etcdplan::planfile::Api::V3,
                tls: None,
                auth: None,
                snapshot: None,
            };
            let side = std::sync::Arc::new(etcdplan::etcd::Side::new(&config, Default::default()));
            let (tx, mut rx) = tokio::sync::mpsc::channel(2);
            let range = etcdplan::etcd::KeyRange::prefix(prefix.as_bytes());
            let task = tokio::spawn(async move {
                let counter = std::sync::atomic::AtomicU64::new(0);
                etcdplan::etcd::parallel::scan_parallel(
                    &side,
                    &range,
                    &etcdplan::etcd::Pin::latest(),
                    Default::default(),
                    readers,
                    &counter,
                    &tx,
                )
                .await
            });
            let mut total = 0;
            while let Some(page) = rx.recv().await {
                total += page.len();
            }
            task.await??;
            println!("{total}");
        }
        "count" => {
            let resp = client
                .get(
                    prefix,
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await?;
            println!("{}", resp.count());
        }
        "clear" => clear(&mut client, &prefix).await?,
        "rev" => {
            let resp = client.get("\0", None).await?;
            println!("{}", resp.header().map_or(0, |h| h.revision()));
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
