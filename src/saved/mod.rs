//! Saved plans (`plan --out FILE`): the reviewed changes, for an exact apply
//! later. A saved plan is an untrusted artifact: whoever can edit a CI
//! artifact can edit it. So it steers nothing by itself:
//!
//! - the plan file on disk is the authority: its endpoints, TLS, auth and
//!   rules are used, and its sha256 must be the one the saved plan records
//!   ([`open`]);
//! - every change is checked against that file's rules before any write
//!   ([`verify`]);
//! - with `ETCDPLAN_SIGNING_KEY` set, it must carry a valid HMAC ([`sign`]).
//!
//! It holds both cluster ids, the pinned source revision, and for every
//! change its key, action, the destination state it was planned against and
//! the sha256 of the value to write, except for sensitive keys, which carry
//! no digest at all (their mod revisions identify their values).

pub mod carve;
pub mod sign;
pub mod since;
pub mod verify;

use std::path::{Path, PathBuf};

use miette::Diagnostic;
use serde::{Deserialize, Serialize};

use crate::plan::PlanReport;
use crate::planfile::{Env, Plan, PlanFileError};
use crate::render::JsonPlan;

/// The `kind` that marks a saved plan.
pub const KIND: &str = "etcdplan-saved-plan";
/// Version 2: no plan file text inside, no digests of sensitive values, an
/// optional signature.
pub const FORMAT_VERSION: u32 = 3;

/// A saved plan file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedPlan {
    pub kind: String,
    /// `hmac-sha256:<64 hex digits>` when signed (see [`sign`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    pub saved_format_version: u32,
    pub etcdplan_version: String,
    pub report: JsonPlan,
}

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum SavedPlanError {
    #[error("cannot read saved plan {}", path.display())]
    #[diagnostic(code(etcdplan::saved_plan::read), help("check the path"))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write saved plan {}", path.display())]
    #[diagnostic(
        code(etcdplan::saved_plan::write),
        help("check that the folder exists and is writable")
    )]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} is not a saved plan: {why}", path.display())]
    #[diagnostic(
        code(etcdplan::saved_plan::invalid),
        help(
            "saved plans are written by `etcdplan plan --out FILE`; a plan file (YAML) is given as is"
        )
    )]
    Invalid { path: PathBuf, why: String },

    #[error("{} was saved in format {found}; this etcdplan reads format {FORMAT_VERSION}", path.display())]
    #[diagnostic(
        code(etcdplan::saved_plan::old_format),
        help(
            "plan again with this etcdplan (`etcdplan plan PLAN.yaml --out FILE`) and review that plan"
        )
    )]
    OldFormat { path: PathBuf, found: u32 },

    #[error("the plan file {} changed since this plan was made; plan again", crate::escape::text(&plan_file.display().to_string()))]
    #[diagnostic(
        code(etcdplan::saved_plan::plan_file_changed),
        help(
            "a saved plan is applied only with the very plan file it was made from (sha256 {}, found {}); run `etcdplan plan` on the current file and review that plan",
            crate::render::short_hex(expected),
            crate::render::short_hex(found)
        )
    )]
    PlanFileChanged {
        plan_file: PathBuf,
        expected: String,
        found: String,
    },

    #[error("the plan file {} that this saved plan was made from is not there (looked for {})", crate::escape::text(&plan_file.display().to_string()), crate::escape::text(&crate::files::absolute(plan_file).display().to_string()))]
    #[diagnostic(
        code(etcdplan::saved_plan::plan_file_missing),
        help(
            "a saved plan is applied with its plan file: run from the folder `plan` ran in (the recorded path is relative to it), or name the file with --plan-file"
        )
    )]
    PlanFileMissing { plan_file: PathBuf },

    #[error(transparent)]
    #[diagnostic(transparent)]
    PlanFile(#[from] PlanFileError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Tampered(#[from] verify::Tampered),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Signature(#[from] sign::SignatureError),
}

