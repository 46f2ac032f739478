//! `etcdplan validate`: every kind of bad plan gets a diagnostic with its own
//! code that points at the right line and column, and exit code 1.

mod common;

use std::path::Path;

use assert_cmd::Command;
use etcdplan::planfile::{self, Env};

const DEST: &str = "destination:\n  endpoints: [http://127.0.0.1:3379]\n";
const SIDES: &str = "source:\n  endpoints: [http://127.0.0.1:2379]\ndestination:\n  endpoints: [http://127.0.0.1:3379]\n";

fn etcdplan(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("etcdplan").expect("binary");
    cmd.current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("SOURCE_ETCD_PASSWORD")
        .env_remove("NOT_SET_ANYWHERE");
    cmd
}

/// Validates `yaml` and expects exit 1, the diagnostic `code`, and the first
/// label at `line:col` of `bad.yaml`.
fn rejects(yaml: &str, code: &str, line: u32, col: u32) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    rejects_in(dir.path(), yaml, code, line, col)
}

fn rejects_in(dir: &Path, yaml: &str, code: &str, line: u32, col: u32) -> String {
    std::fs::write(dir.join("bad.yaml"), yaml).expect("write plan");
    // --strict: the environment too, so that TLS files and variables count.
    let out = etcdplan(dir)
        .args(["validate", "--strict", "bad.yaml"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "exit code; stderr:\n{stderr}");
    assert!(
        stderr.contains(&format!("etcdplan::plan_file::{code}")),
        "expected code {code} in:\n{stderr}"
    );
    let at = format!("bad.yaml:{line}:{col}]");
    assert!(stderr.contains(&at), "expected {at} in:\n{stderr}");
    assert!(
        stderr.contains("help:"),
        "every diagnostic has help:\n{stderr}"
    );
    stderr
}

#[test]
fn a_valid_plan_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("ok.yaml"),
        format!("version: 1\n{SIDES}prefixes:\n  - from: /a/\n"),
    )
    .expect("write");
    let out = etcdplan(dir.path())
        .args(["validate", "ok.yaml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok.yaml is valid: 1 mapping"));
}

