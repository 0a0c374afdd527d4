//! A peer's program under `bench/peers/<name>/peer.mjs`, run with node: the passes of
//! `bench/peers/common.mjs` in the run's [`Shape`], one JSON line back.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::{Row, Shape};

/// The longest a peer's program may take, beyond a second per 100 jobs of each pass.
const SLACK: Duration = Duration::from_secs(300);

/// Node running the peer `name`'s program with `env` (where its server is), arguments to
/// follow; an error when its packages are not installed.
pub fn command(
    root: &Path,
    name: &str,
    env: &[(&str, &str)],
) -> Result<tokio::process::Command, String> {
    let folder = root.join("bench/peers").join(name);
    if !folder.join("node_modules").is_dir() {
        return Err(format!(
            "its npm packages are not installed in {} (scripts/setup-test-tools.sh installs them)",
            folder.display()
        ));
    }
    let mut command = tokio::process::Command::new("node");
    command
        .arg(folder.join("peer.mjs"))
        .envs(env.iter().copied())
        .current_dir(&folder)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    Ok(command)
}

/// Runs the peer `name` with `env` (where its server is); its row, or why there is none.
pub async fn run(
    root: &Path,
    name: &str,
    env: &[(&str, &str)],
    shape: &Shape,
) -> Result<Row, String> {
    let mut command = command(root, name, env)?;
    command.args(shape.arguments());
    let depth = shape.depth_seconds * 1.2 * shape.depth_workers.len() as f64;
    let limit = SLACK
        + Duration::from_millis(shape.jobs as u64 * 20)
        + Duration::from_secs_f64(depth.max(0.0) * 3.0);
    let stdout = output(command, limit).await?;
    serde_json::from_str(stdout.trim())
        .map_err(|err| format!("its answer is not one JSON line of results ({err}): {stdout}"))
}

/// Runs `command` to its end within `limit`: what it printed, or why it failed (the last
/// lines of its errors).
pub async fn output(
    mut command: tokio::process::Command,
    limit: Duration,
) -> Result<String, String> {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("node did not start ({err})"))?;
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| format!("it did not finish within {} s", limit.as_secs()))?
        .map_err(|err| format!("waiting for node failed ({err})"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(format!(
            "it failed ({}): {}",
            output.status,
            last.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
