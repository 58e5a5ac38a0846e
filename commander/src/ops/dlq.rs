//! `commander dlq`: what the dead-letter queue holds, without consuming it.
//! Every message is received (invisible for `--visibility`), its keys are
//! counted by error class, and then every message is made visible again.
//! Executors reading the DLQ (`-n -1 -d`) do not see those messages while the
//! scan runs.
//!
//! `--purge` removes the messages whose keys have all succeeded since they
//! were parked: the evidence is the message's job's completion reports, where
//! every key of the message must have a succeeded latest outcome (copied,
//! tags-updated, verified, skipped-identical; a later row than the failure,
//! which is a row of the same job too). Without `--yes` it only counts.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use common::config::Config;
use common::queue::{Received, WorkQueue};
use common::report::{Aggregator, ReportLocation};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{parse_duration_flag, read_parked, Parked, Scanner};
use crate::summary::thousands;

/// Flags of `commander dlq`.
#[derive(Args, Debug, Clone)]
pub struct DlqArgs {
    /// Look at no more than N messages
    #[arg(long, value_name = "N")]
    pub max: Option<u64>,
    /// Example keys shown per error class
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub examples: usize,
    /// How long each message stays hidden while the scan runs (longer than the scan)
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration_flag)]
    pub visibility: Duration,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
    /// Remove messages whose keys have all succeeded since (per the job's reports); with --yes only
    #[arg(long)]
    pub purge: bool,
    /// With --purge: only messages holding a key of this error class
    #[arg(long, value_name = "CLASS", requires = "purge")]
    pub error_class: Option<String>,
    /// With --purge: only messages of this job
    #[arg(long, value_name = "ID", requires = "purge")]
    pub job_id: Option<String>,
    /// With --purge: really remove them (without it: only say what would be removed)
    #[arg(long, requires = "purge")]
    pub yes: bool,
}

/// What `dlq --purge` did (or, without `--yes`, would do); `--json` prints this.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    pub queue: String,
    /// `--yes` was not given: nothing was removed.
    pub dry_run: bool,
    pub examined: u64,
    /// Messages removed (or that would be): every key succeeded since.
    pub removed_messages: u64,
    pub removed_keys: u64,
    /// Selected messages kept: some key has no succeeded outcome yet.
    pub kept_messages: u64,
    /// Their keys without a succeeded outcome.
    pub kept_keys_not_succeeded: u64,
    /// Up to three of those keys, with their latest outcome.
    pub kept_examples: Vec<String>,
    /// Messages not selected (other job or class, or a body that is no batch).
    pub not_selected: u64,
    /// Removals that failed (the message stays).
    pub failed_deletes: u64,
    pub not_returned: u64,
    pub partial: bool,
}

/// The purge's evidence: each job's report rows, read once per job.
struct Evidence {
    loc: ReportLocation,
    jobs: HashMap<String, Aggregator>,
}

impl Evidence {
    /// The keys of `batch` whose latest outcome in its job is not a success,
    /// with that outcome (`none` when the key has no row).
    async fn not_succeeded(
        &mut self,
        batch: &common::message::Batch,
    ) -> common::Result<Vec<String>> {
        if !self.jobs.contains_key(&batch.job_id) {
            let mut agg = Aggregator::new(false);
            for key in self.loc.report_files(&batch.job_id).await? {
                for row in self.loc.read_rows(&key).await? {
                    agg.add(row);
                }
            }
            self.jobs.insert(batch.job_id.clone(), agg);
        }
        let agg = &self.jobs[&batch.job_id];
        Ok(batch
            .keys
            .iter()
            .filter_map(|k| match agg.latest(&batch.source, &k.key) {
                Some(o) if o.is_success() => None,
                Some(o) => Some(format!("{} ({o})", k.key)),
                None => Some(format!("{} (no report row)", k.key)),
            })
            .collect())
    }
}

/// Whether `--job-id`/`--error-class` select `m`; its batch when they do.
fn selected(m: &Received, args: &DlqArgs) -> Option<common::message::Batch> {
    let Parked::Batch { batch, classes } = read_parked(m) else {
        return None;
    };
    let job_ok = args.job_id.as_ref().is_none_or(|j| *j == batch.job_id);
    let class_ok = args
        .error_class
        .as_ref()
        .is_none_or(|c| classes.iter().any(|k| k == c));
    (job_ok && class_ok).then_some(batch)
}

