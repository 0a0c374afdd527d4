//! The dashboard in a real headless Chromium, over a real `tasker serve` on SQLite (and the
//! browser walk again on PostgreSQL): the token login, each view with seeded tasks, retry, cancel, pause and resume through the pages, and
//! a payload that tries to run a script. Screenshots of each view go to `target/dashboard/`.
//!
//! The one wait on the clock (a paused type's task staying pending for 3 s) is what "nothing of
//! it runs" means; every other step waits for an event.

use std::time::Duration;

use fantoccini::Locator;
use reqwest::Method;
use serde_json::{Value, json};
use tasker_tests::browser::Browser;
use tasker_tests::fixtures::ApiClient;
use tasker_tests::process::Serve;

const TOKEN: &str = "dashboard-test-token";
const SCRIPT: &str = "<script>window.__xss = 1; alert(1)</script>";

async fn serve() -> (Serve, ApiClient, tempfile::TempDir) {
    serve_on(false).await
}

/// `tasker serve` with a token on a SQLite file, or on a new PostgreSQL database.
async fn serve_on(postgres: bool) -> (Serve, ApiClient, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("tasker.db").display().to_string();
    let url = if postgres {
        tasker_tests::postgres::fresh_database().await
    } else {
        String::new()
    };
    let store = if postgres {
        ["--store", "postgres", "--database-url", &url]
    } else {
        ["--store", "sqlite", "--db", &db]
    };
    let mut args = store.to_vec();
    args.extend(["--interval", "1"]);
    let serve = Serve::start(&args, &[("TASKER_API_TOKEN", TOKEN.to_owned())]).await;
    let api = ApiClient::new(&serve.base, TOKEN);
    (serve, api, dir)
}

/// Creates a `sendWebhook` task from `body`; its id.
async fn create(api: &ApiClient, body: Value) -> String {
    let (status, task) = api.send(Method::POST, "/tasks", Some(&body)).await;
    assert_eq!(status, 201, "{task}");
    task["id"].as_str().expect("an id").to_owned()
}

async fn task(api: &ApiClient, id: &str) -> Value {
    let (status, task) = api.send(Method::GET, &format!("/tasks/{id}"), None).await;
    assert_eq!(status, 200, "{task}");
    task
}

async fn status_becomes(api: &ApiClient, id: &str, wanted: &[&str]) -> Value {
    tasker_tests::eventually(
        &format!("task {id} to be {wanted:?}"),
        Duration::from_secs(30),
        || async {
            let task = task(api, id).await;
            wanted
                .contains(&task["status"].as_str().unwrap_or_default())
                .then_some(task)
        },
    )
    .await
}

/// A webhook to a loopback address: refused at once, so the task fails for good.
fn failing() -> Value {
    json!({"type": "sendWebhook", "payload": {"url": "http://127.0.0.1:9/hook", "body": {}}})
}

fn later(body: Value) -> Value {
    json!({"type": "sendWebhook", "delaySeconds": 3600, "payload": {"url": "https://example.com/hook", "body": body}})
}

async fn goto(browser: &Browser, base: &str, path: &str) {
    browser
        .client
        .goto(&format!("{base}{path}"))
        .await
        .unwrap_or_else(|err| panic!("open {path}: {err}"));
}

