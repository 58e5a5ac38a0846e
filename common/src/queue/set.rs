//! The configured set of queues both binaries use: which service
//! (`queue.backend`), which queues (`sqs.queue_num` work queues named by
//! `sqs.queue_name_pattern`, numbered from 1, plus `sqs.dead_queue_name`),
//! how `commander init` creates them, which ones an executor receives from,
//! and sending many messages with retries.

use std::ops::Range;
use std::sync::Arc;

use super::local::LocalService;
use super::sqs::SqsService;
use super::{
    Ensured, Outgoing, QueueService, QueueSpec, Redrive, WorkQueue, DLQ_RETENTION,
    MAX_BATCH_ENTRIES,
};
use crate::config::{Config, QueueBackend};
use crate::error::{Error, ErrorKind, Result};
use crate::retry::{Policy, Stop};

/// Open the configured queue service: SQS with the client of
/// `common::clients`, or the embedded queue file for `queue.backend: local`.
pub async fn open_service(cfg: &Config) -> Result<Arc<dyn QueueService>> {
    Ok(match &cfg.queue {
        QueueBackend::Sqs => Arc::new(SqsService::new(crate::clients::sqs_client(cfg).await)),
        QueueBackend::Local(path) => {
            let path = path.clone();
            let svc = tokio::task::spawn_blocking(move || LocalService::open(path))
                .await
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Permanent,
                        "TaskFailed",
                        "queue.path",
                        e.to_string(),
                    )
                })??;
            Arc::new(svc)
        }
    })
}

/// The queues `commander init` creates: the DLQ first (the work queues'
/// redrive policy points at it; retention always [`DLQ_RETENTION`]), then
/// work queues `1..=queue_num`.
pub fn specs(cfg: &Config) -> Vec<QueueSpec> {
    let s = &cfg.sqs;
    let base = |name: String, redrive: Option<Redrive>| QueueSpec {
        name,
        visibility_timeout: s.visibility_timeout,
        receive_wait_time: s.receive_message_wait_time,
        retention: s.message_retention_period,
        redrive,
    };
    // The DLQ keeps messages as long as SQS allows, whatever the work queues use.
    let mut out = vec![QueueSpec {
        retention: DLQ_RETENTION,
        ..base(s.dead_queue_name.clone(), None)
    }];
    out.extend((1..=s.queue_num).map(|n| {
        base(
            cfg.queue_name(n),
            Some(Redrive {
                dead_letter_queue: s.dead_queue_name.clone(),
                max_receive_count: s.max_receive_count,
            }),
        )
    }));
    out
}

/// Create or update every configured queue, in [`specs`] order; idempotent.
/// Returns what happened to each queue so `init` can print it.
pub async fn init(svc: &dyn QueueService, cfg: &Config) -> Result<Vec<(String, Ensured)>> {
    let mut out = Vec::new();
    for spec in specs(cfg) {
        let done = svc.ensure(&spec).await?;
        // DEBUG: `commander init` prints each outcome as its output.
        tracing::debug!(queue = %spec.name, outcome = ?done, "queue ensured");
        out.push((spec.name, done));
    }
    Ok(out)
}

/// The opened work queues (index `n-1` is queue number `n`) and the DLQ.
#[derive(Debug, Clone)]
pub struct QueueSet {
    /// Work queues 1..=`queue_num`, in order.
    pub work: Vec<Arc<dyn WorkQueue>>,
    /// The dead-letter queue.
    pub dead: Arc<dyn WorkQueue>,
}

impl QueueSet {
    /// Open every configured queue; a missing one is an `Input` error naming
    /// it and suggesting `commander init`.
    pub async fn open(svc: &dyn QueueService, cfg: &Config) -> Result<QueueSet> {
        let dead = svc.open(&cfg.sqs.dead_queue_name).await?;
        let mut work = Vec::with_capacity(cfg.sqs.queue_num);
        for n in 1..=cfg.sqs.queue_num {
            work.push(svc.open(&cfg.queue_name(n)).await?);
        }
        Ok(QueueSet { work, dead })
    }

