//! `commander status`: where a migration stands. Depths of every work queue
//! and the DLQ; the job's enqueued totals (its job record); done, skipped and
//! failed keys from the executors' completion reports; throughput over the
//! last minutes and an ETA; the job's progress in files and bytes,
//! Shift-style ([`super::progress`]). `--watch` redraws in place; `--json`
//! prints one object per refresh.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use common::config::Config;
use common::queue::set::QueueSet;
use common::report::{Aggregator, JobRecord, Outcome, ProofSums, ReportLocation, Summary};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::progress::{Progress, State, Window};
use super::{human_duration, parse_duration_flag, pick_job};
use crate::summary::{human_bytes, thousands};

/// Flags of `commander status`.
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// Job to show [default: the newest job record at report.location]
    #[arg(long, value_name = "ID")]
    pub job_id: Option<String>,
    /// Print one JSON object (with --watch: one per refresh, one per line)
    #[arg(long)]
    pub json: bool,
    /// Refresh every SECS seconds [default: 5] until Ctrl-C
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "5",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub watch: Option<u64>,
    /// Throughput is measured over this last stretch of time
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration_flag)]
    pub window: Duration,
}

/// One queue's depths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueStatus {
    pub name: String,
    /// The dead-letter queue (else a work queue).
    pub dead: bool,
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

/// The job shown: its id and, when `commander run` wrote one, its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobStatus {
    pub job_id: String,
    pub record: Option<JobRecord>,
}

/// Everything `status` shows; `--json` prints exactly this.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub at: DateTime<Utc>,
    pub queues: Vec<QueueStatus>,
    pub job: Option<JobStatus>,
    /// Objects the job enqueued (its record); `None` without a record.
    pub enqueued: Option<u64>,
    /// Distinct keys with an outcome (succeeded + skipped + source missing +
    /// failed + deleted).
    pub done: u64,
    pub succeeded: u64,
    pub skipped: u64,
    pub source_missing: u64,
    pub failed: u64,
    /// Target-only objects deleted (`--sync --delete`).
    pub deleted: u64,
    /// Bytes written by succeeded keys.
    pub bytes_done: u64,
    /// Bytes compared by check mode (verified keys; nothing written).
    pub bytes_compared: u64,
    /// The proofs of the keys that compared source and target (as `report`).
    pub proofs: ProofSums,
    /// `enqueued - done` (never negative); `None` without a record.
    pub remaining: Option<u64>,
    /// Keys finished per second over the window.
    pub throughput_per_s: f64,
    /// Seconds the throughput was measured over.
    pub window_seconds: f64,
    /// `0` when nothing remains; `None` (unknown) when keys remain but none
    /// finished in the window, or without a record.
    pub eta_seconds: Option<f64>,
    /// Why some numbers are missing, and hints.
    pub notes: Vec<String>,
    /// Files and bytes, Shift-style (see [`Progress`]); `None` without a
    /// job record.
    pub progress: Option<Progress>,
}

/// Throughput, remaining keys and ETA from the counts: `recent` keys finished
/// in the last `window_secs`. The ETA is `0` when nothing remains and `None`
/// (unknown) when keys remain but nothing finished lately.
pub fn estimate(
    enqueued: Option<u64>,
    done: u64,
    recent: u64,
    window_secs: f64,
) -> (f64, Option<u64>, Option<f64>) {
    let throughput = if window_secs > 0.0 {
        recent as f64 / window_secs
    } else {
        0.0
    };
    let remaining = enqueued.map(|e| e.saturating_sub(done));
    let eta = match remaining {
        Some(0) => Some(0.0),
        Some(r) if throughput > 0.0 => Some(r as f64 / throughput),
        _ => None,
    };
    (throughput, remaining, eta)
}

/// The warning for a work queue whose oldest message is `age` old (`basis`
/// says where that age comes from) when it is within `min(2 days, 20 %)` of
/// the queue's `retention`: past it, the queue deletes the message unworked.
pub fn retention_note(
    queue: &str,
    age: Duration,
    retention: Duration,
    basis: &str,
) -> Option<String> {
    let margin = (retention / 5).min(Duration::from_secs(2 * 86_400));
    if age + margin < retention {
        return None;
    }
    let left = retention.saturating_sub(age);
    Some(format!(
        "the oldest message of {queue} is {} old ({basis}); the queue deletes messages unworked after {} (sqs.message_retention_period), {} from now: add executors, or redrive before it expires",
        human_duration(age.as_secs_f64()),
        human_duration(retention.as_secs_f64()),
        human_duration(left.as_secs_f64())
    ))
}

