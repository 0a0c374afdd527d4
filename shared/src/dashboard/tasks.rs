//! The tasks pages: a filtered, paged listing (the API's `GET /tasks` rules) and one task with
//! its payload, attempts, last error and timeline.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, RawQuery};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, html};

use super::pages::Notice;
use super::{Page, Shared};
use crate::api::requests::parse_list_query;
use crate::clock::Timestamp;
use crate::store::Store;
use crate::store::{ListFilter, ListKey};
use crate::task::{Task, TaskId, TaskStatus};
use axum::extract::State;

/// Longest `lastError` shown in a listing row.
const ERROR_WIDTH: usize = 80;

/// `text` cut to `width` characters, marked when cut.
fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(width).collect::<String>())
    }
}

/// The link to a task's action's confirmation, if its status allows one.
fn action(task: &Task) -> Markup {
    let id = task.id;
    match task.status {
        TaskStatus::Pending => {
            html! { a.button.secondary href=(format!("/ui/confirm?action=cancel&id={id}")) { "Cancel" } }
        }
        TaskStatus::Failed | TaskStatus::Cancelled => {
            html! { a.button href=(format!("/ui/confirm?action=retry&id={id}")) { "Retry" } }
        }
        _ => html! {},
    }
}

/// The form's pairs without the empty fields a form submits (the API refuses those) and
/// without the dashboard's own.
fn api_query(query: Option<&str>) -> String {
    let mut kept = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if !value.is_empty() && name != "done" && name != "n" {
            kept.append_pair(&name, &value);
        }
    }
    kept.finish()
}

/// The filter form, showing `filter`.
fn filters(filter: &ListFilter) -> Markup {
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    html! {
        form.filters method="get" action="/ui/tasks" {
            label { "Status"
                select name="status" {
                    option value="" { "any" }
                    @for s in TaskStatus::ALL {
                        option value=(s.as_str()) selected[filter.status == Some(s)] { (s.as_str()) }
                    }
                }
            }
            label { "Type" input name="type" value=(text(&filter.task_type)); }
            label { "Reference" input name="referenceUid" value=(text(&filter.reference_uid)); }
            label { "Schedule" input name="schedule" value=(text(&filter.schedule)); }
            button type="submit" { "Filter" }
        }
    }
}

/// A listing's rows, each with its action.
fn table(tasks: &[Task]) -> Markup {
    html! {
        div.scroll { table {
            thead { tr {
                th scope="col" { "Task" } th scope="col" { "Type" } th scope="col" { "Status" }
                th scope="col" { "Scheduled" } th.num scope="col" { "Attempts" }
                th scope="col" { "Last error" } th scope="col" { "Action" }
            } }
            tbody {
                @for task in tasks {
                    tr data-id=(task.id) {
                        td { a href=(format!("/ui/tasks/{}", task.id)) { code { (task.id) } } }
                        td { (task.task_type) }
                        td class=(format!("status-{}", task.status.as_str())) { (task.status.as_str()) }
                        td { (task.scheduled_at.to_text()) }
                        td.num { (task.attempts) "/" (task.max_attempts) }
                        td { (task.last_error.as_deref().map(|e| cut(e, ERROR_WIDTH)).unwrap_or_default()) }
                        td { (action(task)) }
                    }
                }
            }
        } }
    }
}

/// The confirmation of a bulk retry of failed tasks (of `task_type`).
fn retry_failed_link(task_type: Option<&str>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("action", "retry-failed");
    if let Some(name) = task_type {
        query.append_pair("type", name);
    }
    format!("/ui/confirm?{}", query.finish())
}

/// The link to the page after `cursor`, with the listing's other parameters kept.
fn next_page_link(query: &str, cursor: &ListKey) -> String {
    let mut link = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if name != "cursor" {
            link.append_pair(&name, &value);
        }
    }
    link.append_pair("cursor", cursor.as_str());
    format!("/ui/tasks?{}", link.finish())
}

