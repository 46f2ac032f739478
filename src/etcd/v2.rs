//! The etcd v2 HTTP API (`api: v2` on a side), for clusters that still hold
//! v2 data. Keys map one to one (the v2 key `/a/b` is the v3 key `/a/b`);
//! directories are not keys. A prefix is read in one consistent recursive
//! read, recording the `X-Etcd-Index` it saw. Writes are guarded with
//! `prevExist=false` (create) and `prevIndex` (update, delete), and since v2
//! has no transactions they are sent one by one, several in flight.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::EtcdError;
use super::types::{Entry, Guard, Outcome, WriteOp, classify};
use crate::keys::display_key;
use crate::planfile::{SideConfig, SideRole};

/// A v2 client for one side, failing over between its endpoints.
pub struct V2 {
    role: SideRole,
    http: reqwest::Client,
    endpoints: Vec<String>,
    current: AtomicUsize,
    auth: Option<(String, String)>,
}

#[derive(Debug, Deserialize)]
struct Reply {
    node: Option<Node>,
    #[serde(rename = "errorCode")]
    error_code: Option<i64>,
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Node {
    key: Option<String>,
    value: Option<String>,
    #[serde(default)]
    dir: bool,
    #[serde(default)]
    nodes: Vec<Node>,
    #[serde(rename = "modifiedIndex", default)]
    modified_index: i64,
    #[serde(rename = "createdIndex", default)]
    created_index: i64,
}

/// v2 error codes etcdplan acts on.
const KEY_NOT_FOUND: i64 = 100;
const COMPARE_FAILED: i64 = 101;
const NODE_EXISTS: i64 = 105;

impl V2 {
    pub fn new(
        config: &SideConfig,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<V2, EtcdError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .use_rustls_tls();
        let setup = |detail: String| EtcdError::Request {
            side: config.role,
            operation: "set up the v2 client".into(),
            detail,
        };
        if let Some(tls) = &config.tls {
            if let Some(ca) = &tls.ca {
                builder = builder.tls_built_in_root_certs(false).add_root_certificate(
                    reqwest::Certificate::from_pem(&ca.pem).map_err(|e| setup(e.to_string()))?,
                );
            }
            if let Some(id) = &tls.identity {
                let mut pem = id.cert.pem.clone();
                pem.push(b'\n');
                pem.extend_from_slice(&id.key.pem);
                builder = builder
                    .identity(reqwest::Identity::from_pem(&pem).map_err(|e| setup(e.to_string()))?);
            }
        }
        Ok(V2 {
            role: config.role,
            http: builder.build().map_err(|e| setup(e.to_string()))?,
            endpoints: config.endpoints.clone(),
            current: AtomicUsize::new(0),
            auth: config
                .auth
                .as_ref()
                .map(|a| (a.username.clone(), a.password.expose().to_string())),
        })
    }

    fn url(
        &self,
        base: &str,
        key: &[u8],
        query: &[(&str, String)],
    ) -> Result<reqwest::Url, EtcdError> {
        let text = std::str::from_utf8(key).map_err(|_| EtcdError::Request {
            side: self.role,
            operation: format!("address `{}` over v2", display_key(key)),
            detail: "v2 keys are text; this key is not UTF-8".into(),
        })?;
        let mut url = reqwest::Url::parse(base).map_err(|e| EtcdError::Request {
            side: self.role,
            operation: "build a v2 URL".into(),
            detail: e.to_string(),
        })?;
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.clear().extend(["v2", "keys"]);
            segments.extend(text.split('/').filter(|s| !s.is_empty()));
        }
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// Sends a request, failing over between endpoints on connection errors
    /// and 5xx answers, with backoff. Returns the status, headers and body.
    async fn send(
        &self,
        method: Method,
        key: &[u8],
        query: &[(&str, String)],
        form: Option<String>,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, Reply), EtcdError> {
        let n = self.endpoints.len().max(1);
        let mut backoff = Duration::from_millis(100);
        let mut last = String::new();
        for attempt in 0..(n * 4) {
            let raw = self.current.load(Ordering::Relaxed);
            let i = raw % n;
            let base = &self.endpoints[i];
            let mut request = self
                .http
                .request(method.clone(), self.url(base, key, query)?);
            if let Some((user, password)) = &self.auth {
                request = request.basic_auth(user, Some(password));
            }
            if let Some(body) = &form {
                request = request
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(body.clone());
            }
            match request.send().await {
                Ok(resp) if !resp.status().is_server_error() => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let reply = resp.json::<Reply>().await.unwrap_or(Reply {
                        node: None,
                        error_code: None,
                        message: None,
                    });
                    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                        return Err(EtcdError::PermissionDenied {
                            side: self.role,
                            user: self.auth.as_ref().map_or_else(
                                || "the anonymous user".into(),
                                |(u, _)| format!("user `{u}`"),
                            ),
                            what: if method == Method::GET {
                                "read"
                            } else {
                                "write"
                            },
                            prefix: key.to_vec(),
                        });
                    }
                    return Ok((status, headers, reply));
                }
                Ok(resp) => last = format!("{base}: HTTP {}", resp.status()),
                Err(e) => last = format!("{base}: {e}"),
            }
            let _ = self.current.compare_exchange(
                raw,
                (i + 1) % n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            if (attempt + 1) % n == 0 {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        Err(EtcdError::RetriesExhausted {
            side: self.role,
            attempts: (n * 4) as u32,
            last,
        })
    }

    /// The cluster id the server names in its headers.
    pub async fn cluster_id(&self) -> Result<u64, EtcdError> {
        let (_, headers, _) = self.send(Method::GET, b"/", &[], None).await?;
        Ok(header_number(&headers, "x-etcd-cluster-id", 16))
    }

    /// Every key under `prefix` (in key order) and the v2 index read at, in
    /// one recursive read of the prefix's directory.
    pub async fn read_prefix(&self, prefix: &[u8]) -> Result<(Vec<Entry>, i64), EtcdError> {
        let dir = match prefix.iter().rposition(|&b| b == b'/') {
            Some(i) => &prefix[..i],
            None => &b""[..],
        };
        let query = [("recursive", "true".to_string())];
        let (status, headers, reply) = self.send(Method::GET, dir, &query, None).await?;
        let index = header_number(&headers, "x-etcd-index", 10) as i64;
        if status == StatusCode::NOT_FOUND && reply.error_code == Some(KEY_NOT_FOUND) {
            return Ok((Vec::new(), index));
        }
        if !status.is_success() {
            return Err(self.failed("read", dir, status, &reply));
        }
        let mut entries = Vec::new();
        if let Some(node) = reply.node {
            flatten(node, &mut entries);
        }
        entries.retain(|e| e.key.starts_with(prefix));
        // v2 lists a directory's children in its own order, not byte order.
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((entries, index))
    }

    /// One key's value and modified index, `None` when absent.
    pub async fn get(&self, key: &[u8]) -> Result<Option<(Vec<u8>, i64)>, EtcdError> {
        let (status, _, reply) = self.send(Method::GET, key, &[], None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self.failed("read", key, status, &reply));
        }
        Ok(reply
            .node
            .filter(|n| !n.dir)
            .map(|n| (n.value.unwrap_or_default().into_bytes(), n.modified_index)))
    }

