//! One way to wait before trying Redis again: jittered exponential back-off (100 ms doubling
//! to 5 s, each delay drawn in [d, 2d)), so that replicas that lost Redis together do not
//! come back in step. Used by the router's workers and by start-up.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::sync::watch;

/// The first delay.
pub const MIN_DELAY: Duration = Duration::from_millis(100);
/// The longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// Delays between attempts of one operation; [`Retry::reset`] after a success.
#[derive(Debug)]
pub struct Retry {
    delays: ExponentialBackoff,
}

impl Default for Retry {
    fn default() -> Self {
        Self::new()
    }
}

impl Retry {
    /// A fresh sequence of delays.
    pub fn new() -> Self {
        Self {
            delays: builder().build(),
        }
    }

    /// Starts over from the shortest delay.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(MAX_DELAY)
    }

    /// Waits the next delay; `true` when `shutdown` was requested meanwhile (or before).
    pub async fn wait(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let delay = self.next_delay();
        let stopped = tokio::select! {
            () = tokio::time::sleep(delay) => false,
            _ = shutdown.wait_for(|s| *s) => true,
        };
        stopped || *shutdown.borrow()
    }
}

fn builder() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_up_to_the_ceiling_and_start_over_after_a_reset() {
        let mut r = Retry::new();
        let delays: Vec<Duration> = (0..12).map(|_| r.next_delay()).collect();
        assert!(
            delays[0] >= MIN_DELAY && delays[0] < 2 * MIN_DELAY,
            "{delays:?}"
        );
        assert!(delays[3] >= 8 * MIN_DELAY, "{delays:?}");
        assert!(delays.iter().all(|d| *d <= 2 * MAX_DELAY), "{delays:?}");
        assert!(delays[11] >= MAX_DELAY, "{delays:?}");
        // Jitter: two sequences differ somewhere.
        let other: Vec<Duration> = (0..12).map(|_| Retry::new().next_delay()).collect();
        assert!(other.iter().any(|d| *d != other[0]), "{other:?}");
        r.reset();
        assert!(r.next_delay() < 2 * MIN_DELAY);
    }
}
