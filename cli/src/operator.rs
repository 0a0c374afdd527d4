//! Operator commands: list, show, cancel, retry (one or every failed task), stats, cleanup.
//! Text for people by default, `--json` for scripts; bulk work shows a progress bar on stderr
//! when stderr is a terminal.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tasker::engine::{MAX_LIST_LIMIT, PageWithWaiting, Waiting};
use tasker::store::{ListFilter, ListKey, LowerBound, TaskPage};
use tasker::{AnyStore, Task, TaskId, TaskStatus, Tasker};

use crate::CliError;

/// Longest `lastError` shown in a listing row.
const ERROR_WIDTH: usize = 60;

/// A task id from the command line.
pub fn parse_id(id: &str) -> Result<TaskId, CliError> {
    id.parse()
        .map_err(|_| CliError::Usage(format!("{id:?} is not a task id (a 26-character ULID)")))
}

/// A bar counting to `total`, or a spinner when the total is unknown.
fn progress(total: Option<u64>, what: &str) -> ProgressBar {
    let bar = match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg}: {pos}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Prints a task as JSON, or as aligned `field: value` lines for people.
pub fn print_task(task: &Task, json: bool) -> Result<(), CliError> {
    print_object(&serde_json::to_value(task)?, json)
}

/// Prints `task` with why it waits: in JSON as the API answers `GET /tasks/{id}`, as text with
/// `waiting` in a line.
pub fn print_task_waiting(
    task: &Task,
    waiting: Option<&Waiting>,
    json: bool,
) -> Result<(), CliError> {
    let mut value = serde_json::to_value(Waiting::view(task, waiting))?;
    if !json && let Some(fields) = value.as_object_mut() {
        fields.insert("waiting".to_owned(), waiting.map(Waiting::describe).into());
    }
    print_object(&value, json)
}

