//! The CI examples are valid YAML, and the etcdplan commands they run work:
//! this test runs their `run:` scripts verbatim against local servers.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Cluster, write_plan};
use serde_json::Value;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("read workflow");
    serde_saphyr::from_str::<Value>(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

/// The `run:` scripts of a GitHub workflow's steps that call etcdplan itself
/// (not the install step, not steps that talk to GitHub's API).
fn github_scripts(workflow: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let jobs = workflow["jobs"].as_object().expect("jobs");
    for job in jobs.values() {
        for step in job["steps"].as_array().expect("steps") {
            let Some(run) = step["run"].as_str() else {
                continue;
            };
            if run.contains("etcdplan ") && !run.contains("cargo install") && !run.contains("gh ") {
                let name = step["name"].as_str().unwrap_or("step").to_string();
                out.push((name, run.to_string()));
            }
        }
    }
    out
}

/// Runs a script as GitHub Actions does (`bash -eo pipefail`), with the
/// freshly built etcdplan first on PATH.
fn bash(dir: &Path, script: &str, env: &[(&str, &str)]) -> (i32, String) {
    let bin_dir = assert_cmd::cargo::cargo_bin("etcdplan")
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
        .current_dir(dir)
        .env("PATH", path)
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn every_workflow_file_is_valid_yaml() {
    for path in [
        examples().join("github/etcdplan-plan.yml"),
        examples().join("github/etcdplan-apply.yml"),
        examples().join("gitlab/.gitlab-ci.yml"),
    ] {
        let doc = load(&path);
        assert!(doc.is_object(), "{}", path.display());
    }
    let plan = load(&examples().join("github/etcdplan-plan.yml"));
    assert!(plan["on"]["pull_request"]["paths"].is_array());
    let apply = load(&examples().join("github/etcdplan-apply.yml"));
    assert_eq!(apply["on"]["pull_request"]["types"][0], "closed");
}

#[tokio::test(flavor = "multi_thread")]
async fn github_workflows_plan_then_apply_the_saved_plan() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed(common::trident_keys(20)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /trident/v1/\nsensitive: [/trident/v1/backend/]\n",
    );
    let plan = plan.display().to_string();
    let output = dir.path().join("github_output");
    let output_s = output.display().to_string();
    let env = [
        ("PLAN", plan.as_str()),
        ("GITHUB_OUTPUT", output_s.as_str()),
    ];

    let plan_steps = github_scripts(&load(&examples().join("github/etcdplan-plan.yml")));
    let names: Vec<&str> = plan_steps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Validate", "Plan"]);
    for (name, script) in &plan_steps {
        let (code, out) = bash(dir.path(), script, &env);
        assert_eq!(code, 0, "{name}: {out}");
    }
    let outputs = std::fs::read_to_string(&output).expect("GITHUB_OUTPUT");
    assert!(
        outputs.contains("exitcode=2"),
        "changes were detected: {outputs}"
    );
    let md = std::fs::read_to_string(dir.path().join("plan.md")).expect("plan.md");
    assert!(md.contains("<details>") && md.contains("to create"), "{md}");
    assert!(!md.contains("backend-secret"));
    assert!(dir.path().join("plan.saved.json").exists());

    let apply_steps = github_scripts(&load(&examples().join("github/etcdplan-apply.yml")));
    assert_eq!(apply_steps.len(), 1, "the Apply step");
    let (code, out) = bash(dir.path(), &apply_steps[0].1, &env);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Apply complete"), "{out}");
    assert_eq!(
        dst.dump(b"/trident/v1/").await,
        src.dump(b"/trident/v1/").await
    );

    // A second plan run finds nothing to do.
    let (code, out) = bash(dir.path(), &plan_steps[1].1, &env);
    assert_eq!(code, 0, "{out}");
    let outputs = std::fs::read_to_string(&output).expect("GITHUB_OUTPUT");
    assert!(outputs.trim_end().ends_with("exitcode=0"), "{outputs}");

    // A foreign write after the plan: the Apply step fails with exit 3.
    let (code, out) = bash(dir.path(), &plan_steps[1].1, &env);
    assert_eq!(code, 0, "{out}");
    let mut c = src.client().await;
    c.put("/trident/v1/volume/new", "{}", None)
        .await
        .expect("put");
    let (code, out) = bash(dir.path(), &plan_steps[1].1, &env);
    assert_eq!(code, 0, "{out}");
    let mut d = dst.client().await;
    d.put("/trident/v1/volume/new", "{\"other\":1}", None)
        .await
        .expect("put");
    let (code, out) = bash(dir.path(), &apply_steps[0].1, &env);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("stale plan or concurrent writer"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn gitlab_jobs_run() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed(common::trident_keys(5)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /trident/v1/\n",
    );
    let plan = plan.display().to_string();
    let ci = load(&examples().join("gitlab/.gitlab-ci.yml"));
    for job in ["etcdplan-plan", "etcdplan-apply"] {
        let script: Vec<&str> = ci[job]["script"]
            .as_array()
            .expect("script")
            .iter()
            .map(|l| l.as_str().expect("script line"))
            .collect();
        let (code, out) = bash(dir.path(), &script.join("\n"), &[("PLAN", plan.as_str())]);
        assert_eq!(code, 0, "{job}: {out}");
    }
    assert_eq!(
        dst.dump(b"/trident/v1/").await,
        src.dump(b"/trident/v1/").await
    );
}
