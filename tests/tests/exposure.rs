//! `tasker serve` where it listens, tried as an attacker would, against a real process: DNS
//! rebinding (a foreign `Host`) and cross-site pages (a foreign `Origin`) are refused, the API
//! is never served beyond loopback without a token unless asked, stalled clients are dropped,
//! and every answer carries the hardening headers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tasker_tests::process;

const TOKEN: &str = "exposure-token";
/// How long a `tasker serve` that must refuse to start may take to exit: one that started
/// instead is killed then, and the test fails.
const REFUSAL_WITHIN: Duration = Duration::from_secs(30);

/// A `tasker serve` started with exactly `args` and `envs` (SQLite in a temp dir); killed
/// when dropped.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

fn command(args: &[&str], envs: &[(&str, &str)], dir: &tempfile::TempDir) -> Command {
    let mut command = Command::new(process::binary());
    command
        .arg("serve")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("TASKER_DB_PATH", dir.path().join("tasker.db"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in envs {
        command.env(key, value);
    }
    command
}

impl Server {
    /// Starts `tasker serve --listen <host>:<free port> <args>` and waits for `/healthz`.
    fn start(host: &str, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let listen = format!("{host}:{port}");
        let mut full = vec!["--listen", &listen];
        full.extend_from_slice(args);
        let child = command(&full, envs, &dir)
            .spawn()
            .expect("start tasker serve");
        let server = Self {
            child,
            port,
            _dir: dir,
        };
        let started = Instant::now();
        while server.send("GET", "/healthz", "127.0.0.1", &[]).0 != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "tasker serve did not answer /healthz"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// One HTTP/1.1 request with `Host: host` (the port added) and `headers`; the status, the
    /// head and the body (status 0 when the connection fails).
    fn send(
        &self,
        method: &str,
        path: &str,
        host: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String, String) {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, String::new(), String::new());
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let body = if method == "POST" {
            r#"{"type":"sendWebhook","payload":{},"delaySeconds":3600}"#
        } else {
            ""
        };
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}:{}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        if method == "POST" {
            request.push_str("Content-Type: application/json\r\n");
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        if stream.write_all(request.as_bytes()).is_err() {
            return (0, String::new(), String::new());
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        (status, head.to_ascii_lowercase(), body.to_owned())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bearer() -> (&'static str, String) {
    ("Authorization", format!("Bearer {TOKEN}"))
}

#[test]
fn a_foreign_host_or_origin_is_refused_on_every_route_but_healthz() {
    let server = Server::start("127.0.0.1", &[], &[("TASKER_API_TOKEN", TOKEN)]);
    let (auth_name, auth_value) = bearer();
    let auth = [(auth_name, auth_value.as_str())];
    for (method, path) in tasker::api::ROUTES {
        let path = path.replace("{id}", "01JD0000000000000000000000");
        let (status, _, body) = server.send(method, &path, "rebind.attacker.example", &auth);
        if path == tasker::api::HEALTH_PATH {
            assert_eq!(status, 200, "{method} {path}");
            continue;
        }
        assert_eq!(status, 421, "{method} {path}: {body}");
        assert!(body.contains("host_not_allowed"), "{body}");
        assert!(
            body.contains("--allowed-host"),
            "the answer says how to allow a name: {body}"
        );
        // A page on another site, whatever Host it reaches the server by.
        let (status, _, body) = server.send(
            method,
            &path,
            "127.0.0.1",
            &[auth[0], ("Origin", "https://attacker.example")],
        );
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert!(body.contains("origin_not_allowed"), "{body}");
    }
    // Another page on this machine (a dev server on another port) is another origin.
    let (status, _, _) = server.send(
        "POST",
        "/tasks",
        "localhost",
        &[auth[0], ("Origin", "http://localhost:5173")],
    );
    assert_eq!(status, 403);
    for host in ["localhost", "127.0.0.1", "[::1]", "LocalHost", "localhost."] {
        let (status, _, body) = server.send("GET", "/stats", host, &auth);
        assert_eq!(status, 200, "{host}: {body}");
    }
    let origin = format!("http://localhost:{}", server.port);
    let (status, _, body) = server.send(
        "POST",
        "/tasks",
        "localhost",
        &[auth[0], ("Origin", &origin)],
    );
    assert_eq!(
        status, 201,
        "a page served from the API's own name may call it: {body}"
    );
}

#[test]
fn allowed_hosts_extend_the_list() {
    let server = Server::start(
        "127.0.0.1",
        &["--allowed-host", "tasker.test"],
        &[("TASKER_ALLOWED_HOSTS", "ops.tasker.test, other.test")],
    );
    for host in ["tasker.test", "ops.tasker.test", "other.test", "localhost"] {
        assert_eq!(server.send("GET", "/stats", host, &[]).0, 200, "{host}");
    }
    assert_eq!(server.send("GET", "/stats", "evil.test", &[]).0, 421);
}

#[test]
fn every_answer_is_hardened() {
    let server = Server::start("127.0.0.1", &[], &[("TASKER_API_TOKEN", TOKEN)]);
    let (auth_name, auth_value) = bearer();
    let with_token = [(auth_name, auth_value.as_str())];
    let none: [(&str, &str); 0] = [];
    let cases = [
        ("/stats", "localhost", &with_token[..], 200),
        ("/stats", "localhost", &none[..], 401),
        ("/nope", "localhost", &with_token[..], 404),
        ("/stats", "evil.test", &none[..], 421),
        ("/healthz", "localhost", &none[..], 200),
    ];
    for (path, host, headers, expected) in cases {
        let method = "GET";
        let (status, head, _) = server.send(method, path, host, headers);
        assert_eq!(status, expected, "{method} {path} {host}");
        for header in [
            "x-content-type-options: nosniff",
            "referrer-policy: no-referrer",
            "cache-control: no-store",
        ] {
            assert!(
                head.contains(header),
                "{method} {path} {host}: no `{header}` in\n{head}"
            );
        }
    }
}

#[test]
fn beyond_loopback_the_server_needs_a_token_or_an_explicit_flag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = format!("0.0.0.0:{}", free_port());
    let refused = |args: &[&str], envs: &[(&str, &str)]| {
        let output = process::output_within(&mut command(args, envs, &dir), REFUSAL_WITHIN);
        assert!(!output.status.success(), "{args:?} started");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let err = refused(&["--listen", &listen], &[]);
    assert!(err.contains("TASKER_API_TOKEN"), "{err}");
    assert!(err.contains("--insecure-no-auth"), "{err}");
    // With a token, the names clients use are still required.
    let err = refused(&["--listen", &listen], &[("TASKER_API_TOKEN", TOKEN)]);
    assert!(err.contains("--allowed-host"), "{err}");

    // With the flag it starts, says so, and serves the configured name only.
    let mut server = Server::start(
        "0.0.0.0",
        &["--insecure-no-auth", "--allowed-host", "tasker.test"],
        &[],
    );
    assert_eq!(server.send("GET", "/stats", "tasker.test", &[]).0, 200);
    assert_eq!(server.send("GET", "/stats", "localhost", &[]).0, 421);
    let _ = server.child.kill();
    let mut stderr = String::new();
    if let Some(mut pipe) = server.child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(stderr.contains("WITHOUT A TOKEN"), "{stderr}");
}

#[test]
fn the_token_can_come_from_a_file() {
    let secrets = tempfile::tempdir().expect("temp dir");
    let file = secrets.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).expect("write the token");
    let path = file.display().to_string();
    let server = Server::start("127.0.0.1", &[], &[("TASKER_API_TOKEN_FILE", &path)]);
    let (auth_name, auth_value) = bearer();
    assert_eq!(
        server
            .send("GET", "/stats", "localhost", &[(auth_name, &auth_value)])
            .0,
        200
    );
    assert_eq!(server.send("GET", "/stats", "localhost", &[]).0, 401);

    let missing = secrets.path().join("missing").display().to_string();
    let output = process::output_within(
        &mut command(
            &["--listen", &format!("127.0.0.1:{}", free_port())],
            &[("TASKER_API_TOKEN_FILE", &missing)],
            &secrets,
        ),
        REFUSAL_WITHIN,
    );
    assert!(!output.status.success(), "started without its token file");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("TASKER_API_TOKEN_FILE"), "{err}");
}

/// Opens a connection and sends `bytes`, then stalls.
fn stall(port: u16, bytes: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.write_all(bytes.as_bytes()).expect("send");
    stream
}

/// True when the server closes `stream` (or answers and closes) within `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn stalled_clients_are_dropped_while_healthz_keeps_answering() {
    let server = Server::start("127.0.0.1", &[], &[]);
    let mut stalled: Vec<TcpStream> = (0..200)
        .map(|_| stall(server.port, "GET /tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n"))
        .collect();
    let mut idle = stall(server.port, "");
    let mut slow_body = stall(
        server.port,
        "POST /tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\":",
    );
    assert_eq!(server.send("GET", "/healthz", "127.0.0.1", &[]).0, 200);

    // The head must arrive within 5 s and a body may pause for 10 s: allow as much again.
    for (n, stream) in stalled.iter_mut().enumerate() {
        assert!(
            closed_within(stream, Duration::from_secs(10)),
            "stalled head {n} still open"
        );
    }
    assert!(
        closed_within(&mut idle, Duration::from_secs(10)),
        "an idle connection still open"
    );
    assert!(
        closed_within(&mut slow_body, Duration::from_secs(20)),
        "a stalled body still open"
    );
    assert_eq!(server.send("GET", "/healthz", "127.0.0.1", &[]).0, 200);
}

#[test]
fn connections_past_the_cap_wait_for_one_to_close() {
    let server = Server::start("127.0.0.1", &["--max-connections", "4"], &[]);
    // Four connections the server has taken (each was answered), left open and idle: each
    // holds its place until the server closes it as idle.
    let held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream = stall(
                server.port,
                "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            );
            let mut first = [0u8; 12];
            stream.read_exact(&mut first).expect("an answer");
            assert_eq!(&first, b"HTTP/1.1 200");
            stream
        })
        .collect();
    let (status, _, _) = server.send("GET", "/healthz", "127.0.0.1", &[]);
    assert_eq!(status, 200, "the fifth connection was answered");
    // It was taken only once a held one was let go: by the time its answer is here, the
    // server's close of that one is too.
    let closed = held
        .into_iter()
        .filter(|stream| {
            // What is left of its answer, then the end if the server closed it.
            stream.set_nonblocking(true).expect("non-blocking");
            let mut buffer = [0u8; 4096];
            loop {
                match (&*stream).read(&mut buffer) {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(err) => return err.kind() == std::io::ErrorKind::ConnectionReset,
                }
            }
        })
        .count();
    assert!(
        closed >= 1,
        "the fifth connection was served while four were open"
    );
}

/// Sends raw `bytes` on a new connection and returns what comes back until the server closes
/// it or 10 s pass.
fn raw(port: u16, bytes: &str) -> String {
    let mut stream = stall(port, bytes);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_client_without_a_host_is_not_a_browser_and_is_served() {
    let server = Server::start("127.0.0.1", &[], &[]);
    let answer = raw(server.port, "GET /stats HTTP/1.0\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
}

#[test]
fn an_idle_kept_alive_connection_is_closed() {
    let server = Server::start("127.0.0.1", &[], &[]);
    let mut stream = stall(
        server.port,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    );
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).expect("the first answer");
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(
        closed_within(&mut stream, Duration::from_secs(10)),
        "an idle kept-alive connection is still open"
    );
}

#[test]
fn a_stop_refuses_new_clients_at_once_and_ends() {
    let mut server = Server::start("127.0.0.1", &[], &[]);
    let status = Command::new("kill")
        .args(["-INT", &server.child.id().to_string()])
        .status()
        .expect("send SIGINT");
    assert!(status.success());
    // New clients are refused, and the process ends on its own, successfully.
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", server.port)).is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "new clients were still accepted after the stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    loop {
        if let Some(exit) = server.child.try_wait().expect("wait") {
            assert!(exit.success(), "tasker serve exited with {exit}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "tasker serve did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_client_that_never_reads_its_answers_is_dropped() {
    let server = Server::start("127.0.0.1", &[], &[]);
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    // Pipelined requests whose answers (megabytes) fill both sides' socket buffers.
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let request = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(50_000);
    let _ = stream.write_all(request.as_bytes());
    // The client reads nothing for longer than the server's 30 s write timeout, with room for
    // the server to answer enough requests to fill the buffers first on a busy machine.
    std::thread::sleep(Duration::from_secs(50));
    // Then it reads what is there: the answers the buffers held, and the end. A server that
    // had kept the connection would answer all 50,000 requests.
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut answers = Vec::new();
    // A reset ends it too (the server closed with requests of it unread).
    let ended = match stream.read_to_end(&mut answers) {
        Ok(_) => true,
        Err(err) => err.kind() == std::io::ErrorKind::ConnectionReset,
    };
    let answered = String::from_utf8_lossy(&answers)
        .matches("HTTP/1.1 200")
        .count();
    assert!(ended, "the connection did not end");
    assert!(
        answered < 50_000,
        "every request was answered: the client that did not read was never dropped"
    );
    assert_eq!(server.send("GET", "/healthz", "127.0.0.1", &[]).0, 200);
}

/// What comes back on `stream` within `limit` (until the server closes it or the time is up).
fn answer_within(stream: &mut TcpStream, limit: Duration) -> String {
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while let Ok(n @ 1..) = stream.read(&mut buffer) {
        answer.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// GIVEN form posts that announce a body and never send it WHEN they have no session THEN they
/// are answered at once, before the body (they used to wait for it); a login form announcing
/// more than 2 KiB is refused 413 at once.
#[test]
fn dashboard_forms_are_checked_before_their_bodies_are_read() {
    let server = Server::start("127.0.0.1", &[], &[("TASKER_API_TOKEN", TOKEN)]);
    for path in ["/ui/act", "/ui/logout"] {
        let mut stream = stall(
            server.port,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\n"
            ),
        );
        let started = Instant::now();
        let answer = answer_within(&mut stream, Duration::from_secs(3));
        assert!(answer.starts_with("HTTP/1.1 303"), "{path}: {answer:?}");
        assert!(answer.contains("location: /ui/login"), "{path}: {answer}");
        assert!(started.elapsed() < Duration::from_secs(3), "{path}");
    }
    let mut big = stall(
        server.port,
        "POST /ui/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 4096\r\n\r\ntoken=",
    );
    let answer = answer_within(&mut big, Duration::from_secs(3));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
}

/// GIVEN a login form sent one byte every 2 s (each pause under the 10 s pause limit) THEN the
/// server gives up on it at the 10 s form deadline; it used to read on for as long as the
/// 2 MiB body limit let it (hours at this pace).
#[test]
fn a_trickled_login_form_is_cut_at_its_deadline() {
    let server = Server::start("127.0.0.1", &[], &[("TASKER_API_TOKEN", TOKEN)]);
    let mut stream = stall(
        server.port,
        "POST /ui/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 900\r\n\r\n",
    );
    let mut writer = stream.try_clone().expect("a second handle");
    let trickle = std::thread::spawn(move || {
        for _ in 0..30 {
            if writer.write_all(b"x").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    });
    let started = Instant::now();
    let answer = answer_within(&mut stream, Duration::from_secs(25));
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(took < Duration::from_secs(20), "answered after {took:?}");
    drop(stream);
    let _ = trickle.join();
}
