//! Undo plans (`plan --undo SAVED_PLAN`): the exact inverse of an applied
//! saved plan, rebuilt from the destination's own history. etcd keeps every
//! earlier value until it compacts, so no copy of the overwritten values is
//! needed: each key the apply created is deleted, each key it updated gets
//! its earlier value back, each key it pruned is put back (with its earlier
//! lease while that lease lives). Move mode also restores the source keys
//! the apply deleted, from the source's history.
//!
//! A key is undone only while it still holds exactly what the apply wrote
//! (checked by hash now, then guarded by its current mod revision when the
//! undo is applied). A key changed since is left alone and listed as a
//! conflict, and applying the undo exits 3, like any stale plan.

use std::collections::BTreeMap;
use std::sync::Arc;

use miette::Diagnostic;

use crate::diff::{Action, Change, Summary, Value, digest};
use crate::etcd::info::lease_ttl;
use crate::etcd::write::{DEFAULT_MAX_REQUEST_BYTES, read_entries};
use crate::etcd::{Entry, EtcdError, Side};
use crate::keys::display_key;
use crate::plan::{ClusterInfo, MappingReport, PlanReport, UndoInfo, cluster_head};
use crate::planfile::{Plan, SideRole};
use crate::spool::Spool;

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum UndoError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Etcd(#[from] EtcdError),

    #[error(
        "the {side}'s history at revision {revision} has been compacted: the values the apply replaced are gone, so it can no longer be undone"
    )]
    #[diagnostic(
        code(etcdplan::undo::compacted),
        help(
            "an undo is possible until the {side} compacts past the applied plan's revision (etcd's --auto-compaction-* settings, or the Kubernetes API server's periodic compaction); restore from a backup instead"
        )
    )]
    Compacted { side: SideRole, revision: i64 },

    #[error(
        "the {side} cluster is {found}, but the applied plan was made against {}",
        crate::escape::text(expected)
    )]
    #[diagnostic(
        code(etcdplan::undo::cluster_mismatch),
        help("an undo is planned against the clusters the undone plan was applied to")
    )]
    ClusterMismatch {
        side: &'static str,
        expected: String,
        found: String,
    },

    #[error("this saved plan is itself an undo plan")]
    #[diagnostic(
        code(etcdplan::undo::undo_of_undo),
        help(
            "to migrate again after an undo, run `etcdplan plan` on the plan file; an undo is not undone"
        )
    )]
    UndoOfUndo,

    #[error(
        "`{}` at revision {revision} does not hold the value the saved plan recorded there",
        display_key(key)
    )]
    #[diagnostic(
        code(etcdplan::undo::history_mismatch),
        help(
            "the saved plan does not describe this cluster's history (was it edited, or made against a restored cluster?); nothing was planned"
        )
    )]
    HistoryMismatch { key: Vec<u8>, revision: i64 },
}

/// A value as a change records it (hash, size, revision, lease; no bytes).
fn value_of(e: &Entry) -> Value {
    Value {
        sha256: Some(digest(&e.value)),
        size: e.value.len(),
        mod_revision: e.mod_revision,
        lease: e.lease,
        shown: None,
    }
}

/// Reads `keys` on `side` at `revision`, naming a compacted revision as the
/// end of undo rather than as a plain read failure.
async fn read_at(
    side: &Arc<Side>,
    keys: &[Vec<u8>],
    revision: i64,
) -> Result<Vec<Option<Entry>>, UndoError> {
    match read_entries(side, keys, revision).await {
        Err(EtcdError::Compacted { side, .. }) => Err(UndoError::Compacted { side, revision }),
        other => Ok(other?),
    }
}

