//! `commander redrive`: move dead-letter messages back onto the work queues.
//!
//! With SQS and no filter (`--error-class`, `--max`, `--dry-run`), the
//! service's own `StartMessageMoveTask` moves everything to work queue 1; when
//! the service does not have it (moto answers 500) or any other error, and
//! always with the embedded queue or a filter, messages are moved one by one:
//! receive from the DLQ → send the selected keys (failure cleared) to a work
//! queue → send the other keys back to the DLQ as a new message → delete the
//! original. The original is deleted only after every send succeeded, so an
//! interrupted redrive loses nothing: messages not yet deleted reappear in the
//! DLQ (at once on Ctrl-C, after `--visibility` if the process died), and a
//! message sent but not deleted is delivered twice — harmless, executors are
//! idempotent.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use common::config::{Config, QueueBackend};
use common::message::{dlq, encode, Batch};
use common::queue::set::{send_all, QueueSet};
use common::queue::{MoveTask, Outgoing, Received, WorkQueue, MAX_MESSAGE_BYTES};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{parse_duration_flag, read_parked, Parked, Scanner};
use crate::summary::thousands;

/// Flags of `commander redrive`.
#[derive(Args, Debug, Clone)]
pub struct RedriveArgs {
    /// Move no more than N DLQ messages
    #[arg(long, value_name = "N")]
    pub max: Option<u64>,
    /// Only keys that failed with this error class (e.g. SlowDown, AccessDenied, MaxReceiveCount, BadMessage)
    #[arg(long, value_name = "CLASS")]
    pub error_class: Option<String>,
    /// Show what would move; move nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Also move bodies that are neither message format (executors park them again)
    #[arg(long)]
    pub include_bad: bool,
    /// Move messages one by one even where SQS StartMessageMoveTask is available
    #[arg(long)]
    pub no_move_task: bool,
    /// How long a DLQ message stays hidden while it is being moved
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration_flag)]
    pub visibility: Duration,
    /// Print the outcome as one JSON object
    #[arg(long)]
    pub json: bool,
}

/// How the one-by-one redrive selects and moves messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedriveOptions {
    pub max: Option<u64>,
    pub error_class: Option<String>,
    pub dry_run: bool,
    pub include_bad: bool,
    pub visibility: Duration,
}

impl From<&RedriveArgs> for RedriveOptions {
    fn from(a: &RedriveArgs) -> Self {
        RedriveOptions {
            max: a.max,
            error_class: a.error_class.clone(),
            dry_run: a.dry_run,
            include_bad: a.include_bad,
            visibility: a.visibility,
        }
    }
}

/// The outcome of a redrive; `--json` prints exactly this.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RedriveReport {
    /// `message-move-task` or `receive-send-delete`.
    pub method: String,
    pub dry_run: bool,
    pub dead_letter_queue: String,
    /// DLQ messages looked at.
    pub examined: u64,
    /// Messages moved (deleted from the DLQ), or that would be.
    pub moved_messages: u64,
    /// Keys sent to the work queues, or that would be.
    pub moved_keys: u64,
    /// Undecodable bodies sent to the work queues (`--include-bad`).
    pub moved_bad: u64,
    /// Moved keys (and bad bodies) by error class.
    pub moved_by_class: BTreeMap<String, u64>,
    /// Messages sent per work queue.
    pub per_queue: BTreeMap<String, u64>,
    /// DLQ messages left as they were (nothing selected in them).
    pub kept_messages: u64,
    /// Keys of other classes left in the DLQ (re-sent as a smaller message when
    /// their message also had selected keys).
    pub kept_keys: u64,
    /// Undecodable bodies left in the DLQ (no `--include-bad`).
    pub bad_skipped: u64,
    /// Messages that could not be moved; they stay in the DLQ.
    pub failed_messages: u64,
    /// Stopped early (Ctrl-C, or the scan outlasted `--visibility`).
    pub partial: bool,
    pub move_task: Option<MoveTask>,
}

/// What to do with one DLQ message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing selected: leave it in the DLQ untouched.
    Keep { keys: u64, bad: bool },
    /// Send `to_work` to a work queue, then `back_to_dlq` (the keys not
    /// selected) to the DLQ, then delete the original.
    Move {
        to_work: Outgoing,
        back_to_dlq: Option<Outgoing>,
        keys: u64,
        kept_keys: u64,
        bad: bool,
        by_class: BTreeMap<String, u64>,
    },
}

