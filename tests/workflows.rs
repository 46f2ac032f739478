//! The CI examples, run as their runners run them: every GitHub `run:` step
//! in `bash -eo pipefail`, every GitLab job's `before_script` and `script`
//! in one shell, against local etcd servers (the destination over TLS with
//! client certificates that the steps write from CI secrets). GitHub's and
//! GitLab's APIs cannot run here: a local server that records requests
//! stands in for them (tests/common/recorder.rs), and the test checks that
//! the plan's Markdown arrives there.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Cluster;
use common::recorder::Recorder;
use serde_json::Value;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("read workflow");
    serde_saphyr::from_str::<Value>(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

/// A checkout of the repository as the jobs see it: the plan file of
/// plans/ with its endpoints pointed at the local servers (the only change;
/// its TLS paths stay plans/certs/, which the steps fill from secrets).
fn checkout(src: &Cluster, dst: &Cluster) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("plans/trident-external-etcd.yaml"))
        .expect("plan file")
        .replace("http://127.0.0.1:8001", &src.endpoint(0))
        .replace("https://trident-etcd-client:2379", &dst.endpoint(0));
    std::fs::create_dir_all(dir.path().join("plans")).expect("mkdir");
    std::fs::write(dir.path().join("plans/trident-external-etcd.yaml"), text).expect("write");
    dir
}

/// The PEM texts of the destination's CA and client certificate and key.
fn tls_secrets(dst: &Cluster) -> [(String, String); 3] {
    let tls = dst.tls.as_ref().expect("tls");
    let read = |p: &Path| std::fs::read_to_string(p).expect("read pem");
    [
        ("ETCD_CLIENT_CA".into(), read(&tls.ca)),
        ("ETCD_CLIENT_CERT".into(), read(&tls.client_cert)),
        ("ETCD_CLIENT_KEY".into(), read(&tls.client_key)),
    ]
}

