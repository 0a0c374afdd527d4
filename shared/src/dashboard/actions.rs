//! What the dashboard changes, each after a confirmation page and through a form with the CSRF
//! token: retry, cancel, retry every failed task (of a type), pause and resume a type; and
//! logging in and out.

use std::time::{Duration, Instant};

use axum::extract::{Query, Request};
use axum::http::header::{RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::session::{self, Access, SESSION_COOKIE, SESSION_SECONDS, over_https};
use super::{Dashboard, Page, Shared, refused, see_other};
use crate::api::auth::AuthMode;
use crate::engine::{MAX_LIST_LIMIT, Tasker, TaskerError};
use crate::store::Store;
use crate::task::TaskId;
use axum::extract::State;

/// How long one press of "retry every failed task" goes on before it answers (API Gateway
/// gives a request 29 s); the rest is for the next press.
const RETRY_ALL_BUDGET: Duration = Duration::from_secs(20);

/// An action and what it acts on, as the confirmation page's link and its form carry them.
#[derive(Debug, Default, Deserialize)]
pub struct Act {
    action: String,
    id: Option<String>,
    #[serde(rename = "type")]
    task_type: Option<String>,
    #[serde(default)]
    csrf: String,
}

/// What an action will do, checked before anything is shown or done.
enum Planned {
    Retry(TaskId),
    Cancel(TaskId),
    Pause(String),
    Resume(String),
    RetryFailed(Option<String>),
}

impl Planned {
    fn of<S>(act: &Act, tasker: &Tasker<S>) -> Result<Self, String> {
        let id = || {
            act.id
                .as_deref()
                .and_then(|id| id.parse::<TaskId>().ok())
                .ok_or_else(|| "`id` must be a task id".to_owned())
        };
        let registered = |required: bool| match act.task_type.as_deref().filter(|t| !t.is_empty()) {
            Some(name) if tasker.registry().contains(name) => Ok(Some(name.to_owned())),
            Some(_) => Err("`type` is not a registered task type".to_owned()),
            None if required => Err("`type` is required".to_owned()),
            None => Ok(None),
        };
        match act.action.as_str() {
            "retry" => Ok(Self::Retry(id()?)),
            "cancel" => Ok(Self::Cancel(id()?)),
            "pause" => Ok(Self::Pause(registered(true)?.unwrap_or_default())),
            "resume" => Ok(Self::Resume(registered(true)?.unwrap_or_default())),
            "retry-failed" => Ok(Self::RetryFailed(registered(false)?)),
            _ => Err("`action` must be retry, cancel, pause, resume or retry-failed".to_owned()),
        }
    }

    /// The question the confirmation page asks.
    fn question(&self) -> Markup {
        match self {
            Self::Retry(id) => {
                html! { "Put task " code { (id) } " back in the queue, due now, with fresh attempts?" }
            }
            Self::Cancel(id) => html! { "Cancel task " code { (id) } "? It will not run." },
            Self::Pause(name) => {
                html! { "Pause " strong { (name) } "? Its tasks stay pending and no processor claims them until it is resumed; creates still succeed." }
            }
            Self::Resume(name) => {
                html! { "Resume " strong { (name) } "? Its due tasks are claimed again." }
            }
            Self::RetryFailed(Some(name)) => {
                html! { "Retry every failed " strong { (name) } " task?" }
            }
            Self::RetryFailed(None) => html! { "Retry every failed task, of every type?" },
        }
    }
}

fn problem(page: &Page, status: StatusCode, message: &str) -> Response {
    let body = html! {
        h1 { "Cannot do that" }
        p.error role="alert" { (message) }
        p { a href="/ui" { "Back to the overview" } }
    };
    page.render(status, "Error", "", body)
}

pub async fn confirm<S: Store>(
    State(dashboard): Shared<S>,
    headers: HeaderMap,
    Query(act): Query<Act>,
) -> Response {
    let page = match Page::open(&dashboard, &headers) {
        Ok(page) => page,
        Err(answer) => return *answer,
    };
    let planned = match Planned::of(&act, &dashboard.tasker) {
        Ok(planned) => planned,
        Err(message) => return problem(&page, StatusCode::BAD_REQUEST, &message),
    };
    let body = html! {
        h1 { "Confirm" }
        p { (planned.question()) }
        form method="post" action="/ui/act" {
            (page.csrf_field())
            input type="hidden" name="action" value=(act.action);
            @if let Some(id) = &act.id { input type="hidden" name="id" value=(id); }
            @if let Some(name) = &act.task_type { input type="hidden" name="type" value=(name); }
            button type="submit" class=(if matches!(planned, Planned::Cancel(_) | Planned::Pause(_)) { "danger" } else { "" }) { "Confirm" }
            " "
            a.button.secondary href="/ui" { "Back" }
        }
    };
    page.render(StatusCode::OK, "Confirm", "", body)
}

/// True when `field` is the CSRF token of the request with `headers`.
fn csrf_matches<S>(dashboard: &Dashboard<S>, headers: &HeaderMap, field: &str) -> bool {
    let now = session::now_seconds();
    session::csrf_matches(&dashboard.csrf_key, &dashboard.auth, headers, now, field)
}

pub async fn act<S: Store>(State(dashboard): Shared<S>, request: Request) -> Response {
    let headers = request.headers().clone();
    // The session first: a request without one is answered before its body is read.
    let page = match Page::open(&dashboard, &headers) {
        Ok(page) => page,
        Err(answer) => return *answer,
    };
    let act: Act = match super::form::read(request).await {
        Ok(act) => act,
        Err(answer) => return answer,
    };
    if !csrf_matches(&dashboard, &headers, &act.csrf) {
        return problem(
            &page,
            StatusCode::FORBIDDEN,
            "This form expired or came from another site. Go back, reload the page and try again.",
        );
    }
    let planned = match Planned::of(&act, &dashboard.tasker) {
        Ok(planned) => planned,
        Err(message) => return problem(&page, StatusCode::BAD_REQUEST, &message),
    };
    match perform(&dashboard.tasker, planned).await {
        Ok(location) => see_other(&location),
        Err(err) => page.failure(err),
    }
}

/// Does `planned`; where its result shows.
async fn perform<S: Store>(tasker: &Tasker<S>, planned: Planned) -> Result<String, TaskerError> {
    match planned {
        Planned::Retry(id) => {
            tasker.retry(id).await?;
            tracing::info!(task_id = %id, "task retried from the dashboard");
            Ok(format!("/ui/tasks/{id}?done=retried"))
        }
        Planned::Cancel(id) => {
            tasker.cancel(id).await?;
            tracing::info!(task_id = %id, "task cancelled from the dashboard");
            Ok(format!("/ui/tasks/{id}?done=cancelled"))
        }
        Planned::Pause(name) => {
            tasker.pause_type(&name, true).await?;
            Ok("/ui/types?done=paused".to_owned())
        }
        Planned::Resume(name) => {
            tasker.pause_type(&name, false).await?;
            Ok("/ui/types?done=resumed".to_owned())
        }
        Planned::RetryFailed(task_type) => {
            let started = Instant::now();
            let (mut retried, mut skipped, mut after) = (0, 0, None);
            loop {
                let page = tasker
                    .retry_failed_page(task_type.clone(), after, MAX_LIST_LIMIT)
                    .await?;
                retried += page.retried.len();
                skipped += page.skipped.len();
                after = page.next;
                if after.is_none() {
                    break;
                }
                if started.elapsed() >= RETRY_ALL_BUDGET {
                    return Ok(format!("/ui/types?done=more-failed&n={retried}"));
                }
            }
            tracing::info!(retried, skipped, task_type = ?task_type, "failed tasks retried from the dashboard");
            Ok(format!(
                "/ui/types?done=retried-failed&n={retried}&skipped={skipped}"
            ))
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct LogIn {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
}

/// The login page, with `error` when a token was refused.
fn login_form<S>(dashboard: &Dashboard<S>, headers: &HeaderMap, error: Option<&str>) -> Response {
    let now = session::now_seconds();
    let page = Page {
        csrf: session::csrf(&dashboard.csrf_key, &dashboard.auth, headers, now),
        secure: over_https(headers),
        logout: false,
        refresh: None,
    };
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    let body = html! {
        h1 { "Log in" }
        @if let Some(error) = error { p.error role="alert" { (error) } }
        form method="post" action="/ui/login" {
            (page.csrf_field())
            label { "API token (TASKER_API_TOKEN)"
                input type="password" name="token" autocomplete="current-password" required;
            }
            p { button type="submit" { "Log in" } }
        }
    };
    page.render(status, "Log in", "", body)
}

pub async fn login_page<S: Store>(State(dashboard): Shared<S>, headers: HeaderMap) -> Response {
    match &dashboard.auth {
        AuthMode::Token(_) => login_form(&dashboard, &headers, None),
        AuthMode::Open => see_other("/ui"),
        other => refused(other),
    }
}

pub async fn log_in<S: Store>(State(dashboard): Shared<S>, request: Request) -> Response {
    let headers = request.headers().clone();
    let AuthMode::Token(expected) = &dashboard.auth else {
        return login_page(axum::extract::State(dashboard), headers).await;
    };
    // What can be refused before the body is: a login past the limit.
    let now = std::time::Instant::now();
    if let Some(wait) = dashboard.logins.wait(now) {
        let seconds = wait.as_secs().max(1);
        let message = format!("Too many failed logins; try again in {seconds} s.");
        let mut response = login_form(&dashboard, &headers, Some(&message));
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(RETRY_AFTER, value);
        }
        return response;
    }
    let form: LogIn = match super::form::read(request).await {
        Ok(form) => form,
        Err(answer) => return answer,
    };
    if !csrf_matches(&dashboard, &headers, &form.csrf) {
        return login_form(&dashboard, &headers, Some("This form expired; try again."));
    }
    if !crate::api::auth::token_matches(form.token.trim(), expected) {
        dashboard.logins.failed(now);
        tracing::warn!("dashboard login refused: wrong token");
        return login_form(&dashboard, &headers, Some("That token is not valid."));
    }
    let now = session::now_seconds();
    let mut response = see_other("/ui");
    let cookie = session::set_cookie(
        SESSION_COOKIE,
        &session::new_session(expected, now),
        SESSION_SECONDS,
        over_https(&headers),
    );
    response.headers_mut().append(SET_COOKIE, cookie);
    response
}

pub async fn log_out<S: Store>(State(dashboard): Shared<S>, request: Request) -> Response {
    let headers = request.headers().clone();
    let now = session::now_seconds();
    // The session first: a request without one is answered before its body is read.
    if session::access(&dashboard.auth, &headers, now) != Access::Granted {
        return see_other("/ui/login");
    }
    let form: LogIn = match super::form::read(request).await {
        Ok(form) => form,
        Err(answer) => return answer,
    };
    if !csrf_matches(&dashboard, &headers, &form.csrf) {
        return see_other("/ui/login");
    }
    let mut response = see_other("/ui/login");
    let cleared = session::set_cookie(SESSION_COOKIE, "", 0, over_https(&headers));
    response.headers_mut().append(SET_COOKIE, cleared);
    response
}
