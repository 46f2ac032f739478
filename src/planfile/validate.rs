//! Offline validation: `RawPlan` in, `Plan` or every problem found out.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{NamedSource, SourceSpan};
use rustls_pki_types::pem::{PemObject, SectionKind};
use serde_saphyr::{Location, Spanned};
use sha2::{Digest, Sha256};

use super::raw::{Api, OnConflict, RawAuth, RawMapping, RawPlan, RawSide, RawTls};
use super::{
    AuthConfig, Identity, Mapping, PemFile, Plan, PlanFileError, Problem, Secret, SideConfig,
    SideRole, TlsConfig,
};
use crate::keys::{display_key, parse_key, prefixes_overlap};

mod snapshot;

/// Where passwords come from; tests pass their own.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// How far validation looks beyond the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The file alone: syntax, schema and rules (`validate`, a lint job
    /// without secrets). Passwords are left empty and TLS files unread, so
    /// such a plan is for describing, never for connecting.
    File,
    /// Also the environment: password variables set, TLS files present and
    /// holding the right PEM (`validate --strict`, and every command that
    /// connects).
    Environment,
}

/// Parses and validates plan-file text. `path` names the file in diagnostics
/// and anchors relative TLS paths.
pub fn parse(text: &str, path: &Path, env: &dyn Env) -> Result<Plan, PlanFileError> {
    parse_in(text, path, env, Scope::Environment)
}

/// [`parse`], looking only as far as `scope`.
pub fn parse_in(
    text: &str,
    path: &Path,
    env: &dyn Env,
    scope: Scope,
) -> Result<Plan, PlanFileError> {
    let name = path.display().to_string();
    let invalid = |problems: Vec<Problem>| PlanFileError::Invalid {
        name: name.clone(),
        // Snippets never show credentials written into an endpoint URL.
        src: NamedSource::new(
            name.clone(),
            Arc::<str>::from(crate::escape::blank_userinfo(text)),
        )
        .with_language("yaml"),
        problems,
    };
    let read = |t: &str| {
        let options = serde_saphyr::options! { with_snippet: false };
        serde_saphyr::from_str_with_options::<RawPlan>(t, options)
    };
    let (raw, problems) = super::repair::read_all(text, read, yaml_problem);
    let Some(raw) = raw else {
        return Err(invalid(problems));
    };
    let base = path.parent().unwrap_or(Path::new(""));
    let mut v = Validator {
        problems,
        base,
        env,
        scope,
    };
    let plan = v.plan(raw, text, path);
    match plan {
        Some(plan) if v.problems.is_empty() => Ok(plan),
        _ => {
            // In file order, each at its line.
            v.problems.sort_by_key(|p| p.offset().unwrap_or(usize::MAX));
            Err(invalid(v.problems))
        }
    }
}

/// Turns a YAML or serde error into a problem with a code of its kind.
fn yaml_problem(err: &serde_saphyr::Error, source: &str) -> Problem {
    let message = err.to_string();
    let first_line = message.lines().next().unwrap_or("").to_string();
    // serde-saphyr appends " at line L, column C"; the label shows that already.
    let text = first_line
        .rsplit_once(" at line ")
        .map_or(first_line.as_str(), |(m, _)| m)
        .to_string();
    // The library's advice is for developers, not for someone writing a plan.
    let text = text
        .trim_end_matches(", set DuplicateKeyPolicy in Options if acceptable")
        .to_string();
    let (code, help) = if text.contains("unknown field") {
        (
            "etcdplan::plan_file::unknown_field",
            "check the spelling: the fields this section accepts are listed above; the JSON Schema in schemas/plan.schema.json gives editors completion",
        )
    } else if text.contains("duplicate") {
        (
            "etcdplan::plan_file::duplicate_key",
            "a key may appear only once in a mapping: remove or merge the repeated one",
        )
    } else if text.contains("missing field") {
        (
            "etcdplan::plan_file::missing_field",
            "add the field; see the plan file reference in the README",
        )
    } else if text.contains("unknown variant") {
        (
            "etcdplan::plan_file::bad_value",
            "use one of the values listed above",
        )
    } else if text.starts_with("invalid ") || text.starts_with("expected ") {
        (
            "etcdplan::plan_file::wrong_type",
            "give the field a value of the type it expects: see the plan file reference in the README",
        )
    } else {
        (
            "etcdplan::plan_file::yaml_syntax",
            "this is not valid YAML here: check indentation, quotes and brackets",
        )
    };
    let span = err
        .location()
        .and_then(|l| span_of(&l).or_else(|| span_from_line_column(source, &l)));
    Problem::new(code, text, help).label(span, "here")
}

