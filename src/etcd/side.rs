//! One side's connection: every endpoint of the side, TLS and auth from the
//! plan, timeouts, and retry with backoff across endpoints, because
//! etcd-client neither retries nor fails over on its own.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use tokio::sync::OnceCell;

use super::EtcdError;
use crate::keys::display_key;
use crate::planfile::{Api, SideConfig, SideRole};

/// Largest response etcd-client will decode. Pages are sized far below this;
/// it only has to admit one page holding a few maximum-size values.
pub const MAX_DECODE_BYTES: usize = 64 << 20;

/// How hard to try before giving up on a side.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// For probes that report rather than wait: few attempts, short timeouts.
    pub fn quick() -> Self {
        Self {
            max_attempts: 2,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            ..Self::default()
        }
    }
}

/// What a request is about, for errors that must name a prefix.
#[derive(Debug, Clone, Copy)]
pub struct Op<'a> {
    /// "read", "write" or "reach", as in "permission denied to read".
    pub action: &'static str,
    pub prefix: &'a [u8],
}

impl Op<'static> {
    pub const REACH: Op<'static> = Op {
        action: "reach",
        prefix: b"",
    };
}

/// How a failed request is to be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Worth another try, possibly on another endpoint.
    Transient,
    UntrustedServer,
    ClientCertificateRejected,
    PlaintextToTls,
    TlsToPlaintext,
    AuthenticationFailed,
    AuthenticationRequired,
    PermissionDenied,
    Compacted,
    /// The token predates an auth store change (`revision of auth store is
    /// old`) or expired: authenticate again and retry.
    AuthStale,
    /// The destination is out of quota (`mvcc: database space exceeded`).
    NoSpace,
    /// The server refused the request as larger than its limit.
    TooLarge,
    /// Anything else: not retried.
    Other,
}

/// Sorts an etcd-client error into what to do about it. etcd-client and
/// tonic expose transport failures only as text, so this reads the text.
/// `tls` says whether the endpoint is https://. `answered` says whether the
/// endpoint has answered a request before: on a first handshake a dropped
/// connection means a TLS mismatch or a rejected client certificate, but on
/// an endpoint that has been answering, it is a reset (a proxy, a load
/// balancer, a restarting member) and worth another try.
pub fn classify(err: &etcd_client::Error, tls: bool, answered: bool) -> Failure {
    let text = error_text(err).to_lowercase();
    let has = |s: &str| text.contains(s);
    let any = |list: &[&str]| list.iter().any(|s| text.contains(s));
    if has("required revision has been compacted") {
        Failure::Compacted
    } else if has("database space exceeded") || has("nospace") {
        Failure::NoSpace
    } else if any(&[
        "request is too large",
        "received message larger than max",
        "message length too large",
    ]) {
        Failure::TooLarge
    } else if any(&[
        "revision of auth store is old",
        // etcd 3.5's wording when the check happens as the request is applied.
        "revision in header is old",
        "invalid auth token",
    ]) {
        Failure::AuthStale
    } else if has("permission denied") {
        Failure::PermissionDenied
    } else if has("authentication failed") || has("invalid user id or password") {
        Failure::AuthenticationFailed
    } else if has("user name is empty") || has("token is not provided") {
        Failure::AuthenticationRequired
    } else if any(&[
        "unknownissuer",
        "unknown issuer",
        "notvalidforname",
        "not valid for name",
        "invalidcertificate",
        "invalid peer certificate",
    ]) {
        // A certificate does not stop being untrusted between requests.
        Failure::UntrustedServer
    } else if any(&[
        "request timed out",
        "leader changed",
        "no leader",
        "too many requests",
        "timeout expired",
        "deadline",
        "goaway",
        "go away",
        "keepalive",
        "keep-alive",
    ]) {
        // etcd's own transient answers, and etcd-client's request timeout
        // (`Cancelled: Timeout expired`).
        Failure::Transient
    } else if answered && is_dropped_connection(&has) {
        Failure::Transient
    } else if any(&[
        "certificate required",
        "bad certificate",
        "badcertificate",
        "unknown ca",
        "certificaterequired",
        "alert",
    ]) {
        Failure::ClientCertificateRejected
    } else if any(&[
        "tls handshake eof",
        "invalidcontenttype",
        "corrupt message",
        "wrong version number",
        "invalid content type",
    ]) {
        Failure::TlsToPlaintext
    } else if any(&[
        "frame with invalid size",
        "http2 error",
        "protocol error",
        "invalid http version",
        "connection reset",
        "broken pipe",
        "h2 protocol",
    ]) {
        if tls {
            // The server hung up during or right after our TLS handshake:
            // what etcd does to a missing or untrusted client certificate.
            Failure::ClientCertificateRejected
        } else {
            // A plaintext HTTP/2 preface sent to a TLS listener gets these.
            Failure::PlaintextToTls
        }
    } else if any(&[
        "unavailable",
        "timed out",
        "timeout",
        "connection refused",
        "transport error",
        "tcp connect error",
        "error trying to connect",
        "connection closed",
        "connection aborted",
        "unexpected eof",
        "dns error",
        "failed to lookup",
    ]) {
        Failure::Transient
    } else {
        Failure::Other
    }
}