/// The inverse of one applied change, from the key's value `before` the
/// apply (at the recorded revision) and its value `now`. `None`: nothing to
/// undo (the apply never changed it, or it was undone already).
fn invert(applied: &Change, before: Option<&Entry>, now: Option<&Entry>) -> Option<Change> {
    let wrote = applied.source.as_ref().and_then(|v| v.sha256);
    let now_sha = now.map(|e| digest(&e.value));
    let before_sha = before.map(|e| digest(&e.value));
    let change = |action: Action, source: Option<&Entry>| Change {
        action,
        mapping: applied.mapping,
        key: applied.key.clone(),
        // Values come from the destination's own history: the same key.
        source_key: applied.key.clone(),
        sensitive: applied.sensitive,
        source: source.map(value_of),
        destination: now.map(value_of),
        payload: None,
    };
    match applied.action {
        Action::Create | Action::Update => {
            if now_sha.is_some() && now_sha == wrote {
                // Still what the apply wrote: back to what was there.
                return Some(match before {
                    None => change(Action::Delete, None),
                    Some(b) => change(Action::Update, Some(b)),
                });
            }
            if now_sha == before_sha {
                return None;
            }
            Some(change(Action::Conflict, before))
        }
        Action::Delete => match now {
            None => Some(change(Action::Create, before)),
            Some(_) if now_sha == before_sha => None,
            Some(_) => Some(change(Action::Conflict, before)),
        },
        Action::Conflict => None,
    }
}

/// Plans the undo of `applied`, a saved plan that was applied with `plan`
/// (its plan file). Reads the destination (and in move mode the source) now
/// and at the revisions the saved plan recorded; writes nothing.
pub async fn plan_undo(
    plan: &Plan,
    applied: &PlanReport,
    source: Arc<Side>,
    destination: Arc<Side>,
) -> Result<PlanReport, UndoError> {
    if applied.undo.is_some() {
        return Err(UndoError::UndoOfUndo);
    }
    let (dst_id, dst_revision) = cluster_head(&destination).await?;
    let dst_id = format!("{dst_id:016x}");
    if dst_id != applied.destination.cluster_id {
        return Err(UndoError::ClusterMismatch {
            side: "destination",
            expected: applied.destination.cluster_id.clone(),
            found: dst_id,
        });
    }
    let recorded = applied.destination.revision;
    // An undo reads each written key twice: it is bounded by what one
    // apply wrote, and held in memory (unlike a plan's changes).
    let mut written: Vec<Change> = applied
        .changes
        .iter()
        .filter(|c| c.action.writes())
        .collect();
    applied.changes.check().map_err(|e| {
        UndoError::Etcd(EtcdError::Request {
            side: crate::planfile::SideRole::Destination,
            operation: "read the saved plan's changes".into(),
            detail: e.to_string(),
        })
    })?;
    recover_digests(&source, applied, &mut written).await?;
    let (changes, untouched) = invert_all(&destination, applied, &written, recorded).await?;
    let restores = plan_restores(plan, applied, &source).await?;

    let (mappings, summary) = undo_mappings(applied, &changes, &untouched);
    let mut lease_ttls = BTreeMap::new();
    for c in changes.iter().filter(|c| c.action.writes()) {
        if let Some(id) = c.source.as_ref().map(|v| v.lease).filter(|&l| l != 0)
            && !lease_ttls.contains_key(&id)
        {
            lease_ttls.insert(id, lease_ttl(&destination, id).await?);
        }
    }
    let endpoints: Vec<String> = destination.endpoints().map(String::from).collect();
    Ok(PlanReport {
        found: Vec::new(),
        name: Some(format!("undo of {}", plan.display_name())),
        plan_path: applied.plan_path.clone(),
        file_sha256: applied.file_sha256.clone(),
        // Values to put back are read from the destination, at the revision
        // the undone plan recorded.
        source: ClusterInfo {
            cluster_id: applied.destination.cluster_id.clone(),
            revision: recorded,
            endpoints: endpoints.clone(),
        },
        destination: ClusterInfo {
            cluster_id: applied.destination.cluster_id.clone(),
            revision: dst_revision,
            endpoints,
        },
        mappings,
        largest_write: changes.iter().map(Change::write_bytes).max().unwrap_or(0),
        changes: Spool::from_records(&changes).map_err(|e| {
            UndoError::Etcd(EtcdError::Request {
                side: crate::planfile::SideRole::Destination,
                operation: "spill the undo plan".into(),
                detail: e.to_string(),
            })
        })?,
        source_deletes: Spool::empty(),
        summary,
        // Counted from `changes` by `undo_mappings`.
        summary_counted: true,
        lease_mode: applied.lease_mode,
        lease_ttls,
        max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        undo: Some(UndoInfo {
            source_cluster_id: applied.source.cluster_id.clone(),
            source_revision: applied.source.revision,
            restores,
        }),
    })
}

