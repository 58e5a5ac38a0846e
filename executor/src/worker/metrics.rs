//! What a run counts and shows: the counters every piece of the loop bumps, the
//! [`RunStats`] that `serve` returns, the throughput log line, and the
//! CloudWatch Embedded Metric Format (EMF) lines.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::report::Outcome;
use common::transfer::Done;
use tokio_util::sync::CancellationToken;

use super::{Shared, StopReason};

/// Counters of one run (what the final summary prints).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunStats {
    /// Keys finished, any outcome (failed included).
    pub keys: u64,
    /// Bytes written or compared.
    pub bytes: u64,
    /// Keys parked in the DLQ.
    pub failed: u64,
    /// Keys per outcome name (`copied`, `source-missing`, ...).
    pub by_outcome: BTreeMap<String, u64>,
    /// Messages deleted after all their keys were done or parked.
    pub messages_done: u64,
    /// Messages made visible again (shutdown, or a DLQ send that failed), or
    /// found back in their queue at delete time (stale receipt): never done.
    pub messages_returned: u64,
    /// Messages whose visibility could not be extended past SQS's 12-hour cap:
    /// they were redelivered while their keys ran (the keys re-run idempotently).
    pub visibility_limit_reached: u64,
    /// Undecodable bodies forwarded to the DLQ.
    pub bad_messages: u64,
    /// New DLQ messages sent for failed keys.
    pub dlq_messages: u64,
    /// DLQ messages this run parked itself and therefore did not work again.
    pub held: u64,
    /// Why the loop stopped.
    pub stopped_by: StopReason,
    /// Why the circuit breaker opened (`stopped_by` is then `CircuitOpen`).
    pub circuit: Option<super::Tripped>,
    /// From the first message received to the last key finished: the time the
    /// executor was working, without start-up or the `--until-empty` idle checks.
    pub busy: Duration,
}

/// The live counters behind [`RunStats`] and the metrics (one set per `serve`).
#[derive(Debug, Default)]
pub(super) struct Counters {
    keys: AtomicU64,
    bytes: AtomicU64,
    failed: AtomicU64,
    by_outcome: Mutex<BTreeMap<&'static str, u64>>,
    pub(super) messages_done: AtomicU64,
    pub(super) messages_returned: AtomicU64,
    pub(super) visibility_limit_reached: AtomicU64,
    pub(super) bad_messages: AtomicU64,
    pub(super) dlq_messages: AtomicU64,
    /// Sum of per-key durations, for the EMF latency metric.
    latency_ms: AtomicU64,
    /// Failed keys by error class, for the EMF failure metric.
    failures_by_class: Mutex<BTreeMap<String, u64>>,
    /// First message received and last key finished: the busy span the summary reports.
    span: Mutex<(Option<Instant>, Option<Instant>)>,
}

impl Counters {
    /// A message was received: the busy span starts at the first one.
    pub(super) fn mark_received(&self) {
        let mut span = self.span.lock().expect("span lock");
        span.0.get_or_insert_with(Instant::now);
    }

    /// Count one finished key (its outcome, bytes or error class, and how long
    /// it took); the busy span ends at the last one.
    pub(super) fn count_key(&self, result: &common::Result<Done>, took: Duration) {
        self.keys.fetch_add(1, Ordering::Relaxed);
        self.latency_ms
            .fetch_add(took.as_millis() as u64, Ordering::Relaxed);
        self.span.lock().expect("span lock").1 = Some(Instant::now());
        let outcome = match result {
            Ok(done) => {
                self.bytes.fetch_add(done.bytes, Ordering::Relaxed);
                done.outcome
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                *self
                    .failures_by_class
                    .lock()
                    .expect("failures lock")
                    .entry(e.class.clone())
                    .or_default() += 1;
                Outcome::Failed
            }
        };
        *self
            .by_outcome
            .lock()
            .expect("outcome lock")
            .entry(outcome.as_str())
            .or_default() += 1;
    }

    /// From the first message received to the last key finished (zero before both).
    fn busy(&self) -> Duration {
        match *self.span.lock().expect("span lock") {
            (Some(first), Some(last)) => last.saturating_duration_since(first),
            _ => Duration::ZERO,
        }
    }
}

impl Shared {
    /// The run's counters as they are now, with why it stopped.
    pub(super) fn stats(&self, stopped_by: StopReason) -> RunStats {
        let c = &self.counters;
        RunStats {
            keys: c.keys.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            by_outcome: c
                .by_outcome
                .lock()
                .expect("outcome lock")
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            messages_done: c.messages_done.load(Ordering::Relaxed),
            messages_returned: c.messages_returned.load(Ordering::Relaxed),
            visibility_limit_reached: c.visibility_limit_reached.load(Ordering::Relaxed),
            bad_messages: c.bad_messages.load(Ordering::Relaxed),
            dlq_messages: c.dlq_messages.load(Ordering::Relaxed),
            held: self.held.lock().expect("held lock").len() as u64,
            stopped_by,
            circuit: self.breaker.tripped(),
            busy: c.busy(),
        }
    }
}

