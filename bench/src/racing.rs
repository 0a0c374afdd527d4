//! One backlog drained by one, two and four processors at once, each with its own store client
//! (its own SQLite connection, DynamoDB client or PostgreSQL pool, as separate processes have):
//! what racing costs or gains in throughput, and that no task ran twice.

use std::time::{Duration, Instant};

use serde::Serialize;
use tasker::store::postgres::PgStore;
use tasker::{AnyStore, DynamoStore, SqliteStore};
use tasker_tests::dynamo;

use crate::phases::{self, CONCURRENCY};
use crate::stores::{Bench, Kind, PG_POOL, noop_tasker};
use crate::{bar, report::f};

/// How many processors each pass races.
const PROCESSORS: [usize; 3] = [1, 2, 4];

/// One pass: `processors` draining the same backlog.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Racing {
    /// Processors draining at once.
    pub processors: usize,
    /// Tasks drained, all of them together, per second.
    pub per_second: f64,
    /// Tasks each processor ran (their sum is the backlog: none ran twice).
    pub succeeded: Vec<usize>,
}

/// `count` stores over one fresh backlog of `kind`, as `count` processes would open it.
async fn sharing(bench: &Bench, kind: Kind, count: usize) -> Vec<AnyStore> {
    match kind {
        Kind::Sqlite => {
            let path = bench.dir.path().join(format!("racing-{count}.db"));
            (0..count)
                .map(|_| AnyStore::Sqlite(SqliteStore::open(&path).expect("SQLite")))
                .collect()
        }
        Kind::DynamoDb => {
            let first = dynamo::fresh_store_at(bench.endpoint()).await;
            let others = (1..count).map(|_| {
                let client = dynamo::client_for(bench.endpoint());
                AnyStore::DynamoDb(DynamoStore::new(client, first.table(), dynamo::RETENTION))
            });
            std::iter::once(AnyStore::DynamoDb(first.clone()))
                .chain(others)
                .collect()
        }
        Kind::Postgres => {
            let url = bench.fresh_database().await;
            let mut stores = Vec::new();
            for _ in 0..count {
                let store = PgStore::connect(&url, PG_POOL).await.expect("PostgreSQL");
                stores.push(AnyStore::Postgres(store));
            }
            stores
        }
    }
}

/// The passes on `kind`, each over `bench.args.tasks` due no-op tasks.
pub async fn racing(bench: &Bench, kind: Kind) -> Vec<Racing> {
    let n = bench.args.tasks;
    let mut passes = Vec::new();
    for processors in PROCESSORS {
        let stores = sharing(bench, kind, processors).await;
        let label = format!("{}: {processors} racing processors", kind.name());
        let progress = bar(n, &format!("{label}, enqueue"));
        phases::enqueue_library(&noop_tasker(stores[0].clone()), n, CONCURRENCY, &progress).await;
        progress.finish_and_clear();
        let progress = bar(n, &format!("{label}, drain"));
        let started = Instant::now();
        let drains = stores
            .into_iter()
            .map(|store| phases::drain(store, n, &progress));
        let drains = futures::future::join_all(drains).await;
        let took = started.elapsed().max(Duration::from_micros(1));
        progress.finish_and_clear();
        let succeeded: Vec<usize> = drains.iter().map(|drain| drain.succeeded).collect();
        assert_eq!(
            succeeded.iter().sum::<usize>(),
            n,
            "{label}: every task ran once ({succeeded:?})"
        );
        passes.push(Racing {
            processors,
            per_second: n as f64 / took.as_secs_f64(),
            succeeded,
        });
    }
    passes
}

/// The report's cell: tasks/s of each pass and its ratio to one processor.
pub fn cell(passes: &[Racing]) -> String {
    let one = passes.first().map_or(f64::NAN, |pass| pass.per_second);
    passes
        .iter()
        .map(|pass| {
            format!(
                "{}: {} ({}×)",
                pass.processors,
                f(pass.per_second),
                f(pass.per_second / one)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The report's cell: tasks each processor ran, per pass with more than one.
pub fn split(passes: &[Racing]) -> String {
    passes
        .iter()
        .filter(|pass| pass.processors > 1)
        .map(|pass| {
            let each: Vec<String> = pass.succeeded.iter().map(usize::to_string).collect();
            each.join(" / ")
        })
        .collect::<Vec<_>>()
        .join("; ")
}
