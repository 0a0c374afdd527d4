//! The overview, types and schedules pages, and the notices actions leave on them.

use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::{Page, Shared};
use crate::clock::Timestamp;
use crate::store::Store;
use crate::store::{LowerBound, Throughput};
use crate::task::TaskStatus;
use axum::extract::State;

/// What an action did, carried to the page it leads to as codes and numbers only (never text
/// from the request, so nothing can be injected through it).
#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    done: Option<String>,
    n: Option<u64>,
    skipped: Option<u64>,
}

impl Notice {
    pub fn show(&self) -> Markup {
        let n = self.n.unwrap_or_default();
        let text = match self.done.as_deref() {
            Some("retried") => "The task is pending again, due now.".to_owned(),
            Some("cancelled") => "The task is cancelled.".to_owned(),
            Some("paused") => "The type is paused: no processor claims its tasks (within 5 s) until it is resumed.".to_owned(),
            Some("resumed") => "The type is running again.".to_owned(),
            Some("retried-failed") => format!(
                "{n} failed task(s) are pending again{}.",
                match self.skipped {
                    Some(skipped) if skipped > 0 => format!("; {skipped} could not be retried"),
                    _ => String::new(),
                }
            ),
            Some("more-failed") => format!(
                "{n} failed task(s) are pending again; more remain: press the button again."
            ),
            _ => return html! {},
        };
        html! { p.notice role="status" { (text) } }
    }
}

