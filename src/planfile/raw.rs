//! The plan file exactly as written: serde types with spans, and the source of
//! the JSON Schema. Nothing here is checked beyond YAML types; `validate`
//! turns a `RawPlan` into a `Plan` or into span-labelled diagnostics.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// An etcdplan plan file: which keys to move from which etcd cluster to which.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "etcdplan plan file")]
pub struct RawPlan {
    /// Plan file format version. Only `1` exists.
    #[schemars(with = "u32", range(min = 1, max = 1))]
    pub version: Spanned<i64>,

    /// A name for this migration, shown in every output.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub name: Option<Spanned<String>>,

    /// The cluster keys are read from. etcdplan writes to it only in move
    /// mode (`delete_source: true`), to delete keys it has moved.
    pub source: RawSide,

    /// The cluster keys are written to.
    pub destination: RawSide,

    /// Which key prefixes to move, and where to.
    #[schemars(length(min = 1))]
    #[schemars(with = "Vec<RawMapping>")]
    pub prefixes: Spanned<Vec<RawMapping>>,

    /// `true`: delete destination keys under each `to` that the source lacks
    /// (excluded keys are never deleted). Default `false`.
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub prune: Option<Spanned<bool>>,

    /// Move mode: `true` deletes the planned keys from the source once the
    /// destination holds and verifies them (each delete guarded by the key's
    /// mod revision at the planned source revision). Excluded and
    /// conflicting keys stay. Default `false`.
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub delete_source: Option<Spanned<bool>>,

    /// What to do with source keys attached to a lease. `preserve` (default):
    /// write them attached to a destination lease with the source lease's
    /// remaining TTL (keys sharing a lease share one). `drop`: write them
    /// without a lease. `skip`: leave them out on both sides, counted.
    #[serde(default)]
    #[schemars(with = "Option<LeaseMode>")]
    pub leases: Option<Spanned<LeaseMode>>,

    /// What to do with a destination key that already exists with another
    /// value. Default `fail`: etcdplan never overwrites unless told to.
    #[serde(default)]
    #[schemars(with = "Option<OnConflict>")]
    pub on_conflict: Option<Spanned<OnConflict>>,

    /// Source key prefixes whose values are never printed: every output shows
    /// `(sensitive value, sha256 …)` instead. Same escapes as `from`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub sensitive: Vec<Spanned<String>>,
}

/// One cluster: its endpoints and how to authenticate to it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Side")]
pub struct RawSide {
    /// Client URLs of the cluster's members, all `http://host:port` (plaintext)
    /// or all `https://host:port` (TLS). etcdplan fails over between them.
    /// Required, except for a source read from a `snapshot`.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>", length(min = 1))]
    pub endpoints: Option<Spanned<Vec<Spanned<String>>>>,

    /// Source only, instead of `endpoints`: an etcd snapshot file (from
    /// `etcdctl snapshot save`, or a data dir's `member/snap/db`), read
    /// without etcd. Relative to the plan file's folder.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub snapshot: Option<Spanned<String>>,

    /// With `snapshot`: the revision to read, at or after the file's
    /// compaction point. Default: the newest revision in the file.
    #[serde(default)]
    #[schemars(with = "Option<i64>", range(min = 1))]
    pub revision: Option<Spanned<i64>>,

    /// TLS files, for `https://` endpoints only. Paths are relative to the
    /// plan file's folder. Without this section, `https://` endpoints are
    /// verified against the system's root certificates.
    #[serde(default)]
    #[schemars(with = "Option<RawTls>")]
    pub tls: Option<Spanned<RawTls>>,

    /// Username and password authentication (etcd RBAC).
    #[serde(default)]
    pub auth: Option<RawAuth>,

    /// The etcd API to speak: `v3` (default) or `v2` (the v2 HTTP API, for
    /// clusters that still hold v2 data; etcd 3.4 serves it with --enable-v2).
    #[serde(default)]
    #[schemars(with = "Option<Api>")]
    pub api: Option<Spanned<Api>>,
}

/// Which etcd API a side speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    #[default]
    V3,
    V2,
}

/// TLS settings of one side.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Tls")]
pub struct RawTls {
    /// PEM file of the CA certificate(s) that signed the server certificate.
    /// When absent, the system's root certificates are used.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub ca: Option<Spanned<String>>,

    /// PEM file of the client certificate, for clusters that require client
    /// certificates (`--client-cert-auth`). Needs `key`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub cert: Option<Spanned<String>>,

    /// PEM file of the client certificate's private key. Needs `cert`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub key: Option<Spanned<String>>,

    /// The name to verify in the server certificate instead of the endpoint's
    /// host, when they differ (for example an IP endpoint and a DNS-named cert).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub server_name: Option<Spanned<String>>,
}

/// etcd username/password authentication. The password is read from an
/// environment variable so that it never sits in the file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Auth")]
pub struct RawAuth {
    /// The etcd user name.
    #[schemars(with = "String")]
    pub username: Spanned<String>,

    /// Name of the environment variable that holds the password.
    #[schemars(with = "String")]
    pub password_env: Spanned<String>,
}

/// One prefix mapping: source keys under `from` become destination keys under
/// `to`, with `from` replaced by `to`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Mapping")]
pub struct RawMapping {
    /// Source key prefix. Must not be empty: to move every key, leave `from`
    /// out and write `all_keys: true`. Non-UTF-8 bytes are written `\xNN` and a
    /// backslash `\\` (use a plain or single-quoted YAML string).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub from: Option<Spanned<String>>,

    /// `true` instead of `from`: this mapping takes the whole source keyspace.
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub all_keys: Option<Spanned<bool>>,

    /// Destination key prefix. Default: the same as `from`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub to: Option<Spanned<String>>,

    /// Source key prefixes under `from` that are left alone on both sides:
    /// not copied, and (mapped under `to`) never updated or pruned.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub exclude: Vec<Spanned<String>>,
}

/// What to do with a destination key that exists with another value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// Write the source value over it (shown as an update).
    Overwrite,
    /// Leave it as it is (listed as a conflict, not written).
    Keep,
    /// Refuse to plan, listing the keys.
    Fail,
}

/// What to do with source keys attached to a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeaseMode {
    /// Attach them to destination leases with the remaining TTL.
    #[default]
    Preserve,
    /// Write them without a lease.
    Drop,
    /// Leave them out on both sides.
    Skip,
}
