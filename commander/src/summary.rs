//! What `commander run` tells the operator: a live progress line (a `\r` line
//! on a terminal, an info log line every 10 s otherwise) and the final summary
//! (text, or JSON with `--json`).

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;

use common::listing::diff::{Count, Tally};
use common::listing::{ListStats, SkipSummary};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::pipeline::Counters;

/// The final summary of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub job_id: String,
    /// What was enumerated (`s3://bucket/prefix`, a manifest path).
    pub source: String,
    /// `list`, `inventory` or `csv-manifest`.
    pub source_kind: &'static str,
    pub target: String,
    pub dry_run: bool,
    /// Every key of the source was sent (or counted, in a dry run).
    pub complete: bool,
    /// Keys read from the source, before filters.
    pub listed: u64,
    /// Keys sent (or that would be sent).
    pub objects: u64,
    /// Sum of their sizes, where known.
    pub bytes: u64,
    pub messages: u64,
    pub send_calls: u64,
    /// Messages per work queue, in queue order.
    pub queues: Vec<QueueCount>,
    pub skipped: SkipSummary,
    pub elapsed_seconds: f64,
    pub keys_per_second: f64,
    /// Why the run stopped early.
    pub error: Option<String>,
    /// `--start-after` value to resume with (`""`: re-run from the beginning).
    pub resume_start_after: Option<String>,
    /// Inventories and CSV manifests: the `--resume-from` row (FILE:LINE) to resume with.
    pub resume_from: Option<String>,
    /// `--sync`: what the diff found (`None` for other runs).
    pub sync: Option<Tally>,
}

/// Messages sent to one work queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueCount {
    pub queue: String,
    pub messages: u64,
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Quote a key for a POSIX shell command line.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Summary {
    /// The human summary (several lines, ending with a newline).
    pub fn render_text(&self) -> String {
        let mut o = String::new();
        let verb = if self.dry_run {
            "would be sent"
        } else {
            "sent"
        };
        // No `job` line: `run` printed the id when it started (once is enough).
        o.push_str(&format!(
            "source   {} ({})\n",
            self.source, self.source_kind
        ));
        o.push_str(&format!("target   {}\n", self.target));
        o.push_str(&format!(
            "objects  {} {verb} ({}) of {} listed\n",
            thousands(self.objects),
            human_bytes(self.bytes),
            thousands(self.listed)
        ));
        o.push_str(&format!(
            "messages {} in {} SendMessageBatch calls{}\n",
            thousands(self.messages),
            thousands(self.send_calls),
            if self.dry_run {
                " (dry run: nothing sent)"
            } else {
                ""
            }
        ));
        let queues: Vec<String> = self
            .queues
            .iter()
            .map(|q| format!("{}: {}", q.queue, thousands(q.messages)))
            .collect();
        o.push_str(&format!("queues   {}\n", queues.join(", ")));
        let skipped = self.skipped.nonzero();
        if skipped.is_empty() {
            o.push_str("skipped  none\n");
        } else {
            let parts: Vec<String> = skipped
                .iter()
                .map(|(f, n)| format!("{f}: {}", thousands(*n)))
                .collect();
            o.push_str(&format!("skipped  {}\n", parts.join(", ")));
        }
        if let Some(t) = &self.sync {
            o.push_str(&sync_lines(t, self.dry_run));
        }
        o.push_str(&format!(
            "elapsed  {:.1} s ({} keys/s)\n",
            self.elapsed_seconds,
            thousands(self.keys_per_second as u64)
        ));
        if !self.complete {
            o.push_str("status   INCOMPLETE\n");
        }
        o
    }
}

fn files_bytes(c: &Count) -> String {
    format!("{} ({})", thousands(c.files), human_bytes(c.bytes))
}

