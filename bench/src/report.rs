//! The Markdown report of one run, made from its [`Results`].

use std::fmt::Write;

use crate::results::{
    Dispatch, LambdaResults, MixedLatency, PeerResults, Results, Scale, SqsResults, StoreResults,
};

/// A number with as many decimals as its size deserves.
pub fn f(x: f64) -> String {
    if !x.is_finite() {
        "—".to_owned()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// A value that only DynamoDB has.
fn units_or_dash(store: &StoreResults, show: impl Fn(&crate::results::Units) -> String) -> String {
    store.units.as_ref().map_or_else(|| "—".to_owned(), show)
}

/// A value of the dispatcher passes, when they ran.
fn dispatch_or_dash(store: &StoreResults, show: impl Fn(&Dispatch) -> String) -> String {
    store.dispatch.as_ref().map_or_else(|| "—".to_owned(), show)
}

fn delays(latency: &MixedLatency) -> String {
    format!(
        "{} / {} / {}",
        f(latency.p50_ms),
        f(latency.p99_ms),
        f(latency.max_ms)
    )
}

/// One row of the per-store table: its name and how it shows one store.
type Row = (&'static str, fn(&StoreResults) -> String);

const ROWS: [Row; 26] = [
    ("ceiling: single conditional writes/s, 16 at once", |s| {
        f(s.ceiling_writes_per_second)
    }),
    ("enqueue, library, 16 at once (tasks/s)", |s| {
        f(s.enqueue_library_concurrent_per_second)
    }),
    ("enqueue, library, one at a time (tasks/s)", |s| {
        f(s.enqueue_library_sequential_per_second)
    }),
    ("enqueue, HTTP, one request at a time (tasks/s)", |s| {
        f(s.enqueue_http_single_per_second)
    }),
    ("enqueue, HTTP, batches of 100 (tasks/s)", |s| {
        f(s.enqueue_http_batch_per_second)
    }),
    ("drain of N due no-op tasks (tasks/s)", |s| {
        f(s.drain_per_second)
    }),
    ("store writes per task in the drain", |s| {
        f(s.writes_per_task)
    }),
    ("drain ÷ (ceiling ÷ writes per task)", |s| f(s.drain_ratio)),
    ("write units per task, enqueue → success", |s| {
        units_or_dash(s, |u| f(u.write_units_per_task))
    }),
    ("read units per task, enqueue → success", |s| {
        units_or_dash(s, |u| f(u.read_units_per_task))
    }),
    ("conditional-check failures (whole units pass)", |s| {
        units_or_dash(s, |u| u.condition_failures.to_string())
    }),
    ("two racing processors: tasks each", |s| {
        units_or_dash(s, |u| {
            format!("{} / {}", u.race.succeeded[0], u.race.succeeded[1])
        })
    }),
    (
        "two racing processors: failed conditions / drain write units, per task",
        |s| {
            units_or_dash(s, |u| {
                format!(
                    "{:.3} / {:.2}",
                    u.race.condition_failures_per_task, u.race.drain_write_units_per_task
                )
            })
        },
    ),
    (
        "racing processors, own client each: tasks/s (× one processor)",
        |s| crate::racing::cell(&s.racing),
    ),
    ("racing processors: tasks each (2; 4)", |s| {
        crate::racing::split(&s.racing)
    }),
    ("start delay p50 / p99 / max (ms), poll mode", |s| {
        let delay = &s.start_delay;
        format!(
            "{} / {} / {}",
            f(delay.p50_ms),
            f(delay.p99_ms),
            f(delay.max_ms)
        )
    }),
    ("start-delay poll interval (s)", |s| {
        f(s.start_delay.poll_interval_seconds)
    }),
    (
        "schedules: ticks fired (schedules × seconds, every second)",
        |s| {
            let lag = &s.fire_lag;
            format!("{} ({} × {})", lag.ticks, lag.schedules, lag.seconds)
        },
    ),
    (
        "schedules: fire lag p50 / p99 / max (ms), tick → task created",
        |s| {
            let lag = &s.fire_lag;
            format!("{} / {} / {}", f(lag.p50_ms), f(lag.p99_ms), f(lag.max_ms))
        },
    ),
    (
        "schedules: write / read units per tick, firing → success",
        |s| {
            let lag = &s.fire_lag;
            match (lag.write_units_per_tick, lag.read_units_per_tick) {
                (Some(w), Some(r)) => format!("{} / {}", f(w), f(r)),
                _ => "—".to_owned(),
            }
        },
    ),
    (
        "mix: slow tasks (one in N, s) / fast tasks (ms) / created per s",
        |s| {
            dispatch_or_dash(s, |d| {
                format!(
                    "1 in {}, {} / {} / {}",
                    d.slow_every,
                    f(d.slow_seconds),
                    f(d.fast_ms),
                    f(d.serve.rate_per_second)
                )
            })
        },
    ),
    (
        "mix: fast tasks' start delay p50 / p99 / max (ms), serve",
        |s| dispatch_or_dash(s, |d| delays(&d.serve)),
    ),
    (
        "mix: fast tasks' start delay p50 / p99 / max (ms), poll",
        |s| dispatch_or_dash(s, |d| delays(&d.poll)),
    ),
    (
        "wake-up on an idle server, created by another process: start p50 / p99 / max (ms)",
        |s| {
            dispatch_or_dash(s, |d| {
                d.idle_wake.as_ref().map_or_else(|| "—".to_owned(), delays)
            })
        },
    ),
    ("mix, all due at once: ideal ÷ drain (s / s)", |s| {
        dispatch_or_dash(s, |d| {
            let o = &d.occupancy;
            format!(
                "{} ({} / {})",
                f(o.ratio),
                f(o.ideal_seconds),
                f(o.drain_seconds)
            )
        })
    }),
    (
        "SIGKILL mid-run → every task succeeded on another (s; held, timeout + grace)",
        |s| {
            dispatch_or_dash(s, |d| {
                let c = &d.crash;
                format!(
                    "{} ({} held, {} + {} s)",
                    f(c.recovery_seconds),
                    c.running_at_kill,
                    f(c.timeout_seconds),
                    f(c.grace_seconds)
                )
            })
        },
    ),
];

/// The report: a table per store, then the peer and the Lambda binaries when measured.
pub fn report(results: &Results) -> String {
    let mut out = if results.stores.is_empty() {
        String::new()
    } else {
        stores_table(&results.stores)
    };
    if let Some(peer) = &results.peer {
        out += &peer_table(peer);
    }
    if let Some(peers) = &results.peers {
        out += &crate::peers::table(peers);
    }
    if let Some(lambda) = &results.lambda {
        out += &lambda_table(lambda);
    }
    if let Some(sqs) = &results.sqs {
        let poll = results.stores.iter().find(|s| s.store == "DynamoDB Local");
        out += &sqs_table(sqs, poll);
    }
    for scale in &results.scale {
        out += &scale_table(scale);
    }
    for blocked in &results.blocked {
        out += &crate::blocked::table(blocked);
    }
    out
}

fn scale_table(scale: &Scale) -> String {
    let metered = scale.calls.iter().any(|c| c.full_read_units.is_some());
    let (small, full) = (grouped(scale.small), grouped(scale.full));
    let mut out = format!(
        "\n| {}: median of 5 over HTTP | {small} tasks (ms) | {full} tasks (ms) |{}\n|---|---|---|{}\n",
        scale.store,
        if metered {
            format!(" read units at {small} | at {full} |")
        } else {
            String::new()
        },
        if metered { "---|---|" } else { "" },
    );
    for c in &scale.calls {
        let units = match (c.small_read_units, c.full_read_units) {
            (Some(s), Some(l)) => format!(" {} | {} |", f(s), f(l)),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} |{units}",
            c.call,
            f(c.small_ms),
            f(c.full_ms)
        );
    }
    for (size, stats) in [(&small, &scale.stats_small), (&full, &scale.stats_full)] {
        let _ = writeln!(
            out,
            "\n`GET /stats` at {size}: counts {}, due {}, exact {}, lowerBounds {}, activeSeenAt {}",
            stats["counts"],
            stats["due"],
            stats["exact"],
            stats["lowerBounds"],
            stats["activeSeenAt"]
        );
    }
    let _ = writeln!(out, "\n(load of {full} tasks: {:.0} s)", scale.load_seconds);
    out
}

/// `n` with thousands separators.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn sqs_table(sqs: &SqsResults, poll: Option<&StoreResults>) -> String {
    let mut out = String::from(
        "\n| due → start, DynamoDB Local (ms) | p50 | p99 | max |\n|---|---|---|---|\n",
    );
    for (d, how) in [
        (&sqs.start_delay, "long polls of 1 s"),
        (&sqs.start_delay_short_polls, "short polls 20 ms apart"),
    ] {
        let _ = writeln!(
            out,
            "| SQS mode ({} tasks, messages sent at the create, one worker, {how}) | {} | {} | {} |",
            d.tasks,
            f(d.p50_ms),
            f(d.p99_ms),
            f(d.max_ms)
        );
    }
    if let Some(poll) = poll {
        let d = &poll.start_delay;
        let _ = writeln!(
            out,
            "| poll mode ({} tasks, one invocation polling every {} s) | {} | {} | {} |",
            d.tasks,
            f(d.poll_interval_seconds),
            f(d.p50_ms),
            f(d.p99_ms),
            f(d.max_ms)
        );
    }
    out += "\n| SQS mode drain (moto + DynamoDB Local) | tasks/s | seconds | write units/task | read units/task | SQS calls/task |\n|---|---|---|---|---|---|\n";
    for drain in &sqs.drains {
        let _ = writeln!(
            out,
            "| {} worker(s), {} tasks | {} | {} | {} | {} | {} |",
            drain.workers,
            drain.tasks,
            f(drain.per_second),
            f(drain.seconds),
            f(drain.write_units_per_task),
            f(drain.read_units_per_task),
            f(drain.sqs_calls_per_task)
        );
    }
    out
}

fn stores_table(stores: &[StoreResults]) -> String {
    let names: Vec<&str> = stores.iter().map(|s| s.store.as_str()).collect();
    let mut out = format!("| measure | {} |\n", names.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(stores.len()));
    for (name, cell) in ROWS {
        let cells: Vec<String> = stores.iter().map(cell).collect();
        let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
    }
    out
}

fn peer_table(peer: &PeerResults) -> String {
    let mut out = String::from(
        "\n| same N no-op jobs on SQLite | Tasker | apalis-sqlite | Tasker ÷ apalis |\n|---|---|---|---|\n",
    );
    let apalis = &peer.apalis;
    for (name, ours, theirs) in [
        (
            "enqueue, one at a time (jobs/s)",
            peer.tasker_enqueue_per_second,
            apalis.enqueue_per_second,
        ),
        (
            "drain (jobs/s)",
            peer.tasker_drain_per_second,
            apalis.drain_per_second,
        ),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {:.2} |",
            f(ours),
            f(theirs),
            ours / theirs
        );
    }
    let _ = writeln!(
        out,
        "| enqueue + drain, total seconds | {} | {} | {} |",
        f(peer.tasker_total_seconds),
        f(peer.apalis_total_seconds),
        f(peer.speedup)
    );
    out
}

fn lambda_table(lambda: &LambdaResults) -> String {
    let mut out = String::from(
        "\n| Lambda binary (built for this machine) | init, median of 7 (ms) | size (bytes) |\n|---|---|---|\n",
    );
    for (name, function) in &lambda.functions {
        let _ = writeln!(
            out,
            "| {name} | {} | {} |",
            f(function.init_ms_median),
            function.host_binary_bytes
        );
    }
    let invocation = &lambda.processor_invocation;
    let rss = invocation
        .peak_rss_bytes
        .map_or("?".into(), |b| format!("{:.1}", b as f64 / 1_048_576.0));
    let answer = serde_json::to_string(&invocation.answer).unwrap_or_default();
    let _ = writeln!(
        out,
        "\nOne processor invocation over {} due tasks: {} s, peak resident memory {rss} MiB; answer {answer}",
        invocation.tasks,
        f(invocation.seconds),
    );
    out
}
