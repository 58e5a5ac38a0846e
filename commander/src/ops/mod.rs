//! Operating a running migration: `status` (queue depths, progress, ETA),
//! `report` (a job's completion reports summed up, failures manifest), `dlq`
//! (what the dead-letter queue holds, without consuming it), `redrive` (DLQ →
//! work queues) and `cleanup` (stale multipart uploads on a target).
//!
//! | module      | role |
//! |-------------|------|
//! | [`status`]  | depths of every queue, done/failed from the reports, throughput and ETA |
//! | [`progress`] | `status`'s Shift-style progress: files and bytes transferred, unchanged, remaining, ... |
//! | [`report`]  | summary of a job's reports; the failed keys as a CSV manifest |
//! | [`dlq`]     | peek at the DLQ: keys grouped by error class, messages returned; `--purge` |
//! | [`redrive`] | move DLQ messages back onto the work queues (all, or one error class) |
//! | [`cleanup`] | abort multipart uploads (remove part files) older than an age |
//!
//! Every command takes the shutdown signal: Ctrl-C stops it between steps and
//! returns whatever it holds to the queue.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::config::Config;
use common::message::dlq::DlqAttributes;
use common::message::{self, Batch, KeyItem};
use common::queue::set::{open_service, QueueSet};
use common::queue::{Received, WorkQueue, MAX_BATCH_ENTRIES};
use common::report::{JobRecord, ReportLocation};

pub mod cleanup;
pub mod dlq;
pub mod progress;
pub mod redrive;
pub mod report;
pub mod status;

/// Error class of a DLQ body that is neither message format (the DLQ contract's).
pub use common::message::dlq::BAD_MESSAGE;

/// Error class of a DLQ key that carries no recorded failure: the queue's
/// redrive policy moved its message after `sqs.max_receive_count` receives
/// (an executor crashed or ran out of time on it), or the message came from
/// the Python tool.
pub const NO_FAILURE: &str = "MaxReceiveCount";

/// Attribute a redrive puts on the messages it sends back to the DLQ (the keys
/// it did not select), so that the same redrive skips them.
pub const SCAN_ATTRIBUTE: &str = "redrive_scan";

/// Longest a scan waits for the next DLQ message before it decides the queue
/// is empty (one second: SQS's shortest long poll, which asks every server).
const SCAN_WAIT: Duration = Duration::from_secs(1);

/// Open the configured queue set (every work queue and the DLQ).
pub(crate) async fn open_queues(cfg: &Config) -> anyhow::Result<QueueSet> {
    let svc = open_service(cfg).await?;
    Ok(QueueSet::open(svc.as_ref(), cfg).await?)
}

/// The configured report location, or an error saying how to configure one.
pub(crate) async fn require_report_location(cfg: &Config) -> anyhow::Result<ReportLocation> {
    common::report::open_report_location(cfg)
        .await?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no report location: set report.location in config.yml (or REPORT_LOCATION) \
             to s3://bucket/prefix/ or a directory, the same one the executors write to"
            )
        })
}

/// The job to show: `job_id` when given (its record may be missing), else the
/// job whose record started last. `Ok(None)`: no job id given and no record.
pub(crate) async fn pick_job(
    loc: &ReportLocation,
    job_id: Option<&str>,
) -> common::Result<Option<(String, Option<JobRecord>)>> {
    match job_id {
        Some(id) => Ok(Some((id.to_string(), loc.read_job(id).await?))),
        None => Ok(loc.jobs().await?.pop().map(|j| (j.job_id.clone(), Some(j)))),
    }
}

/// `s3://bucket/prefix/` or `file:///dir`: where a report location points, for messages.
pub(crate) fn describe_location(loc: &ReportLocation) -> String {
    if loc.prefix.is_empty() {
        loc.store.describe()
    } else {
        format!(
            "{}/{}",
            loc.store.describe().trim_end_matches('/'),
            loc.prefix
        )
    }
}

