//! The receive → work → delete loop.
//!
//! * **Receivers**: the same number of tasks for every queue of the receive order (so
//!   queues are served fairly and a long poll on an empty queue never delays another),
//!   each long-polling only while fewer than `concurrency` received keys are unfinished.
//! * Each message gets a **tracker**: it starts one task per key, each holding a permit
//!   of the global semaphore (`concurrency` keys in flight in the whole process), and
//!   extends the message's visibility every `visibility / 3` while keys run.
//! * When every key is done, failed keys are sent to the DLQ as a new message (keys
//!   with a [`Failure`]); only after that send succeeded is the original deleted. If the
//!   DLQ send fails, the message is made visible again instead: nothing is lost.
//! * A body that is not a known format goes to the DLQ unchanged with `reason` and
//!   `error_class=BadMessage` attributes, then the original is deleted.
//! * Shutdown (`shutdown` token, or `--until-empty` finding the queues empty): stop
//!   receiving, let running keys finish within the grace period, return every message
//!   whose keys are not all done (visibility 0).
//! * Messages received from the DLQ itself (`-d`) are worked like any other; keys
//!   that fail again are parked again as a new DLQ message. A message this process
//!   parked itself is not worked again in the same run: it is *held* (left invisible)
//!   and returned at exit, so a DLQ replay with `--until-empty` ends.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use common::message::{self, Batch, BatchBuilder, Failure, KeyItem};
use common::queue::set::send_all;
use common::queue::{
    attribute_value, Outgoing, Received, WorkQueue, STALE_RECEIPT_CLASS, VISIBILITY_LIMIT_CLASS,
};
use common::report::{Outcome, ReportRow, Reporter};
use common::{Error, ErrorKind};
use futures::FutureExt;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Longest error message kept in a DLQ entry or message attribute (bytes, cut at a char boundary).
pub const MAX_REASON_BYTES: usize = 1024;

/// Bytes kept free under the message size limit for a DLQ message's attributes.
const ATTRIBUTE_ROOM: usize = 1024;

/// What one key that did not fail produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDone {
    /// The key's outcome (anything but `Failed`).
    pub outcome: Outcome,
    /// Bytes written (or compared, in check mode).
    pub bytes: u64,
    /// Extra information worth logging (e.g. "layout not reproducible").
    pub note: Option<String>,
}

/// Works one key of a decoded message. The production implementation resolves the
/// message's stores and calls `common::transfer::process_key`; tests hand in others.
/// `Err` means the key failed for good (after the worker's own retries) and is parked.
#[async_trait]
pub trait KeyWorker: Send + Sync + 'static {
    /// Work `item` of `batch`.
    async fn work(&self, batch: &Batch, item: &KeyItem) -> common::Result<KeyDone>;

    /// Whether a decoded message may be worked at all (e.g. its endpoints are
    /// allowed); `Err` parks the whole message, unchanged, as a BadMessage.
    fn admit(&self, _batch: &Batch) -> common::Result<()> {
        Ok(())
    }
}

/// How the loop behaves; built from flags and config by `run`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Keys in flight in this process (global semaphore size).
    pub concurrency: usize,
    /// Messages per receive call (1–10).
    pub max_receive_num: usize,
    /// Receiver tasks per queue; 0 = automatic (see [`Settings::receivers_per_queue`]).
    pub receivers: usize,
    /// Long-poll wait of one receive call.
    pub wait: Duration,
    /// Visibility timeout asked for on receive, and renewed every third of it.
    pub visibility: Duration,
    /// Pause after a receive call that returned nothing (long polling already waits).
    pub sleep_after_empty: Duration,
    /// Time running keys get after the stop before their messages are returned.
    pub grace: Duration,
    /// Stop once the queues are empty and this process is idle.
    pub until_empty: bool,
    /// Interval between two emptiness checks (`--until-empty` needs two in a row).
    pub empty_check_interval: Duration,
    /// Largest message the DLQ gets (failed keys are split to fit).
    pub max_message_bytes: usize,
    /// Expected keys per message (config `batch_num`): sizes the first receives.
    pub keys_per_message_hint: usize,
    /// Mode name recorded in failures and logs (`copy`, `downup`, `check`).
    pub mode: String,
    /// This process's id in report rows.
    pub executor_id: String,
    /// Interval of the throughput log line.
    pub progress_interval: Duration,
    /// Print CloudWatch Embedded Metric Format lines to stdout every progress interval.
    pub emf: bool,
}

impl Settings {
    /// Receivers per queue for `queues` queues: one each, or more when small
    /// messages need more receive calls in flight to keep `concurrency` keys busy
    /// (`ceil(concurrency / (max_receive_num × keys_per_message_hint))` in total, at
    /// most 16, spread evenly). Few receivers also bound what one executor holds
    /// beyond its capacity: about one receive call's worth per receiver.
    pub fn receivers_per_queue(&self, queues: usize) -> usize {
        if self.receivers > 0 {
            return self.receivers;
        }
        let per_call = self.max_receive_num.max(1) * self.keys_per_message_hint.max(1);
        let wanted = self.concurrency.div_ceil(per_call).clamp(1, 16);
        wanted.div_ceil(queues.max(1))
    }
}

/// Why the loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// The shutdown token was cancelled (SIGTERM/SIGINT).
    #[default]
    Signal,
    /// `--until-empty`: the queues were empty twice in a row and nothing was in flight.
    QueuesEmpty,
}

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
    /// From the first message received to the last key finished: the time the
    /// executor was working, without start-up or the `--until-empty` idle checks.
    pub busy: Duration,
}

#[derive(Debug, Default)]
struct Counters {
    keys: AtomicU64,
    bytes: AtomicU64,
    failed: AtomicU64,
    by_outcome: Mutex<BTreeMap<&'static str, u64>>,
    messages_done: AtomicU64,
    messages_returned: AtomicU64,
    visibility_limit_reached: AtomicU64,
    bad_messages: AtomicU64,
    dlq_messages: AtomicU64,
    /// Sum of per-key durations, for the EMF latency metric.
    latency_ms: AtomicU64,
    /// Failed keys by error class, for the EMF failure metric.
    failures_by_class: Mutex<BTreeMap<String, u64>>,
    /// First message received and last key finished: the busy span the summary reports.
    span: Mutex<(Option<std::time::Instant>, Option<std::time::Instant>)>,
}

struct Held {
    queue: Arc<dyn WorkQueue>,
    receipt: String,
}

struct Shared {
    worker: Arc<dyn KeyWorker>,
    settings: Settings,
    dead: Arc<dyn WorkQueue>,
    reporter: Option<Reporter>,
    sem: Arc<Semaphore>,
    /// Received keys not yet finished (running or waiting for a permit).
    outstanding: AtomicUsize,
    /// Messages with a live tracker.
    active: AtomicUsize,
    /// Woken whenever a key finishes (receivers wait on it for room).
    room: Notify,
    /// No more receives; no more key starts.
    stop: CancellationToken,
    /// Grace period over: abort running keys.
    hard: CancellationToken,
    counters: Counters,
    /// Hashes of bodies this process sent to the DLQ.
    parked: Mutex<HashSet<u64>>,
    /// DLQ messages held (not worked) by this process, by message id.
    held: Mutex<HashMap<String, Held>>,
    /// Running estimate of keys per message.
    est_keys: Mutex<f64>,
}

