//! Untrusted input against real etcd servers: an edited saved plan, a plan
//! file changed after review, signed plans, sensitive values, and strings
//! from the source data. Each attack is refused before any write: both
//! clusters' revisions stay where they were.

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Cluster, etcdplan, run, write_file, write_plan};
use serde_json::{Value, json};

const KEY: &str = "0123456789abcdef0123456789abcdef-test-signing-key";

/// A loopback listener standing in for a foreign host: it counts every
/// connection made to it (none may be).
fn foreign_host() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if conn.is_ok() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (url, seen)
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json")
}

fn write_json(path: &std::path::Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).expect("json")).expect("write");
}

/// Both clusters' revisions, to prove nothing was written.
async fn revisions(src: &Cluster, dst: &Cluster) -> (i64, i64) {
    (src.revision().await, dst.revision().await)
}

/// The source holds /app/a and /app/b; the destination /app/old (which the
/// plan, without prune, must never delete) and /other/x (outside every `to`).
async fn setup(rest: &str) -> (Cluster, Cluster, tempfile::TempDir) {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed([("/app/a", "value-a"), ("/app/b", "value-b")])
        .await;
    dst.seed([("/app/old", "keep-me"), ("/other/x", "not-yours")])
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, rest);
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--out", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    (src, dst, dir)
}

fn changes(v: &mut Value) -> &mut Vec<Value> {
    v["report"]["changes"].as_array_mut().expect("changes")
}

/// A saved plan's JSON with its lists last, as etcdplan writes it: the
/// head (plan file, mappings, undo) comes first, so the entries are checked
/// as they are read. (serde_json writes keys sorted, `changes` first, which
/// leaves the head behind the lists: the entries are then checked in a
/// second pass.)
fn lists_last(v: &Value) -> String {
    let members = |m: &serde_json::Map<String, Value>,
                   last: &[&str],
                   inner: &dyn Fn(&str, &Value) -> String| {
        let mut keys: Vec<&String> = m.keys().filter(|k| !last.contains(&k.as_str())).collect();
        keys.extend(
            last.iter()
                .filter_map(|l| m.get_key_value(*l).map(|(k, _)| k)),
        );
        let body: Vec<String> = keys
            .iter()
            .map(|k| format!("{}: {}", Value::from(k.as_str()), inner(k, &m[k.as_str()])))
            .collect();
        format!("{{\n{}\n}}", body.join(",\n"))
    };
    let plain = |_: &str, v: &Value| serde_json::to_string_pretty(v).expect("json");
    let top = v.as_object().expect("object");
    members(top, &["report"], &|k, v| match (k, v.as_object()) {
        ("report", Some(report)) => members(report, &["changes", "source_deletes"], &plain),
        _ => plain(k, v),
    })
}

/// Applies an edited copy of saved.json and expects a refusal naming
/// `code`: written both ways (see [`lists_last`]), refused the same way.
async fn refused(
    src: &Cluster,
    dst: &Cluster,
    dir: &std::path::Path,
    edit: impl FnOnce(&mut Value),
    code: &str,
    what: &str,
) {
    let mut v = read_json(&dir.join("saved.json"));
    edit(&mut v);
    let mut told = Vec::new();
    for (text, checked) in [
        (
            serde_json::to_vec_pretty(&v).expect("json"),
            "entries are checked in a second pass",
        ),
        (
            lists_last(&v).into_bytes(),
            "entries were checked as it was read",
        ),
    ] {
        std::fs::write(dir.join("edited.json"), text).expect("write");
        let before = revisions(src, dst).await;
        let ran = run(etcdplan(dir)
            .env("ETCDPLAN_LOG", "etcdplan=debug")
            .args(["apply", "edited.json"]));
        assert_eq!(ran.code, Some(1), "{what}: {}\n{}", ran.stdout, ran.stderr);
        assert!(ran.stderr.contains(code), "{what}: {}", ran.stderr);
        assert_eq!(revisions(src, dst).await, before, "{what}: nothing written");
        // What it told, without the log lines (timestamped).
        let error: Vec<&str> = ran
            .stderr
            .lines()
            .filter(|l| !(l.starts_with("20") && l.contains("Z ")))
            .collect();
        if code.ends_with("tampered") {
            assert!(
                ran.stderr.contains(checked),
                "{what}: not «{checked}»: {}",
                ran.stderr
            );
        }
        told.push(error.join("\n"));
    }
    assert_eq!(told[0], told[1], "{what}: refused alike both ways");
}