#[test]
fn missing_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = etcdplan(dir.path())
        .args(["validate", "nope.yaml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("etcdplan::plan_file::read"));
}

#[test]
fn yaml_syntax_error() {
    rejects(
        &format!("version: 1\n{SIDES}prefixes: [{{from: /a/\n"),
        "yaml_syntax",
        6,
        12,
    );
}

#[test]
fn unknown_field() {
    let err = rejects(
        &format!("version: 1\n{SIDES}prefxes:\n  - from: /a/\n"),
        "unknown_field",
        6,
        1,
    );
    assert!(err.contains("`prefxes`"), "{err}");
}

#[test]
fn unknown_nested_field() {
    rejects(
        &format!("version: 1\n{SIDES}prefixes:\n  - from: /a/\n    excludes: [/a/b/]\n"),
        "unknown_field",
        8,
        5,
    );
}

#[test]
fn duplicate_key() {
    let err = rejects(
        "version: 1\nsource:\n  endpoints: [http://127.0.0.1:2379]\n  endpoints: [http://127.0.0.1:2380]\ndestination:\n  endpoints: [http://127.0.0.1:3379]\nprefixes:\n  - from: /a/\n",
        "duplicate_key",
        4,
        3,
    );
    assert!(
        !err.contains("DuplicateKeyPolicy"),
        "no developer advice: {err}"
    );
}

#[test]
fn missing_required_field() {
    let err = rejects(
        "version: 1\nsource:\n  endpoints: [http://127.0.0.1:2379]\nprefixes:\n  - from: /a/\n",
        "missing_field",
        4,
        1,
    );
    assert!(err.contains("destination"), "{err}");
}

#[test]
fn wrong_type() {
    rejects(
        &format!("version: 1\n{SIDES}prefixes:\n  - from: /a/\nprune: sometimes\n"),
        "wrong_type",
        8,
        8,
    );
}

#[test]
fn unsupported_version() {
    rejects(
        &format!("version: 2\n{SIDES}prefixes:\n  - from: /a/\n"),
        "unsupported_version",
        1,
        10,
    );
}

#[test]
fn empty_from() {
    let err = rejects(
        &format!("version: 1\n{SIDES}prefixes:\n  - from: \"\"\n"),
        "empty_from",
        7,
        11,
    );
    assert!(err.contains("all_keys: true"), "{err}");
}

#[test]
fn whole_keyspace_is_spelled_all_keys() {
    let plan = planfile::parse(
        &format!("version: 1\n{SIDES}prefixes:\n  - all_keys: true\n    to: /backup/\n"),
        Path::new("p.yaml"),
        &NoEnv,
    )
    .expect("valid");
    assert_eq!(plan.mappings[0].from, b"");
    assert_eq!(plan.mappings[0].to, b"/backup/");
}

#[test]
fn exclude_outside_from() {
    rejects(
        &format!("version: 1\n{SIDES}prefixes:\n  - from: /a/\n    exclude: [/a/ok/, /b/]\n"),
        "exclude_outside_from",
        8,
        23,
    );
}

#[test]
fn overlapping_to_ranges() {
    let err = rejects(
        &format!(
            "version: 1\n{SIDES}prefixes:\n  - from: /a/\n    to: /x/\n  - from: /b/\n    to: /x/b/\n"
        ),
        "overlapping_to",
        8,
        9,
    );
    assert!(
        err.contains("bad.yaml:10:9") || err.contains("10 │"),
        "{err}"
    );
}

#[test]
fn mapping_onto_itself() {
    rejects(
        "version: 1\nsource:\n  endpoints: [http://127.0.0.1:2379]\ndestination:\n  endpoints: [http://127.0.0.1:2379]\nprefixes:\n  - from: /a/\n    to: /a/b/\n",
        "onto_itself",
        7,
        11,
    );
}

#[test]
fn rename_within_one_cluster_is_fine() {
    planfile::parse(
        "version: 1\nsource:\n  endpoints: [http://127.0.0.1:2379]\ndestination:\n  endpoints: [http://127.0.0.1:2379]\nprefixes:\n  - from: /a/\n    to: /b/\n",
        Path::new("p.yaml"),
        &NoEnv,
    )
    .expect("valid");
}

#[test]
fn endpoint_not_http() {
    rejects(
        &format!(
            "version: 1\nsource:\n  endpoints: [etcd.internal:2379]\n{}prefixes:\n  - from: /a/\n",
            DEST
        ),
        "bad_endpoint",
        3,
        15,
    );
}

#[test]
fn endpoint_without_port() {
    let err = rejects(
        &format!(
            "version: 1\nsource:\n  endpoints: [https://etcd.internal]\n{}prefixes:\n  - from: /a/\n",
            DEST
        ),
        "bad_endpoint",
        3,
        15,
    );
    assert!(err.contains("no port"), "{err}");
}

#[test]
fn tls_with_http_endpoint() {
    rejects(
        &format!(
            "version: 1\nsource:\n  endpoints: [http://127.0.0.1:2379]\n  tls:\n    server_name: x\n{}prefixes:\n  - from: /a/\n",
            DEST
        ),
        "tls_without_https",
        5,
        5,
    );
}

#[test]
fn mixed_schemes() {
    rejects(
        &format!(
            "version: 1\nsource:\n  endpoints: [http://127.0.0.1:2379, https://127.0.0.1:2380]\n{}prefixes:\n  - from: /a/\n",
            DEST
        ),
        "mixed_schemes",
        3,
        14,
    );
}

fn tls_plan(tls: &str) -> String {
    format!(
        "version: 1\nsource:\n  endpoints: [https://127.0.0.1:2379]\n  tls:\n{tls}destination:\n  endpoints: [http://127.0.0.1:3379]\nprefixes:\n  - from: /a/\n"
    )
}

fn certs(dir: &Path) -> common::TlsFiles {
    common::TlsFiles::generate(&dir.join("certs"))
}

#[test]
fn cert_without_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    rejects_in(
        dir.path(),
        &tls_plan("    cert: certs/client.pem\n"),
        "cert_without_key",
        5,
        11,
    );
}

#[test]
fn key_without_cert() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    rejects_in(
        dir.path(),
        &tls_plan("    key: certs/client-key.pem\n"),
        "key_without_cert",
        5,
        10,
    );
}

#[test]
fn tls_file_missing() {
    let err = rejects(
        &tls_plan("    ca: certs/nope.pem\n"),
        "tls_file_missing",
        5,
        9,
    );
    assert!(err.contains("certs/nope.pem does not exist"), "{err}");
    // The help names the folder the path was taken from, in full.
    assert!(
        err.contains("relative to the folder it is in, here /"),
        "{err}"
    );
}

