//! `check`'s findings for people (text tables, Markdown) and machines
//! (JSON). What members and servers say about themselves is theirs to say,
//! not to print raw: every such string goes through the escapers.

use std::fmt::Write as _;

use super::thousands;
use crate::check::{Need, PermissionCheck, SideCheck};
use crate::escape::text as esc;
use crate::keys::display_key;
use crate::planfile::Plan;

fn size(bytes: i64) -> String {
    let b = bytes.max(0) as u64;
    match b {
        0..1024 => format!("{b} B"),
        1024..1_048_576 => format!("{} KiB", thousands(b / 1024)),
        _ => format!("{} MiB", thousands(b / 1_048_576)),
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
            .collect();
        let _ = writeln!(out, "    {}", line.join("  ").trim_end());
    }
    out
}

/// Renders both sides' checks as tables. `follow` says whether the run
/// will follow, which makes the checkpoint's permissions required.
pub fn text(plan: &Plan, sides: &[SideCheck], follow: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "etcdplan check: {}\n", esc(&plan.display_name()));
    for s in sides {
        if let Some(snapshot) = &s.snapshot {
            render_snapshot(&mut out, snapshot);
            continue;
        }
        let _ = writeln!(
            out,
            "{} ({}{})",
            s.role,
            if s.tls { "TLS" } else { "plaintext" },
            s.user
                .as_ref()
                .map(|u| format!(", user {}", esc(u)))
                .unwrap_or_default()
        );
        render_endpoints(&mut out, s);
        render_members(&mut out, s);
        render_permissions(&mut out, s);
        let _ = writeln!(out);
    }
    let failed = sides.iter().filter(|s| !s.ok(follow)).count();
    let checkpoint_denied = sides
        .iter()
        .flat_map(|s| &s.permissions)
        .any(|p| p.need == Need::Checkpoint && p.result.is_err());
    if failed > 0 {
        let _ = writeln!(
            out,
            "Check FAILED on {failed} side(s): see the rows marked NO or DENIED above."
        );
    } else if checkpoint_denied {
        let _ = writeln!(
            out,
            "Check passed for plan and apply: both sides are reachable and every mapped prefix's permission is granted.\n\
             apply --follow would fail: the checkpoint key is DENIED above; grant it, or pass --checkpoint-key with a key this user may write."
        );
    } else {
        let _ = writeln!(
            out,
            "Check passed: both sides are reachable and every permission the run needs is granted."
        );
    }
    out
}

/// A snapshot source: the file and what it holds.
fn render_snapshot(out: &mut String, s: &Result<crate::check::SnapshotCheck, String>) {
    let _ = writeln!(out, "source (snapshot file)");
    match s {
        Err(why) => {
            let _ = writeln!(out, "  ! {}", esc(why));
        }
        Ok(c) => {
            let f = &c.facts;
            let integrity = if f.hash_verified {
                "sha256 appended by `snapshot save` verified"
            } else {
                "no sha256 appended (a bare db file): not verified"
            };
            for (k, v) in [
                ("file", esc(&f.path.display().to_string())),
                ("size", thousands(f.size)),
                ("integrity", integrity.to_string()),
                (
                    "revisions",
                    match f.compacted {
                        0 => format!("1 to {} (never compacted)", f.revision),
                        c => format!("{c} to {} (compacted at {c})", f.revision),
                    },
                ),
                ("read at", format!("revision {}", c.revision)),
                (
                    "keys",
                    format!("{} under the plan's prefixes", thousands(c.keys)),
                ),
            ] {
                let _ = writeln!(out, "  {k:<10} {v}");
            }
        }
    }
    let _ = writeln!(out);
}

fn yes_no(b: bool) -> String {
    if b { "yes".into() } else { "no".into() }
}

