//! The `tasker` binary's own surface: help, one-shot commands, and configuration errors.

use std::process::Command;

fn tasker() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tasker"));
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
