//! The benchmark's ceiling on PostgreSQL: how fast the server takes single-row conditional
//! updates, each its own transaction, from a pool of connections as the store holds one.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use super::{PgStore, pg_error};
use crate::store::StoreError;

/// Writes `count` counter rows into a new table of the database at `url` (outside Tasker's
/// schema), then times `count` conditional increments of them, `concurrency` callers at once
/// over as many connections, calling `tick` after each; the time they took.
pub async fn conditional_writes(
    url: &str,
    count: usize,
    concurrency: usize,
    tick: &(dyn Fn() + Sync),
) -> Result<Duration, StoreError> {
    let store = PgStore::connect(url, concurrency).await?;
    let client = store.client().await?;
    client
        .batch_execute(
            "DROP TABLE IF EXISTS public.tasker_ceiling;
             CREATE TABLE public.tasker_ceiling (id text PRIMARY KEY, n bigint NOT NULL);",
        )
        .await
        .map_err(|err| pg_error("creating the ceiling table", err))?;
    let rows = i64::try_from(count).unwrap_or(i64::MAX);
    client
        .execute(
            "INSERT INTO public.tasker_ceiling (id, n) \
             SELECT 'ceiling#' || i, 0 FROM generate_series(0::bigint, $1::bigint - 1) AS i",
            &[&rows],
        )
        .await
        .map_err(|err| pg_error("filling the ceiling table", err))?;
    drop(client);
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let store = &store;
            async move {
                let client = store.client().await?;
                let id = format!("ceiling#{i}");
                let changed = client
                    .execute(
                        "UPDATE public.tasker_ceiling SET n = n + 1 WHERE id = $1 AND n >= 0",
                        &[&id],
                    )
                    .await
                    .map_err(|err| pg_error("a ceiling write", err))?;
                if changed != 1 {
                    return Err(StoreError::backend(format!(
                        "ceiling row {id} was not updated"
                    )));
                }
                tick();
                Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed())
}
