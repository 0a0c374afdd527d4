//! The `tasker` binary as an operator runs it: `tasker create`, and output into a pipe that
//! closes early (`tasker list | head`).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tasker::{NewTask, SqliteStore, Timestamp};
use tasker_tests::process;

/// `tasker <args> --db <db>`; the exit code, stdout and stderr.
fn tasker(db: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut full = args.to_vec();
    let db = db.display().to_string();
    full.extend(["--db", &db]);
    let output = process::run(&full, &[]);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn create_enqueues_with_the_apis_rules() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("tasker.db");
    let before = Timestamp::now_utc();
    let payload = r#"{"url": "http://localhost:9/hook", "body": {"n": 1}}"#;
    let (code, out, err) = tasker(
        &db,
        &[
            "create",
            "--type",
            "sendWebhook",
            "--payload",
            payload,
            "--delay",
            "90s",
            "--max-attempts",
            "5",
            "--reference",
            "booking-1",
            "--idempotency-key",
            "key-1",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let task: Value = serde_json::from_str(&out).expect("one task as JSON");
    assert_eq!(task["status"], "pending");
    assert_eq!(
        task["payload"],
        r#"{"url":"http://localhost:9/hook","body":{"n":1}}"#
    );
    assert_eq!(task["maxAttempts"], 5);
    assert_eq!(task["referenceUid"], "booking-1");
    let due: Timestamp = task["scheduledAt"]
        .as_str()
        .expect("scheduledAt")
        .parse()
        .expect("a timestamp");
    assert!(
        due >= before.plus(std::time::Duration::from_secs(90)),
        "{due}"
    );

    // The same key returns the first task, and says so.
    let (code, out, err) = tasker(
        &db,
        &[
            "create",
            "--type",
            "sendWebhook",
            "--payload",
            "{}",
            "--idempotency-key",
            "key-1",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("earlier create"), "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("JSON")["id"],
        task["id"]
    );

    // A payload from a file, due at a given instant.
    let file = dir.path().join("payload.json");
    std::fs::write(&file, r#""plain text payload""#).expect("write payload");
    let at_file = format!("@{}", file.display());
    let (code, out, err) = tasker(
        &db,
        &[
            "create",
            "--type",
            "sendWebhook",
            "--payload",
            &at_file,
            "--at",
            "2030-01-01T09:00:00+01:00",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let task: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(task["payload"], "plain text payload");
    assert_eq!(task["scheduledAt"], "2030-01-01T08:00:00.000Z");
}

#[test]
fn create_refuses_bad_input_naming_what_is_wrong() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("tasker.db");
    let cases: &[(&[&str], &str)] = &[
        (&["--type", "noSuchType", "--payload", "{}"], "noSuchType"),
        (
            &["--type", "sendWebhook", "--payload", "not json"],
            "--payload",
        ),
        (
            &["--type", "sendWebhook", "--payload", r#"{"a":1,"a":2}"#],
            "more than once",
        ),
        (&["--type", "sendWebhook", "--payload", "null"], "null"),
        (
            &[
                "--type",
                "sendWebhook",
                "--payload",
                "{}",
                "--delay",
                "soon",
            ],
            "--delay",
        ),
        (
            &[
                "--type",
                "sendWebhook",
                "--payload",
                "{}",
                "--at",
                "1969-07-20T20:17:00Z",
            ],
            "1970",
        ),
        (
            &[
                "--type",
                "sendWebhook",
                "--payload",
                "{}",
                "--max-attempts",
                "0",
            ],
            "--max-attempts",
        ),
        (
            &[
                "--type",
                "sendWebhook",
                "--payload",
                "{}",
                "--delay",
                "1m",
                "--at",
                "2030-01-01T00:00:00Z",
            ],
            "--at",
        ),
        (
            &[
                "--type",
                "sendWebhook",
                "--payload",
                "{}",
                "--reference",
                "",
            ],
            "referenceUid",
        ),
    ];
    for (args, named) in cases {
        let mut full = vec!["create"];
        full.extend_from_slice(args);
        let (code, out, err) = tasker(&db, &full);
        assert_ne!(code, 0, "{args:?} was accepted: {out}");
        assert!(err.contains(named), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let (_, out, _) = tasker(&db, &["stats", "--json"]);
    let stats: Value = serde_json::from_str(&out).expect("stats JSON");
    assert_eq!(stats["counts"]["pending"], 0, "nothing refused was stored");
}

#[test]
fn a_reader_that_stops_early_ends_the_listing_quietly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("tasker.db");
    // Far more output than a pipe buffers (64 KiB) in either format, so the writer meets the
    // closed pipe (checked below on the whole listing).
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = SqliteStore::open(&db).expect("open");
        for n in 0..2000 {
            let new = NewTask::new(
                "sendWebhook",
                format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(200)),
            );
            store
                .task_create(tasker::Task::from_new(new, Timestamp::now_utc()))
                .await
                .expect("insert");
        }
    });
    for format in [&["--json"][..], &[][..]] {
        let mut args = vec![
            "list".to_owned(),
            "--all".to_owned(),
            "--db".to_owned(),
            db.display().to_string(),
        ];
        args.extend(format.iter().map(|a| (*a).to_owned()));
        let whole = process::output_within(
            Command::new(process::binary())
                .args(&args)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default()),
            Duration::from_secs(60),
        );
        assert!(
            whole.stdout.len() > 2 * 64 * 1024,
            "{format:?}: the whole listing ({} bytes) would fit a pipe's buffer",
            whole.stdout.len()
        );
        let mut child = Command::new(process::binary())
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tasker list");
        let mut first = [0u8; 100];
        child
            .stdout
            .take()
            .expect("stdout")
            .read_exact(&mut first)
            .expect("the listing starts");
        // The pipe's read end is dropped here, as `head` exits after its lines.
        let output = child.wait_with_output().expect("tasker list ends");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{format:?}: {} {stderr}",
            output.status
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{format:?}: {stderr}"
        );
    }
}

#[test]
fn finished_tasks_are_kept_a_day_unless_retention_says_otherwise() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("tasker.db");
    let (_, out, err) = tasker(
        &db,
        &[
            "create",
            "--type",
            "sendWebhook",
            "--payload",
            "{}",
            "--delay",
            "1h",
            "--json",
        ],
    );
    let id = serde_json::from_str::<Value>(&out).expect(&err)["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let (code, _, err) = tasker(&db, &["cancel", &id, "--json"]);
    assert_eq!(code, 0, "{err}");

    // The cleanup `tasker serve` runs at every start, with the default retention.
    let (code, out, err) = tasker(&db, &["cleanup"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("JSON")["deleted"],
        0
    );
    let (code, _, err) = tasker(&db, &["show", &id, "--json"]);
    assert_eq!(
        code, 0,
        "a task finished a moment ago is still there: {err}"
    );

    // TASKER_RETENTION=0s keeps the seed's rule: every finished task goes.
    let db_arg = db.display().to_string();
    let output = process::run(
        &["cleanup", "--db", &db_arg],
        &[("TASKER_RETENTION", "0s".to_owned())],
    );
    assert!(output.status.success());
    let summary: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(summary["deleted"], 1, "{summary}");
}

/// `tasker schedules apply FILE` makes the stored schedules exactly the file's: it creates,
/// updates and deletes, and a second run changes nothing. A bad file changes nothing and names
/// the schedule and field at fault.
#[test]
fn schedules_apply_is_idempotent_and_removes_what_the_file_drops() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("tasker.db");
    let file = dir.path().join("schedules.yaml");
    let write = |text: &str| std::fs::write(&file, text).expect("write the file");
    let path = file.display().to_string();
    let apply = |extra: &[&str]| {
        let mut args = vec!["schedules", "apply", path.as_str(), "--json"];
        args.extend_from_slice(extra);
        let (code, out, err) = tasker(&db, &args);
        assert_eq!(code, 0, "{err}");
        let answer: Value = serde_json::from_str(&out).expect("JSON");
        answer["changes"].clone()
    };
    write(
        "schedules:\n\
         \x20 - name: nightly-report\n\
         \x20   cron: \"0 2 * * *\"\n\
         \x20   timezone: Europe/Berlin\n\
         \x20   type: sendWebhook\n\
         \x20   payload: {url: \"http://localhost:9/report\", body: {}}\n\
         \x20 - name: heartbeat\n\
         \x20   cron: \"*/30 * * * * *\"\n\
         \x20   type: sendWebhook\n\
         \x20   missed: skip\n",
    );
    let planned = apply(&["--dry-run"]);
    assert_eq!(
        planned["created"],
        serde_json::json!(["nightly-report", "heartbeat"])
    );
    let (_, listed, _) = tasker(&db, &["schedules", "list", "--json"]);
    assert_eq!(
        listed.trim(),
        r#"{"schedules":[]}"#,
        "a dry run writes nothing"
    );
    assert_eq!(
        apply(&[])["created"],
        serde_json::json!(["nightly-report", "heartbeat"])
    );
    assert_eq!(
        apply(&[])["unchanged"],
        serde_json::json!(["nightly-report", "heartbeat"]),
        "a second apply changes nothing"
    );
    // A schedule another way made is removed: the file is the whole truth.
    let (code, _, err) = tasker(
        &db,
        &[
            "schedules",
            "add",
            "stray",
            "--cron",
            "0 * * * *",
            "--type",
            "sendWebhook",
        ],
    );
    assert_eq!(code, 0, "{err}");
    write(
        "schedules:\n\
         \x20 - name: nightly-report\n\
         \x20   cron: \"0 3 * * *\"\n\
         \x20   timezone: Europe/Berlin\n\
         \x20   type: sendWebhook\n\
         \x20   payload: {url: \"http://localhost:9/report\", body: {}}\n",
    );
    let changes = apply(&[]);
    assert_eq!(changes["updated"], serde_json::json!(["nightly-report"]));
    assert_eq!(
        changes["deleted"],
        serde_json::json!(["heartbeat", "stray"])
    );
    let (code, shown, err) = tasker(&db, &["schedules", "show", "nightly-report", "--json"]);
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&shown).expect("JSON");
    assert_eq!(shown["cron"], "0 3 * * *");
    assert_eq!(shown["nextRuns"].as_array().map(Vec::len), Some(5));

    // A bad schedule: nothing is written, and the message says where.
    write(
        "schedules:\n\
         \x20 - name: nightly-report\n\
         \x20   cron: \"0 4 * * *\"\n\
         \x20   type: sendWebhook\n\
         \x20 - name: broken\n\
         \x20   cron: \"0 25 * * *\"\n\
         \x20   type: sendWebhook\n",
    );
    let (code, _, err) = tasker(&db, &["schedules", "apply", path.as_str()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("\"broken\"") && err.contains("hour field"),
        "{err}"
    );
    let (_, shown, _) = tasker(&db, &["schedules", "show", "nightly-report", "--json"]);
    let shown: Value = serde_json::from_str(&shown).expect("JSON");
    assert_eq!(shown["cron"], "0 3 * * *", "a refused file changes nothing");

    // `tasker schedules trigger` and `tasker list --schedule` meet.
    let (code, out, err) = tasker(&db, &["schedules", "trigger", "nightly-report", "--json"]);
    assert_eq!(code, 0, "{err}");
    let task: Value = serde_json::from_str(&out).expect("JSON");
    let (_, listed, _) = tasker(&db, &["list", "--schedule", "nightly-report", "--json"]);
    assert!(
        listed.contains(task["id"].as_str().expect("id")),
        "{listed}"
    );
    let (code, _, err) = tasker(&db, &["schedules", "rm", "nightly-report"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = tasker(&db, &["schedules", "show", "nightly-report"]);
    assert_ne!(code, 0);
    assert!(err.contains("not found"), "{err}");
}
