//! The send pipeline: source → bounded channel of keys → one batcher
//! (a [`BatchBuilder`] per source bucket) → bounded channel of encoded
//! messages → N senders (SendMessageBatch, ≤ 10 entries and ≤
//! `sqs.max_message_bytes` per call, round-robin over the work queues) →
//! counters. Memory is bounded by the channel capacities.
//!
//! Stopping: a send that still fails after retries cancels everything; the
//! batcher keeps draining keys until the source has stopped, so every key that
//! was listed but not sent is known. The resume point is the smallest of: the
//! source's own resume point, and (for each unsent message or key) the key
//! just below its smallest key. Every key not acknowledged by the queue is
//! greater than it, so `--start-after <point>` sends everything that is
//! missing (and some keys again: at-least-once, executors are idempotent).
//! Manifests are not in key order: for them the same is tracked in rows
//! ([`Row`]), the smallest row not acknowledged, for `--resume-from`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use common::listing::{resume_before, Found, ResumeAfter, Row, SourceEnd};
use common::message::{encode, BatchBuilder};
use common::queue::{Outgoing, WorkQueue, MAX_BATCH_ENTRIES};
use common::{Error, ErrorKind};
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

/// Keys waiting for the batcher.
pub const KEY_CHANNEL: usize = 8192;

/// One encoded message, with what the counters and the resume point need.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub body: String,
    pub keys: u64,
    /// Sum of the known sizes of its keys.
    pub bytes: u64,
    /// Smallest key of the message.
    pub min_key: String,
    /// Smallest manifest row of its keys (`None` for listings).
    pub min_row: Option<Row>,
}

/// Where messages go.
#[derive(Debug, Clone)]
pub enum Sink {
    /// The work queues, round-robin per SendMessageBatch call.
    Queues(Vec<Arc<dyn WorkQueue>>),
    /// `--dry-run`: count per queue name, send nothing.
    DryRun(Vec<String>),
}

impl Sink {
    fn names(&self) -> Vec<String> {
        match self {
            Sink::Queues(q) => q.iter().map(|q| q.name().to_string()).collect(),
            Sink::DryRun(n) => n.clone(),
        }
    }
}

/// Live counters (read by the progress line and the summary).
#[derive(Debug, Default)]
pub struct Counters {
    pub keys_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub messages_sent: AtomicU64,
    pub send_calls: AtomicU64,
    /// Messages per work queue, in queue order.
    pub per_queue: Vec<AtomicU64>,
}

/// Pipeline settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub job_id: String,
    /// Message `target` (a location without prefix).
    pub target: String,
    pub batch_num: usize,
    pub max_message_bytes: usize,
    pub senders: usize,
}

/// How the pipeline ended.
#[derive(Debug)]
pub struct PipelineEnd {
    /// First error (source, batching or sending), if any.
    pub error: Option<Error>,
    /// `None`: everything was sent. `Some(r)`: resume with `--start-after r`
    /// (`Some(None)`: from the beginning).
    pub resume: Option<ResumeAfter>,
    /// Manifests: with `resume`, the row to resume from (`--resume-from`):
    /// every row not acknowledged by the queue is at or after it.
    pub resume_row: Option<Row>,
    /// Whether the stop was a cancel from outside (Ctrl-C).
    pub interrupted: bool,
}

