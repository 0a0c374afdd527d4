//! The webhook sender: one HTTP client, a resolver that refuses private addresses, and the
//! HMAC-SHA256 signature.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use sha2::Sha256;

pub use super::addresses::is_public;
use super::breaker::{Admit, Breakers};
use super::{SIGNATURE_HEADER, TASK_ID_HEADER, WebhookSettings};
use crate::handlers::{TaskContext, TaskError};

/// The payload of a `sendWebhook` task.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookPayload {
    url: String,
    /// Sent as its text in the payload: numbers, key order and escapes as the client wrote them.
    body: Box<serde_json::value::RawValue>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// Sends webhooks; one HTTP client, shared by every attempt.
#[derive(Debug, Clone)]
pub struct WebhookSender {
    /// Built at the first send: loading the system's root certificates is most of a Lambda's
    /// init time, and the enqueue and cleanup functions never send a webhook.
    client: Arc<OnceLock<Result<reqwest::Client, String>>>,
    settings: WebhookSettings,
    /// Each host's circuit, when the breaker is on.
    breakers: Option<Arc<Breakers>>,
}

impl WebhookSender {
    /// A sender with its own connection pool (made at the first send).
    pub fn new(settings: WebhookSettings) -> Self {
        Self {
            client: Arc::default(),
            breakers: settings
                .breaker
                .map(|open_for| Arc::new(Breakers::new(open_for))),
            settings,
        }
    }

