//! A snapshot served read-only over loopback gRPC, as an etcd of one
//! revision: Range (keys, ranges, limits, count-only, keys-only, mod and
//! create revision filters), read-only Txn (the batched value reads of
//! apply) and Lease TimeToLive. Anything that writes is refused. The
//! listener is on 127.0.0.1 only and speaks mutual TLS with certificates
//! made for this run and held in memory, so no other local user can read
//! the snapshot through it. It lives as long as its [`Served`].

use std::net::SocketAddr;
use std::sync::Arc;

use etcd_client::proto::*;
use tonic::{Request, Response, Status};

use super::index::{Index, Kept};
use super::{Facts, Snapshot, SnapshotError};
use crate::planfile::{Identity, PemFile, SideConfig, SideRole, TlsConfig};

/// A running server, and the side config that reaches it.
pub struct Served {
    pub config: SideConfig,
    pub facts: Facts,
    /// The revision served.
    pub revision: i64,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    state: Arc<State>,
}

impl Served {
    /// The served keyspace, for scans that skip the network.
    pub fn local(&self) -> Arc<dyn crate::etcd::types::LocalKeyspace> {
        self.state.clone()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

struct State {
    index: Index,
    revision: i64,
    id: u64,
    leases: std::collections::BTreeMap<i64, i64>,
}

#[derive(Clone)]
struct Service(Arc<State>);

/// Which keys are kept from the snapshot (those under the plan's mappings).
pub type Keep = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Sorts the snapshot's keyspace at `revision` (keeping what `keep`
/// accepts) and serves it on a free loopback port.
pub async fn serve(
    snapshot: Snapshot,
    revision: Option<i64>,
    keep: Keep,
) -> Result<Served, SnapshotError> {
    let path = snapshot.facts.path.clone();
    let unreadable = |why: String| SnapshotError::Unreadable {
        path: path.clone(),
        why,
    };
    let built = tokio::task::spawn_blocking(move || {
        let (at, index) = snapshot.index(revision, &*keep)?;
        Ok::<_, SnapshotError>((snapshot, at, index))
    })
    .await
    .map_err(|e| unreadable(e.to_string()))??;
    let (snapshot, revision, index) = built;
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| unreadable(format!("cannot listen on loopback: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| unreadable(e.to_string()))?
        .port();
    let state = Arc::new(State {
        index,
        revision,
        id: snapshot.facts.id,
        leases: snapshot.lease_ttls.clone(),
    });
    let certs = Certs::new().map_err(unreadable)?;
    let svc = Service(state.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            &certs.server,
            &certs.server_key,
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(&certs.client));
    let server = tonic::transport::Server::builder()
        .tls_config(tls)
        .map_err(|e| unreadable(e.to_string()))?
        .add_service(PbKvServer::new(svc.clone()).max_decoding_message_size(64 << 20))
        .add_service(PbLeaseServer::new(svc))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        });
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!("serving the snapshot failed: {e}");
        }
    });
    let pem = |pem: String| PemFile {
        path: "(made for this run)".into(),
        pem: pem.into_bytes(),
    };
    let config = SideConfig {
        role: SideRole::Source,
        endpoints: vec![format!("https://127.0.0.1:{port}")],
        uses_tls: true,
        api: crate::planfile::Api::V3,
        tls: Some(TlsConfig {
            ca: Some(pem(certs.server)),
            identity: Some(Identity {
                cert: pem(certs.client),
                key: pem(certs.client_key),
            }),
            server_name: None,
        }),
        auth: None,
        snapshot: None,
    };
    Ok(Served {
        config,
        facts: snapshot.facts.clone(),
        revision,
        stop: Some(stop),
        state,
    })
}

/// A self-signed server certificate for 127.0.0.1 and a self-signed client
/// certificate, each the other's only trusted root.
struct Certs {
    server: String,
    server_key: String,
    client: String,
    client_key: String,
}

