//! TLS to PostgreSQL against a server that accepts TCP connections over TLS only: the URL's
//! `sslmode` and `sslrootcert` (libpq's words) decide, and a certificate that cannot be
//! verified is refused, never taken on trust.

use tasker::store::postgres::PgStore;
use tasker::{NewTask, Task, Timestamp};
use tasker_tests::postgres::Cluster;

/// GIVEN a server that requires TLS, with a certificate for 127.0.0.1 from an authority of its
/// own THEN a URL with `sslmode=verify-full` and that authority in `sslrootcert` connects,
/// migrates and keeps tasks, as does `tasker migrate`; one without a root file is refused for
/// the certificate (the system's roots do not know it), one naming a missing file is refused
/// naming it, and one without `sslmode` is refused by the server (no plain TCP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_used_and_verified_as_the_url_asks() {
    let mut cluster = Cluster::start();
    let ca = cluster.require_tls();
    let verified = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        cluster.url,
        ca.display()
    );

    let store = PgStore::connect(&verified, 2)
        .await
        .expect("connected over TLS");
    let task = Task::from_new(NewTask::new("t", "{}"), Timestamp::now_utc());
    store.task_create(task.clone()).await.expect("create");
    let read = store
        .task_get(task.id)
        .await
        .expect("get")
        .expect("the task");
    assert_eq!(read.payload, "{}");
    let migrated = PgStore::migrate(&verified).await.expect("migrate over TLS");
    assert_eq!(migrated.from, migrated.to, "already up to date");

    let unverified = PgStore::connect(&format!("{}?sslmode=require", cluster.url), 1)
        .await
        .expect_err("an unknown authority");
    let text = format!("{unverified:?}");
    assert!(
        text.contains("certificate") || text.contains("Certificate"),
        "{text}"
    );

    let missing = PgStore::connect(
        &format!(
            "{}?sslmode=require&sslrootcert=/nowhere/ca.pem",
            cluster.url
        ),
        1,
    )
    .await
    .expect_err("no such root file");
    assert!(missing.to_string().contains("/nowhere/ca.pem"), "{missing}");

    let plain = PgStore::connect(&cluster.url, 1)
        .await
        .expect_err("the server refuses plain TCP");
    let text = format!("{plain:?}");
    assert!(
        text.contains("no encryption") || text.contains("pg_hba"),
        "{text}"
    );
}
