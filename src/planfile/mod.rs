//! The plan file: the raw YAML form (`raw`), its validation into a [`Plan`]
//! (`validate`) and the diagnostics both produce (`error`).

mod error;
pub mod raw;
mod repair;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{PlanFileError, Problem};
pub use raw::{Api, LeaseMode, OnConflict};
pub use validate::{Env, ProcessEnv, Scope, parse, parse_in};

/// A plan file that passed every offline check.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The path it was read from, as given.
    pub path: PathBuf,
    /// The file's text, kept for saved plans and later diagnostics.
    pub text: Arc<str>,
    /// Hex sha256 of the file's bytes: a saved plan records which file it came from.
    pub file_sha256: String,
    pub name: Option<String>,
    pub source: SideConfig,
    pub destination: SideConfig,
    pub mappings: Vec<Mapping>,
    pub prune: bool,
    /// Move mode: delete the moved keys from the source after the copy.
    pub delete_source: bool,
    pub leases: LeaseMode,
    pub on_conflict: OnConflict,
    /// Source key prefixes whose values are never shown.
    pub sensitive: Vec<Vec<u8>>,
}

impl Plan {
    /// Whether the value of a change from `source_key` to the destination
    /// `key` must never be shown: a sensitive prefix covers either side.
    pub fn is_sensitive(&self, source_key: &[u8], key: &[u8]) -> bool {
        self.sensitive
            .iter()
            .any(|p| source_key.starts_with(p) || key.starts_with(p))
    }

    /// Whether a mapping reads this source key: under a `from`, outside
    /// its exclusions.
    pub fn reads_source_key(&self, key: &[u8]) -> bool {
        self.mappings
            .iter()
            .any(|m| key.starts_with(&m.from) && !m.excludes_source(key))
    }

    /// The prefix a side's header-only requests read (cluster id and
    /// revision): the first mapping's `from` on the source, its `to` on the
    /// destination, which the plan needs read rights on anyway.
    pub fn probe_prefix(&self, source: bool) -> &[u8] {
        self.mappings
            .first()
            .map_or(&[][..], |m| if source { &m.from } else { &m.to })
    }

    /// `sensitive` prefixes that no mapping reads or writes: they hide
    /// nothing, and are most likely a typo.
    pub fn idle_sensitive(&self) -> impl Iterator<Item = &[u8]> {
        self.sensitive.iter().map(Vec::as_slice).filter(|p| {
            !self.mappings.iter().any(|m| {
                crate::keys::prefixes_overlap(p, &m.from) || crate::keys::prefixes_overlap(p, &m.to)
            })
        })
    }

    /// A name for messages: the plan's `name`, or its file name.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.path.display().to_string())
    }
}

/// Reads and validates a plan file, reading passwords from the process environment.
pub fn load(path: &Path) -> Result<Plan, PlanFileError> {
    load_with(path, &ProcessEnv)
}

/// [`load`] with passwords from `env`.
pub fn load_with(path: &Path, env: &dyn Env) -> Result<Plan, PlanFileError> {
    load_in(path, env, Scope::Environment)
}

/// [`load_with`], looking only as far as `scope`: with [`Scope::File`] the
/// plan has no passwords and unread TLS files, for `validate` to describe.
pub fn load_in(path: &Path, env: &dyn Env, scope: Scope) -> Result<Plan, PlanFileError> {
    let bytes = crate::files::read_capped(path, crate::files::PLAN_CAP).map_err(|source| {
        PlanFileError::Read {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let text = String::from_utf8(bytes).map_err(|e| PlanFileError::Read {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
    })?;
    parse_in(&text, path, env, scope)
}

/// Which end of the migration a side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SideRole {
    Source,
    Destination,
}

impl fmt::Display for SideRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SideRole::Source => "source",
            SideRole::Destination => "destination",
        })
    }
}

/// One cluster, checked: endpoints of one scheme, loaded TLS files, the password.
#[derive(Debug, Clone)]
pub struct SideConfig {
    pub role: SideRole,
    /// Normalised endpoint URLs (`scheme://host:port`).
    pub endpoints: Vec<String>,
    /// `true` for `https://` endpoints. There is no fallback either way.
    pub uses_tls: bool,
    pub api: Api,
    pub tls: Option<TlsConfig>,
    pub auth: Option<AuthConfig>,
    /// A source read from a snapshot file instead of `endpoints`.
    pub snapshot: Option<SnapshotSource>,
}