/// Prints `value` as JSON, or each field of the object as an aligned `field value` line (a
/// list as its items joined by commas, `-` for null).
pub fn print_object(value: &Value, json: bool) -> Result<(), CliError> {
    if json {
        out!("{value}");
        return Ok(());
    }
    let text = |field: &Value| match field {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    for (name, field) in value.as_object().into_iter().flatten() {
        let line = match field {
            Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
            other => text(other),
        };
        out!("{name:<20} {line}");
    }
    Ok(())
}

/// One line of text: newlines folded, cut to `width` characters.
fn one_line(text: &str, width: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= width {
        flat
    } else {
        let cut: String = flat.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

fn print_rows(tasks: &[Task]) -> Result<(), CliError> {
    for task in tasks {
        let when = ListKey::of(task)
            .instant()
            .map_or_else(|| "-".to_owned(), |at| at.to_string());
        out!(
            "{:<26}  {:<16}  {:<9}  {:>8}  {:<24}  {}",
            task.id,
            one_line(&task.task_type, 16),
            task.status,
            format!("{}/{}", task.attempts, task.max_attempts),
            when,
            one_line(task.last_error.as_deref().unwrap_or("-"), ERROR_WIDTH),
        );
    }
    Ok(())
}

/// `tasker list`: one page (or every page with `all`), newest first.
pub async fn list(
    tasker: &Tasker<AnyStore>,
    filter: &ListFilter,
    limit: usize,
    cursor: Option<String>,
    all: bool,
    json: bool,
) -> Result<(), CliError> {
    let mut after: Option<ListKey> = cursor
        .map(|cursor| cursor.parse())
        .transpose()
        .map_err(|err: tasker::store::InvalidCursor| CliError::Usage(err.to_string()))?;
    let limit = limit.clamp(1, MAX_LIST_LIMIT);
    if !json {
        out!(
            "{:<26}  {:<16}  {:<9}  {:>8}  {:<24}  LAST ERROR",
            "ID",
            "TYPE",
            "STATUS",
            "ATTEMPTS",
            "QUEUED AT (due/finished)"
        );
    }
    let mut shown = 0;
    loop {
        let page: TaskPage = tasker.list(filter, after, limit).await?;
        shown += page.tasks.len();
        if json {
            let next = page.next.as_ref().map(ToString::to_string);
            let waiting = tasker.waiting_of(&page.tasks).await;
            if all {
                for (task, waiting) in page.tasks.iter().zip(&waiting) {
                    out!(
                        "{}",
                        serde_json::to_string(&Waiting::view(task, waiting.as_ref()))?
                    );
                }
            } else {
                let page = PageWithWaiting::new(&page.tasks, &waiting, next);
                out!("{}", serde_json::to_string(&page)?);
            }
        } else {
            print_rows(&page.tasks)?;
        }
        match page.next {
            Some(next) if all => after = Some(next),
            Some(next) => {
                if !json {
                    out!("(more: add --cursor '{next}', or --all)");
                }
                return Ok(());
            }
            None => {
                if !json {
                    out!("({shown} task(s))");
                }
                return Ok(());
            }
        }
    }
}

/// `tasker cancel ID` or `tasker cancel --reference R [--type T]`.
pub async fn cancel(
    tasker: &Tasker<AnyStore>,
    id: Option<String>,
    reference: Option<String>,
    task_type: Option<String>,
    json: bool,
) -> Result<(), CliError> {
    match (id, reference) {
        (Some(id), _) => print_task(&tasker.cancel(parse_id(&id)?).await?, json),
        (None, Some(reference)) => {
            cancel_by_reference(tasker, &reference, task_type.as_deref(), json).await
        }
        (None, None) => Err(CliError::Usage("give a task id or --reference".into())),
    }
}

/// `tasker cancel --reference`.
pub async fn cancel_by_reference(
    tasker: &Tasker<AnyStore>,
    reference: &str,
    task_type: Option<&str>,
    json: bool,
) -> Result<(), CliError> {
    let ids = tasker.cancel_by_reference(reference, task_type).await?;
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    if json {
        out!("{}", json!({"cancelled": ids.len(), "ids": ids}));
    } else {
        out!("cancelled {} task(s)", ids.len());
        for id in ids {
            out!("  {id}");
        }
    }
    Ok(())
}

/// `tasker retry --all-failed`: every failed task (of `task_type`, when given) back in the
/// queue. Tasks that cannot be retried (retried meanwhile, reference held by an active task,
/// the store failing) are reported and skipped; the rest go on. Exits non-zero if any was
/// skipped.
pub async fn retry_all_failed(
    tasker: &Tasker<AnyStore>,
    task_type: Option<String>,
    json: bool,
) -> Result<(), CliError> {
    let total = match task_type {
        None => Some(tasker.stats().await?.counts.failed),
        Some(_) => None,
    };
    let bar = progress(total, "retrying failed tasks");
    let mut retried = Vec::new();
    let mut skipped = Vec::new();
    let mut after = None;
    loop {
        let page = tasker
            .retry_failed_page(task_type.clone(), after, MAX_LIST_LIMIT)
            .await?;
        bar.inc((page.retried.len() + page.skipped.len()) as u64);
        retried.extend(page.retried.iter().map(ToString::to_string));
        skipped.extend(
            page.skipped
                .iter()
                .map(|(id, error)| json!({"id": id.to_string(), "error": error})),
        );
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    bar.finish_and_clear();
    let outcome = if skipped.is_empty() {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "{} failed task(s) could not be retried",
            skipped.len()
        )))
    };
    if json {
        out!(
            "{}",
            json!({"retried": retried.len(), "ids": retried, "skipped": skipped})
        );
    } else {
        out!("retried {} failed task(s)", retried.len());
        for skip in &skipped {
            out!(
                "  skipped {}: {}",
                skip["id"].as_str().unwrap_or_default(),
                skip["error"].as_str().unwrap_or_default()
            );
        }
    }
    outcome
}

/// `tasker stats`: tasks per status and the backlog.
pub async fn stats(tasker: &Tasker<AnyStore>, json: bool) -> Result<(), CliError> {
    let stats = tasker.stats().await?;
    if json {
        out!("{}", serde_json::to_string(&stats)?);
        return Ok(());
    }
    for status in TaskStatus::ALL {
        // A count whose reads reached their cap is at least the number shown.
        let bound = match status {
            TaskStatus::Pending => Some(LowerBound::Pending),
            TaskStatus::Running => Some(LowerBound::Running),
            _ => None,
        };
        let at_least = if bound.is_some_and(|b| stats.lower_bounds.contains(&b)) {
            ">="
        } else {
            ""
        };
        let count = format!("{at_least}{}", stats.counts.get(status));
        out!("{:<10} {count:>10}", status.as_str());
    }
    out!("{:<10} {:>10}", "total", stats.counts.total());
    let at_least = if stats.lower_bounds.contains(&LowerBound::Due) {
        ">="
    } else {
        ""
    };
    let due = format!("{at_least}{}", stats.due);
    match stats.oldest_due_age_seconds {
        Some(age) => out!("due now    {due:>10}  (oldest waiting {age} s)"),
        None => out!("due now    {due:>10}"),
    }
    if let Some(seen) = stats.active_seen_at {
        out!("(pending, running and due as a processor saw them at {seen})");
    }
    if let Some(waiting) = &stats.waiting {
        let at_least = if waiting.exact { "" } else { ">=" };
        out!("waiting, by reason:");
        for (reason, count) in [
            ("scheduled", waiting.scheduled),
            ("backingOff", waiting.backing_off),
            ("keyConcurrency", waiting.key_concurrency),
            ("keyRate", waiting.key_rate),
            ("circuitOpen", waiting.circuit_open),
            ("typePaused", waiting.type_paused),
            ("due", waiting.due),
            ("leaseExpired", waiting.lease_expired),
        ] {
            out!("  {reason:<16} {:>10}", format!("{at_least}{count}"));
        }
    }
    Ok(())
}

/// `tasker types`: each registered type with its settings, paused flag and counts.
pub async fn types(tasker: &Tasker<AnyStore>, json: bool) -> Result<(), CliError> {
    let view = tasker.types().await?;
    if json {
        out!("{}", serde_json::to_string(&view)?);
        return Ok(());
    }
    let at_least = if view.exact { "" } else { ">=" };
    out!(
        "{:<24} {:<8} {:>10} {:>10} {:>12} {:>9}",
        "TYPE",
        "STATE",
        "DUE",
        "RUNNING",
        "CONCURRENCY",
        "TIMEOUT"
    );
    for t in &view.types {
        let state = if t.paused { "paused" } else { "running" };
        let cap = t.concurrency.map_or("-".to_owned(), |n| n.to_string());
        out!(
            "{:<24} {state:<8} {:>10} {:>10} {cap:>12} {:>8}s",
            t.name,
            format!("{at_least}{}", t.counts.due),
            format!("{at_least}{}", t.counts.running),
            t.timeout_ms / 1000
        );
    }
    Ok(())
}

/// `tasker pause TYPE` / `tasker resume TYPE`.
pub async fn pause(
    tasker: &Tasker<AnyStore>,
    task_type: &str,
    paused: bool,
    json: bool,
) -> Result<(), CliError> {
    let after = tasker.pause_type(task_type, paused).await?;
    let at = after.get(task_type);
    if json {
        out!(
            "{}",
            json!({"name": task_type, "paused": at.is_some(), "pausedAt": at})
        );
    } else if let Some(at) = at {
        out!(
            "{task_type} paused since {at}: its tasks stay pending until `tasker resume {task_type}`"
        );
    } else {
        out!("{task_type} running: its due tasks are claimed again");
    }
    Ok(())
}

/// `tasker cleanup`: deletes finished tasks older than `retention`, with a running count, then
/// sweeps at most `sweep_entries` entries below the due queue's watermarks.
pub async fn cleanup(
    tasker: &Tasker<AnyStore>,
    retention: Duration,
    sweep_entries: u64,
) -> Result<(), CliError> {
    let bar = progress(None, "deleting finished tasks");
    let summary = tasker
        .cleanup_with_progress(retention, sweep_entries, &|deleted| bar.inc(deleted))
        .await;
    bar.finish_and_clear();
    out!("{}", serde_json::to_string(&summary?)?);
    Ok(())
}
