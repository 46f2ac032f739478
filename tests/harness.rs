//! Proves the harness: keys go in and come out through etcd-client over each
//! kind of cluster it starts.

mod common;

use common::{Cluster, ClusterSpec, UserSpec};
use etcd_client::{Client, ConnectOptions, Permission};

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_put_and_read() {
    let cluster = Cluster::plaintext().await;
    cluster
        .seed((0..300).map(|i| (format!("/h/{i:04}"), format!("v{i}"))))
        .await;
    let kvs = cluster.dump(b"/h/").await;
    assert_eq!(kvs.len(), 300);
    assert_eq!(kvs[7], (b"/h/0007".to_vec(), b"v7".to_vec()));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_requires_a_client_certificate() {
    let cluster = Cluster::tls().await;
    assert!(cluster.endpoint(0).starts_with("https://"));
    let mut c = cluster.client().await;
    c.put("/tls/a", "1", None).await.expect("put over TLS");
    assert_eq!(cluster.dump(b"/tls/").await.len(), 1);

    // Without the client certificate the server refuses the handshake.
    let tls = cluster.tls.as_ref().expect("tls files");
    let ca = std::fs::read(&tls.ca).expect("ca");
    let opts = ConnectOptions::new()
        .with_connect_timeout(std::time::Duration::from_secs(2))
        .with_timeout(std::time::Duration::from_secs(2))
        .with_tls(
            etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(ca)),
        );
    let refused = match Client::connect(cluster.endpoints(), Some(opts)).await {
        Ok(mut c) => c.get("/tls/a", None).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a client without a certificate must be refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn rbac_user_is_limited_to_its_prefix() {
    let cluster = Cluster::start(ClusterSpec {
        members: 1,
        tls: false,
        enable_v2: false,
        users: vec![UserSpec {
            name: "reader",
            password: "readerpw",
            grants: vec![Permission::read("/data/").with_prefix()],
        }],
        ..Default::default()
    })
    .await;
    cluster.seed([("/data/x", "1"), ("/other/y", "2")]).await;
    let mut reader = cluster
        .client_as("reader", "readerpw")
        .await
        .expect("login");
    assert_eq!(
        reader.get("/data/x", None).await.expect("read").kvs().len(),
        1
    );
    let denied = reader
        .get("/other/y", None)
        .await
        .expect_err("no read outside /data/");
    assert!(denied.to_string().contains("permission denied"), "{denied}");
    let denied = reader
        .put("/data/x", "2", None)
        .await
        .expect_err("no write");
    assert!(denied.to_string().contains("permission denied"), "{denied}");
    assert!(
        cluster.client_as("reader", "wrong").await.is_err(),
        "bad password refused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn three_members_survive_one_stopped() {
    let mut cluster = Cluster::start(ClusterSpec {
        members: 3,
        ..Default::default()
    })
    .await;
    assert_eq!(cluster.endpoints().len(), 3);
    cluster.seed([("/m/a", "1")]).await;
    cluster.stop_member(0);
    assert_eq!(cluster.running(), 2);
    let mut c = cluster.client().await;
    // If the stopped member led, writes time out until a new leader is elected.
    let mut result = c.put("/m/b", "2", None).await;
    for _ in 0..30 {
        if result.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        result = c.put("/m/b", "2", None).await;
    }
    result.expect("write with two of three");
    assert_eq!(cluster.dump(b"/m/").await.len(), 2);
}