#[test]
fn tls_file_unreadable() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A directory cannot be read as a file, even by root.
    std::fs::create_dir_all(dir.path().join("certs/ca.pem")).expect("dir");
    rejects_in(
        dir.path(),
        &tls_plan("    ca: certs/ca.pem\n"),
        "tls_file_unreadable",
        5,
        9,
    );
}

#[test]
fn key_where_a_certificate_belongs() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    let err = rejects_in(
        dir.path(),
        &tls_plan("    cert: certs/client-key.pem\n    key: certs/client-key.pem\n"),
        "tls_file_wrong_kind",
        5,
        11,
    );
    assert!(
        err.contains("PrivateKey"),
        "names what the file holds: {err}"
    );
}

#[test]
fn certificate_where_a_key_belongs() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    rejects_in(
        dir.path(),
        &tls_plan("    cert: certs/client.pem\n    key: certs/client.pem\n"),
        "tls_file_wrong_kind",
        6,
        10,
    );
}

#[test]
fn not_pem_at_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_file(dir.path(), "ca.pem", "hello\n");
    let err = rejects_in(
        dir.path(),
        &tls_plan("    ca: ca.pem\n"),
        "tls_file_wrong_kind",
        5,
        9,
    );
    assert!(err.contains("no PEM block"), "{err}");
}

#[test]
fn good_tls_files_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    std::fs::write(
        dir.path().join("ok.yaml"),
        tls_plan(
            "    ca: certs/ca.pem\n    cert: certs/client.pem\n    key: certs/client-key.pem\n",
        ),
    )
    .expect("write");
    let out = etcdplan(dir.path())
        .args(["validate", "ok.yaml"])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn password_env_not_set() {
    let err = rejects(
        &format!(
            "version: 1\n{SIDES}  auth:\n    username: migrator\n    password_env: NOT_SET_ANYWHERE\nprefixes:\n  - from: /a/\n"
        ),
        "password_env_unset",
        8,
        19,
    );
    assert!(err.contains("NOT_SET_ANYWHERE"), "{err}");
}

#[test]
fn password_env_set_passes_and_is_never_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("ok.yaml"),
        format!("version: 1\n{SIDES}  auth:\n    username: migrator\n    password_env: SOURCE_ETCD_PASSWORD\nprefixes:\n  - from: /a/\n"),
    )
    .expect("write");
    let out = etcdplan(dir.path())
        .env("SOURCE_ETCD_PASSWORD", "hunter2-secret")
        .args(["-vvv", "validate", "ok.yaml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("hunter2"), "{all}");
}

#[test]
fn on_conflict_other_value() {
    let err = rejects(
        &format!("version: 1\n{SIDES}prefixes:\n  - from: /a/\non_conflict: merge\n"),
        "bad_value",
        8,
        14,
    );
    assert!(err.contains("overwrite, keep, fail"), "{err}");
}

#[test]
fn non_utf8_prefix_with_escapes() {
    let plan = planfile::parse(
        &format!(
            "version: 1\n{SIDES}prefixes:\n  - from: '/bin/\\xff\\x00/'\n    to: /text/\\\\x/\nsensitive: [/bin/\\xfe]\n"
        ),
        Path::new("p.yaml"),
        &NoEnv,
    )
    .expect("valid");
    assert_eq!(plan.mappings[0].from, b"/bin/\xff\x00/");
    assert_eq!(plan.mappings[0].to, b"/text/\\x/");
    assert_eq!(plan.sensitive[0], b"/bin/\xfe");
    assert_eq!(
        plan.mappings[0].to_destination(b"/bin/\xff\x00/k\x80"),
        Some(b"/text/\\x/k\x80".to_vec())
    );
}

#[test]
fn bad_escape_in_prefix() {
    rejects(
        &format!("version: 1\n{SIDES}prefixes:\n  - from: '/a/\\q'\n"),
        "bad_key_escape",
        7,
        11,
    );
}

#[test]
fn several_problems_are_all_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("bad.yaml"),
        format!(
            "version: 3\n{SIDES}prefixes:\n  - from: \"\"\n  - from: /b/\n    exclude: [/c/]\n"
        ),
    )
    .expect("write");
    let out = etcdplan(dir.path())
        .args(["validate", "bad.yaml"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("3 problems"), "{err}");
    for code in ["unsupported_version", "empty_from", "exclude_outside_from"] {
        assert!(err.contains(code), "{code} in {err}");
    }
}