fn render_endpoints(out: &mut String, s: &SideCheck) {
    let mut rows = vec![
        [
            "ENDPOINT",
            "REACHABLE",
            "TLS",
            "VERSION",
            "CLUSTER ID",
            "MEMBER ID",
            "DB SIZE",
            "LEADER",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut notes = Vec::new();
    for e in &s.endpoints {
        let url = esc(&e.url);
        match &e.result {
            Ok(st) => {
                let facts = st.status.as_ref().ok();
                rows.push(vec![
                    url.clone(),
                    "yes".into(),
                    yes_no(s.tls),
                    facts.map_or_else(|| "-".into(), |f| esc(&f.version)),
                    format!("{:016x}", st.cluster_id),
                    format!("{:016x}", st.member_id),
                    facts.map_or_else(|| "-".into(), |f| size(f.db_size)),
                    facts.map_or_else(|| "-".into(), |f| yes_no(f.leader == st.member_id)),
                ]);
                if let Err(why) = &st.status {
                    notes.push(format!("- {url}: {}", esc(why)));
                }
            }
            Err(msg) => {
                let state = if e.auth_failed { "auth failed" } else { "NO" };
                rows.push(vec![url.clone(), state.into(), yes_no(s.tls)]);
                notes.push(format!("! {url}: {}", esc(msg)));
            }
        }
    }
    let _ = writeln!(out, "  endpoints");
    out.push_str(&table(&rows));
    for n in notes {
        let _ = writeln!(out, "    {n}");
    }
}

fn render_members(out: &mut String, s: &SideCheck) {
    let _ = writeln!(out, "  members");
    let members = match &s.members {
        Ok(members) => members,
        Err(e) => {
            let _ = writeln!(out, "    ! cannot list members: {}", esc(e));
            return;
        }
    };
    let known_leader = members.iter().any(|m| m.leader);
    let mut rows = vec![
        ["NAME", "ID", "PEER URLS", "CLIENT URLS", "LEADER"]
            .map(String::from)
            .to_vec(),
    ];
    for m in members {
        rows.push(vec![
            esc(&m.name),
            format!("{:016x}", m.id),
            esc(&m.peer_urls.join(",")),
            esc(&m.client_urls.join(",")),
            if known_leader {
                yes_no(m.leader)
            } else {
                "-".into()
            },
        ]);
    }
    out.push_str(&table(&rows));
}

fn render_permissions(out: &mut String, s: &SideCheck) {
    let _ = writeln!(out, "  permissions");
    let mut rows = vec![
        ["NEEDS", "PREFIX OR KEY", "FOR", "RESULT"]
            .map(String::from)
            .to_vec(),
    ];
    let (role, whose) = match s.roles.as_deref() {
        // A role name comes from the server: escaped, as every string from outside.
        Some([only]) => (esc(only), format!("{}, the user's one role", esc(only))),
        Some([]) => (
            "ROLE".to_string(),
            "a role of its own: the user has none; `etcdctl role add ROLE`, then `etcdctl user grant-role USER ROLE`".to_string(),
        ),
        Some(many) => (
            "ROLE".to_string(),
            format!("one of the user's roles: {}", esc(&many.join(", "))),
        ),
        None => ("ROLE".to_string(), "a role of this user".to_string()),
    };
    let mut grants: Vec<(String, bool, &PermissionCheck)> = Vec::new();
    for p in &s.permissions {
        let target = if p.is_prefix {
            display_key(&p.prefix)
        } else {
            format!("{} (key)", display_key(&p.prefix))
        };
        rows.push(vec![
            p.action.to_string(),
            target,
            match p.need {
                Need::Mapping => "mapping".into(),
                Need::Checkpoint => "apply --follow checkpoint".into(),
            },
            match &p.result {
                Ok(()) => "ok".into(),
                Err(e) => format!("DENIED: {}", esc(e)),
            },
        ]);
        if p.denied {
            grants.push((display_key(&p.prefix), p.is_prefix, p));
        }
    }
    out.push_str(&table(&rows));
    if grants.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "    to grant what is DENIED, run as root (the role: {whose}):"
    );
    // readwrite covers read: one command per prefix or key.
    let writes: Vec<(String, bool)> = grants
        .iter()
        .filter(|g| g.2.action == "write")
        .map(|g| (g.0.clone(), g.1))
        .collect();
    grants.retain(|g| g.2.action == "write" || !writes.contains(&(g.0.clone(), g.1)));
    for (_, _, p) in grants {
        let _ = writeln!(out, "      {}", p.grant(&role));
    }
}

/// Whether every side has what the run needs.
fn passed(sides: &[SideCheck], follow: bool) -> bool {
    sides.iter().all(|s| s.ok(follow))
}

/// The JSON form: each side's endpoints, members and permissions.
pub fn json(sides: &[SideCheck], follow: bool) -> String {
    let side = |s: &SideCheck| {
        let endpoints: Vec<serde_json::Value> = s
            .endpoints
            .iter()
            .map(|e| match &e.result {
                Ok(st) => serde_json::json!({
                    "endpoint": e.url,
                    "reachable": true,
                    "cluster_id": format!("{:016x}", st.cluster_id),
                    "member_id": format!("{:016x}", st.member_id),
                    "version": st.status.as_ref().ok().map(|f| f.version.clone()),
                    "db_size": st.status.as_ref().ok().map(|f| f.db_size),
                    "status_error": st.status.as_ref().err(),
                }),
                Err(why) => serde_json::json!({
                    "endpoint": e.url,
                    "reachable": e.auth_failed,
                    "auth_failed": e.auth_failed,
                    "error": why,
                }),
            })
            .collect();
        let permissions: Vec<serde_json::Value> = s
            .permissions
            .iter()
            .map(|p| {
                serde_json::json!({
                    "needs": p.action,
                    "prefix": display_key(&p.prefix),
                    "is_prefix": p.is_prefix,
                    "for": match p.need { Need::Mapping => "mapping", Need::Checkpoint => "follow_checkpoint" },
                    "granted": p.result.is_ok(),
                    "error": p.result.as_ref().err(),
                })
            })
            .collect();
        let members: Vec<serde_json::Value> = match &s.members {
            Ok(ms) => ms
                .iter()
                .map(|m| serde_json::json!({"name": m.name, "id": format!("{:016x}", m.id), "client_urls": m.client_urls}))
                .collect(),
            Err(_) => Vec::new(),
        };
        if let Some(snapshot) = &s.snapshot {
            return match snapshot {
                Ok(c) => serde_json::json!({
                    "side": s.role,
                    "ok": true,
                    "snapshot": {
                        "file": c.facts.path.display().to_string(),
                        "size": c.facts.size,
                        "hash_verified": c.facts.hash_verified,
                        "newest_revision": c.facts.revision,
                        "compacted_revision": c.facts.compacted,
                        "revision": c.revision,
                        "keys": c.keys,
                    },
                }),
                Err(why) => serde_json::json!({"side": s.role, "ok": false, "snapshot_error": why}),
            };
        }
        serde_json::json!({
            "side": s.role,
            "tls": s.tls,
            "user": s.user,
            "ok": s.ok(follow),
            "endpoints": endpoints,
            "members": members,
            "members_error": s.members.as_ref().err(),
            "permissions": permissions,
        })
    };
    let value = serde_json::json!({
        "format_version": "1",
        "passed": passed(sides, follow),
        "follow": follow,
        "sides": sides.iter().map(side).collect::<Vec<_>>(),
    });
    crate::escape::to_json_string_pretty(&value)
}

/// The Markdown form: the text tables in a code block under a verdict.
pub fn markdown(plan: &Plan, sides: &[SideCheck], follow: bool) -> String {
    let verdict = if passed(sides, follow) {
        "passed"
    } else {
        "FAILED"
    };
    format!(
        "### etcdplan check: {} {verdict}\n\n{}",
        crate::escape::markdown_code(&plan.display_name()),
        super::markdown::fenced("", &text(plan, sides, follow))
    )
}
