//! Fresh tables in DynamoDB Local, whose endpoint `scripts/test.sh` exports.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use tasker::DynamoStore;
use tasker::store::dynamodb::schema;

/// The variable holding DynamoDB Local's endpoint, e.g. `http://127.0.0.1:8123`.
/// The retention test stores keep finished tasks for (their TTL, and the window their counts
/// cover): a day, so that tests at made-up instants count every task they finished.
pub const RETENTION: std::time::Duration = std::time::Duration::from_secs(86_400);

pub const ENDPOINT_VAR: &str = "TASKER_TEST_DYNAMODB_ENDPOINT";

/// DynamoDB Local's endpoint; panics with instructions when it is not set.
pub fn endpoint() -> String {
    match std::env::var(ENDPOINT_VAR) {
        Ok(endpoint) if endpoint.starts_with("http://127.0.0.1:") => endpoint,
        Ok(other) => panic!("{ENDPOINT_VAR}={other} must point at 127.0.0.1"),
        Err(_) => panic!(
            "{ENDPOINT_VAR} is not set: run the tests with scripts/test.sh, which starts \
             DynamoDB Local and exports it"
        ),
    }
}

/// The environment a child process needs to reach DynamoDB Local through `aws_config`.
pub fn child_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL_DYNAMODB", endpoint()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

/// A client for DynamoDB Local (one per test: clients are tied to the test's runtime).
pub fn client() -> Client {
    client_for(&endpoint())
}

/// A client for the DynamoDB-compatible endpoint `endpoint` on 127.0.0.1.
pub fn client_for(endpoint: &str) -> Client {
    assert!(
        endpoint.starts_with("http://127.0.0.1:"),
        "tests only talk to 127.0.0.1"
    );
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tasker-tests"))
        .retry_config(tasker::store::dynamodb::retry_config())
        .timeout_config(tasker::store::dynamodb::timeout_config())
        .build();
    Client::from_conf(config)
}

/// Creates a uniquely named table with Tasker's schema.
pub async fn fresh_table(client: &Client) -> String {
    let name = format!(
        "tasker-test-{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    schema::create_table(client, &name)
        .await
        .unwrap_or_else(|err| panic!("create table {name} in DynamoDB Local: {err}"));
    name
}

/// A store over a fresh table.
pub async fn fresh_store() -> DynamoStore {
    fresh_store_at(&endpoint()).await
}

/// A store over a fresh table at the DynamoDB-compatible `endpoint` on 127.0.0.1 (DynamoDB
/// Local, or a proxy in front of it).
pub async fn fresh_store_at(endpoint: &str) -> DynamoStore {
    let client = client_for(endpoint);
    let table = fresh_table(&client).await;
    DynamoStore::new(client, table, RETENTION)
}

/// The variable naming DynamoDB Local's install folder (with `DynamoDBLocal.jar`).
pub const DIR_VAR: &str = "TASKER_TEST_DYNAMODB_DIR";

/// A DynamoDB Local of a test's own, persisting to a folder so it can be stopped and started
/// again with the same data (an outage).
pub struct OwnDynamoLocal {
    child: Option<std::process::Child>,
    data: tempfile::TempDir,
    /// The fixed port it listens on across restarts.
    pub port: u16,
}

impl OwnDynamoLocal {
    /// Starts it on a free port with a fresh data folder.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut local = Self {
            child: None,
            data: tempfile::tempdir().expect("data dir"),
            port,
        };
        local.resume().await;
        local
    }

    /// `http://127.0.0.1:<port>`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the process (the data folder stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same port and data, and waits until it accepts connections.
    pub async fn resume(&mut self) {
        let dir = std::env::var(DIR_VAR).ok().or_else(installed_dir).unwrap_or_else(|| {
            panic!("{DIR_VAR} is not set and ~/.cache/tasker has no DynamoDB Local: run scripts/setup-test-tools.sh")
        });
        let child = std::process::Command::new("java")
            .current_dir(&dir)
            .args([
                "-Djava.library.path=./DynamoDBLocal_lib",
                "-jar",
                "DynamoDBLocal.jar",
            ])
            .args(["-sharedDb", "-disableTelemetry", "-dbPath"])
            .arg(self.data.path())
            .args(["-port", &self.port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start DynamoDB Local");
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        crate::eventually(
            "DynamoDB Local to accept connections",
            std::time::Duration::from_secs(30),
            || {
                let address = address.clone();
                async move { tokio::net::TcpStream::connect(address).await.ok() }
            },
        )
        .await;
    }
}

impl Drop for OwnDynamoLocal {
    fn drop(&mut self) {
        self.stop();
    }
}

/// DynamoDB Local as `scripts/setup-test-tools.sh` installs it, if it is there.
fn installed_dir() -> Option<String> {
    let lib =
        std::path::PathBuf::from(std::env::var("HOME").ok()?).join(".cache/tasker/package/lib");
    let mut dirs: Vec<_> = std::fs::read_dir(lib)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.join("DynamoDBLocal.jar").exists())
        .collect();
    dirs.sort();
    dirs.pop().map(|path| path.display().to_string())
}