/// Decide what happens to `msg`: keys of `error_class` (all keys when `None`)
/// move with their failure cleared; undecodable bodies move unchanged only with
/// `include_bad` or when `error_class` is their class.
pub fn decide(msg: &Received, error_class: Option<&str>, include_bad: bool) -> Decision {
    match read_parked(msg) {
        Parked::Bad { class, .. } => {
            if include_bad || error_class == Some(class.as_str()) {
                Decision::Move {
                    to_work: Outgoing::body(msg.body.clone()),
                    back_to_dlq: None,
                    keys: 0,
                    kept_keys: 0,
                    bad: true,
                    by_class: BTreeMap::from([(class, 1)]),
                }
            } else {
                Decision::Keep { keys: 0, bad: true }
            }
        }
        Parked::Batch { batch, classes } => {
            let mut selected = Vec::new();
            let mut rest = Vec::new();
            let mut by_class = BTreeMap::new();
            let mut rest_class = None;
            for (mut item, class) in batch.keys.iter().cloned().zip(classes) {
                if error_class.is_none_or(|c| c == class) {
                    *by_class.entry(class).or_insert(0) += 1;
                    item.failure = None;
                    selected.push(item);
                } else {
                    rest_class.get_or_insert(class);
                    rest.push(item);
                }
            }
            if selected.is_empty() {
                return Decision::Keep {
                    keys: rest.len() as u64,
                    bad: false,
                };
            }
            let (keys, kept_keys) = (selected.len() as u64, rest.len() as u64);
            let to_work = Outgoing::body(encode(&Batch {
                keys: selected,
                ..batch.clone()
            }));
            let back_to_dlq = rest_class.map(|class| {
                let mut out = Outgoing::body(encode(&Batch {
                    keys: rest,
                    ..batch
                }));
                out.attributes = msg.attributes.clone();
                out.attributes.insert(dlq::ERROR_CLASS.into(), class);
                out
            });
            Decision::Move {
                to_work,
                back_to_dlq,
                keys,
                kept_keys,
                bad: false,
                by_class,
            }
        }
    }
}

/// Picks the work queue for a moved message: the one its keys failed on (the
/// executor's `source_queue` attribute), else the next one in turn.
struct Destinations<'a> {
    work: &'a [Arc<dyn WorkQueue>],
    next: AtomicUsize,
}

impl Destinations<'_> {
    fn pick(&self, msg: &Received) -> &Arc<dyn WorkQueue> {
        let named = msg
            .attributes
            .get(dlq::SOURCE_QUEUE)
            .and_then(|n| self.work.iter().find(|q| q.name() == n));
        named.unwrap_or_else(|| {
            &self.work[self.next.fetch_add(1, Ordering::Relaxed) % self.work.len()]
        })
    }
}

/// Move DLQ messages back onto `set`'s work queues one by one (receive → send →
/// delete). Every message received and not deleted is made visible again
/// before this returns, also on Ctrl-C (`shutdown`) or an error.
pub async fn redrive(
    set: &QueueSet,
    opts: &RedriveOptions,
    shutdown: &CancellationToken,
) -> common::Result<RedriveReport> {
    let mut report = RedriveReport {
        method: "receive-send-delete".into(),
        dry_run: opts.dry_run,
        dead_letter_queue: set.dead.name().to_string(),
        ..Default::default()
    };
    if set.work.is_empty() {
        return Err(common::Error::input(
            "sqs.queue_num",
            "there is no work queue to move messages to",
        ));
    }
    let dest = Destinations {
        work: &set.work,
        next: AtomicUsize::new(0),
    };
    // The keys a filter leaves behind are re-sent to the DLQ with this scan's
    // token, so that this scan does not pick them up again.
    let token = uuid::Uuid::new_v4().simple().to_string();
    let mut scan = Scanner::new(set.dead.clone(), opts.visibility, opts.max).ignoring(&token);
    let result: common::Result<()> = async {
        loop {
            if shutdown.is_cancelled() {
                report.partial = true;
                break;
            }
            let msgs = tokio::select! {
                m = scan.next() => m?,
                _ = shutdown.cancelled() => { report.partial = true; break; }
            };
            if msgs.is_empty() {
                break;
            }
            report.examined += msgs.len() as u64;
            let planned = plan_moves(msgs, opts, &token);
            // Moves of one receive run concurrently; each is send → send → delete.
            let moves = planned.iter().map(|(m, d)| async {
                match d {
                    Decision::Move {
                        to_work,
                        back_to_dlq,
                        ..
                    } if !opts.dry_run => {
                        let q = dest.pick(m);
                        move_one(q.as_ref(), &*set.dead, m, to_work, back_to_dlq.as_ref())
                            .await
                            .map(|()| Some(q.name().to_string()))
                    }
                    Decision::Move { .. } => Ok(Some(dest.pick(m).name().to_string())),
                    Decision::Keep { .. } => Ok(None),
                }
            });
            let results = futures::future::join_all(moves).await;
            for ((m, d), r) in planned.iter().zip(results) {
                if report.record(m, d, r) && !opts.dry_run {
                    scan.forget(&m.message_id);
                }
            }
        }
        Ok(())
    }
    .await;
    report.partial |= scan.wrapped;
    let not_returned = scan.return_held().await;
    if not_returned > 0 {
        tracing::warn!(
            not_returned,
            "some messages stay hidden until their visibility timeout ends"
        );
    }
    result?;
    Ok(report)
}

