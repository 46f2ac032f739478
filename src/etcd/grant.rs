//! The `etcdctl` command that grants a missing permission, whole and on one
//! line, so an operator can paste it.

use std::fmt::Write as _;

/// Grants `action` ("read" or "write"; a write needs read too, for the
/// guards) on `target`, a prefix or (`prefix == false`) one key, shown as
/// [`crate::keys::display_key`] shows keys. `ROLE` is left for the operator:
/// etcdplan knows the user, and a user may hold several roles.
pub fn command(action: &str, target: &str, prefix: bool) -> String {
    command_for("ROLE", action, target, prefix)
}

/// [`command`] naming the role.
pub fn command_for(role: &str, action: &str, target: &str, prefix: bool) -> String {
    let permission = if action == "read" {
        "read"
    } else {
        "readwrite"
    };
    let role = shlex::try_quote(role).map_or_else(|_| "ROLE".to_string(), |q| q.into_owned());
    let mut out = format!("etcdctl role grant-permission {role} ");
    if prefix && target.is_empty() {
        // The whole keyspace: every key from the empty key on.
        let _ = write!(out, "--from-key {permission} ''");
        return out;
    }
    if prefix {
        out.push_str("--prefix=true ");
    }
    let quoted =
        shlex::try_quote(target).map_or_else(|_| format!("'{target}'"), |q| q.into_owned());
    let _ = write!(out, "{permission} {quoted}");
    out
}

/// The help line of a denied request: the grant command for a prefix, or
/// (for requests on no key, such as a lease grant) where to look instead.
pub fn hint(action: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        return format!(
            "the user may not {action} here; `etcdplan check` probes every permission the run needs and prints the grant commands"
        );
    }
    format!(
        "grant one of the user's roles {action} permission on the prefix (`etcdplan check` names the role):\n{}",
        command(action, prefix, true)
    )
}

#[cfg(test)]
mod tests {
    use super::command;

    #[test]
    fn names_the_real_prefix_quoted_for_a_shell() {
        assert_eq!(
            command("write", "/trident/", true),
            "etcdctl role grant-permission ROLE --prefix=true readwrite /trident/"
        );
        assert_eq!(
            command("read", "/a b/", true),
            "etcdctl role grant-permission ROLE --prefix=true read '/a b/'"
        );
        assert_eq!(
            command("write", "/etcdplan/checkpoint/x", false),
            "etcdctl role grant-permission ROLE readwrite /etcdplan/checkpoint/x"
        );
    }
}
