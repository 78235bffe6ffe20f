//! Shared test setup: a runtime and rooms with the real example games, and a player
//! that reads its room events.

#![allow(dead_code)]

pub mod cluster;
pub mod postgres;
pub mod tls;

use ludus::guest_build::example_game_bytes;
use ludus::rooms::{PlayerEvents, RoomEvent, RoomHandle, Rooms, RoomsConfig};
use ludus::runtime::{Module, Runtime, RuntimeLimits};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Rooms on a small runtime, checkpointing often so recovery tests need not wait.
pub fn rooms() -> Rooms {
    rooms_with(RoomsConfig::default())
}

/// Like [`rooms`], with other settings (the worker count and checkpoint interval are
/// always the test ones).
pub fn rooms_with(cfg: RoomsConfig) -> Rooms {
    let limits = RuntimeLimits {
        max_instances: 64,
        ..RuntimeLimits::default()
    };
    let rt = Runtime::new(limits).expect("runtime");
    let cfg = RoomsConfig {
        workers: 2,
        checkpoint_interval: Duration::from_millis(100),
        ..cfg
    };
    Rooms::new(rt, cfg).expect("rooms")
}

/// Compiles an example game (building the guests first if needed).
pub async fn load(rooms: &Rooms, game: &str) -> Arc<Module> {
    let bytes = example_game_bytes(game).expect("building the example games");
    rooms
        .runtime()
        .load(bytes)
        .await
        .unwrap_or_else(|e| panic!("loading {game}: {e}"))
}

/// Loads and installs an example game; returns its module.
pub async fn install(rooms: &Rooms, game: &str) -> Arc<Module> {
    let module = load(rooms, game).await;
    rooms.install(game, module.clone());
    module
}

/// Loads the example game `build` and installs it as `game` (arena's TypeScript build
/// `arena-ts` as `arena`, say); returns its module.
pub async fn install_as(rooms: &Rooms, game: &str, build: &str) -> Arc<Module> {
    let module = load(rooms, build).await;
    rooms.install(game, module.clone());
    module
}

/// A new room of an installed game, with the default config.
pub async fn room(rooms: &Rooms, game: &str) -> RoomHandle {
    room_with(rooms, game, None).await
}

/// A new room of an installed game with the given config (JSON), or the default one.
pub async fn room_with(rooms: &Rooms, game: &str, config: Option<&str>) -> RoomHandle {
    let req = ludus::rooms::CreateRoom {
        game: game.into(),
        config: config.map(str::to_owned),
        ..Default::default()
    };
    rooms
        .create(req)
        .await
        .unwrap_or_else(|e| panic!("creating a {game} room: {e}"))
}

pub struct Player {
    pub id: u64,
    pub rx: PlayerEvents,
}

pub async fn join(room: &RoomHandle, id: u64) -> Player {
    let (tx, rx) = ludus::mailbox::channel(1024);
    room.join(id, &format!("player-{id}"), tx)
        .await
        .unwrap_or_else(|e| panic!("join {id}: {e}"));
    Player { id, rx }
}

impl Player {
    /// The next event, failing the test after `wait`.
    pub async fn event(&mut self, wait: Duration) -> RoomEvent {
        tokio::time::timeout(wait, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("player {} got no event within {wait:?}", self.id))
            .unwrap_or_else(|| panic!("player {}'s queue closed", self.id))
    }

    /// The next game message, decoded as JSON.
    pub async fn json(&mut self) -> Value {
        match self.event(Duration::from_secs(5)).await {
            RoomEvent::Message { bytes, .. } => {
                serde_json::from_slice(&bytes).expect("game sent JSON")
            }
            other => panic!("player {} expected a message, got {other:?}", self.id),
        }
    }

