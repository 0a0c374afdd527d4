//! Every phase on one store, in the order a reader of the report meets them: ceiling, enqueue
//! (library and HTTP), drain, DynamoDB capacity units and a race of two processors, racing
//! processors on every store, start delay.

use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;
use tasker::store::postgres::PgStore;
use tasker::{AnyStore, DynamoStore, PollSettings, ProcessorSettings, SqliteStore, Tasker};
use tasker_tests::capacity::CapacityProxy;
use tasker_tests::dynamo;

use crate::dispatch::{self, CrashSettings, Mix, Mode};
use crate::phases::{self, CONCURRENCY};
use crate::results::{Dispatch, Race, StartDelay, StoreResults, Units, ledger, sums};
use crate::{Args, bar};

/// Which store a pass measures.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A SQLite file.
    Sqlite,
    /// DynamoDB Local.
    DynamoDb,
    /// A PostgreSQL server started for the run (durable defaults).
    Postgres,
}

impl Kind {
    /// The store's name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::DynamoDb => "DynamoDB Local",
            Self::Postgres => "PostgreSQL",
        }
    }
}

/// Where stores are made: a temporary folder and DynamoDB Local.
pub struct Bench {
    /// Holds the SQLite files.
    pub dir: tempfile::TempDir,
    /// DynamoDB Local, when it runs.
    pub endpoint: Option<String>,
    /// moto's SQS, when it runs.
    pub sqs_endpoint: Option<String>,
    /// The PostgreSQL server's `postgres` database, when it runs.
    pub postgres: Option<String>,
    /// The command line.
    pub args: Args,
}

impl Bench {
    /// A fresh store of `kind` (`label` names its SQLite file).
    pub async fn store(&self, kind: Kind, label: &str) -> AnyStore {
        match kind {
            Kind::Sqlite => AnyStore::Sqlite(
                SqliteStore::open(self.dir.path().join(format!("{label}.db"))).expect("SQLite"),
            ),
            Kind::DynamoDb => AnyStore::DynamoDb(dynamo::fresh_store_at(self.endpoint()).await),
            Kind::Postgres => AnyStore::Postgres(
                PgStore::connect(&self.fresh_database().await, PG_POOL)
                    .await
                    .expect("PostgreSQL"),
            ),
        }
    }

    /// A new database on the run's PostgreSQL server; its URL.
    pub async fn fresh_database(&self) -> String {
        let admin = self.postgres.as_deref().expect("PostgreSQL is running");
        tasker_tests::postgres::fresh_database_at(admin).await
    }

    /// A Tasker over a fresh store of `kind` whose `noop` tasks do nothing.
    async fn tasker(&self, kind: Kind, label: &str) -> Tasker<AnyStore> {
        noop_tasker(self.store(kind, label).await)
    }

    /// DynamoDB Local's endpoint.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_deref().expect("DynamoDB Local is running")
    }
}

/// Connections of each PostgreSQL store: the claims' and outcomes' `CONCURRENCY` and a few
/// for the loops beside them.
pub const PG_POOL: usize = CONCURRENCY + 4;

pub fn noop_tasker(store: AnyStore) -> Tasker<AnyStore> {
    let registry = phases::noop_registry(ProgressBar::hidden());
    Tasker::new(store, registry, ProcessorSettings::default())
}

/// Every phase on the store `kind`.
pub async fn bench_store(bench: &Bench, kind: Kind) -> StoreResults {
    let n = bench.args.tasks;
    let label = kind.name();
    let ceiling = ceiling(bench, kind).await;

    let tasker = bench.tasker(kind, "drain").await;
    let progress = bar(
        n,
        &format!("{label}: enqueue, library, {CONCURRENCY} at once"),
    );
    let enqueue_concurrent = phases::enqueue_library(&tasker, n, CONCURRENCY, &progress).await;
    progress.finish_and_clear();
    let progress = bar(n, &format!("{label}: drain"));
    let drain = phases::drain(tasker.store().clone(), n, &progress).await;
    progress.finish_and_clear();
    assert_eq!(drain.succeeded, n, "every task of the drain succeeded");

    let tasker = bench.tasker(kind, "sequential").await;
    let progress = bar(n, &format!("{label}: enqueue, library, one at a time"));
    let enqueue_sequential = phases::enqueue_library(&tasker, n, 1, &progress).await;
    progress.finish_and_clear();

    let (http_single, http_batch) = enqueue_http(bench, kind).await;
    let units = match kind {
        Kind::DynamoDb => Some(units(bench).await),
        Kind::Sqlite | Kind::Postgres => None,
    };
    let racing = crate::racing::racing(bench, kind).await;
    let writes_per_task = units
        .as_ref()
        .map_or(drain.writes_per_task, |u| u.drain_write_calls_per_task);
    StoreResults {
        store: label.to_owned(),
        tasks: n,
        ceiling_writes_per_second: ceiling,
        enqueue_library_concurrent_per_second: enqueue_concurrent,
        enqueue_library_sequential_per_second: enqueue_sequential,
        enqueue_http_single_per_second: http_single,
        http_single_tasks: bench.args.http_tasks,
        enqueue_http_batch_per_second: http_batch,
        drain_per_second: drain.per_second,
        drain_seconds: n as f64 / drain.per_second,
        writes_per_task,
        drain_ratio: drain.per_second / (ceiling / writes_per_task),
        units,
        racing,
        start_delay: start_delay(bench, kind).await,
        fire_lag: fire_lag(bench, kind).await,
        dispatch: if bench.args.no_dispatch {
            None
        } else {
            Some(dispatch(bench, kind).await)
        },
    }
}