/// What to do with each received DLQ message. The keys a filter leaves
/// behind are marked with this scan's `token`, so the scan skips them.
fn plan_moves(
    msgs: Vec<Received>,
    opts: &RedriveOptions,
    token: &str,
) -> Vec<(Received, Decision)> {
    msgs.into_iter()
        .map(|m| {
            let mut d = decide(&m, opts.error_class.as_deref(), opts.include_bad);
            if let Decision::Move {
                back_to_dlq: Some(rest),
                ..
            } = &mut d
            {
                rest.attributes
                    .insert(super::SCAN_ATTRIBUTE.to_string(), token.to_string());
            }
            (m, d)
        })
        .collect()
}

impl RedriveReport {
    /// Count one message's decision and what became of its move (the work
    /// queue it went to); `true` when it left the DLQ (or would have, on a dry run).
    fn record(
        &mut self,
        m: &Received,
        d: &Decision,
        moved: common::Result<Option<String>>,
    ) -> bool {
        match (d, moved) {
            (Decision::Keep { keys, bad }, _) => {
                self.kept_messages += 1;
                self.kept_keys += keys;
                self.bad_skipped += u64::from(*bad);
                false
            }
            (
                Decision::Move {
                    keys,
                    kept_keys,
                    bad,
                    by_class,
                    ..
                },
                Ok(queue),
            ) => {
                self.moved_messages += 1;
                self.moved_keys += keys;
                self.kept_keys += kept_keys;
                self.moved_bad += u64::from(*bad);
                for (c, n) in by_class {
                    *self.moved_by_class.entry(c.clone()).or_insert(0) += n;
                }
                if let Some(q) = queue {
                    *self.per_queue.entry(q).or_insert(0) += 1;
                }
                true
            }
            (Decision::Move { .. }, Err(e)) => {
                self.failed_messages += 1;
                tracing::error!(message_id = %m.message_id, error = %e,
                    "could not move a message; it stays in the dead-letter queue");
                false
            }
        }
    }
}

/// Send, then send the rest back, then delete: the original goes only once
/// both sends were accepted.
async fn move_one(
    work: &dyn WorkQueue,
    dead: &dyn WorkQueue,
    msg: &Received,
    to_work: &Outgoing,
    back_to_dlq: Option<&Outgoing>,
) -> common::Result<()> {
    send_all(work, vec![to_work.clone()], MAX_MESSAGE_BYTES).await?;
    if let Some(rest) = back_to_dlq {
        send_all(dead, vec![rest.clone()], MAX_MESSAGE_BYTES).await?;
    }
    dead.delete(&msg.receipt).await
}

