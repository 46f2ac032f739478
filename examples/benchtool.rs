//! Helper for examples/bench.sh: seeds keys, writes the raw baseline, and
//! reads or counts ranges, with the plainest etcd-client code possible.
//!
//! Usage:
//!   benchtool seed  ENDPOINT PREFIX N    # N keys of ~200-byte JSON, 8 txns in flight
//!   benchtool raw   ENDPOINT PREFIX N    # the same N keys as plain 128-put txns, one at a time
//!   benchtool read  ENDPOINT PREFIX      # read every key and value, paged, no sort
//!   benchtool count ENDPOINT PREFIX
//!   benchtool clear ENDPOINT PREFIX
//!   benchtool rev   ENDPOINT

use etcd_client::{Client, DeleteOptions, GetOptions, Txn, TxnOp};

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
    Txn::new().and_then(
        (from..to)
            .map(|i| TxnOp::put(key(prefix, i), value(i), None))
            .collect::<Vec<_>>(),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: benchtool seed|raw|read|count|clear|rev ENDPOINT [PREFIX [N]]";
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
                let (mut c, p) = (client.clone(), prefix.clone());
                set.spawn(async move { c.txn(batch(&p, from, to)).await.map(|_| ()) });
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
            let mut from = 0;
            while from < n {
                let to = (from + 128).min(n);
                client.txn(batch(&prefix, from, to)).await?;
                from = to;
            }
        }
        "read" => {
            let end = etcdplan::keys::prefix_end(prefix.as_bytes()).unwrap_or_else(|| vec![0]);
            let mut start = prefix.as_bytes().to_vec();
            let mut total = 0u64;
            let mut revision = 0;
            loop {
                let resp = client
                    .kv_client()
                    .max_decoding_message_size(64 << 20)
                    .get(
                        start.clone(),
                        Some(
                            GetOptions::new()
                                .with_range(end.clone())
                                .with_limit(5000)
                                .with_revision(revision),
                        ),
                    )
                    .await?;
                revision = resp.header().map_or(0, |h| h.revision());
                total += resp.kvs().len() as u64;
                match resp.kvs().last() {
                    Some(last) if resp.more() => {
                        start = last.key().to_vec();
                        start.push(0);
                    }
                    _ => break,
                }
            }
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
        "clear" => {
            // Compact too, so every figure of a run starts from the same
            // backend state instead of an ever-growing history.
            let resp = client
                .delete(prefix, Some(DeleteOptions::new().with_prefix()))
                .await?;
            let revision = resp.header().map_or(0, |h| h.revision());
            client
                .compact(
                    revision,
                    Some(etcd_client::CompactionOptions::new().with_physical()),
                )
                .await?;
        }
        "rev" => {
            let resp = client.get("\0", None).await?;
            println!("{}", resp.header().map_or(0, |h| h.revision()));
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
