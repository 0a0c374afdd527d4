//! Reading a dashboard form: small, and whole within a deadline. A login form is under 1 KiB
//! and an action's under 300 bytes, so a client trickling a body a byte at a time (each pause
//! under the server's pause limit) holds its connection for seconds, not hours.

use std::time::Duration;

use axum::Form;
use axum::body::HttpBody;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

/// The largest form body the dashboard reads.
pub const FORM_BODY_BYTES: usize = 2 * 1024;
/// How long a form body may take to arrive, in all.
pub const FORM_DEADLINE: Duration = Duration::from_secs(10);

/// The form in `request`'s body; 413 past [`FORM_BODY_BYTES`] (the routes' body limit), 408
/// past [`FORM_DEADLINE`], 400 or 415 for a body that is not such a form.
pub async fn read<T: DeserializeOwned>(request: Request) -> Result<T, Response> {
    // A body announced too large is refused before any of it is read (the limit alone would
    // read up to it first).
    let announced = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or_else(|| request.body().size_hint().lower());
    if announced > FORM_BODY_BYTES as u64 {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a dashboard form is at most {FORM_BODY_BYTES} bytes; this one is {announced}"),
        )
            .into_response());
    }
    match tokio::time::timeout(FORM_DEADLINE, Form::<T>::from_request(request, &())).await {
        Ok(Ok(Form(form))) => Ok(form),
        Ok(Err(rejection)) => Err(rejection.into_response()),
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the form did not arrive within {} s",
                FORM_DEADLINE.as_secs()
            ),
        )
            .into_response()),
    }
}
