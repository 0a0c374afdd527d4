//! The failed-login limit: at most [`FAILURES`] wrong tokens per [`WINDOW`] in this process;
//! past that every login attempt is answered 429 until the window ends, before the token is
//! compared, so guessing costs a minute per ten tries. Per process: N Lambda containers or
//! processes allow N times as many, and a client that waits out each window keeps guessing at
//! that pace; a long random token is what stops it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong tokens a window allows.
pub const FAILURES: u32 = 10;
/// How long a window lasts, from its first failure.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Failed logins in the current window.
#[derive(Debug, Default)]
pub struct LoginLimit {
    window: Mutex<Option<(Instant, u32)>>,
}

impl LoginLimit {
    /// How long until a login may be tried at `now`, if it may not now.
    pub fn wait(&self, now: Instant) -> Option<Duration> {
        let window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let (start, failures) = (*window)?;
        let left = WINDOW.checked_sub(now.saturating_duration_since(start))?;
        (failures >= FAILURES && !left.is_zero()).then_some(left)
    }

    /// Counts a wrong token at `now`.
    pub fn failed(&self, now: Instant) {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        match window.as_mut() {
            Some((start, failures)) if now.saturating_duration_since(*start) < WINDOW => {
                *failures += 1;
            }
            _ => *window = Some((now, 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_close_logins_until_the_window_ends() {
        let limit = LoginLimit::default();
        let start = Instant::now();
        for i in 0..FAILURES {
            assert_eq!(limit.wait(start), None, "after {i} failures");
            limit.failed(start);
        }
        let wait = limit.wait(start + Duration::from_secs(20));
        assert_eq!(wait, Some(Duration::from_secs(40)));
        assert_eq!(limit.wait(start + WINDOW), None, "a new window");
        limit.failed(start + WINDOW);
        assert_eq!(
            limit.wait(start + WINDOW),
            None,
            "one failure in the new window"
        );
    }
}