    /// Skips messages until one satisfies `pred`; fails after `wait`.
    pub async fn until(&mut self, wait: Duration, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = tokio::time::timeout(left, self.json())
                .await
                .unwrap_or_else(|_| {
                    panic!("player {}: no matching message within {wait:?}", self.id)
                });
            if pred(&msg) {
                return msg;
            }
        }
    }

    /// Drops whatever is queued.
    pub fn drain(&mut self) {
        while self.rx.try_recv().is_some() {}
    }
}

/// Arena: this player's entry in a snapshot.
pub fn avatar(snapshot: &Value, id: u64) -> Option<&Value> {
    snapshot["players"]
        .as_array()?
        .iter()
        .find(|p| p["id"] == id)
}

pub fn input(seq: u64, dx: i64, dy: i64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "seq": seq, "dx": dx, "dy": dy })).unwrap()
}

/// Headless Chromium and the directory of the Playwright scripts (with Playwright
/// installed); a missing one fails with how to install it.
pub fn browser_tools() -> (String, std::path::PathBuf) {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "headless Chromium not found at {chromium}: install it with `apt-get install chromium` (or set CHROMIUM)"
    );
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/tests");
    assert!(
        tests.join("node_modules/playwright-core").exists(),
        "Playwright is not installed: run `npm ci --prefix {}`",
        tests.display()
    );
    (chromium, tests)
}

/// The next arena snapshot (a JSON message of `room` with a `tick`) a client gets,
/// failing after 30 s. Frames of other rooms and other messages are skipped.
pub async fn arena_snapshot(client: &mut ludus::client::Client, room: &str) -> Value {
    use ludus::gateway::pb::server_frame::Body as Out;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let frame = tokio::time::timeout_at(deadline, client.recv())
            .await
            .unwrap_or_else(|_| panic!("no snapshot of {room} within 30 s"))
            .expect("connected (or resumed)");
        if let Some(Out::Message(m)) = frame.body
            && m.room_id == room
        {
            let v: Value = serde_json::from_slice(&m.payload).expect("arena sends JSON");
            if v.get("tick").is_some() {
                return v;
            }
        }
    }
}

/// A real node on 127.0.0.1 with example games copied into a temp dir (so a test can
/// rewrite a module file). Returns the server and the dir holding `<game>.wasm`.
pub async fn serve(
    games: &[&str],
    tweak: impl FnOnce(&mut ludus::config::Config),
) -> (ludus::server::Server, tempfile::TempDir) {
    let (config, dir) = serve_config(games, tweak);
    let server = ludus::server::start(config).await.expect("server starts");
    (server, dir)
}

/// The config [`serve`] starts a node with (for a test that expects the start to fail).
pub fn serve_config(
    games: &[&str],
    tweak: impl FnOnce(&mut ludus::config::Config),
) -> (ludus::config::Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = ludus::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ludus::config::Config::default()
    };
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    config.runtime.max_instances = 64;
    config.rooms.workers = 2;
    // Tests log many guests in from 127.0.0.1; the limits have tests of their own.
    config.gateway.guest_login_burst = 10_000;
    config.auth.secret = Some("a test secret of enough length: 32 bytes or more".into());
    config.data_dir = dir.path().join("data");
    for game in games {
        let path = dir.path().join(format!("{game}.wasm"));
        std::fs::write(
            &path,
            example_game_bytes(game).expect("building the example games"),
        )
        .unwrap();
        config.games.insert(
            game.to_string(),
            ludus::config::GameConfig {
                module: path,
                policy: ludus::rooms::SwapPolicy::AllRooms,
            },
        );
    }
    tweak(&mut config);
    (config, dir)
}