    /// The HTTP client, built on first use; a failure to build it is retryable.
    fn client(&self) -> Result<&reqwest::Client, TaskError> {
        self.client
            .get_or_init(|| {
                reqwest::Client::builder()
                    .timeout(self.settings.timeout)
                    // A redirect could point at an address the resolver would refuse; treat
                    // 3xx as failure.
                    .redirect(reqwest::redirect::Policy::none())
                    // A proxy would resolve the target itself, past the address check below.
                    .no_proxy()
                    .dns_resolver(PublicResolver {
                        allow_private: self.settings.allow_private,
                    })
                    .user_agent(concat!("tasker/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|err| err.to_string())
            })
            .as_ref()
            .map_err(|err| {
                TaskError::Retryable(format!("cannot build the webhook HTTP client: {err}"))
            })
    }

    /// Delivers the webhook of one attempt.
    pub async fn send(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        // Also at send: a task created before the check, or written to the store directly.
        super::check_payload(&ctx.payload).map_err(|err| TaskError::Permanent(err.to_string()))?;
        let payload: WebhookPayload = serde_json::from_str(&ctx.payload).map_err(|err| {
            TaskError::Permanent(format!(
                "payload is not {{\"url\": string, \"body\": any, \"headers\"?: object}}: {err}"
            ))
        })?;
        let url = url::Url::parse(&payload.url)
            .map_err(|err| TaskError::Permanent(format!("invalid url {:?}: {err}", payload.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TaskError::Permanent(format!(
                "url scheme {:?} is not http or https",
                url.scheme()
            )));
        }
        // IP literals never reach the resolver, so check them here.
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal.filter(|ip| !self.settings.allow_private && !is_public(*ip)) {
            return Err(TaskError::Permanent(refused(&ip.to_string())));
        }

        let body = payload.body.get().as_bytes().to_vec();
        let headers = self.headers(ctx, &payload.headers, &body)?;
        let host = super::target_host(&ctx.payload).unwrap_or_default();
        let admitted = match &self.breakers {
            Some(breakers) => breakers.admit(&host, Instant::now()),
            None => Admit::Send(0),
        };
        if let Admit::Hold(after) = admitted {
            // Spread over half the wait again, so a backlog held together is not due together.
            let after = after + after.mul_f64(rand::random::<f64>() / 2.0);
            return Err(TaskError::Hold {
                reason: format!(
                    "the circuit for {host} is open (most of its last attempts failed); \
                     held for {}",
                    humantime::format_duration(Duration::from_millis(
                        u64::try_from(after.as_millis()).unwrap_or(u64::MAX)
                    ))
                ),
                after,
            });
        }
        let sent = self
            .client()?
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await;
        // A request that never got an answer, or a 5xx: the host is down, not the task wrong;
        // but a 503 that says when to come back is the receiver pacing us (`Retry-After`).
        let down = sent.as_ref().map_or(true, |response| {
            response.status().is_server_error()
                && !response
                    .headers()
                    .contains_key(reqwest::header::RETRY_AFTER)
        });
        if let Some(breakers) = &self.breakers {
            if breakers.record(&host, admitted, down, Instant::now()) {
                tracing::warn!(host = %host, "most of the last webhooks to this host failed: its circuit is open, its webhooks held");
            }
        }
        let response = sent.map_err(|err| self.transport_error(&err))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(super::answer::failure(response).await)
        }
    }

    fn headers(
        &self,
        ctx: &TaskContext,
        extra: &BTreeMap<String, String>,
        body: &[u8],
    ) -> Result<HeaderMap, TaskError> {
        let mut headers = HeaderMap::new();
        for (name, value) in extra {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|_| TaskError::Permanent(format!("invalid header name {name:?}")))?;
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|_| TaskError::Permanent(format!("invalid value for header {name}")))?;
            headers.insert(name, value);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let id = HeaderValue::try_from(ctx.id.to_string())
            .map_err(|_| TaskError::Permanent("task id is not a header value".into()))?;
        headers.insert(HeaderName::from_static(TASK_ID_HEADER), id);
        if let Some(secret) = &self.settings.secret {
            let signature = HeaderValue::try_from(format!("sha256={}", sign(secret, body)))
                .map_err(|_| TaskError::Permanent("signature is not a header value".into()))?;
            headers.insert(HeaderName::from_static(SIGNATURE_HEADER), signature);
        }
        Ok(headers)
    }

    fn transport_error(&self, err: &reqwest::Error) -> TaskError {
        let mut source: Option<&dyn std::error::Error> = Some(err);
        while let Some(current) = source {
            if let Some(private) = current.downcast_ref::<PrivateTarget>() {
                return TaskError::Permanent(private.to_string());
            }
            source = current.source();
        }
        if err.is_timeout() {
            return TaskError::Retryable(format!(
                "webhook timed out after {}",
                humantime::format_duration(self.settings.timeout)
            ));
        }
        TaskError::Retryable(format!("webhook request failed: {}", error_chain(err)))
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn refused(host: &str) -> String {
    format!(
        "refused to send to {host}: it resolves to a loopback, private or link-local address \
         (set TASKER_WEBHOOK_ALLOW_PRIVATE=true to allow)"
    )
}

/// The target resolved only to addresses that are not public.
#[derive(Debug, thiserror::Error)]
#[error("{}", refused(.0))]
struct PrivateTarget(String);

/// Resolves names, then drops every address that is not public (unless allowed), so a webhook
/// cannot be pointed at the machine's own network.
struct PublicResolver {
    allow_private: bool,
}

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| allow_private || is_public(addr.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(
                    Box::new(PrivateTarget(host)) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::webhook::TASK_TYPE;

    #[test]
    fn only_public_addresses_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "192.0.0.8",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "::10.0.0.1",
            "2002:a00:1::1",
            "2001:db8::1",
            "2001::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    fn ctx(payload: &str) -> TaskContext {
        TaskContext {
            id: crate::task::TaskId::new(time::OffsetDateTime::UNIX_EPOCH),
            task_type: TASK_TYPE.into(),
            attempt: 1,
            payload: payload.into(),
        }
    }

    #[tokio::test]
    async fn private_targets_are_refused_permanently() {
        let sender = WebhookSender::new(WebhookSettings::default());
        for url in [
            "http://127.0.0.1:9/x",
            "http://[::1]:9/x",
            "http://localhost:9/x",
        ] {
            let payload = serde_json::json!({"url": url, "body": {}}).to_string();
            let err = sender.send(&ctx(&payload)).await.unwrap_err();
            assert!(err.is_permanent(), "{url}: {err}");
            assert!(err.to_string().contains("refused"), "{url}: {err}");
        }
    }

    #[tokio::test]
    async fn malformed_payloads_fail_permanently() {
        let sender = WebhookSender::new(WebhookSettings::default());
        for payload in [
            "not json",
            "{}",
            r#"{"url":"ftp://x","body":1}"#,
            r#"{"url":5,"body":1}"#,
        ] {
            let err = sender.send(&ctx(payload)).await.unwrap_err();
            assert!(err.is_permanent(), "{payload}: {err}");
        }
    }
}
