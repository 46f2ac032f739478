//! `etcdplan check`: a preflight of both sides. It reports each endpoint's
//! reachability, TLS, version, cluster id and database size, the members,
//! and the permissions the plan needs, probed without changing any data.

use std::fmt::Write as _;

pub use crate::etcd::info::{EndpointStatus, MemberInfo, probe_read, probe_write};
use crate::etcd::{Side, info};
use crate::keys::display_key;
use crate::planfile::Plan;
use crate::render::thousands;

/// One endpoint's status.
#[derive(Debug, Clone)]
pub struct EndpointCheck {
    pub url: String,
    pub result: Result<EndpointStatus, String>,
}

/// One permission the plan needs.
#[derive(Debug, Clone)]
pub struct PermissionCheck {
    pub action: &'static str,
    pub prefix: Vec<u8>,
    pub result: Result<(), String>,
}

#[derive(Debug, Clone)]
pub struct SideCheck {
    pub role: String,
    pub tls: bool,
    pub user: Option<String>,
    pub endpoints: Vec<EndpointCheck>,
    pub members: Result<Vec<MemberInfo>, String>,
    pub permissions: Vec<PermissionCheck>,
}

impl SideCheck {
    /// Whether everything the plan needs from this side is in place: one
    /// reachable endpoint is enough (etcdplan fails over), every permission.
    pub fn ok(&self) -> bool {
        self.endpoints.iter().any(|e| e.result.is_ok())
            && self.permissions.iter().all(|p| p.result.is_ok())
    }
}

/// Probes one side. `reads` and `writes` are the prefixes the plan needs.
pub async fn check_side(side: &Side, reads: &[Vec<u8>], writes: &[Vec<u8>]) -> SideCheck {
    let mut endpoints = Vec::new();
    for (i, url) in side.endpoints().enumerate() {
        let result = info::endpoint_status(side, i)
            .await
            .map_err(|e| e.to_string());
        endpoints.push(EndpointCheck {
            url: url.to_string(),
            result,
        });
    }
    let leader = endpoints
        .iter()
        .find_map(|e| e.result.as_ref().ok().map(|s| s.leader));
    let members = info::members(side, leader).await.map_err(|e| e.to_string());
    let mut permissions = Vec::new();
    for prefix in reads {
        permissions.push(PermissionCheck {
            action: "read",
            prefix: prefix.clone(),
            result: probe_read(side, prefix).await,
        });
    }
    for prefix in writes {
        permissions.push(PermissionCheck {
            action: "write",
            prefix: prefix.clone(),
            result: probe_write(side, prefix).await,
        });
    }
    SideCheck {
        role: side.role.to_string(),
        tls: side.config.uses_tls,
        user: side.config.auth.as_ref().map(|a| a.username.clone()),
        endpoints,
        members,
        permissions,
    }
}

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

// What members report about themselves is theirs to say, not to print raw.
use crate::escape::text as esc;

/// Renders both sides' checks as tables.
pub fn render(plan: &Plan, sides: &[SideCheck]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "etcdplan check: {}\n", esc(&plan.display_name()));
    for s in sides {
        let _ = writeln!(
            out,
            "{} ({}{})",
            s.role,
            if s.tls { "TLS" } else { "plaintext" },
            s.user
                .as_ref()
                .map(|u| format!(", user {u}"))
                .unwrap_or_default()
        );
        let mut rows = vec![vec![
            "ENDPOINT".to_string(),
            "REACHABLE".into(),
            "TLS".into(),
            "VERSION".into(),
            "CLUSTER ID".into(),
            "MEMBER ID".into(),
            "DB SIZE".into(),
            "LEADER".into(),
        ]];
        let mut errors = Vec::new();
        for e in &s.endpoints {
            match &e.result {
                Ok(st) => rows.push(vec![
                    e.url.clone(),
                    "yes".into(),
                    if s.tls { "yes".into() } else { "no".into() },
                    esc(&st.version),
                    format!("{:016x}", st.cluster_id),
                    format!("{:016x}", st.member_id),
                    size(st.db_size),
                    if st.leader == st.member_id {
                        "yes".into()
                    } else {
                        "no".into()
                    },
                ]),
                Err(msg) => {
                    rows.push(vec![
                        e.url.clone(),
                        "NO".into(),
                        if s.tls { "yes".into() } else { "no".into() },
                    ]);
                    errors.push(format!("{}: {msg}", e.url));
                }
            }
        }
        let _ = writeln!(out, "  endpoints");
        out.push_str(&table(&rows));
        for e in errors {
            let _ = writeln!(out, "    ! {e}");
        }
        let _ = writeln!(out, "  members");
        match &s.members {
            Ok(members) => {
                let mut rows = vec![vec![
                    "NAME".to_string(),
                    "ID".into(),
                    "PEER URLS".into(),
                    "CLIENT URLS".into(),
                    "LEADER".into(),
                ]];
                for m in members {
                    rows.push(vec![
                        esc(&m.name),
                        format!("{:016x}", m.id),
                        esc(&m.peer_urls.join(",")),
                        esc(&m.client_urls.join(",")),
                        if m.leader { "yes".into() } else { "no".into() },
                    ]);
                }
                out.push_str(&table(&rows));
            }
            Err(e) => {
                let _ = writeln!(out, "    ! cannot list members: {e}");
            }
        }
        let _ = writeln!(out, "  permissions");
        let mut rows = vec![vec!["NEEDS".to_string(), "PREFIX".into(), "RESULT".into()]];
        for p in &s.permissions {
            rows.push(vec![
                p.action.to_string(),
                display_key(&p.prefix),
                match &p.result {
                    Ok(()) => "ok".into(),
                    Err(e) => format!("DENIED: {e}"),
                },
            ]);
        }
        out.push_str(&table(&rows));
        let _ = writeln!(out);
    }
    let failed = sides.iter().filter(|s| !s.ok()).count();
    if failed == 0 {
        let _ = writeln!(
            out,
            "Check passed: both sides are reachable and every permission the plan needs is granted."
        );
    } else {
        let _ = writeln!(
            out,
            "Check FAILED on {failed} side(s): see the rows marked NO or DENIED above."
        );
    }
    out
}