#[test]
fn every_problem_is_reported_at_once_each_at_its_line() {
    // Two misspelt fields, a bad value and a broken rule in one file.
    let yaml = "version: 1\nsource:\n  endpoints: [http://127.0.0.1:2379]\n  tsl:\n    ca: ca.pem\ndestination:\n  endpoints: [http://127.0.0.1]\nprefixes:\n  - from: /a/\n    too: /b/\non_conflict: overwrit\n";
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("bad.yaml"), yaml).expect("write");
    let out = etcdplan(dir.path())
        .args(["validate", "bad.yaml"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("4 problems"), "{err}");
    let found: Vec<(&str, &str)> = [
        ("unknown field `tsl`", "bad.yaml:4:3]"),
        ("has no port", "bad.yaml:7:15]"),
        ("unknown field `too`", "bad.yaml:10:5]"),
        ("unknown variant `overwrit`", "bad.yaml:11:14]"),
    ]
    .into_iter()
    .filter(|(what, at)| !(err.contains(what) && err.contains(at)))
    .collect();
    assert!(found.is_empty(), "missing {found:?} in:\n{err}");
    // In file order.
    let at = |s: &str| err.find(s).unwrap_or(usize::MAX);
    assert!(at("`tsl`") < at("has no port") && at("has no port") < at("`too`"));
    assert!(at("`too`") < at("`overwrit`"));
}

#[test]
fn validate_checks_the_file_and_strict_the_environment() {
    // A lint job without secrets: the variable is unset and no TLS file is here.
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = "version: 1\nsource:\n  endpoints: [https://127.0.0.1:2379]\n  tls:\n    ca: certs/ca.pem\n  auth:\n    username: migrator\n    password_env: NOT_SET_ANYWHERE\ndestination:\n  endpoints: [http://127.0.0.1:3379]\nprefixes:\n  - from: /a/\n";
    std::fs::write(dir.path().join("plan.yaml"), yaml).expect("write");
    let out = etcdplan(dir.path())
        .args(["validate", "plan.yaml"])
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("password variables and TLS files not checked: --strict checks them"),
        "{stdout}"
    );
    // --strict reports both, in one run.
    let out = etcdplan(dir.path())
        .args(["validate", "--strict", "plan.yaml"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("2 problems"), "{err}");
    assert!(
        err.contains("etcdplan::plan_file::tls_file_missing"),
        "{err}"
    );
    assert!(
        err.contains("etcdplan::plan_file::password_env_unset"),
        "{err}"
    );
    // Commands that connect keep failing on what --strict checks.
    for cmd in ["plan", "check"] {
        let out = etcdplan(dir.path())
            .args([cmd, "plan.yaml"])
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        assert!(err.contains("password_env_unset"), "{cmd}: {err}");
    }
}

struct NoEnv;

impl Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

/// The committed schema is what the types generate.
#[test]
fn committed_schema_matches_the_types() {
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/plan.schema.json"),
    )
    .expect("schemas/plan.schema.json");
    assert_eq!(
        committed,
        etcdplan::schema::plan_schema_json(),
        "schemas/plan.schema.json is stale: run `cargo run -- schema > schemas/plan.schema.json`"
    );
}

/// Every example plan starts with the schema modeline and validates, given
/// the certificate files and password variables it names.
#[test]
fn every_example_plan_validates() {
    let plans = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans");
    let work = tempfile::tempdir().expect("tempdir");
    certs(work.path());
    let mut seen = 0;
    for entry in std::fs::read_dir(&plans).expect("plans/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        seen += 1;
        let text = std::fs::read_to_string(&path).expect("read plan");
        assert!(
            text.starts_with("# yaml-language-server: $schema=../schemas/plan.schema.json\n"),
            "{} lacks the schema modeline",
            path.display()
        );
        // As a lint job sees it: the file where it is, no secrets at all.
        let out = etcdplan(&plans)
            .env_remove("DEST_ETCD_PASSWORD")
            .arg("validate")
            .arg(&path)
            .output()
            .expect("run");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        // Where it runs: --strict, given its certificates and variables.
        let copy = work.path().join(path.file_name().expect("name"));
        std::fs::write(&copy, &text).expect("copy");
        let out = etcdplan(work.path())
            .env("SOURCE_ETCD_PASSWORD", "x")
            .env("DEST_ETCD_PASSWORD", "y")
            .args(["validate", "--strict"])
            .arg(&copy)
            .output()
            .expect("run");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(seen >= 4, "expected the example plans, found {seen}");
}