/// What a DLQ message holds, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Parked {
    /// A batch; `classes[i]` is the error class of `batch.keys[i]`.
    Batch { batch: Batch, classes: Vec<String> },
    /// A body that decodes as neither format: its class (the `error_class`
    /// attribute, else [`BAD_MESSAGE`]) and why it was rejected.
    Bad { class: String, reason: String },
}

/// What a DLQ message holds, by class. A key's class is its recorded failure's class; a
/// key without one takes the message's `error_class` attribute, else
/// [`NO_FAILURE`].
pub fn read_parked(msg: &Received) -> Parked {
    let attrs = DlqAttributes::from_map(&msg.attributes);
    match message::decode(&msg.body) {
        Ok(batch) => {
            let fallback = attrs
                .error_class
                .as_deref()
                .filter(|c| !c.is_empty() && *c != BAD_MESSAGE)
                .unwrap_or(NO_FAILURE);
            let classes = batch.keys.iter().map(|k| key_class(k, fallback)).collect();
            Parked::Batch { batch, classes }
        }
        Err(e) => Parked::Bad {
            class: attrs
                .error_class
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| BAD_MESSAGE.to_string()),
            reason: attrs.reason.unwrap_or_else(|| e.message.clone()),
        },
    }
}

fn key_class(item: &KeyItem, fallback: &str) -> String {
    item.failure
        .as_ref()
        .map(|f| f.class.clone())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| fallback.to_string())
}

/// Reads a queue once through, without consuming it: every message received
/// stays invisible (for `visibility`) until the scan hands it back with
/// [`Scanner::return_held`] or the caller deletes it and calls
/// [`Scanner::forget`]. A message is yielded once per scan (by message id),
/// so a message whose visibility ran out during a long scan is not counted
/// twice; the scan ends when a receive brings nothing new.
pub(crate) struct Scanner {
    queue: Arc<dyn WorkQueue>,
    visibility: Duration,
    max: Option<u64>,
    /// Message id → latest receipt, of messages received and not deleted.
    held: HashMap<String, String>,
    seen: HashSet<String>,
    examined: u64,
    /// Messages carrying this [`SCAN_ATTRIBUTE`] value are held but skipped.
    ignore: Option<String>,
    /// Set when a receive brought back only messages already seen: the scan
    /// took longer than `visibility`.
    pub(crate) wrapped: bool,
}

impl Scanner {
    /// Scan `queue`, stopping after `max` messages when given.
    pub(crate) fn new(queue: Arc<dyn WorkQueue>, visibility: Duration, max: Option<u64>) -> Self {
        Scanner {
            queue,
            visibility,
            max,
            held: HashMap::new(),
            seen: HashSet::new(),
            examined: 0,
            ignore: None,
            wrapped: false,
        }
    }

    /// Messages examined so far.
    pub(crate) fn examined(&self) -> u64 {
        self.examined
    }

    /// Skip (hold, but neither yield nor count) messages whose
    /// [`SCAN_ATTRIBUTE`] is `token`: the ones this scan itself sent to the queue.
    pub(crate) fn ignoring(mut self, token: &str) -> Self {
        self.ignore = Some(token.to_string());
        self
    }

    /// The next messages not yet seen in this scan (held invisible); empty when done.
    pub(crate) async fn next(&mut self) -> common::Result<Vec<Received>> {
        loop {
            let left = match self.max {
                Some(max) => max.saturating_sub(self.examined),
                None => u64::MAX,
            };
            if left == 0 || self.wrapped {
                return Ok(Vec::new());
            }
            let want = (MAX_BATCH_ENTRIES as u64).min(left) as usize;
            let got = self
                .queue
                .receive(want, SCAN_WAIT, Some(self.visibility))
                .await?;
            if got.is_empty() {
                return Ok(Vec::new());
            }
            let (mut fresh, mut reappeared) = (Vec::with_capacity(got.len()), 0);
            for m in got {
                self.held.insert(m.message_id.clone(), m.receipt.clone());
                let ours = self.ignore.is_some()
                    && m.attributes.get(SCAN_ATTRIBUTE) == self.ignore.as_ref();
                if !self.seen.insert(m.message_id.clone()) {
                    reappeared += 1;
                } else if !ours {
                    fresh.push(m);
                }
            }
            if !fresh.is_empty() {
                self.examined += fresh.len() as u64;
                return Ok(fresh);
            }
            if reappeared > 0 {
                tracing::warn!(queue = self.queue.name(), visibility = ?self.visibility,
                    "messages came back during the scan (it took longer than the visibility timeout): stopping here");
                self.wrapped = true;
            }
            // Only our own messages: they stay hidden, so receive again.
        }
    }