/// Decrements `outstanding` when a key ends (finished, panicked or aborted).
struct KeySlot(Arc<Shared>);

impl Drop for KeySlot {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::SeqCst);
        self.0.room.notify_waiters();
    }
}

/// Decrements `active` when a tracker ends, and tells `serve` through `_done`.
struct TrackerSlot {
    shared: Arc<Shared>,
    _done: mpsc::Sender<()>,
}

impl Drop for TrackerSlot {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn body_hash(body: &str) -> u64 {
    let mut h = DefaultHasher::new();
    body.hash(&mut h);
    h.finish()
}

/// Cut `s` to at most `max` bytes at a char boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Messages to ask for in one receive call: enough to fill the free room with
/// messages of `est_keys` keys, at least 1, at most `max_receive_num`.
pub fn ask_size(
    concurrency: usize,
    outstanding: usize,
    est_keys: f64,
    max_receive_num: usize,
) -> usize {
    let room = concurrency.saturating_sub(outstanding).max(1) as f64;
    let n = (room / est_keys.max(1.0)).ceil() as usize;
    n.clamp(1, max_receive_num.max(1))
}

/// The DLQ entry for a failed key: the key with why, how often, and in which mode.
pub fn failed_item(item: &KeyItem, err: &Error, mode: &str) -> KeyItem {
    let attempts = item.failure.as_ref().map_or(0, |f| f.attempts) + 1;
    KeyItem {
        failure: Some(Failure {
            class: err.class.clone(),
            message: truncate(&err.full_message(), MAX_REASON_BYTES),
            attempts,
            mode: Some(mode.to_string()),
        }),
        ..item.clone()
    }
}

/// Encode failed keys of `batch` into DLQ bodies, each at most `max_bytes`.
pub fn dlq_bodies(batch: &Batch, failed: Vec<KeyItem>, max_bytes: usize) -> Vec<String> {
    let mut builder = BatchBuilder::new(
        &batch.job_id,
        &batch.source,
        &batch.target,
        usize::MAX,
        max_bytes,
    );
    let mut out = Vec::new();
    for item in failed {
        if let Some(closed) = builder.push(item) {
            out.push(message::encode(&closed));
        }
    }
    out.extend(builder.take().map(|b| message::encode(&b)));
    out
}

impl Shared {
    fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::SeqCst)
    }

    /// Wait until fewer than `concurrency` received keys are unfinished. False when stopping.
    async fn wait_for_room(&self) -> bool {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.stop.is_cancelled() {
                return false;
            }
            if self.outstanding() < self.settings.concurrency {
                return true;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = self.stop.cancelled() => return false,
            }
        }
    }

    fn ask(&self) -> usize {
        let est = *self.est_keys.lock().expect("est lock");
        ask_size(
            self.settings.concurrency,
            self.outstanding(),
            est,
            self.settings.max_receive_num,
        )
    }

    fn observe_keys(&self, keys: usize) {
        let mut est = self.est_keys.lock().expect("est lock");
        *est = (*est + keys.max(1) as f64) / 2.0;
    }

    fn is_parked_here(&self, body: &str) -> bool {
        self.parked
            .lock()
            .expect("parked lock")
            .contains(&body_hash(body))
    }

    fn remember_parked(&self, body: &str) {
        self.parked
            .lock()
            .expect("parked lock")
            .insert(body_hash(body));
    }

    fn held_in(&self, queue: &str) -> u64 {
        self.held
            .lock()
            .expect("held lock")
            .values()
            .filter(|h| h.queue.name() == queue)
            .count() as u64
    }

    fn hold(&self, queue: &Arc<dyn WorkQueue>, msg: &Received) {
        tracing::debug!(queue = queue.name(), message_id = %msg.message_id, "holding a DLQ message this run parked itself");
        self.held.lock().expect("held lock").insert(
            msg.message_id.clone(),
            Held {
                queue: queue.clone(),
                receipt: msg.receipt.clone(),
            },
        );
    }

    /// Make a message visible again now (it will be received again, by anyone).
    async fn return_message(&self, queue: &dyn WorkQueue, msg: &Received) {
        self.counters
            .messages_returned
            .fetch_add(1, Ordering::Relaxed);
        if let Err(e) = queue.set_visibility(&msg.receipt, Duration::ZERO).await {
            tracing::warn!(queue = queue.name(), message_id = %msg.message_id, error = %e,
                "could not return a message; it reappears when its visibility timeout ends");
        }
    }

    async fn delete(&self, queue: &dyn WorkQueue, msg: &Received) {
        match queue.delete(&msg.receipt).await {
            Ok(()) => {
                self.counters.messages_done.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.class == STALE_RECEIPT_CLASS => {
                // Received again (e.g. after the visibility cap) or dead-lettered
                // meanwhile: not deleted, so not done; its keys re-run idempotently.
                self.counters
                    .messages_returned
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(queue = queue.name(), message_id = %msg.message_id, error = %e,
                    "finished message was not deleted: it is back in its queue (received again or moved to the DLQ) and will be worked again");
            }
            Err(e) => {
                tracing::error!(queue = queue.name(), message_id = %msg.message_id, error = %e,
                "could not delete a finished message; it will be worked again (harmless: every step is idempotent)")
            }
        }
    }

    /// Send bodies to the DLQ; remember them so this run does not work them again.
    async fn send_dead(&self, msgs: Vec<Outgoing>) -> common::Result<()> {
        // Bodies were sized to fit; never let the per-call limit refuse one.
        let max = msgs
            .iter()
            .map(Outgoing::size)
            .max()
            .unwrap_or(0)
            .max(self.settings.max_message_bytes);
        let bodies: Vec<String> = msgs.iter().map(|m| m.body.clone()).collect();
        send_all(&*self.dead, msgs, max).await?;
        for b in &bodies {
            self.remember_parked(b);
        }
        Ok(())
    }

    /// Receive loop of one receiver.
    async fn receive_loop(self: Arc<Self>, queue: Arc<dyn WorkQueue>, done: mpsc::Sender<()>) {
        let mut backoff = Duration::from_millis(500);
        let pause_when_empty =
            if self.settings.sleep_after_empty.is_zero() && self.settings.wait.is_zero() {
                Duration::from_millis(200)
            } else {
                self.settings.sleep_after_empty
            };
        while self.wait_for_room().await {
            let ask = self.ask();
            let got = tokio::select! {
                r = queue.receive(ask, self.settings.wait, Some(self.settings.visibility)) => r,
                _ = self.hard.cancelled() => break,
            };
            match got {
                Ok(msgs) if msgs.is_empty() => {
                    backoff = Duration::from_millis(500);
                    if !pause_when_empty.is_zero() {
                        tokio::select! {
                            _ = tokio::time::sleep(pause_when_empty) => {}
                            _ = self.stop.cancelled() => break,
                        }
                    }
                }
                Ok(msgs) => {
                    backoff = Duration::from_millis(500);
                    for msg in msgs {
                        self.clone().dispatch(queue.clone(), msg, done.clone());
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = queue.name(), error = %e, retry_in_ms = backoff.as_millis() as u64,
                        "receive failed");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.stop.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Decode a received message, account for its keys and start its tracker.
    fn dispatch(self: Arc<Self>, queue: Arc<dyn WorkQueue>, msg: Received, done: mpsc::Sender<()>) {
        {
            let mut span = self.counters.span.lock().expect("span lock");
            span.0.get_or_insert_with(std::time::Instant::now);
        }
        let decoded =
            message::decode(&msg.body).and_then(|batch| self.worker.admit(&batch).map(|()| batch));
        if let Ok(batch) = &decoded {
            self.outstanding
                .fetch_add(batch.keys.len(), Ordering::SeqCst);
            self.observe_keys(batch.keys.len());
        }
        self.active.fetch_add(1, Ordering::SeqCst);
        let slot = TrackerSlot {
            shared: self.clone(),
            _done: done,
        };
        tokio::spawn(async move {
            let _slot = slot;
            self.track(queue, msg, decoded).await;
        });
    }

    /// Everything that happens to one message after it was received.
    async fn track(
        self: Arc<Self>,
        queue: Arc<dyn WorkQueue>,
        msg: Received,
        decoded: common::Result<Batch>,
    ) {
        let from_dead = queue.name() == self.dead.name();
        let batch = match decoded {
            Ok(b) => Arc::new(b),
            Err(e) => return self.bad_message(&queue, from_dead, &msg, e).await,
        };
        let total = batch.keys.len();
        if from_dead && self.is_parked_here(&msg.body) {
            self.outstanding.fetch_sub(total, Ordering::SeqCst);
            self.room.notify_waiters();
            self.hold(&queue, &msg);
            return;
        }
        tracing::debug!(queue = queue.name(), message_id = %msg.message_id, keys = total,
            receive_count = msg.receive_count, "message received");

        let extend_stop = CancellationToken::new();
        let extender = tokio::spawn(extend_visibility(
            queue.clone(),
            msg.receipt.clone(),
            self.settings.visibility,
            extend_stop.clone(),
        ));

        let mut tasks: JoinSet<(usize, common::Result<KeyDone>)> = JoinSet::new();
        let mut started = 0usize;
        for index in 0..total {
            let permit = tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                p = self.sem.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            };
            started += 1;
            let shared = self.clone();
            let batch = batch.clone();
            tasks.spawn(async move {
                let slot = KeySlot(shared.clone());
                let item = &batch.keys[index];
                let t0 = Instant::now();
                let result = AssertUnwindSafe(shared.worker.work(&batch, item))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| {
                        let what = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "unknown panic".to_string());
                        Err(Error::new(
                            ErrorKind::Permanent,
                            "Panic",
                            item.key.clone(),
                            what,
                        ))
                    });
                drop(permit);
                shared.record_key(&batch, item, &result, t0.elapsed()).await;
                drop(slot);
                (index, result)
            });
        }
        let unstarted = total - started;
        if unstarted > 0 {
            self.outstanding.fetch_sub(unstarted, Ordering::SeqCst);
            self.room.notify_waiters();
        }

        let mut results: Vec<Option<common::Result<KeyDone>>> = (0..total).map(|_| None).collect();
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
                Some(Ok((index, r))) => results[index] = Some(r),
                Some(Err(_cancelled)) => {}
            }
        }

        // No extension may race the return or the delete below.
        extend_stop.cancel();
        if extender.await.unwrap_or(false) {
            self.counters
                .visibility_limit_reached
                .fetch_add(1, Ordering::Relaxed);
        }

        let finished = results.iter().filter(|r| r.is_some()).count();
        if finished < total {
            tracing::info!(queue = queue.name(), message_id = %msg.message_id, keys = total, finished,
                "stopping: message returned to its queue with unfinished keys");
            self.return_message(&*queue, &msg).await;
        } else {
            let failed: Vec<KeyItem> = batch
                .keys
                .iter()
                .zip(&results)
                .filter_map(|(item, r)| match r {
                    Some(Err(e)) => Some(failed_item(item, e, &self.settings.mode)),
                    _ => None,
                })
                .collect();
            if failed.is_empty() {
                self.delete(&*queue, &msg).await;
            } else {
                let count = failed.len();
                let class = failed[0]
                    .failure
                    .as_ref()
                    .map(|f| f.class.clone())
                    .unwrap_or_default();
                let outgoing: Vec<Outgoing> = dlq_bodies(
                    &batch,
                    failed,
                    self.settings
                        .max_message_bytes
                        .saturating_sub(ATTRIBUTE_ROOM)
                        .max(1024),
                )
                .into_iter()
                .map(|body| {
                    let mut m = Outgoing::body(body);
                    m.attributes.insert(
                        "error_class".into(),
                        attribute_value(&class, MAX_REASON_BYTES),
                    );
                    m.attributes
                        .insert("source_queue".into(), queue.name().to_string());
                    m
                })
                .collect();
                let sent = outgoing.len() as u64;
                match self.send_dead(outgoing).await {
                    Ok(()) => {
                        self.counters
                            .dlq_messages
                            .fetch_add(sent, Ordering::Relaxed);
                        tracing::info!(queue = queue.name(), message_id = %msg.message_id, failed = count,
                            dlq = self.dead.name(), "failed keys parked in the dead-letter queue");
                        self.delete(&*queue, &msg).await;
                    }
                    Err(e) => {
                        tracing::error!(queue = queue.name(), message_id = %msg.message_id, error = %e,
                            "could not park failed keys in the dead-letter queue; returning the message");
                        self.return_message(&*queue, &msg).await;
                    }
                }
            }
        }
    }

    /// A body that is neither format, or that the worker does not admit: to the
    /// DLQ unchanged (with the reason), then delete.
    /// From the DLQ itself it is left where it is (held until exit).
    async fn bad_message(
        &self,
        queue: &Arc<dyn WorkQueue>,
        from_dead: bool,
        msg: &Received,
        err: Error,
    ) {
        // Made safe for an attribute: a reason SQS refuses would loop the message.
        let reason = attribute_value(&err.full_message(), MAX_REASON_BYTES);
        tracing::warn!(queue = queue.name(), message_id = %msg.message_id, error_class = "BadMessage",
            error = %reason, "bad message (unknown format or refused endpoint)");
        if from_dead {
            self.hold(queue, msg);
            return;
        }
        let mut out = Outgoing::body(msg.body.clone());
        out.attributes.insert("reason".into(), reason);
        out.attributes
            .insert("error_class".into(), "BadMessage".into());
        out.attributes
            .insert("source_queue".into(), queue.name().to_string());
        match self.send_dead(vec![out]).await {
            Ok(()) => {
                self.counters.bad_messages.fetch_add(1, Ordering::Relaxed);
                self.delete(&**queue, msg).await;
            }
            Err(e) => {
                tracing::error!(queue = queue.name(), message_id = %msg.message_id, error = %e,
                    "could not forward a bad message to the dead-letter queue; returning it");
                self.return_message(&**queue, msg).await;
            }
        }
    }

    /// Counters, the per-key log line and the report row of one finished key.
    async fn record_key(
        &self,
        batch: &Batch,
        item: &KeyItem,
        result: &common::Result<KeyDone>,
        took: Duration,
    ) {
        let c = &self.counters;
        c.keys.fetch_add(1, Ordering::Relaxed);
        c.latency_ms
            .fetch_add(took.as_millis() as u64, Ordering::Relaxed);
        c.span.lock().expect("span lock").1 = Some(std::time::Instant::now());
        let mode = self.settings.mode.as_str();
        let prior = item.failure.as_ref().map_or(0, |f| f.attempts);
        let (outcome, class, text, bytes) = match result {
            Ok(done) => {
                c.bytes.fetch_add(done.bytes, Ordering::Relaxed);
                match done.outcome {
                    Outcome::SkippedIdentical | Outcome::SkippedFiltered | Outcome::TagsUpdated => {
                        tracing::info!(key = %item.key, source = %batch.source, mode, outcome = %done.outcome,
                            note = done.note.as_deref().unwrap_or(""), "key skipped")
                    }
                    Outcome::SourceMissing => {
                        tracing::warn!(key = %item.key, source = %batch.source, mode,
                        outcome = %done.outcome, "source object no longer exists")
                    }
                    _ => match &done.note {
                        Some(note) => {
                            tracing::info!(key = %item.key, mode, outcome = %done.outcome, note = %note, "key done")
                        }
                        None => {
                            tracing::debug!(key = %item.key, mode, outcome = %done.outcome, "key done")
                        }
                    },
                }
                (done.outcome, None, None, done.bytes)
            }
            Err(e) => {
                c.failed.fetch_add(1, Ordering::Relaxed);
                *c.failures_by_class
                    .lock()
                    .expect("failures lock")
                    .entry(e.class.clone())
                    .or_default() += 1;
                let msg = truncate(&e.full_message(), MAX_REASON_BYTES);
                tracing::warn!(key = %item.key, source = %batch.source, mode, outcome = "failed",
                    error_class = %e.class, error = %msg, attempts = prior + 1, "key failed; parking it in the dead-letter queue");
                (Outcome::Failed, Some(e.class.clone()), Some(msg), 0)
            }
        };
        *c.by_outcome
            .lock()
            .expect("outcome lock")
            .entry(outcome.as_str())
            .or_default() += 1;
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
                })
                .await;
        }
    }

    fn stats(&self, stopped_by: StopReason) -> RunStats {
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
            busy: match *c.span.lock().expect("span lock") {
                (Some(first), Some(last)) => last.saturating_duration_since(first),
                _ => Duration::ZERO,
            },
        }
    }
}

