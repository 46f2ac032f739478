//! Saved plans (`plan --out FILE`): the reviewed changes, for an exact apply
//! later. A saved plan holds the plan file's text (which never holds a
//! password), both cluster ids, the pinned source revision, and for every
//! change its key, action, the destination state it was planned against and
//! the sha256 of the value to write. It holds no values, so it is safe to
//! keep as a CI artifact.

use std::io::Write;
use std::path::{Path, PathBuf};

use miette::Diagnostic;
use serde::{Deserialize, Serialize};

use crate::plan::PlanReport;
use crate::planfile::Plan;
use crate::render::JsonPlan;

/// The `kind` that marks a saved plan.
pub const KIND: &str = "etcdplan-saved-plan";

/// A saved plan file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedPlan {
    pub kind: String,
    pub saved_format_version: u32,
    pub etcdplan_version: String,
    /// The plan file's text, validated again on apply.
    pub plan_file_text: String,
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
}

impl SavedPlan {
    pub fn new(plan: &Plan, report: &PlanReport) -> SavedPlan {
        SavedPlan {
            kind: KIND.into(),
            saved_format_version: 1,
            etcdplan_version: env!("CARGO_PKG_VERSION").into(),
            plan_file_text: plan.text.to_string(),
            report: JsonPlan::from_report(report),
        }
    }

    /// Writes the saved plan atomically (temp file, then rename), so a crash
    /// never leaves half a plan behind.
    pub fn write(&self, path: &Path) -> Result<(), SavedPlanError> {
        let err = |source| SavedPlanError::Write {
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension("tmp-etcdplan");
        // Streamed: the changes go from the spill file to the saved plan.
        let write = || -> std::io::Result<()> {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            serde_json::to_writer_pretty(&mut out, self)?;
            out.write_all(b"\n")?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            self.report.changes.changes.check()?;
            self.report.source_deletes.0.check()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(e));
        }
        std::fs::rename(&tmp, path).map_err(err)
    }

    pub fn read(path: &Path) -> Result<SavedPlan, SavedPlanError> {
        let file = std::fs::File::open(path).map_err(|source| SavedPlanError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |why: String| SavedPlanError::Invalid {
            path: path.to_path_buf(),
            why,
        };
        // Streamed: each change is spilled as it is parsed.
        let saved: SavedPlan =
            serde_json::from_reader(std::io::BufReader::with_capacity(256 << 10, file))
                .map_err(|e| invalid(e.to_string()))?;
        if saved.kind != KIND {
            return Err(invalid(format!("its kind is `{}`", saved.kind)));
        }
        if saved.saved_format_version != 1 {
            return Err(invalid(format!(
                "saved format version {} is not supported by this etcdplan",
                saved.saved_format_version
            )));
        }
        Ok(saved)
    }

    /// Whether a file is a saved plan, judged by its content (a JSON object
    /// whose `kind` is ours), not by its name. Only the file's head is read:
    /// saved plans are written with `kind` first.
    pub fn is_saved_plan(path: &Path) -> bool {
        use std::io::Read;
        let Ok(file) = std::fs::File::open(path) else {
            return false;
        };
        let mut head = Vec::new();
        if file.take(4096).read_to_end(&mut head).is_err() {
            return false;
        }
        let text = String::from_utf8_lossy(&head);
        let Some(rest) = text.trim_start().strip_prefix('{') else {
            return false;
        };
        let Some(rest) = rest.trim_start().strip_prefix("\"kind\"") else {
            return false;
        };
        let Some(rest) = rest.trim_start().strip_prefix(':') else {
            return false;
        };
        rest.trim_start().starts_with(&format!("\"{KIND}\""))
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