/// PostgreSQL's wake-up across processes on an idle server: fast tasks created 5 per second
/// through a store of their own (another pool, as another process has) while a processor
/// polling once a minute runs them, so only LISTEN/NOTIFY can start them soon.
async fn idle_wake(bench: &Bench) -> crate::results::MixedLatency {
    let url = bench.fresh_database().await;
    let connect =
        || async { AnyStore::Postgres(PgStore::connect(&url, PG_POOL).await.expect("PostgreSQL")) };
    let (store, creator) = (connect().await, connect().await);
    let mix = dispatch::Mix::fast_only(
        bench.args.wake_tasks,
        Duration::from_millis(bench.args.fast_ms),
    );
    let progress = bar(
        mix.tasks,
        "PostgreSQL: wake-up on an idle server, another process creates",
    );
    let interval = Duration::from_secs(60);
    let wake = dispatch::mixed_latency(
        store,
        Some(creator),
        mix,
        5.0,
        Mode::Poll,
        interval,
        &progress,
    )
    .await;
    progress.finish_and_clear();
    wake
}

/// The scale phase on a fresh store of `kind` (through the metering proxy on DynamoDB).
pub async fn scale(bench: &Bench, kind: Kind) -> crate::results::Scale {
    let args = &bench.args;
    match kind {
        Kind::Sqlite => {
            let store = bench.store(kind, "scale").await;
            let api = AnyStore::Sqlite(
                SqliteStore::open(bench.dir.path().join("scale.db")).expect("SQLite"),
            );
            let (small, full) = (args.scale_small, args.scale_sqlite);
            crate::scale::scale(store, api, None, kind.name(), small, full).await
        }
        Kind::DynamoDb => {
            let proxy = CapacityProxy::start(bench.endpoint()).await;
            let loader = dynamo::fresh_store_at(&proxy.endpoint).await;
            let api = DynamoStore::new(
                dynamo::client_for(&proxy.endpoint),
                loader.table(),
                dynamo::RETENTION,
            );
            let (store, api) = (AnyStore::DynamoDb(loader), AnyStore::DynamoDb(api));
            let (small, full) = (args.scale_small, args.scale_dynamodb);
            crate::scale::scale(store, api, Some(&proxy), kind.name(), small, full).await
        }
        Kind::Postgres => {
            let url = bench.fresh_database().await;
            let open = || async {
                AnyStore::Postgres(PgStore::connect(&url, PG_POOL).await.expect("PostgreSQL"))
            };
            let (store, api) = (open().await, open().await);
            let (small, full) = (args.scale_small, args.scale_postgres);
            crate::scale::scale(store, api, None, kind.name(), small, full).await
        }
    }
}

/// The crash pass's settings from the command line.
pub fn crash_settings(args: &Args) -> CrashSettings {
    CrashSettings {
        tasks: args.crash_tasks,
        work: Duration::from_millis(args.crash_work_ms),
        timeout: Duration::from_secs(args.crash_timeout),
        grace: Duration::from_secs(args.crash_grace),
    }
}

/// The store a crash worker names: `sqlite:PATH`, `dynamodb:ENDPOINT#TABLE` or `postgres:URL`.
pub async fn worker_store(spec: &str) -> AnyStore {
    match spec.split_once(':') {
        Some(("sqlite", path)) => AnyStore::Sqlite(SqliteStore::open(path).expect("SQLite")),
        Some(("dynamodb", rest)) => {
            let (endpoint, table) = rest.split_once('#').expect("ENDPOINT#TABLE");
            AnyStore::DynamoDb(DynamoStore::new(
                dynamo::client_for(endpoint),
                table,
                Duration::ZERO,
            ))
        }
        Some(("postgres", url)) => {
            AnyStore::Postgres(PgStore::connect(url, PG_POOL).await.expect("PostgreSQL"))
        }
        _ => panic!(
            "--crash-worker takes sqlite:PATH, dynamodb:ENDPOINT#TABLE or postgres:URL, not {spec:?}"
        ),
    }
}

