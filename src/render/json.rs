//! The machine rendering. The same structs are the body of a saved plan, so
//! `--format json` and `plan --out` can never disagree. Keys that are not
//! UTF-8 appear as `key_base64` (and `source_key_base64`) instead.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::diff::{Action, Change, SourceDelete, Summary, Value};
use crate::plan::{ClusterInfo, MappingReport, PlanReport, UndoInfo};
use crate::planfile::LeaseMode;
use crate::spool::{Spool, SpoolWriter};

/// The version of the JSON document. 2: lease ids are strings of 16 hex
/// digits (numbers above 2^53 lose digits in most JSON readers).
pub const JSON_FORMAT_VERSION: &str = "2";

/// An id as the text shows it: 16 hex digits, as a JSON string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HexId(pub i64);

impl Serialize for HexId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:016x}", self.0))
    }
}

impl<'de> Deserialize<'de> for HexId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let ok =
            !text.is_empty() && text.len() <= 16 && text.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| u64::from_str_radix(&text, 16).ok())
            .flatten()
            .map(|v| HexId(v as i64))
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{}` is not an id of 16 hex digits",
                    crate::escape::text(&text.chars().take(40).collect::<String>())
                ))
            })
    }
}

/// The JSON document, format version [`JSON_FORMAT_VERSION`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JsonPlan {
    pub format_version: String,
    pub plan: JsonPlanFile,
    pub source: ClusterInfo,
    pub destination: ClusterInfo,
    pub summary: Summary,
    pub mappings: Vec<JsonMapping>,
    pub changes: JsonChanges,
    /// Move mode: source keys deleted once the copy is verified.
    #[serde(default, skip_serializing_if = "JsonSourceDeletes::is_empty")]
    pub source_deletes: JsonSourceDeletes,
    /// How leased keys are written: preserve, drop or skip.
    #[serde(default)]
    pub lease_mode: LeaseMode,
    /// The destination request limit the plan was checked against.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: u64,
    /// Keys whose write cannot fit one request under that limit, even alone:
    /// apply refuses the plan until the limit is raised.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub too_large: Vec<JsonTooLarge>,
    /// Present on an undo plan (`plan --undo`): `source` above is then the
    /// destination at the undone plan's revision, where values are read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<JsonUndo>,
    /// What a reviewer should hear although nothing is wrong.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<JsonWarning>,
}

/// One warning: `{"kind": "empty_source", "from": …, "message": …}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JsonWarning {
    pub kind: String,
    #[serde(flatten)]
    pub from: JsonKey<FromTag>,
    pub message: String,
}

/// The undo part of an undo plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JsonUndo {
    /// The original source cluster (move mode restores keys there).
    pub source_cluster_id: String,
    /// The source revision the undone plan read at.
    pub source_revision: i64,
    /// Move mode: source keys to put back, read at `source_revision`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restores: Vec<JsonChange>,
}

fn default_max_request_bytes() -> u64 {
    crate::etcd::write::DEFAULT_MAX_REQUEST_BYTES as u64
}

/// A key that cannot be written under the request limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonTooLarge {
    #[serde(flatten)]
    pub key: JsonKey<KeyTag>,
    pub value_size: u64,
}

/// Move mode: one source key to delete after the copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonSourceDelete {
    #[serde(flatten)]
    pub source_key: JsonKey<SourceKeyTag>,
    /// Where its value lives on the destination.
    #[serde(flatten)]
    pub key: JsonKey<KeyTag>,
    pub mapping: usize,
    /// The guard: the key's mod revision at the planned source revision.
    pub mod_revision: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
    /// Absent for a sensitive key: no digest of a secret leaves etcdplan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonPlanFile {
    pub name: Option<String>,
    pub path: String,
    pub file_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonMapping {
    #[serde(flatten)]
    pub from: JsonKey<FromTag>,
    #[serde(flatten)]
    pub to: JsonKey<ToTag>,
    pub summary: Summary,
}

/// One change. Values are never included, only their sha256 and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JsonChange {
    pub action: Action,
    #[serde(flatten)]
    pub key: JsonKey<KeyTag>,
    #[serde(flatten)]
    pub source_key: JsonKey<SourceKeyTag>,
    /// Index into `mappings`.
    pub mapping: usize,
    pub sensitive: bool,
    /// The source value to write (create, update) or that differs (conflict).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source_mod_revision: Option<i64>,
    /// The source lease the key is attached to, if any, as 16 hex digits.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source_lease: Option<HexId>,
    /// That lease's remaining TTL in seconds at plan time (-1: expired).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lease_ttl: Option<i64>,
    /// The destination state planned against: `null` means absent.
    pub destination_mod_revision: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub destination_value_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub destination_value_size: Option<u64>,
}

