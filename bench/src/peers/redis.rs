//! A Redis server of the run's own for BullMQ, on 127.0.0.1 and a free port, its files in a
//! folder of its own; stopped when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a new server has to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How the server keeps its data.
#[derive(Debug, Clone, Copy)]
pub enum Persistence {
    /// Redis's defaults: RDB snapshots, no append-only file.
    Default,
    /// An append-only file written every second (`appendfsync everysec`).
    AofEverySec,
}

impl Persistence {
    /// The setting as the report names it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "Redis, default persistence (RDB snapshots)",
            Self::AofEverySec => "Redis, appendonly yes, appendfsync everysec",
        }
    }
}

/// A running `redis-server`.
pub struct Redis {
    child: Child,
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Starts `redis-server` with `persistence`; why not, when it cannot.
    pub fn start(persistence: Persistence) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|err| format!("a folder for Redis: {err}"))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|err| format!("a free port for Redis: {err}"))?
            .port();
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--dir"])
            .arg(dir.path())
            .args(["--daemonize", "no", "--logfile", "redis.log"]);
        if let Persistence::AofEverySec = persistence {
            command.args(["--appendonly", "yes", "--appendfsync", "everysec"]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|err| {
                format!("redis-server did not start ({err}): run scripts/setup-test-tools.sh")
            })?;
        let redis = Self {
            child,
            url: format!("redis://127.0.0.1:{port}"),
            _dir: dir,
        };
        let started = Instant::now();
        while !pong(port) {
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "redis-server did not answer on port {port} within 10 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(redis)
    }
}

/// True when a server on `port` answers `PING`.
fn pong(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut answer = [0; 7];
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .is_ok()
        && stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG\r\n"
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
