//! Blocked work: the drain of fast tasks created behind work that is due but cannot be claimed
//! (tasks under long leases, a paused type's backlog, a type at its cap, one key's backlog
//! under its limits: SQLite and PostgreSQL, which keep them), by the process that
//! met that work (warm) and by a new one (fresh), against the same drains with nothing
//! blocked. On DynamoDB every call goes through the capacity proxy, so each drain has its read
//! and write units.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use tasker::handlers::TypeSettings;
use tasker::store::postgres::PgStore;
use tasker::store::{Claim, ClaimGate, Leases};
use tasker::{
    AnyStore, DynamoStore, NewTask, ProcessorSettings, Registry, SqliteStore, Store, TaskError,
    Tasker, Timestamp,
};
use tasker_tests::capacity::CapacityProxy;
use tasker_tests::dynamo;
use tokio::sync::{Notify, watch};

use crate::phases::CONCURRENCY;
use crate::results::{BlockedCase, BlockedDrain, BlockedResults, sums};
use crate::stores::{Bench, Kind};

/// The lease of the held tasks.
const HELD_LEASE: Duration = Duration::from_secs(15 * 60);
/// Tasks held under that lease.
const HELD: usize = 4;
/// A capped task's handler time: long enough that the type stays at its cap all along.
const CAPPED_WORK: Duration = Duration::from_secs(2);

/// What is ahead of the fast tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Nothing,
    Leases,
    Paused,
    Capped,
    Keyed,
    RateKeyed,
    ConcurrencyKeyed,
}

/// The keyed case's limits: one task of the key at a time, one start a second; and a rate and
/// a concurrency for the fast tasks of the rate-keyed and concurrency-keyed cases that never
/// bind, so their drains show what keeping each costs.
const KEY_LIMITS: &str = r#"[{"type": "keyed", "concurrency": 1, "rate": "1/1s"},
    {"type": "noop", "rate": "100000/1s", "burst": 1000, "concurrency": 100000}]"#;
/// Rate (or concurrency) keys the fast tasks of the rate-keyed (concurrency-keyed) case share.
const FAST_KEYS: usize = 10;

impl Case {
    fn describe(self, bench: &Bench) -> String {
        let args = &bench.args;
        match self {
            Self::Nothing => "nothing blocked".to_owned(),
            Self::Leases => format!("{HELD} tasks under 15-minute leases"),
            Self::Paused => format!("a paused type, {} due", args.blocked_paused),
            Self::Capped => format!("a type capped at 1, {} due", args.blocked_capped),
            Self::Keyed => format!(
                "one key limited to 1 at once and 1 a second, {} due",
                args.blocked_capped
            ),
            Self::RateKeyed => {
                format!("nothing; each fast task with one of {FAST_KEYS} rate keys (never binding)")
            }
            Self::ConcurrencyKeyed => format!(
                "nothing; each fast task with one of {FAST_KEYS} concurrency keys (never binding)"
            ),
        }
    }
}

/// Counts the fast tasks done and wakes the drain when the target is reached.
#[derive(Default)]
struct Counter {
    done: AtomicUsize,
    target: AtomicUsize,
    reached: Notify,
}

impl Counter {
    fn expect(&self, n: usize) {
        self.done.store(0, Ordering::SeqCst);
        self.target.store(n, Ordering::SeqCst);
    }

    fn tick(&self) {
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        if done == self.target.load(Ordering::SeqCst) {
            self.reached.notify_one();
        }
    }
}