/// A change as read: the keys' text and base64 fields spelled out. A
/// flattened [`JsonKey`] would make serde gather every field of every
/// change into a map first (measured: about half the time of reading a
/// saved plan went there).
#[derive(Deserialize)]
struct WireChange<'a> {
    action: Action,
    // Borrowed where the reader allows it (a slice: see `saved::carve`).
    #[serde(default, borrow)]
    key: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    key_base64: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    source_key: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    source_key_base64: Option<Cow<'a, str>>,
    mapping: usize,
    sensitive: bool,
    #[serde(default)]
    value_sha256: Option<String>,
    #[serde(default)]
    value_size: Option<u64>,
    #[serde(default)]
    source_mod_revision: Option<i64>,
    #[serde(default)]
    source_lease: Option<HexId>,
    #[serde(default)]
    lease_ttl: Option<i64>,
    destination_mod_revision: Option<i64>,
    #[serde(default)]
    destination_value_sha256: Option<String>,
    #[serde(default)]
    destination_value_size: Option<u64>,
}

impl<'de> Deserialize<'de> for JsonChange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let w = WireChange::deserialize(d)?;
        Ok(JsonChange {
            action: w.action,
            key: JsonKey::from_fields(w.key, w.key_base64).map_err(D::Error::custom)?,
            source_key: JsonKey::from_fields(w.source_key, w.source_key_base64)
                .map_err(D::Error::custom)?,
            mapping: w.mapping,
            sensitive: w.sensitive,
            value_sha256: w.value_sha256,
            value_size: w.value_size,
            source_mod_revision: w.source_mod_revision,
            source_lease: w.source_lease,
            lease_ttl: w.lease_ttl,
            destination_mod_revision: w.destination_mod_revision,
            destination_value_sha256: w.destination_value_sha256,
            destination_value_size: w.destination_value_size,
        })
    }
}

/// Names the JSON fields of a key: `<name>` when UTF-8, `<name>_base64` otherwise.
pub trait KeyName {
    const TEXT: &'static str;
    const BASE64: &'static str;
}

macro_rules! key_tag {
    ($tag:ident, $text:literal, $b64:literal) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct $tag;
        impl KeyName for $tag {
            const TEXT: &'static str = $text;
            const BASE64: &'static str = $b64;
        }
    };
}
key_tag!(KeyTag, "key", "key_base64");
key_tag!(SourceKeyTag, "source_key", "source_key_base64");
key_tag!(FromTag, "from", "from_base64");
key_tag!(ToTag, "to", "to_base64");

/// Key bytes that serialise as text when they are UTF-8, base64 otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonKey<T> {
    pub bytes: Vec<u8>,
    tag: std::marker::PhantomData<T>,
}

impl<T> JsonKey<T> {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            tag: std::marker::PhantomData,
        }
    }
}

impl<T: KeyName> Serialize for JsonKey<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(1))?;
        match std::str::from_utf8(&self.bytes) {
            Ok(text) => map.serialize_entry(T::TEXT, text)?,
            Err(_) => map.serialize_entry(T::BASE64, &B64.encode(&self.bytes))?,
        }
        map.end()
    }
}

impl<T: KeyName> JsonKey<T> {
    /// The key from its text field, else its base64 one.
    fn from_fields<S: Into<String> + AsRef<str>>(
        text: Option<S>,
        base64: Option<S>,
    ) -> Result<Self, String> {
        match (text, base64) {
            (Some(text), _) => Ok(JsonKey::new(text.into().into_bytes())),
            (None, Some(b)) => B64
                .decode(b.as_ref())
                .map(JsonKey::new)
                .map_err(|e| format!("{}: {e}", T::BASE64)),
            (None, None) => Err(format!("missing `{}` or `{}`", T::TEXT, T::BASE64)),
        }
    }
}

