//! Test fixtures of the loop: a scripted [`KeyWorker`], embedded queues, and
//! helpers to send, drain and serve until empty.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::message::{self, Batch, KeyItem};
use common::queue::local::LocalService;
use common::queue::set::send_all;
use common::queue::{Outgoing, QueueService, QueueSpec, Received, Redrive, WorkQueue};
use common::report::Outcome;
use common::transfer::Done;
use common::{Error, ErrorKind};
use tokio_util::sync::CancellationToken;

use super::{serve, KeyWorker, RunStats, Settings};

/// Decides by key name: `fail-*` AccessDenied, `missing-*` source-missing,
/// `slow-<ms>-*` sleeps, `block-*` waits for `release`, `panic-*` panics,
/// `twice-*`: the first call waits until a second call of it started, the
/// second then waits for `release`.
#[derive(Default)]
pub(super) struct Scripted {
    calls: Mutex<Vec<String>>,
    /// Lets `block-*` keys (and the second call of a `twice-*` key) finish.
    pub(super) release: CancellationToken,
    second: CancellationToken,
    running: AtomicUsize,
    /// Most keys that ran at once.
    pub(super) max_running: AtomicUsize,
}

impl Scripted {
    /// Keys worked so far, in call order.
    pub(super) fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl KeyWorker for Scripted {
    async fn work(&self, _batch: &Batch, item: &KeyItem) -> common::Result<Done> {
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
        Ok(Done {
            outcome,
            bytes: 10,
            note: None,
            proof: None,
        })
    }
}

/// Small, fast settings: four keys at once, `--until-empty`, 100 ms checks.
pub(super) fn test_settings() -> Settings {
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
        circuit_breaker: 0,
    }
}

/// A work queue `work` (redriving to `dead` after 5 receives) and the DLQ `dead`.
pub(super) struct Queues {
    pub(super) _dir: tempfile::TempDir,
    pub(super) work: Arc<dyn WorkQueue>,
    pub(super) dead: Arc<dyn WorkQueue>,
}

/// Fresh queues in an embedded queue service.
pub(super) async fn queues() -> Queues {
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

/// A current-format body of job `job-1`, `s3://src` → `s3://dst`, with `keys`.
pub(super) fn body(keys: &[&str]) -> String {
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

/// Send `bodies` as they are.
pub(super) async fn send(q: &dyn WorkQueue, bodies: Vec<String>) {
    send_all(q, bodies.into_iter().map(Outgoing::body).collect(), 1 << 20)
        .await
        .unwrap();
}

/// Receive and delete everything visible.
pub(super) async fn drain(q: &dyn WorkQueue) -> Vec<Received> {
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

/// `serve` with `s` (until-empty) and no reporter; at most two minutes.
pub(super) async fn serve_until_empty(
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

/// Wait (at most 30 s) until `w` has started `n` keys.
pub(super) async fn wait_for_calls(w: &Scripted, n: usize) {
    for _ in 0..600 {
        if w.calls().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("only {:?} started", w.calls());
}

/// `serve` on `q.work` (no reporter), stopped by its shutdown token once `w`
/// has started `started` keys; its stats, at most a minute after the stop.
pub(super) async fn serve_until_signal(
    q: &Queues,
    w: Arc<Scripted>,
    s: Settings,
    started: usize,
) -> RunStats {
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(serve(
        vec![q.work.clone()],
        q.dead.clone(),
        w.clone(),
        s,
        None,
        shutdown.clone(),
    ));
    wait_for_calls(&w, started).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap()
}