fn registry(counter: &Arc<Counter>) -> Registry {
    let mut registry = Registry::new();
    let fast = Arc::clone(counter);
    registry
        .register("noop", move |_| {
            fast.tick();
            async { Ok::<(), TaskError>(()) }
        })
        .expect("register noop");
    for name in ["held", "paused"] {
        registry
            .register(name, |_| async { Ok::<(), TaskError>(()) })
            .expect("register a blocked type");
    }
    let capped = TypeSettings {
        concurrency: Some(1),
        ..TypeSettings::default()
    };
    registry
        .register_with("capped", capped, |_| async {
            tokio::time::sleep(CAPPED_WORK).await;
            Ok::<(), TaskError>(())
        })
        .expect("register capped");
    registry
        .register("keyed", |_| async {
            tokio::time::sleep(CAPPED_WORK).await;
            Ok::<(), TaskError>(())
        })
        .expect("register keyed");
    registry
}

fn tasker(store: AnyStore, counter: &Arc<Counter>) -> Tasker<AnyStore> {
    let settings = ProcessorSettings {
        concurrency: CONCURRENCY,
        ..ProcessorSettings::default()
    };
    let limits = tasker::store::KeyLimits::parse(KEY_LIMITS).expect("valid key limits");
    Tasker::new(store, registry(counter), settings).with_key_limits(Arc::new(limits))
}

/// Every case on the store `kind`.
pub async fn measure(bench: &Bench, kind: Kind) -> BlockedResults {
    if kind == Kind::DynamoDb {
        // DynamoDB Local is a JVM: its first thousands of calls run slower, which would make
        // the first case (the one the others are divided by) look slow.
        eprintln!("{}: blocked work, warming up", kind.name());
        one_case(bench, kind, Case::Nothing).await;
    }
    let mut cases = Vec::new();
    let cases_here = [
        Case::Nothing,
        Case::Leases,
        Case::Paused,
        Case::Capped,
        Case::Keyed,
        Case::RateKeyed,
        Case::ConcurrencyKeyed,
    ];
    for case in cases_here {
        eprintln!("{}: blocked work, {}", kind.name(), case.describe(bench));
        cases.push(one_case(bench, kind, case).await);
    }
    let paused_claim = match kind {
        Kind::Sqlite => Some(paused_claim(bench).await),
        Kind::DynamoDb | Kind::Postgres => None,
    };
    BlockedResults {
        store: kind.name().to_owned(),
        tasks: bench.args.blocked_tasks,
        cases,
        paused_claim,
    }
}

/// Two stores over one fresh table or file (a process and a new one), and the proxy that
/// meters them on DynamoDB.
async fn two_stores(
    bench: &Bench,
    kind: Kind,
    label: &str,
) -> (AnyStore, AnyStore, Option<CapacityProxy>) {
    match kind {
        Kind::Sqlite => {
            let path = bench.dir.path().join(format!("blocked-{label}.db"));
            let open = || AnyStore::Sqlite(SqliteStore::open(&path).expect("SQLite"));
            (open(), open(), None)
        }
        Kind::DynamoDb => {
            let proxy = CapacityProxy::start(bench.endpoint()).await;
            let first = dynamo::fresh_store_at(&proxy.endpoint).await;
            let second = DynamoStore::new(
                dynamo::client_for(&proxy.endpoint),
                first.table(),
                dynamo::RETENTION,
            );
            (
                AnyStore::DynamoDb(first),
                AnyStore::DynamoDb(second),
                Some(proxy),
            )
        }
        Kind::Postgres => {
            let url = bench.fresh_database().await;
            let open = || async {
                AnyStore::Postgres(
                    PgStore::connect(&url, crate::stores::PG_POOL)
                        .await
                        .expect("PostgreSQL")
                        .metered(),
                )
            };
            (open().await, open().await, None)
        }
    }
}

