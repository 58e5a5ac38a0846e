//! Retrying with exponential backoff, in one place: whole-object transfers,
//! [`crate::queue::send_all`], report files and the executor's receive loop
//! all wait by the same rules.
//!
//! Three layers, each usable alone:
//! - [`Backoff`]: an endless iterator of jittered, capped delays with
//!   [`Backoff::reset`], for loops that never give up (the receive loop);
//! - [`Attempts`]: one operation's attempts under a [`Policy`], bounded by a
//!   number of attempts **and** a time budget, for loops that change what they
//!   retry between attempts (`send_all` keeps only the failed entries);
//! - [`retry`]: "call this until it succeeds, fails for good, or the attempts
//!   or the time run out", with the attempt count in the error.
//!
//! Jitter is *equal jitter*: each delay is drawn uniformly from the upper half
//! of its step's ceiling, `[c/2, c)` with `c = min(max_delay, 2ⁿ⁺¹ · min_delay)`
//! for the n-th retry (n from 0). Not full jitter (`[0, c)`): that can retry a
//! throttled service (`SlowDown`, 503) almost at once, whereas the upper half
//! always keeps at least half of the backoff while still spreading the
//! executors that failed together. Starting the ceilings at `2 · min_delay`
//! keeps `min_delay` the floor of the first delay, and the uncapped steps are
//! the same `[m·2ⁿ, m·2ⁿ⁺¹)` as the `backon` schedules this module replaced;
//! unlike `backon`, whose jitter added up to 100 % on top, `max_delay` is a
//! hard cap.
//!
//! Time comes from a [`Clock`] and randomness from any [`rand::RngCore`], both
//! injectable: production uses [`TokioClock`] (so `tokio::time::pause()` tests
//! work) and a [`SmallRng`] seeded from the thread RNG.

use std::future::Future;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use tokio::time::Instant;

/// How often and how long to retry; every figure of the system's retries is a
/// named constructor here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The first retry waits between this and twice this (see the module doc).
    pub min_delay: Duration,
    /// No delay is longer than this.
    pub max_delay: Duration,
    /// Attempts in all, the first one included; 0 counts as 1.
    pub max_attempts: u32,
    /// No new attempt starts later than this after the first one started (a
    /// running attempt is never cut short).
    pub max_elapsed: Duration,
}

impl Policy {
    /// Whole-object transfer attempts (re-planned from a fresh HEAD):
    /// 0.5 s → 20 s, 3 attempts, within 12 hours.
    ///
    /// The budget counts the attempts themselves, and is SQS's cap on how
    /// long one receive can hold a message (`queue::MAX_TOTAL_VISIBILITY`):
    /// past it the message is redelivered whatever the executor does, so a
    /// retry that would start later is pointless. Below it, only the attempt
    /// count decides: a giant object whose failed attempt took hours is
    /// still started over, as before this bound existed.
    pub const fn object() -> Policy {
        Policy {
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
            max_attempts: 3,
            max_elapsed: crate::queue::MAX_TOTAL_VISIBILITY,
        }
    }

    /// The failed entries of one SendMessageBatch in `send_all`:
    /// 0.2 s → 10 s, 8 attempts, within 1 minute.
    ///
    /// The 7 delays add up to at most 32.4 s, so a minute leaves room for 8
    /// calls that fail fast; calls that each hang in the SDK's own retries
    /// mean SQS is down, and the commander (or the executor parking a key)
    /// should say so within a minute rather than after 8 such calls.
    pub const fn send() -> Policy {
        Policy {
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_attempts: 8,
            max_elapsed: Duration::from_secs(60),
        }
    }

    /// Writing one report file: 1 s → 60 s, 6 attempts, within 2 minutes.
    ///
    /// The 5 delays alone add up to between 31 s and 62 s, so the budget is
    /// 2 minutes rather than 1: all 6 PUTs fit when they fail fast. Meanwhile
    /// new rows wait in the writer's channel, so the bound also caps how long
    /// a store outage can stall the workers recording outcomes.
    pub const fn report_flush() -> Policy {
        Policy {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_attempts: 6,
            max_elapsed: Duration::from_secs(2 * 60),
        }
    }