/// The human rendering (several lines, ending with a newline).
pub fn render_text(r: &RedriveReport) -> String {
    let verb = if r.dry_run { "would move" } else { "moved" };
    let mut o = String::new();
    if let Some(t) = &r.move_task {
        o.push_str(&format!(
            "StartMessageMoveTask {} -> {}: {} ({} messages moved{})\n",
            r.dead_letter_queue,
            t.destination,
            t.status,
            thousands(t.moved.max(0) as u64),
            t.to_move
                .map(|n| format!(" of {}", thousands(n.max(0) as u64)))
                .unwrap_or_default()
        ));
        if let Some(f) = &t.failure_reason {
            o.push_str(&format!("failure: {f}\n"));
        }
        if t.status == "RUNNING" {
            o.push_str(&format!(
                "the task keeps running; cancel it with: aws sqs cancel-message-move-task --task-handle {}\n",
                t.task_handle
            ));
        }
        return o;
    }
    o.push_str(&format!(
        "{}: {} messages examined{}\n",
        r.dead_letter_queue,
        thousands(r.examined),
        if r.partial { " (stopped early)" } else { "" }
    ));
    let per_queue: Vec<String> = r
        .per_queue
        .iter()
        .map(|(q, n)| format!("{q} {}", thousands(*n)))
        .collect();
    o.push_str(&format!(
        "{verb:<10} {} messages, {} keys{}{}\n",
        thousands(r.moved_messages),
        thousands(r.moved_keys),
        if r.moved_bad > 0 {
            format!(", {} undecodable bodies", thousands(r.moved_bad))
        } else {
            String::new()
        },
        if per_queue.is_empty() {
            String::new()
        } else {
            format!(" ({})", per_queue.join(", "))
        }
    ));
    for (c, n) in &r.moved_by_class {
        o.push_str(&format!("  {c:<28} {}\n", thousands(*n)));
    }
    o.push_str(&format!(
        "{:<10} {} messages untouched, {} keys of other classes",
        "left",
        thousands(r.kept_messages),
        thousands(r.kept_keys)
    ));
    if r.bad_skipped > 0 {
        o.push_str(&format!(
            ", {} undecodable bodies (--include-bad moves them)",
            thousands(r.bad_skipped)
        ));
    }
    o.push('\n');
    if r.failed_messages > 0 {
        o.push_str(&format!(
            "{:<10} {} messages could not be moved; they stay in the DLQ\n",
            "failed",
            thousands(r.failed_messages)
        ));
    }
    o
}