    /// The message was deleted: nothing to hand back.
    pub(crate) fn forget(&mut self, message_id: &str) {
        self.held.remove(message_id);
    }

    /// Make every held message visible again now. Returns how many could not
    /// be returned (they reappear by themselves when their visibility ends).
    pub(crate) async fn return_held(&mut self) -> u64 {
        let held: Vec<(String, String)> = self.held.drain().collect();
        let results = futures::future::join_all(
            held.iter()
                .map(|(_, receipt)| self.queue.set_visibility(receipt, Duration::ZERO)),
        )
        .await;
        let mut failed = 0;
        for ((id, _), r) in held.iter().zip(results) {
            if let Err(e) = r {
                failed += 1;
                tracing::warn!(queue = self.queue.name(), message_id = %id, error = %e,
                    "could not return a message; it reappears when its visibility timeout ends");
            }
        }
        failed
    }
}

/// Parse a duration flag (`30`, `90s`, `5m`, `24h`, `7d`).
pub(crate) fn parse_duration_flag(s: &str) -> Result<Duration, String> {
    common::config::parse_duration(s)
}

/// `95` → `1m 35s`; `0` → `0s`.
pub(crate) fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    let (d, h, m, s) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s:02}s"),
        (0, _, _) => format!("{h}h {m:02}m"),
        _ => format!("{d}d {h:02}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::message::Failure;
    use std::collections::BTreeMap;

    fn received(body: &str, attrs: &[(&str, &str)]) -> Received {
        Received {
            message_id: "m".into(),
            receipt: "r".into(),
            body: body.into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            receive_count: 1,
        }
    }

    fn item(key: &str, class: Option<&str>) -> KeyItem {
        KeyItem {
            key: key.into(),
            failure: class.map(|c| Failure {
                class: c.into(),
                message: "m".into(),
                attempts: 1,
                mode: None,
            }),
            ..KeyItem::default()
        }
    }

    #[test]
    fn read_parked_uses_the_key_failure_then_the_attribute_then_max_receive_count() {
        let batch = Batch {
            v: 1,
            job_id: "j".into(),
            source: "s3://a".into(),
            target: "s3://b".into(),
            keys: vec![item("k1", Some("AccessDenied")), item("k2", None)],
        };
        let body = message::encode(&batch);
        let Parked::Batch { classes, .. } = read_parked(&received(&body, &[])) else {
            panic!("a batch")
        };
        assert_eq!(classes, ["AccessDenied", NO_FAILURE]);
        let Parked::Batch { classes, .. } =
            read_parked(&received(&body, &[("error_class", "SlowDown")]))
        else {
            panic!("a batch")
        };
        assert_eq!(classes, ["AccessDenied", "SlowDown"]);

        let bad = read_parked(&received("not json", &[("reason", "why")]));
        assert_eq!(
            bad,
            Parked::Bad {
                class: BAD_MESSAGE.into(),
                reason: "why".into()
            }
        );
        let Parked::Bad { reason, .. } = read_parked(&received("{}", &[])) else {
            panic!("bad")
        };
        assert!(reason.contains("neither"), "{reason}");
    }

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(human_duration(0.2), "0s");
        assert_eq!(human_duration(95.0), "1m 35s");
        assert_eq!(human_duration(3_700.0), "1h 01m");
        assert_eq!(human_duration(90_000.0), "1d 01h");
        assert_eq!(
            parse_duration_flag("24h").unwrap(),
            Duration::from_secs(86_400)
        );
        assert!(parse_duration_flag("soon").is_err());
    }
}
