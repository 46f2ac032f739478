//! Cluster facts and probes: status, members, lease TTLs, and the
//! read and write permission probes of `check` and `apply` (which change
//! nothing).

use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp};

use super::side::Op;
use super::{EtcdError, KeyRange, Side};

#[derive(Debug, Clone)]
pub struct EndpointStatus {
    pub version: String,
    pub cluster_id: u64,
    pub member_id: u64,
    pub leader: u64,
    pub db_size: i64,
}

#[derive(Debug, Clone)]
pub struct MemberInfo {
    pub name: String,
    pub id: u64,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub leader: bool,
}

/// The status of endpoint `i` of a side.
pub async fn endpoint_status(side: &Side, i: usize) -> Result<EndpointStatus, EtcdError> {
    let s = side
        .on_endpoint(i, Op::REACH, |mut c| async move { c.status().await })
        .await?;
    Ok(EndpointStatus {
        version: s.version().to_string(),
        cluster_id: s.header().map_or(0, |h| h.cluster_id()),
        member_id: s.header().map_or(0, |h| h.member_id()),
        leader: s.leader(),
        db_size: s.db_size(),
    })
}

/// The members of a side's cluster; `leader` marks the one that leads.
pub async fn members(side: &Side, leader: Option<u64>) -> Result<Vec<MemberInfo>, EtcdError> {
    let list = side
        .call(Op::REACH, |mut c| async move { c.member_list().await })
        .await?;
    Ok(list
        .members()
        .iter()
        .map(|m| MemberInfo {
            name: m.name().to_string(),
            id: m.id(),
            peer_urls: m.peer_urls().to_vec(),
            client_urls: m.client_urls().to_vec(),
            leader: Some(m.id()) == leader,
        })
        .collect())
}

/// The cluster id and current revision of a side (revision 0 for v2), from
/// a status request, which also proves the side is reachable.
pub async fn cluster_head(side: &Side) -> Result<(u64, i64), EtcdError> {
    if let Some(v2) = side.v2()? {
        return Ok((v2.cluster_id().await?, 0));
    }
    let status = side
        .call(Op::REACH, |mut c| async move { c.status().await })
        .await?;
    Ok(status
        .header()
        .map_or((0, 0), |h| (h.cluster_id(), h.revision())))
}

/// Whether no key starts with `prefix` (a count-only read: free on an
/// empty range, a walk of etcd's index otherwise). A v2 side answers `false`.
pub async fn range_is_empty(side: &Side, prefix: &[u8]) -> Result<bool, EtcdError> {
    if side.v2()?.is_some() {
        return Ok(false);
    }
    let range = KeyRange::prefix(prefix);
    let end = range.end.clone().unwrap_or_else(|| vec![0]);
    let op = Op {
        action: "read",
        prefix,
    };
    let resp = side
        .call(op, |mut c| {
            let (start, end) = (range.start.clone(), end.clone());
            async move {
                c.get(
                    start,
                    Some(GetOptions::new().with_range(end).with_count_only()),
                )
                .await
            }
        })
        .await?;
    Ok(resp.count() == 0)
}

/// The remaining TTL of a lease on `side`, in seconds; -1 when expired.
pub async fn lease_ttl(side: &Side, id: i64) -> Result<i64, EtcdError> {
    let resp = side
        .call(Op::REACH, |mut c| async move {
            c.lease_time_to_live(id, None).await
        })
        .await?;
    Ok(resp.ttl())
}

/// A count-only read of the whole range: etcd checks read permission on
/// exactly the range requested.
pub async fn probe_read(side: &Side, prefix: &[u8]) -> Result<(), String> {
    if let Some(v2) = side.v2().map_err(|e| e.to_string())? {
        return v2.probe_read(prefix).await.map_err(|e| e.to_string());
    }
    let range = KeyRange::prefix(prefix);
    let end = range.end.clone().unwrap_or_else(|| vec![0]);
    let op = Op {
        action: "read",
        prefix,
    };
    side.call(op, |mut c| {
        let (start, end) = (range.start.clone(), end.clone());
        async move {
            c.get(
                start,
                Some(
                    GetOptions::new()
                        .with_range(end)
                        .with_count_only()
                        .with_limit(1),
                ),
            )
            .await
        }
    })
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// A transaction whose compare can never hold (a version below 0), carrying
/// a delete of the whole range: etcd checks permission on every op of a txn,
/// taken branch or not, so this proves write permission on the whole range
/// and changes nothing. (A put beside it would be a duplicate key.)
pub async fn probe_write(side: &Side, prefix: &[u8]) -> Result<(), String> {
    if let Some(v2) = side.v2().map_err(|e| e.to_string())? {
        return v2.probe_write(prefix).await.map_err(|e| e.to_string());
    }
    let range = KeyRange::prefix(prefix);
    let end = range.end.clone().unwrap_or_else(|| vec![0]);
    let op = Op {
        action: "write",
        prefix,
    };
    let result = side
        .call(op, |mut c| {
            let (start, end) = (range.start.clone(), end.clone());
            async move {
                let txn = Txn::new()
                    .when([Compare::version(start.clone(), CompareOp::Less, 0)])
                    .and_then([TxnOp::delete(
                        start,
                        Some(DeleteOptions::new().with_range(end)),
                    )]);
                c.txn(txn).await
            }
        })
        .await
        .map_err(|e| e.to_string())?;
    if result.succeeded() {
        // Cannot happen: no key has a negative version.
        return Err("the write probe's impossible compare held; refusing to trust it".into());
    }
    Ok(())
}
