//! The review puts the riskiest changes first and never drops a conflict or
//! a delete for a create: in text under `--max-listed`, in Markdown under
//! the comment size limit, each section counting what it leaves out.

mod common;

use common::{Cluster, etcdplan, run, write_plan};

/// Snapshots `text` with what differs between runs replaced.
fn snapshot(name: &str, text: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"[0-9a-f]{16}", "[cluster-id]");
    settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[port]");
    settings.add_filter(r"at revision \d+", "at revision [rev]");
    settings.add_filter(r"sha256 [0-9a-f]{12}…\)", "sha256 [file])");
    settings.add_filter(r"\(sha256 `[0-9a-f]{12}`\)", "(sha256 [file])");
    settings.bind(|| insta::assert_snapshot!(name, text));
}

/// `creates` keys only in the source (sorted before everything else),
/// `updates` that differ, and `deletes` only in the destination, sorted
/// last so that a cut in key order would lose them first; and a plan of
/// `/app/` with prune and overwrite between them.
async fn mixed(
    creates: usize,
    updates: usize,
    deletes: usize,
) -> (Cluster, Cluster, tempfile::TempDir) {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    let long = "n".repeat(40);
    let src_keys = (0..creates)
        .map(|i| (format!("/app/a-create/{long}/{i:05}"), "new".to_string()))
        .chain((0..updates).map(|i| (format!("/app/m-update/{i:05}"), "v2".to_string())));
    src.seed(src_keys).await;
    let dst_keys = (0..updates)
        .map(|i| (format!("/app/m-update/{i:05}"), "v1".to_string()))
        .chain((0..deletes).map(|i| (format!("/app/z-delete/{i:05}"), "old".to_string())));
    dst.seed(dst_keys).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /app/\nprune: true\non_conflict: overwrite\n",
    );
    (src, dst, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn markdown_lists_every_delete_and_update_before_creates() {
    // The plan of the issue: 10,000 creates, 1 update, 7 deletes.
    let (_src, _dst, dir) = mixed(10_000, 1, 7).await;
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--format", "markdown"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let md = &ran.stdout;
    assert!(md.chars().count() <= 65_000, "{} characters", md.len());
    for i in 0..7 {
        assert!(
            md.contains(&format!("- /app/z-delete/{i:05}\n")),
            "delete {i}"
        );
    }
    assert!(md.contains("~ /app/m-update/00000"));
    // Riskiest first: deletes, then the update, then creates.
    let at = |s: &str| md.find(s).unwrap_or(usize::MAX);
    assert!(at("<summary>7 to delete<") < at("<summary>1 to update<"));
    assert!(at("<summary>1 to update<") < at("<summary>10,000 to create<"));
    // The creates that do not fit are counted, with the command that lists them.
    let listed = md
        .lines()
        .filter(|l| l.starts_with("+ /app/a-create/"))
        .count();
    assert!(
        listed > 100,
        "the rest of the room goes to creates: {listed}"
    );
    let note = format!(
        "_{} more to create not listed here (to keep this comment under 65,000 characters): `etcdplan plan plan.yaml --out plan.saved.json && etcdplan show plan.saved.json` lists them all._",
        thousands(10_000 - listed)
    );
    assert!(md.contains(&note), "{note}\n{md}");
    // A one-line summary opens it, after the hidden marker.
    let mut lines = md.lines();
    assert_eq!(lines.next(), Some("<!-- etcdplan-plan: plan.yaml -->"));
    assert_eq!(
        lines.next(),
        Some(
            "### etcdplan plan: `test-plan` · 10,000 to create, 1 to update, 7 to delete, 0 unchanged."
        )
    );
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn junk_keys_cannot_push_a_sensitive_update_or_deletes_out() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    let junk = "j".repeat(300);
    src.seed(
        (0..1000)
            .map(|i| (format!("/app/{junk}{i:04}"), "x".to_string()))
            .chain([("/app/zz/secret/token".to_string(), "new-token".to_string())]),
    )
    .await;
    dst.seed([
        ("/app/zz/secret/token", "old-token"),
        ("/app/zzz/1", "a"),
        ("/app/zzz/2", "b"),
        ("/app/zzz/3", "c"),
    ])
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /app/\nprune: true\non_conflict: overwrite\nsensitive: [/app/zz/secret/]\n",
    );
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--format", "markdown"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let md = &ran.stdout;
    assert!(md.len() <= 65_000);
    assert!(
        md.contains("~ /app/zz/secret/token  (sensitive, changed)"),
        "{md}"
    );
    for k in ["/app/zzz/1", "/app/zzz/2", "/app/zzz/3"] {
        assert!(md.contains(&format!("- {k}\n")), "{k}");
    }
    assert!(!md.contains("new-token") && !md.contains("old-token"));
}

