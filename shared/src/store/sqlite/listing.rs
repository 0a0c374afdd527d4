//! Listings, counts and the backlog on SQLite, read on the query-only connection.

use rusqlite::params;
use rusqlite::types::Value;

use super::SqliteStore;
use super::rows::{COLUMNS, row_to_task, sqlite_error};
use crate::clock::Timestamp;
use crate::store::{
    Backlog, ListFilter, ListKey, ListPage, Overview, StatusCounts, StoreError, TaskPage,
    Throughput, WAITING_REASON_SQL, WaitingCounts,
};
use crate::task::{Task, TaskStatus};

impl SqliteStore {
    /// One page of tasks through the filter's index; see [`crate::store::Store::task_list`].
    pub async fn task_list(&self, page: ListPage<'_>) -> Result<TaskPage, StoreError> {
        let ListPage {
            filter,
            after,
            limit,
            ..
        } = page;
        // One more than asked says whether another page exists.
        let want = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let (sql, values) = list_query(filter, after, want);
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(&sql).map_err(sqlite_error)?;
            let mut tasks: Vec<Task> = stmt
                .query_map(rusqlite::params_from_iter(values), row_to_task)
                .map_err(sqlite_error)?
                .collect::<rusqlite::Result<_>>()
                .map_err(sqlite_error)?;
            let more = tasks.len() > limit;
            tasks.truncate(limit);
            let next = if more {
                tasks.last().map(ListKey::of)
            } else {
                None
            };
            Ok(TaskPage { tasks, next })
        })
        .await
    }

    pub async fn task_count_by_status(&self, _now: Timestamp) -> Result<StatusCounts, StoreError> {
        self.with_reader(|conn| counts_in(conn)).await
    }

    /// See [`crate::store::Store::task_count_waiting`]: the unfinished tasks' index, at most
    /// `cap` rows of it.
    pub async fn task_count_waiting(
        &self,
        now: Timestamp,
        cap: u64,
    ) -> Result<Option<WaitingCounts>, StoreError> {
        self.with_reader(move |conn| {
            let sql = format!(
                "SELECT reason, due_type, COUNT(*) FROM (SELECT {} FROM tasks INDEXED BY \
                 tasks_open WHERE finished_at IS NULL AND (status = 'pending' OR due_at <= ?1) \
                 LIMIT ?2) GROUP BY 1, 2",
                WAITING_REASON_SQL.replace("{now}", "?1")
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(sqlite_error)?;
            let rows: Vec<(String, Option<String>, i64)> = stmt
                .query_map(
                    params![now.to_text(), i64::try_from(cap).unwrap_or(i64::MAX)],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .map_err(sqlite_error)?
                .collect::<rusqlite::Result<_>>()
                .map_err(sqlite_error)?;
            let mut counts = WaitingCounts::default();
            for (reason, task_type, count) in rows {
                counts.add(&reason, task_type, u64::try_from(count).unwrap_or_default());
            }
            counts.exact = counts.total() < cap;
            Ok(Some(counts))
        })
        .await
    }
}

/// The counts the triggers keep (see `schema.rs`).
fn counts_in(conn: &rusqlite::Connection) -> Result<StatusCounts, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT status, n FROM task_counts")
        .map_err(sqlite_error)?;
    let rows: Vec<(String, i64)> = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .map_err(sqlite_error)?
        .collect::<rusqlite::Result<_>>()
        .map_err(sqlite_error)?;
    let mut counts = StatusCounts::default();
    for (status, count) in rows {
        let status: TaskStatus = status
            .parse()
            .map_err(|err| StoreError::backend_from("SQLite: a stored status", err))?;
        counts.add(status, u64::try_from(count).unwrap_or_default());
    }
    Ok(counts)
}

