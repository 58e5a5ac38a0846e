//! The receive → work → delete loop; [`serve`] wires its pieces.
//!
//! * **Receivers**: the same number of tasks for every queue of the receive order (so
//!   queues are served fairly and a long poll on an empty queue never delays another),
//!   each long-polling only while fewer than `concurrency` received keys are unfinished.
//! * Each message gets a **tracker**: it starts one task per key, each holding a permit
//!   of the global semaphore (`concurrency` keys in flight in the whole process), and
//!   extends the message's visibility every `visibility / 3` while keys run.
//! * When every key is done, failed keys are sent to the DLQ as a new message (keys
//!   with a [`Failure`](common::message::Failure)); only after that send succeeded is the original deleted. If the
//!   DLQ send fails, the message is made visible again instead: nothing is lost.
//! * A body that is not a known format goes to the DLQ unchanged with `reason` and
//!   `error_class=BadMessage` attributes (the contract in [`common::message::dlq`]),
//!   then the original is deleted.
//! * Shutdown (`shutdown` token, or `--until-empty` finding the queues empty): stop
//!   receiving, let running keys finish within the grace period, return every message
//!   whose keys are not all done (visibility 0).
//! * Messages received from the DLQ itself (`-d`) are worked like any other; keys
//!   that fail again are parked again as a new DLQ message. A message this process
//!   parked itself is not worked again in the same run: it is *held* (left invisible)
//!   and returned at exit, so a DLQ replay with `--until-empty` ends.
//!
//! | module      | owns |
//! |-------------|------|
//! | `receive`   | receive loops, how many messages to ask for, the `--until-empty` watch |
//! | `lifecycle` | one message: tracking, holding, visibility extension, delete or return |
//! | `keys`      | a message's keys: permits, panics, the hard stop, what a finished key records |
//! | `park`      | the dead-letter queue: failed keys' bodies, bad messages, what this run parked |
//! | `metrics`   | counters, [`RunStats`], the throughput line, EMF metrics |

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::message::{Batch, KeyItem};
use common::queue::WorkQueue;
use common::report::Reporter;
use common::transfer::Done;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod breaker;
mod keys;
mod lifecycle;
mod metrics;
mod park;
mod receive;
#[cfg(test)]
mod testkit;

pub use breaker::Tripped;
pub use metrics::{emf_lines, RunStats, Snapshot, EMF_NAMESPACE};
pub use park::{dlq_bodies, failed_item, truncate, MAX_REASON_BYTES};
pub use receive::ask_size;

use metrics::Counters;

/// Works one key of a decoded message. The production implementation resolves the
/// message's stores and calls `common::transfer::process_key`; tests hand in others.
/// `Err` means the key failed for good (after the worker's own retries) and is parked.
#[async_trait]
pub trait KeyWorker: Send + Sync + 'static {
    /// Work `item` of `batch`: the transfer's own result for a key that did not fail.
    async fn work(&self, batch: &Batch, item: &KeyItem) -> common::Result<Done>;

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
    /// Endpoint-wide failures in a row that stop the loop (`--circuit-breaker`); 0: never.
    pub circuit_breaker: usize,
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
    /// The circuit breaker opened: one endpoint failed every key in a row.
    CircuitOpen,
}

/// A DLQ message this run parked itself, left invisible until exit.
struct Held {
    queue: Arc<dyn WorkQueue>,
    receipt: String,
}

/// What every task of one `serve` shares.
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
    /// Stops the loop when one endpoint fails every key.
    breaker: breaker::Breaker,
}

impl Shared {
    /// The state of a new run: nothing received, `stop` its stop token.
    fn new(
        worker: Arc<dyn KeyWorker>,
        dead: Arc<dyn WorkQueue>,
        settings: Settings,
        reporter: Option<Reporter>,
        stop: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Shared {
            worker,
            sem: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            breaker: breaker::Breaker::new(settings.circuit_breaker),
            est_keys: Mutex::new(settings.keys_per_message_hint.max(1) as f64),
            settings,
            dead,
            reporter,
            outstanding: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            room: Notify::new(),
            stop,
            hard: CancellationToken::new(),
            counters: Counters::default(),
            parked: Mutex::new(HashSet::new()),
            held: Mutex::new(HashMap::new()),
        })
    }

    fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::SeqCst)
    }

    /// `n` received keys are no longer outstanding: wake the receivers waiting for room.
    fn release_keys(&self, n: usize) {
        self.outstanding.fetch_sub(n, Ordering::SeqCst);
        self.room.notify_waiters();
    }

    /// After the stop: say so (when it came from `shutdown`), and abort the
    /// running keys once the grace period is over.
    fn start_grace(&self, shutdown: &CancellationToken) -> JoinHandle<()> {
        let grace = self.settings.grace;
        if shutdown.is_cancelled() {
            tracing::info!(
                grace_s = grace.as_secs_f64(),
                in_flight = self.outstanding(),
                "stop requested: no more receives; finishing running keys"
            );
        }
        let hard = self.hard.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            tracing::warn!("grace period over: aborting running keys and returning their messages");
            hard.cancel();
        })
    }
}

/// Decrements `outstanding` when a key ends (finished, panicked or aborted).
struct KeySlot(Arc<Shared>);

impl Drop for KeySlot {
    fn drop(&mut self) {
        self.0.release_keys(1);
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
    let shared = Shared::new(worker, dead, settings, reporter, shutdown.child_token());
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut receivers = receive::start_receivers(&shared, &queues, done_tx);
    let watcher = shared
        .settings
        .until_empty
        .then(|| tokio::spawn(receive::watch_until_empty(shared.clone(), queues.clone())));
    let progress_stop = CancellationToken::new();
    let progress_task = tokio::spawn(metrics::progress(shared.clone(), progress_stop.clone()));

    shared.stop.cancelled().await;
    let deadline = shared.start_grace(&shutdown);
    while receivers.join_next().await.is_some() {}
    // Every tracker holds a sender: recv() returns None once all have ended.
    let _ = done_rx.recv().await;
    deadline.abort();
    wait_for_multipart_aborts(shared.settings.grace).await;
    progress_stop.cancel();
    let _ = progress_task.await;
    let emptied = match watcher {
        Some(w) => w.await.unwrap_or(false),
        None => false,
    };

    let stats = shared.stats(if shared.breaker.tripped().is_some() {
        StopReason::CircuitOpen
    } else if emptied {
        StopReason::QueuesEmpty
    } else {
        StopReason::Signal
    });
    shared.return_held().await;
    stats
}

/// Keys aborted at the end of the grace period leave multipart aborts
/// running: give them their own grace period rather than exiting under them.
async fn wait_for_multipart_aborts(grace: Duration) {
    let left = common::transfer::wait_for_aborts(grace.max(Duration::from_secs(1))).await;
    if left > 0 {
        tracing::error!(
            uploads = left,
            "multipart upload aborts still running at exit: those uploads may be left open"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::test_settings;

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
}
