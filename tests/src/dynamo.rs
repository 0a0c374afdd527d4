//! Fresh tables in DynamoDB Local, whose endpoint `scripts/test.sh` exports.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use tasker::DynamoStore;
use tasker::store::dynamodb::schema;

/// The variable holding DynamoDB Local's endpoint, e.g. `http://127.0.0.1:8123`.
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
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tasker-tests"))
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
    let client = client();
    let table = fresh_table(&client).await;
    DynamoStore::new(client, table, std::time::Duration::ZERO)
}
