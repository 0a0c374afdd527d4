//! The `tasker` binary's own surface: help, one-shot commands, and configuration errors.

use std::process::Command;

fn tasker() -> Command {
    let mut command = Command::new(tasker_tests::process::binary());
    command.env_clear();
    command
}

#[test]
fn help_lists_every_command() {
    let output = tasker().arg("--help").output().expect("run tasker");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["serve", "process", "cleanup", "create-table"] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
}

#[test]
fn one_shot_commands_print_their_summary_as_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("tasks.db");
    let db = db.to_str().expect("utf-8 path");
    let output = tasker()
        .args(["process", "--db", db])
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(summary["claimed"], 0);
    let output = tasker()
        .args(["cleanup", "--db", db])
        .output()
        .expect("run");
    assert!(output.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(summary["deleted"], 0);
}

#[test]
fn a_bad_setting_fails_naming_the_variable() {
    let output = tasker()
        .args(["process", "--db", ":memory:"])
        .env("TASKER_BATCH_SIZE", "many")
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TASKER_BATCH_SIZE"), "{stderr}");

    let output = tasker()
        .args(["process", "--store", "dynamodb"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("TASKER_TABLE"));
}

/// Stores `count` tasks of type `sendWebhook` with reference `booking-1` (first only) directly
/// in the SQLite file, as another process would have.
fn seed(db: &std::path::Path, count: usize) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = tasker::SqliteStore::open(db).expect("open");
        let mut ids = Vec::new();
        for i in 0..count {
            let mut new = tasker::NewTask::new("sendWebhook", "{}");
            if i == 0 {
                new.reference_uid = Some("booking-1".into());
            }
            let task = tasker::Task::from_new(new, tasker::Timestamp::now_utc());
            ids.push(
                store
                    .task_create(task)
                    .await
                    .expect("create")
                    .into_task()
                    .id
                    .to_string(),
            );
        }
        ids
    })
}

fn json_of(args: &[&str]) -> serde_json::Value {
    let output = tasker().args(args).output().expect("run");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

#[test]
fn operator_commands_show_cancel_retry_and_report_the_backlog() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tasks.db");
    let ids = seed(&path, 2);
    let db = path.to_str().expect("utf-8 path");

    let stats = json_of(&["stats", "--json", "--db", db]);
    assert_eq!(stats["due"], 2);
    assert!(stats["oldestDueAgeSeconds"].as_i64().is_some());

    let shown = json_of(&["show", &ids[1], "--json", "--db", db]);
    assert_eq!(shown["status"], "pending");
    let text = tasker()
        .args(["show", &ids[1], "--db", db])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&text.stdout).contains("status"));

    let cancelled = json_of(&["cancel", &ids[1], "--json", "--db", db]);
    assert_eq!(cancelled["status"], "cancelled");
    let retried = json_of(&["retry", &ids[1], "--json", "--db", db]);
    assert_eq!(retried["status"], "pending");
    let by_reference = json_of(&["cancel", "--reference", "booking-1", "--json", "--db", db]);
    assert_eq!(
        by_reference,
        serde_json::json!({"cancelled": 1, "ids": [ids[0]]})
    );

    // Errors are one line on stderr and a failing exit code.
    let again = tasker()
        .args(["cancel", &ids[0], "--db", db])
        .output()
        .expect("run");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("cancelled"));
    let bad = tasker()
        .args(["show", "nope", "--db", db])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a task id"));
}
