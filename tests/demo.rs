//! The README's first command with an installed binary: `ETCDPLAN=…` runs
//! the demo's real migration without cargo on PATH (nothing is built).

use std::process::Command;

#[test]
fn the_demo_runs_an_installed_binary_without_cargo() {
    let installed = tempfile::tempdir().expect("tempdir");
    let bin = installed.path().join("etcdplan");
    std::fs::copy(assert_cmd::cargo::cargo_bin("etcdplan"), &bin).expect("install a copy");
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/examples/demo.sh"))
        .env("ETCDPLAN", &bin)
        // No cargo here: the demo must not build.
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("NO_COLOR", "1")
        .output()
        .expect("run the demo");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("etcdplan: {}", bin.display())),
        "{text}"
    );
    assert!(text.contains("Apply complete"), "{text}");
}
