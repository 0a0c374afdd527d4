//! The web dashboard: server-rendered pages under `/ui/` (overview, tasks, a task, types,
//! schedules) and their actions (retry, cancel, retry every failed task, pause and resume a
//! type), each behind a confirmation page. No JavaScript at all: pages work with it off, and
//! the `Content-Security-Policy` forbids every script. Every value is escaped by maud.
//!
//! It sits beside the API, not behind its bearer-token check (a browser cannot send one):
//! [`session`] decides who may use it.

mod actions;
mod form;
mod limit;
mod origin;
mod pages;
mod payload;
pub mod session;
mod tasks;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header::{CONTENT_SECURITY_POLICY, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};

use self::session::{Access, Csrf, access, over_https, remember_csrf};
use crate::api::auth::AuthMode;
use crate::engine::{Tasker, TaskerError};
use crate::store::Store;

/// Where the dashboard lives, in `tasker serve` and in the enqueue Lambda.
pub const PREFIX: &str = "/ui";

/// Scripts of any kind are refused; styles and images only from the dashboard itself (the
/// chart is inline SVG, drawn with attributes, not styles).
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

const STYLE: &str = include_str!("style.css");

/// What every page handler holds: the Tasker and how the API authenticates.
pub struct Dashboard<S> {
    tasker: Arc<Tasker<S>>,
    auth: AuthMode,
    /// Failed logins in this process.
    logins: limit::LoginLimit,
    /// What CSRF tokens are derived under.
    csrf_key: Vec<u8>,
}

type Shared<S> = axum::extract::State<Arc<Dashboard<S>>>;

/// The dashboard's routes, all under [`PREFIX`].
pub fn router<S: Store>(tasker: Arc<Tasker<S>>, auth: AuthMode) -> Router {
    let dashboard = Arc::new(Dashboard {
        tasker,
        csrf_key: session::csrf_key(&auth),
        auth,
        logins: limit::LoginLimit::default(),
    });
    let forms = DefaultBodyLimit::max(form::FORM_BODY_BYTES);
    Router::new()
        // Both: API Gateway routes `/ui` and `/ui/{proxy+}`, which `/ui/` is not.
        .route(PREFIX, get(pages::overview::<S>))
        .route("/ui/", get(pages::overview::<S>))
        .route("/ui/tasks", get(tasks::list::<S>))
        .route("/ui/tasks/{id}", get(tasks::show::<S>))
        .route("/ui/tasks/{id}/payload", get(payload::raw::<S>))
        .route("/ui/types", get(pages::types::<S>))
        .route("/ui/schedules", get(pages::schedules::<S>))
        .route("/ui/confirm", get(actions::confirm::<S>))
        .route("/ui/act", post(actions::act::<S>).layer(forms))
        .route(
            "/ui/login",
            get(actions::login_page::<S>)
                .post(actions::log_in::<S>)
                .layer(forms),
        )
        .route("/ui/logout", post(actions::log_out::<S>).layer(forms))
        .route("/ui/style.css", get(style))
        .with_state(dashboard)
        .layer(axum::middleware::from_fn(origin::same_origin_only))
        .layer(axum::middleware::map_response(protect))
}

/// `api` with the dashboard beside it: the dashboard's paths go to it, every other path to
/// the API (with its own authentication and errors). With `at_root`, `/` leads to the
/// dashboard (`tasker serve`).
pub fn beside<S: Store>(
    api: Router,
    tasker: Arc<Tasker<S>>,
    auth: AuthMode,
    at_root: bool,
) -> Router {
    let mut app = router(tasker, auth);
    if at_root {
        app = app.route("/", get(|| async { Redirect::to("/ui") }));
    }
    // The API's headers (no caching of task data, no sniffing) on the pages too.
    app.fallback_service(api)
        .layer(axum::middleware::map_response(crate::api::harden))
}