/// Whole seconds as `1h 2m`, `3m 4s` or `5s`.
pub fn age(seconds: u64) -> String {
    match seconds {
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// The finished tasks per bucket as bars, oldest left: inline SVG drawn with attributes.
fn chart(throughput: &Throughput) -> Markup {
    let most = throughput
        .buckets
        .iter()
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(0)
        .max(1);
    let count = throughput.buckets.len().max(1);
    let width = 600.0 / count as f64;
    let unit = if throughput.bucket.as_secs() >= 3600 {
        "hour"
    } else {
        "minute"
    };
    let total: u64 = throughput.buckets.iter().map(|(_, n)| n).sum();
    let label = format!(
        "Tasks finished per {unit}: {total} in the last {count} {unit}s, at most {most} in one"
    );
    html! {
        svg.chart viewBox="0 0 600 100" preserveAspectRatio="none" role="img" aria-label=(label) {
            @for (i, (at, n)) in throughput.buckets.iter().enumerate() {
                @let height = (*n as f64 / most as f64) * 96.0;
                rect x=(format!("{:.2}", i as f64 * width + 0.5)) y=(format!("{:.2}", 100.0 - height))
                    width=(format!("{:.2}", (width - 1.0).max(0.5))) height=(format!("{height:.2}"))
                    fill="#0b5cad" {
                    title { (at.to_text()) ": " (n) }
                }
            }
        }
        p.muted { (label) "." }
    }
}

pub async fn overview<S: Store>(
    State(dashboard): Shared<S>,
    headers: HeaderMap,
    Query(notice): Query<Notice>,
) -> Response {
    let mut page = match Page::open(&dashboard, &headers) {
        Ok(page) => page,
        Err(answer) => return *answer,
    };
    page.refresh = Some(5);
    let tasker = &dashboard.tasker;
    let (stats, throughput) = match futures::try_join!(tasker.stats(), tasker.throughput()) {
        Ok(both) => both,
        Err(err) => return page.failure(err),
    };
    let at_least = |bound: LowerBound| {
        if stats.lower_bounds.contains(&bound) {
            "≥ "
        } else {
            ""
        }
    };
    let bound_of = |status: TaskStatus| match status {
        TaskStatus::Pending => at_least(LowerBound::Pending),
        TaskStatus::Running => at_least(LowerBound::Running),
        _ => "",
    };
    let body = html! {
        h1 { "Overview" }
        (notice.show())
        section.cards aria-label="Tasks per status" {
            @for status in TaskStatus::ALL {
                div.card {
                    a href=(format!("/ui/tasks?status={}", status.as_str())) {
                        span.n { (bound_of(status)) (stats.counts.get(status)) }
                        span class=(format!("status-{}", status.as_str())) { (status.as_str()) }
                    }
                }
            }
            div.card {
                span.n { (at_least(LowerBound::Due)) (stats.due) }
                span { "due now" }
            }
            div.card {
                span.n { (stats.oldest_due_age_seconds.map_or("—".to_owned(), age)) }
                span { "oldest due waiting" }
            }
        }
        @if let Some(seen) = stats.active_seen_at {
            p.muted { "Pending, running and due as a processor saw them at " (seen.to_text()) "." }
        }
        @if !stats.exact {
            p.muted { "DynamoDB: finished counts may be up to 10 s behind; see docs/dynamodb.md." }
        }
        @if let Some(waiting) = &stats.waiting {
            @let at_least = if waiting.exact { "" } else { "≥ " };
            h2 { "Why tasks wait" }
            section.cards aria-label="Waiting tasks by reason" {
                @for (reason, count) in [
                    ("scheduled for later", waiting.scheduled),
                    ("backing off", waiting.backing_off),
                    ("held: key at its concurrency", waiting.key_concurrency),
                    ("held: key at its rate", waiting.key_rate),
                    ("held: receiver's circuit open", waiting.circuit_open),
                    ("type paused", waiting.type_paused),
                    ("due, waiting for a processor", waiting.due),
                    ("lease ended, no outcome", waiting.lease_expired),
                ] {
                    div.card { span.n { (at_least) (count) } span { (reason) } }
                }
            }
        }
        h2 { "Throughput" }
        (chart(&throughput))
        p.muted { "Refreshed every 5 seconds." }
    };
    page.render(StatusCode::OK, "Overview", "Overview", body)
}

pub async fn types<S: Store>(
    State(dashboard): Shared<S>,
    headers: HeaderMap,
    Query(notice): Query<Notice>,
) -> Response {
    let page = match Page::open(&dashboard, &headers) {
        Ok(page) => page,
        Err(answer) => return *answer,
    };
    let view = match dashboard.tasker.types().await {
        Ok(view) => view,
        Err(err) => return page.failure(err),
    };
    let at_least = if view.exact { "" } else { "≥ " };
    let body = html! {
        h1 { "Task types" }
        (notice.show())
        div.scroll {
            table {
                thead { tr {
                    th scope="col" { "Type" } th scope="col" { "State" }
                    th.num scope="col" { "Due" } th.num scope="col" { "Running" }
                    th.num scope="col" { "Concurrency" } th.num scope="col" { "Timeout" }
                    th scope="col" { "Actions" }
                } }
                tbody {
                    @for t in &view.types {
                        tr data-type=(t.name) {
                            th scope="row" { a href=(format!("/ui/tasks?type={}", t.name)) { (t.name) } }
                            td { @if t.paused { strong.status-failed { "paused" } } @else { "running" } }
                            td.num { (at_least) (t.counts.due) }
                            td.num { (at_least) (t.counts.running) }
                            td.num { (t.concurrency.map_or("—".to_owned(), |n| n.to_string())) }
                            td.num { (t.timeout_ms / 1000) " s" }
                            td {
                                @let (action, label) = if t.paused { ("resume", "Resume") } else { ("pause", "Pause") };
                                a.button href=(format!("/ui/confirm?action={action}&type={}", t.name)) { (label) }
                                " "
                                a.button.secondary href=(format!("/ui/confirm?action=retry-failed&type={}", t.name)) { "Retry failed" }
                            }
                        }
                    }
                }
            }
        }
        p { a.button.secondary href="/ui/confirm?action=retry-failed" { "Retry every failed task" } }
    };
    page.render(StatusCode::OK, "Types", "Types", body)
}

pub async fn schedules<S: Store>(State(dashboard): Shared<S>, headers: HeaderMap) -> Response {
    let page = match Page::open(&dashboard, &headers) {
        Ok(page) => page,
        Err(answer) => return *answer,
    };
    let schedules = match dashboard.tasker.schedules().await {
        Ok(schedules) => schedules,
        Err(err) => return page.failure(err),
    };
    let when = |at: Option<Timestamp>| at.map_or("—".to_owned(), Timestamp::to_text);
    let body = html! {
        h1 { "Schedules" }
        @if schedules.is_empty() {
            p { "No schedules. Create them with " code { "POST /schedules" } " or " code { "tasker schedules apply FILE" } "." }
        } @else {
            div.scroll {
                table {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Cron" } th scope="col" { "Zone" }
                        th scope="col" { "Type" } th scope="col" { "State" }
                        th scope="col" { "Next run" } th scope="col" { "Last run" }
                    } }
                    tbody {
                        @for s in &schedules {
                            tr {
                                th scope="row" { a href=(format!("/ui/tasks?schedule={}", s.name)) { (s.name) } }
                                td { code { (s.cron) } }
                                td { (s.timezone) }
                                td { (s.task_type) }
                                td { @if s.paused { "paused" } @else { "running" } }
                                td { (when(s.next_run_at)) }
                                td { (when(s.last_run_at)) }
                            }
                        }
                    }
                }
            }
        }
    };
    page.render(StatusCode::OK, "Schedules", "Schedules", body)
}
