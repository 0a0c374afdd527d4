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
    let admin = url();
    let (client, connection) = tokio_postgres::connect(&admin, NoTls)
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