    /// The executor's receive loop: 0.5 s → 30 s, and it never gives up
    /// (unbounded attempts and time; use its [`Policy::backoff`]).
    pub const fn receive() -> Policy {
        Policy {
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_attempts: u32::MAX,
            max_elapsed: Duration::MAX,
        }
    }

    /// This policy's delays, with a fresh production RNG.
    pub fn backoff(&self) -> Backoff {
        self.backoff_with(SmallRng::from_rng(&mut rand::rng()))
    }

    /// This policy's delays, drawn with `rng` (fixed in tests).
    pub fn backoff_with<R: RngCore>(&self, rng: R) -> Backoff<R> {
        Backoff {
            min_delay: self.min_delay,
            max_delay: self.max_delay,
            step: 0,
            rng,
        }
    }

    /// Attempts of one operation starting now, on tokio's clock.
    pub fn attempts(&self) -> Attempts {
        Attempts::with(self, TokioClock, SmallRng::from_rng(&mut rand::rng()))
    }
}

/// An endless iterator of equal-jittered delays, doubling from the policy's
/// `min_delay` and capped at its `max_delay`; it never returns `None`.
#[derive(Debug, Clone)]
pub struct Backoff<R = SmallRng> {
    min_delay: Duration,
    max_delay: Duration,
    /// Retries so far since the start or the last reset.
    step: u32,
    rng: R,
}

impl<R> Backoff<R> {
    /// Start over from the shortest delay (after a success).
    pub fn reset(&mut self) {
        self.step = 0;
    }
}

impl<R: RngCore> Iterator for Backoff<R> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.delay())
    }
}

impl<R: RngCore> Backoff<R> {
    /// The next delay; never runs out (the iterator's `next` without the
    /// `Option`).
    pub fn delay(&mut self) -> Duration {
        // c/2 + c/2 · word / 2⁶⁴, in integers: no float rounding reaches c.
        let half = ceiling(self.min_delay, self.max_delay, self.step) / 2;
        self.step = self.step.saturating_add(1);
        let half_ns = half.as_nanos().min(u64::MAX as u128);
        let jitter_ns = (half_ns * self.rng.next_u64() as u128) >> 64;
        half + Duration::from_nanos(jitter_ns as u64)
    }
}

/// The n-th delay's upper bound: `min(max, 2ⁿ⁺¹ · min)`, without overflow.
fn ceiling(min: Duration, max: Duration, step: u32) -> Duration {
    let factor = 1u32.checked_shl(step.saturating_add(1)).unwrap_or(u32::MAX);
    min.saturating_mul(factor).min(max)
}

/// Where [`Attempts`] read the time and wait.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Instant;
    /// Resolves once `delay` has passed on this clock.
    fn sleep(&self, delay: Duration) -> impl Future<Output = ()> + Send;
}

/// The production clock: `tokio::time`, so paused-time tests skip the waits.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, delay: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(delay)
    }
}

/// Why retrying stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The error was not one to retry.
    NotRetryable,
    /// `max_attempts` attempts were made.
    Attempts,
    /// The next attempt would have started after `max_elapsed`.
    Elapsed,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stop::NotRetryable => "not retryable",
            Stop::Attempts => "no attempts left",
            Stop::Elapsed => "retry time budget spent",
        })
    }
}

/// The last error of an operation that was not retried any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure<E> {
    /// The error of the last attempt.
    pub error: E,
    /// Attempts made, the first one included (≥ 1).
    pub attempts: u32,
    /// Why there was no further attempt.
    pub stop: Stop,
}

/// One operation's attempts under a [`Policy`]: counts them and decides, after
/// each failure, whether there is a next one and how long to wait for it.
/// Create it right before the first attempt: its time budget starts then.
#[derive(Debug)]
pub struct Attempts<C = TokioClock, R = SmallRng> {
    max_attempts: u32,
    max_elapsed: Duration,
    backoff: Backoff<R>,
    clock: C,
    started: Instant,
    count: u32,
}