/// The inverse of each written key, from the destination's history at
/// `recorded` (what the plan saw there) and now; keys the apply did not
/// change are counted per mapping as untouched.
async fn invert_all(
    destination: &Arc<Side>,
    applied: &PlanReport,
    written: &[Change],
    recorded: i64,
) -> Result<(Vec<Change>, Vec<u64>), UndoError> {
    let keys: Vec<Vec<u8>> = written.iter().map(|c| c.key.clone()).collect();
    let (before, now) = tokio::try_join!(
        read_at(destination, &keys, recorded),
        read_at(destination, &keys, 0)
    )?;
    let mut changes = Vec::new();
    let mut untouched = vec![0u64; applied.mappings.len()];
    for ((c, before), now) in written.iter().zip(&before).zip(&now) {
        // What was there then must be what the plan saw there.
        let held = match (before, &c.destination) {
            (None, None) => true,
            (Some(e), Some(v)) => v.held_by(e),
            _ => false,
        };
        if !held {
            return Err(UndoError::HistoryMismatch {
                key: c.key.clone(),
                revision: recorded,
            });
        }
        match invert(c, before.as_ref(), now.as_ref()) {
            Some(undo) => changes.push(undo),
            None => {
                if let Some(n) = untouched.get_mut(c.mapping) {
                    *n += 1;
                }
            }
        }
    }
    Ok((changes, untouched))
}

/// The undo's per-mapping counts (each mapping undone on its `to` range)
/// and their total.
fn undo_mappings(
    applied: &PlanReport,
    changes: &[Change],
    untouched: &[u64],
) -> (Vec<MappingReport>, Summary) {
    let mut summary = Summary::default();
    let mappings = applied
        .mappings
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut s = Summary {
                unchanged: m.summary.unchanged + untouched.get(i).copied().unwrap_or(0),
                ..Summary::default()
            };
            for c in changes.iter().filter(|c| c.mapping == i) {
                s.count(c.action);
            }
            summary.add(&s);
            MappingReport {
                from: m.to.clone(),
                to: m.to.clone(),
                summary: s,
            }
        })
        .collect();
    (mappings, summary)
}