/// The policy headers every dashboard answer carries.
async fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    // Not `no-referrer`: a form's POST would then say `Origin: null`, which `tasker serve`
    // refuses as another site's.
    headers.insert(
        axum::http::header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

async fn style() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/css; charset=utf-8"),
        )],
        STYLE,
    )
        .into_response()
}

/// One page being answered: the request's headers and its CSRF token.
pub(crate) struct Page {
    csrf: Csrf,
    secure: bool,
    logout: bool,
    /// Reload the page every this many seconds (a meta refresh: no script).
    refresh: Option<u32>,
}

impl Page {
    /// The page for a request with `headers`, or the answer instead of it: a login page for a
    /// request without a session, a refusal when the dashboard cannot be used at all.
    fn open<S>(dashboard: &Dashboard<S>, headers: &HeaderMap) -> Result<Self, Box<Response>> {
        let now = session::now_seconds();
        match access(&dashboard.auth, headers, now) {
            Access::Granted => {}
            Access::LogIn => return Err(Box::new(see_other("/ui/login"))),
            Access::Refused => return Err(Box::new(refused(&dashboard.auth))),
        }
        let csrf = session::csrf(&dashboard.csrf_key, &dashboard.auth, headers, now);
        Ok(Self {
            csrf,
            secure: over_https(headers),
            logout: matches!(dashboard.auth, AuthMode::Token(_)),
            refresh: None,
        })
    }

    /// The hidden field every form carries.
    fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.csrf.token); }
    }

    /// `body` in the layout, titled `title`, with `current` marked in the navigation.
    fn render(&self, status: StatusCode, title: &str, current: &str, body: Markup) -> Response {
        let nav = [
            ("/ui", "Overview"),
            ("/ui/tasks", "Tasks"),
            ("/ui/tasks?status=failed", "Failed"),
            ("/ui/types", "Types"),
            ("/ui/schedules", "Schedules"),
        ];
        let markup = html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · Tasker" }
                    @if let Some(seconds) = self.refresh {
                        meta http-equiv="refresh" content=(seconds);
                    }
                    link rel="stylesheet" href="/ui/style.css";
                }
                body {
                    header {
                        nav aria-label="Main" {
                            @for (href, label) in nav {
                                @if label == current {
                                    a href=(href) aria-current="page" { (label) } " "
                                } @else {
                                    a href=(href) { (label) } " "
                                }
                            }
                        }
                        @if self.logout {
                            form method="post" action="/ui/logout" {
                                (self.csrf_field())
                                button type="submit" class="secondary" { "Log out" }
                            }
                        }
                    }
                    main { (body) }
                }
            }
        };
        let mut response = (status, markup).into_response();
        remember_csrf(response.headers_mut(), &self.csrf, self.secure);
        response
    }

    /// An error page for `err`, with the status and message the API would answer (a store's
    /// own failure logged, and shown only as "internal").
    fn failure(&self, err: TaskerError) -> Response {
        let err = crate::api::error::ApiError::from(err);
        let body = html! {
            h1 { "Something went wrong" }
            p.error role="alert" { (err.message) }
            p { a href="/ui" { "Back to the overview" } }
        };
        self.render(err.status, "Error", "", body)
    }
}

fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

/// The answer to every dashboard request when it cannot be used: fails closed.
fn refused(auth: &AuthMode) -> Response {
    let why = match auth {
        AuthMode::Iam => {
            "This API authenticates with IAM, which a browser cannot sign: the dashboard needs TASKER_AUTH=token and TASKER_API_TOKEN."
        }
        _ => {
            "Authentication is not configured on this service (no TASKER_API_TOKEN): the dashboard stays closed."
        }
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Dashboard closed · Tasker" } link rel="stylesheet" href="/ui/style.css"; }
            body { main { h1 { "Dashboard closed" } p.error role="alert" { (why) } } }
        }
    };
    (StatusCode::UNAUTHORIZED, markup).into_response()
}
