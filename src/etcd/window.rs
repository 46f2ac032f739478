//! An adaptive limit on requests in flight to one side, so that neither a
//! 0.1 ms nor a 50 ms round trip needs a flag to run near what the server
//! and the link allow.
//!
//! It follows throughput, not latency: etcd batches what is in flight, so
//! its latency rises with the window long before its throughput stops
//! rising (measured: 128 writes in flight through a 50 ms link took four
//! times the round trip each, and finished sooner than 64). The window
//! starts small and doubles each epoch while throughput grows by a tenth
//! (slow start). After that it probes: one epoch a quarter wider, one a
//! fifth narrower, keeping the wider one only when it is faster and the
//! narrower one whenever it is not slower, so it settles at the knee and
//! does not load a busy cluster for nothing. A failed request halves it.
//! An epoch is as many completions as the window is wide (about one round
//! trip): the first half lets the new width take hold, the second half is
//! measured. The caller's
//! `--concurrency` is the cap.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

/// Requests in flight when a window opens: a raw writer gained up to 128
/// in flight even on loopback (examples/bench.sh), and slow start from
/// here reaches 128 in one round trip on a long link.
const INITIAL: usize = 64;

/// Throughput gain that keeps slow start doubling.
const SLOW_START_GAIN: f64 = 1.05;

/// Throughput gain that keeps a wider probe.
const WIDER_GAIN: f64 = 1.05;

/// Throughput a narrower probe may lose and still be kept.
const NARROWER_LOSS: f64 = 0.97;

/// Completions an epoch measures at the least.
const MIN_EPOCH: usize = 8;

pub struct Window {
    cap: usize,
    state: Mutex<State>,
    room: Notify,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    SlowStart,
    /// Measuring the current width, before probing `next`.
    Hold,
    Wider,
    Narrower,
}

#[derive(Debug)]
struct State {
    limit: usize,
    in_flight: usize,
    phase: Phase,
    /// The width and throughput to go back to when a probe loses.
    base: (usize, f64),
    /// Whether the next probe goes narrower (they alternate).
    narrower_next: bool,
    /// Completions in this epoch, and when its measured half began.
    done: usize,
    measured_from: Option<(Instant, usize)>,
    /// The highest limit reached, for -v.
    peak: usize,
}

/// One request's place in the window; [`Permit::done`] records how it went.
/// Dropped without it (a cancelled request), it only frees the place.
pub struct Permit {
    window: Arc<Window>,
}

impl Window {
    /// A window of at most `cap` requests in flight.
    pub fn new(cap: usize) -> Arc<Window> {
        let cap = cap.max(1);
        Arc::new(Window {
            cap,
            state: Mutex::new(State::fresh(cap)),
            room: Notify::new(),
        })
    }

    /// The current limit (at least 1, at most the cap).
    pub fn limit(&self) -> usize {
        self.state.lock().map_or(1, |s| s.limit.clamp(1, self.cap))
    }

    /// The highest limit this window reached.
    pub fn peak(&self) -> usize {
        self.state.lock().map_or(1, |s| s.peak)
    }

    /// Waits for a place in the window.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        loop {
            let notified = self.room.notified();
            if self.try_take() {
                return Permit {
                    window: self.clone(),
                };
            }
            notified.await;
        }
    }

    /// Takes a place if one is free.
    fn try_take(&self) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return true;
        };
        if s.in_flight >= s.limit.clamp(1, self.cap) {
            return false;
        }
        s.in_flight += 1;
        true
    }

    fn release(&self, sample: Option<bool>) {
        if let Ok(mut s) = self.state.lock() {
            s.in_flight = s.in_flight.saturating_sub(1);
            if let Some(ok) = sample {
                s.learn(Instant::now(), ok, self.cap);
            }
        }
        self.room.notify_waiters();
    }
}

impl State {
    fn fresh(cap: usize) -> State {
        let limit = INITIAL.min(cap);
        State {
            limit,
            in_flight: 0,
            phase: if limit < cap {
                Phase::SlowStart
            } else {
                Phase::Hold
            },
            base: (limit, 0.0),
            narrower_next: false,
            done: 0,
            measured_from: None,
            peak: limit,
        }
    }

