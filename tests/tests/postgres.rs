//! The PostgreSQL store's foundation against a real server: Tasker's schema is applied once
//! however many processes start together, a database a newer Tasker migrated is refused, the
//! counts per status follow every change, and a bad URL is refused with its reason.

use tasker::store::postgres::{PgStore, schema};
use tasker_tests::postgres::{fresh_database, raw_client};

/// GIVEN a new database WHEN eight stores connect at once THEN each version is applied once
/// and every store sees the current version; connecting again applies nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_when_processes_start_together() {
    let url = fresh_database().await;
    let connects = (0..8).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { PgStore::connect(&url, 2).await })
    });
    for store in futures::future::join_all(connects).await {
        let store = store.expect("joined").expect("connected and migrated");
        assert_eq!(
            store.schema_version().await.expect("version"),
            schema::SCHEMA_VERSION
        );
    }
    PgStore::connect(&url, 1).await.expect("again");
    let client = raw_client(&url).await;
    let rows = client
        .query(
            "SELECT version FROM tasker.migrations ORDER BY version",
            &[],
        )
        .await
        .expect("migrations");
    let versions: Vec<i32> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(versions, (1..=schema::SCHEMA_VERSION).collect::<Vec<_>>());
}

/// GIVEN a database a newer Tasker migrated to version 99 THEN this one refuses it, saying so.
#[tokio::test]
async fn a_database_a_newer_tasker_migrated_is_refused() {
    let url = fresh_database().await;
    PgStore::connect(&url, 1).await.expect("connected");
    raw_client(&url)
        .await
        .execute("INSERT INTO tasker.migrations (version) VALUES (99)", &[])
        .await
        .expect("a newer version");
    let err = PgStore::connect(&url, 1).await.expect_err("refused");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

/// GIVEN tasks inserted, moved between statuses and deleted, in several transactions THEN the
/// counts per status (kept by statement triggers as appended changes) equal a count of the
/// table, before and after the changes are folded.
#[tokio::test]
async fn the_counts_follow_every_change_of_status() {
    let url = fresh_database().await;
    PgStore::connect(&url, 1).await.expect("connected");
    let mut client = raw_client(&url).await;
    let statuses = ["pending", "running", "succeeded", "failed", "cancelled"];
    for i in 0..200 {
        client
            .execute(
                "INSERT INTO tasker.tasks (id, type, payload, status, scheduled_at, created_at, \
                 updated_at, attempts, max_attempts, retry_policy, list_key) \
                 VALUES ($1, 't', '{}', $2, now(), now(), now(), 0, 3, '{}', $1)",
                &[&format!("task-{i:03}"), &statuses[i % 5]],
            )
            .await
            .expect("insert");
    }
    client
        .batch_execute(
            "UPDATE tasker.tasks SET status = 'running' WHERE id < 'task-050' AND status = 'pending';
             UPDATE tasker.tasks SET status = 'succeeded' WHERE id LIKE 'task-1%' AND status = 'running';
             UPDATE tasker.tasks SET payload = 'x' WHERE id LIKE 'task-0%';
             DELETE FROM tasker.tasks WHERE id LIKE 'task-19%';",
        )
        .await
        .expect("changes");
    let counted = client
        .query(
            "SELECT status, SUM(n)::bigint FROM (SELECT status, n FROM tasker.task_counts \
             UNION ALL SELECT status, n FROM tasker.task_count_changes) AS c \
             GROUP BY status ORDER BY status",
            &[],
        )
        .await
        .expect("counts");
    let actual = client
        .query(
            "SELECT s, (SELECT COUNT(*) FROM tasker.tasks WHERE status = s) \
             FROM unnest($1::text[]) AS s ORDER BY s",
            &[&statuses.to_vec()],
        )
        .await
        .expect("table");
    let pairs = |rows: &[tokio_postgres::Row]| -> Vec<(String, i64)> {
        rows.iter().map(|row| (row.get(0), row.get(1))).collect()
    };
    assert_eq!(pairs(&counted), pairs(&actual));
    assert_eq!(pairs(&actual).iter().map(|(_, n)| n).sum::<i64>(), 190);
    schema::fold_counts(&mut client).await.expect("fold");
    let folded = client
        .query(
            "SELECT status, n FROM tasker.task_counts ORDER BY status",
            &[],
        )
        .await
        .expect("folded counts");
    assert_eq!(pairs(&folded), pairs(&actual));
    let left: i64 = client
        .query_one("SELECT COUNT(*) FROM tasker.task_count_changes", &[])
        .await
        .expect("changes")
        .get(0);
    assert_eq!(left, 0);
}

/// A URL that is not one, and a server that is not there, are refused with their reasons; the
/// second is passing (a server restarting comes back).
#[tokio::test]
async fn a_bad_or_unreachable_url_is_refused_with_its_reason() {
    let err = PgStore::connect("not a url at all", 1)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("TASKER_DATABASE_URL"), "{err}");
    assert!(!err.is_retryable());
    let err = PgStore::connect("postgres://postgres@127.0.0.1:1/postgres", 1)
        .await
        .expect_err("nothing listens on port 1");
    assert!(
        err.to_string().contains("connecting to PostgreSQL"),
        "{err}"
    );
    assert!(err.is_retryable(), "{err:?}");
}

