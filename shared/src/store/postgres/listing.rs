//! Listings, counts and the backlog on PostgreSQL.

use time::OffsetDateTime;
use tokio_postgres::{GenericClient, IsolationLevel, Transaction};

use super::rows::{COLUMNS, Param, refs, rows_to_tasks};
use super::{PgStore, pg_error, raw};
use crate::clock::Timestamp;
use crate::store::{
    Backlog, ListFilter, ListKey, ListPage, Overview, StatusCounts, StoreError, TaskPage,
    Throughput, WAITING_REASON_SQL, WaitingCounts,
};
use crate::task::{Task, TaskStatus};

impl PgStore {
    /// One page of tasks in listing order; see [`crate::store::Store::task_list`].
    pub async fn task_list(&self, page: ListPage<'_>) -> Result<TaskPage, StoreError> {
        let ListPage {
            filter,
            after,
            limit,
            ..
        } = page;
        // One more than asked says whether another page exists.
        let want = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let (sql, params) = list_query(filter, after, want);
        let mut client = self.client().await?;
        // Each filter has an index that yields its page in order (see `list_query`).
        let tx = indexed_read(&mut client, IsolationLevel::ReadCommitted).await?;
        let rows = tx
            .query(&sql, &refs(&params))
            .await
            .map_err(|err| pg_error("listing tasks", err))?;
        tx.commit()
            .await
            .map_err(|err| pg_error("ending a listing", err))?;
        let mut tasks: Vec<Task> = rows_to_tasks(&rows)?;
        let more = tasks.len() > limit;
        tasks.truncate(limit);
        let next = if more {
            tasks.last().map(ListKey::of)
        } else {
            None
        };
        Ok(TaskPage { tasks, next })
    }

    pub async fn task_count_by_status(&self, now: Timestamp) -> Result<StatusCounts, StoreError> {
        // A process that only reads (no dispatch loop folds for it) keeps the change log short
        // too: at most 10 s of changes are summed, whatever the table holds.
        self.queue_flush(now, false).await;
        let client = self.client().await?;
        counts_in(&**client).await
    }

    /// See [`crate::store::Store::task_count_waiting`]: the unfinished tasks' index, at most
    /// `cap` rows of it.
    pub async fn task_count_waiting(
        &self,
        now: Timestamp,
        cap: u64,
    ) -> Result<Option<WaitingCounts>, StoreError> {
        let mut client = self.client().await?;
        let tx = indexed_read(&mut client, IsolationLevel::ReadCommitted).await?;
        let sql = format!(
            "SELECT reason, due_type, COUNT(*) FROM (SELECT {} FROM tasker.tasks \
             WHERE finished_at IS NULL AND (status = 'pending' OR due_at <= $1) LIMIT $2) w \
             GROUP BY 1, 2",
            WAITING_REASON_SQL.replace("{now}", "$1")
        );
        let cap_rows = i64::try_from(cap).unwrap_or(i64::MAX);
        let rows = tx
            .query(&sql, &[&now.0, &cap_rows])
            .await
            .map_err(|err| pg_error("counting the waiting tasks", err))?;
        tx.commit()
            .await
            .map_err(|err| pg_error("ending a read", err))?;
        let mut counts = WaitingCounts::default();
        for row in rows {
            let count = u64::try_from(row.get::<_, i64>(2)).unwrap_or_default();
            counts.add(row.get(0), row.get(1), count);
        }
        counts.exact = counts.total() < cap;
        Ok(Some(counts))
    }

    pub async fn queue_backlog(&self, now: Timestamp) -> Result<Backlog, StoreError> {
        let mut client = self.client().await?;
        let tx = indexed_read(&mut client, IsolationLevel::ReadCommitted).await?;
        let backlog = backlog_in(&tx, now).await?;
        tx.commit()
            .await
            .map_err(|err| pg_error("ending a read", err))?;
        Ok(backlog)
    }

    pub async fn queue_overview(&self, now: Timestamp) -> Result<Overview, StoreError> {
        self.queue_flush(now, false).await;
        let mut client = self.client().await?;
        // One snapshot: the counts and the backlog of the same commit.
        let tx = indexed_read(&mut client, IsolationLevel::RepeatableRead).await?;
        let overview = Overview {
            counts: counts_in(&tx).await?,
            backlog: backlog_in(&tx, now).await?,
            active_seen_at: None,
            lower_bounds: Vec::new(),
            exact: true,
        };
        tx.commit()
            .await
            .map_err(|err| pg_error("ending a read", err))?;
        Ok(overview)
    }