    /// One guarded write; a failed guard is settled like a v3 batch's.
    pub async fn write(&self, op: &WriteOp) -> Result<Outcome, EtcdError> {
        let guard = match &op.guard {
            Guard::Absent => ("prevExist", "false".to_string()),
            Guard::ModRevision(r) => ("prevIndex", r.to_string()),
            Guard::Value(v) => ("prevValue", String::from_utf8_lossy(v).into_owned()),
        };
        let (method, form) = match &op.value {
            Some(v) => {
                let text = std::str::from_utf8(v).map_err(|_| EtcdError::Request {
                    side: self.role,
                    operation: format!("write `{}` over v2", display_key(&op.key)),
                    detail: "v2 stores text values; this value is not UTF-8".into(),
                })?;
                let body = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("value", text)
                    .finish();
                (Method::PUT, Some(body))
            }
            None => (Method::DELETE, None),
        };
        let (status, _, reply) = self.send(method, &op.key, &[guard], form).await?;
        if status.is_success() {
            return Ok(Outcome::Written);
        }
        let guard_failed = matches!(
            reply.error_code,
            Some(KEY_NOT_FOUND | COMPARE_FAILED | NODE_EXISTS)
        );
        if !guard_failed {
            return Err(self.failed("write", &op.key, status, &reply));
        }
        // A failed guard: look at the key, as the v3 failure branch does.
        let current = self.get(&op.key).await?;
        match classify(op, current.as_ref().map(|(v, r)| (v.as_slice(), *r))) {
            Some(outcome) => Ok(outcome),
            // The guard holds now (it changed back meanwhile): try once more.
            None => Box::pin(self.write(op)).await,
        }
    }

    /// Proves read permission on `prefix` (a read of its directory).
    pub async fn probe_read(&self, prefix: &[u8]) -> Result<(), EtcdError> {
        self.read_prefix(prefix).await.map(|_| ())
    }

    /// Proves write permission without writing: a put guarded by an index
    /// that cannot hold, on a key under `prefix`. etcd checks permission
    /// before the guard, so the refusal tells which it was.
    pub async fn probe_write(&self, prefix: &[u8]) -> Result<(), EtcdError> {
        let mut key = prefix.to_vec();
        key.extend_from_slice(b"etcdplan-write-probe");
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("value", "")
            .finish();
        let guard = [("prevIndex", i64::MAX.to_string())];
        let (status, _, reply) = self.send(Method::PUT, &key, &guard, Some(form)).await?;
        match reply.error_code {
            Some(KEY_NOT_FOUND | COMPARE_FAILED) => Ok(()),
            _ if status.is_success() => Err(self.failed("write probe", &key, status, &reply)),
            _ => Err(self.failed("write probe", &key, status, &reply)),
        }
    }

    fn failed(&self, what: &str, key: &[u8], status: StatusCode, reply: &Reply) -> EtcdError {
        EtcdError::Request {
            side: self.role,
            operation: format!("v2 {what} `{}`", display_key(key)),
            detail: format!(
                "HTTP {status}: {}",
                reply.message.clone().unwrap_or_else(|| "no message".into())
            ),
        }
    }
}

fn flatten(node: Node, out: &mut Vec<Entry>) {
    if node.dir {
        for child in node.nodes {
            flatten(child, out);
        }
    } else if let Some(key) = node.key {
        out.push(Entry {
            key: key.into_bytes(),
            value: node.value.unwrap_or_default().into_bytes(),
            mod_revision: node.modified_index,
            create_revision: node.created_index,
            lease: 0,
        });
    }
}

fn header_number(headers: &reqwest::header::HeaderMap, name: &str, radix: u32) -> u64 {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| u64::from_str_radix(v, radix).ok())
        .unwrap_or(0)
}
