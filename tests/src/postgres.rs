//! The throwaway PostgreSQL server `scripts/test.sh` starts (`scripts/postgres.sh`), and a
//! database of its own for each test.

use tokio_postgres::NoTls;

const URL_VAR: &str = "TASKER_TEST_POSTGRES_URL";

/// The server's URL (its `postgres` database), on 127.0.0.1.
pub fn url() -> String {
    match std::env::var(URL_VAR) {
        Ok(url) if url.contains("@127.0.0.1:") => url,
        Ok(other) => panic!("{URL_VAR}={other} must point at 127.0.0.1"),
        Err(_) => panic!(
            "{URL_VAR} is not set: run the tests with scripts/test.sh, which starts PostgreSQL \
             (scripts/postgres.sh) and exports it"
        ),
    }
}

/// A new, empty database on the test server; its URL.
pub async fn fresh_database() -> String {
    fresh_database_at(&url()).await
}

/// A new, empty database on the server whose `postgres` database is at `admin`; its URL.
pub async fn fresh_database_at(admin: &str) -> String {
    let (client, connection) = tokio_postgres::connect(admin, NoTls)
        .await
        .unwrap_or_else(|err| panic!("connect to {admin}: {err}"));
    tokio::spawn(connection);
    let name = format!(
        "tasker_test_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|err| panic!("create database {name}: {err}"));
    let (base, _) = admin.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{name}")
}

/// A plain connection to the database at `url`, for what a test checks behind the store.
pub async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|err| panic!("connect to {url}: {err}"));
    tokio::spawn(connection);
    client
}

/// A PostgreSQL server of a test's own (`scripts/postgres.sh`), for tests that stop and start
/// it; stopped and removed when dropped.
pub struct Cluster {
    /// `postgres://postgres@127.0.0.1:<port>/postgres`
    pub url: String,
    pid: u32,
    dir: std::path::PathBuf,
}

impl Cluster {
    /// Starts a new cluster on a free port, with fsync off (tests measure behaviour).
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts a new cluster on a free port with PostgreSQL's durable defaults (fsync and
    /// synchronous commits on), as the benchmark measures it.
    pub fn start_durable() -> Self {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Self {
        let output = Self::script(&[], durable);
        let line = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut fields = line.split_whitespace();
        let (Some(pid), Some(url), Some(dir)) = (fields.next(), fields.next(), fields.next())
        else {
            panic!("scripts/postgres.sh printed {line:?}");
        };
        Self {
            url: url.to_owned(),
            pid: pid.parse().expect("a pid"),
            dir: dir.into(),
        }
    }

    /// A fast shutdown (every connection cut, as a crash or a failover does to its clients);
    /// returns once the server has exited.
    pub fn stop(&self) {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &self.pid.to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::path::Path::new(&format!("/proc/{}", self.pid)).exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "PostgreSQL did not stop"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Starts the stopped server again on the same port, data and settings.
    pub fn start_again(&mut self) {
        let dir = self.dir.display().to_string();
        let output = Self::script(&["--start-again", &dir], false);
        self.pid = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("the new pid");
    }

    fn script(args: &[&str], durable: bool) -> std::process::Output {
        let script = crate::workspace_root().join("scripts/postgres.sh");
        let output = std::process::Command::new(&script)
            .args(args)
            .env("TASKER_POSTGRES_DURABLE", if durable { "1" } else { "0" })
            .output()
            .unwrap_or_else(|err| panic!("run {}: {err}", script.display()));
        assert!(
            output.status.success(),
            "{} {args:?}: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