/// Polls the queues and a job's reports. Report files are written once and
/// never changed, so each refresh reads only the files that are new since the
/// last one (the aggregate is kept between refreshes).
pub struct Watcher {
    set: QueueSet,
    location: Option<ReportLocation>,
    job_id: Option<String>,
    window: Duration,
    job: Option<(String, Option<JobRecord>)>,
    aggregator: Aggregator,
    files_read: HashSet<String>,
    /// `finished_at` of rows that may still fall in the window, with the
    /// bytes each transferred.
    recent: Vec<(DateTime<Utc>, u64)>,
    /// The work queues' retention, to warn before messages expire.
    retention: Option<Duration>,
}

impl Watcher {
    /// Watch `set`; the job comes from `location` (`job_id`, else the newest record).
    pub fn new(
        set: QueueSet,
        location: Option<ReportLocation>,
        job_id: Option<String>,
        window: Duration,
    ) -> Self {
        Watcher {
            set,
            location,
            job_id,
            window: window.max(Duration::from_secs(1)),
            job: None,
            aggregator: Aggregator::new(false),
            files_read: HashSet::new(),
            recent: Vec::new(),
            retention: None,
        }
    }

    /// Warn when a work queue's oldest message nears `retention`.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// One refresh at time `now`.
    pub async fn poll(&mut self, now: DateTime<Utc>) -> common::Result<Status> {
        let mut queues = Vec::with_capacity(self.set.work.len() + 1);
        for (q, dead) in self
            .set
            .work
            .iter()
            .map(|q| (q, false))
            .chain(std::iter::once((&self.set.dead, true)))
        {
            let d = q.depths().await?;
            queues.push(QueueStatus {
                name: q.name().to_string(),
                dead,
                visible: d.visible,
                in_flight: d.in_flight,
                delayed: d.delayed,
            });
        }
        let mut notes = Vec::new();
        // Ages the backend knows (the embedded queue: each message's enqueue
        // time); SQS tells none, then the job's start bounds it (below).
        let mut ages_unknown = false;
        if let Some(retention) = self.retention {
            for (q, st) in self.set.work.iter().zip(&queues) {
                if st.visible + st.in_flight + st.delayed == 0 {
                    continue;
                }
                match q.oldest_message_age().await? {
                    Some(age) => notes.extend(retention_note(
                        q.name(),
                        age,
                        retention,
                        "from its enqueue time",
                    )),
                    None => ages_unknown = true,
                }
            }
        }
        let dlq = queues.last().map(|q| q.visible + q.in_flight).unwrap_or(0);
        if dlq > 0 {
            notes.push(format!(
                "{} message(s) in the dead-letter queue: `commander dlq` shows why, `commander redrive` retries them",
                thousands(dlq)
            ));
        }
        let Some(loc) = self.location.clone() else {
            notes.push("no report location (report.location): queue depths only".to_string());
            return Ok(self.status(now, queues, Summary::default(), (0, 0), notes));
        };
        self.refresh_job(&loc).await?;
        let Some((job_id, record)) = self.job.clone() else {
            notes.push(format!(
                "no job record under {}: progress appears once `commander run` has written one",
                super::describe_location(&loc)
            ));
            return Ok(self.status(now, queues, Summary::default(), (0, 0), notes));
        };
        if let (true, Some(retention), Some(r)) = (ages_unknown, self.retention, record.as_ref()) {
            let age = (now - r.started_at).to_std().unwrap_or_default();
            notes.extend(retention_note(
                "the work queues",
                age,
                retention,
                "at most: the job started enqueuing then; SQS does not report message ages, and messages of an older job would be older",
            ));
        }
        if record.is_none() {
            notes.push(format!(
                "job {job_id} has no job record: enqueued totals and ETA unknown"
            ));
        } else if record.as_ref().is_some_and(|r| r.finished_at.is_none()) {
            notes.push("the commander is still enqueuing: totals and ETA will grow".to_string());
        }
        for key in loc.report_files(&job_id).await? {
            if self.files_read.contains(&key) {
                continue;
            }
            for row in loc.read_rows(&key).await? {
                let written = matches!(row.outcome, Outcome::Copied | Outcome::TagsUpdated);
                let bytes = if written { row.size.unwrap_or(0) } else { 0 };
                self.recent.push((row.finished_at, bytes));
                self.aggregator.add(row);
            }
            self.files_read.insert(key);
        }
        let since = now - self.window_for(record.as_ref(), now);
        self.recent.retain(|(t, _)| *t > since);
        let recent = (
            self.recent.len() as u64,
            self.recent.iter().map(|(_, b)| b).sum(),
        );
        let summary = self.aggregator.snapshot();
        Ok(self.status(now, queues, summary, recent, notes))
    }