/// Syntax errors carry a line and a (character) column but no byte offset.
fn span_from_line_column(source: &str, loc: &Location) -> Option<SourceSpan> {
    let line = usize::try_from(loc.line()).ok()?.checked_sub(1)?;
    let column = usize::try_from(loc.column()).ok()?.saturating_sub(1);
    let line_start: usize = source.split_inclusive('\n').take(line).map(str::len).sum();
    let line_text = source.get(line_start..)?.lines().next().unwrap_or("");
    let within = line_text
        .char_indices()
        .nth(column)
        .map_or(line_text.len(), |(i, _)| i);
    Some(SourceSpan::new((line_start + within).into(), 1))
}

fn span_of(loc: &Location) -> Option<SourceSpan> {
    let span = loc.span();
    let offset = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len().unwrap_or(0)).ok()?;
    Some(SourceSpan::new(offset.into(), len.max(1)))
}

fn at<T>(s: &Spanned<T>) -> Option<SourceSpan> {
    span_of(&s.referenced)
}

struct Validator<'a> {
    problems: Vec<Problem>,
    base: &'a Path,
    env: &'a dyn Env,
    scope: Scope,
}

impl Validator<'_> {
    fn push(&mut self, p: Problem) {
        self.problems.push(p);
    }

    fn plan(&mut self, raw: RawPlan, text: &str, path: &Path) -> Option<Plan> {
        if raw.version.value != 1 {
            self.push(
                Problem::new(
                    "etcdplan::plan_file::unsupported_version",
                    format!("plan file version {} is not supported", raw.version.value),
                    "this etcdplan reads `version: 1`; upgrade etcdplan or write the plan in version 1",
                )
                .label(at(&raw.version), "only 1 is supported"),
            );
        }
        let source = self.side(raw.source, SideRole::Source);
        let destination = self.side(raw.destination, SideRole::Destination);
        let mappings = self.mappings(&raw.prefixes);
        let sensitive = raw
            .sensitive
            .iter()
            .filter_map(|s| self.key(s, "sensitive prefix"))
            .collect();
        if let (Some(src), Some(dst), Some(maps)) = (&source, &destination, &mappings) {
            self.onto_itself(src, dst, maps);
        }
        if let (Some(src), Some(d)) = (&source, &raw.delete_source)
            && src.snapshot.is_some()
            && d.value
        {
            self.push(
                Problem::new(
                    "etcdplan::plan_file::snapshot_move",
                    "`delete_source: true` with a snapshot source: a snapshot file is never written",
                    "copy from the snapshot without move mode; to delete keys from a live cluster, make it the source",
                )
                .label(at(d), "move mode here"),
            );
        }
        Some(Plan {
            path: path.to_path_buf(),
            text: Arc::from(text),
            file_sha256: hex::encode(Sha256::digest(text.as_bytes())),
            name: raw.name.map(|n| n.value),
            source: source?,
            destination: destination?,
            mappings: mappings?.into_iter().map(|m| m.mapping).collect(),
            prune: raw.prune.is_some_and(|p| p.value),
            delete_source: raw.delete_source.is_some_and(|d| d.value),
            leases: raw.leases.map(|l| l.value).unwrap_or_default(),
            on_conflict: raw.on_conflict.map_or(OnConflict::Fail, |c| c.value),
            sensitive,
        })
    }

    /// Decodes a key prefix written with the `\xNN` escapes.
    fn key(&mut self, s: &Spanned<String>, what: &str) -> Option<Vec<u8>> {
        match parse_key(&s.value) {
            Ok(k) => Some(k),
            Err(e) => {
                self.push(
                    Problem::new(
                        "etcdplan::plan_file::bad_key_escape",
                        format!("this {what} is not a valid key: {e}"),
                        r"write a raw byte as \xNN and a backslash as \\, in a plain or single-quoted YAML string",
                    )
                    .label(at(s), "bad escape"),
                );
                None
            }
        }
    }

    fn side(&mut self, raw: RawSide, role: SideRole) -> Option<SideConfig> {
        if raw.snapshot.is_some() || raw.revision.is_some() {
            return self.snapshot_side(raw, role);
        }
        let before = self.problems.len();
        let Some(raw_endpoints) = &raw.endpoints else {
            self.push(Problem::new(
                "etcdplan::plan_file::no_endpoints",
                format!("the {role} has no `endpoints`"),
                "list the client URLs of the cluster's members, e.g. endpoints: [https://10.0.0.5:2379] (a source may instead read a `snapshot` file)",
            ));
            return None;
        };
        if raw_endpoints.value.is_empty() {
            self.push(
                Problem::new(
                    "etcdplan::plan_file::no_endpoints",
                    format!("the {role} has no endpoints"),
                    "list the client URLs of the cluster's members, e.g. [https://10.0.0.5:2379]",
                )
                .label(at(raw_endpoints), "empty list"),
            );
        }
        let mut endpoints = Vec::new();
        let mut schemes = HashSet::new();
        for ep in &raw_endpoints.value {
            if let Some((url, tls)) = self.endpoint(ep, role) {
                schemes.insert(tls);
                endpoints.push(url);
            }
        }
        if schemes.len() > 1 {
            self.push(
                Problem::new(
                    "etcdplan::plan_file::mixed_schemes",
                    format!("the {role} mixes http:// and https:// endpoints"),
                    "a side is either plaintext or TLS, never both: use https:// for every member of a TLS cluster",
                )
                .label(at(raw_endpoints), "both schemes here"),
            );
        }
        let uses_tls = schemes.contains(&true);
        let tls = match raw.tls {
            Some(tls) if !uses_tls && !schemes.is_empty() => {
                self.push(
                    Problem::new(
                        "etcdplan::plan_file::tls_without_https",
                        format!("the {role} has a `tls` section but its endpoints are http://"),
                        "http:// is plaintext and never uses TLS: change the endpoints to https://, or remove the `tls` section",
                    )
                    .label(at(&tls), "TLS settings for a plaintext endpoint"),
                );
                None
            }
            Some(tls) => self.tls(tls.value, role),
            None => None,
        };
        let auth = raw.auth.and_then(|a| self.auth(a, role));
        let api = raw.api.as_ref().map(|a| a.value).unwrap_or_default();
        if api == Api::V2
            && let Some(name) = tls.as_ref().and_then(|t| t.server_name.as_ref())
        {
            self.push(Problem::new(
                "etcdplan::plan_file::v2_server_name",
                format!("the {role} speaks `api: v2`, which does not support `tls.server_name` ({name})"),
                "use an endpoint whose host the server certificate names, or the v3 API",
            ).label(raw.api.as_ref().and_then(at), "v2 here"));
        }
        (self.problems.len() == before).then_some(SideConfig {
            role,
            endpoints,
            uses_tls,
            api,
            tls,
            auth,
            snapshot: None,
        })
    }

    /// Returns the normalised URL and whether it is TLS.
    fn endpoint(&mut self, ep: &Spanned<String>, role: SideRole) -> Option<(String, bool)> {
        // Messages never echo a `user:password@` part.
        let shown = crate::escape::redact_url(&ep.value);
        let problem = |msg: String, help: &str| {
            Problem::new("etcdplan::plan_file::bad_endpoint", msg, help)
                .label(at(ep), "this endpoint")
        };
        let url = match url::Url::parse(&ep.value) {
            Ok(u) => u,
            Err(e) => {
                self.push(problem(
                    format!("{role} endpoint `{}` is not a URL: {e}", shown),
                    "write endpoints as http://HOST:PORT or https://HOST:PORT",
                ));
                return None;
            }
        };
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            other => {
                self.push(problem(
                    format!("{role} endpoint `{}` uses the scheme `{other}`", shown),
                    "etcdplan speaks to etcd over http:// (plaintext) or https:// (TLS) only",
                ));
                return None;
            }
        };
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            self.push(problem(
                format!("{role} endpoint `{}` has no host", shown),
                "write endpoints as http://HOST:PORT or https://HOST:PORT",
            ));
            return None;
        };
        if !url.username().is_empty() || url.password().is_some() {
            self.push(problem(
                format!("{role} endpoint `{}` carries credentials", shown),
                "never put credentials in a URL: use `auth.username` and `auth.password_env`",
            ));
            return None;
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            self.push(problem(
                format!("{role} endpoint `{}` has a path or query", shown),
                "an etcd endpoint is only scheme, host and port, e.g. https://10.0.0.5:2379",
            ));
            return None;
        }
        // Without an explicit port the URL would default to 80/443, never etcd's 2379.
        let Some(port) = url.port() else {
            self.push(problem(
                format!("{role} endpoint `{}` has no port", shown),
                "add the client port explicitly, e.g. :2379",
            ));
            return None;
        };
        Some((format!("{}://{host}:{port}", url.scheme()), tls))
    }

    fn tls(&mut self, raw: RawTls, role: SideRole) -> Option<TlsConfig> {
        let ca = raw
            .ca
            .as_ref()
            .and_then(|p| self.pem(p, role, "ca", Expect::Certificate));
        let identity = match (&raw.cert, &raw.key) {
            (Some(cert), Some(key)) => {
                let cert = self.pem(cert, role, "cert", Expect::Certificate);
                let key = self.pem(key, role, "key", Expect::PrivateKey);
                Some(Identity {
                    cert: cert?,
                    key: key?,
                })
            }
            (Some(cert), None) => {
                self.push(
                    Problem::new(
                        "etcdplan::plan_file::cert_without_key",
                        format!("the {role} `tls.cert` has no `tls.key`"),
                        "a client certificate needs its private key: add `key:` with the key file, or remove `cert:`",
                    )
                    .label(at(cert), "certificate without a key"),
                );
                None
            }
            (None, Some(key)) => {
                self.push(
                    Problem::new(
                        "etcdplan::plan_file::key_without_cert",
                        format!("the {role} `tls.key` has no `tls.cert`"),
                        "a private key needs its client certificate: add `cert:` with the certificate file, or remove `key:`",
                    )
                    .label(at(key), "key without a certificate"),
                );
                None
            }
            (None, None) => None,
        };
        let server_name = match raw.server_name {
            Some(s) if s.value.trim().is_empty() => {
                self.push(
                    Problem::new(
                        "etcdplan::plan_file::bad_server_name",
                        format!("the {role} `tls.server_name` is empty"),
                        "give the DNS name in the server certificate, or remove `server_name`",
                    )
                    .label(at(&s), "empty"),
                );
                None
            }
            Some(s) => Some(s.value),
            None => None,
        };
        Some(TlsConfig {
            ca,
            identity,
            server_name,
        })
    }

    fn pem(
        &mut self,
        path: &Spanned<String>,
        role: SideRole,
        field: &str,
        expect: Expect,
    ) -> Option<PemFile> {
        let resolved: PathBuf = self.base.join(&path.value);
        if self.scope == Scope::File {
            return Some(PemFile {
                path: resolved,
                pem: Vec::new(),
            });
        }
        let problem = |code, msg: String, help: String, label: &str| {
            Problem::new(code, msg, help).label(at(path), label)
        };
        let bytes = match crate::files::read_capped(&resolved, crate::files::PEM_CAP) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.push(problem(
                    "etcdplan::plan_file::tls_file_missing",
                    format!(
                        "the {role} `tls.{field}` file {} does not exist",
                        crate::escape::text(&resolved.display().to_string())
                    ),
                    format!(
                        "paths in a plan file are relative to the folder it is in, here {}: check the name there",
                        crate::escape::text(&crate::files::absolute(self.base).display().to_string())
                    ),
                    "no such file",
                ));
                return None;
            }
            Err(e) => {
                self.push(problem(
                    "etcdplan::plan_file::tls_file_unreadable",
                    format!(
                        "the {role} `tls.{field}` file {} cannot be read: {e}",
                        resolved.display()
                    ),
                    "name a readable regular file of at most 1 MiB (not a device, folder or FIFO), readable by the user running etcdplan".into(),
                    "cannot read",
                ));
                return None;
            }
        };
        let kinds: Vec<SectionKind> = <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes)
            .filter_map(Result::ok)
            .map(|(kind, _)| kind)
            .collect();
        let found = kinds
            .iter()
            .map(|k| format!("{k:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let ok = match expect {
            Expect::Certificate => kinds.contains(&SectionKind::Certificate),
            Expect::PrivateKey => kinds.iter().any(|k| {
                matches!(
                    k,
                    SectionKind::PrivateKey
                        | SectionKind::RsaPrivateKey
                        | SectionKind::EcPrivateKey
                )
            }),
        };
        if !ok {
            let what = match expect {
                Expect::Certificate => "a PEM certificate (BEGIN CERTIFICATE)",
                Expect::PrivateKey => "a PEM private key (BEGIN PRIVATE KEY, RSA or EC)",
            };
            let holds = if kinds.is_empty() {
                "no PEM block at all".to_string()
            } else {
                format!("only {found}")
            };
            self.push(problem(
                "etcdplan::plan_file::tls_file_wrong_kind",
                format!(
                    "the {role} `tls.{field}` file {} is not {what}: it holds {holds}",
                    resolved.display()
                ),
                format!("point `{field}` at {what}; certificates and keys are easy to swap"),
                "wrong kind of file",
            ));
            return None;
        }
        Some(PemFile {
            path: resolved,
            pem: bytes,
        })
    }

    fn auth(&mut self, raw: RawAuth, role: SideRole) -> Option<AuthConfig> {
        if raw.username.value.is_empty() {
            self.push(
                Problem::new(
                    "etcdplan::plan_file::empty_username",
                    format!("the {role} `auth.username` is empty"),
                    "give the etcd user name, or remove the `auth` section",
                )
                .label(at(&raw.username), "empty"),
            );
        }
        let var = &raw.password_env.value;
        let password = match self.scope {
            Scope::File => Some(String::new()),
            Scope::Environment => self.env.var(var),
        };
        match password {
            Some(password) => Some(AuthConfig {
                username: raw.username.value,
                password_env: var.clone(),
                password: Secret::new(password),
            }),
            None => {
                self.push(
                    Problem::new(
                        "etcdplan::plan_file::password_env_unset",
                        format!("the {role} password variable `{var}` is not set"),
                        format!(
                            "export {var} with the password of `{}` before running etcdplan; the password never goes in the file",
                            raw.username.value
                        ),
                    )
                    .label(at(&raw.password_env), "not set in the environment"),
                );
                None
            }
        }
    }

    /// Decodes and checks each mapping; keeps spans for the cross checks.
    fn mappings(&mut self, raw: &Spanned<Vec<RawMapping>>) -> Option<Vec<SpannedMapping>> {
        let before = self.problems.len();
        if raw.value.is_empty() {
            self.push(
                Problem::new(
                    "etcdplan::plan_file::no_prefixes",
                    "`prefixes` is empty: the plan would move nothing",
                    "add at least one mapping, e.g. `- from: /app/`",
                )
                .label(at(raw), "empty list"),
            );
        }
        let mut out = Vec::new();
        for m in &raw.value {
            if let Some(mapping) = self.mapping(m) {
                let from = m
                    .from
                    .as_ref()
                    .and_then(at)
                    .or(m.all_keys.as_ref().and_then(at));
                let to = m.to.as_ref().and_then(at).or(from);
                out.push(SpannedMapping { mapping, from, to });
            }
        }
        for (i, a) in out.iter().enumerate() {
            for b in &out[..i] {
                if prefixes_overlap(&a.mapping.to, &b.mapping.to) {
                    let p = Problem::new(
                        "etcdplan::plan_file::overlapping_to",
                        format!(
                            "two mappings write overlapping destination ranges `{}` and `{}`",
                            display_key(&b.mapping.to),
                            display_key(&a.mapping.to)
                        ),
                        "each destination key must come from one mapping: give the mappings destination prefixes that do not contain each other",
                    )
                    .label(b.to, "this range")
                    .label(a.to, "overlaps this one");
                    self.push(p);
                }
            }
        }
        (self.problems.len() == before).then_some(out)
    }

    fn mapping(&mut self, m: &RawMapping) -> Option<Mapping> {
        let from = match (&m.from, &m.all_keys) {
            (Some(from), Some(all)) if all.value => {
                self.push(
                    Problem::new(
                        "etcdplan::plan_file::from_and_all_keys",
                        "a mapping has both `from` and `all_keys: true`",
                        "keep `from` to move one prefix, or `all_keys: true` to move every key",
                    )
                    .label(at(from), "`from` here")
                    .label(at(all), "and `all_keys` here"),
                );
                return None;
            }
            (Some(from), _) if from.value.is_empty() => {
                self.push(
                    Problem::new(
                        "etcdplan::plan_file::empty_from",
                        "`from` is empty, which would take every key of the source",
                        "give the prefix to move; to move the whole keyspace on purpose, replace `from: \"\"` with `all_keys: true`",
                    )
                    .label(at(from), "empty prefix"),
                );
                return None;
            }
            (Some(from), _) => self.key(from, "`from` prefix")?,
            (None, Some(all)) if all.value => Vec::new(),
            (None, Some(all)) => {
                self.push(
                    Problem::new(
                        "etcdplan::plan_file::missing_field",
                        "a mapping has `all_keys: false` and no `from`",
                        "give the source prefix with `from:`",
                    )
                    .label(at(all), "no prefix"),
                );
                return None;
            }
            (None, None) => {
                self.push(Problem::new(
                    "etcdplan::plan_file::missing_field",
                    "a mapping has no `from`",
                    "give the source prefix with `from:`, or `all_keys: true` for the whole keyspace",
                ));
                return None;
            }
        };
        let to = match &m.to {
            Some(to) => self.key(to, "`to` prefix")?,
            None => from.clone(),
        };
        let mut exclude = Vec::new();
        for e in &m.exclude {
            let Some(key) = self.key(e, "`exclude` prefix") else {
                continue;
            };
            if !key.starts_with(&from) || key.len() == from.len() {
                let why = if key == from {
                    "it is `from` itself, so the mapping would move nothing"
                } else {
                    "it is not under `from`, so it excludes nothing"
                };
                self.push(
                    Problem::new(
                        "etcdplan::plan_file::exclude_outside_from",
                        format!(
                            "exclude `{}` is not inside `{}`: {why}",
                            e.value,
                            display_key(&from)
                        ),
                        "an exclusion is a longer prefix under its mapping's `from`, e.g. from: /app/ exclude: [/app/tmp/]",
                    )
                    .label(at(e), "not under `from`"),
                );
                continue;
            }
            exclude.push(key);
        }
        Some(Mapping { from, to, exclude })
    }

    /// Offline half of the same-cluster guard: when both sides share an
    /// endpoint, no mapping may write into a range some mapping reads. `plan`
    /// repeats this with the real cluster ids.
    fn onto_itself(&mut self, src: &SideConfig, dst: &SideConfig, maps: &[SpannedMapping]) {
        let shared = src.endpoints.iter().any(|e| dst.endpoints.contains(e));
        if !shared {
            return;
        }
        for m in maps {
            let read = maps
                .iter()
                .find(|f| prefixes_overlap(&f.mapping.from, &m.mapping.to));
            if let Some(read) = read {
                self.push(
                    Problem::new(
                        "etcdplan::plan_file::onto_itself",
                        format!(
                            "source and destination are the same cluster, and `{}` would be written into the range `{}` that is being read",
                            display_key(&m.mapping.to),
                            display_key(&read.mapping.from)
                        ),
                        "on one cluster, give `to` a prefix that does not overlap any `from` (e.g. from: /old/ to: /new/)",
                    )
                    .label(m.to, "destination range")
                    .label(read.from.filter(|s| Some(*s) != m.to), "source range"),
                );
            }
        }
    }
}

/// A decoded mapping with the spans of its `from` and `to`.
struct SpannedMapping {
    mapping: Mapping,
    from: Option<SourceSpan>,
    to: Option<SourceSpan>,
}

#[derive(Clone, Copy)]
enum Expect {
    Certificate,
    PrivateKey,
}
