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
        ran.stdout.starts_with("### etcdplan plan"),
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
