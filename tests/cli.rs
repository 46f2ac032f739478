//! The command line itself: help texts with examples, completions, usage errors.

use assert_cmd::Command;

fn etcdplan(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::cargo_bin("etcdplan")
        .expect("binary")
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_command_has_help_with_an_example() {
    for cmd in [
        "validate",
        "check",
        "plan",
        "show",
        "apply",
        "completions",
        "schema",
    ] {
        let (code, out, _) = etcdplan(&[cmd, "--help"]);
        assert_eq!(code, Some(0), "{cmd}");
        assert!(
            out.contains("Example"),
            "{cmd} --help has an example:\n{out}"
        );
    }
    let (_, out, _) = etcdplan(&["apply", "--help"]);
    for flag in [
        "--auto-approve",
        "--max-txn-ops",
        "--max-txn-bytes",
        "--concurrency",
        "--rate",
        "--format",
        "--max-listed",
    ] {
        assert!(out.contains(flag), "apply --help explains {flag}");
    }
    let (_, out, _) = etcdplan(&["plan", "--help"]);
    for flag in ["--out", "--detailed-exitcode", "--format", "--max-listed"] {
        assert!(out.contains(flag), "plan --help explains {flag}");
    }
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, _) = etcdplan(&["completions", shell]);
        assert_eq!(code, Some(0), "{shell}");
        assert!(
            out.contains("etcdplan") && out.contains("validate"),
            "{shell}"
        );
    }
}

#[test]
fn usage_errors_exit_1_not_2() {
    // 2 is reserved for `plan --detailed-exitcode` finding changes.
    let (code, _, err) = etcdplan(&["plan"]);
    assert_eq!(code, Some(1), "{err}");
    let (code, _, _) = etcdplan(&["frobnicate"]);
    assert_eq!(code, Some(1));
    let (code, _, _) = etcdplan(&["apply", "x.yaml", "--concurrency", "0"]);
    assert_eq!(code, Some(1));
    let (code, _, err) = etcdplan(&["apply", "x.yaml", "--rate", "0"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not a number above zero"), "{err}");
}