impl<'de, T: KeyName> Deserialize<'de> for JsonKey<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut map = std::collections::BTreeMap::<String, serde_json::Value>::deserialize(d)?;
        let mut take = |name: &str| match map.remove(name) {
            Some(serde_json::Value::String(s)) => Some(s),
            _ => None,
        };
        let (text, base64) = (take(T::TEXT), take(T::BASE64));
        JsonKey::from_fields(text, base64).map_err(D::Error::custom)
    }
}

/// A value's digest for the JSON, never of a sensitive value.
fn sha(v: Option<&Value>, sensitive: bool) -> Option<String> {
    if sensitive {
        return None;
    }
    v.and_then(Value::sha256_hex)
}

/// A 64-hex-digit sha256 from an untrusted document.
fn parse_sha(hex: &str) -> Result<[u8; 32], String> {
    // Into the array directly: decoding into a Vec first cost a sixth of
    // the time of reading a saved plan.
    let mut out = [0u8; 32];
    const_hex::decode_to_slice(hex, &mut out)
        .ok()
        .map(|()| out)
        .ok_or_else(|| {
            format!(
                "`{}` is not a sha256 (64 hex digits)",
                crate::escape::text(&hex.chars().take(80).collect::<String>())
            )
        })
}

impl JsonChange {
    pub fn from_change(c: &Change, lease_ttls: &BTreeMap<i64, i64>) -> JsonChange {
        let (src, dst) = (c.source.as_ref(), c.destination.as_ref());
        let lease = src.map(|v| v.lease).filter(|&l| l != 0);
        JsonChange {
            source_lease: lease.map(HexId),
            lease_ttl: lease.and_then(|l| lease_ttls.get(&l).copied()),
            action: c.action,
            key: JsonKey::new(c.key.clone()),
            source_key: JsonKey::new(c.source_key.clone()),
            mapping: c.mapping,
            sensitive: c.sensitive,
            value_sha256: sha(src, c.sensitive),
            value_size: src.map(|v| v.size as u64),
            source_mod_revision: src.map(|v| v.mod_revision),
            destination_mod_revision: dst.map(|v| v.mod_revision),
            destination_value_sha256: sha(dst, c.sensitive),
            destination_value_size: dst.map(|v| v.size as u64),
        }
    }

    /// Back to a change, without any value bytes (saved plans hold none).
    /// By value: the keys move into the change (a saved plan's load makes
    /// one per entry, so copies count).
    pub fn into_change(self) -> Result<Change, String> {
        let lease = self.source_lease.map_or(0, |l| l.0);
        // A value is recorded by its mod revision; its digest is required
        // unless the key is sensitive (then none is kept).
        let value = |sha: &Option<String>,
                     size: Option<u64>,
                     rev: Option<i64>|
         -> Result<Option<Value>, String> {
            let Some(rev) = rev else {
                return match sha {
                    Some(_) => Err("a value_sha256 without its mod revision".into()),
                    None => Ok(None),
                };
            };
            let sha256 = match sha {
                Some(hex) => Some(parse_sha(hex)?),
                None if self.sensitive => None,
                None => {
                    return Err("a value of a key that is not sensitive needs its sha256".into());
                }
            };
            Ok(Some(Value {
                sha256,
                size: size.unwrap_or(0) as usize,
                mod_revision: rev,
                lease: 0,
                shown: None,
            }))
        };
        let destination = value(
            &self.destination_value_sha256,
            self.destination_value_size,
            self.destination_mod_revision,
        )?;
        // A conflict of an undo plan may be a key deleted since the apply.
        if matches!(self.action, Action::Update | Action::Delete) && destination.is_none() {
            return Err(format!(
                "a {:?} change needs the destination's planned state",
                self.action
            ));
        }
        let source = value(
            &self.value_sha256,
            self.value_size,
            self.source_mod_revision,
        )?
        .map(|v| Value { lease, ..v });
        if matches!(self.action, Action::Create | Action::Update) && source.is_none() {
            return Err(format!(
                "a {:?} change needs the source value's mod revision",
                self.action
            ));
        }
        Ok(Change {
            action: self.action,
            mapping: self.mapping,
            key: self.key.bytes,
            source_key: self.source_key.bytes,
            sensitive: self.sensitive,
            source,
            destination,
            payload: None,
        })
    }
}

