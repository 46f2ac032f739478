//! How hard to try on a side: the retry policy, one request's retry state
//! across endpoints (backoff, the attempt and no-progress bounds), and the
//! notices that say out loud when an endpoint stops answering.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::classify::Failure;

/// How hard to try before giving up on a side.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per request, over all endpoints, for failures that come back
    /// fast (refused connections, leader changes).
    pub max_attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    /// How long one request may go unanswered before it is abandoned and
    /// tried on the next endpoint. Measured: plan, apply and a no-op rerun
    /// of 100,000 keys and 20 values of 1 MB through a 50 ms round trip
    /// answered every request within 0.69 s, and etcd gives up on a
    /// proposal itself after about 7 s: 5 s finds a hung member fast without
    /// abandoning slow but working requests.
    pub request_timeout: Duration,
    /// How long one request may go without an answer from any endpoint,
    /// retries included, before the run fails (`--stall-timeout`).
    pub stall_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(3),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        }
    }
}

/// The default `--request-timeout` (see [`RetryPolicy::request_timeout`]).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The default `--stall-timeout`: six unanswered request timeouts.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

impl RetryPolicy {
    /// For probes that report rather than wait: few attempts, short timeouts.
    pub fn quick() -> Self {
        Self {
            max_attempts: 2,
            connect_timeout: Duration::from_secs(2),
            stall_timeout: Duration::from_secs(10),
            ..Self::default()
        }
    }

    /// This policy, with timeouts no longer than the quick one's.
    pub fn quicker(&self) -> Self {
        let quick = Self::quick();
        Self {
            request_timeout: self.request_timeout.min(quick.request_timeout),
            connect_timeout: self.connect_timeout.min(quick.connect_timeout),
            stall_timeout: self.stall_timeout.min(quick.stall_timeout),
            ..quick
        }
    }
}

/// One request's retries so far.
pub(super) struct Attempts {
    started: Instant,
    pub attempt: u32,
    backoff: Duration,
    /// The most telling failure so far, and where: a TLS mismatch on one
    /// endpoint says more than a timeout on another.
    pub specific: Option<(Failure, etcd_client::Error, String)>,
    /// Endpoints that failed in a way retrying cannot fix (TLS mismatch).
    hopeless: Vec<bool>,
}

/// What to do after a failed attempt.
pub(super) enum Next {
    /// Try again at once (another endpoint) or after `Duration`.
    Retry(Option<Duration>),
    /// Give up: every endpoint is hopeless, or out of attempts.
    GiveUp,
    /// Give up: no answer for the whole stall timeout.
    Stalled(Duration),
}

impl Attempts {
    pub fn new(policy: &RetryPolicy, endpoints: usize) -> Self {
        Self {
            started: Instant::now(),
            attempt: 0,
            backoff: policy.first_backoff,
            specific: None,
            hopeless: vec![false; endpoints],
        }
    }

    /// Records a failure of endpoint `i` that another endpoint or a later
    /// try might not have, and says what to do next.
    pub fn after(
        &mut self,
        policy: &RetryPolicy,
        i: usize,
        kind: Failure,
        err: etcd_client::Error,
        url: &str,
    ) -> Next {
        if kind != Failure::Transient {
            self.hopeless[i] = true;
            self.specific = Some((kind, err, url.to_string()));
        } else if self
            .specific
            .as_ref()
            .is_none_or(|s| s.0 == Failure::Transient)
        {
            self.specific = Some((kind, err, url.to_string()));
        }
        if self.hopeless.iter().all(|&h| h) || self.attempt >= policy.max_attempts {
            return Next::GiveUp;
        }
        let elapsed = self.started.elapsed();
        if elapsed >= policy.stall_timeout {
            return Next::Stalled(elapsed);
        }
        let n = self.hopeless.len() as u32;
        if !self.attempt.is_multiple_of(n) {
            return Next::Retry(None);
        }
        // A full round failed: back off, but never past the stall bound.
        let wait = self.backoff.min(policy.stall_timeout - elapsed);
        self.backoff = (self.backoff * 2).min(policy.max_backoff);
        Next::Retry(Some(wait))
    }
}

/// Notices already given, so that sixteen parallel readers stuck on one
/// hung member say so once, not sixteen times: the last notice per endpoint.
#[derive(Default)]
pub(super) struct Notices {
    last: Mutex<Vec<Option<Instant>>>,
}

/// How often the same endpoint's failure is said again.
const NOTICE_EVERY: Duration = Duration::from_secs(5);

impl Notices {
    /// Whether a failure at endpoint `i` is news.
    pub fn fresh(&self, i: usize) -> bool {
        let Ok(mut last) = self.last.lock() else {
            return true;
        };
        if last.len() <= i {
            last.resize(i + 1, None);
        }
        let now = Instant::now();
        let fresh = last[i].is_none_or(|at| now.duration_since(at) >= NOTICE_EVERY);
        if fresh {
            last[i] = Some(now);
        }
        fresh
    }
}

/// "5 s", "0.4 s": seconds as a person reads them.
pub fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 10.0 || (s - s.round()).abs() < 0.05 {
        format!("{} s", s.round())
    } else {
        format!("{s:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err() -> etcd_client::Error {
        etcd_client::Error::InvalidArgs("Timeout expired".into())
    }

    #[test]
    fn backs_off_after_each_round_and_stops_at_the_bounds() {
        let policy = RetryPolicy {
            max_attempts: 5,
            ..RetryPolicy::default()
        };
        let mut a = Attempts::new(&policy, 2);
        a.attempt = 1;
        assert!(matches!(
            a.after(&policy, 0, Failure::Transient, err(), "a"),
            Next::Retry(None)
        ));
        a.attempt = 2;
        assert!(matches!(
            a.after(&policy, 1, Failure::Transient, err(), "b"),
            Next::Retry(Some(_))
        ));
        a.attempt = 5;
        assert!(matches!(
            a.after(&policy, 0, Failure::Transient, err(), "a"),
            Next::GiveUp
        ));
        let stalled = RetryPolicy {
            stall_timeout: Duration::ZERO,
            ..RetryPolicy::default()
        };
        let mut a = Attempts::new(&stalled, 1);
        a.attempt = 1;
        assert!(matches!(
            a.after(&stalled, 0, Failure::Transient, err(), "a"),
            Next::Stalled(_)
        ));
    }

    #[test]
    fn one_notice_per_endpoint_per_interval() {
        let n = Notices::default();
        assert!(n.fresh(0));
        assert!(!n.fresh(0));
        assert!(n.fresh(1));
        assert!(
            !n.fresh(0),
            "per endpoint: another endpoint's notice does not renew it"
        );
        assert!(!n.fresh(1));
        assert_eq!(seconds(Duration::from_secs(5)), "5 s");
        assert_eq!(seconds(Duration::from_millis(400)), "0.4 s");
    }
}
