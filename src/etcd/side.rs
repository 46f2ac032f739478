//! One side's connection: every endpoint of the side, TLS and auth from the
//! plan, timeouts, and retry with backoff across endpoints, because
//! etcd-client neither retries nor fails over on its own.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Anything else: not retried.
    Other,
}

/// Sorts an etcd-client error into what to do about it. etcd-client and
/// tonic expose transport failures only as text, so this reads the text.
/// `tls` says whether the endpoint is https://: a dropped connection means
/// a rejected handshake there, and a TLS listener on an http:// endpoint.
pub fn classify(err: &etcd_client::Error, tls: bool) -> Failure {
    let text = error_text(err).to_lowercase();
    let has = |s: &str| text.contains(s);
    if has("required revision has been compacted") {
        Failure::Compacted
    } else if has("permission denied") {
        Failure::PermissionDenied
    } else if has("authentication failed") || has("invalid user id or password") {
        Failure::AuthenticationFailed
    } else if has("user name is empty") || has("token is not provided") {
        Failure::AuthenticationRequired
    } else if has("unknownissuer")
        || has("unknown issuer")
        || has("notvalidforname")
        || has("not valid for name")
        || has("invalidcertificate")
        || has("invalid peer certificate")
    {
        Failure::UntrustedServer
    } else if has("certificate required")
        || has("bad certificate")
        || has("badcertificate")
        || has("unknown ca")
        || has("certificaterequired")
        || has("alert")
    {
        Failure::ClientCertificateRejected
    } else if has("tls handshake eof")
        || has("invalidcontenttype")
        || has("corrupt message")
        || has("wrong version number")
        || has("invalid content type")
    {
        Failure::TlsToPlaintext
    } else if has("frame with invalid size")
        || has("http2 error")
        || has("protocol error")
        || has("invalid http version")
        || has("connection reset")
        || has("broken pipe")
        || has("h2 protocol")
    {
        if tls {
            // The server hung up during or right after our TLS handshake:
            // what etcd does to a missing or untrusted client certificate.
            Failure::ClientCertificateRejected
        } else {
            // A plaintext HTTP/2 preface sent to a TLS listener gets these.
            Failure::PlaintextToTls
        }
    } else if has("unavailable")
        || has("deadline")
        || has("timed out")
        || has("timeout")
        || has("connection refused")
        || has("transport error")
        || has("tcp connect error")
        || has("leader changed")
        || has("no leader")
        || has("too many requests")
        || has("error trying to connect")
        || has("connection closed")
        || has("dns error")
        || has("failed to lookup")
    {
        Failure::Transient
    } else {
        Failure::Other
    }
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
        result.map_err(|e| {
            let kind = classify(&e, self.config.uses_tls);
            self.error(kind, &e, &self.endpoints[i].url, op)
        })
    }

    /// Runs `f` with retry and failover: transient failures move to the next
    /// endpoint, with exponential backoff after each full round.
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
            let url = &self.endpoints[i].url;
            let result = match self.client(i).await {
                Ok(c) => f(c).await,
                Err(e) => Err(e),
            };
            let err = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let kind = classify(&err, self.config.uses_tls);
            attempt += 1;
            tracing::debug!(side = %self.role, endpoint = %url, ?kind, error = %error_text(&err), attempt, "request failed");
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
            Failure::Other => EtcdError::Request {
                side,
                operation: format!("{} `{}`", op.action, display_key(op.prefix)),
                detail,
            },
        }
    }
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