    async fn refresh_job(&mut self, loc: &ReportLocation) -> common::Result<()> {
        // The job is chosen once; its record is re-read (the commander updates it).
        match &self.job {
            Some((id, _)) => {
                let id = id.clone();
                let record = loc.read_job(&id).await?;
                self.job = Some((id, record));
            }
            None => self.job = pick_job(loc, self.job_id.as_deref()).await?,
        }
        Ok(())
    }

    /// The window, shortened to the job's age so a young job's rate is not diluted.
    fn window_for(&self, record: Option<&JobRecord>, now: DateTime<Utc>) -> chrono::Duration {
        let window = chrono::Duration::from_std(self.window).unwrap_or(chrono::Duration::MAX);
        match record {
            Some(r) if now > r.started_at => window
                .min(now - r.started_at)
                .max(chrono::Duration::seconds(1)),
            _ => window,
        }
    }

    fn status(
        &self,
        now: DateTime<Utc>,
        queues: Vec<QueueStatus>,
        s: Summary,
        (recent, recent_bytes): (u64, u64),
        notes: Vec<String>,
    ) -> Status {
        let record = self.job.as_ref().and_then(|(_, r)| r.as_ref());
        let window = self.window_for(record, now);
        let window_seconds = window.num_milliseconds() as f64 / 1000.0;
        let enqueued = record.map(|r| r.objects);
        let (throughput, remaining, eta) = estimate(enqueued, s.total, recent, window_seconds);
        let window = Window {
            files: recent,
            bytes: recent_bytes,
            seconds: window_seconds,
        };
        let progress = record.map(|r| super::progress::progress(r, &s, window, now));
        Status {
            at: now,
            queues,
            job: self.job.as_ref().map(|(id, r)| JobStatus {
                job_id: id.clone(),
                record: r.clone(),
            }),
            enqueued,
            done: s.total,
            succeeded: s.succeeded,
            skipped: s.skipped,
            source_missing: s.source_missing,
            failed: s.failed,
            deleted: s.deleted,
            bytes_done: s.bytes,
            bytes_compared: s.bytes_compared,
            proofs: s.proofs,
            remaining,
            throughput_per_s: throughput,
            window_seconds,
            eta_seconds: eta,
            notes,
            progress,
        }
    }
}