/// `dlq --purge`: scan `dead`, remove (with `--yes`) each selected message
/// whose keys all succeeded since; every other message is returned.
pub async fn purge(
    dead: std::sync::Arc<dyn WorkQueue>,
    loc: ReportLocation,
    args: &DlqArgs,
    shutdown: &CancellationToken,
) -> common::Result<PurgeReport> {
    let mut out = PurgeReport {
        queue: dead.name().to_string(),
        dry_run: !args.yes,
        ..Default::default()
    };
    let mut evidence = Evidence {
        loc,
        jobs: HashMap::new(),
    };
    let mut scan = Scanner::new(dead.clone(), args.visibility, args.max);
    let result = async {
        loop {
            let msgs = tokio::select! {
                m = scan.next() => m?,
                _ = shutdown.cancelled() => { out.partial = true; break; }
            };
            if msgs.is_empty() {
                break;
            }
            for m in &msgs {
                out.examined += 1;
                let Some(batch) = selected(m, args) else {
                    out.not_selected += 1;
                    continue;
                };
                let pending = evidence.not_succeeded(&batch).await?;
                if !pending.is_empty() {
                    out.kept_messages += 1;
                    out.kept_keys_not_succeeded += pending.len() as u64;
                    let room = 3usize.saturating_sub(out.kept_examples.len());
                    out.kept_examples.extend(pending.into_iter().take(room));
                    continue;
                }
                if args.yes {
                    if let Err(e) = dead.delete(&m.receipt).await {
                        tracing::warn!(message_id = %m.message_id, error = %e, "could not remove a DLQ message; it stays");
                        out.failed_deletes += 1;
                        continue;
                    }
                    scan.forget(&m.message_id);
                }
                out.removed_messages += 1;
                out.removed_keys += batch.keys.len() as u64;
            }
        }
        common::Result::Ok(())
    }
    .await;
    out.partial |= scan.wrapped || args.max.is_some_and(|m| scan.examined() >= m);
    out.not_returned = scan.return_held().await;
    result?;
    Ok(out)
}

/// The human rendering of a purge (ending with a newline).
pub fn render_purge(p: &PurgeReport) -> String {
    let verb = if p.dry_run { "would remove" } else { "removed" };
    let mut o = format!(
        "{}: {} messages examined{}\n",
        p.queue,
        thousands(p.examined),
        if p.partial { " (partial scan)" } else { "" }
    );
    o.push_str(&format!(
        "  {verb} {} messages ({} keys, every one succeeded since)\n",
        thousands(p.removed_messages),
        thousands(p.removed_keys)
    ));
    o.push_str(&format!(
        "  kept {} messages ({} keys not succeeded yet)\n",
        thousands(p.kept_messages),
        thousands(p.kept_keys_not_succeeded)
    ));
    for e in &p.kept_examples {
        o.push_str(&format!("      e.g. {e}\n"));
    }
    if p.not_selected > 0 {
        o.push_str(&format!(
            "  left {} messages not selected (--job-id, --error-class, or not a batch of keys)\n",
            thousands(p.not_selected)
        ));
    }
    if p.failed_deletes > 0 {
        o.push_str(&format!(
            "  {} messages could not be removed (see the log); they stay\n",
            thousands(p.failed_deletes)
        ));
    }
    if p.dry_run && p.removed_messages > 0 {
        o.push_str("nothing removed: add --yes to remove them\n");
    }
    o
}

/// One error class in the DLQ.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DlqClass {
    /// Keys of this class (undecodable bodies count no keys).
    pub keys: u64,
    /// Messages holding at least one key of this class (or, for undecodable
    /// bodies, the bodies).
    pub messages: u64,
    /// Up to `--examples` keys with their error message (for undecodable
    /// bodies: the start of the body and why it was rejected).
    pub examples: Vec<String>,
}

/// What `dlq --json` prints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DlqListing {
    pub queue: String,
    pub messages: u64,
    pub keys: u64,
    /// By error class (`BadMessage`: undecodable bodies; `MaxReceiveCount`:
    /// keys without a recorded failure).
    pub classes: BTreeMap<String, DlqClass>,
    /// Messages that could not be made visible again (they reappear when
    /// their visibility timeout ends).
    pub not_returned: u64,
    /// The scan stopped early (Ctrl-C, `--max`, or it outlasted `--visibility`).
    pub partial: bool,
}

/// Scan `dead` and group its contents; every message received is returned.
pub async fn list(
    dead: std::sync::Arc<dyn WorkQueue>,
    args: &DlqArgs,
    shutdown: &CancellationToken,
) -> common::Result<DlqListing> {
    let mut out = DlqListing {
        queue: dead.name().to_string(),
        ..Default::default()
    };
    let mut scan = Scanner::new(dead, args.visibility, args.max);
    let result = async {
        loop {
            if shutdown.is_cancelled() {
                out.partial = true;
                break;
            }
            let msgs = tokio::select! {
                m = scan.next() => m?,
                _ = shutdown.cancelled() => { out.partial = true; break; }
            };
            if msgs.is_empty() {
                break;
            }
            for m in &msgs {
                out.messages += 1;
                add(
                    &mut out.classes,
                    read_parked(m),
                    &m.body,
                    args.examples,
                    &mut out.keys,
                );
            }
        }
        common::Result::Ok(())
    }
    .await;
    out.partial |= scan.wrapped || args.max.is_some_and(|m| scan.examined() >= m);
    out.not_returned = scan.return_held().await;
    result?;
    Ok(out)
}