#[tokio::test(flavor = "multi_thread")]
async fn text_max_listed_is_shared_by_section() {
    let (_src, _dst, dir) = mixed(50, 5, 3).await;
    let args = [
        "plan",
        "plan.yaml",
        "--max-listed",
        "10",
        "--out",
        "saved.json",
    ];
    let ran = run(etcdplan(dir.path()).args(args));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    snapshot("text_max_listed_by_section", &ran.stdout);
    // `show` of the saved plan lists everything, in the same order.
    let ran = run(etcdplan(dir.path()).args(["show", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(ran.stdout.matches("\n  + /app/a-create/").count(), 50);
    assert!(!ran.stdout.contains("not listed"));
    let ran = run(etcdplan(dir.path()).args(["show", "saved.json", "--max-listed", "4"]));
    assert!(
        ran.stdout
            .contains("… 4 more to update not listed (--max-listed 4); etcdplan show saved.json lists them all"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains("  … 50 more to create not listed"),
        "{}",
        ran.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn budget_limited_markdown_of_ten_thousand_changes() {
    // 10,000 creates, 2,000 updates and 1,000 deletes: more than one comment holds.
    let (_src, _dst, dir) = mixed(10_000, 2_000, 1_000).await;
    let args = [
        "plan",
        "plan.yaml",
        "--format",
        "markdown",
        "--out",
        "saved.json",
    ];
    let ran = run(etcdplan(dir.path()).args(args));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout.chars().count() <= 65_000);
    // Every delete fits; updates and creates share the rest fairly.
    assert_eq!(ran.stdout.matches("\n- /app/z-delete/").count(), 1_000);
    let updates = ran.stdout.matches("\n~ /app/m-update/").count();
    let creates = ran.stdout.matches("\n+ /app/a-create/").count();
    assert!(updates > 300 && creates > 150, "{updates} {creates}");
    snapshot("markdown_budget_limited", &ran.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_whose_diff_shows_nothing_says_the_bytes_differ() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed([("/app/j", r#"{"a":1,"b":2}"#)]).await;
    dst.seed([("/app/j", r#"{"b": 2, "a": 1}"#)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /app/\non_conflict: overwrite\n",
    );
    for format in ["text", "markdown"] {
        let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--format", format]));
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
        assert!(
            ran.stdout.contains(
                "the bytes differ, but not in this view (JSON key order, spacing or duplicate keys): (16 bytes, sha256 "
            ),
            "{format}: {}",
            ran.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conflicts_come_before_deletes_and_source_deletes_before_creates() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed([
        ("/app/a-new", "1"),
        ("/app/m-clash", "source"),
        ("/app/n-moved", "2"),
    ])
    .await;
    dst.seed([("/app/m-clash", "destination"), ("/app/z-gone", "3")])
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(
        dir.path(),
        &src,
        &dst,
        "prefixes:\n  - from: /app/\nprune: true\non_conflict: keep\ndelete_source: true\n",
    );
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    snapshot("text_conflicts_and_moves", &ran.stdout);
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--format", "markdown"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let md = &ran.stdout;
    let at = |s: &str| md.find(s).unwrap_or(usize::MAX);
    let order = [
        "<summary>1 conflicting, left as is<",
        "<summary>1 to delete<",
        "<summary>2 to delete from the source (move mode)<",
        "<summary>2 to create<",
    ];
    for pair in order.windows(2) {
        assert!(at(pair[0]) < at(pair[1]), "{pair:?} in {md}");
    }
}
