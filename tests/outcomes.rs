//! Every ending has a JSON form, and the exit status follows from it: the
//! apply that needs approval and has no terminal, a complete apply, the
//! no-op rerun, and `check` in JSON and Markdown.

mod common;

use common::{Cluster, etcdplan, run, write_plan};

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_endings_are_json_documents_with_their_exit_status() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed([("/o/a", "1"), ("/o/b", "2")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /o/\n");
    let before = dst.revision().await;

    // No terminal to ask on, no --auto-approve: nothing is written.
    let ran = run(etcdplan(dir.path()).args(["apply", "plan.yaml", "--format", "json"]));
    assert_eq!(ran.code, Some(1), "{}\n{}", ran.stdout, ran.stderr);
    let doc = json(&ran.stdout);
    assert_eq!(doc["result"], "needs_approval", "{doc}");
    assert_eq!(doc["apply"]["created"], 0);
    assert!(
        ran.stderr.contains("etcdplan::apply::needs_approval"),
        "{}",
        ran.stderr
    );
    assert_eq!(dst.revision().await, before, "nothing written");

    let args = ["apply", "plan.yaml", "--auto-approve", "--format", "json"];
    let ran = run(etcdplan(dir.path()).args(args));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let doc = json(&ran.stdout);
    assert_eq!(doc["result"], "complete");
    assert_eq!(doc["apply"]["created"], 2);
    assert_eq!(doc["apply"]["verified"], 2);

    let ran = run(etcdplan(dir.path()).args(args));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(json(&ran.stdout)["result"], "no_changes");

    let ran = run(etcdplan(dir.path()).args([
        "apply",
        "plan.yaml",
        "--auto-approve",
        "--format",
        "markdown",
    ]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    // The reviewed plan, then the result.
    assert!(
        ran.stdout
            .starts_with("<!-- etcdplan-plan: plan.yaml -->\n### etcdplan plan"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains("### etcdplan apply: no_changes"),
        "{}",
        ran.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_speaks_json_and_markdown() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /o/\n");
    let ran = run(etcdplan(dir.path()).args(["check", "plan.yaml", "--format", "json"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let doc = json(&ran.stdout);
    assert_eq!(doc["passed"], true, "{doc}");
    let sides = doc["sides"].as_array().expect("sides");
    assert_eq!(sides.len(), 2);
    assert_eq!(sides[1]["side"], "destination");
    assert!(
        sides[1]["permissions"]
            .as_array()
            .expect("permissions")
            .iter()
            .any(|p| p["for"] == "follow_checkpoint"),
        "{doc}"
    );
    let ran = run(etcdplan(dir.path()).args(["check", "plan.yaml", "--format", "markdown"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout.contains("passed"), "{}", ran.stdout);
    assert!(ran.stdout.contains("```"), "{}", ran.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_stops_in_every_format() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed([("/o/a", "1")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /o/\n");
    let until = src.revision().await.to_string();
    let follow = |format: &str| {
        run(etcdplan(dir.path()).args([
            "apply",
            "plan.yaml",
            "--auto-approve",
            "--follow",
            "--until-revision",
            &until,
            "--format",
            format,
        ]))
    };
    let ran = follow("markdown");
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stdout
            .contains("### etcdplan follow: stopped (reached --until-revision)"),
        "{}",
        ran.stdout
    );
    let ran = follow("json");
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let last = ran.stdout.lines().last().expect("a line");
    let doc = json(last);
    assert_eq!(
        doc["follow_stopped"]["reason"], "reached --until-revision",
        "{doc}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_from_that_matches_nothing_is_a_warning_in_every_format() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed([("/trident/v1/a", "1")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /tridnet/v1/\n",
    );
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("warning: no source key under `/tridnet/v1/`"),
        "{}",
        ran.stderr
    );
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--format", "json"]));
    let doc = json(&ran.stdout);
    assert_eq!(doc["warnings"][0]["kind"], "empty_source", "{doc}");
    assert_eq!(doc["warnings"][0]["from"], "/tridnet/v1/", "{doc}");
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--format", "markdown"]));
    assert!(ran.stdout.contains("> [!WARNING]"), "{}", ran.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saved_plan_whose_source_moved_on_is_applied_with_a_warning() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed([
        ("/app/a", "reviewed"),
        ("/app/b", "kept"),
        ("/other/x", "1"),
    ])
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /app/\non_conflict: overwrite\n",
    );
    let plan = |out: &str| {
        let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--out", out]));
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    };
    plan("a.json");
    plan("b.json");
    // A write outside every mapping moves the revision but not the plan.
    src.seed([("/other/x", "2")]).await;
    let ran = run(etcdplan(dir.path()).args(["apply", "a.json", "--format", "json"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(!ran.stderr.contains("warning"), "{}", ran.stderr);
    assert!(json(&ran.stdout)["plan"].get("warnings").is_none());
    // A write under `from`: said on stderr and in the JSON, and the apply
    // still writes the reviewed value.
    src.seed([("/app/a", "newer")]).await;
    let ran = run(etcdplan(dir.path()).args(["apply", "b.json", "--format", "json"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stderr.contains(
            "warning: the source has changed under `/app/` since this plan was made at revision"
        ),
        "{}",
        ran.stderr
    );
    let doc = json(&ran.stdout);
    assert_eq!(
        doc["plan"]["warnings"][0]["kind"], "source_moved_on",
        "{doc}"
    );
    assert_eq!(doc["plan"]["warnings"][0]["from"], "/app/", "{doc}");
    assert_eq!(dst.dump(b"/app/a").await[0].1, b"reviewed".to_vec());
    // A delete leaves no key behind; the counts still tell.
    plan("c.json");
    let mut c = src.client().await;
    c.delete("/app/b", None).await.expect("delete");
    let ran = run(etcdplan(dir.path()).args(["apply", "c.json"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("warning: the source has changed under `/app/`"),
        "{}",
        ran.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_verbosity_level_adds_something() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed([("/app/a", "secret-value-a"), ("/app/b", "2")])
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /app/\n");
    let stderr = |v: &str, cmd: &[&str]| {
        let ran = run(etcdplan(dir.path()).arg(v).args(cmd));
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
        ran.stderr
    };
    let plan = ["plan", "plan.yaml"];
    // -v: what the run did, in a few lines.
    let one = stderr("-v", &plan);
    assert!(one.contains("planned source_revision="), "{one}");
    assert!(one.contains("create=2"), "{one}");
    assert!(one.contains("the slowest of"), "{one}");
    assert!(!one.contains("DEBUG"), "{one}");
    // -vv: every request, with its endpoint and time.
    let two = stderr("-vv", &plan);
    assert!(
        two.contains("answered side=source endpoint=http://127.0.0.1:"),
        "{two}"
    );
    assert!(!two.contains("TRACE"), "{two}");
    // -vvv: every change and every transaction.
    let three = stderr("-vvv", &plan);
    assert!(three.contains("change action=Create key=/app/a"), "{three}");
    let levels = [
        one.lines().count(),
        two.lines().count(),
        three.lines().count(),
    ];
    assert!(levels[0] < levels[1] && levels[1] < levels[2], "{levels:?}");
    let apply = stderr("-vvv", &["apply", "plan.yaml", "--auto-approve"]);
    assert!(
        apply.contains("guarded transaction side=destination ops=2"),
        "{apply}"
    );
    assert!(apply.contains("written created=2"), "{apply}");
    // Values never reach the log, at any level.
    assert!(!three.contains("secret-value") && !apply.contains("secret-value"));
}
