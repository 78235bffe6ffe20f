//! TLS everywhere a node talks: the public port (HTTPS, `wss://` and gRPC), etcd (TLS with a
//! client certificate, and a user and password), and the links between nodes (mutual
//! TLS under the cluster's CA). Certificates are made at run time with rcgen.

mod common;

use common::cluster::{SECRET, create_outcome, node_with};
use common::tls::{Ca, client_config};
use common::{Etcd, EtcdTlsFiles, eventually, serve, serve_config};
use futures_util::{SinkExt, StreamExt};
use ludus::client::{Client, ClientOptions};
use ludus::cluster::{ClusterConfig, EtcdTls, NodeTls};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// Sends one raw HTTP/1.1 request over TLS and reads the whole answer.
async fn https(tls: &TlsConnector, addr: SocketAddr, request: &str) -> std::io::Result<String> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut stream = tls.connect(name, tcp).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("an answer in time")?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn body(answer: &str) -> Value {
    let start = answer.find("\r\n\r\n").expect("a header end") + 4;
    serde_json::from_str(&answer[start..]).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_port_speaks_https_and_wss_with_the_configured_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new(certs.path(), "edge-ca");
    let files = ca.issue("node", &["localhost", "127.0.0.1"]);
    let (server, _dir) = serve(&["arena"], |c| c.gateway.tls = Some(files.clone())).await;
    assert!(server.url().starts_with("https://"), "{}", server.url());
    let addr = server.addr;
    let tls = TlsConnector::from(client_config(&ca.cert));

    let games = https(
        &tls,
        addr,
        "GET /v1/games HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(games.starts_with("HTTP/1.1 200"), "{games}");
    assert!(games.contains("arena"), "{games}");

    let login = json!({ "name": "secure" }).to_string();
    let answer = https(
        &tls,
        addr,
        &format!(
            "POST /v1/auth/guest HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{login}",
            login.len()
        ),
    )
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let token = body(&answer)["token"].as_str().unwrap().to_owned();

    // A WebSocket over the same TLS: welcome, create, joined.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = tls
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let url = format!(
        "wss://localhost:{}/v1/ws?token={token}&format=json",
        addr.port()
    );
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let welcome = match ws.next().await {
        Some(Ok(Message::Text(t))) => serde_json::from_str::<Value>(&t).unwrap(),
        other => panic!("no welcome over wss: {other:?}"),
    };
    assert!(welcome["body"]["welcome"].is_object(), "{welcome}");
    let create =
        json!({ "seq": 1, "body": { "create": { "game": "arena", "room_id": "sealed" } } });
    ws.send(Message::Text(create.to_string().into()))
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.contains("joined") => break,
                Some(Ok(_)) => continue,
                other => panic!("no joined frame over wss: {other:?}"),
            }
        }
    })
    .await
    .expect("joined within 10 s");
    assert!(server.rooms.get("sealed").is_some());

    // A gRPC game client on the same port: HTTP/2, chosen by ALPN.
    let pem = std::fs::read(&ca.cert).unwrap();
    let tls_config = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls_config)
        .unwrap()
        .connect()
        .await
        .expect("an HTTP/2 connection over TLS");
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let bearer = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", bearer);
    let mut frames = ludus::gateway::pb::play_client::PlayClient::new(channel)
        .play(request)
        .await
        .expect("the Play stream over TLS")
        .into_inner();
    let welcome = tokio::time::timeout(WAIT, frames.message())
        .await
        .expect("a welcome in time")
        .unwrap()
        .expect("a welcome");
    assert!(
        matches!(
            welcome.body,
            Some(ludus::gateway::pb::server_frame::Body::Welcome(_))
        ),
        "{welcome:?}"
    );
    drop(tx);

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /v1/games HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "plain HTTP was served on the TLS port: {}",
        String::from_utf8_lossy(&answer)
    );

    // A client that does not trust the node's CA refuses the connection.
    let stranger = Ca::new(certs.path(), "stranger-ca");
    let distrustful = TlsConnector::from(client_config(&stranger.cert));
    let error = https(
        &distrustful,
        addr,
        "GET /v1/games HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await
    .unwrap_err();
    assert!(
        error.to_string().contains("certificate"),
        "expected a certificate error: {error}"
    );

    // The node still serves after the failed handshakes.
    let again = https(
        &tls,
        addr,
        "GET /v1/games HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
    server.stop().await;
}

/// The error a node fails to start with under `tweak`.
async fn start_error(tweak: impl FnOnce(&mut ludus::config::Config)) -> String {
    let (config, _dir) = serve_config(&["arena"], tweak);
    match ludus::server::start(config).await {
        Ok(server) => {
            server.stop().await;
            panic!("the node started")
        }
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_certificate_setting_stops_the_node_with_the_file_named() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new(certs.path(), "ca");
    let one = ca.issue("one", &["localhost"]);
    let two = ca.issue("two", &["localhost"]);

    let missing = certs.path().join("nowhere.pem");
    let error = start_error(|c| {
        c.gateway.tls = Some(ludus::tls::CertFiles {
            cert: missing.clone(),
            key: one.key.clone(),
        })
    })
    .await;
    assert!(
        error.contains("gateway.tls") && error.contains("nowhere.pem"),
        "{error}"
    );

    let error = start_error(|c| {
        c.gateway.tls = Some(ludus::tls::CertFiles {
            cert: one.cert.clone(),
            key: two.key.clone(),
        })
    })
    .await;
    assert!(
        error.contains("does not go with") && error.contains("ca-one.pem"),
        "{error}"
    );

    let error = start_error(|c| {
        c.gateway.tls = Some(ludus::tls::CertFiles {
            cert: one.key.clone(),
            key: one.key.clone(),
        })
    })
    .await;
    assert!(
        error.contains("no certificate") && error.contains("ca-one-key.pem"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_a_client_certificate_and_a_password() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new(certs.path(), "etcd-ca");
    let client = ca.issue("node", &["node"]);
    let mut etcd = Etcd::start_tls(EtcdTlsFiles {
        ca: ca.cert.clone(),
        server: ca.issue("etcd", &["localhost", "127.0.0.1"]),
        client: client.clone(),
    })
    .await;
    assert!(etcd.url.starts_with("https://"));
    let password = "the root password of this etcd";
    etcd.enable_auth(password).await;
    let tls = EtcdTls {
        ca: ca.cert.clone(),
        cert: Some(client.cert.clone()),
        key: Some(client.key.clone()),
    };
    let prefix = "/ludus/tls-etcd/";
    let ttl = Duration::from_secs(5);
    let secure = |id: &str, tls: Option<EtcdTls>, password: &str| {
        let (url, id, password) = (etcd.url.clone(), id.to_owned(), password.to_owned());
        move |c: &mut ludus::config::Config| {
            c.cluster.etcd = vec![url];
            c.cluster.prefix = Some(prefix.into());
            c.cluster.node_id = Some(id);
            c.cluster.lease_ttl = ttl;
            c.cluster.secret = Some(SECRET.into());
            c.cluster.etcd_tls = tls;
            c.cluster.etcd_user = Some("root".into());
            c.cluster.etcd_password = Some(password);
        }
    };

    // With the certificate and the password: the node joins and its rooms are in etcd.
    let (a, _da) = serve(&["arena"], secure("a", Some(tls.clone()), password)).await;
    let mut player = Client::guest(a.addr, "p", ClientOptions::default())
        .await
        .unwrap();
    player.create("arena", "vault", "").await.unwrap();
    create_outcome(&mut player).await.unwrap();
    let keys = etcd.keys(prefix).await;
    assert!(
        keys.iter().any(|k| k.ends_with("nodes/a"))
            && keys.iter().any(|k| k.ends_with("rooms/vault")),
        "{keys:?}"
    );

    // `ludus status` reaches the same etcd with the same settings from the environment.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_ludus"))
        .args(["status", "--etcd", &etcd.url, "--prefix", prefix])
        .env("LUDUS_CLUSTER__ETCD_TLS__CA", &ca.cert)
        .env("LUDUS_CLUSTER__ETCD_TLS__CERT", &client.cert)
        .env("LUDUS_CLUSTER__ETCD_TLS__KEY", &client.key)
        .env("LUDUS_CLUSTER__ETCD_USER", "root")
        .env("LUDUS_CLUSTER__ETCD_PASSWORD", password)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success() && out.contains("1 nodes"),
        "status failed: {out}{}",
        String::from_utf8_lossy(&status.stderr)
    );

    // A wrong password, no client certificate, or no TLS settings at all: refused at
    // start, with the reason.
    let error = start_error(secure("b", Some(tls.clone()), "not the password")).await;
    assert!(error.contains("authentication failed"), "{error}");
    let no_cert = EtcdTls {
        cert: None,
        key: None,
        ..tls.clone()
    };
    let error = start_error(secure("c", Some(no_cert), password)).await;
    assert!(error.contains("client certificate"), "{error}");
    let error = start_error(secure("d", None, password)).await;
    assert!(error.contains("cluster.etcd_tls.ca"), "{error}");
    let keys = etcd.keys(prefix).await;
    assert!(
        !keys.iter().any(|k| ["nodes/b", "nodes/c", "nodes/d"]
            .iter()
            .any(|n| k.ends_with(n))),
        "a refused node registered: {keys:?}"
    );
    a.stop().await;
}

fn node_tls(ca: &Ca, trust: &std::path::Path, name: &str) -> NodeTls {
    let files = ca.issue(name, &["127.0.0.1", "localhost"]);
    NodeTls {
        ca: trust.to_owned(),
        cert: files.cert,
        key: files.key,
    }
}

fn link(tls: NodeTls) -> ludus::rpc::Link {
    ludus::rpc::Link::new(&ClusterConfig {
        secret: Some(SECRET.into()),
        tls: Some(tls),
        ..ClusterConfig::default()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_link_over_mutual_tls_and_refuse_a_certificate_from_another_ca() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new(certs.path(), "cluster-ca");
    let other = Ca::new(certs.path(), "other-ca");
    let etcd = Etcd::start().await;
    let prefix = "/ludus/mtls/";
    let ttl = Duration::from_secs(10);
    let with_tls = |tls: NodeTls| move |c: &mut ludus::config::Config| c.cluster.tls = Some(tls);
    let (a, _da) = node_with(
        &etcd,
        prefix,
        "a",
        ttl,
        with_tls(node_tls(&ca, &ca.cert, "a")),
    )
    .await;
    let (b, _db) = node_with(
        &etcd,
        prefix,
        "b",
        ttl,
        with_tls(node_tls(&ca, &ca.cert, "b")),
    )
    .await;

    // Play across the link: a room on b, a player on a.
    let mut host = Client::guest(b.addr, "host", ClientOptions::default())
        .await
        .unwrap();
    host.create("arena", "far", "").await.unwrap();
    create_outcome(&mut host).await.unwrap();
    let mut guest = Client::guest(a.addr, "guest", ClientOptions::default())
        .await
        .unwrap();
    guest.join("far").await.unwrap();
    create_outcome(&mut guest)
        .await
        .unwrap_or_else(|e| panic!("joining over mutual TLS: {e}"));
    eventually(WAIT, "b seats the player from a", async || {
        b.rooms.get("far").is_some_and(|r| r.info().seats == 2)
    })
    .await;

    // Calls to b's gRPC port: only a certificate of the cluster's CA gets in.
    let grpc = b.cluster.routing().nodes["b"].grpc.clone();
    let sha = b.rooms.active_module("arena").unwrap().sha256_hex();
    let member = link(node_tls(&ca, &ca.cert, "operator"));
    let bytes = ludus::rpc::fetch(&grpc, &member, &sha).await.unwrap();
    assert_eq!(ludus::rpc::sha256_hex(&bytes), sha);

    let plain = ludus::rpc::fetch(&grpc, &ludus::rpc::Link::plain(SECRET), &sha).await;
    assert!(plain.is_err(), "a plain-text call was answered");

    // Another CA's certificate, presented to b by a client that trusts the cluster CA:
    // b ends the handshake (under TLS 1.3 the client sees only the connection close).
    let foreign = ludus::rpc::fetch(&grpc, &link(node_tls(&other, &ca.cert, "x")), &sha).await;
    assert!(foreign.is_err(), "a certificate of another CA was let in");
    // A node of another CA altogether does not accept b's certificate either.
    let stranger = ludus::rpc::fetch(&grpc, &link(node_tls(&other, &other.cert, "y")), &sha)
        .await
        .unwrap_err();
    let stranger = format!("{stranger:#}");
    assert!(stranger.contains("certificate"), "{stranger}");

    // The refused handshakes did not stop b's gRPC port.
    assert!(ludus::rpc::fetch(&grpc, &member, &sha).await.is_ok());

    // A node with another CA's certificate joins etcd, but cannot play in b's rooms.
    let (c, _dc) = node_with(
        &etcd,
        prefix,
        "c",
        ttl,
        with_tls(node_tls(&other, &other.cert, "c")),
    )
    .await;
    let mut outsider = Client::guest(c.addr, "outsider", ClientOptions::default())
        .await
        .unwrap();
    outsider.join("far").await.unwrap();
    let refused = create_outcome(&mut outsider).await;
    assert!(
        refused.is_err(),
        "a node of another CA got a seat in b's room"
    );
    assert_eq!(b.rooms.get("far").unwrap().info().seats, 2);
    for node in [a, b, c] {
        node.stop().await;
    }
}