impl SideConfig {
    /// Where the side is, for people: its endpoints, or its snapshot file.
    pub fn shown_endpoints(&self) -> Vec<String> {
        match &self.snapshot {
            Some(s) => vec![format!("snapshot:{}", s.path.display())],
            None => self.endpoints.clone(),
        }
    }
}

/// `source: { snapshot: FILE, revision: R }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSource {
    /// Resolved against the plan file's folder.
    pub path: PathBuf,
    /// The revision to read; the file's newest when absent.
    pub revision: Option<i64>,
}

/// TLS material of one side, read and checked at validation.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub ca: Option<PemFile>,
    pub identity: Option<Identity>,
    pub server_name: Option<String>,
}

/// A client certificate and its key.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert: PemFile,
    pub key: PemFile,
}

/// A PEM file's resolved path and its contents.
#[derive(Clone)]
pub struct PemFile {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

impl fmt::Debug for PemFile {
    // Key files are secrets: Debug output names the file, never the bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Username and the password read from `password_env`.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub username: String,
    pub password_env: String,
    pub password: Secret,
}

/// A string that never shows itself in Debug or Display.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One prefix mapping, decoded to bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Source prefix; empty means the whole keyspace (`all_keys: true`).
    pub from: Vec<u8>,
    /// Destination prefix.
    pub to: Vec<u8>,
    /// Source prefixes (each under `from`) left alone on both sides.
    pub exclude: Vec<Vec<u8>>,
}

impl Mapping {
    /// The destination key of a source key under `from`.
    pub fn to_destination(&self, source_key: &[u8]) -> Option<Vec<u8>> {
        let rest = source_key.strip_prefix(self.from.as_slice())?;
        let mut key = Vec::with_capacity(self.to.len() + rest.len());
        key.extend_from_slice(&self.to);
        key.extend_from_slice(rest);
        Some(key)
    }

    /// Whether `key` is where this mapping writes `source_key`
    /// ([`Mapping::to_destination`] without building it).
    pub fn maps_to(&self, source_key: &[u8], key: &[u8]) -> bool {
        source_key
            .strip_prefix(self.from.as_slice())
            .is_some_and(|rest| key.strip_prefix(self.to.as_slice()) == Some(rest))
    }

    /// The source key a destination key under `to` corresponds to.
    pub fn to_source(&self, destination_key: &[u8]) -> Option<Vec<u8>> {
        let rest = destination_key.strip_prefix(self.to.as_slice())?;
        let mut key = Vec::with_capacity(self.from.len() + rest.len());
        key.extend_from_slice(&self.from);
        key.extend_from_slice(rest);
        Some(key)
    }

    /// Whether a source key falls under one of the exclusions.
    pub fn excludes_source(&self, source_key: &[u8]) -> bool {
        self.exclude.iter().any(|e| source_key.starts_with(e))
    }

    /// Whether a destination key falls under an exclusion mapped under `to`.
    pub fn excludes_destination(&self, destination_key: &[u8]) -> bool {
        self.exclude.iter().any(|e| {
            let rest = &e[self.from.len()..];
            destination_key
                .strip_prefix(self.to.as_slice())
                .is_some_and(|k| k.starts_with(rest))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Mapping;
    use proptest::prelude::*;

    // Short keys over few bytes, so prefixes meet often.
    fn key() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(0u8..4, 0..6)
    }

    proptest! {
        #[test]
        fn maps_to_is_to_destination_without_building_it(
            from in key(), to in key(), source in key(), dest in key(), same in any::<bool>(),
        ) {
            let m = Mapping { from, to, exclude: Vec::new() };
            // Half the time a key that does map, so both answers are tried.
            let dest = match (same, m.to_destination(&source)) {
                (true, Some(k)) => k,
                _ => dest,
            };
            prop_assert_eq!(
                m.maps_to(&source, &dest),
                m.to_destination(&source).as_deref() == Some(dest.as_slice())
            );
        }
    }
}
