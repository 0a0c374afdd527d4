//! A request body with a deadline for the whole of it. tower-http's `TimeoutBody` limits each
//! pause and restarts at every byte, so a client sending one byte every few seconds could hold
//! a connection for hours; this one ends the body at a fixed time after its head arrived.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body took longer than its deadline to arrive.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s", .0.as_secs())]
pub struct BodyDeadline(pub Duration);

/// `inner`, failing with [`BodyDeadline`] once `after` has passed since it was made.
pub struct Deadline<B> {
    inner: Pin<Box<B>>,
    sleep: Pin<Box<Sleep>>,
    after: Duration,
}

impl<B> Deadline<B> {
    pub fn new(inner: B, after: Duration) -> Self {
        Self {
            inner: Box::pin(inner),
            sleep: Box::pin(tokio::time::sleep(after)),
            after,
        }
    }
}

impl<B> Body for Deadline<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.inner.is_end_stream() {
            return Poll::Ready(None);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyDeadline(self.after)))));
        }
        self.inner.as_mut().poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use http_body_util::StreamBody;

    #[tokio::test(start_paused = true)]
    async fn a_body_trickling_past_its_deadline_fails_and_a_prompt_one_arrives_whole() {
        // One byte a second for a minute: each pause is short, the whole is not.
        let trickle = futures::stream::unfold(0u32, |n| async move {
            (n < 60).then_some(())?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((
                Ok::<_, std::io::Error>(Frame::data(bytes::Bytes::from_static(b"x"))),
                n + 1,
            ))
        });
        let body = Deadline::new(StreamBody::new(trickle), Duration::from_secs(10));
        let err = body.collect().await.expect_err("the deadline ends it");
        assert!(err.to_string().contains("within 10 s"), "{err}");

        let prompt = Deadline::new(
            http_body_util::Full::new(bytes::Bytes::from_static(b"whole")),
            Duration::from_secs(10),
        );
        let bytes = prompt.collect().await.expect("arrives").to_bytes();
        assert_eq!(&bytes[..], b"whole");
    }
}
