//! Schedules on SQLite: one row each, the schedule as JSON beside the columns a query needs.

use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::rows::sqlite_error;
use crate::clock::Timestamp;
use crate::schedule::Schedule;
use crate::store::{Expect, ScheduleWrite, StoreError};

fn decode(body: &str, revision: i64) -> rusqlite::Result<Schedule> {
    let mut schedule: Schedule = serde_json::from_str(body).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(err))
    })?;
    schedule.revision = u64::try_from(revision).unwrap_or_default();
    Ok(schedule)
}

fn load(conn: &Connection, name: &str) -> Result<Option<Schedule>, StoreError> {
    conn.prepare_cached("SELECT body, revision FROM schedules WHERE name = ?1")
        .and_then(|mut stmt| {
            stmt.query_row(params![name], |row| {
                decode(&row.get::<_, String>(0)?, row.get(1)?)
            })
        })
        .optional()
        .map_err(sqlite_error)
}

/// The schedules `sql` selects (`body, revision`). A row that does not decode (written by a
/// newer Tasker, or by hand) is logged and left out, so it cannot stop every other schedule.
fn read_all(
    conn: &Connection,
    sql: &str,
    bind: impl rusqlite::Params,
) -> Result<Vec<Schedule>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(sqlite_error)?;
    let rows = stmt
        .query_map(bind, |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })
        .map_err(sqlite_error)?;
    let mut schedules = Vec::new();
    for row in rows {
        let (body, revision) = row.map_err(sqlite_error)?;
        match decode(&body, revision) {
            Ok(schedule) => schedules.push(schedule),
            Err(err) => {
                tracing::warn!(error = %err, "skipping a schedule row that does not decode");
            }
        }
    }
    Ok(schedules)
}

/// The `due_at` column: the next tick while the schedule runs, nothing while it is paused.
fn due_at(schedule: &Schedule) -> Option<String> {
    (!schedule.paused)
        .then_some(schedule.next_run_at)
        .flatten()
        .map(Timestamp::to_text)
}

impl SqliteStore {
    pub async fn schedule_get(&self, name: &str) -> Result<Option<Schedule>, StoreError> {
        let name = name.to_owned();
        self.with_reader(move |conn| load(conn, &name)).await
    }

    pub async fn schedule_list(&self) -> Result<Vec<Schedule>, StoreError> {
        self.with_reader(|conn| {
            read_all(
                conn,
                "SELECT body, revision FROM schedules ORDER BY name",
                [],
            )
        })
        .await
    }

    pub async fn schedule_put(
        &self,
        schedule: &Schedule,
        expect: Expect,
    ) -> Result<ScheduleWrite, StoreError> {
        let schedule = schedule.clone();
        self.write(move |tx| {
            let body = serde_json::to_string(&schedule)
                .map_err(|err| StoreError::backend_from("encoding a schedule", err))?;
            let revision = i64::try_from(schedule.revision).map_err(|err| StoreError::backend_from("a schedule revision", err))?;
            let written = match expect {
                Expect::Absent => tx
                    .execute(
                        "INSERT INTO schedules (name, body, due_at, revision) VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT (name) DO NOTHING",
                        params![schedule.name, body, due_at(&schedule), revision],
                    )
                    .map_err(sqlite_error)?,
                Expect::Revision(expected) => tx
                    .execute(
                        "UPDATE schedules SET body = ?2, due_at = ?3, revision = ?4 \
                         WHERE name = ?1 AND revision = ?5",
                        params![
                            schedule.name,
                            body,
                            due_at(&schedule),
                            revision,
                            i64::try_from(expected).unwrap_or(i64::MAX)
                        ],
                    )
                    .map_err(sqlite_error)?,
            };
            if written == 1 {
                Ok(ScheduleWrite::Written)
            } else {
                Ok(ScheduleWrite::Conflict(
                    load(tx, &schedule.name)?.map(Box::new),
                ))
            }
        })
        .await
    }

    pub async fn schedule_delete(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.write(move |tx| {
            let deleted = tx
                .execute("DELETE FROM schedules WHERE name = ?1", params![name])
                .map_err(sqlite_error)?;
            Ok(deleted > 0)
        })
        .await
    }

    pub async fn schedule_list_due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Schedule>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_reader(move |conn| {
            read_all(
                conn,
                "SELECT body, revision FROM schedules WHERE due_at <= ?1 ORDER BY due_at, name LIMIT ?2",
                params![now.to_text(), limit],
            )
        })
        .await
    }
}
