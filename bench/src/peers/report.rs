//! The peers' table: every system's row side by side, with Tasker's end-to-end rate (on
//! SQLite, through the library) over each one's.

use std::fmt::Write as _;

use super::Peers;
use crate::report::f;

/// The table in Markdown, then the systems that have no row and why.
pub fn table(peers: &Peers) -> String {
    let shape = &peers.shape;
    let ours = peers
        .rows
        .iter()
        .find(|row| row.system == "Tasker")
        .map_or(f64::NAN, super::Row::end_to_end_per_second);
    let mut out = format!(
        "\n| {} no-op jobs, {} at once | version | enqueue, one at a time (jobs/s) \
         | enqueue, batches of {} (jobs/s) | drain (jobs/s) | enqueue + drain (jobs/s) \
         | Tasker ÷ this | due now: start p50 / p99 (ms) | due in 1 s: start p50 / p99 (ms) \
         | {} waiting, 1 ms jobs: jobs/s at {} workers |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        shape.jobs,
        shape.concurrency,
        shape.batch,
        shape.depth_target,
        workers(&shape.depth_workers),
    );
    for row in &peers.rows {
        let n = row.jobs as f64;
        let _ = writeln!(
            out,
            "| {}, {} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} |",
            row.system,
            row.setup,
            row.version,
            f(n / row.enqueue_one_s),
            f(n / row.enqueue_batch_s),
            f(n / row.drain_s),
            f(row.end_to_end_per_second()),
            f(ours / row.end_to_end_per_second()),
            f(row.due_now_ms.p50),
            f(row.due_now_ms.p99),
            f(row.delayed_1s_ms.p50),
            f(row.delayed_1s_ms.p99),
            row.depth
                .iter()
                .map(|d| f(d.jobs_per_s))
                .collect::<Vec<_>>()
                .join(" / "),
        );
    }
    let _ = writeln!(
        out,
        "\nStart delays: {} jobs created {} per second while the worker runs; a job due in 1 s \
         is measured from its due instant.",
        shape.delay_jobs, shape.rate
    );
    crash_table(peers, &mut out);
    for skipped in &peers.skipped {
        let _ = writeln!(out, "- **{} skipped**: {}", skipped.system, skipped.reason);
    }
    out
}

/// The crash pass's table: what each system did when its worker was SIGKILLed mid-drain.
fn crash_table(peers: &Peers, out: &mut String) {
    let shape = &peers.crash_shape;
    if peers.crash.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "\n| {} jobs of {} ms, {} at once; worker SIGKILLed at half, a fresh one started \
         | done at the kill | running at the kill | run twice | done twice \
         | not done {} s after the kill | all done (s after the kill) | its defaults |\n\
         |---|---|---|---|---|---|---|---|\n",
        shape.jobs,
        shape.job_ms,
        shape.concurrency,
        f(shape.watch_seconds),
    );
    for row in &peers.crash {
        let _ = writeln!(
            out,
            "| {}, {} | {} | {} | {} | {} | {} | {} | {} |",
            row.system,
            row.setup,
            row.counts.done_at_kill,
            row.counts.running_at_kill,
            row.counts.run_twice,
            row.counts.done_twice,
            row.counts.not_done,
            row.counts
                .recovery_seconds
                .map_or_else(|| format!("not within {} s", f(shape.watch_seconds)), f),
            row.note,
        );
    }
}

/// `4 / 16 / 64`.
fn workers(counts: &[usize]) -> String {
    counts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" / ")
}