    pub async fn queue_throughput(&self, now: Timestamp) -> Result<Throughput, StoreError> {
        const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);
        let this_minute: Timestamp =
            format!("{}:00.000Z", now.to_text().get(..16).unwrap_or_default())
                .parse()
                .unwrap_or(now);
        let first = this_minute.minus(MINUTE * 59);
        let client = self.client().await?;
        // The finished tasks' index from the first minute on: the last hour's finishes only.
        let rows = client
            .query(
                "SELECT date_trunc('minute', finished_at), COUNT(*) FROM tasker.tasks \
                 WHERE finished_at >= $1 GROUP BY 1",
                &[&first.0],
            )
            .await
            .map_err(|err| pg_error("counting finished tasks", err))?;
        let counted: std::collections::HashMap<Timestamp, i64> = rows
            .iter()
            .map(|row| (Timestamp::new(row.get::<_, OffsetDateTime>(0)), row.get(1)))
            .collect();
        let buckets = (0..60u32)
            .map(|i| {
                let at = first.plus(MINUTE * i);
                let count = counted.get(&at).copied().unwrap_or_default();
                (at, u64::try_from(count).unwrap_or_default())
            })
            .collect();
        Ok(Throughput {
            bucket: MINUTE,
            buckets,
        })
    }
}

/// The counts the triggers keep (see `schema.rs`): the folded ones and the changes since.
async fn counts_in(client: &impl GenericClient) -> Result<StatusCounts, StoreError> {
    let rows = client
        .query(
            "SELECT status, SUM(n)::bigint FROM (SELECT status, n FROM tasker.task_counts \
             UNION ALL SELECT status, n FROM tasker.task_count_changes) AS c GROUP BY status",
            &[],
        )
        .await
        .map_err(|err| pg_error("reading the counts", err))?;
    let mut counts = StatusCounts::default();
    for row in rows {
        let status: TaskStatus = row
            .get::<_, &str>(0)
            .parse()
            .map_err(|err| StoreError::backend_from("PostgreSQL: a stored status", err))?;
        counts.add(
            status,
            u64::try_from(row.get::<_, i64>(1)).unwrap_or_default(),
        );
    }
    Ok(counts)
}

/// A read-only transaction whose statements keep to the indexes written for them. From
/// statistics a busy queue outdates within seconds, and indexes its finished tasks' dead
/// entries have grown, the planner otherwise scans the whole table or collects every match
/// and sorts them: the backlog's count took 14 ms at 100,000 tasks against 0.2 through the due
/// index, a `status=pending` page 15 ms against 0.6.
async fn indexed_read(
    client: &mut deadpool_postgres::Object,
    isolation: IsolationLevel,
) -> Result<Transaction<'_>, StoreError> {
    let tx = raw(client)
        .build_transaction()
        .isolation_level(isolation)
        .read_only(true)
        .start()
        .await
        .map_err(|err| pg_error("starting a read", err))?;
    tx.batch_execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
        .await
        .map_err(|err| pg_error("starting a read", err))?;
    Ok(tx)
}

/// Tasks due at `now`: a range of the due index as long as the backlog (in a transaction of
/// [`indexed_read`]).
async fn backlog_in(tx: &Transaction<'_>, now: Timestamp) -> Result<Backlog, StoreError> {
    let row = tx
        .query_one(
            "SELECT COUNT(*), MIN(due_at) FROM tasker.tasks WHERE due_at <= $1",
            &[&now.0],
        )
        .await
        .map_err(|err| pg_error("reading the backlog", err))?;
    Ok(Backlog {
        due: u64::try_from(row.get::<_, i64>(0)).unwrap_or_default(),
        oldest_due_at: row.get::<_, Option<OffsetDateTime>>(1).map(Timestamp::new),
    })
}

/// The query of one listing page and its parameters: the filter's columns, the cursor, and a
/// condition that matches a partial index where the filter has one (see `schema.rs`), so a
/// page reads about `want` index entries whatever the table holds.
fn list_query(filter: &ListFilter, after: Option<&ListKey>, want: i64) -> (String, Vec<Param>) {
    let mut conditions: Vec<String> = Vec::new();
    match filter.status {
        Some(TaskStatus::Failed | TaskStatus::Cancelled) => {
            conditions.push("status IN ('failed', 'cancelled')".to_owned());
        }
        Some(TaskStatus::Pending | TaskStatus::Running) => {
            conditions.push("finished_at IS NULL".to_owned());
        }
        _ => {}
    }
    let given = [
        ("status", filter.status.map(|s| s.as_str().to_owned())),
        ("type", filter.task_type.clone()),
        ("reference_uid", filter.reference_uid.clone()),
        ("schedule_name", filter.schedule.clone()),
    ];
    let mut params: Vec<Param> = Vec::new();
    for (column, value) in given {
        if let Some(value) = value {
            params.push(Box::new(value));
            conditions.push(format!("{column} = ${}", params.len()));
        }
    }
    if let Some(after) = after {
        params.push(Box::new(after.as_str().to_owned()));
        conditions.push(format!("list_key < ${}", params.len()));
    }
    let conditions = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    params.push(Box::new(want));
    let sql = format!(
        "SELECT {COLUMNS} FROM tasker.tasks{conditions} ORDER BY list_key DESC LIMIT ${}",
        params.len()
    );
    (sql, params)
}
