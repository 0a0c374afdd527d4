//! The one periodic helper every service runs on, and the stop signal they share.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

/// How often a service runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// Again this long after each pass ends.
    Every(Duration),
    /// Just after every whole second of the wall clock: schedules' ticks fall on whole seconds,
    /// so a tick is fired within milliseconds of its instant.
    WholeSeconds,
}

impl Cadence {
    /// How long to wait after a pass, from now.
    fn pause(self) -> Duration {
        match self {
            Self::Every(period) => period,
            Self::WholeSeconds => {
                let into_second = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .subsec_millis();
                Duration::from_millis(u64::from(1000 - into_second) + 5)
            }
        }
    }
}

/// Runs `pass` now and then on `cadence` until `stop` completes; a pass in progress finishes
/// first. A pass reports its own failures (they never end the loop).
pub async fn every<F, Fut>(cadence: Cadence, stop: impl Future<Output = ()>, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut stop = std::pin::pin!(stop);
    loop {
        pass().await;
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(cadence.pause()) => {}
        }
    }
}

/// Tells every loop holding a [`Stop`] to finish what it holds and return.
#[derive(Debug)]
pub struct Stopper(watch::Sender<bool>);

/// The signal a loop waits on; clones all see the one [`Stopper`].
#[derive(Debug, Clone)]
pub struct Stop(watch::Receiver<bool>);

/// A new signal: the stopper and what loops wait on.
pub fn stop_signal() -> (Stopper, Stop) {
    let (sender, receiver) = watch::channel(false);
    (Stopper(sender), Stop(receiver))
}

impl Stopper {
    /// Stops every loop holding a [`Stop`] of this signal.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl Stop {
    /// Completes once stopped (or once the stopper is gone: no one can stop it any more).
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut receiver = self.0.clone();
        async move {
            let _ = receiver.wait_for(|stopped| *stopped).await;
        }
    }

    /// True once stopped.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_loop_passes_at_once_then_on_its_cadence_until_stopped() {
        let (stopper, stop) = stop_signal();
        let passes = std::sync::atomic::AtomicU32::new(0);
        let looping = every(
            Cadence::Every(Duration::from_secs(10)),
            stop.wait(),
            || async {
                passes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            },
        );
        let stopping = async {
            tokio::time::sleep(Duration::from_secs(25)).await;
            stopper.stop();
        };
        tokio::join!(looping, stopping);
        // At 0, 10 and 20 s; stopped at 25 s while waiting.
        assert_eq!(passes.into_inner(), 3);
        assert!(stop.is_stopped());
    }

    #[test]
    fn whole_seconds_wait_past_the_next_second() {
        let pause = Cadence::WholeSeconds.pause();
        assert!(pause > Duration::from_millis(5) && pause <= Duration::from_millis(1005));
    }
}
