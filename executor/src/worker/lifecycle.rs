//! One message's life after it is received: decode and admit it, hold it (a
//! DLQ message this run parked itself), keep it invisible while its keys run
//! (visibility extended every third of the timeout), then delete it, park its
//! failed keys first, or return it to its queue when keys did not finish.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::message::{self, Batch, KeyItem};
use common::queue::{Received, WorkQueue, STALE_RECEIPT_CLASS, VISIBILITY_LIMIT_CLASS};
use common::transfer::Done;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::park::failed_item;
use super::{Held, Shared, TrackerSlot};

impl Shared {
    /// Decode a received message, account for its keys and start its tracker.
    pub(super) fn dispatch(
        self: Arc<Self>,
        queue: Arc<dyn WorkQueue>,
        msg: Received,
        done: mpsc::Sender<()>,
    ) {
        self.counters.mark_received();
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
            self.release_keys(total);
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
        let results = self.work_keys(&batch).await;
        // No extension may race the return or the delete below.
        extend_stop.cancel();
        if extender.await.unwrap_or(false) {
            self.counters
                .visibility_limit_reached
                .fetch_add(1, Ordering::Relaxed);
        }
        self.settle(&*queue, &msg, &batch, &results).await;
    }

    /// After the keys ran: return the message when any key did not finish;
    /// else delete it, its failed keys parked first.
    async fn settle(
        &self,
        queue: &dyn WorkQueue,
        msg: &Received,
        batch: &Batch,
        results: &[Option<common::Result<Done>>],
    ) {
        let total = batch.keys.len();
        let finished = results.iter().filter(|r| r.is_some()).count();
        if finished < total {
            tracing::info!(queue = queue.name(), message_id = %msg.message_id, keys = total, finished,
                "stopping: message returned to its queue with unfinished keys");
            return self.return_message(queue, msg).await;
        }
        let failed: Vec<KeyItem> = batch
            .keys
            .iter()
            .zip(results)
            .filter_map(|(item, r)| match r {
                Some(Err(e)) => Some(failed_item(item, e, &self.settings.mode)),
                _ => None,
            })
            .collect();
        if failed.is_empty() {
            self.delete(queue, msg).await;
        } else {
            self.park_failed(queue, msg, batch, failed).await;
        }
    }

    /// DLQ messages held by this run in `queue` (they count as in flight there).
    pub(super) fn held_in(&self, queue: &str) -> u64 {
        self.held
            .lock()
            .expect("held lock")
            .values()
            .filter(|h| h.queue.name() == queue)
            .count() as u64
    }

    /// Leave a DLQ message invisible, not worked, until `return_held` at exit.
    pub(super) fn hold(&self, queue: &Arc<dyn WorkQueue>, msg: &Received) {
        tracing::debug!(queue = queue.name(), message_id = %msg.message_id, "holding a DLQ message this run parked itself");
        self.held.lock().expect("held lock").insert(
            msg.message_id.clone(),
            Held {
                queue: queue.clone(),
                receipt: msg.receipt.clone(),
            },
        );
    }

    /// Make every held DLQ message visible again (at exit).
    pub(super) async fn return_held(&self) {
        let held: Vec<Held> = self
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
    }

    /// Make a message visible again now (it will be received again, by anyone).
    pub(super) async fn return_message(&self, queue: &dyn WorkQueue, msg: &Received) {
        self.counters
            .messages_returned
            .fetch_add(1, Ordering::Relaxed);
        if let Err(e) = queue.set_visibility(&msg.receipt, Duration::ZERO).await {
            tracing::warn!(queue = queue.name(), message_id = %msg.message_id, error = %e,
                "could not return a message; it reappears when its visibility timeout ends");
        }
    }

    /// Delete a finished message: done, unless its receipt went stale meanwhile.
    pub(super) async fn delete(&self, queue: &dyn WorkQueue, msg: &Received) {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_trait::async_trait;
    use common::queue::local::LocalService;
    use common::queue::{
        Outgoing, QueueService, QueueSpec, Received, WorkQueue, STALE_RECEIPT_CLASS,
    };
    use common::report::Reporter;
    use tokio_util::sync::CancellationToken;

    use super::super::testkit::*;
    use super::super::{serve, StopReason};

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
    async fn shutdown_returns_messages_with_unfinished_or_unstarted_keys() {
        let q = queues().await;
        send(&*q.work, vec![body(&["block-1", "k2", "k3"])]).await;
        let w = Arc::new(Scripted::default());
        let mut s = test_settings();
        s.concurrency = 1;
        s.until_empty = false;
        s.grace = Duration::from_millis(300);
        let stats = serve_until_signal(&q, w.clone(), s, 1).await;
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
        let stats = serve_until_signal(&q, w.clone(), s, 2).await;
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
}