/// A saved plan keeps no digest of a sensitive value. Where the undo needs
/// to know what the apply wrote, it reads the value from the source's
/// history at the plan's revision, checked by its mod revision.
async fn recover_digests(
    source: &Arc<Side>,
    applied: &PlanReport,
    written: &mut [Change],
) -> Result<(), UndoError> {
    let missing: Vec<usize> = (0..written.len())
        .filter(|&i| {
            written[i]
                .source
                .as_ref()
                .is_some_and(|v| v.sha256.is_none())
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut keys: Vec<(Vec<u8>, usize)> = missing
        .iter()
        .map(|&i| (written[i].source_key.clone(), i))
        .collect();
    keys.sort();
    let revision = applied.source.revision;
    let sorted: Vec<Vec<u8>> = keys.iter().map(|(k, _)| k.clone()).collect();
    let read = read_at(source, &sorted, revision).await?;
    for ((key, i), entry) in keys.into_iter().zip(read) {
        let value = written[i].source.as_mut();
        match (value, entry) {
            (Some(v), Some(e)) if e.mod_revision == v.mod_revision => {
                v.sha256 = Some(digest(&e.value));
            }
            _ => {
                return Err(UndoError::HistoryMismatch {
                    key: key.clone(),
                    revision,
                });
            }
        }
    }
    Ok(())
}

/// Move mode: each source key the apply deleted, put back from the source's
/// history at the plan's source revision, while it is still absent.
async fn plan_restores(
    plan: &Plan,
    applied: &PlanReport,
    source: &Arc<Side>,
) -> Result<Vec<Change>, UndoError> {
    if applied.source_deletes.is_empty() {
        return Ok(Vec::new());
    }
    let (src_id, _) = cluster_head(source).await?;
    let src_id = format!("{src_id:016x}");
    if src_id != applied.source.cluster_id {
        return Err(UndoError::ClusterMismatch {
            side: "source",
            expected: applied.source.cluster_id.clone(),
            found: src_id,
        });
    }
    let revision = applied.source.revision;
    let keys: Vec<Vec<u8>> = applied
        .source_deletes
        .iter()
        .map(|d| d.source_key.clone())
        .collect();
    let (before, now) =
        tokio::try_join!(read_at(source, &keys, revision), read_at(source, &keys, 0))?;
    let mut restores = Vec::new();
    for ((d, before), now) in applied.source_deletes.iter().zip(&before).zip(&now) {
        // Without a recorded digest (a sensitive key), the mod revision
        // names the deleted value; its digest is then taken from history.
        let deleted = before.as_ref().filter(|e| match &d.sha256 {
            Some(sha) => digest(&e.value) == *sha,
            None => e.mod_revision == d.mod_revision,
        });
        let Some(deleted) = deleted else {
            return Err(UndoError::HistoryMismatch {
                key: d.source_key.clone(),
                revision,
            });
        };
        let now_sha = now.as_ref().map(|e| digest(&e.value));
        let action = match now_sha {
            None => Action::Create,
            Some(sha) if sha == digest(&deleted.value) => continue,
            Some(_) => Action::Conflict,
        };
        restores.push(Change {
            action,
            mapping: d.mapping,
            key: d.source_key.clone(),
            source_key: d.source_key.clone(),
            sensitive: d.sensitive || plan.is_sensitive(&d.source_key, &d.key),
            source: before.as_ref().map(value_of),
            destination: now.as_ref().map(value_of),
            payload: None,
        });
    }
    Ok(restores)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: &[u8], rev: i64) -> Entry {
        Entry {
            key: b"/k".to_vec(),
            value: value.to_vec(),
            mod_revision: rev,
            create_revision: 1,
            lease: 0,
        }
    }

    fn applied(action: Action, wrote: Option<&[u8]>, before: Option<&[u8]>) -> Change {
        let v = |b: &[u8]| Value {
            sha256: Some(digest(b)),
            size: b.len(),
            mod_revision: 1,
            lease: 0,
            shown: None,
        };
        Change {
            action,
            mapping: 0,
            key: b"/k".to_vec(),
            source_key: b"/src/k".to_vec(),
            sensitive: false,
            source: wrote.map(v),
            destination: before.map(v),
            payload: None,
        }
    }

    #[test]
    fn every_applied_action_has_its_inverse() {
        let create = applied(Action::Create, Some(b"new"), None);
        let undo = invert(&create, None, Some(&entry(b"new", 7))).expect("undo");
        assert_eq!(undo.action, Action::Delete);
        assert_eq!(undo.destination.map(|v| v.mod_revision), Some(7), "guard");

        let update = applied(Action::Update, Some(b"new"), Some(b"old"));
        let undo = invert(&update, Some(&entry(b"old", 3)), Some(&entry(b"new", 7))).expect("undo");
        assert_eq!(undo.action, Action::Update);
        assert_eq!(undo.source.and_then(|v| v.sha256), Some(digest(b"old")));
        assert_eq!(
            undo.source_key, b"/k",
            "read from the destination's history"
        );

        let delete = applied(Action::Delete, None, Some(b"old"));
        let undo = invert(&delete, Some(&entry(b"old", 3)), None).expect("undo");
        assert_eq!(undo.action, Action::Create);
    }

    #[test]
    fn untouched_keys_need_nothing_and_changed_keys_are_conflicts() {
        let update = applied(Action::Update, Some(b"new"), Some(b"old"));
        // Never applied (or undone already): nothing to do.
        assert_eq!(
            invert(&update, Some(&entry(b"old", 3)), Some(&entry(b"old", 3))),
            None
        );
        // Someone wrote it since: left alone, as a conflict.
        let undo =
            invert(&update, Some(&entry(b"old", 3)), Some(&entry(b"theirs", 9))).expect("conflict");
        assert_eq!(undo.action, Action::Conflict);
        let create = applied(Action::Create, Some(b"new"), None);
        assert_eq!(invert(&create, None, None), None);
        let delete = applied(Action::Delete, None, Some(b"old"));
        assert_eq!(
            invert(&delete, Some(&entry(b"old", 3)), Some(&entry(b"back", 9))).map(|c| c.action),
            Some(Action::Conflict)
        );
    }
}