pub async fn list<S: Store>(
    State(dashboard): Shared<S>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let page = match Page::open(&dashboard, &headers) {
        Ok(page) => page,
        Err(answer) => return *answer,
    };
    let query = api_query(raw.as_deref());
    let parsed = parse_list_query(Some(&query));
    let listing = match &parsed {
        Ok(parsed) => Some(
            dashboard
                .tasker
                .list(&parsed.filter, parsed.cursor.clone(), parsed.limit)
                .await,
        ),
        Err(_) => None,
    };
    let (tasks, next, problem) = match (listing, &parsed) {
        (Some(Ok(found)), _) => (found.tasks, found.next, None),
        (Some(Err(err)), _) => return page.failure(err),
        (None, Err(err)) => (Vec::new(), None, Some(err.message.clone())),
        (None, Ok(_)) => (Vec::new(), None, None),
    };
    let filter = parsed.map(|q| q.filter).unwrap_or_default();
    let next_link = next.map(|cursor| next_page_link(&query, &cursor));
    let status = filter.status;
    let current = if status == Some(TaskStatus::Failed) {
        "Failed"
    } else {
        "Tasks"
    };
    let body = html! {
        h1 { "Tasks" }
        @if let Some(problem) = &problem { p.error role="alert" { (problem) } }
        (filters(&filter))
        // Bulk retry goes by type only: offered when the filter is no narrower than that.
        @if status == Some(TaskStatus::Failed) && filter.reference_uid.is_none() && filter.schedule.is_none() {
            p { a.button href=(retry_failed_link(filter.task_type.as_deref())) {
                @match &filter.task_type {
                    Some(name) => { "Retry every failed " (name) " task" },
                    None => "Retry every failed task",
                }
            } }
        }
        @if tasks.is_empty() {
            p { "No tasks match." }
        } @else {
            (table(&tasks))
        }
        @if let Some(link) = next_link { p { a href=(link) rel="next" { "Next page →" } } }
    };
    page.render(StatusCode::OK, "Tasks", current, body)
}

/// What happened to `task` and when, in order.
fn timeline(task: &Task) -> Vec<(Timestamp, &str)> {
    let mut timeline: Vec<(Timestamp, &str)> = vec![
        (task.created_at, "created"),
        (task.scheduled_at, "scheduled"),
    ];
    timeline.extend(
        task.last_failed_attempt_at
            .map(|at| (at, "last attempt failed")),
    );
    if task.status == TaskStatus::Running {
        timeline.extend(task.lease_expires_at.map(|at| (at, "lease ends")));
    }
    timeline.extend(task.succeeded_at.map(|at| (at, "succeeded")));
    if task.status != TaskStatus::Succeeded {
        timeline.extend(task.finished_at.map(|at| (at, task.status.as_str())));
    }
    timeline.sort_by_key(|(at, _)| *at);
    timeline
}

pub async fn show<S: Store>(
    State(dashboard): Shared<S>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    Query(notice): Query<Notice>,
) -> Response {
    let page = match Page::open(&dashboard, &headers) {
        Ok(page) => page,
        Err(answer) => return *answer,
    };
    let id = id.ok().and_then(|Path(id)| id.parse::<TaskId>().ok());
    let Some(id) = id else {
        let body = html! {
            h1 { "No such task" }
            p.error role="alert" { "That is not a task id." }
            p { a href="/ui/tasks" { "All tasks" } }
        };
        return page.render(StatusCode::NOT_FOUND, "Task", "Tasks", body);
    };
    let (task, waiting) = match dashboard.tasker.get_waiting(id).await {
        Ok(read) => read,
        Err(err) => return page.failure(err),
    };
    // Pretty-printed when it is JSON (it always is when created through the API) and small.
    let (payload, whole) = super::payload::shown(&task.payload);
    let timeline = timeline(&task);
    let body = html! {
        h1 { "Task " code { (task.id) } }
        (notice.show())
        p { (action(&task)) }
        dl {
            dt { "Type" } dd { (task.task_type) }
            dt { "Status" } dd class=(format!("status-{}", task.status.as_str())) { (task.status.as_str()) }
            @if let Some(waiting) = &waiting { dt { "Waiting" } dd.waiting { (waiting.describe()) } }
            dt { "Attempts" } dd { (task.attempts) " of " (task.max_attempts) }
            @if let Some(reference) = &task.reference_uid { dt { "Reference" } dd { (reference) } }
            @if let Some(key) = &task.idempotency_key { dt { "Idempotency key" } dd { (key) } }
            @if let Some(key) = &task.concurrency_key { dt { "Concurrency key" } dd { (key) } }
            @if let Some(key) = &task.rate_key { dt { "Rate key" } dd { (key) } }
            @if let Some(schedule) = &task.schedule_name { dt { "Schedule" } dd { a href="/ui/schedules" { (schedule) } } }
        }
        h2 { "Last error" }
        @match &task.last_error {
            Some(error) => pre.last-error { (error) },
            None => p.muted { "None." },
        }
        h2 { "Payload" }
        @if !whole {
            p.muted {
                "The first " (payload.len()) " of " (task.payload.len()) " bytes; "
                a href=(format!("/ui/tasks/{}/payload", task.id)) { "the whole payload" } "."
            }
        }
        pre.payload { (payload) }
        h2 { "Timeline" }
        ol {
            @for (at, what) in &timeline {
                li { time datetime=(at.to_text()) { (at.to_text()) } " — " (what) }
            }
        }
    };
    page.render(StatusCode::OK, "Task", "Tasks", body)
}