/// `commander redrive`.
pub async fn run(
    cfg: &Config,
    args: &RedriveArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let service = common::queue::set::open_service(cfg).await?;
    let set = QueueSet::open(service.as_ref(), cfg).await?;
    let opts = RedriveOptions::from(args);
    let mut report = None;
    let unfiltered = opts.error_class.is_none() && opts.max.is_none() && !opts.dry_run;
    if cfg.queue == QueueBackend::Sqs && unfiltered && !args.no_move_task {
        let (dead, work) = (set.dead.name(), set.work[0].name());
        match service.move_all(dead, work, &shutdown).await {
            Ok(task) => {
                report = Some(RedriveReport {
                    method: "message-move-task".into(),
                    dead_letter_queue: set.dead.name().to_string(),
                    moved_messages: task.moved.max(0) as u64,
                    move_task: Some(task),
                    ..Default::default()
                })
            }
            Err(why) => tracing::info!(reason = %why.full_message(),
                "StartMessageMoveTask is not available; moving messages one by one"),
        }
    }
    let report = match report {
        Some(r) => r,
        None => redrive(&set, &opts, &shutdown).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_text(&report));
    }
    let task_failed = report
        .move_task
        .as_ref()
        .is_some_and(|t| t.status == "FAILED");
    if report.failed_messages > 0 || task_failed {
        eprintln!("error: some messages could not be moved; they stay in the dead-letter queue (run redrive again)");
        return Ok(common::exit::Exit::Failures.to_exit_code());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::message::{decode, Failure, KeyItem};

    fn item(key: &str, class: Option<&str>) -> KeyItem {
        KeyItem {
            key: key.into(),
            size: Some(3),
            failure: class.map(|c| Failure {
                class: c.into(),
                message: "m".into(),
                attempts: 2,
                mode: Some("copy".into()),
            }),
            ..KeyItem::default()
        }
    }

    fn msg(keys: Vec<KeyItem>, attrs: &[(&str, &str)]) -> Received {
        let b = Batch {
            v: 1,
            job_id: "j".into(),
            source: "s3://a".into(),
            target: "s3://b".into(),
            keys,
        };
        Received {
            message_id: "id".into(),
            receipt: "r".into(),
            body: encode(&b),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            receive_count: 1,
        }
    }

    #[test]
    fn everything_moves_without_a_filter_and_failures_are_cleared() {
        let m = msg(vec![item("a", Some("X")), item("b", None)], &[]);
        let Decision::Move {
            to_work,
            back_to_dlq,
            keys,
            by_class,
            ..
        } = decide(&m, None, false)
        else {
            panic!("move")
        };
        assert_eq!(keys, 2);
        assert!(back_to_dlq.is_none());
        assert_eq!(
            by_class,
            BTreeMap::from([("X".into(), 1), (super::super::NO_FAILURE.into(), 1)])
        );
        let b = decode(&to_work.body).unwrap();
        assert!(b.keys.iter().all(|k| k.failure.is_none()));
        assert_eq!(b.keys[0].size, Some(3), "listing facts are kept");
        assert!(to_work.attributes.is_empty());
    }

    #[test]
    fn a_class_filter_splits_a_message_and_keeps_the_rest_parked() {
        let m = msg(
            vec![
                item("a", Some("X")),
                item("b", Some("Y")),
                item("c", Some("X")),
            ],
            &[("error_class", "X"), ("source_queue", "q-02")],
        );
        let Decision::Move {
            to_work,
            back_to_dlq,
            keys,
            kept_keys,
            ..
        } = decide(&m, Some("X"), false)
        else {
            panic!("move")
        };
        assert_eq!((keys, kept_keys), (2, 1));
        let moved: Vec<String> = decode(&to_work.body)
            .unwrap()
            .keys
            .into_iter()
            .map(|k| k.key)
            .collect();
        assert_eq!(moved, ["a", "c"]);
        let rest = back_to_dlq.expect("the Y key stays parked");
        let parked = decode(&rest.body).unwrap();
        assert_eq!(parked.keys.len(), 1);
        assert_eq!(parked.keys[0].failure.as_ref().unwrap().class, "Y");
        assert_eq!(rest.attributes["error_class"], "Y");
        assert_eq!(rest.attributes["source_queue"], "q-02");

        assert_eq!(
            decide(&m, Some("Z"), false),
            Decision::Keep {
                keys: 3,
                bad: false
            }
        );
    }

    #[test]
    fn undecodable_bodies_move_only_when_asked() {
        let bad = Received {
            message_id: "b".into(),
            receipt: "r".into(),
            body: "garbage".into(),
            attributes: BTreeMap::from([("error_class".into(), "BadMessage".into())]),
            receive_count: 1,
        };
        assert_eq!(
            decide(&bad, None, false),
            Decision::Keep { keys: 0, bad: true }
        );
        for (class, include) in [(None, true), (Some("BadMessage"), false)] {
            let Decision::Move { to_work, bad, .. } = decide(&bad, class, include) else {
                panic!("move")
            };
            assert!(bad);
            assert_eq!(to_work, Outgoing::body("garbage"));
        }
    }

    // ---- the one-by-one redrive against the embedded queue, with faults ----

    use common::queue::local::{Clock, LocalService};
    use common::queue::{Depths, QueueService, QueueSpec};
    use std::collections::BTreeSet;
    use std::sync::atomic::AtomicUsize;

    /// What a [`Faulty`] queue does from its `from`-th send on (0-based).
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Fault {
        /// Refuse the send (a permanent error).
        Fail,
        /// Never answer (the process died mid-send); `reached` is notified.
        Hang,
        /// Send, then cancel `shutdown` (Ctrl-C arrives).
        Cancel,
    }

    /// A real queue whose sends go wrong from the `from`-th one on.
    #[derive(Debug)]
    struct Faulty {
        inner: Arc<dyn WorkQueue>,
        sends: Arc<AtomicUsize>,
        from: usize,
        fault: Fault,
        reached: Arc<tokio::sync::Notify>,
        shutdown: CancellationToken,
    }

    #[async_trait::async_trait]
    impl WorkQueue for Faulty {
        fn name(&self) -> &str {
            self.inner.name()
        }
        async fn send_batch(
            &self,
            messages: &[Outgoing],
        ) -> common::Result<Vec<common::Result<()>>> {
            if self.sends.fetch_add(1, Ordering::SeqCst) >= self.from {
                match self.fault {
                    Fault::Fail => {
                        return Err(common::Error::new(
                            common::ErrorKind::Permanent,
                            "Injected",
                            self.name(),
                            "injected send failure",
                        ))
                    }
                    Fault::Hang => {
                        self.reached.notify_one();
                        std::future::pending::<()>().await;
                    }
                    Fault::Cancel => self.shutdown.cancel(),
                }
            }
            self.inner.send_batch(messages).await
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
            self.inner.delete(receipt).await
        }
        async fn set_visibility(&self, receipt: &str, timeout: Duration) -> common::Result<()> {
            self.inner.set_visibility(receipt, timeout).await
        }
        async fn depths(&self) -> common::Result<Depths> {
            self.inner.depths().await
        }
    }

    const MESSAGES: usize = 25;

    struct Fixture {
        _dir: tempfile::TempDir,
        clock: Clock,
        svc: LocalService,
        reached: Arc<tokio::sync::Notify>,
        shutdown: CancellationToken,
    }

    /// A DLQ with [`MESSAGES`] messages of two keys each (`k<i>a`, `k<i>b`, class X).
    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::system();
        let svc = LocalService::open_with_clock(dir.path().join("q.db"), clock.clone()).unwrap();
        for name in ["dead", "w1", "w2"] {
            svc.ensure(&QueueSpec {
                name: name.into(),
                visibility_timeout: Duration::from_secs(30),
                receive_wait_time: Duration::ZERO,
                retention: Duration::from_secs(86_400),
                redrive: None,
            })
            .await
            .unwrap();
        }
        let dead = svc.open("dead").await.unwrap();
        let bodies: Vec<Outgoing> = (0..MESSAGES)
            .map(|i| {
                let m = msg(
                    vec![
                        item(&format!("k{i}a"), Some("X")),
                        item(&format!("k{i}b"), Some("X")),
                    ],
                    &[],
                );
                Outgoing::body(m.body)
            })
            .collect();
        send_all(&*dead, bodies, MAX_MESSAGE_BYTES).await.unwrap();
        Fixture {
            _dir: dir,
            clock,
            svc,
            reached: Arc::new(tokio::sync::Notify::new()),
            shutdown: CancellationToken::new(),
        }
    }

    impl Fixture {
        /// The queue set, with both work queues faulty from the `from`-th send (shared count).
        async fn set(&self, from: usize, fault: Fault) -> QueueSet {
            let sends = Arc::new(AtomicUsize::new(0));
            let mut work: Vec<Arc<dyn WorkQueue>> = Vec::new();
            for name in ["w1", "w2"] {
                work.push(Arc::new(Faulty {
                    inner: self.svc.open(name).await.unwrap(),
                    sends: sends.clone(),
                    from,
                    fault,
                    reached: self.reached.clone(),
                    shutdown: self.shutdown.clone(),
                }));
            }
            QueueSet {
                work,
                dead: self.svc.open("dead").await.unwrap(),
            }
        }

        /// Every key of every message of `name` (received and deleted), and the message count.
        async fn drain(&self, name: &str) -> (Vec<String>, usize) {
            let q = self.svc.open(name).await.unwrap();
            let (mut keys, mut n) = (Vec::new(), 0);
            loop {
                let got = q.receive(10, Duration::ZERO, None).await.unwrap();
                if got.is_empty() {
                    return (keys, n);
                }
                for m in got {
                    n += 1;
                    keys.extend(decode(&m.body).unwrap().keys.into_iter().map(|k| k.key));
                    q.delete(&m.receipt).await.unwrap();
                }
            }
        }

        /// Keys in the DLQ and the work queues: (all keys, as a set; total count; DLQ messages).
        async fn everything(&self) -> (BTreeSet<String>, usize, usize) {
            let (mut keys, dead_msgs) = self.drain("dead").await;
            keys.extend(self.drain("w1").await.0);
            keys.extend(self.drain("w2").await.0);
            let n = keys.len();
            (keys.into_iter().collect(), n, dead_msgs)
        }
    }

    fn all_keys() -> BTreeSet<String> {
        (0..MESSAGES)
            .flat_map(|i| [format!("k{i}a"), format!("k{i}b")])
            .collect()
    }

    fn opts() -> RedriveOptions {
        RedriveOptions {
            max: None,
            error_class: None,
            dry_run: false,
            include_bad: false,
            visibility: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn a_failing_send_leaves_its_message_in_the_dlq() {
        let f = fixture().await;
        let set = f.set(7, Fault::Fail).await;
        let report = redrive(&set, &opts(), &f.shutdown).await.unwrap();
        assert_eq!(report.moved_messages, 7);
        assert_eq!(report.failed_messages, (MESSAGES - 7) as u64);
        let d = set.dead.depths().await.unwrap();
        assert_eq!(
            (d.visible, d.in_flight),
            ((MESSAGES - 7) as u64, 0),
            "unmoved messages are visible again at once"
        );
        let (keys, count, dead) = f.everything().await;
        assert_eq!(keys, all_keys());
        assert_eq!(count, 2 * MESSAGES, "nothing moved twice");
        assert_eq!(dead, MESSAGES - 7);
    }

    #[tokio::test]
    async fn a_crash_mid_redrive_loses_nothing() {
        let f = fixture().await;
        let set = f.set(13, Fault::Hang).await;
        let o = opts();
        tokio::select! {
            _ = redrive(&set, &o, &f.shutdown) => panic!("the 14th send never answers"),
            _ = f.reached.notified() => {}
        }
        // The process is gone: what it held comes back after the visibility timeout.
        let d = set.dead.depths().await.unwrap();
        assert!(d.in_flight > 0, "{d:?}");
        f.clock.advance(o.visibility + Duration::from_secs(1));
        let (keys, count, _) = f.everything().await;
        assert_eq!(keys, all_keys(), "every key is in a work queue or the DLQ");
        assert!(count >= 2 * MESSAGES);
    }

    #[tokio::test]
    async fn ctrl_c_stops_after_the_current_messages_and_returns_the_rest() {
        let f = fixture().await;
        let set = f.set(3, Fault::Cancel).await;
        let report = redrive(&set, &opts(), &f.shutdown).await.unwrap();
        assert!(report.partial);
        assert!(report.moved_messages >= 4 && report.moved_messages < MESSAGES as u64);
        let d = set.dead.depths().await.unwrap();
        assert_eq!(d.in_flight, 0, "held messages were returned");
        assert_eq!(d.visible, MESSAGES as u64 - report.moved_messages);
        let (keys, count, _) = f.everything().await;
        assert_eq!(keys, all_keys());
        assert_eq!(count, 2 * MESSAGES);
    }

    #[tokio::test]
    async fn max_and_dry_run_move_what_they_say() {
        let f = fixture().await;
        let set = f.set(usize::MAX, Fault::Fail).await;
        let dry = redrive(
            &set,
            &RedriveOptions {
                dry_run: true,
                ..opts()
            },
            &f.shutdown,
        )
        .await
        .unwrap();
        assert_eq!(
            (dry.examined, dry.moved_messages, dry.moved_keys),
            (MESSAGES as u64, MESSAGES as u64, 2 * MESSAGES as u64)
        );
        let d = set.dead.depths().await.unwrap();
        assert_eq!((d.visible, d.in_flight), (MESSAGES as u64, 0));
        let some = redrive(
            &set,
            &RedriveOptions {
                max: Some(4),
                ..opts()
            },
            &f.shutdown,
        )
        .await
        .unwrap();
        assert_eq!(some.moved_messages, 4);
        assert_eq!(some.per_queue.values().sum::<u64>(), 4);
        assert_eq!(some.per_queue.len(), 2, "round-robin over the work queues");
        let (_, moved) = f.drain("w1").await;
        let (_, moved2) = f.drain("w2").await;
        assert_eq!(moved + moved2, 4);
        assert_eq!(
            set.dead.depths().await.unwrap().visible,
            MESSAGES as u64 - 4
        );
    }

    #[test]
    fn text_says_would_move_on_a_dry_run() {
        let r = RedriveReport {
            dry_run: true,
            dead_letter_queue: "dlq".into(),
            examined: 3,
            moved_messages: 2,
            moved_keys: 5,
            bad_skipped: 1,
            kept_messages: 1,
            ..Default::default()
        };
        let t = render_text(&r);
        assert!(t.contains("would move 2 messages, 5 keys"), "{t}");
        assert!(t.contains("--include-bad"), "{t}");
    }
}