    /// One request finished at `now`.
    fn learn(&mut self, now: Instant, ok: bool, cap: usize) {
        if !ok {
            self.set(Phase::Hold, (self.limit / 2).max(1));
            return;
        }
        self.done += 1;
        // As many completions as the window is wide, about one round trip:
        // the first half lets the new width take hold, the second is measured.
        let epoch = self.limit.max(MIN_EPOCH);
        if self.done == epoch / 2 {
            self.measured_from = Some((now, self.done));
        }
        let Some((from, at)) = self.measured_from else {
            return;
        };
        if self.done < epoch {
            return;
        }
        let seconds = now.duration_since(from).as_secs_f64().max(1e-9);
        let rate = (self.done - at) as f64 / seconds;
        self.next(rate, cap);
    }

    /// The end of an epoch that ran at `rate` completions per second.
    fn next(&mut self, rate: f64, cap: usize) {
        let (base_limit, base_rate) = self.base;
        match self.phase {
            Phase::SlowStart if rate >= base_rate * SLOW_START_GAIN => {
                self.base = (self.limit, rate);
                let wider = (self.limit * 2).min(cap);
                let phase = if wider == cap {
                    Phase::Hold
                } else {
                    Phase::SlowStart
                };
                self.set(phase, wider);
            }
            Phase::SlowStart => self.set(Phase::Hold, base_limit),
            Phase::Hold => {
                self.base = (self.limit, rate);
                self.probe(cap);
            }
            Phase::Wider if rate >= base_rate * WIDER_GAIN => {
                self.base = (self.limit, rate);
                self.probe(cap);
            }
            Phase::Narrower if rate >= base_rate * NARROWER_LOSS => {
                self.base = (self.limit, rate);
                self.probe(cap);
            }
            Phase::Wider | Phase::Narrower => self.set(Phase::Hold, base_limit),
        }
    }

    /// Starts the next probe from the current width.
    fn probe(&mut self, cap: usize) {
        let narrower = (self.limit * 4 / 5).max(1);
        let wider = (self.limit * 5 / 4).max(self.limit + 1).min(cap);
        self.narrower_next = !self.narrower_next;
        if (self.narrower_next || wider == self.limit) && narrower < self.limit {
            self.set(Phase::Narrower, narrower);
        } else if wider > self.limit {
            self.set(Phase::Wider, wider);
        } else {
            self.set(Phase::Hold, self.limit);
        }
    }

    fn set(&mut self, phase: Phase, limit: usize) {
        self.phase = phase;
        self.limit = limit.max(1);
        self.done = 0;
        self.measured_from = None;
        self.peak = self.peak.max(self.limit);
    }
}

impl Permit {
    /// Records how the request went and frees its place.
    pub fn done(self, ok: bool) {
        let window = self.window.clone();
        std::mem::forget(self);
        window.release(Some(ok));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.window.release(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A server that answers `capacity` requests per second at most, each
    /// after `rtt` at the least: `limit / rtt` per second below the knee.
    /// Returns the limit after `epochs` worth of completions.
    fn run(cap: usize, rtt: f64, capacity: f64, completions: usize) -> State {
        let mut s = State::fresh(cap);
        let mut now = Instant::now();
        for _ in 0..completions {
            let rate = (s.limit as f64 / rtt).min(capacity);
            now += Duration::from_secs_f64(1.0 / rate);
            s.learn(now, true, cap);
        }
        s
    }

    #[test]
    fn fills_a_long_link_up_to_the_cap() {
        // 50 ms round trip, a server far from full: the cap is the limit.
        let s = run(128, 0.05, 1e9, 5_000);
        assert!(s.limit >= 100, "{s:?}");
        assert!(s.peak <= 128, "{s:?}");
    }

    #[test]
    fn settles_near_the_knee_of_a_busy_server() {
        // 2 ms round trip, 4,000 requests per second: the knee is at 8.
        let s = run(128, 0.002, 4_000.0, 20_000);
        assert!((6..=16).contains(&s.limit), "{s:?}");
    }

    #[test]
    fn halves_on_failure_and_never_drops_below_one() {
        let mut s = run(64, 0.05, 1e9, 2_000);
        let before = s.limit;
        s.learn(Instant::now(), false, 64);
        assert_eq!(s.limit, (before / 2).max(1));
        for _ in 0..20 {
            s.learn(Instant::now(), false, 64);
        }
        assert_eq!(s.limit, 1);
    }

    #[tokio::test]
    async fn never_lets_more_than_the_limit_in() {
        let w = Window::new(3);
        let a = w.acquire().await;
        let b = w.acquire().await;
        let c = w.acquire().await;
        assert!(!w.try_take());
        drop(a);
        let d = w.acquire().await;
        b.done(true);
        c.done(false);
        d.done(true);
        assert_eq!(w.state.lock().map(|s| s.in_flight).ok(), Some(0));
    }
}