impl Certs {
    fn new() -> Result<Certs, String> {
        let make = |names: Vec<String>| {
            rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())
        };
        let server = make(vec!["127.0.0.1".into()])?;
        let client = make(vec!["etcdplan-snapshot-reader".into()])?;
        Ok(Certs {
            server: server.cert.pem(),
            server_key: server.signing_key.serialize_pem(),
            client: client.cert.pem(),
            client_key: client.signing_key.serialize_pem(),
        })
    }
}

impl Service {
    fn header(&self) -> Option<PbResponseHeader> {
        Some(PbResponseHeader {
            cluster_id: self.0.id,
            member_id: self.0.id,
            revision: self.0.revision,
            raft_term: 1,
        })
    }

    /// A Range, as etcd answers it at the one revision served.
    async fn answer(&self, r: PbRangeRequest) -> Result<PbRangeResponse, Status> {
        if r.revision > self.0.revision {
            return Err(Status::out_of_range(
                "etcdserver: mvcc: required revision is a future revision",
            ));
        }
        if r.revision != 0 && r.revision < self.0.revision {
            return Err(Status::out_of_range(
                "etcdserver: mvcc: required revision has been compacted",
            ));
        }
        let state = self.0.clone();
        let header = self.header();
        tokio::task::spawn_blocking(move || range(&state.index, &r, header))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
    }
}

/// The keys of `[r.key, r.range_end)` (etcd's conventions: no end is one
/// key, `\0` is everything from `key` on).
fn range(
    index: &Index,
    r: &PbRangeRequest,
    header: Option<PbResponseHeader>,
) -> Result<PbRangeResponse, Status> {
    let end: Option<&[u8]> = match r.range_end.as_slice() {
        [] => None,
        [0] => Some(&[]),
        e => Some(e),
    };
    let in_range = |k: &[u8]| match end {
        None => k == r.key.as_slice(),
        Some([]) => true,
        Some(e) => k < e,
    };
    let limit = usize::try_from(r.limit.max(0)).unwrap_or(usize::MAX);
    let (mut kvs, mut count, mut more) = (Vec::new(), 0i64, false);
    for e in index.from(&r.key) {
        let e = e.map_err(|e| Status::internal(e.to_string()))?;
        if !in_range(&e.key) {
            break;
        }
        count += 1;
        if !passes(r, &e) || r.count_only {
            continue;
        }
        if limit > 0 && kvs.len() == limit {
            // A full page: the rest of the range is counted from the marks
            // (etcd walks it; the count only sizes the reader's windows),
            // rounded up by a mark's spacing at each edge, so that it never
            // falls short: a reader may stop once it has read that many.
            more = true;
            let rest = index
                .estimate(&e.key, end.filter(|e| !e.is_empty()))
                .map_err(|e| Status::internal(e.to_string()))?
                + 2 * super::index::MARK_EVERY;
            count += i64::try_from(rest)
                .unwrap_or(i64::MAX)
                .saturating_sub(1)
                .max(0);
            break;
        }
        kvs.push(key_value(e, r.keys_only));
    }
    Ok(PbRangeResponse {
        header,
        kvs,
        more,
        count,
    })
}

impl crate::etcd::types::LocalKeyspace for State {
    fn pages(
        &self,
        range: &crate::etcd::KeyRange,
        page: usize,
        send: &mut dyn FnMut(Vec<crate::etcd::Entry>) -> bool,
    ) -> Result<(), String> {
        let mut out = Vec::with_capacity(page);
        for e in self.index.from(&range.start) {
            let e = e.map_err(|e| e.to_string())?;
            if range.end.as_ref().is_some_and(|end| e.key >= *end) {
                break;
            }
            out.push(crate::etcd::Entry {
                key: e.key,
                value: e.value,
                mod_revision: e.mod_revision,
                create_revision: e.create_revision,
                lease: e.lease,
            });
            if out.len() == page && !send(std::mem::replace(&mut out, Vec::with_capacity(page))) {
                return Ok(());
            }
        }
        if !out.is_empty() {
            send(out);
        }
        Ok(())
    }
}

