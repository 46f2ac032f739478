//! Running `etcdplan apply --follow` as a child: start it, stop it with a
//! signal, and collect what it printed, always within a deadline.

use std::path::Path;
use std::process::Child;
use std::time::Duration;

/// Starts `apply plan.yaml --auto-approve --follow` in `dir`, with `extra`.
pub fn spawn_follow(dir: &Path, extra: &[&str]) -> Child {
    super::etcdplan_child(dir)
        .args([
            "apply",
            "plan.yaml",
            "--auto-approve",
            "--follow",
            "--max-listed",
            "3",
            "--progress-every",
            "0.5",
        ])
        .args(extra)
        .spawn()
        .expect("spawn follow")
}

/// Waits for a child with a deadline; returns (exit code, stdout, stderr).
pub fn finish(child: Child) -> (Option<i32>, String, String) {
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(90)) {
        Ok(Ok(out)) => (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        _ => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(id as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("follow did not stop within 90 s");
        }
    }
}

/// Sends SIGINT to a running child (follow stops cleanly on it).
pub fn interrupt(child: &Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
}