/// The dispatcher passes: the mix in serve and poll mode, its occupancy, the crash.
async fn dispatch(bench: &Bench, kind: Kind) -> Dispatch {
    let args = &bench.args;
    let label = kind.name();
    let mix = Mix {
        tasks: args.mixed_tasks,
        slow_every: args.slow_every,
        slow: Duration::from_millis(args.slow_ms),
        fast: Duration::from_millis(args.fast_ms),
    };
    let interval = Duration::from_secs_f64(args.poll_interval);
    let mut latency = Vec::new();
    for (mode, name) in [(Mode::Serve, "serve"), (Mode::Poll, "poll")] {
        let progress = bar(mix.tasks, &format!("{label}: mixed latency, {name} mode"));
        let store = bench.store(kind, &format!("mixed-{name}")).await;
        latency.push(
            dispatch::mixed_latency(store, None, mix, args.mixed_rate, mode, interval, &progress)
                .await,
        );
        progress.finish_and_clear();
    }
    let idle_wake = match kind {
        Kind::Postgres => Some(idle_wake(bench).await),
        Kind::Sqlite | Kind::DynamoDb => None,
    };
    let progress = bar(mix.tasks, &format!("{label}: occupancy"));
    let store = bench.store(kind, "occupancy").await;
    let occupancy = dispatch::occupancy(store, mix, &progress).await;
    progress.finish_and_clear();

    eprintln!("{label}: crash recovery (a processor killed mid-run)");
    let (store, spec) = match kind {
        Kind::Sqlite => (
            bench.store(kind, "crash").await,
            format!("sqlite:{}", bench.dir.path().join("crash.db").display()),
        ),
        Kind::DynamoDb => {
            let dynamo = dynamo::fresh_store_at(bench.endpoint()).await;
            let spec = format!("dynamodb:{}#{}", bench.endpoint(), dynamo.table());
            (AnyStore::DynamoDb(dynamo), spec)
        }
        Kind::Postgres => {
            let url = bench.fresh_database().await;
            let store = PgStore::connect(&url, PG_POOL).await.expect("PostgreSQL");
            (AnyStore::Postgres(store), format!("postgres:{url}"))
        }
    };
    let mut worker = std::process::Command::new(std::env::current_exe().expect("bench binary"));
    worker
        .arg("--crash-worker")
        .arg(spec)
        .args(["--poll-interval", &args.poll_interval.to_string()])
        .args(["--crash-work-ms", &args.crash_work_ms.to_string()])
        .args(["--crash-timeout", &args.crash_timeout.to_string()])
        .args(["--crash-grace", &args.crash_grace.to_string()])
        .stdout(std::process::Stdio::null());
    let crash = dispatch::crash_recovery(store, crash_settings(args), worker, interval).await;
    let mut latency = latency.into_iter();
    Dispatch {
        slow_seconds: mix.slow.as_secs_f64(),
        fast_ms: mix.fast.as_secs_f64() * 1000.0,
        slow_every: mix.slow_every,
        serve: latency.next().expect("serve pass"),
        poll: latency.next().expect("poll pass"),
        idle_wake,
        poll_interval_seconds: args.poll_interval,
        occupancy,
        crash,
    }
}

/// Single conditional writes per second, `CONCURRENCY` at once, on the store's own medium.
async fn ceiling(bench: &Bench, kind: Kind) -> f64 {
    let n = bench.args.tasks;
    let progress = bar(n, &format!("{}: ceiling (conditional writes)", kind.name()));
    let ceiling = match kind {
        Kind::Sqlite => {
            phases::sqlite_ceiling(&bench.dir.path().join("ceiling.db"), n, &progress).await
        }
        Kind::DynamoDb => {
            // DynamoDB Local is a JVM: the first thousands of calls run slower while it warms
            // up, which would make the ceiling look low and every ratio to it look good.
            phases::dynamo_ceiling(bench.endpoint(), n.min(5_000), &ProgressBar::hidden()).await;
            phases::dynamo_ceiling(bench.endpoint(), n, &progress).await
        }
        Kind::Postgres => {
            let url = bench.fresh_database().await;
            phases::postgres_ceiling(&url, n, &progress).await
        }
    };
    progress.finish_and_clear();
    ceiling
}

/// Creates over HTTP, one request at a time and in batches of 100; tasks per second of each.
async fn enqueue_http(bench: &Bench, kind: Kind) -> (f64, f64) {
    let label = kind.name();
    let base = phases::serve_api(Arc::new(bench.tasker(kind, "http").await)).await;
    let single = bench.args.http_tasks;
    let progress = bar(single, &format!("{label}: enqueue, HTTP one at a time"));
    let http_single = phases::enqueue_http_single(&base, single, &progress).await;
    progress.finish_and_clear();
    let n = bench.args.tasks;
    let progress = bar(n, &format!("{label}: enqueue, HTTP batches of 100"));
    let http_batch = phases::enqueue_http_batch(&base, n, &progress).await;
    progress.finish_and_clear();
    (http_single, http_batch)
}

