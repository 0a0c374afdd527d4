//! A real `tasker` process, started from the binary cargo built for this workspace.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The `tasker` binary next to this test executable (`target/<profile>/tasker`).
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/tasker
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let binary = dir.join(format!("tasker{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p tasker-cli` (scripts/test.sh does)",
        binary.display()
    );
    binary
}

/// Runs `tasker <args>` to completion with `envs`, within a minute.
pub fn run(args: &[&str], envs: &[(&str, String)]) -> Output {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (key, value) in envs {
        command.env(key, value);
    }
    output_within(&mut command, Duration::from_secs(60))
}

/// Runs `command` to completion and returns what it printed; kills it and fails the test when
/// it is still running after `limit` (a command expected to refuse and exit that starts
/// instead would otherwise hold the test forever).
pub fn output_within(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the command");
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the command") {
            break status;
        }
        if started.elapsed() >= limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} was still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// A running `tasker serve`; killed when dropped.
pub struct Serve {
    child: Child,
    /// `http://127.0.0.1:<port>`
    pub base: String,
}

impl Serve {
    /// Starts `tasker serve <args> --listen 127.0.0.1:<free port>` and waits for `/healthz`.
    pub async fn start(args: &[&str], envs: &[(&str, String)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("find a free port")
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut command = Command::new(binary());
        command
            .arg("serve")
            .args(args)
            .args(["--listen", &listen])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("TASKER_TEST_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null());
        for (key, value) in envs {
            command.env(key, value);
        }
        let child = command.spawn().expect("start tasker serve");
        let serve = Self {
            child,
            base: format!("http://{listen}"),
        };
        let client = reqwest::Client::new();
        let health = format!("{}/healthz", serve.base);
        crate::eventually(
            "tasker serve to answer /healthz",
            Duration::from_secs(30),
            || {
                let request = client.get(&health).send();
                async move { request.await.ok().filter(|r| r.status().is_success()) }
            },
        )
        .await;
        serve
    }

    /// Sends SIGINT (as Ctrl-C does) and waits up to `limit` for the process to exit.
    pub fn interrupt(&mut self, limit: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("send SIGINT");
        assert!(status.success(), "kill -INT failed");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for tasker") {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "tasker did not stop within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