impl SavedPlan {
    pub fn new(report: &PlanReport) -> SavedPlan {
        SavedPlan {
            kind: KIND.into(),
            signature: None,
            saved_format_version: FORMAT_VERSION,
            etcdplan_version: env!("CARGO_PKG_VERSION").into(),
            report: JsonPlan::from_report(report),
        }
    }

    /// Writes the saved plan atomically, signed when `key` is given: into a
    /// temp file created exclusively in the target's folder (so nothing
    /// planted there is followed), then renamed over the target.
    pub fn write(&self, path: &Path, key: Option<&sign::SigningKey>) -> Result<(), SavedPlanError> {
        let err = |source| SavedPlanError::Write {
            path: path.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".etcdplan-saved-")
            .tempfile_in(dir)
            .map_err(err)?;
        // Streamed: the changes go from the spill file to the saved plan.
        sign::write_signed(self, tmp.as_file_mut(), key).map_err(err)?;
        self.report.changes.changes.check().map_err(err)?;
        self.report.source_deletes.0.check().map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(path).map_err(|e| err(e.error))?;
        Ok(())
    }

    pub fn read(path: &Path) -> Result<SavedPlan, SavedPlanError> {
        Self::read_checked(path, Box::new(|_| None)).map(|(saved, _)| saved)
    }

    /// [`SavedPlan::read`], each entry checked as it is read by the
    /// verifier that `on_head` makes from the file's head, if any.
    fn read_checked(
        path: &Path,
        on_head: carve::OnHead<'_>,
    ) -> Result<(SavedPlan, Option<Box<verify::Verifier>>), SavedPlanError> {
        let read_err = |source| SavedPlanError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = crate::files::open_regular(path).map_err(read_err)?;
        let invalid = |why: String| SavedPlanError::Invalid {
            path: path.to_path_buf(),
            why,
        };
        // Carved: each entry is parsed from a slice and spilled (see carve).
        let (saved, verifier) = carve::saved_plan_checked(file, on_head).map_err(|e| match e {
            carve::CarveError::Read(source) => read_err(source),
            other => invalid(crate::escape::text(&other.to_string())),
        })?;
        if saved.kind != KIND {
            return Err(invalid(format!(
                "its kind is `{}`",
                crate::escape::text(&saved.kind)
            )));
        }
        if saved.saved_format_version != FORMAT_VERSION {
            return Err(SavedPlanError::OldFormat {
                path: path.to_path_buf(),
                found: saved.saved_format_version,
            });
        }
        Ok((saved, verifier))
    }

    /// Whether a file is a saved plan, judged by its content (a JSON object
    /// naming our `kind` near its start), not by its name. Only the file's
    /// head is read: saved plans are written with `kind` first, and a tool
    /// that sorts the keys still leaves it before the long `report`.
    pub fn is_saved_plan(path: &Path) -> bool {
        use std::io::Read;
        let Ok(file) = crate::files::open_regular(path) else {
            return false;
        };
        let mut head = Vec::new();
        if file.take(4096).read_to_end(&mut head).is_err() {
            return false;
        }
        let text = String::from_utf8_lossy(&head);
        text.trim_start().starts_with('{') && text.contains(&format!("\"{KIND}\""))
    }

    pub fn to_report(&self, path: &Path) -> Result<PlanReport, SavedPlanError> {
        self.report
            .to_report()
            .map_err(|why| SavedPlanError::Invalid {
                path: path.to_path_buf(),
                why,
            })
    }
}