async fn one_case(bench: &Bench, kind: Kind, case: Case) -> BlockedCase {
    let n = bench.args.blocked_tasks;
    let label = format!("{case:?}").to_lowercase();
    let (first, second, proxy) = two_stores(bench, kind, &label).await;
    let counter = Arc::new(Counter::default());
    let warm = tasker(first, &counter);
    block(bench, &warm, case).await;
    // The process meets the blocked work before the fast tasks arrive (a paused backlog's
    // items are read once by any design: the index does not know their type).
    warm.process_queue(Some(Instant::now() + Duration::from_secs(3)))
        .await
        .expect("a first run over the blocked work");
    create(&warm, n, case).await;
    let warm_drain = drain(&warm, &counter, n, proxy.as_ref()).await;
    let fresh = tasker(second, &counter);
    create(&fresh, n, case).await;
    let fresh_drain = drain(&fresh, &counter, n, proxy.as_ref()).await;
    BlockedCase {
        case: case.describe(bench),
        warm: warm_drain,
        fresh: fresh_drain,
    }
}

/// Puts the case's blocked work in the queue.
async fn block(bench: &Bench, tasker: &Tasker<AnyStore>, case: Case) {
    match case {
        Case::Leases => {
            create_type(tasker, "held", HELD).await;
            let leases = Leases::fixed(HELD_LEASE);
            let now = Timestamp::now_utc();
            let held = tasker
                .store()
                .task_claim(Claim::due(now, HELD, &leases))
                .await
                .expect("claim the held tasks");
            assert_eq!(held.len(), HELD, "every held task is claimed");
        }
        Case::Paused => {
            tasker
                .pause_type("paused", true)
                .await
                .expect("pause the type");
            create_type(tasker, "paused", bench.args.blocked_paused).await;
        }
        Case::Capped => create_type(tasker, "capped", bench.args.blocked_capped).await,
        Case::Nothing | Case::RateKeyed | Case::ConcurrencyKeyed => {}
        Case::Keyed => {
            futures::stream::iter(0..bench.args.blocked_capped)
                .map(|i| {
                    let mut new = NewTask::new("keyed", format!("{{\"n\":{i}}}"));
                    new.concurrency_key = Some("k".to_owned());
                    new.rate_key = Some("k".to_owned());
                    tasker.create(new)
                })
                .buffer_unordered(CONCURRENCY)
                .try_collect::<Vec<_>>()
                .await
                .expect("create the keyed tasks");
        }
    }
}

