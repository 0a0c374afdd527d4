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

/// A store over a new, empty database on the test server (a pool of 2 connections).
pub async fn fresh_store() -> tasker::store::postgres::PgStore {
    let url = fresh_database().await;
    tasker::store::postgres::PgStore::connect(&url, 2)
        .await
        .unwrap_or_else(|err| panic!("connect to {url}: {err}"))
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

    /// Restarts the server accepting TCP connections over TLS only, with a certificate for
    /// 127.0.0.1 signed by a certificate authority of its own (made by `openssl`); the path
    /// of that authority's PEM file.
    pub fn require_tls(&mut self) -> std::path::PathBuf {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        self.stop();
        let data = self.dir.join("data");
        let certs = self.dir.join("certs");
        std::fs::create_dir_all(&certs).expect("a folder for the certificates");
        let made = std::process::Command::new("bash")
            .current_dir(&certs)
            .args(["-euc", MAKE_CERTIFICATES])
            .output()
            .expect("run openssl");
        assert!(
            made.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let owner = std::fs::metadata(&data).expect("the data folder").uid();
        for file in ["server.pem", "server.key"] {
            let to = data.join(file);
            std::fs::copy(certs.join(file), &to).expect("copy into the data folder");
            std::os::unix::fs::chown(&to, Some(owner), None).expect("owned by the server");
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
                .expect("readable by the server only");
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("the server's configuration");
        std::io::Write::write_all(
            &mut conf,
            b"ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n",
        )
        .expect("TLS settings");
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .expect("TLS-only access rules");
        self.start_again();
        certs.join("ca.pem")
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

/// A certificate authority (`ca.pem`) and a server certificate for 127.0.0.1 it signed
/// (`server.pem`, `server.key`), valid for two days.
const MAKE_CERTIFICATES: &str = r#"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=Tasker test CA" \
  -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
  -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
  -extfile server.ext -out server.pem 2>/dev/null
"#;

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