fn add(
    classes: &mut BTreeMap<String, DlqClass>,
    parked: Parked,
    body: &str,
    examples: usize,
    total_keys: &mut u64,
) {
    match parked {
        Parked::Batch {
            batch,
            classes: per_key,
        } => {
            let mut counted = std::collections::HashSet::new();
            for (item, class) in batch.keys.iter().zip(per_key) {
                *total_keys += 1;
                let c = classes.entry(class.clone()).or_default();
                c.keys += 1;
                if counted.insert(class) {
                    c.messages += 1;
                }
                if c.examples.len() < examples {
                    let why = item
                        .failure
                        .as_ref()
                        .map(|f| format!(": {}", f.message))
                        .unwrap_or_default();
                    c.examples.push(format!("{}{why}", item.key));
                }
            }
        }
        Parked::Bad { class, reason } => {
            let c = classes.entry(class).or_default();
            c.messages += 1;
            if c.examples.len() < examples {
                let start: String = body.chars().take(60).collect();
                c.examples.push(format!("{start:?}: {reason}"));
            }
        }
    }
}

/// The human rendering (several lines, ending with a newline).
pub fn render_text(l: &DlqListing) -> String {
    let mut o = format!(
        "{}: {} messages, {} keys{}\n",
        l.queue,
        thousands(l.messages),
        thousands(l.keys),
        if l.partial { " (partial scan)" } else { "" }
    );
    let mut classes: Vec<_> = l.classes.iter().collect();
    classes.sort_by(|a, b| {
        (b.1.keys + b.1.messages)
            .cmp(&(a.1.keys + a.1.messages))
            .then(a.0.cmp(b.0))
    });
    for (class, c) in classes {
        o.push_str(&format!(
            "  {class:<28} {:>10} keys in {} messages\n",
            thousands(c.keys),
            thousands(c.messages)
        ));
        for e in &c.examples {
            o.push_str(&format!("      e.g. {e}\n"));
        }
    }
    if l.not_returned > 0 {
        o.push_str(&format!(
            "note: {} messages could not be made visible again; they reappear when their visibility timeout ends\n",
            thousands(l.not_returned)
        ));
    }
    o
}

/// `commander dlq`.
pub async fn run(
    cfg: &Config,
    args: &DlqArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let set = super::open_queues(cfg).await?;
    if args.purge {
        let loc = super::require_report_location(cfg).await?;
        let p = purge(set.dead.clone(), loc, args, &shutdown).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&p)?);
        } else {
            print!("{}", render_purge(&p));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let listing = list(set.dead.clone(), args, &shutdown).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
    } else {
        print!("{}", render_text(&listing));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::message::{encode, Batch, Failure, KeyItem};

    #[test]
    fn keys_are_grouped_and_messages_counted_once_per_class() {
        let key = |k: &str, c: &str| KeyItem {
            key: k.into(),
            failure: Some(Failure {
                class: c.into(),
                message: format!("{c} happened"),
                attempts: 3,
                mode: None,
            }),
            ..KeyItem::default()
        };
        let batch = Batch {
            v: 1,
            job_id: "j".into(),
            source: "s3://a".into(),
            target: "s3://b".into(),
            keys: vec![key("a", "X"), key("b", "X"), key("c", "Y")],
        };
        let body = encode(&batch);
        let mut classes = BTreeMap::new();
        let mut keys = 0;
        for _ in 0..2 {
            let parked = Parked::Batch {
                batch: batch.clone(),
                classes: vec!["X".into(), "X".into(), "Y".into()],
            };
            add(&mut classes, parked, &body, 3, &mut keys);
        }
        let bad = Parked::Bad {
            class: "BadMessage".into(),
            reason: "not JSON".into(),
        };
        add(&mut classes, bad, "garbage", 3, &mut keys);
        assert_eq!(keys, 6);
        assert_eq!((classes["X"].keys, classes["X"].messages), (4, 2));
        assert_eq!(classes["X"].examples.len(), 3);
        assert_eq!(classes["X"].examples[0], "a: X happened");
        assert_eq!((classes["Y"].keys, classes["Y"].messages), (2, 2));
        assert_eq!(
            (classes["BadMessage"].keys, classes["BadMessage"].messages),
            (0, 1)
        );
        assert!(classes["BadMessage"].examples[0].contains("not JSON"));
        let listing = DlqListing {
            queue: "dlq".into(),
            messages: 3,
            keys,
            classes,
            ..Default::default()
        };
        let t = render_text(&listing);
        assert!(t.find("  X").unwrap() < t.find("  Y").unwrap(), "{t}");
    }
}