/// DynamoDB capacity units of the same life (enqueue → success) through the measuring proxy,
/// and what two racing processors cost.
async fn units(bench: &Bench) -> Units {
    let n = bench.args.tasks;
    let proxy = CapacityProxy::start(bench.endpoint()).await;
    let tasker = noop_tasker(AnyStore::DynamoDb(
        dynamo::fresh_store_at(&proxy.endpoint).await,
    ));
    proxy.take();
    let progress = bar(n, "DynamoDB Local: units pass, enqueue");
    phases::enqueue_library(&tasker, n, CONCURRENCY, &progress).await;
    progress.finish_and_clear();
    let enqueue = proxy.take();
    let progress = bar(n, "DynamoDB Local: units pass, drain");
    let drained = phases::drain(tasker.store().clone(), n, &progress).await;
    progress.finish_and_clear();
    let process = proxy.take();
    let (enqueued, processed) = (sums(&enqueue), sums(&process));
    let per = |x: f64| x / drained.succeeded.max(1) as f64;
    Units {
        write_units_per_task: per(enqueued.write_units + processed.write_units),
        read_units_per_task: per(enqueued.read_units + processed.read_units),
        condition_failures: enqueued.condition_failures + processed.condition_failures,
        drain_write_calls_per_task: per(processed.write_calls as f64),
        enqueue: ledger(&enqueue),
        process: ledger(&process),
        race: race(&proxy, n).await,
    }
}

/// Two processors (two processes' worth of state) racing over the same backlog: what their
/// collisions cost. Each claim that loses its condition is billed on AWS.
async fn race(proxy: &CapacityProxy, n: usize) -> Race {
    let first = dynamo::fresh_store_at(&proxy.endpoint).await;
    let second = DynamoStore::new(
        dynamo::client_for(&proxy.endpoint),
        first.table(),
        Duration::ZERO,
    );
    let tasker = noop_tasker(AnyStore::DynamoDb(first.clone()));
    let progress = bar(n, "DynamoDB Local: race pass, enqueue");
    phases::enqueue_library(&tasker, n, CONCURRENCY, &progress).await;
    progress.finish_and_clear();
    proxy.take();
    let progress = bar(n, "DynamoDB Local: race pass, two processors");
    let (a, b) = tokio::join!(
        phases::drain(AnyStore::DynamoDb(first), n, &progress),
        phases::drain(AnyStore::DynamoDb(second), n, &progress),
    );
    progress.finish_and_clear();
    let race = proxy.take();
    let raced = sums(&race);
    let tasks = (a.succeeded + b.succeeded).max(1) as f64;
    Race {
        succeeded: [a.succeeded, b.succeeded],
        condition_failures_per_task: raced.condition_failures as f64 / tasks,
        drain_write_units_per_task: raced.write_units / tasks,
        drain_read_units_per_task: raced.read_units / tasks,
        ledger: ledger(&race),
    }
}

/// Due → start delays of one processor invocation in poll mode.
async fn fire_lag(bench: &Bench, kind: Kind) -> crate::results::FireLag {
    let (schedules, seconds) = (bench.args.schedules, bench.args.schedule_seconds);
    eprintln!(
        "{}: schedules, {schedules} firing every second for {seconds} s",
        kind.name()
    );
    match kind {
        Kind::Sqlite | Kind::Postgres => {
            let store = bench.store(kind, "schedules").await;
            crate::schedules::fire_lag(store, None, schedules, seconds).await
        }
        Kind::DynamoDb => {
            let proxy = CapacityProxy::start(bench.endpoint()).await;
            let store = AnyStore::DynamoDb(dynamo::fresh_store_at(&proxy.endpoint).await);
            crate::schedules::fire_lag(store, Some(&proxy), schedules, seconds).await
        }
    }
}

async fn start_delay(bench: &Bench, kind: Kind) -> StartDelay {
    let tasks = bench.args.delay_tasks;
    let poll = PollSettings {
        window: Duration::ZERO,
        interval: Duration::from_secs_f64(bench.args.poll_interval),
    };
    let progress = bar(tasks, &format!("{}: start delay, poll mode", kind.name()));
    let store = bench.store(kind, "delay").await;
    let delay = phases::start_delay(store, tasks, poll, &progress).await;
    progress.finish_and_clear();
    StartDelay {
        tasks: delay.tasks,
        poll_interval_seconds: bench.args.poll_interval,
        p50_ms: delay.p50_ms,
        p99_ms: delay.p99_ms,
        max_ms: delay.max_ms,
    }
}