/// The human rendering of a [`Status`] (several lines, ending with a newline).
pub fn render_text(s: &Status) -> String {
    let mut o = String::new();
    let width = s
        .queues
        .iter()
        .map(|q| q.name.len() + if q.dead { 6 } else { 0 })
        .max()
        .unwrap_or(5)
        .max(5);
    o.push_str(&format!(
        "{:<width$}  {:>12}  {:>12}  {:>10}\n",
        "queue", "visible", "in flight", "delayed"
    ));
    for q in &s.queues {
        let name = if q.dead {
            format!("{} (DLQ)", q.name)
        } else {
            q.name.clone()
        };
        o.push_str(&format!(
            "{:<width$}  {:>12}  {:>12}  {:>10}\n",
            name,
            thousands(q.visible),
            thousands(q.in_flight),
            thousands(q.delayed)
        ));
    }
    if let Some(job) = &s.job {
        o.push('\n');
        match &job.record {
            Some(r) => {
                let state = if r.finished_at.is_some() {
                    "enqueuing done"
                } else {
                    "still enqueuing"
                };
                o.push_str(&format!(
                    "job         {}  {} -> {}  ({state})\n",
                    job.job_id, r.source, r.target
                ));
                o.push_str(&format!(
                    "enqueued    {} objects, {} in {} messages\n",
                    thousands(r.objects),
                    human_bytes(r.bytes),
                    thousands(r.messages)
                ));
            }
            None => o.push_str(&format!("job         {}  (no job record)\n", job.job_id)),
        }
        let deleted = if s.deleted > 0 {
            format!(", deleted {}", thousands(s.deleted))
        } else {
            String::new()
        };
        o.push_str(&format!(
            "done        {}  (succeeded {}, skipped {}, source missing {}, failed {}{deleted}; {})\n",
            thousands(s.done),
            thousands(s.succeeded),
            thousands(s.skipped),
            thousands(s.source_missing),
            thousands(s.failed),
            super::report::bytes_phrase(s.bytes_done, s.bytes_compared)
        ));
        if s.proofs.total() > 0 {
            o.push_str(&format!(
                "proofs      {}\n",
                super::report::proof_phrase(&s.proofs)
            ));
        }
        if let Some(r) = s.remaining {
            o.push_str(&format!("remaining   {}\n", thousands(r)));
        }
        o.push_str(&format!(
            "throughput  {:.1} keys/s (last {})\n",
            s.throughput_per_s,
            human_duration(s.window_seconds)
        ));
        let listing = s
            .progress
            .as_ref()
            .is_some_and(|p| p.state == State::Listing);
        let eta = match s.eta_seconds {
            Some(e) if listing => format!("at least {} (still listing)", human_duration(e)),
            Some(0.0) => "0 (nothing remains)".to_string(),
            Some(e) => human_duration(e),
            None => "unknown".to_string(),
        };
        o.push_str(&format!("ETA         {eta}\n"));
        if let Some(p) = &s.progress {
            super::progress::render_text(p, s.at, &mut o);
        }
    }
    for n in &s.notes {
        o.push_str(&format!("note: {n}\n"));
    }
    o
}