/// Replaces a file the way a build or an editor does: write aside, then rename.
pub fn replace_file(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A private etcd on free 127.0.0.1 ports with its data in a temp dir; killed on drop.
pub struct Etcd {
    child: Option<std::process::Child>,
    pub url: String,
    peer_url: String,
    dir: tempfile::TempDir,
    /// Serving clients over TLS with these files, and asking for client certificates.
    tls: Option<EtcdTlsFiles>,
    /// The user and password once authentication is on (see [`Etcd::enable_auth`]).
    user: Option<(String, String)>,
}

/// The files of an etcd that speaks TLS: its own certificate and the CA its clients'
/// certificates must come from, and a client certificate for the test's own calls.
#[derive(Clone)]
pub struct EtcdTlsFiles {
    pub ca: std::path::PathBuf,
    pub server: ludus::tls::CertFiles,
    pub client: ludus::tls::CertFiles,
}

/// The etcd binary: `$ETCD_BIN`, else `etcd` on PATH or in /usr/bin.
fn etcd_binary() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("ETCD_BIN") {
        return bin.into();
    }
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("etcd"))
            .collect::<Vec<_>>()
    });
    on_path
        .chain([std::path::PathBuf::from("/usr/bin/etcd")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "these tests need etcd and found none on PATH: install it with \
                 `sudo apt-get install etcd-server` (Debian/Ubuntu), or set ETCD_BIN"
            )
        })
}

/// A port that is free now, for a server a test starts. It is drawn from below the
/// kernel's ephemeral range: a port the kernel hands out for `bind(0)` can be taken
/// as the source port of any outgoing connection (and the tests make thousands)
/// between this call and the server's bind, as a CI run once saw etcd fail on.
/// Ports already handed out in this process are not handed out again.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = if ephemeral_start > 12_000 {
        (10_000, ephemeral_start)
    } else {
        (ephemeral_start.max(1024), 65_535)
    };
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = fastrand::u16(low..high);
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port found in {low}..{high} after 1000 tries")
}

impl Etcd {
    pub async fn start() -> Etcd {
        Etcd::start_with(None).await
    }

    /// An etcd serving clients over TLS only, with client certificates required
    /// (`--client-cert-auth`).
    pub async fn start_tls(files: EtcdTlsFiles) -> Etcd {
        Etcd::start_with(Some(files)).await
    }

    async fn start_with(tls: Option<EtcdTlsFiles>) -> Etcd {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut etcd = Etcd {
            child: None,
            url: String::new(),
            peer_url: String::new(),
            dir: tempfile::tempdir().expect("temp dir"),
            tls,
            user: None,
        };
        // Another process can still take a port between `free_port` and etcd's bind:
        // then etcd exits at once saying so, and it starts again on other ports.
        for attempt in 1.. {
            let (client, peer) = (free_port(), free_port());
            etcd.url = format!("{scheme}://127.0.0.1:{client}");
            etcd.peer_url = format!("http://127.0.0.1:{peer}");
            match etcd.try_run().await {
                Ok(()) => break,
                Err(log) if attempt < 5 && log.contains("address already in use") => {
                    let _ = std::fs::remove_dir_all(etcd.dir.path().join("data"));
                }
                Err(log) => panic!("etcd did not answer on {}; its log:\n{log}", etcd.url),
            }
        }
        etcd
    }

