//! Receiving: one receive loop per receiver task, each long-polling its queue
//! only while this process has room for more keys and asking for as many
//! messages as fill that room; and the `--until-empty` watch that stops the
//! loop once the queues are empty.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::queue::WorkQueue;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::Shared;

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

/// Start `receivers_per_queue` receive loops on each of `queues` (none without
/// queues); each keeps a clone of `done` while it runs.
pub(super) fn start_receivers(
    shared: &Arc<Shared>,
    queues: &[Arc<dyn WorkQueue>],
    done: mpsc::Sender<()>,
) -> JoinSet<()> {
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
        for queue in queues {
            for _ in 0..per_queue {
                receivers.spawn(shared.clone().receive_loop(queue.clone(), done.clone()));
            }
        }
    }
    receivers
}

impl Shared {
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

    /// Messages to ask for in the next receive call.
    fn ask(&self) -> usize {
        let est = *self.est_keys.lock().expect("est lock");
        ask_size(
            self.settings.concurrency,
            self.outstanding(),
            est,
            self.settings.max_receive_num,
        )
    }

    /// Fold a received message's key count into the running estimate.
    pub(super) fn observe_keys(&self, keys: usize) {
        let mut est = self.est_keys.lock().expect("est lock");
        *est = (*est + keys.max(1) as f64) / 2.0;
    }

    /// Receive loop of one receiver.
    pub(super) async fn receive_loop(
        self: Arc<Self>,
        queue: Arc<dyn WorkQueue>,
        done: mpsc::Sender<()>,
    ) {
        let mut backoff = common::retry::Policy::receive().backoff();
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
                    backoff.reset();
                    if !pause_when_empty.is_zero() {
                        tokio::select! {
                            _ = tokio::time::sleep(pause_when_empty) => {}
                            _ = self.stop.cancelled() => break,
                        }
                    }
                }
                Ok(msgs) => {
                    backoff.reset();
                    for msg in msgs {
                        self.clone().dispatch(queue.clone(), msg, done.clone());
                    }
                }
                Err(e) => {
                    let delay = backoff.delay();
                    tracing::warn!(queue = queue.name(), error = %e, retry_in_ms = delay.as_millis() as u64,
                        "receive failed");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.stop.cancelled() => break,
                    }
                }
            }
        }
    }
}

/// `--until-empty`: stop once every queue reports nothing visible, delayed or in
/// flight (DLQ messages held by this run excepted) and this process tracks no message,
/// for two checks in a row.
/// True when it stopped the loop that way; false when the loop was stopped otherwise.
pub(super) async fn watch_until_empty(
    shared: Arc<Shared>,
    queues: Vec<Arc<dyn WorkQueue>>,
) -> bool {
    let mut streak = 0u32;
    loop {
        tokio::select! {
            _ = shared.stop.cancelled() => return false,
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
            shared.stop.cancel();
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::testkit::*;
    use super::*;

    #[test]
    fn ask_size_fills_the_room_with_expected_messages() {
        assert_eq!(ask_size(64, 0, 500.0, 10), 1);
        assert_eq!(ask_size(64, 0, 1.0, 10), 10);
        assert_eq!(ask_size(64, 60, 1.0, 10), 4);
        assert_eq!(ask_size(64, 0, 10.0, 10), 7);
        assert_eq!(ask_size(64, 64, 1.0, 10), 1);
        assert_eq!(ask_size(64, 0, 0.0, 3), 3);
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
}
