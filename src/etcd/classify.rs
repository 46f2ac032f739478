//! What a failed request means: etcd-client and tonic expose most failures
//! only as text, so this sorts the text into what to do about it.

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

impl Failure {
    /// Whether the failure may be one bad member (unreachable, hung, a TLS
    /// mismatch), so the other endpoints are worth trying.
    pub fn endpoint_level(self) -> bool {
        matches!(
            self,
            Failure::Transient
                | Failure::UntrustedServer
                | Failure::ClientCertificateRejected
                | Failure::PlaintextToTls
                | Failure::TlsToPlaintext
        )
    }
}

/// Whether the request got no answer in the request timeout (etcd-client's
/// `Timeout expired`), as opposed to an answer that was an error.
pub fn is_timeout(err: &etcd_client::Error) -> bool {
    let text = error_text(err).to_lowercase();
    text.contains("timeout expired") || text.contains("deadline has elapsed")
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
    if let Some(kind) = server_answer(&text) {
        return kind;
    }
    let has = |s: &str| text.contains(s);
    let any = |list: &[&str]| list.iter().any(|s| text.contains(s));
    if any(&[
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

/// etcd's own answers that say what to do: compaction, quota, size, auth
/// and permission. `None` for everything else (transport, TLS, timeouts).
fn server_answer(text: &str) -> Option<Failure> {
    let has = |s: &str| text.contains(s);
    let any = |list: &[&str]| list.iter().any(|s| text.contains(s));
    Some(if has("required revision has been compacted") {
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
    } else {
        return None;
    })
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