impl JsonPlan {
    pub fn from_report(r: &PlanReport) -> JsonPlan {
        JsonPlan {
            format_version: JSON_FORMAT_VERSION.into(),
            plan: JsonPlanFile {
                name: r.name.clone(),
                path: r.plan_path.clone(),
                file_sha256: r.file_sha256.clone(),
            },
            source: r.source.clone(),
            destination: r.destination.clone(),
            summary: r.summary,
            mappings: r
                .mappings
                .iter()
                .map(|m| JsonMapping {
                    from: JsonKey::new(m.from.clone()),
                    to: JsonKey::new(m.to.clone()),
                    summary: m.summary,
                })
                .collect(),
            changes: JsonChanges {
                changes: r.changes.clone(),
                lease_ttls: r.lease_ttls.clone(),
                largest_write: r.largest_write,
            },
            warnings: crate::plan::warnings(r)
                .iter()
                .map(|w| JsonWarning {
                    kind: w.kind().into(),
                    from: JsonKey::new(w.from().to_vec()),
                    message: super::warning_words(w, |k| format!("`{k}`")),
                })
                .collect(),
            lease_mode: r.lease_mode,
            max_request_bytes: r.max_request_bytes as u64,
            undo: r.undo.as_ref().map(|u| JsonUndo {
                source_cluster_id: u.source_cluster_id.clone(),
                source_revision: u.source_revision,
                restores: u
                    .restores
                    .iter()
                    .map(|c| JsonChange::from_change(c, &BTreeMap::new()))
                    .collect(),
            }),
            too_large: r
                .too_large(r.max_request_bytes)
                .iter()
                .map(|c| JsonTooLarge {
                    key: JsonKey::new(c.key.clone()),
                    value_size: c.source.as_ref().map_or(0, |v| v.size) as u64,
                })
                .collect(),
            source_deletes: JsonSourceDeletes(r.source_deletes.clone()),
        }
    }

    pub fn to_report(&self) -> Result<PlanReport, String> {
        Ok(PlanReport {
            found: Vec::new(),
            name: self.plan.name.clone(),
            plan_path: self.plan.path.clone(),
            file_sha256: self.plan.file_sha256.clone(),
            source: self.source.clone(),
            destination: self.destination.clone(),
            mappings: self
                .mappings
                .iter()
                .map(|m| MappingReport {
                    from: m.from.bytes.clone(),
                    to: m.to.bytes.clone(),
                    summary: m.summary,
                })
                .collect(),
            changes: self.changes.changes.clone(),
            largest_write: self.changes.largest_write,
            source_deletes: self.source_deletes.0.clone(),
            summary: self.summary,
            // What the file claims: `saved::open` sets it once checked.
            summary_counted: false,
            lease_mode: self.lease_mode,
            max_request_bytes: usize::try_from(self.max_request_bytes).unwrap_or(usize::MAX),
            undo: match &self.undo {
                None => None,
                Some(u) => Some(UndoInfo {
                    source_cluster_id: u.source_cluster_id.clone(),
                    source_revision: u.source_revision,
                    restores: u
                        .restores
                        .iter()
                        .cloned()
                        .map(JsonChange::into_change)
                        .collect::<Result<_, _>>()?,
                }),
            },
            lease_ttls: self.changes.lease_ttls.clone(),
        })
    }
}

/// Renders a plan as one pretty JSON object with a trailing newline.
pub fn render_json(report: &PlanReport) -> String {
    let mut out = Vec::new();
    if let Err(e) = write_json(report, &mut out) {
        return format!("{{\"error\": \"{e}\"}}\n");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// [`render_json`], streamed to `out`: the changes go from the spill file to
/// the writer one by one.
pub fn write_json(report: &PlanReport, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(out);
    crate::escape::to_json_writer_pretty(&mut out, &JsonPlan::from_report(report))?;
    out.write_all(b"\n")?;
    out.flush()?;
    report.changes.check()?;
    report.source_deletes.check()
}

/// A plan's changes in JSON: streamed from the spill file when written, and
/// spilled record by record when read, so neither direction holds them all.
#[derive(Debug, Clone, Default)]
pub struct JsonChanges {
    pub changes: Spool<Change>,
    /// Remaining TTL at plan time of each source lease a change carries.
    pub lease_ttls: BTreeMap<i64, i64>,
    /// The largest single write, in request bytes.
    pub largest_write: usize,
}

impl Serialize for JsonChanges {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.changes
                .iter()
                .map(|c| JsonChange::from_change(&c, &self.lease_ttls)),
        )
    }
}

