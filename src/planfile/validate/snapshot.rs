//! The snapshot form of a source side: `source: { snapshot: FILE,
//! revision: R }`, a file and nothing that only a live cluster has.

use super::{Problem, Scope, Validator, at};
use crate::planfile::raw::{Api, RawSide};
use crate::planfile::{SideConfig, SideRole};

impl Validator<'_> {
    /// `source: { snapshot: FILE, revision: R }`: a file, and nothing that
    /// only a live cluster has.
    pub(super) fn snapshot_side(&mut self, raw: RawSide, role: SideRole) -> Option<SideConfig> {
        let before = self.problems.len();
        let problem = |code, msg: String, help: &str| Problem::new(code, msg, help);
        let Some(file) = &raw.snapshot else {
            let p = problem(
                "etcdplan::plan_file::revision_without_snapshot",
                format!("the {role} has a `revision` but no `snapshot`"),
                "`revision` picks a revision of a snapshot file; a live source is read at its newest revision",
            );
            self.push(p.label(raw.revision.as_ref().and_then(at), "here"));
            return None;
        };
        let not_with = |what: &str| {
            problem(
                "etcdplan::plan_file::snapshot_and_cluster",
                format!("the {role} reads a `snapshot` file and also has `{what}`"),
                "a snapshot source is only a file (and optionally a `revision`): remove the cluster settings, or remove `snapshot`",
            )
        };
        if role == SideRole::Destination {
            let p = problem(
                "etcdplan::plan_file::snapshot_destination",
                "the destination cannot be a snapshot file".into(),
                "etcdplan writes to a live cluster: name its `endpoints`; a snapshot can only be a source",
            );
            self.push(p.label(at(file), "a snapshot here"));
        }
        if let Some(e) = &raw.endpoints {
            self.push(not_with("endpoints").label(at(e), "here"));
        }
        if let Some(t) = &raw.tls {
            self.push(not_with("tls").label(at(t), "here"));
        }
        if let Some(a) = &raw.auth {
            self.push(not_with("auth").label(at(&a.username), "here"));
        }
        if let Some(a) = &raw.api {
            self.push(not_with("api").label(at(a), "here"));
        }
        if let Some(r) = &raw.revision
            && r.value < 1
        {
            let p = problem(
                "etcdplan::plan_file::bad_revision",
                format!("the {role} `revision` is {}; revisions start at 1", r.value),
                "give a revision the snapshot holds (`etcdplan check` shows its range), or leave it out for the newest",
            );
            self.push(p.label(at(r), "here"));
        }
        let path = self.base.join(&file.value);
        if self.scope == Scope::Environment && !path.is_file() {
            let p = problem(
                "etcdplan::plan_file::snapshot_missing",
                format!(
                    "the {role} snapshot {} is not a file",
                    crate::escape::text(&path.display().to_string())
                ),
                "paths in a plan file are relative to the folder it is in; name the file `etcdctl snapshot save` wrote",
            );
            self.push(p.label(at(file), "no such file"));
        }
        (self.problems.len() == before).then_some(SideConfig {
            role,
            endpoints: Vec::new(),
            uses_tls: false,
            api: Api::V3,
            tls: None,
            auth: None,
            snapshot: Some(crate::planfile::SnapshotSource {
                path,
                revision: raw.revision.map(|r| r.value),
            }),
        })
    }
}
