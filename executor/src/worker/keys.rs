//! Running one message's keys: each holds a permit of the global semaphore
//! (none starts after the stop), a panic is caught as a failure, and running
//! keys are aborted when the grace period ends. A finished key is counted,
//! logged and written to the report here.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::message::{Batch, KeyItem};
use common::report::{Outcome, Proof, ReportRow};
use common::transfer::Done;
use common::{Error, ErrorKind};
use futures::FutureExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;

use super::breaker::Verdict;
use super::park::{truncate, MAX_REASON_BYTES};
use super::{KeySlot, Shared};

/// What one key task hands back: the key's index in its batch and its result
/// (`None`: held back by the circuit breaker, so its message is returned).
type KeyResult = (usize, Option<common::Result<Done>>);

impl Shared {
    /// Work every key of `batch` and collect the results by index; `None`: the
    /// key did not finish (not started before the stop, or aborted when the
    /// grace period ended).
    pub(super) async fn work_keys(
        self: &Arc<Self>,
        batch: &Arc<Batch>,
    ) -> Vec<Option<common::Result<Done>>> {
        let tasks = self.start_keys(batch).await;
        self.join_keys(tasks, batch.keys.len()).await
    }

    /// Start one task per key as permits come free, until the stop; the keys
    /// not started are no longer outstanding.
    async fn start_keys(self: &Arc<Self>, batch: &Arc<Batch>) -> JoinSet<KeyResult> {
        let total = batch.keys.len();
        let mut tasks = JoinSet::new();
        let mut started = 0usize;
        for index in 0..total {
            let permit = tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                p = self.sem.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            };
            started += 1;
            tasks.spawn(self.clone().run_key(batch.clone(), index, permit));
        }
        let unstarted = total - started;
        if unstarted > 0 {
            self.release_keys(unstarted);
        }
        tasks
    }

    /// One key task: work the key (a panic is a permanent failure), free the
    /// permit, then record the result.
    async fn run_key(
        self: Arc<Self>,
        batch: Arc<Batch>,
        index: usize,
        permit: OwnedSemaphorePermit,
    ) -> KeyResult {
        let slot = KeySlot(self.clone());
        let item = &batch.keys[index];
        let t0 = Instant::now();
        let result = AssertUnwindSafe(self.worker.work(&batch, item))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(panic_error(&item.key, panic)));
        drop(permit);
        let verdict = self.breaker.observe(&batch, &result);
        if verdict.holds_back() {
            if verdict == Verdict::Opened {
                if let (Some(t), Err(e)) = (self.breaker.tripped(), &result) {
                    tracing::warn!(endpoint = %t.endpoint, error_class = %e.class, error = %e.full_message(),
                        in_a_row = t.in_a_row, "circuit breaker open: every key fails on this endpoint; stop receiving and return the messages held");
                }
                self.stop.cancel();
            }
            tracing::debug!(key = %item.key, "key not parked: the circuit breaker is open");
            drop(slot);
            return (index, None);
        }
        self.record_key(&batch, item, &result, t0.elapsed()).await;
        drop(slot);
        (index, Some(result))
    }

    /// Wait for every key task; when the grace period ends (`hard`), abort
    /// those still running (their slots stay `None`).
    async fn join_keys(
        &self,
        mut tasks: JoinSet<KeyResult>,
        total: usize,
    ) -> Vec<Option<common::Result<Done>>> {
        let mut results: Vec<Option<common::Result<Done>>> = (0..total).map(|_| None).collect();
        let mut aborted = false;
        loop {
            let next = tokio::select! {
                r = tasks.join_next() => r,
                _ = self.hard.cancelled(), if !aborted => {
                    aborted = true;
                    tasks.abort_all();
                    continue;
                }
            };
            match next {
                None => break,
                Some(Ok((index, r))) => results[index] = r,
                Some(Err(_cancelled)) => {}
            }
        }
        results
    }

    /// Counters, the per-key log line and the report row of one finished key.
    async fn record_key(
        &self,
        batch: &Batch,
        item: &KeyItem,
        result: &common::Result<Done>,
        took: Duration,
    ) {
        self.counters.count_key(result, took);
        let mode = self.settings.mode.as_str();
        let prior = item.failure.as_ref().map_or(0, |f| f.attempts);
        let (outcome, class, text, bytes, proof) = match result {
            Ok(done) => {
                log_done(batch, item, mode, done);
                (done.outcome, None, None, done.bytes, done.proof)
            }
            Err(e) => {
                let msg = truncate(&e.described(), MAX_REASON_BYTES);
                tracing::warn!(key = %item.key, source = %batch.source, mode, outcome = "failed",
                    error_class = %e.class, error = %msg, attempts = prior + 1, "key failed; parking it in the dead-letter queue");
                (Outcome::Failed, Some(e.class.clone()), Some(msg), 0, None)
            }
        };
        if let Some(reporter) = &self.reporter {
            reporter
                .record(ReportRow {
                    job_id: batch.job_id.clone(),
                    executor_id: self.settings.executor_id.clone(),
                    source: batch.source.clone(),
                    source_key: item.key.clone(),
                    target: batch.target.clone(),
                    target_key: item.target_key().to_string(),
                    size: item.size.or((bytes > 0).then_some(bytes)),
                    outcome,
                    error_class: class,
                    error_message: text,
                    attempts: prior + 1,
                    duration_ms: took.as_millis() as u64,
                    finished_at: Utc::now(),
                    proof,
                })
                .await;
        }
    }
}

/// The failure of a key whose work panicked: permanent, class `Panic`, the
/// panic's message when it has one.
fn panic_error(key: &str, panic: Box<dyn Any + Send>) -> Error {
    let what = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".to_string());
    Error::new(ErrorKind::Permanent, "Panic", key.to_string(), what)
}

/// The log line of a key that did not fail: skips at info, a vanished source
/// at warn, others at debug (info when the transfer left a note). `proof`
/// is there when the outcome rests on one (the report row's column).
fn log_done(batch: &Batch, item: &KeyItem, mode: &str, done: &Done) {
    let proof = done.proof.map(Proof::as_str);
    match done.outcome {
        Outcome::SkippedIdentical | Outcome::SkippedFiltered | Outcome::TagsUpdated => {
            tracing::info!(key = %item.key, source = %batch.source, mode, outcome = %done.outcome,
                proof, note = done.note.as_deref().unwrap_or(""), "key skipped")
        }
        Outcome::SourceMissing => {
            tracing::warn!(key = %item.key, source = %batch.source, mode,
            outcome = %done.outcome, "source object no longer exists")
        }
        // What `--sync` did to (or left on) the target: always said.
        Outcome::Deleted | Outcome::Kept | Outcome::TargetNewer => {
            tracing::info!(key = %item.key, target = %batch.target, target_key = %item.target_key(),
                mode, outcome = %done.outcome, note = done.note.as_deref().unwrap_or(""), "key done")
        }
        _ => match &done.note {
            Some(note) => {
                tracing::info!(key = %item.key, mode, outcome = %done.outcome, proof, note = %note, "key done")
            }
            None => {
                tracing::debug!(key = %item.key, mode, outcome = %done.outcome, proof, "key done")
            }
        },
    }
}