/// Runs a script in `bash -eo pipefail`, as both runners do, with the
/// freshly built etcdplan first on PATH.
fn bash(dir: &Path, script: &str, env: &BTreeMap<String, String>) -> (i32, String) {
    let bin_dir = assert_cmd::cargo::cargo_bin("etcdplan")
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
        .current_dir(dir)
        .env_clear()
        .env("PATH", path)
        .env("HOME", dir)
        .envs(env)
        .output()
        .expect("run bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// A `${{ … }}` expression of a workflow, as the runner would fill it in.
fn expression(text: &str, secrets: &BTreeMap<String, String>) -> String {
    let mut out = text.to_string();
    while let Some(start) = out.find("${{") {
        let end = out[start..].find("}}").expect("closed expression") + start;
        let expr = out[start + 3..end].trim();
        let value = match expr.strip_prefix("secrets.") {
            Some(name) => secrets.get(name).cloned().unwrap_or_default(),
            None => match expr {
                "github.token" => "test-token".into(),
                "github.event.pull_request.number" => "7".into(),
                other => panic!("an expression the test does not know: {other}"),
            },
        };
        out.replace_range(start..end + 2, &value);
    }
    out
}

/// Runs the `run:` steps of a workflow's one job in order. Skipped, and why:
/// the install step (the runner's cache holds etcdplan; here it is on PATH)
/// and the download of the reviewed plan (GitHub's artifact store; the
/// test leaves the plan job's saved plan where the download puts it).
fn run_github(
    workflow: &str,
    dir: &Path,
    runner: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, String>,
) -> Vec<(String, i32, String)> {
    let doc = load(&examples().join("github").join(workflow));
    let mut env = runner.clone();
    for (k, v) in doc["env"].as_object().expect("env") {
        env.insert(
            k.clone(),
            expression(v.as_str().expect("env value"), secrets),
        );
    }
    let job = doc["jobs"]
        .as_object()
        .expect("jobs")
        .values()
        .next()
        .expect("a job");
    let mut ran = Vec::new();
    for step in job["steps"].as_array().expect("steps") {
        let name = step["name"].as_str().unwrap_or("").to_string();
        let Some(script) = step["run"].as_str() else {
            continue;
        };
        if name == "Install etcdplan" || name == "Download the reviewed plan" {
            continue;
        }
        let mut step_env = env.clone();
        for (k, v) in step["env"].as_object().into_iter().flatten() {
            step_env.insert(k.clone(), expression(v.as_str().expect("env"), secrets));
        }
        let (code, out) = bash(dir, script, &step_env);
        ran.push((name.clone(), code, out.clone()));
        if code != 0 {
            break;
        }
    }
    ran
}

#[tokio::test(flavor = "multi_thread")]
async fn github_workflows_plan_comment_and_apply_as_the_runner_runs_them() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::tls());
    src.seed(common::trident_keys(20)).await;
    let dir = checkout(&src, &dst);
    let api = Recorder::start().await;
    api.answer("GET", "/repos/acme/plans/issues/7/comments", 200, "[]");
    api.answer("POST", "/repos/acme/plans/issues/7/comments", 201, "{}");
    api.answer("PATCH", "/repos/acme/plans/issues/comments/", 200, "{}");
    let output = dir.path().join("github_output");
    let runner: BTreeMap<String, String> = [
        ("GITHUB_API_URL".to_string(), api.url()),
        ("GITHUB_REPOSITORY".into(), "acme/plans".into()),
        ("GITHUB_OUTPUT".into(), output.display().to_string()),
    ]
    .into();
    let secrets: BTreeMap<String, String> = tls_secrets(&dst).into_iter().collect();

    let ran = run_github("etcdplan-plan.yml", dir.path(), &runner, &secrets);
    let names: Vec<&str> = ran.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Write the TLS client certificate",
            "Validate",
            "Plan",
            "Post or update the plan comment"
        ]
    );
    for (name, code, out) in &ran {
        assert_eq!(*code, 0, "{name}: {out}");
    }
    let key = dir.path().join("plans/certs/client-key.pem");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key)
        .expect("key written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the key is the runner's alone");
    assert!(
        std::fs::read_to_string(&output)
            .expect("output")
            .contains("exitcode=2")
    );
    let posted = api
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .expect("a comment");
    assert_eq!(posted.header("authorization"), Some("Bearer test-token"));
    let body: Value = serde_json::from_slice(&posted.body).expect("JSON body");
    let comment = body["body"].as_str().expect("body");
    assert!(
        comment.starts_with(
            "<!-- etcdplan-plan: plans/trident-external-etcd.yaml -->\n### etcdplan plan"
        ),
        "{comment}"
    );
    assert!(
        !comment.contains("backend-secret"),
        "sensitive values stay hidden"
    );

    // The next run finds its comment by the marker and updates it.
    api.answer(
        "GET",
        "/repos/acme/plans/issues/7/comments",
        200,
        "[{\"id\": 41, \"body\": \"lgtm\"}, {\"id\": 43, \"body\": \"<!-- etcdplan-plan: plans/other.yaml -->\\nother\"}, {\"id\": 42, \"body\": \"<!-- etcdplan-plan: plans/trident-external-etcd.yaml -->\\nold\"}]",
    );
    let ran = run_github("etcdplan-plan.yml", dir.path(), &runner, &secrets);
    assert!(ran.iter().all(|(_, code, _)| *code == 0), "{ran:?}");
    let patched = api
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("an update");
    assert_eq!(patched.target, "/repos/acme/plans/issues/comments/42");

    // The merge: the apply workflow applies that saved plan.
    let ran = run_github("etcdplan-apply.yml", dir.path(), &runner, &secrets);
    let (name, code, out) = ran.last().expect("steps");
    assert_eq!((name.as_str(), *code), ("Apply", 0), "{out}");
    assert!(out.contains("Apply complete"), "{out}");
    assert_eq!(
        dst.dump(b"/trident/v1/").await,
        src.dump(b"/trident/v1/").await
    );
}