/// Renew a message's visibility every third of `visibility` until `stop`.
/// Returns true when the queue refused an extension past its total-visibility
/// cap (12 hours on SQS): extending stops there, since every later try would
/// be refused too, and the message will be redelivered while its keys run.
async fn extend_visibility(
    queue: Arc<dyn WorkQueue>,
    receipt: String,
    visibility: Duration,
    stop: CancellationToken,
) -> bool {
    let period = (visibility / 3).max(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep(period) => {}
        }
        match queue.set_visibility(&receipt, visibility).await {
            Ok(()) => {}
            Err(e) if e.class == VISIBILITY_LIMIT_CLASS => {
                tracing::warn!(queue = queue.name(), error = %e,
                    "visibility cannot be extended any more: the message will be redelivered while its keys still run (they re-run idempotently; the report keeps one outcome per key)");
                return true;
            }
            Err(e) => {
                tracing::warn!(queue = queue.name(), error = %e, "could not extend a message's visibility");
            }
        }
    }
}

/// `--until-empty`: stop once every queue reports nothing visible, delayed or in
/// flight (DLQ messages held by this run excepted) and this process tracks no message,
/// for two checks in a row.
async fn watch_until_empty(
    shared: Arc<Shared>,
    queues: Vec<Arc<dyn WorkQueue>>,
    fired: Arc<AtomicUsize>,
) {
    let mut streak = 0u32;
    loop {
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = tokio::time::sleep(shared.settings.empty_check_interval) => {}
        }
        let mut empty = shared.active.load(Ordering::SeqCst) == 0;
        if empty {
            for q in &queues {
                match q.depths().await {
                    Ok(d) => {
                        let held = shared.held_in(q.name());
                        if d.visible > 0 || d.delayed > 0 || d.in_flight > held {
                            tracing::debug!(
                                queue = q.name(),
                                visible = d.visible,
                                in_flight = d.in_flight,
                                delayed = d.delayed,
                                "queue not empty yet"
                            );
                            empty = false;
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(queue = q.name(), error = %e, "could not read queue depths");
                        empty = false;
                        break;
                    }
                }
            }
        }
        empty = empty && shared.active.load(Ordering::SeqCst) == 0;
        streak = if empty { streak + 1 } else { 0 };
        if streak >= 2 {
            tracing::info!("queues are empty and nothing is in flight: stopping (--until-empty)");
            fired.store(1, Ordering::SeqCst);
            shared.stop.cancel();
            return;
        }
    }
}

