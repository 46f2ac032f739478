//! One side's connection: every endpoint of the side, TLS and auth from the
//! plan, timeouts, and retry with backoff across endpoints, because
//! etcd-client neither retries nor fails over on its own.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use tokio::sync::OnceCell;

use super::EtcdError;
use super::classify::is_timeout;
pub use super::classify::{Failure, classify, error_text};
pub use super::retry::RetryPolicy;
use super::retry::{Attempts, Next, Notices, seconds};
use crate::keys::display_key;
use crate::planfile::{Api, SideConfig, SideRole};

/// Largest response etcd-client will decode. Pages are sized far below this;
/// it only has to admit one page holding a few maximum-size values.
pub const MAX_DECODE_BYTES: usize = 64 << 20;

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

/// Connections per endpoint across a long link; requests take them in turn.
/// There one connection cannot carry a window of writes at first: etcd's gRPC
/// server opens each connection's receive window at 64 KiB and widens it
/// only as it measures the link, a little per round trip, so 128 batches of
/// 32 KiB sent at once drain two per round trip for the first half second.
/// Each connection has its own window. Measured through a 50 ms round trip
/// (100,000 keys, 128 raw transactions in flight, etcd 3.4.23): 1.29-1.33 s
/// on one connection, 1.08-1.11 s on 4, 0.94-0.95 s on 8, 0.79-0.80 s on
/// 16; an apply took 1.32-1.35 s, 1.09-1.14 s, 1.01-1.06 s and 0.98 s. On
/// loopback, 8 connections cost an apply about 5% (median of 8 interleaved
/// runs: more wakeups, smaller writes for the same requests), so a side uses
/// one until its round trip shows a long link ([`LONG_LINK_US`]). 8 keeps
/// most of the gain for half the connections (and logins, with a password)
/// of 16.
const LANES: usize = 8;

/// The round trip, in microseconds, that makes a link long: below it one
/// connection's window grows to the link's within a fraction of a second.
/// It is timed on the smallest request there is (a count-only read of one
/// key, twice, the faster counting), sent beside the run's first request:
/// the run's own answers say little, a 2 MiB page taking 15-60 ms on a
/// loaded loopback. A link between regions cannot answer faster than its
/// round trip; loopback and a data centre's network answer in a few ms.
const LONG_LINK_US: u64 = 20_000;