/// From a saved plan's head: the plan file to check its entries against
/// (`plan_file`, or the path it records) and whether it is an undo plan as
/// far as the head tells (`undo` comes after the lists; when it does, the
/// early checks do not count and the entries are checked again).
fn head_of(head: &[u8], plan_file: Option<&Path>) -> Option<(PathBuf, bool)> {
    #[derive(Deserialize)]
    struct Head {
        report: HeadReport,
    }
    #[derive(Deserialize)]
    struct HeadReport {
        #[serde(default)]
        plan: Option<HeadPlan>,
        #[serde(default)]
        undo: Option<serde::de::IgnoredAny>,
    }
    #[derive(Deserialize)]
    struct HeadPlan {
        path: String,
    }
    let head: Head = serde_json::from_slice(head).ok()?;
    let path = match plan_file {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from(head.report.plan?.path),
    };
    Some((path, head.report.undo.is_some()))
}

/// A saved plan opened for apply or undo, with its authority.
pub struct Opened {
    /// The plan file on disk whose hash the saved plan records.
    pub plan: Plan,
    /// The saved changes, checked against that plan's rules.
    pub report: PlanReport,
}

/// Opens a saved plan for apply or undo: checks its signature when a key is
/// set, loads the plan file it was made from (`plan_file`, or the path it
/// records, resolved from the working folder as `plan` resolved it), checks
/// that file's hash, and checks every entry against its rules. Who reviews
/// sees the plan file's own name and endpoints, never the artifact's.
pub fn open(
    path: &Path,
    plan_file: Option<&Path>,
    env: &dyn Env,
    key: Option<&sign::SigningKey>,
) -> Result<Opened, SavedPlanError> {
    // The entries are checked as they are read when the plan file can be
    // loaded from the file's head; the plan so loaded is kept only if it is
    // the one named below, and its checks only if they hold for the report.
    // With a signing key, nothing the artifact names is opened before its
    // signature holds: only a plan file given on the command line is.
    let mut early: Option<(PathBuf, Plan)> = None;
    let on_head: carve::OnHead<'_> = Box::new(|head| {
        if key.is_some() && plan_file.is_none() {
            return None;
        }
        let (plan_path, undo) = head_of(head, plan_file)?;
        let plan = crate::planfile::load_with(&plan_path, env).ok()?;
        early = Some((plan_path, plan.clone()));
        Some(verify::Verifier::new(plan, undo))
    });
    let (saved, verifier) = SavedPlan::read_checked(path, on_head)?;
    sign::verify_file(path, saved.signature.as_deref(), key)?;
    let plan_path = match plan_file {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from(&saved.report.plan.path),
    };
    let plan = match early {
        Some((p, plan)) if p == plan_path => plan,
        _ => match crate::planfile::load_with(&plan_path, env) {
            Err(PlanFileError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Err(SavedPlanError::PlanFileMissing {
                    plan_file: plan_path,
                });
            }
            other => other?,
        },
    };
    if plan.file_sha256 != saved.report.plan.file_sha256 {
        return Err(SavedPlanError::PlanFileChanged {
            plan_file: plan_path,
            expected: saved.report.plan.file_sha256.clone(),
            found: plan.file_sha256.clone(),
        });
    }
    let mut report = saved.to_report(path)?;
    match verifier {
        Some(v)
            if v.plan().file_sha256 == plan.file_sha256 && v.undo() == report.undo.is_some() =>
        {
            tracing::debug!("the saved plan's entries were checked as it was read");
            v.finish(&report)?;
        }
        _ => {
            tracing::debug!("the saved plan's entries are checked in a second pass");
            verify::check(&plan, &report)?;
        }
    }
    // `check` matched the summary against the listed changes.
    report.summary_counted = true;
    report.name = match report.undo {
        Some(_) => Some(format!("undo of {}", plan.display_name())),
        None => plan.name.clone(),
    };
    report.plan_path = plan.path.display().to_string();
    // An undo plan's `source` is the destination, read at an earlier revision.
    report.source.endpoints = match report.undo {
        Some(_) => plan.destination.endpoints.clone(),
        None => plan.source.shown_endpoints(),
    };
    report.destination.endpoints = plan.destination.endpoints.clone();
    Ok(Opened { plan, report })
}