/// GIVEN a store listening for due tasks WHEN another store (another process's pool) creates a
/// task due in an hour, then one due now THEN only the second wakes the listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_created_due_now_wakes_other_processes() {
    use std::sync::Arc;
    use std::time::Duration;
    use tasker::{NewTask, Task, Timestamp};

    let url = fresh_database().await;
    let creator = PgStore::connect(&url, 1).await.expect("connected");
    let listener = PgStore::connect(&url, 1).await.expect("connected");
    let wake = Arc::new(tokio::sync::Notify::new());
    listener.queue_listen(Arc::clone(&wake)).await;
    // It wakes once when it starts listening (it may have missed something before).
    tokio::time::timeout(Duration::from_secs(10), wake.notified())
        .await
        .expect("listening");
    let now = Timestamp::now_utc();
    let later = NewTask {
        scheduled_at: Some(now.plus(Duration::from_secs(3600))),
        ..NewTask::new("t", "{}")
    };
    creator
        .task_create(Task::from_new(later, now))
        .await
        .expect("create later");
    assert!(
        tokio::time::timeout(Duration::from_secs(1), wake.notified())
            .await
            .is_err(),
        "a task due in an hour woke the listener"
    );
    creator
        .task_create(Task::from_new(NewTask::new("t", "{}"), now))
        .await
        .expect("create now");
    tokio::time::timeout(Duration::from_secs(10), wake.notified())
        .await
        .expect("a task due now wakes the listener");
}

/// GIVEN `tasker serve` on PostgreSQL looking at the queue only once an hour WHEN another
/// process (`tasker create`) makes a webhook due now THEN the server delivers it at once: the
/// create's notification wakes it (without it the task would wait for the hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_starts_a_task_another_process_created() {
    use std::time::Duration;
    use tasker_tests::process::{self, Serve};
    use tasker_tests::receiver::Receiver;

    let url = fresh_database().await;
    let receiver = Receiver::start().await;
    let envs = vec![("TASKER_WEBHOOK_ALLOW_PRIVATE", "true".to_owned())];
    let store = ["--store", "postgres", "--database-url", url.as_str()];
    let mut serve_args = store.to_vec();
    serve_args.extend(["--interval", "3600"]);
    let _serve = Serve::start(&serve_args, &envs).await;
    // Past the server's first look at the queue.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let payload = format!(
        r#"{{"url": "{}/hooks/woken", "body": {{}}}}"#,
        receiver.base
    );
    let mut create = vec!["create", "--type", "sendWebhook", "--payload", &payload];
    create.extend(store);
    let output = process::run(&create, &envs);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    tasker_tests::eventually(
        "the webhook another process created",
        Duration::from_secs(20),
        || async { (!receiver.requests_to("/hooks/woken").is_empty()).then_some(()) },
    )
    .await;
}

/// GIVEN a handler whose error holds U+0000 (PostgreSQL's text cannot) and runs to 10,000
/// characters WHEN its attempt fails on PostgreSQL THEN the outcome is written (the task is
/// not stuck running): the error kept with U+FFFD in its place, cut at 4,096 characters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_with_a_nul_character_is_recorded() {
    use tasker::handlers::{TaskError, TypeSettings};
    use tasker::{NewTask, ProcessorSettings, Registry, TaskStatus, Tasker};

    let url = fresh_database().await;
    let store = PgStore::connect(&url, 2).await.expect("connected");
    let mut registry = Registry::new();
    registry
        .register_with("t", TypeSettings::default(), |_| async {
            Err(TaskError::Retryable(format!(
                "bad\0byte {}",
                "x".repeat(10_000)
            )))
        })
        .expect("register");
    let tasker = Tasker::new(store, registry, ProcessorSettings::default());
    let id = tasker
        .create(NewTask::new("t", "{}"))
        .await
        .expect("create")
        .into_task()
        .id;
    let summary = tasker.process_queue(None).await.expect("run");
    assert_eq!(summary.outcomes.retried, 1, "{summary:?}");
    let task = tasker.get(id).await.expect("get");
    assert_eq!(task.status, TaskStatus::Pending);
    let error = task.last_error.expect("an error");
    assert!(error.starts_with("bad\u{fffd}byte x"), "{}", &error[..20]);
    assert_eq!(error.chars().count(), 4096);
}

/// GIVEN a new database WHEN a command runs with `TASKER_DATABASE_MIGRATE=never` THEN it is
/// refused, naming `tasker migrate`, and creates nothing; `tasker migrate` applies every version
/// and says so, a second run finds it up to date, and the refused command then works.
#[tokio::test]
async fn tasker_migrate_applies_the_schema_that_never_mode_only_checks() {
    use tasker_tests::process;

    let url = fresh_database().await;
    let envs = vec![
        ("TASKER_STORE", "postgres".to_owned()),
        ("TASKER_DATABASE_URL", url.clone()),
    ];
    let mut never = envs.clone();
    never.push(("TASKER_DATABASE_MIGRATE", "never".to_owned()));
    let text = |output: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };

    let refused = process::run(&["stats"], &never);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("version 0") && text(&refused).contains("tasker migrate"),
        "{}",
        text(&refused)
    );
    let schema_exists: bool = raw_client(&url)
        .await
        .query_one("SELECT to_regnamespace('tasker') IS NOT NULL", &[])
        .await
        .expect("query")
        .get(0);
    assert!(!schema_exists, "a checking process created the schema");

    let migrated = process::run(&["migrate"], &envs);
    assert!(migrated.status.success(), "{}", text(&migrated));
    assert!(
        text(&migrated).contains(&format!(
            "migrated from version 0 to {}",
            schema::SCHEMA_VERSION
        )),
        "{}",
        text(&migrated)
    );
    let again = process::run(&["migrate"], &envs);
    assert!(text(&again).contains("up to date"), "{}", text(&again));
    let stats = process::run(&["stats", "--json"], &never);
    assert!(stats.status.success(), "{}", text(&stats));

    let sqlite = process::run(&["migrate", "--store", "sqlite"], &[]);
    assert!(!sqlite.status.success());
    assert!(
        text(&sqlite).contains("TASKER_STORE=postgres"),
        "{}",
        text(&sqlite)
    );
}