struct Endpoint {
    url: String,
    /// Its first connection, opened on first use.
    client: OnceCell<Client>,
    /// Its other connections across a long link, all opened at once in the
    /// background when the link shows long; a request whose turn it is
    /// waits for its connection (queued on the first one instead, it would
    /// wait for that one's narrow window).
    lanes: Arc<[OnceCell<Client>]>,
    /// Set once those are being opened.
    opening: AtomicBool,
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
    /// The connection the next request takes, modulo [`LANES`].
    lane: AtomicUsize,
    notices: Notices,
    /// Set once the endpoints were raced on first use (see `pick`).
    picked: OnceCell<()>,
    /// The slowest answered request so far, in microseconds, and how many
    /// were answered: what `--request-timeout` must stay above (said at -v).
    slowest_us: AtomicU64,
    /// The link's round trip in microseconds, once timed (`u64::MAX`
    /// before): whether it is long (see [`LANES`]).
    round_trip_us: Arc<AtomicU64>,
    /// Set once the round trip is being timed.
    timing: AtomicBool,
    answered: AtomicU64,
    /// A prefix the plan reads on this side: requests that only need a
    /// header (cluster id, revision) read it, count-only, because a user
    /// limited to that prefix may do nothing else (current etcd 3.5 denies
    /// Status to users other than root).
    probe: Vec<u8>,
    /// The same keyspace in this process, for scans (a served snapshot).
    local: Option<Arc<dyn super::types::LocalKeyspace>>,
    /// Whether the server honours range compares, once asked (`info.rs`),
    /// and whether a batch's span guard has failed on a key not its own.
    range_compares: OnceCell<bool>,
    pub span_failed: AtomicBool,
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
                    lanes: (1..LANES).map(|_| OnceCell::new()).collect(),
                    opening: AtomicBool::new(false),
                    answered: AtomicBool::new(false),
                })
                .collect(),
            current: AtomicUsize::new(0),
            lane: AtomicUsize::new(0),
            notices: Notices::default(),
            picked: OnceCell::new(),
            slowest_us: AtomicU64::new(0),
            round_trip_us: Arc::new(AtomicU64::new(u64::MAX)),
            timing: AtomicBool::new(false),
            answered: AtomicU64::new(0),
            probe: Vec::new(),
            local: None,
            range_compares: OnceCell::new(),
            span_failed: AtomicBool::new(false),
            options,
            policy,
        }
    }

    /// This side, with the prefix header-only requests read (see `probe`).
    pub fn with_probe(mut self, prefix: &[u8]) -> Side {
        self.probe = prefix.to_vec();
        self
    }

    /// Scans read `local` instead of asking the server (which serves it).
    pub fn with_local(mut self, local: Arc<dyn super::types::LocalKeyspace>) -> Side {
        self.local = Some(local);
        self
    }

    /// Where [`super::info::range_compares`] keeps its answer.
    pub fn range_compares_cell(&self) -> &OnceCell<bool> {
        &self.range_compares
    }

    /// The in-process keyspace scans read, if any.
    pub fn local(&self) -> Option<&Arc<dyn super::types::LocalKeyspace>> {
        self.local.as_ref()
    }

    /// The prefix header-only requests read.
    pub fn probe(&self) -> &[u8] {
        &self.probe
    }

    /// The one key header-only requests read: the probe prefix itself as a
    /// key, which a grant on the prefix covers. One key, not the range:
    /// etcd counts every key of a range even for a count-only read, a walk
    /// of the whole prefix per request.
    pub fn probe_key(&self) -> Vec<u8> {
        if self.probe.is_empty() {
            vec![0]
        } else {
            self.probe.clone()
        }
    }

    /// Sends the next requests to endpoint `i` first (one that answered).
    pub fn prefer(&self, i: usize) {
        self.current.store(i, Ordering::Relaxed);
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
        let with_certificate = self
            .config
            .tls
            .as_ref()
            .is_some_and(|t| t.identity.is_some());
        match &self.config.auth {
            Some(a) => format!("user `{}`", crate::escape::text(&a.username)),
            // etcd with --client-cert-auth takes the user from the CN.
            None if with_certificate => {
                "the user the client certificate names (its CN), or the anonymous user".to_string()
            }
            None => "the anonymous user".to_string(),
        }
    }

    /// Whether its round trip was timed and is short (not [`LONG_LINK_US`]).
    pub fn short_link(&self) -> bool {
        self.round_trip_us.load(Ordering::Relaxed) < LONG_LINK_US
    }

    /// A client of endpoint `i`: its first connection (opened on first
    /// use), or across a long link its 8 in turn. Each request works on a
    /// clone (they share the connection and its auth token).
    async fn client(&self, i: usize) -> Result<&Client, etcd_client::Error> {
        let ep = &self.endpoints[i];
        let connect = || Client::connect([ep.url.as_str()], Some(self.options.clone()));
        let round_trip = self.round_trip_us.load(Ordering::Relaxed);
        if (LONG_LINK_US..u64::MAX).contains(&round_trip) {
            self.open_lanes(ep);
            let turn = self.lane.fetch_add(1, Ordering::Relaxed) % LANES;
            if let Some(k) = turn.checked_sub(1) {
                return ep.lanes[k].get_or_try_init(connect).await;
            }
        }
        let client = ep.client.get_or_try_init(connect).await?;
        self.time_round_trip(client);
        Ok(client)
    }

    /// Times the link's round trip in the background, once per side.
    fn time_round_trip(&self, client: &Client) {
        if self.timing.swap(true, Ordering::Relaxed) {
            return;
        }
        let (mut c, key, round_trip) =
            (client.clone(), self.probe_key(), self.round_trip_us.clone());
        tokio::spawn(async move {
            for _ in 0..2 {
                let started = std::time::Instant::now();
                let options = etcd_client::GetOptions::new().with_count_only();
                // Refused or failed: not timed, and the side keeps to one
                // connection.
                if c.get(key.clone(), Some(options)).await.is_err() {
                    return;
                }
                let took = started.elapsed().as_micros() as u64;
                round_trip.fetch_min(took, Ordering::Relaxed);
            }
        });
    }

    /// Opens `ep`'s other connections at once in the background, once (a
    /// request whose turn comes first waits for the same opening).
    fn open_lanes(&self, ep: &Endpoint) {
        if ep.opening.swap(true, Ordering::Relaxed) {
            return;
        }
        tracing::debug!(side = %self.role, endpoint = %ep.url, round_trip_ms = self.round_trip_us.load(Ordering::Relaxed) as f64 / 1000.0, "a long link: opening {} more connections", LANES - 1);
        for k in 0..ep.lanes.len() {
            let (lanes, url, options) = (ep.lanes.clone(), ep.url.clone(), self.options.clone());
            tokio::spawn(async move {
                let connect = || Client::connect([url.as_str()], Some(options));
                // A failure is the waiting request's to retry and report.
                let _ = lanes[k].get_or_try_init(connect).await;
            });
        }
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
            Ok(c) => f(c.clone()).await,
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

    /// Runs `f` with retry and failover: a failure that another member or a
    /// later try might not have moves to the next endpoint at once, with
    /// exponential backoff after each full round, until the attempts or the
    /// stall timeout run out. A stale auth token is replaced by a fresh
    /// authentication and the request retried. `f` may run more than once,
    /// so it must be safe to repeat: every write etcdplan sends is guarded,
    /// and a retried write that had in fact been applied is settled by its
    /// guard and read-back.
    pub async fn call<T, F, Fut>(&self, op: Op<'_>, f: F) -> Result<T, EtcdError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        if self.endpoints.is_empty() {
            // A snapshot source before it is served: never indexed past the end.
            return Err(EtcdError::Request {
                side: self.role,
                operation: format!("{} `{}`", op.action, display_key(op.prefix)),
                detail: "this side has no endpoints".into(),
            });
        }
        self.pick().await;
        let n = self.endpoints.len().max(1);
        let mut attempts = Attempts::new(&self.policy, n);
        loop {
            let raw = self.current.load(Ordering::Relaxed);
            let i = raw % n;
            let ep = &self.endpoints[i];
            // Timed once connected: opening a connection is not the request
            // (and has its own timeout), and would make a short link look long.
            let (client, result, took) = match self.client(i).await {
                Ok(c) => {
                    let started = std::time::Instant::now();
                    (Some(c), f(c.clone()).await, started.elapsed())
                }
                Err(e) => (None, Err(e), Duration::ZERO),
            };
            let err = match result {
                Ok(v) => {
                    ep.answered.store(true, Ordering::Relaxed);
                    let took = took.as_micros() as u64;
                    tracing::debug!(side = %self.role, endpoint = %ep.url, action = op.action, under = %display_key(op.prefix), ms = took as f64 / 1000.0, "answered");
                    self.slowest_us.fetch_max(took, Ordering::Relaxed);
                    self.answered.fetch_add(1, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => e,
            };
            let kind = self.classify_at(i, &err).await;
            attempts.attempt += 1;
            tracing::debug!(side = %self.role, endpoint = %ep.url, ?kind, error = %error_text(&err), attempt = attempts.attempt, "request failed");
            if kind == Failure::AuthStale && attempts.attempt < self.policy.max_attempts {
                self.log_in_again(client, &ep.url, op).await?;
                continue;
            }
            // Endpoint-level failures (TLS mismatch, unreachable) may be one
            // bad member: try the others before giving up.
            if !kind.endpoint_level() {
                return Err(self.error(kind, &err, &ep.url, op));
            }
            let timed_out = is_timeout(&err);
            match attempts.after(&self.policy, i, kind, err, &ep.url) {
                Next::Retry(wait) => {
                    // Move on from the failing endpoint, unless another task
                    // did already. (Kept below `n`, so the exchange compares
                    // what was loaded: a stored `n` would never move again.)
                    let _ = self.current.compare_exchange(
                        raw,
                        (i + 1) % n,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    if kind == Failure::Transient {
                        self.say_retrying(i, timed_out, wait);
                    }
                    if let Some(wait) = wait {
                        tokio::time::sleep(wait).await;
                    }
                }
                Next::GiveUp => return Err(self.give_up(&attempts, op)),
                Next::Stalled(elapsed) => {
                    let last = attempts
                        .specific
                        .as_ref()
                        .map_or_else(String::new, |s| format!("{}: {}", s.2, error_text(&s.1)));
                    return Err(EtcdError::Stalled {
                        side: self.role,
                        seconds: elapsed.as_secs(),
                        attempts: attempts.attempt,
                        last,
                    });
                }
            }
        }
    }

    /// On a side's first request, with several endpoints: asks every
    /// endpoint at once for a header (a count-only read of the probe
    /// prefix) and sends what follows to the first that answers, so that a
    /// member that is down or hung when the run starts costs nothing. When
    /// none answers, the retrying path takes over and says why.
    async fn pick(&self) {
        let n = self.endpoints.len();
        if n < 2 {
            return;
        }
        self.picked
            .get_or_init(|| async {
                let mut pending: Vec<_> = (0..n)
                    .map(|i| Box::pin(async move { (i, self.answers(i).await) }))
                    .collect();
                while !pending.is_empty() {
                    let ((i, answered), _, rest) = futures::future::select_all(pending).await;
                    if answered {
                        tracing::info!(side = %self.role, endpoint = %self.endpoints[i].url, "answered first of {n} endpoints: it serves this run");
                        self.prefer(i);
                        return;
                    }
                    pending = rest;
                }
            })
            .await;
    }

    /// Whether endpoint `i` answers at all (a refusal is an answer).
    async fn answers(&self, i: usize) -> bool {
        let key = self.probe_key();
        let ask = async {
            let mut c = self.client(i).await?.clone();
            let options = etcd_client::GetOptions::new().with_count_only();
            c.get(key, Some(options)).await
        };
        match ask.await {
            Ok(_) => {
                self.endpoints[i].answered.store(true, Ordering::Relaxed);
                true
            }
            Err(e) => classify(&e, self.config.uses_tls, false) == Failure::PermissionDenied,
        }
    }

    /// Someone changed users or roles (the auth store revision moved) or
    /// the token expired: log in again before the retry.
    async fn log_in_again(
        &self,
        client: Option<&Client>,
        url: &str,
        op: Op<'_>,
    ) -> Result<(), EtcdError> {
        if let Some(c) = client
            && let Err(e) = c.refresh_token().await
        {
            let kind = classify(&e, self.config.uses_tls, true);
            if !matches!(kind, Failure::Transient | Failure::AuthStale) {
                return Err(self.error(kind, &e, url, op));
            }
        }
        Ok(())
    }

    /// The error for a request that ran out of attempts or endpoints.
    fn give_up(&self, attempts: &Attempts, op: Op<'_>) -> EtcdError {
        let Some((kind, err, url)) = &attempts.specific else {
            return EtcdError::RetriesExhausted {
                side: self.role,
                attempts: attempts.attempt,
                last: String::new(),
            };
        };
        if *kind == Failure::Transient && self.endpoints.len() > 1 {
            return EtcdError::RetriesExhausted {
                side: self.role,
                attempts: attempts.attempt,
                last: format!("{url}: {}", error_text(err)),
            };
        }
        self.error(*kind, err, url, op)
    }

    /// Says on stderr, once per endpoint and interval, that endpoint `i`
    /// failed and what happens next: in a terminal and in CI alike, a hung
    /// member must not look like a slow migration.
    fn say_retrying(&self, i: usize, timed_out: bool, wait: Option<std::time::Duration>) {
        if !self.notices.fresh(i) {
            return;
        }
        let n = self.endpoints.len().max(1);
        let url = crate::escape::text(&self.endpoints[i].url);
        let what = if timed_out {
            format!("did not answer in {}", seconds(self.policy.request_timeout))
        } else {
            "failed".to_string()
        };
        let next = if n > 1 {
            format!(
                "trying {}",
                crate::escape::text(&self.endpoints[(i + 1) % n].url)
            )
        } else {
            format!(
                "retrying{} (giving up after {} without an answer, --stall-timeout)",
                wait.map(|w| format!(" in {}", seconds(w)))
                    .unwrap_or_default(),
                seconds(self.policy.stall_timeout)
            )
        };
        tracing::warn!("{} {url} {what}; {next}", self.role);
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
                prefix: op.prefix.to_vec(),
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

impl Drop for Side {
    fn drop(&mut self) {
        let n = self.answered.load(Ordering::Relaxed);
        if n > 0 {
            let ms = self.slowest_us.load(Ordering::Relaxed) as f64 / 1000.0;
            tracing::info!(
                "{}: the slowest of {n} requests answered in {ms:.1} ms (--request-timeout {})",
                self.role,
                seconds(self.policy.request_timeout)
            );
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
