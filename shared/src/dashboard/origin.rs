//! Who may send the dashboard a form: a page of the dashboard itself. A browser says where a
//! request comes from (`Sec-Fetch-Site`, `Origin`); a state-changing request another site's
//! page sent is refused before anything is read, in `tasker serve` and in the enqueue Lambda
//! alike. A client that sends neither header is not a browser (or a very old one) and is left
//! to the CSRF token.

use axum::extract::Request;
use axum::http::header::{HOST, ORIGIN};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Refuses (403) a request other than GET or HEAD that a page on another origin sent.
pub async fn same_origin_only(request: Request, next: Next) -> Response {
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if reads || same_origin(request.headers()) {
        return next.run(request).await;
    }
    (
        StatusCode::FORBIDDEN,
        "This form came from another site; the dashboard accepts forms from its own pages only.",
    )
        .into_response()
}

/// True unless the headers show another origin: `Sec-Fetch-Site` other than `same-origin` or
/// `none` (typed by the user), or an `Origin` (`null` included) naming neither the `Host` nor
/// the `X-Forwarded-Host` the request reached.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return false;
        }
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let Some(authority) = origin
        .to_str()
        .ok()
        .and_then(|origin| origin.split_once("://"))
        .map(|(_, authority)| authority.to_ascii_lowercase())
    else {
        return false;
    };
    // A proxy may rewrite `Host`; a cross-site form cannot set `X-Forwarded-Host`.
    [text(HOST.as_str()), text("x-forwarded-host")]
        .into_iter()
        .flatten()
        .any(|host| host.trim().eq_ignore_ascii_case(&authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, value.parse().expect("a header value"));
        }
        headers
    }

    #[test]
    fn forms_from_other_origins_are_told_apart() {
        let host = ("host", "tasks.example.com");
        assert!(same_origin(&headers(&[host])), "not a browser");
        assert!(same_origin(&headers(&[
            host,
            ("origin", "https://tasks.example.com")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(same_origin(&headers(&[
            ("host", "10.0.0.5:8080"),
            ("x-forwarded-host", "Tasks.Example.com"),
            ("origin", "https://tasks.example.com"),
        ])));
        for refused in [
            headers(&[host, ("origin", "https://evil.example")]),
            headers(&[host, ("origin", "https://tasks.example.com.evil.example")]),
            headers(&[host, ("origin", "null")]),
            headers(&[host, ("sec-fetch-site", "cross-site")]),
            headers(&[host, ("sec-fetch-site", "same-site")]),
            headers(&[("origin", "https://tasks.example.com")]),
        ] {
            assert!(!same_origin(&refused), "{refused:?}");
        }
    }
}