/// Tasks due at `now`: a range of the due index as long as the backlog.
fn backlog_in(conn: &rusqlite::Connection, now: Timestamp) -> Result<Backlog, StoreError> {
    let (due, oldest): (i64, Option<String>) = conn
        .query_row(
            "SELECT COUNT(*), MIN(due_at) FROM tasks WHERE due_at <= ?1",
            params![now.to_text()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(sqlite_error)?;
    Ok(Backlog {
        due: u64::try_from(due).unwrap_or_default(),
        oldest_due_at: oldest.and_then(|text| text.parse().ok()),
    })
}

/// The query of one listing page and its values. The statement names an index that holds the
/// filter's rows in listing order (see `schema.rs`), so a page reads about `want` index
/// entries whatever the table holds, plus, for some filters, entries of other tasks it skips:
///
/// - `status` failed or cancelled: their own index (with `type`, the status's tasks of other
///   types are skipped);
/// - `status` pending or running: the unfinished tasks' index (the other of the two is
///   skipped: running tasks are few, but a listing of them skips the due backlog);
/// - `status` succeeded: the type's index or the whole listing's (other statuses skipped: most
///   tasks in a table have succeeded);
/// - `type`, `schedule`: their own index; `referenceUid`: the reference's few tasks, sorted.
fn list_query(filter: &ListFilter, after: Option<&ListKey>, want: i64) -> (String, Vec<Value>) {
    let mut conditions: Vec<String> = Vec::new();
    let index = if filter.reference_uid.is_some() {
        ""
    } else if filter.schedule.is_some() {
        " INDEXED BY tasks_schedule_list"
    } else {
        match filter.status {
            Some(TaskStatus::Failed | TaskStatus::Cancelled) => {
                // The partial index's own condition, so the planner may use it.
                conditions.push("status IN ('failed', 'cancelled')".to_owned());
                " INDEXED BY tasks_closed"
            }
            Some(TaskStatus::Pending | TaskStatus::Running) => {
                conditions.push("finished_at IS NULL".to_owned());
                " INDEXED BY tasks_open"
            }
            Some(TaskStatus::Succeeded) | None if filter.task_type.is_some() => {
                " INDEXED BY tasks_type_list"
            }
            Some(TaskStatus::Succeeded) | None => " INDEXED BY tasks_list",
        }
    };
    let given = [
        (
            "status",
            filter.status.map(|status| status.as_str().to_owned()),
        ),
        ("type", filter.task_type.clone()),
        ("reference_uid", filter.reference_uid.clone()),
        ("schedule_name", filter.schedule.clone()),
    ];
    let mut values = Vec::new();
    for (column, value) in given {
        if let Some(value) = value {
            values.push(Value::Text(value));
            conditions.push(format!("{column} = ?{}", values.len()));
        }
    }
    if let Some(after) = after {
        values.push(Value::Text(after.as_str().to_owned()));
        conditions.push(format!("list_key < ?{}", values.len()));
    }
    let conditions = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    values.push(Value::Integer(want));
    let sql = format!(
        "SELECT {COLUMNS} FROM tasks{index}{conditions} ORDER BY list_key DESC LIMIT ?{}",
        values.len()
    );
    (sql, values)
}

impl SqliteStore {
    pub async fn queue_backlog(&self, now: Timestamp) -> Result<Backlog, StoreError> {
        self.with_reader(move |conn| backlog_in(conn, now)).await
    }

    pub async fn queue_overview(&self, now: Timestamp) -> Result<Overview, StoreError> {
        // One read transaction: the counts and the backlog of the same commit.
        self.with_reader(move |conn| {
            let tx = conn.transaction().map_err(sqlite_error)?;
            let overview = Overview {
                counts: counts_in(&tx)?,
                backlog: backlog_in(&tx, now)?,
                active_seen_at: None,
                lower_bounds: Vec::new(),
                exact: true,
            };
            tx.commit().map_err(sqlite_error)?;
            Ok(overview)
        })
        .await
    }

    pub async fn queue_throughput(&self, now: Timestamp) -> Result<Throughput, StoreError> {
        const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);
        let this_minute: Timestamp =
            format!("{}:00.000Z", now.to_text().get(..16).unwrap_or_default())
                .parse()
                .unwrap_or(now);
        let first = this_minute.minus(MINUTE * 59);
        self.with_reader(move |conn| {
            // The finished tasks' index, from the first minute on: as long as the last hour's
            // finishes, never the history.
            let mut stmt = conn
                .prepare_cached(
                    "SELECT substr(finished_at, 1, 16), COUNT(*) FROM tasks \
                     INDEXED BY tasks_finished WHERE finished_at >= ?1 GROUP BY 1",
                )
                .map_err(sqlite_error)?;
            let rows: std::collections::HashMap<String, i64> = stmt
                .query_map(params![first.to_text()], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .map_err(sqlite_error)?
                .collect::<rusqlite::Result<_>>()
                .map_err(sqlite_error)?;
            let buckets = (0..60u32)
                .map(|i| {
                    let at = first.plus(MINUTE * i);
                    let key = at.to_text().get(..16).unwrap_or_default().to_owned();
                    let count = rows.get(&key).copied().unwrap_or_default();
                    (at, u64::try_from(count).unwrap_or_default())
                })
                .collect();
            Ok(Throughput {
                bucket: MINUTE,
                buckets,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Claim, Leases, Settlement};
    use crate::task::NewTask;

    fn filters() -> Vec<ListFilter> {
        let mut filters = vec![
            ListFilter::default(),
            ListFilter {
                task_type: Some("sendWebhook".to_owned()),
                ..ListFilter::default()
            },
            ListFilter {
                schedule: Some("nightly".to_owned()),
                ..ListFilter::default()
            },
        ];
        for status in TaskStatus::ALL {
            for task_type in [None, Some("sendWebhook".to_owned())] {
                filters.push(ListFilter {
                    status: Some(status),
                    task_type,
                    ..ListFilter::default()
                });
            }
            filters.push(ListFilter {
                status: Some(status),
                schedule: Some("nightly".to_owned()),
                ..ListFilter::default()
            });
        }
        filters
    }

    /// Each listing (first page and a cursor) reads its index in order: no scan of the table
    /// and no sort, so a page costs the same at any table size.
    #[tokio::test]
    async fn every_listing_reads_an_index_in_order() {
        let store = SqliteStore::in_memory().expect("store");
        let now = Timestamp::now_utc();
        let cursor = ListKey::at(now, Task::from_new(NewTask::new("t", "{}"), now).id);
        for filter in filters() {
            for after in [None, Some(&cursor)] {
                let (sql, values) = list_query(&filter, after, 21);
                let plan = store
                    .with_reader(move |conn| {
                        let mut stmt = conn
                            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                            .map_err(sqlite_error)?;
                        let rows: Vec<String> = stmt
                            .query_map(rusqlite::params_from_iter(values), |row| row.get(3))
                            .map_err(sqlite_error)?
                            .collect::<rusqlite::Result<_>>()
                            .map_err(sqlite_error)?;
                        Ok(rows.join("; "))
                    })
                    .await
                    .expect("plan");
                assert!(plan.contains("USING INDEX"), "{filter:?}: {plan}");
                assert!(!plan.contains("TEMP B-TREE"), "{filter:?}: {plan}");
            }
        }
    }

    /// The counts the triggers keep match a count of the rows after every kind of change.
    #[tokio::test]
    async fn kept_counts_match_the_rows_through_every_change() {
        let store = SqliteStore::in_memory().expect("store");
        let now = Timestamp::now_utc();
        let mut ids = Vec::new();
        for _ in 0..6 {
            let task = Task::from_new(NewTask::new("t", "{}"), now);
            ids.push(task.id);
            store.task_create(task).await.expect("create");
        }
        store.task_cancel(ids[0], now).await.expect("cancel");
        let leases = Leases::fixed(std::time::Duration::from_secs(60));
        let claimed = store
            .task_claim(Claim::due(now, 3, &leases))
            .await
            .expect("claim");
        store
            .task_settle(&claimed[0], Settlement::Succeeded, now)
            .await
            .expect("succeed");
        let error = "no".to_owned();
        store
            .task_settle(&claimed[1], Settlement::Failed { error }, now)
            .await
            .expect("fail");
        let later = now.plus(std::time::Duration::from_secs(60));
        store
            .task_purge_finished(later, &|_| {})
            .await
            .expect("purge");
        let kept = store.task_count_by_status(now).await.expect("counts");
        let counted = store
            .with_reader(|conn| {
                let mut counts = StatusCounts::default();
                for status in TaskStatus::ALL {
                    let n: i64 = conn
                        .query_row(
                            "SELECT COUNT(*) FROM tasks WHERE status = ?1",
                            params![status.as_str()],
                            |row| row.get(0),
                        )
                        .map_err(sqlite_error)?;
                    counts.add(status, u64::try_from(n).unwrap_or_default());
                }
                Ok(counts)
            })
            .await
            .expect("recount");
        assert_eq!(kept, counted);
        assert_eq!((kept.pending, kept.running, kept.total()), (2, 1, 3));
    }
}