/// `commander status`: print once, or every `--watch` seconds until Ctrl-C.
pub async fn run(
    cfg: &Config,
    args: &StatusArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let set = super::open_queues(cfg).await?;
    let location = common::report::open_report_location(cfg).await?;
    let mut watcher = Watcher::new(set, location, args.job_id.clone(), args.window)
        .with_retention(cfg.sqs.message_retention_period);
    loop {
        let status = tokio::select! {
            s = watcher.poll(Utc::now()) => s?,
            _ = shutdown.cancelled() => return Ok(ExitCode::SUCCESS),
        };
        if args.json {
            println!("{}", serde_json::to_string(&status)?);
        } else if args.watch.is_some() {
            // Clear the screen and home the cursor, then redraw.
            println!(
                "\x1b[H\x1b[2J{}(refreshing every {}s; Ctrl-C to stop)",
                render_text(&status),
                args.watch.unwrap_or_default()
            );
        } else {
            print!("{}", render_text(&status));
        }
        let Some(secs) = args.watch else {
            return Ok(ExitCode::SUCCESS);
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
            _ = shutdown.cancelled() => return Ok(ExitCode::SUCCESS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_is_zero_when_done_unknown_when_stalled() {
        assert_eq!(estimate(Some(10), 10, 0, 300.0), (0.0, Some(0), Some(0.0)));
        assert_eq!(
            estimate(Some(10), 12, 0, 300.0).1,
            Some(0),
            "never negative"
        );
        assert_eq!(estimate(Some(10), 4, 0, 300.0), (0.0, Some(6), None));
        let (t, r, eta) = estimate(Some(100), 40, 30, 60.0);
        assert_eq!((t, r), (0.5, Some(60)));
        assert_eq!(eta, Some(120.0));
        assert_eq!(estimate(None, 40, 30, 60.0).2, None);
        assert_eq!(estimate(Some(5), 0, 0, 0.0), (0.0, Some(5), None));
    }

    #[test]
    fn retention_warning_starts_within_two_days_or_a_fifth() {
        let day = Duration::from_secs(86_400);
        let basis = "from its enqueue time";
        assert_eq!(retention_note("q", day * 11, day * 14, basis), None);
        let n = retention_note("q", day * 12, day * 14, basis).unwrap();
        assert!(n.contains("12d 00h old (from its enqueue time)"), "{n}");
        assert!(
            n.contains("after 14d 00h") && n.contains("2d 00h from now"),
            "{n}"
        );
        // A short retention warns within its last fifth.
        let hour = Duration::from_secs(3600);
        assert_eq!(retention_note("q", hour * 47 / 60, hour, basis), None);
        assert!(retention_note("q", hour * 49 / 60, hour, basis).is_some());
        assert!(retention_note("q", hour * 2, hour, basis)
            .unwrap()
            .contains("0s from now"));
    }

    #[tokio::test]
    async fn status_warns_when_the_oldest_embedded_message_nears_retention() {
        use common::queue::local::{Clock, LocalService};
        use common::queue::{Outgoing, QueueService, QueueSpec};
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::system();
        let svc =
            LocalService::open_with_clock(dir.path().join("q.sqlite"), clock.clone()).unwrap();
        let spec = |name: &str| QueueSpec {
            name: name.into(),
            visibility_timeout: Duration::from_secs(30),
            receive_wait_time: Duration::ZERO,
            retention: Duration::from_secs(3600),
            redrive: None,
        };
        svc.ensure(&spec("dead")).await.unwrap();
        svc.ensure(&spec("work")).await.unwrap();
        let work = svc.open("work").await.unwrap();
        work.send_batch(&[Outgoing::body("m")]).await.unwrap();
        let set = QueueSet {
            work: vec![work],
            dead: svc.open("dead").await.unwrap(),
        };
        let mut w = Watcher::new(set, None, None, Duration::from_secs(300))
            .with_retention(Duration::from_secs(3600));
        let warned = |s: &Status| s.notes.iter().any(|n| n.contains("oldest message"));
        let s = w.poll(Utc::now()).await.unwrap();
        assert!(!warned(&s), "{:?}", s.notes);
        clock.advance(Duration::from_secs(50 * 60));
        let s = w.poll(Utc::now()).await.unwrap();
        let note = s
            .notes
            .iter()
            .find(|n| n.contains("oldest message"))
            .unwrap_or_else(|| panic!("no warning: {:?}", s.notes));
        assert!(
            note.contains("oldest message of work is 50m")
                && note.contains("from its enqueue time"),
            "{note}"
        );
        assert!(render_text(&s).contains("note: the oldest message of work"));
    }

    #[test]
    fn text_shows_the_dlq_eta_and_notes() {
        let s = Status {
            at: Utc::now(),
            queues: vec![
                QueueStatus {
                    name: "q-01".into(),
                    dead: false,
                    visible: 1234,
                    in_flight: 2,
                    delayed: 0,
                },
                QueueStatus {
                    name: "q-dead".into(),
                    dead: true,
                    visible: 3,
                    in_flight: 0,
                    delayed: 0,
                },
            ],
            job: Some(JobStatus {
                job_id: "j1".into(),
                record: None,
            }),
            enqueued: None,
            done: 7,
            succeeded: 5,
            skipped: 1,
            source_missing: 0,
            failed: 1,
            deleted: 0,
            bytes_done: 2048,
            bytes_compared: 0,
            proofs: ProofSums {
                etag: 4,
                unproven: 2,
                ..Default::default()
            },
            remaining: None,
            throughput_per_s: 0.5,
            window_seconds: 300.0,
            eta_seconds: None,
            notes: vec!["hello".into()],
            progress: None,
        };
        let t = render_text(&s);
        assert!(t.contains("q-dead (DLQ)"), "{t}");
        assert!(t.contains("1,234"), "{t}");
        assert!(t.contains("ETA         unknown"), "{t}");
        assert!(t.contains("(no job record)"), "{t}");
        assert!(t.contains("note: hello"), "{t}");
        assert!(t.contains("last 5m 00s"), "{t}");
        assert!(
            t.contains("proofs      0 proven by checksum, 4 by ETag, 0 by bytes, 2 unproven\n"),
            "{t}"
        );
    }
}
