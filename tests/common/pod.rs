//! A container of a Kubernetes Job, run the way its pod spec says, under
//! bubblewrap: a read-only root holding only the etcdplan binary and the
//! libraries it links (no shell, as in the distroless image); writable
//! mounts only for the manifest's `emptyDir` and writable volume claims;
//! ConfigMap and Secret contents as read-only files at their `mountPath`s;
//! the pod's user; only the environment the manifest names. The network is
//! the host's loopback, where the test's etcd servers listen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::Ran;

/// Where the image puts the binary (see the Dockerfile).
const BINARY: &str = "/usr/local/bin/etcdplan";

/// The contents of the pod's ConfigMaps and Secrets, and the claims'
/// folders (which outlive one run, as a volume claim does).
#[derive(Default)]
pub struct Objects {
    /// ConfigMap name -> file name -> contents.
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    /// Secret name -> key -> contents.
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Claim name -> folder on the host.
    pub claims: BTreeMap<String, PathBuf>,
}

/// The shared libraries `binary` links, from `ldd`.
fn libraries(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().expect("run ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn bwrap() -> PathBuf {
    let path = PathBuf::from("/usr/bin/bwrap");
    assert!(
        path.exists(),
        "bubblewrap is not installed: apt-get install bubblewrap, or run tests/run.sh"
    );
    path
}

/// Runs the container named `container` of the Job `job` (a parsed
/// manifest) in a sandbox shaped like its pod. `scratch` holds the
/// ConfigMap, Secret and emptyDir folders of this run.
pub fn run_container(job: &Value, container: &str, objects: &Objects, scratch: &Path) -> Ran {
    let pod = &job["spec"]["template"]["spec"];
    let c = pod["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == container))
        .unwrap_or_else(|| panic!("no container {container}"));
    let user = pod["securityContext"]["runAsUser"]
        .as_u64()
        .expect("runAsUser");
    let group = pod["securityContext"]["runAsGroup"]
        .as_u64()
        .unwrap_or(user);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    let binary = assert_cmd::cargo::cargo_bin("etcdplan");
    let mut cmd = Command::new(bwrap());
    // A tmpfs root, made read-only once every mount point exists.
    cmd.args(["--tmpfs", "/", "--proc", "/proc", "--dev", "/dev"]);
    cmd.arg("--ro-bind").arg(&binary).arg(BINARY);
    for lib in libraries(&binary) {
        cmd.arg("--ro-bind").arg(&lib).arg(&lib);
    }
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let (name, at) = (
            m["name"].as_str().expect("name"),
            m["mountPath"].as_str().expect("path"),
        );
        let read_only = m["readOnly"] == true;
        let volume = pod["volumes"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| v["name"] == name))
            .unwrap_or_else(|| panic!("no volume {name}"));
        let host = volume_folder(volume, objects, &scratch.join(name));
        let writable = !read_only
            && (volume.get("emptyDir").is_some() || volume.get("persistentVolumeClaim").is_some());
        cmd.arg(if writable { "--bind" } else { "--ro-bind" })
            .arg(&host)
            .arg(at);
    }
    cmd.args(["--dir", "/work", "--remount-ro", "/", "--chdir", "/work"]);
    cmd.args([
        "--unshare-user",
        "--unshare-pid",
        "--uid",
        &user.to_string(),
        "--gid",
        &group.to_string(),
    ]);
    cmd.arg("--clearenv");
    for e in c["env"].as_array().into_iter().flatten() {
        if let Some(value) = env_value(e, objects) {
            cmd.arg("--setenv")
                .arg(e["name"].as_str().expect("env name"))
                .arg(value);
        }
    }
    cmd.arg(BINARY);
    for a in c["args"].as_array().expect("args") {
        cmd.arg(a.as_str().expect("string arg"));
    }
    let out = cmd.output().expect("run bwrap");
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The host folder behind one volume of the pod.
fn volume_folder(volume: &Value, objects: &Objects, scratch: &Path) -> PathBuf {
    if let Some(name) = volume["configMap"]["name"].as_str() {
        let files = objects
            .config_maps
            .get(name)
            .unwrap_or_else(|| panic!("no ConfigMap {name}"));
        std::fs::create_dir_all(scratch).expect("mkdir");
        for (file, text) in files {
            std::fs::write(scratch.join(file), text).expect("write ConfigMap file");
        }
        return scratch.to_path_buf();
    }
    if let Some(name) = volume["secret"]["secretName"].as_str() {
        let keys = objects
            .secrets
            .get(name)
            .unwrap_or_else(|| panic!("no Secret {name}"));
        std::fs::create_dir_all(scratch).expect("mkdir");
        let mode = volume["secret"]["defaultMode"].as_u64().unwrap_or(0o644) as u32;
        for (key, bytes) in keys {
            let path = scratch.join(key);
            std::fs::write(&path, bytes).expect("write Secret file");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        return scratch.to_path_buf();
    }
    if volume.get("emptyDir").is_some() {
        std::fs::create_dir_all(scratch).expect("mkdir");
        return scratch.to_path_buf();
    }
    if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
        let dir = objects
            .claims
            .get(claim)
            .unwrap_or_else(|| panic!("no claim {claim}"));
        std::fs::create_dir_all(dir).expect("mkdir");
        return dir.clone();
    }
    panic!("a volume kind the sandbox does not know: {volume}");
}

/// An env entry's value: literal, or from a Secret key (`None` when an
/// optional Secret is missing, as Kubernetes leaves the variable unset).
fn env_value(e: &Value, objects: &Objects) -> Option<String> {
    if let Some(v) = e["value"].as_str() {
        return Some(v.to_string());
    }
    let r = &e["valueFrom"]["secretKeyRef"];
    let (name, key) = (
        r["name"].as_str().expect("secret name"),
        r["key"].as_str().expect("key"),
    );
    match objects.secrets.get(name).and_then(|s| s.get(key)) {
        Some(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        None if r["optional"] == true => None,
        None => panic!("the pod needs Secret {name} key {key}"),
    }
}