impl<C: Clock, R: RngCore> Attempts<C, R> {
    /// Attempts under `policy` starting now on `clock`, jittered with `rng`.
    pub fn with(policy: &Policy, clock: C, rng: R) -> Self {
        Attempts {
            max_attempts: policy.max_attempts.max(1),
            max_elapsed: policy.max_elapsed,
            backoff: policy.backoff_with(rng),
            started: clock.now(),
            clock,
            count: 1,
        }
    }

    /// Attempts made or under way, the first one included (≥ 1).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// After a failed attempt: the delay to wait before the next one (which
    /// is then counted), or why there is none. Never waits itself.
    pub fn next_delay(&mut self) -> Result<Duration, Stop> {
        if self.count >= self.max_attempts {
            return Err(Stop::Attempts);
        }
        let delay = self.backoff.delay();
        let elapsed = self.clock.now().saturating_duration_since(self.started);
        if elapsed.saturating_add(delay) > self.max_elapsed {
            return Err(Stop::Elapsed);
        }
        self.count += 1;
        Ok(delay)
    }

    /// Wait `delay` (from [`Attempts::next_delay`]) on this clock.
    pub async fn sleep(&self, delay: Duration) {
        self.clock.sleep(delay).await
    }

    /// Run `op` until it succeeds, fails with an error `when` refuses, or the
    /// attempts or the time run out; `notify` hears each error that will be
    /// retried and the delay before the retry.
    pub async fn retry<T, E, Fut>(
        mut self,
        mut op: impl FnMut() -> Fut,
        when: impl Fn(&E) -> bool,
        mut notify: impl FnMut(&E, Duration),
    ) -> Result<T, Failure<E>>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        loop {
            let error = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let next = match when(&error) {
                true => self.next_delay(),
                false => Err(Stop::NotRetryable),
            };
            match next {
                Ok(delay) => {
                    notify(&error, delay);
                    self.sleep(delay).await;
                }
                Err(stop) => {
                    return Err(Failure {
                        error,
                        attempts: self.count,
                        stop,
                    })
                }
            }
        }
    }
}

