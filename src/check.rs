//! `etcdplan check`: a preflight of both sides. It reports each endpoint's
//! reachability, TLS, cluster and member ids (and, where this user may ask
//! for Status, version, leader and database size), the members, and every
//! permission the run needs, probed without changing any data: the mapped
//! prefixes and each key etcdplan writes for itself (the follow checkpoint).

use std::fmt::Write as _;

use futures::future::join_all;

pub use crate::etcd::info::{EndpointStatus, MemberInfo, probe_read, probe_write};
use crate::etcd::{RetryPolicy, Side, info};
use crate::keys::display_key;
use crate::planfile::Plan;
use crate::render::thousands;

/// One endpoint's status.
#[derive(Debug, Clone)]
pub struct EndpointCheck {
    pub url: String,
    pub result: Result<EndpointStatus, String>,
}

/// What a permission is needed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A mapped prefix: plan, apply, follow and undo all need it.
    Mapping,
    /// The follow checkpoint key: only `apply --follow` needs it.
    Checkpoint,
}

/// One permission the run needs.
#[derive(Debug, Clone)]
pub struct PermissionCheck {
    pub action: &'static str,
    pub prefix: Vec<u8>,
    /// False for a single key (the checkpoint), true for a prefix.
    pub is_prefix: bool,
    pub need: Need,
    pub result: Result<(), String>,
    /// The server refused it (rather than not answering): a grant fixes it.
    pub denied: bool,
}

impl PermissionCheck {
    /// The one-line etcdctl command that grants this permission to `role`.
    pub fn grant(&self, role: &str) -> String {
        crate::etcd::grant::command_for(
            role,
            self.action,
            &display_key(&self.prefix),
            self.is_prefix,
        )
    }
}

#[derive(Debug, Clone)]
pub struct SideCheck {
    pub role: String,
    pub tls: bool,
    pub user: Option<String>,
    pub endpoints: Vec<EndpointCheck>,
    pub members: Result<Vec<MemberInfo>, String>,
    pub permissions: Vec<PermissionCheck>,
    /// The user's roles, looked up when a permission was denied (`None`:
    /// not looked up, or the lookup failed).
    pub roles: Option<Vec<String>>,
}

impl SideCheck {
    /// Whether everything plan and apply need from this side is in place:
    /// one reachable endpoint is enough (etcdplan fails over), and every
    /// mapped prefix's permission; the checkpoint only when `follow`.
    pub fn ok(&self, follow: bool) -> bool {
        self.endpoints.iter().any(|e| e.result.is_ok())
            && self
                .permissions
                .iter()
                .all(|p| p.result.is_ok() || (p.need == Need::Checkpoint && !follow))
    }
}

/// What `check` is to probe beyond the plan file's own prefixes.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The follow checkpoint key on the destination.
    pub checkpoint_key: Vec<u8>,
    /// Whether the run will follow: then the checkpoint is required.
    pub follow: bool,
}

/// Checks both sides, at once, with short timeouts: a check reports, it
/// does not wait out a hung member.
pub async fn run(plan: &Plan, policy: &RetryPolicy, options: &CheckOptions) -> [SideCheck; 2] {
    let quick = policy.quicker();
    let source = Side::new(&plan.source, quick.clone()).with_probe(plan.probe_prefix(true));
    let destination = Side::new(&plan.destination, quick).with_probe(plan.probe_prefix(false));
    let froms: Vec<Vec<u8>> = plan.mappings.iter().map(|m| m.from.clone()).collect();
    let tos: Vec<Vec<u8>> = plan.mappings.iter().map(|m| m.to.clone()).collect();
    let mut source_needs = needs("read", &froms);
    if plan.delete_source {
        // Move mode deletes from the source: it needs write there too.
        source_needs.extend(needs("write", &froms));
    }
    let mut destination_needs = needs("read", &tos);
    destination_needs.extend(needs("write", &tos));
    if destination.v2().ok().flatten().is_none() {
        for action in ["read", "write"] {
            destination_needs.push((
                action,
                options.checkpoint_key.clone(),
                false,
                Need::Checkpoint,
            ));
        }
    }
    let (s, d) = tokio::join!(
        check_side(&source, &source_needs),
        check_side(&destination, &destination_needs)
    );
    [s, d]
}

type Needed = (&'static str, Vec<u8>, bool, Need);

fn needs(action: &'static str, prefixes: &[Vec<u8>]) -> Vec<Needed> {
    prefixes
        .iter()
        .map(|p| (action, p.clone(), true, Need::Mapping))
        .collect()
}

/// Probes one side: every endpoint at once, then the members and each
/// permission through an endpoint that answered.
pub async fn check_side(side: &Side, needed: &[Needed]) -> SideCheck {
    let statuses =
        join_all((0..side.endpoints().count()).map(|i| info::endpoint_status(side, i))).await;
    let endpoints: Vec<EndpointCheck> = side
        .endpoints()
        .zip(statuses)
        .map(|(url, result)| EndpointCheck {
            url: url.to_string(),
            result: result.map_err(|e| e.to_string()),
        })
        .collect();
    let Some(reachable) = endpoints.iter().position(|e| e.result.is_ok()) else {
        // Nothing answered: probing further would only wait out timeouts.
        let why = "not probed: no endpoint answered".to_string();
        return SideCheck {
            role: side.role.to_string(),
            tls: side.config.uses_tls,
            user: side.config.auth.as_ref().map(|a| a.username.clone()),
            endpoints,
            members: Err(why.clone()),
            roles: None,
            permissions: needed
                .iter()
                .map(|(action, prefix, is_prefix, need)| PermissionCheck {
                    action,
                    prefix: prefix.clone(),
                    is_prefix: *is_prefix,
                    need: *need,
                    result: Err(why.clone()),
                    denied: false,
                })
                .collect(),
        };
    };
    side.prefer(reachable);
    let leader = endpoints.iter().find_map(|e| {
        let status = e.result.as_ref().ok()?.status.as_ref().ok()?;
        Some(status.leader)
    });
    let members = info::members(side, leader).await.map_err(|e| e.to_string());
    let mut permissions = Vec::new();
    for (action, prefix, is_prefix, need) in needed {
        let result = match (*action, *is_prefix) {
            ("read", true) => probe_read(side, prefix).await,
            ("read", false) => info::probe_read_key(side, prefix).await,
            (_, true) => probe_write(side, prefix).await,
            (_, false) => info::probe_write_key(side, prefix).await,
        };
        let denied = matches!(result, Err(crate::etcd::EtcdError::PermissionDenied { .. }));
        permissions.push(PermissionCheck {
            action,
            prefix: prefix.clone(),
            is_prefix: *is_prefix,
            need: *need,
            result: result.map_err(|e| e.to_string()),
            denied,
        });
    }
    let roles = if permissions.iter().any(|p| p.denied) {
        info::own_roles(side).await.ok()
    } else {
        None
    };
    SideCheck {
        role: side.role.to_string(),
        tls: side.config.uses_tls,
        user: side.config.auth.as_ref().map(|a| a.username.clone()),
        endpoints,
        members,
        permissions,
        roles,
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

/// Renders both sides' checks as tables. `follow` says whether the run
/// will follow, which makes the checkpoint's permissions required.
pub fn render(plan: &Plan, sides: &[SideCheck], follow: bool) -> String {
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
                rows.push(vec![url.clone(), "NO".into(), yes_no(s.tls)]);
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
        Some([only]) => (only.clone(), format!("{}, the user's one role", esc(only))),
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