/// Log a throughput line every `progress_interval` (and, with `emf`, print the
/// interval's metrics as CloudWatch Embedded Metric Format lines on stdout).
pub(super) async fn progress(shared: Arc<Shared>, stop: CancellationToken) {
    let every = shared.settings.progress_interval;
    let mut last = Snapshot::default();
    let mut t0 = Instant::now();
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(every) => false,
        };
        let now = Snapshot::take(&shared.counters);
        if shared.settings.emf {
            let ts = chrono::Utc::now().timestamp_millis();
            for line in emf_lines(&shared.settings.mode, ts, &last, &now) {
                println!("{line}");
            }
        }
        if stopping {
            return;
        }
        let secs = t0.elapsed().as_secs_f64().max(0.001);
        let in_flight = shared.settings.concurrency - shared.sem.available_permits();
        tracing::info!(
            objects_per_s = format!("{:.1}", (now.keys - last.keys) as f64 / secs),
            mb_per_s = format!("{:.2}", (now.bytes - last.bytes) as f64 / secs / 1e6),
            in_flight,
            queued = shared.outstanding().saturating_sub(in_flight),
            done = now.keys,
            failed = now.failed,
            "throughput"
        );
        (last, t0) = (now, Instant::now());
    }
}

/// Counter values at one moment, to compute an interval's metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Keys finished, any outcome.
    pub keys: u64,
    /// Bytes written or compared.
    pub bytes: u64,
    /// Keys failed.
    pub failed: u64,
    /// Sum of the finished keys' durations.
    pub latency_ms: u64,
    /// Failed keys by error class.
    pub failures_by_class: BTreeMap<String, u64>,
}

impl Snapshot {
    fn take(c: &Counters) -> Snapshot {
        Snapshot {
            keys: c.keys.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            latency_ms: c.latency_ms.load(Ordering::Relaxed),
            failures_by_class: c.failures_by_class.lock().expect("failures lock").clone(),
        }
    }
}

/// CloudWatch namespace of the executor's metrics (the dashboard reads it).
pub const EMF_NAMESPACE: &str = "S3Migration";

/// The EMF lines for the interval between two snapshots: one with `Objects`,
/// `Bytes`, `Failures` and `ObjectLatencyMs` (mean per object) by `Mode`, and
/// one `Failures` line per error class by `Mode` and `ErrorClass`. The ECS log
/// driver turns them into CloudWatch metrics with no agent.
pub fn emf_lines(mode: &str, timestamp_ms: i64, before: &Snapshot, now: &Snapshot) -> Vec<String> {
    let objects = now.keys - before.keys;
    let latency = (now.latency_ms - before.latency_ms)
        .checked_div(objects)
        .unwrap_or(0);
    let mut lines = vec![serde_json::json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": EMF_NAMESPACE,
                "Dimensions": [["Mode"]],
                "Metrics": [
                    {"Name": "Objects", "Unit": "Count"},
                    {"Name": "Bytes", "Unit": "Bytes"},
                    {"Name": "Failures", "Unit": "Count"},
                    {"Name": "ObjectLatencyMs", "Unit": "Milliseconds"}
                ]
            }]
        },
        "Mode": mode,
        "Objects": objects,
        "Bytes": now.bytes - before.bytes,
        "Failures": now.failed - before.failed,
        "ObjectLatencyMs": latency,
    })
    .to_string()];
    for (class, n) in &now.failures_by_class {
        let d = n - before.failures_by_class.get(class).copied().unwrap_or(0);
        if d == 0 {
            continue;
        }
        lines.push(
            serde_json::json!({
                "_aws": {
                    "Timestamp": timestamp_ms,
                    "CloudWatchMetrics": [{
                        "Namespace": EMF_NAMESPACE,
                        "Dimensions": [["Mode", "ErrorClass"]],
                        "Metrics": [{"Name": "Failures", "Unit": "Count"}]
                    }]
                },
                "Mode": mode,
                "ErrorClass": class,
                "Failures": d,
            })
            .to_string(),
        );
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_lines_carry_the_interval_and_failures_by_class() {
        let before = Snapshot {
            keys: 10,
            bytes: 100,
            failed: 1,
            latency_ms: 50,
            ..Snapshot::default()
        };
        let mut now = Snapshot {
            keys: 14,
            bytes: 500,
            failed: 3,
            latency_ms: 90,
            ..Snapshot::default()
        };
        now.failures_by_class.insert("AccessDenied".into(), 2);
        let lines = emf_lines("copy", 1_700_000_000_000, &before, &now);
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "S3Migration"
        );
        assert_eq!(
            (
                v["Objects"].as_u64(),
                v["Bytes"].as_u64(),
                v["Failures"].as_u64()
            ),
            (Some(4), Some(400), Some(2))
        );
        assert_eq!(v["ObjectLatencyMs"], 10);
        assert_eq!(v["Mode"], "copy");
        let f: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(
            (f["ErrorClass"].as_str(), f["Failures"].as_u64()),
            (Some("AccessDenied"), Some(2))
        );
    }
}