    /// How the test's own client connects: with the client certificate and the user
    /// when the etcd asks for them.
    fn options(&self) -> Option<etcd_client::ConnectOptions> {
        let mut options = etcd_client::ConnectOptions::new();
        if let Some(tls) = &self.tls {
            let read = |p: &std::path::Path| std::fs::read(p).expect("a test certificate file");
            options = options.with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(read(&tls.ca)))
                    .identity(etcd_client::Identity::from_pem(
                        read(&tls.client.cert),
                        read(&tls.client.key),
                    )),
            );
        }
        if let Some((user, password)) = &self.user {
            options = options.with_user(user, password);
        }
        Some(options)
    }

    /// Turns etcd's authentication on with a `root` user of `password`; the test's own
    /// client logs in as it from then on.
    pub async fn enable_auth(&mut self, password: &str) {
        let mut client = self.client().await;
        client
            .user_add("root", password, None)
            .await
            .expect("adding the root user");
        client
            .user_grant_role("root", "root")
            .await
            .expect("granting root its role");
        client.auth_enable().await.expect("enabling etcd auth");
        self.user = Some(("root".into(), password.into()));
    }

    /// Starts (or restarts, on the same data and ports) the etcd process and waits
    /// until it answers.
    pub async fn run(&mut self) {
        if let Err(log) = self.try_run().await {
            panic!(
                "etcd did not answer on {} within 20 s; its log:\n{log}",
                self.url
            );
        }
    }

    /// [`Etcd::run`], giving back etcd's log when it does not answer within 20 s or
    /// exits.
    async fn try_run(&mut self) -> Result<(), String> {
        let child = std::process::Command::new(etcd_binary())
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={}", self.url))
            .arg(format!("--advertise-client-urls={}", self.url))
            .arg(format!("--listen-peer-urls={}", self.peer_url))
            .arg(format!("--initial-advertise-peer-urls={}", self.peer_url))
            .arg(format!("--initial-cluster=test={}", self.peer_url))
            .args(self.tls.iter().flat_map(|tls| {
                [
                    format!("--cert-file={}", tls.server.cert.display()),
                    format!("--key-file={}", tls.server.key.display()),
                    format!("--trusted-ca-file={}", tls.ca.display()),
                    "--client-cert-auth".to_owned(),
                ]
            }))
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("etcd.log")).unwrap())
            .spawn()
            .expect("starting etcd");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_secs(1),
                etcd_client::Client::connect([&self.url], self.options()),
            )
            .await
                && c.get("probe", None).await.is_ok()
            {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || std::time::Instant::now() >= deadline {
                if !exited && let Some(mut child) = self.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                self.child = None;
                return Err(
                    std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to the etcd process: a stopped etcd hangs every
    /// call instead of refusing it.
    pub fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let ok = std::process::Command::new("kill")
                .args([format!("-{signal}"), child.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill -{signal} etcd");
        }
    }

    /// Kills the etcd process (its data stays for [`Etcd::run`]).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([&self.url], self.options())
            .await
            .expect("connecting to the test etcd")
    }

    /// Keys under `prefix`.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let opts = etcd_client::GetOptions::new()
            .with_prefix()
            .with_keys_only();
        let resp = self
            .client()
            .await
            .get(prefix, Some(opts))
            .await
            .expect("get");
        resp.kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until the node whose gateway is `addr` answers HTTP (`GET /v1/games` succeeds),
/// failing the test after `within`.
pub async fn node_answers(addr: std::net::SocketAddr, within: Duration) {
    eventually(within, "the node answers", async || {
        reqwest::get(format!("http://{addr}/v1/games"))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
}

/// Polls `check` every 50 ms until it holds, failing with `what` after `wait`.
pub async fn eventually(wait: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + wait;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "not within {wait:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next frame on `c` that is not a room message, within `wait`.
pub async fn next_answer(
    c: &mut ludus::client::Client,
    wait: Duration,
) -> ludus::gateway::pb::server_frame::Body {
    use ludus::gateway::pb::server_frame::Body as Out;
    loop {
        let frame = tokio::time::timeout(wait, c.recv())
            .await
            .expect("an answer in time")
            .expect("connected");
        match frame.body {
            Some(Out::Message(_)) | None => {}
            Some(body) => return body,
        }
    }
}

/// Writes example game `game` to `<dir>/<game>.wasm` and returns its path.
pub fn module_file(dir: &tempfile::TempDir, game: &str) -> String {
    let path = dir.path().join(format!("{game}.wasm"));
    std::fs::write(&path, example_game_bytes(game).unwrap()).unwrap();
    path.display().to_string()
}

/// A `ludus` process the test started; killed (SIGKILL) when dropped.
pub struct Proc(pub std::process::Child);

impl Proc {
    pub fn new(child: std::process::Child) -> Proc {
        Proc(child)
    }

    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Sends `signal` (`TERM`, `INT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.0.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// The exit status, once the process has exited within `wait`.
    pub async fn exited_within(&mut self, wait: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            if let Some(status) = self.0.try_wait().expect("waiting for the process") {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
