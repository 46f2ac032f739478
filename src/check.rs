//! `etcdplan check`: a preflight of both sides. It reports each endpoint's
//! reachability, TLS, cluster and member ids (and, where this user may ask
//! for Status, version, leader and database size), the members, and every
//! permission the run needs, probed without changing any data: the mapped
//! prefixes and each key etcdplan writes for itself (the follow checkpoint).

use futures::future::join_all;

pub use crate::etcd::info::{EndpointStatus, MemberInfo, probe_read, probe_write};
use crate::etcd::{EtcdError, RetryPolicy, Side, info};
use crate::keys::display_key;
use crate::planfile::Plan;

/// One endpoint's status.
#[derive(Debug, Clone)]
pub struct EndpointCheck {
    pub url: String,
    pub result: Result<EndpointStatus, String>,
    /// It answered, but refused the credentials: reachable, not usable.
    pub auth_failed: bool,
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
    /// A source read from a snapshot file: what the file holds, or why it
    /// cannot be read (then there are no endpoints to check).
    pub snapshot: Option<Result<SnapshotCheck, String>>,
}

/// What `check` reports of a snapshot file.
#[derive(Debug, Clone)]
pub struct SnapshotCheck {
    pub facts: crate::snapshot::Facts,
    /// The revision the plan reads.
    pub revision: i64,
    /// Keys at that revision under the plan's mappings.
    pub keys: u64,
}

impl SideCheck {
    /// Whether everything plan and apply need from this side is in place:
    /// one reachable endpoint is enough (etcdplan fails over), and every
    /// mapped prefix's permission; the checkpoint only when `follow`.
    pub fn ok(&self, follow: bool) -> bool {
        if let Some(snapshot) = &self.snapshot {
            return snapshot.is_ok();
        }
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
    let source_check = async {
        match &plan.source.snapshot {
            Some(_) => check_snapshot(plan).await,
            None => check_side(&source, &source_needs).await,
        }
    };
    let (s, d) = tokio::join!(source_check, check_side(&destination, &destination_needs));
    [s, d]
}

/// A snapshot source: the file opened, its hash checked, and the keys the
/// plan would read counted at the plan's revision.
async fn check_snapshot(plan: &Plan) -> SideCheck {
    let plan = plan.clone();
    let counted = tokio::task::spawn_blocking(move || {
        let Some(snap) = &plan.source.snapshot else {
            return Err("no snapshot".to_string());
        };
        let file = crate::snapshot::Snapshot::open(&snap.path).map_err(|e| e.to_string())?;
        let keep = |k: &[u8]| plan.reads_source_key(k);
        let (revision, index) = file
            .index(snap.revision, &keep)
            .map_err(|e| e.to_string())?;
        Ok(SnapshotCheck {
            facts: file.facts.clone(),
            revision,
            keys: index.keys().map_err(|e| e.to_string())?,
        })
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    SideCheck {
        role: "source".into(),
        tls: false,
        user: None,
        endpoints: Vec::new(),
        members: Err("a snapshot file has no members".into()),
        permissions: Vec::new(),
        roles: None,
        snapshot: Some(counted),
    }
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
            auth_failed: matches!(
                result,
                Err(EtcdError::AuthenticationFailed { .. }
                    | EtcdError::AuthenticationRequired { .. })
            ),
            result: result.map_err(|e| e.to_string()),
        })
        .collect();
    let Some(reachable) = endpoints.iter().position(|e| e.result.is_ok()) else {
        // Nothing usable answered: probing further would only repeat it.
        let why = if endpoints.iter().any(|e| e.auth_failed) {
            "not checked: authentication failed"
        } else {
            "not checked: no endpoint answered"
        }
        .to_string();
        return SideCheck {
            role: side.role.to_string(),
            tls: side.config.uses_tls,
            user: side.config.auth.as_ref().map(|a| a.username.clone()),
            endpoints,
            members: Err(why.clone()),
            roles: None,
            snapshot: None,
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
        snapshot: None,
    }
}