/// Follows a confirmation: the action link `css` on the current page, then Confirm.
async fn confirm(browser: &Browser, css: &str) {
    browser.click(css).await;
    browser.wait_text("h1", "Confirm").await;
    browser
        .click("form[action='/ui/act'] button[type=submit]")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_queue_and_its_actions_change_the_store() {
    walk_the_dashboard(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_queue_and_its_actions_change_the_store_on_postgres() {
    walk_the_dashboard(true).await;
}

async fn walk_the_dashboard(postgres: bool) {
    let (serve, api, _dir) = serve_on(postgres).await;
    // Each store's pictures of its own, so the two walks never write one file.
    let shot = |name: &str| {
        if postgres {
            format!("postgres-{name}")
        } else {
            name.to_owned()
        }
    };
    let base = serve.base.clone();
    let failed = create(&api, failing()).await;
    let pending = create(&api, later(json!({"n": 1}))).await;
    let hostile = create(&api, later(json!({"note": SCRIPT}))).await;
    status_becomes(&api, &failed, &["failed"]).await;
    let browser = Browser::start().await;

    // Without a session every page leads to the login; a wrong token is refused.
    goto(&browser, &base, "/").await;
    assert_eq!(browser.text("h1").await, "Log in");
    let cookies = browser.client.get_all_cookies().await.expect("cookies");
    assert!(cookies.iter().all(|c| c.name() != "tasker_session"));
    let field = browser
        .client
        .find(Locator::Css("input[name=token]"))
        .await
        .expect("the token field");
    field.send_keys("wrong").await.expect("type");
    browser.click("button[type=submit]").await;
    assert_eq!(browser.text("p.error").await, "That token is not valid.");
    let field = browser
        .client
        .find(Locator::Css("input[name=token]"))
        .await
        .expect("the token field");
    field.send_keys(TOKEN).await.expect("type");
    browser.click("button[type=submit]").await;
    browser.wait_text("h1", "Overview").await;
    let cookies = browser.client.get_all_cookies().await.expect("cookies");
    let session = cookies
        .iter()
        .find(|c| c.name() == "tasker_session")
        .expect("a session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(format!("{:?}", session.same_site()), "Some(Strict)");
    let cards = browser.text("section.cards").await;
    assert!(cards.contains("failed"), "{cards}");

    // The listing shows every seeded task; the failed view shows the failed one.
    goto(&browser, &base, "/ui/tasks").await;
    for id in [&failed, &pending, &hostile] {
        let row = browser.text(&format!("tr[data-id='{id}']")).await;
        assert!(row.contains("sendWebhook"), "{row}");
    }
    browser.screenshot(&shot("tasks")).await;
    goto(&browser, &base, "/ui/tasks?status=failed").await;
    let row = browser.text(&format!("tr[data-id='{failed}']")).await;
    assert!(row.contains("refused to send"), "{row}");

    // Pause the type, then retry the failed task: it stays pending, as the store says.
    goto(&browser, &base, "/ui/types").await;
    confirm(
        &browser,
        "tr[data-type='sendWebhook'] a[href*='action=pause']",
    )
    .await;
    assert!(browser.text("p.notice").await.contains("paused"));
    let (_, types) = api.send(Method::GET, "/types", None).await;
    assert_eq!(types["types"][0]["paused"], true, "{types}");
    browser.screenshot(&shot("types")).await;

    goto(&browser, &base, &format!("/ui/tasks/{failed}")).await;
    browser.screenshot(&shot("task")).await;
    confirm(&browser, "a[href*='action=retry']").await;
    assert!(browser.text("p.notice").await.contains("pending again"));
    assert_eq!(task(&api, &failed).await["status"], "pending");

    // Nothing of a paused type runs, even due now.
    let due = create(&api, failing()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(task(&api, &due).await["status"], "pending");
    assert_eq!(task(&api, &failed).await["status"], "pending");
    // And the task says why it waits, in the API and on its page.
    assert_eq!(task(&api, &due).await["waiting"]["reason"], "typePaused");
    goto(&browser, &base, &format!("/ui/tasks/{due}")).await;
    let waiting = browser.text("dd.waiting").await;
    assert!(
        waiting.starts_with("its type is paused (since "),
        "{waiting}"
    );

    // Cancel the pending one.
    goto(&browser, &base, &format!("/ui/tasks/{pending}")).await;
    confirm(&browser, "a[href*='action=cancel']").await;
    assert!(browser.text("p.notice").await.contains("cancelled"));
    assert_eq!(task(&api, &pending).await["status"], "cancelled");

    // Resume: the held tasks run (and fail again, their webhook being refused).
    goto(&browser, &base, "/ui/types").await;
    confirm(
        &browser,
        "tr[data-type='sendWebhook'] a[href*='action=resume']",
    )
    .await;
    status_becomes(&api, &due, &["failed"]).await;
    status_becomes(&api, &failed, &["failed"]).await;

    // The hostile payload shows as text and runs nothing.
    goto(&browser, &base, &format!("/ui/tasks/{hostile}")).await;
    let shown = browser.text("pre.payload").await;
    assert!(shown.contains(SCRIPT), "{shown}");
    match browser.client.get_alert_text().await {
        Err(err) if err.is_no_such_alert() => {}
        other => panic!("an alert opened: {other:?}"),
    }
    let ran = browser
        .client
        .execute("return window.__xss === undefined;", vec![])
        .await
        .expect("run a check");
    assert_eq!(ran, json!(true), "the payload's script ran");

    // Schedules show too.
    let schedule = json!({"name": "nightly", "cron": "0 3 * * *", "type": "sendWebhook",
        "payload": {"url": "https://example.com/n", "body": {}}});
    let (status, _) = api.send(Method::POST, "/schedules", Some(&schedule)).await;
    assert_eq!(status, 201);
    goto(&browser, &base, "/ui/schedules").await;
    assert!(browser.text("table").await.contains("nightly"));
    browser.screenshot(&shot("schedules")).await;

    // The overview after all that (the README's picture).
    goto(&browser, &base, "/ui").await;
    browser.wait_text("h1", "Overview").await;
    browser.screenshot(&shot("overview")).await;

    // Log out: the pages ask for the token again.
    browser.click("header form button[type=submit]").await;
    browser.wait_text("h1", "Log in").await;
    browser.close().await;
}

const FORM: &str = "application/x-www-form-urlencoded";

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The value of the first form's hidden `csrf` field in `html`.
fn csrf_field(html: &str) -> String {
    let (_, after) = html
        .split_once(r#"name="csrf" value=""#)
        .expect("a csrf field");
    after.split('"').next().expect("its value").to_owned()
}

/// The value of the cookie `name` an answer sets.
fn set_cookie(answer: &reqwest::Response, name: &str) -> Option<String> {
    answer
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")).map(str::to_owned))
        .and_then(|v| v.split(';').next().map(str::to_owned))
}

/// The login page as a browser gets it: the nonce cookie it sets and its form's CSRF token.
async fn login_csrf(client: &reqwest::Client, base: &str) -> (String, String) {
    let login = client
        .get(format!("{base}/ui/login"))
        .send()
        .await
        .expect("login page");
    let nonce = set_cookie(&login, "tasker_csrf").expect("a nonce cookie");
    let html = login.text().await.expect("the page");
    (nonce, csrf_field(&html))
}

/// Logs in as a browser would, keeping the cookies by hand: the client, the cookies to send and
/// the session's CSRF token (read from the overview's logout form).
async fn log_in(base: &str) -> (reqwest::Client, String, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let (nonce, csrf) = login_csrf(&client, base).await;
    let answer = client
        .post(format!("{base}/ui/login"))
        .header("cookie", format!("tasker_csrf={nonce}"))
        .header("content-type", FORM)
        .body(form(&[("token", TOKEN), ("csrf", &csrf)]))
        .send()
        .await
        .expect("log in");
    assert_eq!(answer.status(), 303);
    let session = set_cookie(&answer, "tasker_session").expect("a session cookie");
    let cookies = format!("tasker_session={session}; tasker_csrf={nonce}");
    let overview = client
        .get(format!("{base}/ui"))
        .header("cookie", &cookies)
        .send()
        .await
        .expect("overview");
    let csrf = csrf_field(&overview.text().await.expect("the page"));
    (client, cookies, csrf)
}

#[tokio::test]
async fn a_form_without_its_csrf_token_changes_nothing() {
    let (serve, api, _dir) = serve().await;
    let pending = create(&api, later(json!({}))).await;
    let (client, cookies, csrf) = log_in(&serve.base).await;
    for token in ["", "0123456789abcdef0123456789abcdef"] {
        let answer = client
            .post(format!("{}/ui/act", serve.base))
            .header("cookie", &cookies)
            .header("content-type", FORM)
            .body(form(&[
                ("action", "cancel"),
                ("id", &pending),
                ("csrf", token),
            ]))
            .send()
            .await
            .expect("post");
        assert_eq!(answer.status(), 403, "csrf {token:?}");
    }
    assert_eq!(task(&api, &pending).await["status"], "pending");
    // With it, the same form works.
    let answer = client
        .post(format!("{}/ui/act", serve.base))
        .header("cookie", &cookies)
        .header("content-type", FORM)
        .body(form(&[
            ("action", "cancel"),
            ("id", &pending),
            ("csrf", &csrf),
        ]))
        .send()
        .await
        .expect("post");
    assert_eq!(answer.status(), 303);
    assert_eq!(task(&api, &pending).await["status"], "cancelled");
}

/// GIVEN a signed-in browser WHEN a sibling site plants its own `tasker_csrf` cookie and posts
/// a form repeating it, or a page on another site posts the real form THEN nothing changes (a
/// planted cookie with a matching field used to be accepted).
#[tokio::test]
async fn a_planted_csrf_cookie_or_a_cross_site_form_changes_nothing() {
    let (serve, api, _dir) = serve().await;
    let pending = create(&api, later(json!({}))).await;
    let (client, cookies, csrf) = log_in(&serve.base).await;
    let session = cookies.split(';').next().expect("the session cookie");
    let planted = "0123456789abcdef0123456789abcdef";
    let post = |cookies: String, field: String, extra: Option<(&'static str, &'static str)>| {
        let mut request = client
            .post(format!("{}/ui/act", serve.base))
            .header("cookie", cookies)
            .header("content-type", FORM)
            .body(form(&[
                ("action", "cancel"),
                ("id", &pending),
                ("csrf", &field),
            ]));
        if let Some((name, value)) = extra {
            request = request.header(name, value);
        }
        request.send()
    };
    for cookies in [
        format!("tasker_csrf={planted}; {session}"),
        format!("{session}; tasker_csrf={planted}"),
    ] {
        let answer = post(cookies, planted.to_owned(), None).await.expect("post");
        assert_eq!(answer.status(), 403, "a planted cookie");
    }
    for header in [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
        ("origin", "null"),
    ] {
        let answer = post(cookies.clone(), csrf.clone(), Some(header))
            .await
            .expect("post");
        assert_eq!(answer.status(), 403, "{header:?}");
    }
    assert_eq!(task(&api, &pending).await["status"], "pending");
    let answer = post(
        cookies.clone(),
        csrf.clone(),
        Some(("sec-fetch-site", "same-origin")),
    )
    .await
    .expect("post");
    assert_eq!(answer.status(), 303);
    assert_eq!(task(&api, &pending).await["status"], "cancelled");
}

/// GIVEN a task whose 250 KB payload nests 124 deep WHEN its page is shown THEN the page shows
/// the first 16 KiB of the stored text and links to the whole, which comes back as sent (the
/// page used to pretty-print it to 31.7 MB).
#[tokio::test]
async fn a_huge_deep_payload_is_cut_on_its_page_and_linked_whole() {
    let (serve, api, _dir) = serve().await;
    let mut nested = json!("leaf");
    for level in 0..124 {
        nested = json!({ format!("k{level}"): nested, "pad": "x".repeat(2_000) });
    }
    let id = create(&api, later(nested)).await;
    let stored = task(&api, &id).await["payload"]
        .as_str()
        .expect("the stored payload")
        .to_owned();
    assert!(stored.len() > 200_000, "{} bytes", stored.len());
    let (client, cookies, _) = log_in(&serve.base).await;
    let page = client
        .get(format!("{}/ui/tasks/{id}", serve.base))
        .header("cookie", &cookies)
        .send()
        .await
        .expect("task page");
    assert_eq!(page.status(), 200);
    let page = page.text().await.expect("page text");
    assert!(page.len() < 64 * 1024, "a page of {} bytes", page.len());
    assert!(
        page.contains(&format!("/ui/tasks/{id}/payload")),
        "no link to the whole"
    );
    let raw = client
        .get(format!("{}/ui/tasks/{id}/payload", serve.base))
        .header("cookie", &cookies)
        .send()
        .await
        .expect("raw payload");
    assert_eq!(raw.status(), 200);
    assert!(
        raw.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/plain")
    );
    assert_eq!(raw.text().await.expect("raw text"), stored);
    let anonymous = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(format!("{}/ui/tasks/{id}/payload", serve.base))
        .send()
        .await
        .expect("raw payload without a session");
    assert_eq!(anonymous.status(), 303, "a session is needed");
}

/// GIVEN ten wrong tokens in a minute WHEN a login follows, with the right token THEN it is
/// answered 429 with `Retry-After`, the token not even compared, and no session is set.
#[tokio::test]
async fn failed_logins_are_limited() {
    let (serve, _api, _dir) = serve().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let (nonce, csrf) = login_csrf(&client, &serve.base).await;
    let (nonce, csrf) = (nonce.as_str(), csrf.as_str());
    let attempt = |token: &'static str| {
        client
            .post(format!("{}/ui/login", serve.base))
            .header("cookie", format!("tasker_csrf={nonce}"))
            .header("content-type", FORM)
            .body(form(&[("token", token), ("csrf", csrf)]))
            .send()
    };
    for _ in 0..10 {
        let answer = attempt("wrong-token").await.expect("log in");
        assert_eq!(answer.status(), 401);
    }
    let answer = attempt(TOKEN).await.expect("log in");
    assert_eq!(answer.status(), 429);
    let retry: u64 = answer.headers()["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(
        !answer.headers().get_all("set-cookie").iter().any(|v| v
            .to_str()
            .unwrap_or_default()
            .starts_with("tasker_session=")),
        "no session"
    );
}
