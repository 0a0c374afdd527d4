//! The apalis peer (`bench/apalis-peer`, a workspace of its own because it links another
//! SQLite): built and run here, its one JSON line read back.

use std::path::Path;

use crate::results::{ApalisResults, PeerResults, StoreResults};

/// Builds the peer in release into `<target_dir>/apalis-peer` and runs it on `jobs` jobs with
/// its database in `dir`; the JSON line it prints.
pub fn run(root: &Path, target_dir: &Path, dir: &Path, jobs: usize) -> ApalisResults {
    let manifest = root.join("bench/apalis-peer/Cargo.toml");
    let peer_target = target_dir.join("apalis-peer");
    let cargo = std::env::var("CARGO").unwrap_or("cargo".into());
    let status = std::process::Command::new(&cargo)
        .args(["build", "--release", "--locked", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &peer_target)
        .status()
        .expect("run cargo build for the peer");
    assert!(status.success(), "building the apalis peer failed");
    let output = std::process::Command::new(peer_target.join("release/apalis-peer"))
        .args(["--jobs", &jobs.to_string(), "--concurrency", "16", "--db"])
        .arg(dir.join("apalis.db"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run the apalis peer");
    assert!(output.status.success(), "the apalis peer failed");
    let line = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(line.trim()).expect("the peer prints one JSON line of its results")
}

/// Tasker's SQLite results against the peer's on the same `jobs`: enqueue one at a time, then
/// drain.
pub fn compare(sqlite: &StoreResults, apalis: ApalisResults, jobs: usize) -> PeerResults {
    let n = jobs as f64;
    let ours = n / sqlite.enqueue_library_sequential_per_second + n / sqlite.drain_per_second;
    let theirs = apalis.enqueue_seconds + apalis.drain_seconds;
    PeerResults {
        tasker_enqueue_per_second: sqlite.enqueue_library_sequential_per_second,
        tasker_drain_per_second: sqlite.drain_per_second,
        tasker_total_seconds: ours,
        apalis_total_seconds: theirs,
        speedup: theirs / ours,
        apalis,
    }
}
