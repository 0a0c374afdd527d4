//! Schedules on PostgreSQL: one row each, the body as JSON text, the due instant and the
//! revision as columns, every write conditional on the revision.

use time::OffsetDateTime;
use tokio_postgres::GenericClient;

use super::{PgStore, pg_error};
use crate::clock::Timestamp;
use crate::schedule::Schedule;
use crate::store::{Expect, ScheduleWrite, StoreError};

fn decode(body: &str, revision: i64) -> Result<Schedule, serde_json::Error> {
    let mut schedule: Schedule = serde_json::from_str(body)?;
    schedule.revision = u64::try_from(revision).unwrap_or_default();
    Ok(schedule)
}

async fn load(client: &impl GenericClient, name: &str) -> Result<Option<Schedule>, StoreError> {
    let row = client
        .query_opt(
            "SELECT body, revision FROM tasker.schedules WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(|err| pg_error("reading a schedule", err))?;
    row.map(|row| {
        decode(row.get(0), row.get(1))
            .map_err(|err| StoreError::backend_from("PostgreSQL: a stored schedule", err))
    })
    .transpose()
}

/// The schedules in `rows` (body, revision); one that does not decode is logged and skipped.
fn decode_all(rows: &[tokio_postgres::Row]) -> Vec<Schedule> {
    rows.iter()
        .filter_map(|row| match decode(row.get(0), row.get(1)) {
            Ok(schedule) => Some(schedule),
            Err(err) => {
                tracing::warn!(error = %err, "skipping a schedule row that does not decode");
                None
            }
        })
        .collect()
}

/// The instant a schedule is due, as the column holds it: none while paused.
fn due_at(schedule: &Schedule) -> Option<OffsetDateTime> {
    (!schedule.paused)
        .then_some(schedule.next_run_at)
        .flatten()
        .map(|t| t.0)
}

impl PgStore {
    pub async fn schedule_get(&self, name: &str) -> Result<Option<Schedule>, StoreError> {
        let client = self.client().await?;
        load(&**client, name).await
    }

    pub async fn schedule_list(&self) -> Result<Vec<Schedule>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT body, revision FROM tasker.schedules ORDER BY name",
                &[],
            )
            .await
            .map_err(|err| pg_error("listing schedules", err))?;
        Ok(decode_all(&rows))
    }

    pub async fn schedule_put(
        &self,
        schedule: &Schedule,
        expect: Expect,
    ) -> Result<ScheduleWrite, StoreError> {
        let body = serde_json::to_string(schedule)
            .map_err(|err| StoreError::backend_from("encoding a schedule", err))?;
        let revision = i64::try_from(schedule.revision)
            .map_err(|err| StoreError::backend_from("a schedule revision", err))?;
        let client = self.client().await?;
        let written = match expect {
            Expect::Absent => {
                client
                    .execute(
                        "INSERT INTO tasker.schedules (name, body, due_at, revision) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
                        &[&schedule.name, &body, &due_at(schedule), &revision],
                    )
                    .await
            }
            Expect::Revision(expected) => {
                let expected = i64::try_from(expected).unwrap_or(i64::MAX);
                client
                    .execute(
                        "UPDATE tasker.schedules SET body = $2, due_at = $3, revision = $4 \
                         WHERE name = $1 AND revision = $5",
                        &[
                            &schedule.name,
                            &body,
                            &due_at(schedule),
                            &revision,
                            &expected,
                        ],
                    )
                    .await
            }
        }
        .map_err(|err| pg_error("writing a schedule", err))?;
        if written == 1 {
            Ok(ScheduleWrite::Written)
        } else {
            Ok(ScheduleWrite::Conflict(
                load(&**client, &schedule.name).await?.map(Box::new),
            ))
        }
    }

    pub async fn schedule_delete(&self, name: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let deleted = client
            .execute("DELETE FROM tasker.schedules WHERE name = $1", &[&name])
            .await
            .map_err(|err| pg_error("deleting a schedule", err))?;
        Ok(deleted > 0)
    }

    pub async fn schedule_list_due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Schedule>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT body, revision FROM tasker.schedules WHERE due_at <= $1 \
                 ORDER BY due_at, name LIMIT $2",
                &[&now.0, &limit],
            )
            .await
            .map_err(|err| pg_error("finding due schedules", err))?;
        Ok(decode_all(&rows))
    }
}
