//! Nodes of a test cluster: real servers on 127.0.0.1 sharing a test etcd.

use super::{Etcd, serve};
use ludus::client::Client;
use ludus::gateway::pb::server_frame::Body as Out;
use ludus::server::Server;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

pub const SECRET: &str = "the test cluster's shared secret, 32+ bytes";

/// A node of the cluster at `etcd` under `prefix`, serving arena.
pub async fn node(
    etcd: &Etcd,
    prefix: &str,
    id: &str,
    ttl: Duration,
) -> (Server, tempfile::TempDir) {
    node_with(etcd, prefix, id, ttl, |_| {}).await
}

pub async fn node_with(
    etcd: &Etcd,
    prefix: &str,
    id: &str,
    ttl: Duration,
    tweak: impl FnOnce(&mut ludus::config::Config),
) -> (Server, tempfile::TempDir) {
    node_serving(etcd, prefix, id, ttl, &["arena"], tweak).await
}

pub async fn node_serving(
    etcd: &Etcd,
    prefix: &str,
    id: &str,
    ttl: Duration,
    games: &[&str],
    tweak: impl FnOnce(&mut ludus::config::Config),
) -> (Server, tempfile::TempDir) {
    let (url, prefix, id) = (etcd.url.clone(), prefix.to_owned(), id.to_owned());
    serve(games, move |c| {
        c.cluster.etcd = vec![url];
        c.cluster.prefix = Some(prefix);
        c.cluster.node_id = Some(id);
        c.cluster.lease_ttl = ttl;
        c.cluster.secret = Some(SECRET.into());
        tweak(c);
    })
    .await
}

/// Waits for the answer to a create: `Ok(())` when joined, `Err(message)` when refused.
pub async fn create_outcome(client: &mut Client) -> Result<(), String> {
    loop {
        let frame = tokio::time::timeout(WAIT, client.recv())
            .await
            .expect("an answer in time")
            .expect("connected");
        match frame.body {
            Some(Out::Joined(_)) => return Ok(()),
            Some(Out::Error(e)) => return Err(e.message),
            _ => {}
        }
    }
}

/// Runs `ludus <args>` against the cluster; returns (success, stdout, stderr).
pub fn ludus(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ludus"))
        .args(args)
        .env("LUDUS_LOG", "warn")
        .env("LUDUS_CLUSTER__SECRET", SECRET)
        .output()
        .expect("running ludus");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
