//! Cluster facts and probes: status, members, lease TTLs, and the
//! read and write permission probes of `check` and `apply` (which change
//! nothing).

use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp};

use super::side::Op;
use super::{EtcdError, KeyRange, Side};

/// What `check` learns about one endpoint.
#[derive(Debug, Clone)]
pub struct EndpointStatus {
    pub cluster_id: u64,
    pub member_id: u64,
    /// The Status facts, or why they could not be had: current etcd 3.5
    /// answers Status only to root, and nothing etcdplan does needs them.
    pub status: Result<StatusFacts, String>,
}

/// What only the Status RPC tells.
#[derive(Debug, Clone)]
pub struct StatusFacts {
    pub version: String,
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

/// Whether `side`'s servers honour a range in a Txn compare (etcd 3.3 and
/// later; an older one ignores the range and would guard only its first
/// key). Asked once per side, by Status on the endpoint in use. It must say
/// 3.4 or later: a cluster mixes at most two adjacent minor versions, so
/// every member is then 3.3 or later. Status refused to this user also
/// means new enough (only releases from 3.5 on refuse it to users other
/// than root; 3.4.23 answers); any other failure, or no answer within two seconds,
/// means no, and the writes guard every key on its own.
pub async fn range_compares(side: &Side) -> bool {
    let ask = async {
        if side.v2().ok().flatten().is_some() {
            return false;
        }
        let status = side
            .call(Op::REACH, |mut c| async move { c.status().await })
            .await;
        match status {
            Ok(s) => at_least_3_4(s.version()),
            Err(EtcdError::PermissionDenied { .. }) => true,
            Err(_) => false,
        }
    };
    *side
        .range_compares_cell()
        .get_or_init(|| async {
            let yes = tokio::time::timeout(std::time::Duration::from_secs(2), ask)
                .await
                .unwrap_or(false);
            tracing::debug!(side = %side.role, range_compares = yes, "range compares");
            yes
        })
        .await
}

/// Whether an etcd version (`3.5.30`) is 3.4 or later.
fn at_least_3_4(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (3, 4),
        _ => false,
    }
}

/// The status of endpoint `i` of a side. The ids come from the header of
/// a count-only read of the side's probe key, which every user the plan
/// can run as may make; the rest from Status, when this user may ask.
pub async fn endpoint_status(side: &Side, i: usize) -> Result<EndpointStatus, EtcdError> {
    let (cluster_id, member_id, _) = head_at(side, i).await?;
    let status = side
        .on_endpoint(i, Op::REACH, |mut c| async move { c.status().await })
        .await;
    let status = match status {
        Ok(s) => Ok(StatusFacts {
            version: s.version().to_string(),
            leader: s.leader(),
            db_size: s.db_size(),
        }),
        Err(EtcdError::PermissionDenied { user, .. }) => Err(format!(
            "status: needs root on this etcd ({user} may not ask); version, leader and database size are not shown"
        )),
        Err(e) => Err(format!("status: {e}")),
    };
    Ok(EndpointStatus {
        cluster_id,
        member_id,
        status,
    })
}