fn passes(r: &PbRangeRequest, e: &Kept) -> bool {
    (r.min_mod_revision == 0 || e.mod_revision >= r.min_mod_revision)
        && (r.max_mod_revision == 0 || e.mod_revision <= r.max_mod_revision)
        && (r.min_create_revision == 0 || e.create_revision >= r.min_create_revision)
        && (r.max_create_revision == 0 || e.create_revision <= r.max_create_revision)
}

fn key_value(e: Kept, keys_only: bool) -> PbKeyValue {
    PbKeyValue {
        key: e.key,
        create_revision: e.create_revision,
        mod_revision: e.mod_revision,
        version: e.version,
        value: if keys_only { Vec::new() } else { e.value },
        lease: e.lease,
    }
}

fn read_only() -> Status {
    Status::unimplemented("etcdplan: a snapshot source is read-only")
}

#[tonic::async_trait]
impl PbKvService for Service {
    async fn range(
        &self,
        request: Request<PbRangeRequest>,
    ) -> Result<Response<PbRangeResponse>, Status> {
        self.answer(request.into_inner()).await.map(Response::new)
    }

    type RangeStreamStream = futures::stream::Empty<Result<PbRangeStreamResponse, Status>>;

    async fn range_stream(
        &self,
        _: Request<PbRangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        Err(read_only())
    }

    async fn put(&self, _: Request<PbPutRequest>) -> Result<Response<PbPutResponse>, Status> {
        Err(read_only())
    }

    async fn delete_range(
        &self,
        _: Request<PbDeleteRequest>,
    ) -> Result<Response<PbDeleteResponse>, Status> {
        Err(read_only())
    }

    /// Read-only transactions only: apply reads values in batches of gets.
    async fn txn(&self, request: Request<PbTxnRequest>) -> Result<Response<PbTxnResponse>, Status> {
        let txn = request.into_inner();
        if !txn.compare.is_empty() || !txn.failure.is_empty() {
            return Err(read_only());
        }
        let mut responses = Vec::with_capacity(txn.success.len());
        for op in txn.success {
            let Some(PbTxnOpRequest::RequestRange(r)) = op.request else {
                return Err(read_only());
            };
            let answered = self.answer(r).await?;
            responses.push(PbResponseOp {
                response: Some(PbTxnOpResponse::ResponseRange(answered)),
            });
        }
        Ok(Response::new(PbTxnResponse {
            header: self.header(),
            succeeded: true,
            responses,
        }))
    }

    async fn compact(
        &self,
        _: Request<PbCompactionRequest>,
    ) -> Result<Response<PbCompactionResponse>, Status> {
        Err(read_only())
    }
}

#[tonic::async_trait]
impl PbLeaseService for Service {
    async fn lease_grant(
        &self,
        _: Request<PbLeaseGrantRequest>,
    ) -> Result<Response<PbLeaseGrantResponse>, Status> {
        Err(read_only())
    }

    async fn lease_revoke(
        &self,
        _: Request<PbLeaseRevokeRequest>,
    ) -> Result<Response<PbLeaseRevokeResponse>, Status> {
        Err(read_only())
    }

    type LeaseKeepAliveStream = futures::stream::Empty<Result<PbLeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        _: Request<tonic::Streaming<PbLeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        Err(read_only())
    }

    /// A snapshot records the TTL each lease was granted, not the time it
    /// had left: that TTL is what it answers.
    async fn lease_time_to_live(
        &self,
        request: Request<PbLeaseTimeToLiveRequest>,
    ) -> Result<Response<PbLeaseTimeToLiveResponse>, Status> {
        let id = request.into_inner().id;
        let ttl = self.0.leases.get(&id).copied();
        Ok(Response::new(PbLeaseTimeToLiveResponse {
            header: self.header(),
            id,
            ttl: ttl.unwrap_or(-1),
            granted_ttl: ttl.unwrap_or(0),
            keys: Vec::new(),
        }))
    }

    async fn lease_leases(
        &self,
        _: Request<PbLeaseLeasesRequest>,
    ) -> Result<Response<PbLeaseLeasesResponse>, Status> {
        Err(read_only())
    }
}