/// `n` fast tasks; in the rate-keyed and concurrency-keyed cases each with one of
/// [`FAST_KEYS`] keys of that kind.
async fn create(tasker: &Tasker<AnyStore>, n: usize, case: Case) {
    if !matches!(case, Case::RateKeyed | Case::ConcurrencyKeyed) {
        return create_type(tasker, "noop", n).await;
    }
    futures::stream::iter(0..n)
        .map(|i| {
            let mut new = NewTask::new("noop", format!("{{\"n\":{i}}}"));
            let key = Some(format!("fast-{}", i % FAST_KEYS));
            if case == Case::RateKeyed {
                new.rate_key = key;
            } else {
                new.concurrency_key = key;
            }
            tasker.create(new)
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .expect("create the keyed fast tasks");
}

async fn create_type(tasker: &Tasker<AnyStore>, task_type: &str, n: usize) {
    futures::stream::iter(0..n)
        .map(|i| tasker.create(NewTask::new(task_type, format!("{{\"n\":{i}}}"))))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .expect("create");
}

/// `tasker` serves the queue until `n` fast tasks are done: how long that took and, through
/// `proxy`, what it cost.
async fn drain(
    tasker: &Tasker<AnyStore>,
    counter: &Counter,
    n: usize,
    proxy: Option<&CapacityProxy>,
) -> BlockedDrain {
    counter.expect(n);
    if let Some(proxy) = proxy {
        proxy.take();
    }
    let started = Instant::now();
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let processor = tasker.serve_queue(Duration::from_secs(1), async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    });
    let done = async {
        counter.reached.notified().await;
        let took = started.elapsed();
        let _ = stop_tx.send(true);
        took
    };
    let (_, took) = tokio::join!(processor, done);
    let consumed = proxy.map(|proxy| sums(&proxy.take()));
    let per = |units: f64| units / n.max(1) as f64;
    BlockedDrain {
        seconds: took.as_secs_f64(),
        read_units_per_task: consumed.as_ref().map(|c| per(c.read_units)),
        write_units_per_task: consumed.as_ref().map(|c| per(c.write_units)),
    }
}

/// SQLite: the median time of a claim of up to 16 due tasks behind a paused backlog, and of the
/// same claim with no backlog.
async fn paused_claim(bench: &Bench) -> crate::results::PausedClaim {
    let backlog = bench.args.blocked_paused_sqlite;
    let mut medians = Vec::new();
    for (label, paused) in [("claim-none", 0), ("claim-paused", backlog)] {
        let path = bench.dir.path().join(format!("blocked-{label}.db"));
        let counter = Arc::new(Counter::default());
        let tasker = tasker(
            AnyStore::Sqlite(SqliteStore::open(&path).expect("SQLite")),
            &counter,
        );
        tasker
            .pause_type("paused", true)
            .await
            .expect("pause the type");
        create_type(&tasker, "paused", paused).await;
        create(&tasker, 50 * CONCURRENCY, Case::Nothing).await;
        let paused_types = tasker.paused_now().await.expect("the paused types");
        let gate = ClaimGate::new(paused_types, BTreeMap::new());
        let leases = Leases::fixed(Duration::from_secs(60));
        let mut took = Vec::new();
        for _ in 0..50 {
            let started = Instant::now();
            let now = Timestamp::now_utc();
            let claimed = tasker
                .store()
                .task_claim(Claim::due(now, CONCURRENCY, &leases).through(&gate))
                .await
                .expect("claim");
            took.push(started.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(claimed.len(), CONCURRENCY, "a full claim of fast tasks");
        }
        medians.push(crate::phases::percentiles(took).0);
    }
    crate::results::PausedClaim {
        backlog,
        median_ms: medians[1],
        median_ms_without: medians[0],
    }
}

/// The phase's table for one store: each case's drains and their ratios to nothing blocked.
pub fn table(blocked: &BlockedResults) -> String {
    use std::fmt::Write as _;
    let f = crate::report::f;
    let mut out = format!(
        "\n| {}: {} fast tasks behind | warm s | × | warm read units/task | × \
         | fresh s | × | fresh read units/task | × |\n{}\n",
        blocked.store,
        blocked.tasks,
        "|---".repeat(9) + "|"
    );
    let Some(base) = blocked.cases.first() else {
        return out;
    };
    let ratio = |x: Option<f64>, of: Option<f64>| match (x, of) {
        (Some(x), Some(of)) if of > 0.0 => format!("{:.2}", x / of),
        _ => "—".to_owned(),
    };
    let units = |x: Option<f64>| x.map_or("—".to_owned(), f);
    for case in &blocked.cases {
        let (w, fr) = (&case.warm, &case.fresh);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            case.case,
            f(w.seconds),
            ratio(Some(w.seconds), Some(base.warm.seconds)),
            units(w.read_units_per_task),
            ratio(w.read_units_per_task, base.warm.read_units_per_task),
            f(fr.seconds),
            ratio(Some(fr.seconds), Some(base.fresh.seconds)),
            units(fr.read_units_per_task),
            ratio(fr.read_units_per_task, base.fresh.read_units_per_task),
        );
    }
    let writes: Vec<String> = blocked
        .cases
        .iter()
        .filter_map(|case| case.warm.write_units_per_task)
        .map(f)
        .collect();
    if !writes.is_empty() {
        let _ = writeln!(
            out,
            "\nWrite units per fast task in the warm drains (claim and success): {}",
            writes.join(", ")
        );
    }
    if let Some(claim) = &blocked.paused_claim {
        let _ = writeln!(
            out,
            "\nA claim of {} due tasks: median {} ms behind {} paused tasks, {} ms with none",
            crate::phases::CONCURRENCY,
            f(claim.median_ms),
            claim.backlog,
            f(claim.median_ms_without)
        );
    }
    out
}