#[tokio::test(flavor = "multi_thread")]
async fn edited_change_lists_are_refused_before_any_write() {
    let (src, dst, dir) = setup("prefixes:\n  - from: /app/\n").await;
    let d = dir.path();
    let tampered = "etcdplan::saved_plan::tampered";
    let delete = |key: &str, source_key: &str| {
        json!({"action": "delete", "key": key, "source_key": source_key, "mapping": 0,
               "sensitive": false, "destination_mod_revision": 2,
               "destination_value_sha256": "00".repeat(32), "destination_value_size": 7})
    };
    let d_old = delete("/app/old", "/app/old");
    refused(
        &src,
        &dst,
        d,
        |v| changes(v).push(d_old),
        tampered,
        "a delete without prune",
    )
    .await;
    let d_other = delete("/other/x", "/other/x");
    refused(
        &src,
        &dst,
        d,
        |v| changes(v).insert(0, d_other),
        tampered,
        "a delete outside `to`",
    )
    .await;
    let moved = |v: &mut Value| changes(v)[0]["key"] = json!("/other/evil");
    refused(
        &src,
        &dst,
        d,
        moved,
        tampered,
        "a create moved out of its mapping",
    )
    .await;
    let mapping7 = |v: &mut Value| changes(v)[0]["mapping"] = json!(7);
    refused(&src, &dst, d, mapping7, tampered, "mapping 7 of 1").await;
    let twice = |v: &mut Value| {
        let first = changes(v)[0].clone();
        changes(v).insert(0, first);
    };
    refused(&src, &dst, d, twice, tampered, "a change listed twice").await;
    let summary = |v: &mut Value| {
        let n = v["report"]["summary"]["create"].as_u64().expect("n");
        v["report"]["summary"]["create"] = json!(n - 1);
    };
    refused(&src, &dst, d, summary, tampered, "a summary that disagrees").await;
    let source_delete = |v: &mut Value| {
        v["report"]["source_deletes"] = json!([{"source_key": "/app/a", "key": "/app/a",
            "mapping": 0, "mod_revision": 2, "value_sha256": "00".repeat(32)}]);
        v["report"]["summary"]["delete_source"] = json!(1);
    };
    refused(
        &src,
        &dst,
        d,
        source_delete,
        tampered,
        "source deletes without move mode",
    )
    .await;
    let bad_hex = |v: &mut Value| v["report"]["plan"]["file_sha256"] = json!("é".repeat(40));
    refused(
        &src,
        &dst,
        d,
        bad_hex,
        "plan_file_changed",
        "a non-hex file hash",
    )
    .await;
    for format in ["text", "markdown"] {
        let ran = run(etcdplan(d).args(["show", "edited.json", "--format", format]));
        assert_eq!(ran.code, Some(0), "show --format {format}: {}", ran.stderr);
    }

    // The untouched saved plan still applies, and leaves /app/old alone.
    let ran = run(etcdplan(d).args(["apply", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(dst.dump(b"/app/").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_of_a_key_the_source_holds_is_refused() {
    // With prune, a forged delete of a key the source still has (and the
    // plan would copy) must not go through.
    let (src, dst, dir) =
        setup("prefixes:\n  - from: /app/\nprune: true\non_conflict: overwrite\n").await;
    dst.seed([("/app/a", "dest-a")]).await;
    let ran = run(etcdplan(dir.path()).args(["plan", "plan.yaml", "--out", "saved.json"]));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let forge = |v: &mut Value| {
        for c in changes(v).iter_mut() {
            if c["key"] == "/app/a" {
                let rev = c["destination_mod_revision"].clone();
                *c = json!({"action": "delete", "key": "/app/a", "source_key": "/app/a",
                    "mapping": 0, "sensitive": false, "destination_mod_revision": rev,
                    "destination_value_sha256": c["destination_value_sha256"].clone(),
                    "destination_value_size": 6});
            }
        }
        v["report"]["summary"]["update"] = json!(0);
        v["report"]["summary"]["delete"] = json!(2);
        v["report"]["mappings"][0]["summary"]["update"] = json!(0);
        v["report"]["mappings"][0]["summary"]["delete"] = json!(2);
    };
    refused(
        &src,
        &dst,
        dir.path(),
        forge,
        "etcdplan::saved_plan::tampered",
        "a delete the source contradicts",
    )
    .await;
    assert_eq!(dst.dump(b"/app/a").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plan_file_on_disk_steers_never_the_artifact() {
    let (src, dst, dir) = setup("prefixes:\n  - from: /app/\n").await;
    let d = dir.path();
    let (foreign, seen) = foreign_host();
    // Text planted in the artifact naming another host, with credentials.
    let planted = format!(
        "version: 1\nsource:\n  endpoints: [{foreign}]\ndestination:\n  endpoints: [{foreign}]\n  auth:\n    username: root\n    password_env: CI_DEPLOY_TOKEN\nprefixes:\n  - from: /app/\n    to: /stolen/\n"
    );
    let mut v = read_json(&d.join("saved.json"));
    v["plan_file_text"] = json!(planted);
    write_json(&d.join("planted.json"), &v);
    // A plan file of the attacker's, and the artifact pointing at it.
    write_file(d, "evil.yaml", &planted);
    v["report"]["plan"]["path"] = json!("evil.yaml");
    write_json(&d.join("pointed.json"), &v);

    let before = revisions(&src, &dst).await;
    let ran = run(etcdplan(d)
        .env("CI_DEPLOY_TOKEN", "s3cret")
        .args(["apply", "pointed.json"]));
    assert_eq!(ran.code, Some(1), "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stderr.contains("plan_file_changed"), "{}", ran.stderr);
    assert_eq!(revisions(&src, &dst).await, before);

    // A plan file changed after review: an exclude added, or garbage.
    let reviewed = std::fs::read_to_string(d.join("plan.yaml")).expect("plan");
    write_file(
        d,
        "plan.yaml",
        &format!("{reviewed}    exclude: [/app/b]\n"),
    );
    let ran = run(etcdplan(d).args(["apply", "saved.json"]));
    assert_eq!(ran.code, Some(1), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stderr.contains("changed since this plan was made"),
        "{}",
        ran.stderr
    );
    write_file(d, "plan.yaml", "not: [a plan");
    let ran = run(etcdplan(d).args(["apply", "saved.json"]));
    assert_eq!(ran.code, Some(1), "{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(revisions(&src, &dst).await, before);

    // With the reviewed file back, the planted text is ignored: the real
    // destination is written and the foreign host sees nothing.
    write_file(d, "plan.yaml", &reviewed);
    let ran = run(etcdplan(d)
        .env("CI_DEPLOY_TOKEN", "s3cret")
        .args(["apply", "planted.json"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(dst.dump(b"/app/").await.len(), 3);
    assert!(!ran.stdout.contains("s3cret") && !ran.stderr.contains("s3cret"));
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "no connection to the foreign host"
    );

    // From another folder, the plan file is named with --plan-file.
    let other = tempfile::tempdir().expect("tempdir");
    let saved = d.join("saved.json");
    let ran = run(etcdplan(other.path()).args(["apply"]).arg(&saved));
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    // The error says where it looked, in full, and how to name the file.
    let looked = other.path().join("plan.yaml");
    assert!(
        ran.stderr
            .contains("etcdplan::saved_plan::plan_file_missing")
            && ran
                .stderr
                .contains(&format!("(looked for {})", looked.display()))
            && ran.stderr.contains("--plan-file"),
        "{}",
        ran.stderr
    );
    let ran = run(etcdplan(other.path())
        .arg("apply")
        .arg(&saved)
        .arg("--plan-file")
        .arg(d.join("plan.yaml")));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_plans_are_checked_when_a_key_is_set() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed([("/app/a", "value-a")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write_plan(d, &src, &dst, "prefixes:\n  - from: /app/\n");
    let plan = |out: &str, key: Option<&str>| {
        let mut cmd = etcdplan(d);
        if let Some(k) = key {
            cmd.env("ETCDPLAN_SIGNING_KEY", k);
        }
        let ran = run(cmd.args(["plan", "plan.yaml", "--out", out]));
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    };
    plan("signed.json", Some(KEY));
    plan("unsigned.json", None);
    let text = std::fs::read_to_string(d.join("signed.json")).expect("read");
    assert!(text.contains("\"signature\": \"hmac-sha256:"), "{text}");
    // One byte of whitespace changed.
    write_file(d, "edited.json", &text.replacen("\n  ", "\n   ", 3));

    let before = revisions(&src, &dst).await;
    for (file, key, code) in [
        ("edited.json", Some(KEY), "bad_signature"),
        ("unsigned.json", Some(KEY), "saved_plan::unsigned"),
        ("signed.json", None, "saved_plan::no_key"),
        ("signed.json", Some("short"), "weak_key"),
        (
            "signed.json",
            Some("another-key-of-enough-length-0123456789"),
            "bad_signature",
        ),
    ] {
        let mut cmd = etcdplan(d);
        cmd.env_remove("ETCDPLAN_SIGNING_KEY");
        if let Some(k) = key {
            cmd.env("ETCDPLAN_SIGNING_KEY", k);
        }
        let ran = run(cmd.args(["apply", file]));
        assert_eq!(ran.code, Some(1), "{file}: {}\n{}", ran.stdout, ran.stderr);
        assert!(ran.stderr.contains(code), "{file}: {}", ran.stderr);
        assert!(!ran.stderr.contains(KEY), "the key is never shown");
    }
    assert_eq!(revisions(&src, &dst).await, before);
    // With a key, the plan file the artifact names is opened only after
    // its signature holds: its entries are checked in the second pass.
    let ran = run(etcdplan(d)
        .env("ETCDPLAN_SIGNING_KEY", KEY)
        .env("ETCDPLAN_LOG", "etcdplan=debug")
        .args(["apply", "signed.json"]));
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stderr.contains("entries are checked in a second pass"),
        "{}",
        ran.stderr
    );
    assert_eq!(dst.dump(b"/app/").await.len(), 1);
}
