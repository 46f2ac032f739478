//! `etcdplan validate`: the plan file checked offline, every problem at
//! once; `--strict` also checks passwords and TLS files.

use std::path::Path;

use crate::planfile;
use crate::status::ExitStatus;

pub fn run(plan: &Path, strict: bool) -> miette::Result<ExitStatus> {
    let scope = if strict {
        planfile::Scope::Environment
    } else {
        planfile::Scope::File
    };
    let plan = planfile::load_in(plan, &planfile::ProcessEnv, scope)?;
    let checked = if strict {
        "password variables and TLS files checked"
    } else {
        "password variables and TLS files not checked: --strict checks them"
    };
    outln!("{} ({checked}).", describe(&plan));
    Ok(ExitStatus::Success)
}

/// One line that says what a valid plan will do.
fn describe(plan: &planfile::Plan) -> String {
    let side = |s: &planfile::SideConfig| {
        if let Some(snap) = &s.snapshot {
            let at = snap
                .revision
                .map_or("its newest revision".to_string(), |r| {
                    format!("revision {r}")
                });
            return format!(
                "snapshot {} at {at}",
                crate::escape::text(&snap.path.display().to_string())
            );
        }
        format!(
            "{} endpoint{} ({}{})",
            s.endpoints.len(),
            if s.endpoints.len() == 1 { "" } else { "s" },
            if s.uses_tls { "TLS" } else { "plaintext" },
            s.auth
                .as_ref()
                .map(|a| format!(", user {}", a.username))
                .unwrap_or_default()
        )
    };
    format!(
        "{} is valid: {} mapping{}, source {}, destination {}",
        plan.path.display(),
        plan.mappings.len(),
        if plan.mappings.len() == 1 { "" } else { "s" },
        side(&plan.source),
        side(&plan.destination),
    )
}