/// One GitLab job's shell: `before_script` then `script`, as the runner
/// joins them, with the job's variables expanded against `env`.
fn gitlab_job(ci: &Value, name: &str) -> (String, Vec<(String, String)>) {
    let job = &ci[name];
    let base = &ci[job["extends"].as_str().expect("extends")];
    let lines = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|l| l.as_str().expect("script line").to_string())
            .collect()
    };
    let mut script = lines(&base["before_script"]);
    script.extend(lines(&job["script"]));
    let vars = base["variables"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().expect("variable").to_string()))
        .collect();
    (script.join("\n"), vars)
}

#[tokio::test(flavor = "multi_thread")]
async fn gitlab_pipeline_notes_the_plan_and_applies_it_from_the_merge_request() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::tls());
    src.seed(common::trident_keys(10)).await;
    let dir = checkout(&src, &dst);
    let api = Recorder::start().await;
    api.answer(
        "POST",
        "/api/v4/projects/42/merge_requests/7/notes",
        201,
        "{}",
    );
    let ci = load(&examples().join("gitlab/.gitlab-ci.yml"));
    // GitLab's File-type variables hold the path of a file with the value.
    let files = tempfile::tempdir().expect("tempdir");
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (name, pem) in tls_secrets(&dst) {
        let path = files.path().join(&name);
        std::fs::write(&path, pem).expect("write file variable");
        env.insert(name, path.display().to_string());
    }
    let project = dir.path().display().to_string();
    for (k, v) in [
        ("CI_PROJECT_DIR", project.as_str()),
        ("CI_PIPELINE_SOURCE", "merge_request_event"),
        ("CI_MERGE_REQUEST_IID", "7"),
        ("CI_PROJECT_ID", "42"),
        ("GITLAB_API_TOKEN", "glpat-test"),
    ] {
        env.insert(k.into(), v.into());
    }
    env.insert("CI_API_V4_URL".into(), format!("{}/api/v4", api.url()));
    for (k, v) in ci["variables"].as_object().expect("variables") {
        env.insert(k.clone(), v.as_str().expect("variable").to_string());
    }
    for job in ["etcdplan-plan", "etcdplan-apply"] {
        assert_eq!(
            ci[job]["rules"][0]["if"],
            "$CI_PIPELINE_SOURCE == \"merge_request_event\""
        );
        let (script, vars) = gitlab_job(&ci, job);
        let mut job_env = env.clone();
        for (k, v) in vars {
            job_env.insert(k, v.replace("$CI_PROJECT_DIR", &project));
        }
        let (code, out) = bash(dir.path(), &script, &job_env);
        assert_eq!(code, 0, "{job}: {out}");
    }
    assert_eq!(ci["etcdplan-apply"]["rules"][0]["when"], "manual");
    let notes = api.requests();
    assert_eq!(notes.len(), 1, "one note: {notes:?}");
    assert_eq!(notes[0].header("private-token"), Some("glpat-test"));
    let body: String = url::form_urlencoded::parse(&notes[0].body)
        .find(|(k, _)| k == "body")
        .map(|(_, v)| v.into_owned())
        .expect("a body field");
    assert!(
        body.starts_with(
            "<!-- etcdplan-plan: plans/trident-external-etcd.yaml -->\n### etcdplan plan: `trident-external-etcd`"
        ),
        "{body}"
    );
    assert_eq!(
        dst.dump(b"/trident/v1/").await,
        src.dump(b"/trident/v1/").await
    );
}

#[test]
fn every_workflow_file_is_valid_yaml() {
    for path in [
        examples().join("github/etcdplan-plan.yml"),
        examples().join("github/etcdplan-apply.yml"),
        examples().join("gitlab/.gitlab-ci.yml"),
    ] {
        assert!(load(&path).is_object(), "{}", path.display());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ignored = std::fs::read_to_string(root.join(".gitignore")).expect(".gitignore");
    assert!(
        ignored.lines().any(|l| l == "plans/certs/"),
        "certificates are never committed"
    );
}