/// Log a throughput line every `progress_interval` (and, with `emf`, print the
/// interval's metrics as CloudWatch Embedded Metric Format lines on stdout).
async fn progress(shared: Arc<Shared>, stop: CancellationToken) {
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
    pub keys: u64,
    pub bytes: u64,
    pub failed: u64,
    pub latency_ms: u64,
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

/// Run the loop over `queues` (the receive order; `dead` is where failures go and may
/// be one of `queues`) until `shutdown` is cancelled or, with `until_empty`, the queues
/// are empty. Returns the run's counters. Never deletes a message before all its keys
/// are done or parked.
pub async fn serve(
    queues: Vec<Arc<dyn WorkQueue>>,
    dead: Arc<dyn WorkQueue>,
    worker: Arc<dyn KeyWorker>,
    settings: Settings,
    reporter: Option<Reporter>,
    shutdown: CancellationToken,
) -> RunStats {
    let stop = shutdown.child_token();
    let hard = CancellationToken::new();
    let shared = Arc::new(Shared {
        worker,
        sem: Arc::new(Semaphore::new(settings.concurrency.max(1))),
        est_keys: Mutex::new(settings.keys_per_message_hint.max(1) as f64),
        settings,
        dead,
        reporter,
        outstanding: AtomicUsize::new(0),
        active: AtomicUsize::new(0),
        room: Notify::new(),
        stop: stop.clone(),
        hard: hard.clone(),
        counters: Counters::default(),
        parked: Mutex::new(HashSet::new()),
        held: Mutex::new(HashMap::new()),
    });

    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut receivers = JoinSet::new();
    if !queues.is_empty() {
        let per_queue = shared.settings.receivers_per_queue(queues.len());
        tracing::info!(
            queues = ?queues.iter().map(|q| q.name().to_string()).collect::<Vec<_>>(),
            receivers_per_queue = per_queue,
            concurrency = shared.settings.concurrency,
            mode = %shared.settings.mode,
            "executor started"
        );
        for queue in &queues {
            for _ in 0..per_queue {
                receivers.spawn(shared.clone().receive_loop(queue.clone(), done_tx.clone()));
            }
        }
    }
    drop(done_tx);

    let fired = Arc::new(AtomicUsize::new(0));
    let watcher = shared.settings.until_empty.then(|| {
        tokio::spawn(watch_until_empty(
            shared.clone(),
            queues.clone(),
            fired.clone(),
        ))
    });
    let progress_stop = CancellationToken::new();
    let progress_task = tokio::spawn(progress(shared.clone(), progress_stop.clone()));

    stop.cancelled().await;
    let grace = shared.settings.grace;
    if shutdown.is_cancelled() {
        tracing::info!(
            grace_s = grace.as_secs_f64(),
            in_flight = shared.outstanding(),
            "stop requested: no more receives; finishing running keys"
        );
    }
    let deadline = tokio::spawn({
        let hard = hard.clone();
        async move {
            tokio::time::sleep(grace).await;
            tracing::warn!("grace period over: aborting running keys and returning their messages");
            hard.cancel();
        }
    });

    while receivers.join_next().await.is_some() {}
    // Every tracker holds a sender: recv() returns None once all have ended.
    let _ = done_rx.recv().await;
    deadline.abort();
    // Keys aborted at the end of the grace period leave multipart aborts
    // running: give them their own grace period rather than exiting under them.
    let left = common::transfer::wait_for_aborts(grace.max(Duration::from_secs(1))).await;
    if left > 0 {
        tracing::error!(
            uploads = left,
            "multipart upload aborts still running at exit: those uploads may be left open"
        );
    }
    progress_stop.cancel();
    let _ = progress_task.await;
    if let Some(w) = watcher {
        let _ = w.await;
    }

    let stopped_by = if fired.load(Ordering::SeqCst) == 1 {
        StopReason::QueuesEmpty
    } else {
        StopReason::Signal
    };
    let stats = shared.stats(stopped_by);
    let held: Vec<Held> = shared
        .held
        .lock()
        .expect("held lock")
        .drain()
        .map(|(_, h)| h)
        .collect();
    for h in held {
        if let Err(e) = h.queue.set_visibility(&h.receipt, Duration::ZERO).await {
            tracing::warn!(queue = h.queue.name(), error = %e, "could not return a held DLQ message");
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::queue::local::LocalService;
    use common::queue::{QueueService, QueueSpec, Redrive};

    // ---- pure pieces ----

    #[test]
    fn ask_size_fills_the_room_with_expected_messages() {
        assert_eq!(ask_size(64, 0, 500.0, 10), 1);
        assert_eq!(ask_size(64, 0, 1.0, 10), 10);
        assert_eq!(ask_size(64, 60, 1.0, 10), 4);
        assert_eq!(ask_size(64, 0, 10.0, 10), 7);
        assert_eq!(ask_size(64, 64, 1.0, 10), 1);
        assert_eq!(ask_size(64, 0, 0.0, 3), 3);
    }

    #[test]
    fn receivers_cover_every_queue_and_small_messages() {
        let mut s = test_settings();
        s.concurrency = 64;
        s.max_receive_num = 10;
        s.keys_per_message_hint = 500;
        assert_eq!(
            s.receivers_per_queue(1),
            1,
            "big messages: one receiver per queue"
        );
        s.keys_per_message_hint = 1;
        assert_eq!(s.receivers_per_queue(5), 2);
        assert_eq!(s.receivers_per_queue(9), 1);
        assert_eq!(s.receivers_per_queue(1), 7);
        s.concurrency = 1000;
        assert_eq!(s.receivers_per_queue(1), 16);
        assert_eq!(s.receivers_per_queue(6), 3);
        s.concurrency = 1;
        assert_eq!(s.receivers_per_queue(1), 1);
        s.receivers = 3;
        assert_eq!(s.receivers_per_queue(5), 3);
    }

    #[test]
    fn failed_items_count_attempts_and_keep_listing_facts() {
        let item = KeyItem {
            key: "a".into(),
            size: Some(3),
            etag: Some("\"x\"".into()),
            ..KeyItem::default()
        };
        let err = Error::new(
            ErrorKind::AccessDenied,
            "AccessDenied",
            "s3://b/a",
            "denied",
        );
        let once = failed_item(&item, &err, "copy");
        let f = once.failure.clone().unwrap();
        assert_eq!(
            (f.class.as_str(), f.attempts, f.mode.as_deref()),
            ("AccessDenied", 1, Some("copy"))
        );
        assert_eq!((once.size, once.etag.as_deref()), (Some(3), Some("\"x\"")));
        let twice = failed_item(&once, &err, "downup");
        assert_eq!(twice.failure.unwrap().attempts, 2);
    }

    #[test]
    fn dlq_bodies_fit_the_size_limit_and_keep_every_key() {
        let batch = Batch {
            v: 1,
            job_id: "j".into(),
            source: "s3://src".into(),
            target: "s3://dst".into(),
            keys: vec![],
        };
        let err = Error::new(ErrorKind::Permanent, "Boom", "", "x".repeat(3000));
        let failed: Vec<KeyItem> = (0..50)
            .map(|i| {
                failed_item(
                    &KeyItem {
                        key: format!("{}{i}", "k".repeat(900)),
                        ..KeyItem::default()
                    },
                    &err,
                    "copy",
                )
            })
            .collect();
        let bodies = dlq_bodies(&batch, failed, 16 * 1024);
        assert!(bodies.len() > 1);
        let mut n = 0;
        for b in &bodies {
            assert!(b.len() <= 16 * 1024, "{}", b.len());
            let decoded = message::decode(b).unwrap();
            assert_eq!(decoded.job_id, "j");
            for k in &decoded.keys {
                assert!(k.failure.as_ref().unwrap().message.len() <= MAX_REASON_BYTES + 3);
            }
            n += decoded.keys.len();
        }
        assert_eq!(n, 50);
        assert_eq!(dlq_bodies(&batch, vec![], 1024), Vec::<String>::new());
    }

    #[test]
    fn truncate_cuts_at_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééé", 3), "é…");
        assert_eq!(truncate("abcdef", 3), "abc…");
    }

    // ---- the loop, against the embedded queue ----

    /// Decides by key name: `fail-*` AccessDenied, `missing-*` source-missing,
    /// `slow-<ms>-*` sleeps, `block-*` waits for `release`, `panic-*` panics,
    /// `twice-*`: the first call waits until a second call of it started, the
    /// second then waits for `release`.
    #[derive(Default)]
    struct Scripted {
        calls: Mutex<Vec<String>>,
        release: CancellationToken,
        second: CancellationToken,
        running: AtomicUsize,
        max_running: AtomicUsize,
    }

    impl Scripted {
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl KeyWorker for Scripted {
        async fn work(&self, _batch: &Batch, item: &KeyItem) -> common::Result<KeyDone> {
            self.calls.lock().unwrap().push(item.key.clone());
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            struct Dec<'a>(&'a AtomicUsize);
            impl Drop for Dec<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::SeqCst);
                }
            }
            let _dec = Dec(&self.running);
            let key = item.key.as_str();
            if let Some(rest) = key.strip_prefix("slow-") {
                let ms: u64 = rest.split('-').next().unwrap().parse().unwrap();
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if key.starts_with("block-") {
                self.release.cancelled().await;
            }
            if key.starts_with("twice-") {
                let n = self.calls().iter().filter(|c| *c == key).count();
                if n == 1 {
                    self.second.cancelled().await;
                } else {
                    self.second.cancel();
                    self.release.cancelled().await;
                }
            }
            if key.starts_with("panic-") {
                panic!("scripted panic for {key}");
            }
            if key.starts_with("fail-") {
                return Err(Error::new(
                    ErrorKind::AccessDenied,
                    "AccessDenied",
                    format!("s3://src/{key}"),
                    "Access Denied",
                ));
            }
            let outcome = if key.starts_with("missing-") {
                Outcome::SourceMissing
            } else {
                Outcome::Copied
            };
            Ok(KeyDone {
                outcome,
                bytes: 10,
                note: None,
            })
        }
    }

    fn test_settings() -> Settings {
        Settings {
            concurrency: 4,
            max_receive_num: 10,
            receivers: 0,
            wait: Duration::from_millis(200),
            visibility: Duration::from_secs(30),
            sleep_after_empty: Duration::ZERO,
            grace: Duration::from_secs(10),
            until_empty: true,
            empty_check_interval: Duration::from_millis(100),
            max_message_bytes: 256 * 1024,
            keys_per_message_hint: 10,
            mode: "copy".into(),
            executor_id: "test".into(),
            progress_interval: Duration::from_secs(3600),
            emf: false,
        }
    }

    struct Queues {
        _dir: tempfile::TempDir,
        work: Arc<dyn WorkQueue>,
        dead: Arc<dyn WorkQueue>,
    }

    async fn queues() -> Queues {
        let dir = tempfile::tempdir().unwrap();
        let svc = LocalService::open(dir.path().join("queue.db")).unwrap();
        let spec = |name: &str, redrive: Option<Redrive>| QueueSpec {
            name: name.into(),
            visibility_timeout: Duration::from_secs(30),
            receive_wait_time: Duration::ZERO,
            retention: Duration::from_secs(86_400),
            redrive,
        };
        svc.ensure(&spec("dead", None)).await.unwrap();
        let redrive = Redrive {
            dead_letter_queue: "dead".into(),
            max_receive_count: 5,
        };
        svc.ensure(&spec("work", Some(redrive))).await.unwrap();
        Queues {
            work: svc.open("work").await.unwrap(),
            dead: svc.open("dead").await.unwrap(),
            _dir: dir,
        }
    }

    fn body(keys: &[&str]) -> String {
        message::encode(&Batch {
            v: 1,
            job_id: "job-1".into(),
            source: "s3://src".into(),
            target: "s3://dst".into(),
            keys: keys
                .iter()
                .map(|k| KeyItem {
                    key: k.to_string(),
                    ..KeyItem::default()
                })
                .collect(),
        })
    }

    async fn send(q: &dyn WorkQueue, bodies: Vec<String>) {
        send_all(q, bodies.into_iter().map(Outgoing::body).collect(), 1 << 20)
            .await
            .unwrap();
    }

    /// Receive and delete everything visible.
    async fn drain(q: &dyn WorkQueue) -> Vec<Received> {
        let mut out = Vec::new();
        loop {
            let got = q.receive(10, Duration::ZERO, None).await.unwrap();
            if got.is_empty() {
                return out;
            }
            for m in got {
                q.delete(&m.receipt).await.unwrap();
                out.push(m);
            }
        }
    }

    async fn serve_until_empty(
        q: &Queues,
        order: Vec<Arc<dyn WorkQueue>>,
        worker: Arc<Scripted>,
        s: Settings,
    ) -> RunStats {
        let run = serve(
            order,
            q.dead.clone(),
            worker,
            s,
            None,
            CancellationToken::new(),
        );
        tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .expect("serve ended (until-empty)")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn done_messages_are_deleted_and_every_key_worked_once() {
        let q = queues().await;
        send(
            &*q.work,
            vec![
                body(&["a", "b"]),
                body(&["c", "missing-d"]),
                body(&["e", "f"]),
            ],
        )
        .await;
        let w = Arc::new(Scripted::default());
        let stats = serve_until_empty(&q, vec![q.work.clone()], w.clone(), test_settings()).await;
        let mut calls = w.calls();
        calls.sort();
        assert_eq!(calls, ["a", "b", "c", "e", "f", "missing-d"]);
        assert_eq!(stats.keys, 6);
        assert_eq!(stats.by_outcome.get("copied"), Some(&5));
        assert_eq!(stats.by_outcome.get("source-missing"), Some(&1));
        assert_eq!(
            (stats.failed, stats.messages_done, stats.messages_returned),
            (0, 3, 0)
        );
        assert_eq!(stats.stopped_by, StopReason::QueuesEmpty);
        assert!(q.work.depths().await.unwrap().is_empty());
        assert!(q.dead.depths().await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_keys_are_parked_in_one_dlq_message_then_the_original_deleted() {
        let q = queues().await;
        send(&*q.work, vec![body(&["ok-1", "fail-a", "ok-2", "panic-b"])]).await;
        let w = Arc::new(Scripted::default());
        let stats = serve_until_empty(&q, vec![q.work.clone()], w.clone(), test_settings()).await;
        assert_eq!(
            (
                stats.keys,
                stats.failed,
                stats.dlq_messages,
                stats.messages_done
            ),
            (4, 2, 1, 1)
        );
        assert!(q.work.depths().await.unwrap().is_empty());
        let dead = drain(&*q.dead).await;
        assert_eq!(dead.len(), 1);
        let parked = message::decode(&dead[0].body).unwrap();
        assert_eq!(
            (
                parked.job_id.as_str(),
                parked.source.as_str(),
                parked.target.as_str()
            ),
            ("job-1", "s3://src", "s3://dst")
        );
        let keys: Vec<(&str, &str, u32)> = parked
            .keys
            .iter()
            .map(|k| {
                let f = k.failure.as_ref().unwrap();
                assert_eq!(f.mode.as_deref(), Some("copy"));
                (k.key.as_str(), f.class.as_str(), f.attempts)
            })
            .collect();
        assert_eq!(
            keys,
            [("fail-a", "AccessDenied", 1), ("panic-b", "Panic", 1)]
        );
        assert!(parked.keys[1]
            .failure
            .as_ref()
            .unwrap()
            .message
            .contains("scripted panic"));
        assert_eq!(
            dead[0].attributes.get("source_queue").map(String::as_str),
            Some("work")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_bodies_go_to_the_dlq_unchanged_and_legacy_bodies_are_worked() {
        let q = queues().await;
        let legacy = r#"{"source_bucket":"src","target_bucket":"dst","keys":[{"source_key":"a%20b%2Bc","target_key":"a%20b%2Bc"}]}"#;
        send(
            &*q.work,
            vec![
                "not json {".into(),
                legacy.into(),
                r#"{"v":1,"job_id":"j"}"#.into(),
            ],
        )
        .await;
        let w = Arc::new(Scripted::default());
        let stats = serve_until_empty(&q, vec![q.work.clone()], w.clone(), test_settings()).await;
        assert_eq!(w.calls(), ["a b+c"]);
        assert_eq!((stats.bad_messages, stats.messages_done), (2, 3));
        assert!(q.work.depths().await.unwrap().is_empty());
        let mut dead = drain(&*q.dead).await;
        dead.sort_by(|a, b| a.body.cmp(&b.body));
        assert_eq!(dead.len(), 2);
        assert_eq!(dead[0].body, "not json {");
        assert_eq!(dead[1].body, r#"{"v":1,"job_id":"j"}"#);
        for m in &dead {
            assert_eq!(
                m.attributes.get("error_class").map(String::as_str),
                Some("BadMessage")
            );
        }
        assert!(
            dead[0].attributes["reason"].contains("not JSON"),
            "{:?}",
            dead[0].attributes
        );
        assert!(
            dead[1].attributes["reason"].contains("bad message"),
            "{:?}",
            dead[1].attributes
        );
    }

    /// A real queue underneath, with its calls logged in order; an extension
    /// fires `on_extend` when it starts and takes `extend_delay` (a slow
    /// ChangeMessageVisibility), and every delete fires `on_delete` when done.
    struct Recording {
        inner: Arc<dyn WorkQueue>,
        log: Mutex<Vec<String>>,
        extend_delay: Duration,
        on_extend: CancellationToken,
        on_delete: CancellationToken,
    }

    impl std::fmt::Debug for Recording {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Recording")
        }
    }

    impl Recording {
        fn new(inner: Arc<dyn WorkQueue>) -> Self {
            Recording {
                inner,
                log: Mutex::new(Vec::new()),
                extend_delay: Duration::ZERO,
                on_extend: CancellationToken::new(),
                on_delete: CancellationToken::new(),
            }
        }

        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }

        fn push(&self, what: String) {
            self.log.lock().unwrap().push(what);
        }
    }

    #[async_trait]
    impl WorkQueue for Recording {
        fn name(&self) -> &str {
            self.inner.name()
        }
        async fn send_batch(&self, m: &[Outgoing]) -> common::Result<Vec<common::Result<()>>> {
            self.inner.send_batch(m).await
        }
        async fn receive(
            &self,
            max: usize,
            wait: Duration,
            visibility: Option<Duration>,
        ) -> common::Result<Vec<Received>> {
            self.inner.receive(max, wait, visibility).await
        }
        async fn delete(&self, receipt: &str) -> common::Result<()> {
            let r = self.inner.delete(receipt).await;
            self.push(match &r {
                Ok(()) => "delete:ok".into(),
                Err(e) => format!("delete:{}", e.class),
            });
            self.on_delete.cancel();
            r
        }
        async fn set_visibility(&self, receipt: &str, timeout: Duration) -> common::Result<()> {
            if timeout.is_zero() {
                self.push("return".into());
                return self.inner.set_visibility(receipt, timeout).await;
            }
            self.push("extend-start".into());
            self.on_extend.cancel();
            tokio::time::sleep(self.extend_delay).await;
            let r = self.inner.set_visibility(receipt, timeout).await;
            self.push(match &r {
                Ok(()) => "extend-end:ok".into(),
                Err(e) => format!("extend-end:{}", e.class),
            });
            r
        }
        async fn depths(&self) -> common::Result<common::queue::Depths> {
            self.inner.depths().await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_extension_lands_after_the_delete() {
        let q = queues().await;
        send(&*q.work, vec![body(&["block-x"])]).await;
        let w = Arc::new(Scripted::default());
        let mut rec = Recording::new(q.work.clone());
        // The key finishes while an extension is on its way to the queue.
        rec.on_extend = w.release.clone();
        rec.extend_delay = Duration::from_millis(300);
        let rec = Arc::new(rec);
        let mut s = test_settings();
        s.visibility = Duration::from_secs(1);
        let stats = serve_until_empty(&q, vec![rec.clone()], w.clone(), s).await;
        assert_eq!(stats.messages_done, 1);
        let log = rec.log();
        let delete = log.iter().position(|l| l == "delete:ok").expect("deleted");
        assert!(
            log[delete + 1..].iter().all(|l| !l.starts_with("extend")),
            "an extension ran after the delete: {log:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_past_the_visibility_cap_is_redelivered_and_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let svc = LocalService::open(dir.path().join("queue.db"))
            .unwrap()
            .with_visibility_limit(Duration::from_secs(2));
        let spec = |name: &str| QueueSpec {
            name: name.into(),
            visibility_timeout: Duration::from_secs(1),
            receive_wait_time: Duration::ZERO,
            retention: Duration::from_secs(86_400),
            redrive: None,
        };
        svc.ensure(&spec("dead")).await.unwrap();
        svc.ensure(&spec("work")).await.unwrap();
        let q = Queues {
            work: svc.open("work").await.unwrap(),
            dead: svc.open("dead").await.unwrap(),
            _dir: tempfile::tempdir().unwrap(),
        };
        send(&*q.work, vec![body(&["twice-k"])]).await;
        let w = Arc::new(Scripted::default());
        let mut rec = Recording::new(q.work.clone());
        // The redelivered copy finishes only after the first one's delete.
        rec.on_delete = w.release.clone();
        let rec = Arc::new(rec);
        let reports = tempfile::tempdir().unwrap();
        let loc = common::report::ReportLocation::new(
            Arc::new(common::store::dir::DirStore::new(reports.path()).unwrap()),
            "reports",
        );
        let (reporter, task) =
            Reporter::start(loc.clone(), "test".into(), 1, Duration::from_millis(100));
        let mut s = test_settings();
        s.visibility = Duration::from_secs(1);
        s.receivers = 2;
        let run = serve(
            vec![rec.clone()],
            q.dead.clone(),
            w.clone(),
            s,
            Some(reporter),
            CancellationToken::new(),
        );
        let stats = tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .expect("serve ended (until-empty)");
        task.finish().await.unwrap();

        assert_eq!(
            w.calls(),
            ["twice-k", "twice-k"],
            "redelivered while running"
        );
        assert_eq!(stats.visibility_limit_reached, 1, "{stats:?}");
        // The first copy's receipt went stale: returned, not done.
        assert_eq!(
            (stats.messages_done, stats.messages_returned),
            (1, 1),
            "{:?}",
            rec.log()
        );
        assert!(rec.log().contains(&format!("delete:{STALE_RECEIPT_CLASS}")));
        assert!(q.work.depths().await.unwrap().is_empty());
        // Two report rows for the key, one outcome in the job's summary.
        let mut agg = common::report::Aggregator::new(false);
        loc.for_each_row("job-1", |r| agg.add(r)).await.unwrap();
        let summary = agg.snapshot();
        assert_eq!((summary.rows, summary.total, summary.succeeded), (2, 1, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_poison_message_with_an_unsafe_reason_reaches_the_dlq() {
        let q = queues().await;
        // The decode error quotes the key, control character included.
        let poison = r#"{"source_bucket":"src","target_bucket":"dst","keys":[{"source_key":"bad\u0001\u001b[31m%ff"}]}"#;
        send(&*q.work, vec![poison.into()]).await;
        let w = Arc::new(Scripted::default());
        let stats = serve_until_empty(&q, vec![q.work.clone()], w.clone(), test_settings()).await;
        assert!(w.calls().is_empty());
        assert_eq!(
            (
                stats.bad_messages,
                stats.messages_done,
                stats.messages_returned
            ),
            (1, 1, 0)
        );
        let dead = drain(&*q.dead).await;
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].body, poison);
        let reason = &dead[0].attributes["reason"];
        assert!(reason.contains("bad\\u{1}\\u{1b}[31m%ff"), "{reason}");
        assert!(!reason.chars().any(char::is_control), "{reason}");
    }

    async fn wait_for_calls(w: &Scripted, n: usize) {
        for _ in 0..600 {
            if w.calls().len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("only {:?} started", w.calls());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_returns_messages_with_unfinished_or_unstarted_keys() {
        let q = queues().await;
        send(&*q.work, vec![body(&["block-1", "k2", "k3"])]).await;
        let w = Arc::new(Scripted::default());
        let mut s = test_settings();
        s.concurrency = 1;
        s.until_empty = false;
        s.grace = Duration::from_millis(300);
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(serve(
            vec![q.work.clone()],
            q.dead.clone(),
            w.clone(),
            s,
            None,
            shutdown.clone(),
        ));
        wait_for_calls(&w, 1).await;
        shutdown.cancel();
        let stats = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w.calls(), ["block-1"]);
        assert_eq!(
            (stats.messages_done, stats.messages_returned, stats.keys),
            (0, 1, 0)
        );
        assert_eq!(stats.stopped_by, StopReason::Signal);
        let back = drain(&*q.work).await;
        assert_eq!(back.len(), 1, "the message is visible again at once");
        assert_eq!(back[0].body, body(&["block-1", "k2", "k3"]));
        assert!(q.dead.depths().await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_lets_running_keys_finish_within_the_grace_period() {
        let q = queues().await;
        send(&*q.work, vec![body(&["slow-400-a", "slow-400-b"])]).await;
        let w = Arc::new(Scripted::default());
        let mut s = test_settings();
        s.until_empty = false;
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(serve(
            vec![q.work.clone()],
            q.dead.clone(),
            w.clone(),
            s,
            None,
            shutdown.clone(),
        ));
        wait_for_calls(&w, 2).await;
        shutdown.cancel();
        let stats = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (stats.keys, stats.messages_done, stats.messages_returned),
            (2, 1, 0)
        );
        assert!(q.work.depths().await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_more_keys_in_flight_than_the_concurrency() {
        let q = queues().await;
        let bodies: Vec<String> = (0..6)
            .map(|m| {
                let keys: Vec<String> = (0..4).map(|k| format!("slow-30-{m}-{k}")).collect();
                body(&keys.iter().map(String::as_str).collect::<Vec<_>>())
            })
            .collect();
        send(&*q.work, bodies).await;
        let w = Arc::new(Scripted::default());
        let mut s = test_settings();
        s.concurrency = 3;
        let stats = serve_until_empty(&q, vec![q.work.clone()], w.clone(), s).await;
        assert_eq!(stats.keys, 24);
        assert_eq!(w.calls().len(), 24);
        assert!(w.max_running.load(Ordering::SeqCst) <= 3);
        assert!(
            w.max_running.load(Ordering::SeqCst) >= 2,
            "keys of several messages run together"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn visibility_is_extended_while_a_key_runs() {
        let q = queues().await;
        send(&*q.work, vec![body(&["slow-3000-big"])]).await;
        let w = Arc::new(Scripted::default());
        let mut s = test_settings();
        s.visibility = Duration::from_secs(1);
        s.receivers = 3;
        let stats = serve_until_empty(&q, vec![q.work.clone()], w.clone(), s).await;
        assert_eq!(
            w.calls(),
            ["slow-3000-big"],
            "not redelivered while running"
        );
        assert_eq!(stats.messages_done, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn until_empty_waits_for_a_message_held_by_a_crashed_consumer() {
        let q = queues().await;
        send(&*q.work, vec![body(&["orphan"])]).await;
        // A consumer receives it and dies without deleting it.
        let taken = q
            .work
            .receive(1, Duration::ZERO, Some(Duration::from_secs(2)))
            .await
            .unwrap();
        assert_eq!(taken.len(), 1);
        let w = Arc::new(Scripted::default());
        let stats = serve_until_empty(&q, vec![q.work.clone()], w.clone(), test_settings()).await;
        assert_eq!(w.calls(), ["orphan"]);
        assert_eq!(stats.messages_done, 1);
        assert!(q.work.depths().await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dlq_replay_reparks_failures_once_and_ends() {
        let q = queues().await;
        let err = Error::new(ErrorKind::AccessDenied, "AccessDenied", "", "denied");
        let parked = Batch {
            v: 1,
            job_id: "job-1".into(),
            source: "s3://src".into(),
            target: "s3://dst".into(),
            keys: vec![
                failed_item(
                    &KeyItem {
                        key: "fixed".into(),
                        ..KeyItem::default()
                    },
                    &err,
                    "copy",
                ),
                failed_item(
                    &KeyItem {
                        key: "fail-still".into(),
                        ..KeyItem::default()
                    },
                    &err,
                    "copy",
                ),
            ],
        };
        send(&*q.dead, vec![message::encode(&parked), "garbage".into()]).await;
        let w = Arc::new(Scripted::default());
        let stats = serve_until_empty(&q, vec![q.dead.clone()], w.clone(), test_settings()).await;
        let mut calls = w.calls();
        calls.sort();
        assert_eq!(
            calls,
            ["fail-still", "fixed"],
            "each key tried once in this run"
        );
        assert_eq!(stats.stopped_by, StopReason::QueuesEmpty);
        assert_eq!(
            stats.held, 2,
            "the re-parked message and the garbage are held, not reworked"
        );
        let mut dead = drain(&*q.dead).await;
        dead.sort_by(|a, b| a.body.cmp(&b.body));
        assert_eq!(dead.len(), 2, "{dead:?}");
        assert_eq!(
            dead[0].body, "garbage",
            "a bad body in the DLQ stays as it is"
        );
        let again = message::decode(&dead[1].body).unwrap();
        assert_eq!(again.keys.len(), 1);
        assert_eq!(again.keys[0].key, "fail-still");
        assert_eq!(again.keys[0].failure.as_ref().unwrap().attempts, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn receives_from_every_queue_in_the_order() {
        let q = queues().await;
        send(&*q.work, vec![body(&["from-work"])]).await;
        send(&*q.dead, vec![body(&["from-dead"])]).await;
        let w = Arc::new(Scripted::default());
        let stats = serve_until_empty(
            &q,
            vec![q.work.clone(), q.dead.clone()],
            w.clone(),
            test_settings(),
        )
        .await;
        let mut calls = w.calls();
        calls.sort();
        assert_eq!(calls, ["from-dead", "from-work"]);
        assert_eq!(stats.messages_done, 2);
    }

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