impl<'de> Deserialize<'de> for JsonChanges {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = JsonChanges;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of changes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<JsonChanges, A::Error> {
                use serde::de::Error;
                let mut out = ChangesBuilder::default();
                while let Some(c) = seq.next_element::<JsonChange>()? {
                    out.push(c).map_err(A::Error::custom)?;
                }
                out.finish().map_err(A::Error::custom)
            }
        }
        d.deserialize_seq(Visit)
    }
}

/// Move mode's source deletes in JSON, streamed like [`JsonChanges`].
#[derive(Debug, Clone, Default)]
pub struct JsonSourceDeletes(pub Spool<SourceDelete>);

impl JsonSourceDeletes {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for JsonSourceDeletes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|d| JsonSourceDelete {
            source_key: JsonKey::new(d.source_key.clone()),
            key: JsonKey::new(d.key.clone()),
            mapping: d.mapping,
            mod_revision: d.mod_revision,
            sensitive: d.sensitive,
            value_sha256: if d.sensitive {
                None
            } else {
                d.sha256.map(hex::encode)
            },
        }))
    }
}

impl<'de> Deserialize<'de> for JsonSourceDeletes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = JsonSourceDeletes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of source deletes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<JsonSourceDeletes, A::Error> {
                use serde::de::Error;
                let mut out = DeletesBuilder::default();
                while let Some(d) = seq.next_element::<JsonSourceDelete>()? {
                    out.push(d).map_err(A::Error::custom)?;
                }
                out.finish().map_err(A::Error::custom)
            }
        }
        d.deserialize_seq(Visit)
    }
}

/// Gathers a plan's changes as they are read, one at a time, into a spill
/// file (for the list visitor above and for `saved::carve`).
#[derive(Default)]
pub struct ChangesBuilder {
    out: SpoolWriter<Change>,
    lease_ttls: BTreeMap<i64, i64>,
    largest_write: usize,
}

impl ChangesBuilder {
    pub fn push(&mut self, c: JsonChange) -> Result<(), String> {
        self.push_with(c, |_| {})
    }

    /// [`ChangesBuilder::push`], showing `seen` each change as it is made.
    pub fn push_with<T>(
        &mut self,
        c: JsonChange,
        seen: impl FnOnce(&Change) -> T,
    ) -> Result<(), String> {
        if let (Some(lease), Some(ttl)) = (c.source_lease, c.lease_ttl) {
            self.lease_ttls.insert(lease.0, ttl);
        }
        let change = c.into_change()?;
        seen(&change);
        self.largest_write = self.largest_write.max(change.write_bytes());
        self.out.push(&change).map_err(|e| e.to_string())
    }

    pub fn finish(self) -> Result<JsonChanges, String> {
        Ok(JsonChanges {
            changes: self.out.finish().map_err(|e| e.to_string())?,
            lease_ttls: self.lease_ttls,
            largest_write: self.largest_write,
        })
    }
}

/// Gathers move mode's source deletes as they are read, like [`ChangesBuilder`].
#[derive(Default)]
pub struct DeletesBuilder(SpoolWriter<SourceDelete>);

impl DeletesBuilder {
    pub fn push(&mut self, d: JsonSourceDelete) -> Result<(), String> {
        self.push_with(d, |_| {})
    }

    /// [`DeletesBuilder::push`], showing `seen` each delete as it is made.
    pub fn push_with<T>(
        &mut self,
        d: JsonSourceDelete,
        seen: impl FnOnce(&SourceDelete) -> T,
    ) -> Result<(), String> {
        let sha256 = match &d.value_sha256 {
            Some(hex) => Some(parse_sha(hex)?),
            None if d.sensitive => None,
            None => {
                return Err(
                    "a source delete of a key that is not sensitive needs its value_sha256".into(),
                );
            }
        };
        let delete = SourceDelete {
            mapping: d.mapping,
            source_key: d.source_key.bytes,
            key: d.key.bytes,
            sensitive: d.sensitive,
            mod_revision: d.mod_revision,
            sha256,
        };
        seen(&delete);
        self.0.push(&delete).map_err(|e| e.to_string())
    }

    pub fn finish(self) -> Result<JsonSourceDeletes, String> {
        Ok(JsonSourceDeletes(
            self.0.finish().map_err(|e| e.to_string())?,
        ))
    }
}