/// The diff's lines of the summary: what was compared and how it was classified.
fn sync_lines(t: &Tally, dry_run: bool) -> String {
    let changed: Vec<String> = t
        .changed
        .iter()
        .map(|(why, c)| format!("{why}: {}", thousands(c.files)))
        .collect();
    let by = match changed.is_empty() {
        true => String::new(),
        false => format!(" [{}]", changed.join(", ")),
    };
    let deletes = match (t.deletes.files, dry_run) {
        // Also a --delete run that stopped before its deletes (an error,
        // --max-delete): say what happened, not why.
        (0, _) if t.target_only.files > 0 => "kept, none sent as deletes".to_string(),
        (0, _) => "none".to_string(),
        (n, true) => format!("{} would be deleted", thousands(n)),
        (n, false) => format!("{} sent as deletes", thousands(n)),
    };
    format!(
        "compared {} keys (target listed {})\n\
         \x20 new          {}\n\
         \x20 changed      {}{by}\n\
         \x20 unchanged    {}, not sent\n\
         \x20 target-newer {}, not sent (--overwrite-newer sends them)\n\
         \x20 target-only  {}: {deletes}\n",
        thousands(t.compared),
        thousands(t.target_listed),
        files_bytes(&t.new),
        files_bytes(&t.changed_total()),
        files_bytes(&t.unchanged),
        files_bytes(&t.target_newer),
        files_bytes(&t.target_only),
    )
}

/// Show progress until `stop` fires: a `\r` line on a terminal (stderr), an
/// info log line every 10 s otherwise.
pub fn spawn_progress(
    stats: Arc<ListStats>,
    counters: Arc<Counters>,
    tally: Option<Arc<Mutex<Tally>>>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let tty = std::io::stderr().is_terminal();
        let period = if tty {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        };
        let start = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(period);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let listed = stats.seen();
            let sent = counters.keys_sent.load(Ordering::Relaxed);
            let messages = counters.messages_sent.load(Ordering::Relaxed);
            let rate = sent as f64 / start.elapsed().as_secs_f64().max(0.001);
            let diff = tally
                .as_ref()
                .map(|t| t.lock().expect("tally lock").clone());
            let diff_line = diff.as_ref().map_or(String::new(), |t| {
                format!(
                    " · compared {} · new {} · changed {} · unchanged {}",
                    thousands(t.compared),
                    thousands(t.new.files),
                    thousands(t.changed_total().files),
                    thousands(t.unchanged.files)
                )
            });
            if tty {
                let mut err = std::io::stderr().lock();
                let _ = write!(
                    err,
                    "\r\x1b[2Klisted {}{diff_line} · sent {} keys in {} messages · {} keys/s",
                    thousands(listed),
                    thousands(sent),
                    thousands(messages),
                    thousands(rate as u64)
                );
                let _ = err.flush();
            } else {
                tracing::info!(
                    listed,
                    compared = diff.as_ref().map(|t| t.compared),
                    new = diff.as_ref().map(|t| t.new.files),
                    changed = diff.as_ref().map(|t| t.changed_total().files),
                    unchanged = diff.as_ref().map(|t| t.unchanged.files),
                    sent,
                    messages,
                    keys_per_second = rate as u64,
                    "progress"
                );
            }
        }
        if tty {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_only_keys_not_deleted_are_not_blamed_on_a_missing_flag() {
        let mut t = Tally::default();
        t.target_only.add(3);
        let text = sync_lines(&t, false);
        assert!(
            text.contains("target-only  1 (3 B): kept, none sent as deletes"),
            "{text}"
        );
        assert!(
            !text.contains("no --delete"),
            "a --max-delete stop has --delete: {text}"
        );
    }

    #[test]
    fn formats_numbers_and_quotes_keys() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(shell_quote("it's a key"), r"'it'\''s a key'");
    }

    #[test]
    fn text_summary_names_everything() {
        let s = Summary {
            job_id: "job-1".into(),
            source: "s3://src/p/".into(),
            source_kind: "list",
            target: "s3://dst".into(),
            dry_run: false,
            complete: true,
            listed: 1200,
            objects: 1000,
            bytes: 2048,
            messages: 2,
            send_calls: 1,
            queues: vec![
                QueueCount {
                    queue: "q-01".into(),
                    messages: 1,
                },
                QueueCount {
                    queue: "q-02".into(),
                    messages: 1,
                },
            ],
            skipped: SkipSummary {
                include: 200,
                ..SkipSummary::default()
            },
            elapsed_seconds: 2.0,
            keys_per_second: 500.0,
            error: None,
            resume_start_after: None,
            resume_from: None,
            sync: None,
        };
        let t = s.render_text();
        assert!(
            !t.contains("job-1"),
            "the id is printed when the run starts"
        );
        for want in [
            "s3://src/p/",
            "1,000 sent",
            "2.0 KiB",
            "q-01: 1",
            "--include: 200",
            "500 keys/s",
        ] {
            assert!(t.contains(want), "{want} in {t}");
        }
        assert!(!t.contains("INCOMPLETE"));
    }
}