/// A connection that broke under a request: reset, closed, EOF, a broken
/// HTTP/2 stream, or a TLS session cut short.
fn is_dropped_connection(has: &dyn Fn(&str) -> bool) -> bool {
    [
        "connection reset",
        "broken pipe",
        "connection closed",
        "connection aborted",
        "eof",
        "http2 error",
        "h2 protocol",
        "protocol error",
        "frame with invalid size",
        "stream closed",
        "stream error",
        "not connected",
        "transport error",
        "unavailable",
        "close_notify",
        "closenotify",
    ]
    .iter()
    .any(|s| has(s))
}

/// The error text with every source in the chain, each new part once: tonic
/// hides the useful part (the TLS alert, the refused connection) in sources
/// and repeats itself on the way.
pub fn error_text(err: &etcd_client::Error) -> String {
    use std::error::Error as _;
    let mut parts: Vec<String> = Vec::new();
    let mut source: Option<&dyn std::error::Error> = match err {
        etcd_client::Error::GRpcStatus(s) => {
            parts.push(s.message().to_string());
            s.source()
        }
        etcd_client::Error::TransportError(e) => {
            parts.push(e.to_string());
            e.source()
        }
        other => {
            parts.push(other.to_string());
            other.source()
        }
    };
    while let Some(s) = source {
        let text = s.to_string();
        // Debug-ish wrappers repeat their sources in their own text; skip them.
        if !text.contains("ConnectError(") && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.retain(|p| !p.is_empty());
    parts.join(": ")
}

struct Endpoint {
    url: String,
    client: OnceCell<Client>,
    /// Set after the first request this endpoint answered: from then on a
    /// dropped connection is a reset, not a TLS mismatch.
    answered: AtomicBool,
}

/// A connection to one side of the migration.
pub struct Side {
    pub role: SideRole,
    pub config: SideConfig,
    /// The v2 HTTP client, for `api: v2` sides.
    v2: Option<super::v2::V2>,
    endpoints: Vec<Endpoint>,
    current: AtomicUsize,
    options: ConnectOptions,
    pub policy: RetryPolicy,
}

impl Side {
    /// Prepares the side; no network traffic until the first request.
    pub fn new(config: &SideConfig, policy: RetryPolicy) -> Side {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(policy.connect_timeout)
            .with_timeout(policy.request_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if config.uses_tls {
            options = options.with_tls(tls_options(config));
        }
        if let Some(auth) = &config.auth {
            options = options
                .with_user(auth.username.clone(), auth.password.expose().to_string())
                .with_auto_token_refresh(true);
        }
        let v2 = (config.api == Api::V2)
            .then(|| {
                super::v2::V2::new(config, policy.connect_timeout, policy.request_timeout).ok()
            })
            .flatten();
        Side {
            v2,
            role: config.role,
            config: config.clone(),
            endpoints: config
                .endpoints
                .iter()
                .map(|url| Endpoint {
                    url: url.clone(),
                    client: OnceCell::new(),
                    answered: AtomicBool::new(false),
                })
                .collect(),
            current: AtomicUsize::new(0),
            options,
            policy,
        }
    }

    /// The v2 client when this side speaks `api: v2`.
    pub fn v2(&self) -> Result<Option<&super::v2::V2>, EtcdError> {
        match (self.config.api, &self.v2) {
            (Api::V3, _) => Ok(None),
            (Api::V2, Some(v2)) => Ok(Some(v2)),
            (Api::V2, None) => Err(EtcdError::Request {
                side: self.role,
                operation: "set up the v2 client".into(),
                detail: "the TLS files could not be loaded for the v2 HTTP client".into(),
            }),
        }
    }

    pub fn endpoints(&self) -> impl Iterator<Item = &str> {
        self.endpoints.iter().map(|e| e.url.as_str())
    }

    /// The user requests run as, for messages.
    pub fn user(&self) -> String {
        self.config.auth.as_ref().map_or_else(
            || "the anonymous user".to_string(),
            |a| format!("user `{}`", a.username),
        )
    }

    async fn client(&self, i: usize) -> Result<Client, etcd_client::Error> {
        let ep = &self.endpoints[i];
        ep.client
            .get_or_try_init(|| Client::connect([ep.url.as_str()], Some(self.options.clone())))
            .await
            .cloned()
    }

    /// How to handle a failure at endpoint `i`. A plaintext etcd sometimes
    /// answers a TLS hello with a bare reset, which reads like a rejected
    /// client certificate: a plaintext probe tells the two apart.
    async fn classify_at(&self, i: usize, err: &etcd_client::Error) -> Failure {
        let ep = &self.endpoints[i];
        let kind = classify(
            err,
            self.config.uses_tls,
            ep.answered.load(Ordering::Relaxed),
        );
        if kind == Failure::ClientCertificateRejected && speaks_plaintext(&ep.url).await {
            return Failure::TlsToPlaintext;
        }
        kind
    }

    /// Runs `f` against one endpoint (no failover), for per-endpoint probes.
    pub async fn on_endpoint<T, F, Fut>(&self, i: usize, op: Op<'_>, f: F) -> Result<T, EtcdError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let result = match self.client(i).await {
            Ok(c) => f(c).await,
            Err(e) => Err(e),
        };
        let ep = &self.endpoints[i];
        match result {
            Ok(v) => {
                ep.answered.store(true, Ordering::Relaxed);
                Ok(v)
            }
            Err(e) => {
                let kind = self.classify_at(i, &e).await;
                Err(self.error(kind, &e, &ep.url, op))
            }
        }
    }

    /// Runs `f` with retry and failover: transient failures move to the next
    /// endpoint, with exponential backoff after each full round. A stale auth
    /// token is replaced by a fresh authentication and the request retried.
    /// `f` may run more than once, so it must be safe to repeat: every write
    /// etcdplan sends is guarded, and a retried write that had in fact been
    /// applied is settled by its guard and read-back.
    pub async fn call<T, F, Fut>(&self, op: Op<'_>, f: F) -> Result<T, EtcdError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.endpoints.len().max(1);
        let mut backoff = self.policy.first_backoff;
        let mut attempt = 0;
        let mut specific: Option<(Failure, etcd_client::Error, String)> = None;
        // Endpoints that failed in a way retrying cannot fix (TLS mismatch).
        let mut hopeless = vec![false; n];
        loop {
            let i = self.current.load(Ordering::Relaxed) % n;
            let ep = &self.endpoints[i];
            let url = &ep.url;
            let (client, result) = match self.client(i).await {
                Ok(c) => (Some(c.clone()), f(c).await),
                Err(e) => (None, Err(e)),
            };
            let err = match result {
                Ok(v) => {
                    ep.answered.store(true, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => e,
            };
            let kind = self.classify_at(i, &err).await;
            attempt += 1;
            tracing::debug!(side = %self.role, endpoint = %url, ?kind, error = %error_text(&err), attempt, "request failed");
            if kind == Failure::AuthStale && attempt < self.policy.max_attempts {
                // Someone changed users or roles (the auth store revision
                // moved) or the token expired: log in again, then retry.
                if let Some(c) = &client
                    && let Err(e) = c.refresh_token().await
                {
                    let kind = classify(&e, self.config.uses_tls, true);
                    if !matches!(kind, Failure::Transient | Failure::AuthStale) {
                        return Err(self.error(kind, &e, url, op));
                    }
                }
                continue;
            }
            // Endpoint-level failures (TLS mismatch, unreachable) may be one
            // bad member: try the others before giving up.
            let endpoint_level = matches!(
                kind,
                Failure::Transient
                    | Failure::UntrustedServer
                    | Failure::ClientCertificateRejected
                    | Failure::PlaintextToTls
                    | Failure::TlsToPlaintext
            );
            if !endpoint_level {
                return Err(self.error(kind, &err, url, op));
            }
            if kind != Failure::Transient {
                hopeless[i] = true;
                specific = Some((kind, err, url.clone()));
            } else if specific.as_ref().is_none_or(|s| s.0 == Failure::Transient) {
                specific = Some((kind, err, url.clone()));
            }
            if hopeless.iter().all(|&h| h)
                && let Some((kind, err, url)) = &specific
            {
                return Err(self.error(*kind, err, url, op));
            }
            if attempt >= self.policy.max_attempts
                && let Some((kind, err, url)) = &specific
            {
                if *kind == Failure::Transient && n > 1 {
                    return Err(EtcdError::RetriesExhausted {
                        side: self.role,
                        attempts: attempt,
                        last: format!("{url}: {}", error_text(err)),
                    });
                }
                return Err(self.error(*kind, err, url, op));
            }
            // Move on from the failing endpoint, unless another task did already.
            let _ = self
                .current
                .compare_exchange(i, i + 1, Ordering::Relaxed, Ordering::Relaxed);
            if attempt.is_multiple_of(n as u32) {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.policy.max_backoff);
            }
        }
    }

    /// Builds the diagnostic for a failure at `endpoint`.
    pub fn error(
        &self,
        kind: Failure,
        err: &etcd_client::Error,
        endpoint: &str,
        op: Op<'_>,
    ) -> EtcdError {
        let side = self.role;
        let endpoint = endpoint.to_string();
        let detail = error_text(err);
        match kind {
            Failure::Transient => EtcdError::Unreachable {
                side,
                endpoint,
                detail,
            },
            Failure::UntrustedServer => EtcdError::UntrustedServer {
                side,
                endpoint,
                detail,
            },
            Failure::ClientCertificateRejected => EtcdError::ClientCertificateRejected {
                side,
                endpoint,
                detail,
            },
            Failure::PlaintextToTls => EtcdError::PlaintextToTls {
                side,
                endpoint,
                detail,
            },
            Failure::TlsToPlaintext => EtcdError::TlsToPlaintext {
                side,
                endpoint,
                detail,
            },
            Failure::AuthenticationFailed => EtcdError::AuthenticationFailed {
                side,
                user: self
                    .config
                    .auth
                    .as_ref()
                    .map(|a| a.username.clone())
                    .unwrap_or_default(),
            },
            Failure::AuthenticationRequired => EtcdError::AuthenticationRequired { side },
            Failure::PermissionDenied => EtcdError::PermissionDenied {
                side,
                user: self.user(),
                what: op.action,
                prefix: display_key(op.prefix),
            },
            Failure::Compacted => EtcdError::Compacted { side, revision: 0 },
            Failure::NoSpace => EtcdError::NoSpace {
                side,
                endpoint,
                detail,
            },
            Failure::TooLarge => EtcdError::RequestTooLarge { side, detail },
            Failure::AuthStale => EtcdError::AuthStale { side, detail },
            Failure::Other => EtcdError::Request {
                side,
                operation: format!("{} `{}`", op.action, display_key(op.prefix)),
                detail,
            },
        }
    }
}

/// Whether an https:// endpoint is in fact a plaintext etcd: it answers a
/// plaintext `GET /version` with an HTTP response naming etcdserver, which a
/// TLS listener cannot. Used only after a failed handshake, and bounded by a
/// short timeout.
async fn speaks_plaintext(endpoint: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some((host, port)) = url::Url::parse(endpoint).ok().and_then(|u| {
        let host = u.host_str()?.trim_matches(['[', ']']).to_string();
        Some((host, u.port_or_known_default()?))
    }) else {
        return false;
    };
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .ok()?;
        let request = format!("GET /version HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        let _ = stream.take(4096).read_to_end(&mut answer).await;
        let text = String::from_utf8_lossy(&answer);
        Some(text.starts_with("HTTP/1.") && text.contains("etcdserver"))
    };
    tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

fn tls_options(config: &SideConfig) -> TlsOptions {
    let mut tls = TlsOptions::new();
    let Some(files) = &config.tls else {
        return tls.with_native_roots();
    };
    tls = match &files.ca {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(&ca.pem)),
        None => tls.with_native_roots(),
    };
    if let Some(id) = &files.identity {
        tls = tls.identity(Identity::from_pem(&id.cert.pem, &id.key.pem));
    }
    if let Some(name) = &files.server_name {
        tls = tls.domain_name(name.clone());
    }
    tls
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str, tls: bool, answered: bool) -> Failure {
        classify(&etcd_client::Error::InvalidArgs(text.into()), tls, answered)
    }

    #[test]
    fn a_dropped_connection_is_a_mismatch_only_on_the_first_handshake() {
        let reset = "transport error: connection error: connection reset";
        assert_eq!(kind(reset, false, false), Failure::PlaintextToTls);
        assert_eq!(kind(reset, true, false), Failure::ClientCertificateRejected);
        for text in [
            reset,
            "h2 protocol error: error reading a body from connection: bytes remaining on stream",
            "broken pipe",
            "connection closed before message completed",
            "unexpected EOF",
            "peer closed connection without sending TLS close_notify",
        ] {
            assert_eq!(kind(text, false, true), Failure::Transient, "{text}");
            assert_eq!(kind(text, true, true), Failure::Transient, "{text}");
        }
        // A certificate does not become trusted by retrying.
        assert_eq!(
            kind("invalid peer certificate: UnknownIssuer", true, true),
            Failure::UntrustedServer
        );
    }

    #[test]
    fn etcd_and_client_timeouts_are_transient() {
        for text in [
            "Timeout expired",
            "etcdserver: request timed out",
            "etcdserver: leader changed",
            "etcdserver: no leader",
            "etcdserver: too many requests",
            "http2 error: GOAWAY received",
            "keepalive ping timeout",
        ] {
            assert_eq!(kind(text, true, false), Failure::Transient, "{text}");
        }
    }

    #[test]
    fn stale_tokens_quota_and_size_have_their_own_kinds() {
        assert_eq!(
            kind("etcdserver: revision of auth store is old", false, true),
            Failure::AuthStale
        );
        assert_eq!(
            kind("etcdserver: invalid auth token", false, true),
            Failure::AuthStale
        );
        assert_eq!(
            kind("auth: revision in header is old", false, true),
            Failure::AuthStale
        );
        assert_eq!(
            kind("etcdserver: mvcc: database space exceeded", false, true),
            Failure::NoSpace
        );
        assert_eq!(
            kind("etcdserver: request is too large", false, true),
            Failure::TooLarge
        );
        assert_eq!(
            kind(
                "grpc: received message larger than max (2000000 vs. 1572864)",
                false,
                true
            ),
            Failure::TooLarge
        );
        assert_eq!(
            kind(
                "etcdserver: mvcc: required revision has been compacted",
                false,
                true
            ),
            Failure::Compacted
        );
    }
}