/// Cluster id, member id and revision from endpoint `i`, read from the
/// header of a count-only read of the probe key (the prefix itself as a key).
async fn head_at(side: &Side, i: usize) -> Result<(u64, u64, i64), EtcdError> {
    let key = side.probe_key();
    let op = Op {
        action: "read",
        prefix: side.probe(),
    };
    let resp = side
        .on_endpoint(i, op, |mut c| async move {
            c.get(key, Some(GetOptions::new().with_count_only())).await
        })
        .await?;
    Ok(resp
        .header()
        .map_or((0, 0, 0), |h| (h.cluster_id(), h.member_id(), h.revision())))
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

/// The cluster id and current revision of a side (revision 0 for v2),
/// from the header of a count-only read of the side's probe key: no
/// maintenance RPC, so any user with read rights there may ask.
pub async fn cluster_head(side: &Side) -> Result<(u64, i64), EtcdError> {
    if let Some(v2) = side.v2()? {
        return Ok((v2.cluster_id().await?, 0));
    }
    let key = side.probe_key();
    let op = Op {
        action: "read",
        prefix: side.probe(),
    };
    let resp = side
        .call(op, |mut c| {
            let key = key.clone();
            async move { c.get(key, Some(GetOptions::new().with_count_only())).await }
        })
        .await?;
    Ok(resp
        .header()
        .map_or((0, 0), |h| (h.cluster_id(), h.revision())))
}

/// The roles of the user this side authenticates as (etcd lets a user
/// read its own entry); empty without auth.
pub async fn own_roles(side: &Side) -> Result<Vec<String>, EtcdError> {
    let Some(auth) = &side.config.auth else {
        return Ok(Vec::new());
    };
    let name = auth.username.clone();
    let resp = side
        .call(Op::REACH, |mut c| {
            let name = name.clone();
            async move { c.user_get(name).await }
        })
        .await?;
    Ok(resp.roles().to_vec())
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

/// A count-only read of the whole prefix: etcd checks read permission on
/// exactly the range requested.
pub async fn probe_read(side: &Side, prefix: &[u8]) -> Result<(), EtcdError> {
    if let Some(v2) = side.v2()? {
        return v2.probe_read(prefix).await;
    }
    let range = KeyRange::prefix(prefix);
    let end = range.end.clone().unwrap_or_else(|| vec![0]);
    read_range(side, prefix, range.start, Some(end)).await
}

/// A read of one key (the follow checkpoint).
pub async fn probe_read_key(side: &Side, key: &[u8]) -> Result<(), EtcdError> {
    read_range(side, key, key.to_vec(), None).await
}

async fn read_range(
    side: &Side,
    label: &[u8],
    start: Vec<u8>,
    end: Option<Vec<u8>>,
) -> Result<(), EtcdError> {
    let op = Op {
        action: "read",
        prefix: label,
    };
    side.call(op, |mut c| {
        let (start, end) = (start.clone(), end.clone());
        async move {
            let mut options = GetOptions::new().with_count_only().with_limit(1);
            if let Some(end) = end {
                options = options.with_range(end);
            }
            c.get(start, Some(options)).await
        }
    })
    .await
    .map(|_| ())
}

/// A transaction whose compare can never hold (a version below 0), carrying
/// a delete of the whole prefix: etcd checks permission on every op of a
/// txn, taken branch or not, so this proves write permission on the whole
/// range and changes nothing. (A put beside it would be a duplicate key.)
pub async fn probe_write(side: &Side, prefix: &[u8]) -> Result<(), EtcdError> {
    if let Some(v2) = side.v2()? {
        return v2.probe_write(prefix).await;
    }
    let range = KeyRange::prefix(prefix);
    let end = range.end.clone().unwrap_or_else(|| vec![0]);
    write_range(side, prefix, range.start, Some(end)).await
}

/// The write probe for one key (the follow checkpoint): a put, never taken.
pub async fn probe_write_key(side: &Side, key: &[u8]) -> Result<(), EtcdError> {
    write_range(side, key, key.to_vec(), None).await
}

async fn write_range(
    side: &Side,
    label: &[u8],
    start: Vec<u8>,
    end: Option<Vec<u8>>,
) -> Result<(), EtcdError> {
    let op = Op {
        action: "write",
        prefix: label,
    };
    let result = side
        .call(op, |mut c| {
            let (start, end) = (start.clone(), end.clone());
            async move {
                let write = match end {
                    Some(end) => {
                        TxnOp::delete(start.clone(), Some(DeleteOptions::new().with_range(end)))
                    }
                    None => TxnOp::put(start.clone(), Vec::new(), None),
                };
                let txn = Txn::new()
                    .when([Compare::version(start, CompareOp::Less, 0)])
                    .and_then([write]);
                c.txn(txn).await
            }
        })
        .await?;
    if result.succeeded() {
        // Cannot happen: no key has a negative version.
        return Err(EtcdError::Request {
            side: side.role,
            operation: format!("probe write `{}`", crate::keys::display_key(label)),
            detail: "the write probe's impossible compare held; refusing to trust it".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod range_compare_tests {
    use super::at_least_3_4;

    #[test]
    fn versions_from_3_4_on_honour_range_compares() {
        for yes in ["3.4.0", "3.4.23", "3.5.30", "3.6.1", "4.0.0"] {
            assert!(at_least_3_4(yes), "{yes}");
        }
        for no in ["3.3.27", "3.2.32", "2.3.8", "", "3", "v3.5.0", "three.five"] {
            assert!(!at_least_3_4(no), "{no}");
        }
    }
}
