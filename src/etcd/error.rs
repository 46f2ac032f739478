//! Diagnostics of the etcd layer: which side, which endpoint, what happened,
//! and what to do about it.

use miette::Diagnostic;

use crate::planfile::SideRole;

/// What went wrong talking to a cluster.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum EtcdError {
    #[error(
        "{side} endpoint {}: unreachable ({})",
        crate::escape::text(endpoint),
        crate::escape::text(detail)
    )]
    #[diagnostic(
        code(etcdplan::etcd::unreachable),
        help(
            "check that etcd listens on that host and port and that no firewall is in the way; etcdplan tried every endpoint of the {side}"
        )
    )]
    Unreachable {
        side: SideRole,
        endpoint: String,
        detail: String,
    },

    #[error(
        "{side} endpoint {}: the server's certificate is not trusted ({})",
        crate::escape::text(endpoint),
        crate::escape::text(detail)
    )]
    #[diagnostic(
        code(etcdplan::etcd::untrusted_server),
        help(
            "`tls.ca` must hold the CA that signed the server certificate, and the certificate must name the endpoint's host (or set `tls.server_name`)"
        )
    )]
    UntrustedServer {
        side: SideRole,
        endpoint: String,
        detail: String,
    },

    #[error(
        "{side} endpoint {}: the server rejected the client certificate ({})",
        crate::escape::text(endpoint),
        crate::escape::text(detail)
    )]
    #[diagnostic(
        code(etcdplan::etcd::client_certificate_rejected),
        help(
            "the server requires a client certificate signed by a CA it trusts: set `tls.cert` and `tls.key` to such a pair"
        )
    )]
    ClientCertificateRejected {
        side: SideRole,
        endpoint: String,
        detail: String,
    },

    #[error(
        "{side} endpoint {}: the server speaks TLS but the endpoint says http:// ({})",
        crate::escape::text(endpoint),
        crate::escape::text(detail)
    )]
    #[diagnostic(
        code(etcdplan::etcd::plaintext_to_tls),
        help(
            "change the endpoint to https:// and add a `tls` section; etcdplan never falls back between plaintext and TLS"
        )
    )]
    PlaintextToTls {
        side: SideRole,
        endpoint: String,
        detail: String,
    },

    #[error(
        "{side} endpoint {}: the server speaks plaintext but the endpoint says https:// ({})",
        crate::escape::text(endpoint),
        crate::escape::text(detail)
    )]
    #[diagnostic(
        code(etcdplan::etcd::tls_to_plaintext),
        help(
            "the server does not use TLS: if that is intended, use http://; otherwise fix the server. etcdplan never falls back to plaintext on its own"
        )
    )]
    TlsToPlaintext {
        side: SideRole,
        endpoint: String,
        detail: String,
    },

    #[error("{side}: authentication failed for user `{user}`")]
    #[diagnostic(
        code(etcdplan::etcd::authentication_failed),
        help("check the user name and the password in the variable named by `auth.password_env`")
    )]
    AuthenticationFailed { side: SideRole, user: String },

    #[error("{side}: the cluster requires authentication, and the plan gives none")]
    #[diagnostic(
        code(etcdplan::etcd::authentication_required),
        help("add an `auth` section with `username` and `password_env` for the {side}")
    )]
    AuthenticationRequired { side: SideRole },

    #[error(
        "{side}: permission denied for {user} to {what} `{}`",
        crate::keys::display_key(prefix)
    )]
    #[diagnostic(
        code(etcdplan::etcd::permission_denied),
        help("{}", super::grant::hint(what, &crate::keys::display_key(prefix)))
    )]
    PermissionDenied {
        side: SideRole,
        user: String,
        what: &'static str,
        prefix: Vec<u8>,
    },

    #[error("{side}: revision {revision} has been compacted")]
    #[diagnostic(
        code(etcdplan::etcd::compacted),
        help(
            "the cluster discarded that history; run `etcdplan plan` again to read at a current revision"
        )
    )]
    Compacted { side: SideRole, revision: i64 },

    #[error(
        "{side} endpoint {}: the database is out of space ({})",
        crate::escape::text(endpoint),
        crate::escape::text(detail)
    )]
    #[diagnostic(
        code(etcdplan::etcd::no_space),
        help(
            "the {side} hit its backend quota and raised the NOSPACE alarm; it refuses writes until an operator frees space and disarms it: \
             compact old history (`etcdctl compact REVISION`, the current revision from `etcdctl endpoint status -w json`), \
             defragment every member (`etcdctl defrag --cluster`), then `etcdctl alarm disarm`; or restart the members with a larger \
             `--quota-backend-bytes`. Then rerun the same etcdplan command: it resumes, and what was written stays written"
        )
    )]
    NoSpace {
        side: SideRole,
        endpoint: String,
        detail: String,
    },

    #[error(
        "{side}: the server refused a request as too large ({})",
        crate::escape::text(detail)
    )]
    #[diagnostic(
        code(etcdplan::etcd::request_too_large),
        help(
            "the server's --max-request-bytes is smaller than the request; lower --max-request-bytes here to match it, or raise it on the server"
        )
    )]
    RequestTooLarge { side: SideRole, detail: String },

    #[error(
        "{side}: the authentication token kept going stale ({})",
        crate::escape::text(detail)
    )]
    #[diagnostic(
        code(etcdplan::etcd::auth_stale),
        help(
            "users or roles kept changing while etcdplan ran, so each new login was outdated at once; rerun when the auth changes are done"
        )
    )]
    AuthStale { side: SideRole, detail: String },

    #[error(
        "{side}: {} failed: {}",
        crate::escape::text(operation),
        crate::escape::text(detail)
    )]
    #[diagnostic(
        code(etcdplan::etcd::request_failed),
        help(
            "this is an error etcdplan does not retry; the message above comes from the server or the client library"
        )
    )]
    Request {
        side: SideRole,
        operation: String,
        detail: String,
    },

    #[error(
        "{side}: gave up after {attempts} attempts over all endpoints; last error: {}",
        crate::escape::text(last)
    )]
    #[diagnostic(
        code(etcdplan::etcd::retries_exhausted),
        help(
            "every endpoint kept failing with transient errors (unavailable, timeouts, leader changes); check the cluster's health with `etcdplan check`"
        )
    )]
    RetriesExhausted {
        side: SideRole,
        attempts: u32,
        last: String,
    },

    #[error(
        "{side}: no answer from any endpoint for {seconds} s ({attempts} attempts); last error: {}",
        crate::escape::text(last)
    )]
    #[diagnostic(
        code(etcdplan::etcd::stalled),
        help(
            "a request that gets no answer for --stall-timeout seconds (default 30) fails the run, \
             after each endpoint was tried for --request-timeout seconds (default 5) in turn; \
             a member paused or overloaded keeps the connection open but never answers. \
             Check the cluster with `etcdplan check`; nothing is lost, and a rerun resumes"
        )
    )]
    Stalled {
        side: SideRole,
        seconds: u64,
        attempts: u32,
        last: String,
    },
}
