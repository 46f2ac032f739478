//! In a terminal (a pty from util-linux `script`): the progress bar counts
//! with separators, and its last frame shows every key settled before the
//! summary line is printed.

mod common;

use std::process::Command;

use common::{Cluster, write_plan};

#[tokio::test(flavor = "multi_thread")]
async fn the_progress_bar_ends_on_the_final_count_before_the_summary() {
    let (src, dst) = tokio::join!(Cluster::plaintext(), Cluster::plaintext());
    src.seed((0..12_000).map(|i| (format!("/p/{i:05}"), format!("v{i}"))))
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_plan(dir.path(), &src, &dst, "prefixes:\n  - from: /p/\n");
    let bin = assert_cmd::cargo::cargo_bin("etcdplan");
    let command = format!(
        "{} apply plan.yaml --auto-approve --max-listed 1 --rate 12000",
        bin.display()
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .current_dir(dir.path())
            .env("TERM", "xterm")
            .output()
            .expect("run script (util-linux)")
    })
    .await
    .expect("script thread");
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    assert!(out.status.success(), "{text}");
    let last_frame = text
        .rfind("12,000/12,000 keys")
        .unwrap_or_else(|| panic!("a final frame with separators: {text}"));
    let summary = text
        .find("Apply complete: 12,000 created")
        .expect("summary");
    assert!(
        last_frame < summary,
        "the bar ends before the summary: {text}"
    );
    assert!(text.contains(" keys/s"), "{text}");
}