    /// The queues an executor receives from (`-n/--queue-num`, `-d/--including-dead`):
    /// `Some(n)` with `1 ≤ n ≤ queue_num` → only queue `n`; `Some(-1)` → no work
    /// queue; `None` → all work queues; the DLQ last when `including_dead`.
    /// May be empty (`-1` without `-d`): the caller says so. Other numbers are an
    /// `Input` error naming the flag.
    pub fn receive_order(
        &self,
        queue_num: Option<i64>,
        including_dead: bool,
    ) -> Result<Vec<Arc<dyn WorkQueue>>> {
        let mut out: Vec<Arc<dyn WorkQueue>> = match queue_num {
            None => self.work.clone(),
            Some(-1) => Vec::new(),
            Some(n) if n >= 1 && (n as u64) <= self.work.len() as u64 => {
                vec![Arc::clone(&self.work[(n - 1) as usize])]
            }
            Some(n) => {
                return Err(Error::input(
                    "--queue-num",
                    format!(
                    "queue number {n} does not exist: use 1 to {} (sqs.queue_num), or -1 for none",
                    self.work.len()
                ),
                ))
            }
        };
        if including_dead {
            out.push(Arc::clone(&self.dead));
        }
        Ok(out)
    }
}

/// Split `msgs` into SendMessageBatch calls: at most [`MAX_BATCH_ENTRIES`]
/// messages and `max_bytes` (as [`Outgoing::size`] counts) per call, in order.
/// A message alone over `max_bytes` can never be sent: an `Invalid` error.
fn plan_batches(queue: &str, msgs: &[Outgoing], max_bytes: usize) -> Result<Vec<Range<usize>>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, m) in msgs.iter().enumerate() {
        let size = m.size();
        if size > max_bytes {
            return Err(Error::new(
                ErrorKind::Invalid,
                "MessageTooLong",
                queue,
                format!("message {i} is {size} bytes, over the {max_bytes}-byte limit"),
            ));
        }
        if i > start && (i - start == MAX_BATCH_ENTRIES || bytes + size > max_bytes) {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < msgs.len() {
        out.push(start..msgs.len());
    }
    Ok(out)
}

/// Send every message to `q` in as few SendMessageBatch calls as the limits
/// allow (≤ 10 entries, ≤ `max_bytes` per call). Failed entries (and whole
/// calls that failed with a retryable error) are retried alone with
/// exponential backoff and jitter ([`Policy::send`]: a bounded number of
/// times, within a bounded time, per batch). `Ok` means every
/// message was accepted; `Err` carries the error of an entry that kept failing
/// or could never succeed — earlier batches may have been sent by then.
pub async fn send_all(q: &dyn WorkQueue, msgs: Vec<Outgoing>, max_bytes: usize) -> Result<()> {
    send_all_with(q, msgs, max_bytes, &Policy::send()).await
}

async fn send_all_with(
    q: &dyn WorkQueue,
    msgs: Vec<Outgoing>,
    max_bytes: usize,
    policy: &Policy,
) -> Result<()> {
    let ranges = plan_batches(q.name(), &msgs, max_bytes)?;
    let mut msgs = msgs.into_iter();
    for r in ranges {
        let batch: Vec<Outgoing> = msgs.by_ref().take(r.len()).collect();
        send_one_batch(q, batch, policy).await?;
    }
    Ok(())
}

async fn send_one_batch(
    q: &dyn WorkQueue,
    mut pending: Vec<Outgoing>,
    policy: &Policy,
) -> Result<()> {
    let mut attempts = policy.attempts();
    loop {
        let last_err = match q.send_batch(&pending).await {
            Ok(results) => {
                let mut failed = Vec::new();
                let mut last = None;
                for (m, r) in pending.into_iter().zip(results) {
                    match r {
                        Ok(()) => {}
                        Err(e) if e.kind.is_retryable() => {
                            failed.push(m);
                            last = Some(e);
                        }
                        Err(e) => return Err(e),
                    }
                }
                match last {
                    None => return Ok(()),
                    Some(e) => {
                        pending = failed;
                        e
                    }
                }
            }
            Err(e) if e.kind.is_retryable() => e,
            Err(e) => return Err(e),
        };
        let attempt = attempts.count();
        match attempts.next_delay() {
            Ok(delay) => {
                tracing::warn!(queue = q.name(), attempt, failed = pending.len(), error = %last_err, ?delay, "send failed; retrying");
                attempts.sleep(delay).await;
            }
            Err(stop) => {
                let why = match stop {
                    Stop::Elapsed => {
                        format!(" (retry time budget of {:?} spent)", policy.max_elapsed)
                    }
                    _ => String::new(),
                };
                let message = format!(
                    "{} message(s) still rejected after {attempt} attempts{why}: {}",
                    pending.len(),
                    last_err.message
                );
                let mut e = last_err;
                e.message = message;
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Depths, Received};
    use std::sync::Mutex;
    use std::time::Duration;

    #[test]
    fn specs_put_the_dlq_first_and_number_work_queues_from_one() {
        let mut cfg = Config::default();
        cfg.sqs.message_retention_period = Duration::from_secs(86_400);
        let specs = specs(&cfg);
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "s3-migration-dead",
                "s3-migration-01",
                "s3-migration-02",
                "s3-migration-03",
                "s3-migration-04",
                "s3-migration-05"
            ]
        );
        assert_eq!(specs[0].redrive, None);
        assert_eq!(specs[0].retention, DLQ_RETENTION, "the DLQ keeps 14 days");
        for s in &specs[1..] {
            assert_eq!(
                s.redrive,
                Some(Redrive {
                    dead_letter_queue: "s3-migration-dead".into(),
                    max_receive_count: 3
                })
            );
            assert_eq!(s.visibility_timeout, cfg.sqs.visibility_timeout);
            assert_eq!(s.receive_wait_time, cfg.sqs.receive_message_wait_time);
            assert_eq!(s.retention, cfg.sqs.message_retention_period);
        }
    }

    #[test]
    fn batches_respect_entry_and_byte_limits() {
        let m = |n: usize| Outgoing::body("x".repeat(n));
        let msgs: Vec<Outgoing> = (0..25).map(|_| m(1)).collect();
        assert_eq!(
            plan_batches("q", &msgs, 1000).unwrap(),
            vec![0..10, 10..20, 20..25]
        );
        let msgs = vec![m(40), m(40), m(30), m(100), m(1)];
        assert_eq!(
            plan_batches("q", &msgs, 100).unwrap(),
            vec![0..2, 2..3, 3..4, 4..5]
        );
        let mut with_attr = m(90);
        with_attr.attributes.insert("k".into(), "v".into()); // 90 + 1 + 6 + 1 = 98
        assert_eq!(
            plan_batches("q", &[with_attr.clone(), m(2), m(1)], 100).unwrap(),
            vec![0..2, 2..3]
        );
        let err = plan_batches("q", &[m(1), m(101)], 100).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Invalid);
        assert!(err.message.contains("message 1"), "{err}");
        assert!(plan_batches("q", &[], 100).unwrap().is_empty());
    }

    /// A queue that records what it accepted and fails chosen bodies for
    /// their first `fail_times` attempts with the given kind.
    #[derive(Debug, Default)]
    struct Flaky {
        accepted: Mutex<Vec<String>>,
        calls: Mutex<usize>,
        fail: Vec<(String, usize, ErrorKind)>,
        seen: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl WorkQueue for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        async fn send_batch(&self, messages: &[Outgoing]) -> Result<Vec<Result<()>>> {
            *self.calls.lock().unwrap() += 1;
            assert!(messages.len() <= MAX_BATCH_ENTRIES);
            let mut out = Vec::new();
            for m in messages {
                let mut seen = self.seen.lock().unwrap();
                seen.push(m.body.clone());
                let tries = seen.iter().filter(|b| **b == m.body).count();
                match self.fail.iter().find(|(b, _, _)| *b == m.body) {
                    Some((_, times, kind)) if tries <= *times => {
                        out.push(Err(Error::new(*kind, "Injected", "flaky", "injected")))
                    }
                    _ => {
                        self.accepted.lock().unwrap().push(m.body.clone());
                        out.push(Ok(()));
                    }
                }
            }
            Ok(out)
        }
        async fn receive(
            &self,
            _: usize,
            _: Duration,
            _: Option<Duration>,
        ) -> Result<Vec<Received>> {
            Ok(Vec::new())
        }
        async fn delete(&self, _: &str) -> Result<()> {
            Ok(())
        }
        async fn set_visibility(&self, _: &str, _: Duration) -> Result<()> {
            Ok(())
        }
        async fn depths(&self) -> Result<Depths> {
            Ok(Depths::default())
        }
    }

    const FAST: Policy = Policy {
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        max_attempts: 4,
        max_elapsed: Duration::from_secs(60),
    };

    #[tokio::test]
    async fn send_all_retries_only_failed_entries() {
        let q = Flaky {
            fail: vec![("m3".into(), 2, ErrorKind::Retryable)],
            ..Default::default()
        };
        let msgs: Vec<Outgoing> = (0..12).map(|i| Outgoing::body(format!("m{i}"))).collect();
        send_all_with(&q, msgs, 1 << 20, &FAST).await.unwrap();
        let mut accepted = q.accepted.lock().unwrap().clone();
        accepted.sort();
        let mut want: Vec<String> = (0..12).map(|i| format!("m{i}")).collect();
        want.sort();
        assert_eq!(accepted, want, "each message accepted exactly once");
        // 2 batches (10 + 2), then 2 retries of m3 alone.
        assert_eq!(*q.calls.lock().unwrap(), 4);
    }

    #[tokio::test]
    async fn send_all_gives_up_on_permanent_and_persistent_failures() {
        let q = Flaky {
            fail: vec![("bad".into(), 1, ErrorKind::Permanent)],
            ..Default::default()
        };
        let err = send_all_with(
            &q,
            vec![Outgoing::body("ok"), Outgoing::body("bad")],
            1 << 20,
            &FAST,
        )
        .await
        .unwrap_err();
        assert_eq!(
            (err.kind, *q.calls.lock().unwrap()),
            (ErrorKind::Permanent, 1)
        );

        let q = Flaky {
            fail: vec![("slow".into(), 100, ErrorKind::Retryable)],
            ..Default::default()
        };
        let err = send_all_with(&q, vec![Outgoing::body("slow")], 1 << 20, &FAST)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Retryable);
        assert!(err.message.contains("after 4 attempts"), "{err}");
        assert_eq!(*q.calls.lock().unwrap(), 4);
    }

    #[tokio::test]
    async fn init_is_idempotent_and_the_set_opens_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.sqs.queue_num = 3;
        cfg.queue = QueueBackend::Local(dir.path().join("queues.sqlite"));
        let svc = open_service(&cfg).await.unwrap();
        let first = init(&*svc, &cfg).await.unwrap();
        assert_eq!(first.len(), 4);
        assert!(first.iter().all(|(_, e)| *e == Ensured::Created));
        let again = init(&*svc, &cfg).await.unwrap();
        assert!(again.iter().all(|(_, e)| *e == Ensured::Unchanged));
        cfg.sqs.max_receive_count = 5;
        let changed = init(&*svc, &cfg).await.unwrap();
        assert_eq!(changed[0].1, Ensured::Unchanged, "the DLQ has no redrive");
        assert!(changed[1..]
            .iter()
            .all(|(_, e)| *e == Ensured::Updated(vec!["RedrivePolicy".into()])));

        let set = QueueSet::open(&*svc, &cfg).await.unwrap();
        let names =
            |v: Vec<Arc<dyn WorkQueue>>| v.iter().map(|q| q.name().to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(set.receive_order(None, true).unwrap()),
            [
                "s3-migration-01",
                "s3-migration-02",
                "s3-migration-03",
                "s3-migration-dead"
            ]
        );
        assert_eq!(
            names(set.receive_order(Some(2), false).unwrap()),
            ["s3-migration-02"]
        );
        assert_eq!(
            names(set.receive_order(Some(-1), true).unwrap()),
            ["s3-migration-dead"]
        );
        assert!(set.receive_order(Some(-1), false).unwrap().is_empty());
        for bad in [0, 4, -2] {
            let err = set.receive_order(Some(bad), false).unwrap_err();
            assert_eq!(
                (err.kind, err.subject.as_str()),
                (ErrorKind::Input, "--queue-num")
            );
        }

        cfg.sqs.queue_num = 4;
        let err = QueueSet::open(&*svc, &cfg).await.unwrap_err();
        assert!(err.to_string().contains("s3-migration-04"), "{err}");
    }
}