/// Run a source through batching and sending until it is exhausted or a
/// failure stops it. `source` receives the key channel and the cancel token.
pub async fn run<F, Fut>(
    settings: Settings,
    sink: Sink,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    source: F,
) -> PipelineEnd
where
    F: FnOnce(mpsc::Sender<Found>, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = SourceEnd> + Send + 'static,
{
    let senders = settings.senders.max(1);
    let (key_tx, key_rx) = mpsc::channel::<Found>(KEY_CHANNEL);
    let (body_tx, body_rx) = mpsc::channel::<Encoded>(senders * MAX_BATCH_ENTRIES);
    let source_task = tokio::spawn(source(key_tx, cancel.clone()));
    let batcher_task = tokio::spawn(batcher(settings.clone(), key_rx, body_tx, cancel.clone()));
    let body_rx = Arc::new(Mutex::new(body_rx));
    let rr = Arc::new(AtomicUsize::new(0));
    let sender_tasks: Vec<_> = (0..senders)
        .map(|_| {
            tokio::spawn(sender(
                sink.clone(),
                body_rx.clone(),
                rr.clone(),
                settings.max_message_bytes,
                counters.clone(),
                cancel.clone(),
            ))
        })
        .collect();

    let mut errors: Vec<Error> = Vec::new();
    let mut resume: Vec<ResumeAfter> = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    match source_task.await {
        Ok(end) => {
            errors.extend(end.error);
            resume.extend(end.unfinished);
            rows.extend(end.next_row);
        }
        Err(e) => errors.push(panic_error("source", e)),
    }
    match batcher_task.await {
        Ok(end) => {
            errors.extend(end.error);
            resume.extend(end.unsent_min.as_deref().map(resume_before));
            rows.extend(end.unsent_row);
        }
        Err(e) => errors.push(panic_error("batcher", e)),
    }
    for t in sender_tasks {
        match t.await {
            Ok(end) => {
                errors.extend(end.error);
                resume.extend(end.unsent_min.as_deref().map(resume_before));
                rows.extend(end.unsent_row);
            }
            Err(e) => errors.push(panic_error("sender", e)),
        }
    }
    let mut rx = body_rx.lock().await;
    while let Ok(left) = rx.try_recv() {
        resume.push(resume_before(&left.min_key));
        rows.extend(left.min_row);
    }
    let interrupted = cancel.is_cancelled() && errors.is_empty();
    if interrupted && resume.is_empty() {
        // Cancelled after everything was sent: nothing to resume.
        return PipelineEnd {
            error: None,
            resume: None,
            resume_row: None,
            interrupted: false,
        };
    }
    let resume = if resume.is_empty() {
        None
    } else {
        resume.into_iter().min()
    };
    let resume_row = resume.as_ref().and(rows.into_iter().min());
    PipelineEnd {
        error: errors.into_iter().next(),
        resume,
        resume_row,
        interrupted,
    }
}

fn panic_error(what: &str, e: tokio::task::JoinError) -> Error {
    Error::new(ErrorKind::Permanent, "Panic", what, e.to_string())
}

struct BatcherEnd {
    error: Option<Error>,
    unsent_min: Option<String>,
    unsent_row: Option<Row>,
}

/// The smaller of two optional rows.
fn lower_row(a: Option<Row>, b: Option<Row>) -> Option<Row> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The smallest row of the `n` oldest pending keys of a builder, removed
/// (a builder closes batches in the order keys were pushed).
fn take_rows(pending: &mut VecDeque<Option<Row>>, n: usize) -> Option<Row> {
    let n = n.min(pending.len());
    pending.drain(..n).flatten().min()
}

fn min_opt(a: Option<String>, b: &str) -> Option<String> {
    match a {
        Some(a) if a.as_str() <= b => Some(a),
        _ => Some(b.to_string()),
    }
}

async fn batcher(
    s: Settings,
    mut rx: mpsc::Receiver<Found>,
    tx: mpsc::Sender<Encoded>,
    cancel: CancellationToken,
) -> BatcherEnd {
    let mut builders: HashMap<Arc<str>, BatchBuilder> = HashMap::new();
    // The rows of each builder's keys not yet in a closed batch, in push order.
    let mut pending: HashMap<Arc<str>, VecDeque<Option<Row>>> = HashMap::new();
    let mut end = BatcherEnd {
        error: None,
        unsent_min: None,
        unsent_row: None,
    };
    let mut stopped = false;
    while let Some(found) = rx.recv().await {
        if stopped || cancel.is_cancelled() {
            stopped = true;
            end.unsent_min = min_opt(end.unsent_min, &found.item.key);
            end.unsent_row = lower_row(end.unsent_row, found.row);
            continue;
        }
        let rows = pending.entry(found.source.clone()).or_default();
        rows.push_back(found.row);
        let builder = builders.entry(found.source.clone()).or_insert_with(|| {
            BatchBuilder::new(
                &s.job_id,
                &found.source,
                &s.target,
                s.batch_num,
                s.max_message_bytes,
            )
        });
        if let Some(batch) = builder.push(found.item) {
            let row = take_rows(rows, batch.keys.len());
            if let Err(e) = forward(&s, batch, row, &tx, &cancel, &mut end).await {
                end.error = e;
                stopped = true;
                cancel.cancel();
            }
        }
    }
    for (source, mut b) in builders {
        if let Some(batch) = b.take() {
            let row = pending
                .get_mut(&source)
                .and_then(|p| take_rows(p, batch.keys.len()));
            if stopped || cancel.is_cancelled() {
                if let Some(k) = batch.keys.iter().map(|k| k.key.as_str()).min() {
                    end.unsent_min = min_opt(end.unsent_min.take(), k);
                }
                end.unsent_row = lower_row(end.unsent_row, row);
                continue;
            }
            if let Err(e) = forward(&s, batch, row, &tx, &cancel, &mut end).await {
                end.error = e;
                stopped = true;
                cancel.cancel();
            }
        }
    }
    end
}

/// Encode and hand a batch to the senders. `Err(Some)`: the batch can never be
/// sent; `Err(None)`: cancelled. Either way the batch is recorded as unsent.
async fn forward(
    s: &Settings,
    batch: common::message::Batch,
    min_row: Option<Row>,
    tx: &mpsc::Sender<Encoded>,
    cancel: &CancellationToken,
    end: &mut BatcherEnd,
) -> Result<(), Option<Error>> {
    let min_key = batch
        .keys
        .iter()
        .map(|k| k.key.as_str())
        .min()
        .unwrap_or_default()
        .to_string();
    let enc = Encoded {
        body: encode(&batch),
        keys: batch.keys.len() as u64,
        // A delete's size is the target's: nothing is written.
        bytes: batch
            .keys
            .iter()
            .filter(|k| k.op != common::message::Op::Delete)
            .filter_map(|k| k.size)
            .sum(),
        min_key,
        min_row,
    };
    if enc.body.len() > s.max_message_bytes {
        end.unsent_min = min_opt(end.unsent_min.take(), &enc.min_key);
        end.unsent_row = lower_row(end.unsent_row, enc.min_row);
        return Err(Some(Error::input(
            "sqs.max_message_bytes",
            format!(
                "a message for key `{}` is {} bytes, over sqs.max_message_bytes ({}): raise it",
                enc.min_key,
                enc.body.len(),
                s.max_message_bytes
            ),
        )));
    }
    let min_key = enc.min_key.clone();
    tokio::select! {
        r = tx.send(enc) => {
            if r.is_err() {
                end.unsent_min = min_opt(end.unsent_min.take(), &min_key);
                end.unsent_row = lower_row(end.unsent_row, min_row);
                return Err(None);
            }
            Ok(())
        }
        _ = cancel.cancelled() => {
            end.unsent_min = min_opt(end.unsent_min.take(), &min_key);
            end.unsent_row = lower_row(end.unsent_row, min_row);
            Err(None)
        }
    }
}

struct SenderEnd {
    error: Option<Error>,
    unsent_min: Option<String>,
    unsent_row: Option<Row>,
}

async fn sender(
    sink: Sink,
    rx: Arc<Mutex<mpsc::Receiver<Encoded>>>,
    rr: Arc<AtomicUsize>,
    max_bytes: usize,
    counters: Arc<Counters>,
    cancel: CancellationToken,
) -> SenderEnd {
    let names = sink.names();
    let mut carry: Option<Encoded> = None;
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let mut group: Vec<Encoded> = Vec::with_capacity(MAX_BATCH_ENTRIES);
        {
            let mut rx = rx.lock().await;
            let first = match carry.take() {
                Some(c) => Some(c),
                None => tokio::select! {
                    m = rx.recv() => m,
                    _ = cancel.cancelled() => None,
                },
            };
            let Some(first) = first else { break };
            let mut total = first.body.len();
            group.push(first);
            while group.len() < MAX_BATCH_ENTRIES {
                match rx.try_recv() {
                    Ok(m) if total + m.body.len() <= max_bytes => {
                        total += m.body.len();
                        group.push(m);
                    }
                    Ok(m) => {
                        carry = Some(m);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        let idx = rr.fetch_add(1, Ordering::Relaxed) % names.len().max(1);
        let result = match &sink {
            Sink::DryRun(_) => Ok(()),
            Sink::Queues(queues) => {
                let msgs: Vec<Outgoing> = group
                    .iter()
                    .map(|m| Outgoing::body(m.body.clone()))
                    .collect();
                common::queue::set::send_all(queues[idx].as_ref(), msgs, max_bytes).await
            }
        };
        match result {
            Ok(()) => {
                let keys: u64 = group.iter().map(|m| m.keys).sum();
                let bytes: u64 = group.iter().map(|m| m.bytes).sum();
                counters.keys_sent.fetch_add(keys, Ordering::Relaxed);
                counters.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
                counters
                    .messages_sent
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                counters.send_calls.fetch_add(1, Ordering::Relaxed);
                if let Some(q) = counters.per_queue.get(idx) {
                    q.fetch_add(group.len() as u64, Ordering::Relaxed);
                }
            }
            Err(e) => {
                cancel.cancel();
                let mut unsent_min: Option<String> = None;
                let mut unsent_row: Option<Row> = None;
                for m in group.iter().chain(carry.iter()) {
                    unsent_min = min_opt(unsent_min, &m.min_key);
                    unsent_row = lower_row(unsent_row, m.min_row);
                }
                let subject = names.get(idx).cloned().unwrap_or_default();
                let message = format!("sending to queue `{subject}` failed: {}", e.message);
                let error = Error::new(e.kind, e.class.clone(), subject, message).with_source(e);
                return SenderEnd {
                    error: Some(error),
                    unsent_min,
                    unsent_row,
                };
            }
        }
    }
    SenderEnd {
        error: None,
        unsent_min: carry.as_ref().map(|c| c.min_key.clone()),
        unsent_row: carry.and_then(|c| c.min_row),
    }
}

impl Counters {
    /// Counters for these queues.
    pub fn for_queues(n: usize) -> Self {
        Counters {
            per_queue: (0..n).map(|_| AtomicU64::new(0)).collect(),
            ..Counters::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::message::{decode, KeyItem};

    fn found(k: &str) -> Found {
        Found {
            source: Arc::from("s3://src"),
            item: KeyItem {
                key: k.to_string(),
                size: Some(10),
                ..KeyItem::default()
            },
            row: None,
        }
    }

    fn settings(batch_num: usize, max: usize) -> Settings {
        Settings {
            job_id: "j".into(),
            target: "s3://dst".into(),
            batch_num,
            max_message_bytes: max,
            senders: 3,
        }
    }

    #[tokio::test]
    async fn dry_run_counts_every_key_and_spreads_calls() {
        let names: Vec<String> = (1..=3).map(|i| format!("q{i}")).collect();
        let counters = Arc::new(Counters::for_queues(3));
        let out = run(
            settings(7, 256 * 1024),
            Sink::DryRun(names),
            counters.clone(),
            CancellationToken::new(),
            |tx, _| async move {
                for i in 0..1000 {
                    tx.send(found(&format!("k{i:04}"))).await.unwrap();
                }
                SourceEnd::default()
            },
        )
        .await;
        assert!(out.error.is_none() && out.resume.is_none(), "{out:?}");
        assert_eq!(counters.keys_sent.load(Ordering::Relaxed), 1000);
        assert_eq!(counters.bytes_sent.load(Ordering::Relaxed), 10_000);
        assert_eq!(counters.messages_sent.load(Ordering::Relaxed), 143);
        let per: u64 = counters
            .per_queue
            .iter()
            .map(|q| q.load(Ordering::Relaxed))
            .sum();
        assert_eq!(per, 143);
    }

    #[tokio::test]
    async fn a_source_error_keeps_what_was_listed_and_resumes_after_it() {
        let counters = Arc::new(Counters::for_queues(1));
        let out = run(
            settings(10, 256 * 1024),
            Sink::DryRun(vec!["q".into()]),
            counters.clone(),
            CancellationToken::new(),
            |tx, _| async move {
                for i in 0..25 {
                    tx.send(found(&format!("k{i:02}"))).await.unwrap();
                }
                SourceEnd {
                    error: Some(Error::input("s3://src/p", "denied")),
                    unfinished: Some(Some("k24".into())),
                    ..SourceEnd::default()
                }
            },
        )
        .await;
        assert_eq!(counters.keys_sent.load(Ordering::Relaxed), 25);
        assert_eq!(out.resume, Some(Some("k24".to_string())));
        assert!(out.error.unwrap().to_string().contains("s3://src/p"));
    }

    #[tokio::test]
    async fn manifest_rows_resume_at_the_smallest_row_not_sent() {
        // Rows 1..=6 with keys in no order; the source stopped after row 6,
        // and the batch holding rows 4..=6 is over the size limit.
        let counters = Arc::new(Counters::for_queues(1));
        let out = run(
            settings(3, 400),
            Sink::DryRun(vec!["q".into()]),
            counters.clone(),
            CancellationToken::new(),
            |tx, _| async move {
                for (line, k) in ["m", "z", "b", &"a".repeat(500), "c", "d"]
                    .iter()
                    .enumerate()
                {
                    let mut f = found(k);
                    f.row = Some(Row {
                        file: 2,
                        line: line as u64 + 1,
                    });
                    if tx.send(f).await.is_err() {
                        break;
                    }
                }
                SourceEnd {
                    error: None,
                    unfinished: Some(None),
                    next_row: Some(Row { file: 2, line: 7 }),
                }
            },
        )
        .await;
        assert!(out.error.is_some());
        // The first message (rows 1..=3) may or may not have been sent before
        // the stop; either way the resume row is the first row not sent.
        let first_unsent = match counters.keys_sent.load(Ordering::Relaxed) {
            0 => 1,
            3 => 4,
            n => panic!("{n} keys sent"),
        };
        assert_eq!(
            out.resume_row,
            Some(Row {
                file: 2,
                line: first_unsent
            })
        );
    }

    #[tokio::test]
    async fn a_message_over_the_limit_stops_with_the_key() {
        let counters = Arc::new(Counters::for_queues(1));
        let out = run(
            settings(10, 200),
            Sink::DryRun(vec!["q".into()]),
            counters,
            CancellationToken::new(),
            |tx, cancel| async move {
                let mut sent = 0;
                for i in 0..5 {
                    if cancel.is_cancelled()
                        || tx
                            .send(found(&format!("{}{i}", "x".repeat(300))))
                            .await
                            .is_err()
                    {
                        break;
                    }
                    sent += 1;
                }
                let _ = sent;
                SourceEnd {
                    error: None,
                    unfinished: Some(Some("zzz".into())),
                    ..SourceEnd::default()
                }
            },
        )
        .await;
        let e = out.error.expect("error");
        assert!(e.to_string().contains("sqs.max_message_bytes"), "{e}");
        let resume = out.resume.expect("resume").expect("a key");
        assert_eq!(resume, "x".repeat(300));
    }

    #[test]
    fn batches_decode_back() {
        let mut b = BatchBuilder::new("j", "s3://a", "s3://b", 2, 1024);
        b.push(found("a").item);
        let batch = b.push(found("b").item).unwrap();
        assert_eq!(decode(&encode(&batch)).unwrap().keys.len(), 2);
    }
}
