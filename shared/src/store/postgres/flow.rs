//! Flow control on PostgreSQL: paused types in a table of their own, counts per type from the
//! unfinished tasks' index.

use time::OffsetDateTime;
use tokio_postgres::GenericClient;

use super::{PgStore, pg_error, raw};
use crate::clock::Timestamp;
use crate::store::{PausedTypes, StoreError, TypeCount, TypeCounts};

async fn paused_in(client: &impl GenericClient) -> Result<PausedTypes, StoreError> {
    let rows = client
        .query("SELECT type, paused_at FROM tasker.paused_types", &[])
        .await
        .map_err(|err| pg_error("reading the paused types", err))?;
    Ok(rows
        .iter()
        .map(|row| {
            let at: OffsetDateTime = row.get(1);
            (row.get::<_, String>(0), Timestamp::new(at))
        })
        .collect())
}

impl PgStore {
    pub async fn type_list_paused(&self) -> Result<PausedTypes, StoreError> {
        let client = self.client().await?;
        paused_in(&**client).await
    }

    pub async fn type_set_paused(
        &self,
        task_type: &str,
        paused: bool,
        now: Timestamp,
    ) -> Result<PausedTypes, StoreError> {
        let mut client = self.client().await?;
        let tx = raw(&mut client)
            .transaction()
            .await
            .map_err(|err| pg_error("starting a pause", err))?;
        if paused {
            tx.execute(
                "INSERT INTO tasker.paused_types (type, paused_at) VALUES ($1, $2) \
                 ON CONFLICT (type) DO NOTHING",
                &[&task_type, &now.0],
            )
            .await
        } else {
            tx.execute(
                "DELETE FROM tasker.paused_types WHERE type = $1",
                &[&task_type],
            )
            .await
        }
        .map_err(|err| pg_error("pausing or resuming a type", err))?;
        let types = paused_in(&tx).await?;
        tx.commit()
            .await
            .map_err(|err| pg_error("committing a pause", err))?;
        Ok(types)
    }

    pub async fn type_count(&self, now: Timestamp) -> Result<TypeCounts, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT type, \
                 COUNT(*) FILTER (WHERE due_at <= $1 \
                                  AND (status = 'running' OR attempts < max_attempts)), \
                 COUNT(*) FILTER (WHERE status = 'running') \
                 FROM tasker.tasks WHERE finished_at IS NULL GROUP BY type",
                &[&now.0],
            )
            .await
            .map_err(|err| pg_error("counting tasks per type", err))?;
        let count = |n: i64| u64::try_from(n).unwrap_or_default();
        let by_type = rows
            .iter()
            .map(|row| {
                let counts = TypeCount {
                    due: count(row.get(1)),
                    running: count(row.get(2)),
                };
                (row.get::<_, String>(0), counts)
            })
            .filter(|(_, counts)| *counts != TypeCount::default())
            .collect();
        Ok(TypeCounts {
            by_type,
            exact: true,
        })
    }
}