/// Run `op` under `policy` on tokio's clock: see [`Attempts::retry`].
pub async fn retry<T, E, Fut>(
    policy: &Policy,
    op: impl FnMut() -> Fut,
    when: impl Fn(&E) -> bool,
    notify: impl FnMut(&E, Duration),
) -> Result<T, Failure<E>>
where
    Fut: Future<Output = Result<T, E>>,
{
    policy.attempts().retry(op, when, notify).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// An RNG whose every draw is the same word: 0 gives the lowest jitter,
    /// `u64::MAX` the highest.
    struct Fixed(u64);

    impl RngCore for Fixed {
        fn next_u32(&mut self) -> u32 {
            (self.0 >> 32) as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            for (d, s) in dst.iter_mut().zip(self.0.to_le_bytes().iter().cycle()) {
                *d = *s;
            }
        }
    }

    /// A clock that never really sleeps: a sleep moves its time forward, and
    /// an operation can move it too ("this attempt took 10 s").
    struct Manual {
        now: Mutex<Instant>,
        slept: Mutex<Vec<Duration>>,
    }

    impl Manual {
        fn new() -> Self {
            Manual {
                now: Mutex::new(Instant::now()),
                slept: Mutex::new(Vec::new()),
            }
        }
        fn advance(&self, d: Duration) {
            *self.now.lock().unwrap() += d;
        }
        fn slept(&self) -> Vec<Duration> {
            self.slept.lock().unwrap().clone()
        }
    }

    impl Clock for &Manual {
        fn now(&self) -> Instant {
            *self.now.lock().unwrap()
        }
        fn sleep(&self, delay: Duration) -> impl Future<Output = ()> + Send {
            self.slept.lock().unwrap().push(delay);
            self.advance(delay);
            std::future::ready(())
        }
    }

    const MS: Duration = Duration::from_millis(1);

    fn policy(max_attempts: u32, max_elapsed: Duration) -> Policy {
        Policy {
            min_delay: 100 * MS,
            max_delay: 1000 * MS,
            max_attempts,
            max_elapsed,
        }
    }

    #[test]
    fn delays_double_from_the_minimum_and_stop_at_the_cap() {
        let p = policy(u32::MAX, Duration::MAX);
        let low: Vec<_> = p.backoff_with(Fixed(0)).take(6).collect();
        assert_eq!(low, [100, 200, 400, 500, 500, 500].map(|m| m * MS));
        let high: Vec<_> = p.backoff_with(Fixed(u64::MAX)).take(6).collect();
        for (d, ceiling) in high.iter().zip([200, 400, 800, 1000, 1000, 1000]) {
            assert!(*d < ceiling * MS && *d > ceiling * MS * 99 / 100, "{d:?}");
        }
        // Far past any shift width: still capped, no overflow.
        let mut b = p.backoff_with(Fixed(u64::MAX));
        assert!(b.nth(200).unwrap() <= p.max_delay);
    }

    #[test]
    fn jitter_stays_in_the_upper_half_of_each_ceiling() {
        let p = Policy::object();
        let mut rng = SmallRng::seed_from_u64(7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            for (step, d) in p.backoff_with(&mut rng).take(8).enumerate() {
                let c = ceiling(p.min_delay, p.max_delay, step as u32);
                assert!(
                    d >= c / 2 && d < c,
                    "step {step}: {d:?} outside [{:?}, {c:?})",
                    c / 2
                );
                assert!(d >= p.min_delay && d <= p.max_delay);
                seen.insert(d);
            }
        }
        assert!(seen.len() > 100, "delays are actually jittered");
    }

    #[test]
    fn reset_starts_over_from_the_shortest_delay() {
        let mut b = policy(u32::MAX, Duration::MAX).backoff_with(Fixed(0));
        assert_eq!(b.by_ref().take(3).last(), Some(400 * MS));
        b.reset();
        assert_eq!(b.next(), Some(100 * MS));
        assert_eq!(b.delay(), 200 * MS);
    }

    #[test]
    fn the_named_policies_keep_their_figures() {
        let figures = |p: Policy| (p.min_delay, p.max_delay, p.max_attempts, p.max_elapsed);
        let s = Duration::from_secs;
        assert_eq!(figures(Policy::object()), (500 * MS, s(20), 3, s(43_200)));
        assert_eq!(figures(Policy::send()), (200 * MS, s(10), 8, s(60)));
        assert_eq!(figures(Policy::report_flush()), (s(1), s(60), 6, s(120)));
        assert_eq!(
            figures(Policy::receive()),
            (500 * MS, s(30), u32::MAX, Duration::MAX)
        );
        // Each budget leaves room for every delay at its longest.
        for p in [Policy::object(), Policy::send(), Policy::report_flush()] {
            let longest: Duration = p
                .backoff_with(Fixed(u64::MAX))
                .take(p.max_attempts as usize - 1)
                .sum();
            assert!(longest < p.max_elapsed, "{p:?}: {longest:?}");
        }
    }

    /// Runs `retry` on a manual clock with the lowest jitter; the operation
    /// fails with the errors of `script` in turn (then succeeds), each
    /// attempt taking `took`. Returns the result and the delays slept.
    async fn run(
        p: Policy,
        script: &[&'static str],
        took: Duration,
    ) -> (Result<u32, Failure<&'static str>>, Vec<Duration>) {
        let clock = &Manual::new();
        let calls = &Mutex::new(0u32);
        let notified = Mutex::new(Vec::new());
        let result = Attempts::with(&p, clock, Fixed(0))
            .retry(
                || async move {
                    clock.advance(took);
                    let mut n = calls.lock().unwrap();
                    *n += 1;
                    match script.get(*n as usize - 1) {
                        Some(e) => Err(*e),
                        None => Ok(*n),
                    }
                },
                |e: &&str| *e != "fatal",
                |_, d| notified.lock().unwrap().push(d),
            )
            .await;
        assert_eq!(
            *notified.lock().unwrap(),
            clock.slept(),
            "notified every wait"
        );
        (result, clock.slept())
    }

    #[tokio::test]
    async fn a_retryable_error_is_retried_until_success() {
        let (r, slept) = run(policy(5, Duration::MAX), &["busy", "busy"], MS).await;
        assert_eq!(r, Ok(3));
        assert_eq!(slept, [100 * MS, 200 * MS]);
    }

    #[tokio::test]
    async fn stops_at_max_attempts_with_the_last_error_and_the_count() {
        let (r, slept) = run(policy(3, Duration::MAX), &["a", "b", "c", "d"], MS).await;
        let want = Failure {
            error: "c",
            attempts: 3,
            stop: Stop::Attempts,
        };
        assert_eq!(r, Err(want));
        assert_eq!(slept.len(), 2);

        let (r, slept) = run(policy(0, Duration::MAX), &["a"], MS).await;
        assert_eq!(r.unwrap_err().attempts, 1, "0 attempts means one");
        assert!(slept.is_empty());
    }

    #[tokio::test]
    async fn a_non_retryable_error_stops_at_once() {
        let (r, slept) = run(policy(5, Duration::MAX), &["busy", "fatal", "busy"], MS).await;
        let want = Failure {
            error: "fatal",
            attempts: 2,
            stop: Stop::NotRetryable,
        };
        assert_eq!(r, Err(want));
        assert_eq!(slept, [100 * MS]);
    }

    #[tokio::test]
    async fn stops_when_the_next_attempt_would_start_after_the_time_budget() {
        // Attempts of 1 s each, delays 100, 200, 400 ms: the third attempt
        // starts at 2.3 s and fails at 3.3 s; waiting 400 ms more would start
        // the fourth at 3.7 s, past the 3.5 s budget.
        let budget = 3500 * MS;
        let (r, slept) = run(policy(10, budget), &["a"; 10], 1000 * MS).await;
        let f = r.unwrap_err();
        assert_eq!((f.error, f.attempts, f.stop), ("a", 3, Stop::Elapsed));
        assert_eq!(slept, [100 * MS, 200 * MS]);

        // A long attempt is not cut short, but it leaves no time for another.
        let (r, slept) = run(policy(10, budget), &["a"], 5000 * MS).await;
        assert_eq!(r.unwrap_err().stop, Stop::Elapsed);
        assert!(slept.is_empty());
    }

    #[tokio::test]
    async fn next_delay_counts_the_attempts_it_grants() {
        let clock = Manual::new();
        let mut a = Attempts::with(&policy(3, Duration::MAX), &clock, Fixed(0));
        assert_eq!(a.count(), 1);
        assert_eq!(a.next_delay(), Ok(100 * MS));
        assert_eq!(a.count(), 2);
        assert_eq!(a.next_delay(), Ok(200 * MS));
        assert_eq!(a.next_delay(), Err(Stop::Attempts));
        assert_eq!(a.count(), 3);
        a.sleep(50 * MS).await;
        assert_eq!(clock.slept(), [50 * MS]);
    }

    #[tokio::test]
    async fn the_production_clock_is_tokio_time() {
        // Real time, kept tiny: the delays are slept on tokio's clock.
        let p = Policy {
            min_delay: MS,
            max_delay: 2 * MS,
            max_attempts: 3,
            max_elapsed: Duration::from_secs(5),
        };
        let start = Instant::now();
        let mut calls = 0;
        let r: Result<(), _> = retry(
            &p,
            || {
                calls += 1;
                std::future::ready(Err::<(), _>("busy"))
            },
            |_| true,
            |_, _| {},
        )
        .await;
        assert_eq!(r.unwrap_err().attempts, 3);
        assert_eq!(calls, 3);
        assert!(start.elapsed() >= 2 * MS, "it waited both delays");
    }
}
