//! A private PostgreSQL server for a test: `initdb` into a temp dir owned by the
//! `postgres` user (the server refuses to run as root), started with `pg_ctl` on a free
//! 127.0.0.1 port, stopped on drop (or by the test, to make the database go away).

use std::path::PathBuf;
use std::process::Command;

pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
    running: bool,
}

/// The directory holding `initdb` and `pg_ctl`: `$PG_BIN`, else Debian's.
fn pg_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PG_BIN") {
        return bin.into();
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "these tests need PostgreSQL and found none in /usr/lib/postgresql: install it \
             with `sudo apt-get install postgresql` (Debian/Ubuntu), or set PG_BIN to the \
             directory holding initdb and pg_ctl"
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root.
fn run(bin: &std::path::Path, tool: &str, args: &[String]) -> std::process::Output {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    };
    cmd.args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"))
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = pg_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown of the PostgreSQL test dir to postgres");
        }
        let data = dir.path().join("pg").display().to_string();
        let out = run(
            &bin,
            "initdb",
            &[
                "-D".into(),
                data,
                "-A".into(),
                "trust".into(),
                "-U".into(),
                "ludus".into(),
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Postgres {
            dir,
            port: super::free_port(),
            bin,
            running: false,
        };
        pg.resume();
        pg
    }

    /// Starts the server (again, on the same data and port).
    pub fn resume(&mut self) {
        let data = self.dir.path().join("pg").display().to_string();
        let log = self.dir.path().join("pg.log").display().to_string();
        let opts = format!(
            "-p {} -k {} -h 127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let out = run(
            &self.bin,
            "pg_ctl",
            &[
                "-D".into(),
                data,
                "-l".into(),
                log.clone(),
                "-o".into(),
                opts,
                "-w".into(),
                "start".into(),
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.running = true;
    }

    /// Stops the server at once (`-m immediate`: connections are cut, as in a crash).
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let data = self.dir.path().join("pg").display().to_string();
        let _ = run(
            &self.bin,
            "pg_ctl",
            &[
                "-D".into(),
                data,
                "-m".into(),
                "immediate".into(),
                "-w".into(),
                "stop".into(),
            ],
        );
        self.running = false;
    }

    /// A URL for a fresh database called `name` on this server.
    pub async fn database(&self, name: &str) -> String {
        use sqlx::ConnectOptions;
        let admin = format!("postgres://ludus@127.0.0.1:{}/postgres", self.port);
        let mut conn = admin
            .parse::<sqlx::postgres::PgConnectOptions>()
            .unwrap()
            .connect()
            .await
            .expect("connecting to the test PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("creating a test database");
        format!("postgres://ludus@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
