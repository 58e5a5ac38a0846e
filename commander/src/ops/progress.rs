//! Shift-style job progress for `commander status`: files and bytes, each
//! split into transferred, unchanged, skipped, deleted, failed and remaining,
//! with percent complete, throughput now and overall, and an estimated end
//! time. Pure functions of the job record (what was sent, and what a `--sync`
//! diff found and did not send) and the report summary; the definitions are
//! in docs/operate.md ("Progress").

use chrono::{DateTime, SecondsFormat, Utc};
use common::report::{parse_outcome, JobRecord, Outcome, Summary};
use serde::Serialize;

use super::human_duration;
use crate::summary::{human_bytes, thousands};

/// One unit (files or bytes) of a job's progress. Unless a part overshoots
/// (a resumed job re-sending keys, sizes that changed since listing), the
/// parts add up: `total = transferred + unchanged + skipped + deleted +
/// failed + remaining`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Amounts {
    /// Everything the job covers. Files: the keys sent (the record's
    /// `objects`, delete items included) plus the keys a `--sync` diff found
    /// unchanged or target-newer, which are never sent. Bytes: the record's
    /// `bytes` (copy and update keys only) plus the sizes of those unsent keys
    /// plus the listed sizes of the target objects sent as deletes.
    pub total: u64,
    /// Written to the target: keys whose latest outcome is `copied` or
    /// `tags-updated` (bytes: their sizes).
    pub transferred: u64,
    /// Shown equal, nothing written: the diff's unchanged keys, and keys whose
    /// latest outcome is `skipped-identical` or `verified` (check mode).
    pub unchanged: u64,
    /// Finished without a write and without being shown equal: the diff's
    /// target-newer keys, and the latest outcomes `target-newer`, `kept`,
    /// `target-exists`, `skipped-filtered` and `source-missing`.
    pub skipped: u64,
    /// Target-only objects deleted (latest outcome `deleted`; bytes: the
    /// sizes the rows give, the target objects').
    pub deleted: u64,
    /// Parked in the DLQ (latest outcome `failed`); a redrive can still
    /// finish them, so they are not complete.
    pub failed: u64,
    /// `total` minus every part above, never negative: sent and not yet
    /// reported (queued, in flight, or in a report not flushed yet).
    pub remaining: u64,
}

impl Amounts {
    /// Finished with any outcome, failures included.
    fn finished(&self) -> u64 {
        self.transferred + self.unchanged + self.skipped + self.deleted + self.failed
    }

    /// Every number with its name, `total` first (the text's rows).
    fn named(&self) -> [(&'static str, u64); 7] {
        [
            ("total", self.total),
            ("transferred", self.transferred),
            ("unchanged", self.unchanged),
            ("skipped", self.skipped),
            ("deleted", self.deleted),
            ("failed", self.failed),
            ("remaining", self.remaining),
        ]
    }
}

/// Files and bytes per second over some stretch of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rate {
    /// Keys finished per second: report rows over the window (as
    /// `throughput_per_s`), distinct keys with an outcome overall.
    pub files_per_s: f64,
    /// Bytes transferred (written), per second.
    pub bytes_per_s: f64,
    /// The stretch measured, in seconds.
    pub seconds: f64,
}

impl Rate {
    fn over(files: u64, bytes: u64, seconds: f64) -> Rate {
        if seconds <= 0.0 {
            return Rate::default();
        }
        Rate {
            files_per_s: files as f64 / seconds,
            bytes_per_s: bytes as f64 / seconds,
            seconds,
        }
    }
}

/// Where the job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The record has no `finished_at`: the commander is still listing and
    /// sending, so totals still grow (no percent, no end time).
    Listing,
    /// Listed; keys remain.
    Running,
    /// Listed and nothing remains (failed keys wait in the DLQ).
    Finished,
}

/// What the rows of the throughput window held: report rows (not distinct
/// keys) finished in the last `seconds`, and the bytes they transferred.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// A job's progress, Shift-style (`progress` in `commander status --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    pub state: State,
    pub files: Amounts,
    pub bytes: Amounts,
    /// Percent (0–100, not a fraction) of the total finished with an outcome
    /// other than failed: `(total − remaining − failed) / total`, of bytes
    /// (of files when the total has no bytes; see `percent_of`). `100` for an
    /// empty job; `None` while listing (the total is not known yet).
    pub percent_complete: Option<f64>,
    /// `bytes` or `files`: what `percent_complete` is a percentage of.
    pub percent_of: &'static str,
    /// Over the status window (`--window`, shortened to a young job's age).
    pub throughput_current: Rate,
    /// Since the record's `started_at`: until now, or, once finished, until
    /// the job ended (`ended_at`).
    pub throughput_overall: Rate,
    pub started_at: DateTime<Utc>,
    /// Finished jobs: the later of the last report row and the end of the
    /// listing. `None` otherwise.
    pub ended_at: Option<DateTime<Utc>>,
    /// Running: now + remaining files / current files per second (`None`
    /// when nothing finished during the window). Finished: `ended_at`.
    /// Listing: `None`.
    pub estimated_end_time: Option<DateTime<Utc>>,
}

/// Which part of [`Amounts`] an outcome finishes a key in.
fn part(outcome: Outcome, a: &mut Amounts) -> &mut u64 {
    match outcome {
        Outcome::Copied | Outcome::TagsUpdated => &mut a.transferred,
        Outcome::SkippedIdentical | Outcome::Verified => &mut a.unchanged,
        Outcome::TargetNewer
        | Outcome::Kept
        | Outcome::TargetExists
        | Outcome::SkippedFiltered
        | Outcome::SourceMissing => &mut a.skipped,
        Outcome::Deleted => &mut a.deleted,
        Outcome::Failed => &mut a.failed,
    }
}

/// Files and bytes of a job from its record and the summary of its reports
/// (see [`Amounts`] for each number). A record without a `sync` tally (an
/// ordinary run) has nothing unsent: its unchanged keys come from rows only.
pub fn amounts(record: &JobRecord, s: &Summary) -> (Amounts, Amounts) {
    let mut files = Amounts {
        total: record.objects,
        ..Default::default()
    };
    let mut bytes = Amounts {
        total: record.bytes,
        ..Default::default()
    };
    if let Some(t) = &record.sync {
        files.total += t.unchanged.files + t.target_newer.files;
        bytes.total += t.unchanged.bytes + t.target_newer.bytes + t.deletes.bytes;
        files.unchanged += t.unchanged.files;
        bytes.unchanged += t.unchanged.bytes;
        files.skipped += t.target_newer.files;
        bytes.skipped += t.target_newer.bytes;
    }
    for (name, n) in &s.by_outcome {
        // Every name comes from `Outcome::as_str`; an unknown one would
        // still be finished, so it counts as skipped rather than remaining.
        let outcome = parse_outcome(name).unwrap_or(Outcome::SkippedFiltered);
        *part(outcome, &mut files) += n;
        *part(outcome, &mut bytes) += s.bytes_by_outcome.get(name).copied().unwrap_or(0);
    }
    files.remaining = files.total.saturating_sub(files.finished());
    bytes.remaining = bytes.total.saturating_sub(bytes.finished());
    (files, bytes)
}

/// `(percent, of)`: see [`Progress::percent_complete`].
pub fn percent_complete(
    files: &Amounts,
    bytes: &Amounts,
    listing: bool,
) -> (Option<f64>, &'static str) {
    let (a, of) = if bytes.total > 0 {
        (bytes, "bytes")
    } else {
        (files, "files")
    };
    if listing {
        return (None, of);
    }
    if a.total == 0 {
        return (Some(100.0), of);
    }
    let complete = a.total.saturating_sub(a.remaining + a.failed);
    (Some(complete as f64 * 100.0 / a.total as f64), of)
}

/// The job's progress at `now` (see [`Progress`] for each field).
pub fn progress(record: &JobRecord, s: &Summary, window: Window, now: DateTime<Utc>) -> Progress {
    let (files, bytes) = amounts(record, s);
    let state = match record.finished_at {
        None => State::Listing,
        Some(_) if files.remaining > 0 => State::Running,
        Some(_) => State::Finished,
    };
    let (percent, of) = percent_complete(&files, &bytes, state == State::Listing);
    let ended_at = (state == State::Finished).then(|| {
        record
            .finished_at
            .into_iter()
            .chain(s.last_finished)
            .max()
            .unwrap_or(now)
    });
    let until = ended_at.unwrap_or(now);
    let overall = Rate::over(
        s.total,
        bytes.transferred,
        (until - record.started_at).num_milliseconds() as f64 / 1000.0,
    );
    let current = Rate::over(window.files, window.bytes, window.seconds);
    let estimated_end_time = match state {
        State::Listing => None,
        State::Finished => ended_at,
        State::Running if current.files_per_s > 0.0 => {
            let secs = files.remaining as f64 / current.files_per_s;
            chrono::Duration::try_milliseconds((secs * 1000.0) as i64).map(|d| now + d)
        }
        State::Running => None,
    };
    Progress {
        state,
        files,
        bytes,
        percent_complete: percent,
        percent_of: of,
        throughput_current: current,
        throughput_overall: overall,
        started_at: record.started_at,
        ended_at,
        estimated_end_time,
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn rate_phrase(r: &Rate) -> String {
    format!(
        "{:.1} files/s, {}/s",
        r.files_per_s,
        human_bytes(r.bytes_per_s as u64)
    )
}

/// The text block of `commander status` (lines ending with a newline).
pub fn render_text(p: &Progress, now: DateTime<Utc>, o: &mut String) {
    let head = match (p.state, p.percent_complete) {
        (State::Listing, _) | (_, None) => {
            "listing: totals still grow; percent and end time once the commander has listed everything".to_string()
        }
        (state, Some(pc)) => {
            let state = if state == State::Finished {
                "finished"
            } else {
                "running"
            };
            // Rounded down: 100.0% only when nothing is left.
            let pc = (pc * 10.0).floor() / 10.0;
            format!("{pc:.1}% complete (of {}), {state}", p.percent_of)
        }
    };
    o.push_str(&format!("progress    {head}\n"));
    o.push_str(&format!("  {:<12}{:>14}  {:>12}\n", "", "files", "bytes"));
    for ((name, files), (_, bytes)) in p.files.named().into_iter().zip(p.bytes.named()) {
        o.push_str(&format!(
            "  {name:<12}{:>14}  {:>12}\n",
            thousands(files),
            human_bytes(bytes)
        ));
    }
    o.push_str(&format!(
        "  now         {} (last {})\n",
        rate_phrase(&p.throughput_current),
        human_duration(p.throughput_current.seconds)
    ));
    o.push_str(&format!(
        "  overall     {} (since {})\n",
        rate_phrase(&p.throughput_overall),
        rfc3339(p.started_at)
    ));
    let ends = match (p.state, p.estimated_end_time) {
        (State::Listing, _) => "unknown while listing".to_string(),
        (State::Finished, Some(t)) => format!("{} (finished)", rfc3339(t)),
        (_, Some(t)) => format!(
            "{} (in {})",
            rfc3339(t),
            human_duration((t - now).num_milliseconds() as f64 / 1000.0)
        ),
        (_, None) => "unknown (nothing finished during the window)".to_string(),
    };
    o.push_str(&format!("  ends        {ends}\n"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::listing::diff::{Count, Tally};
    use std::collections::BTreeMap;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn record(objects: u64, bytes: u64, finished: Option<i64>, sync: Option<Tally>) -> JobRecord {
        JobRecord {
            job_id: "j".into(),
            source: "s3://src".into(),
            target: "s3://dst/".into(),
            target_root: None,
            prefix: String::new(),
            target_prefix: None,
            started_at: t(0),
            finished_at: finished.map(t),
            objects,
            bytes,
            messages: 1,
            per_queue: BTreeMap::new(),
            skipped: BTreeMap::new(),
            repairs: Vec::new(),
            sync,
        }
    }

    /// A summary with `(outcome, keys, bytes)` latest outcomes.
    fn summary(rows: &[(Outcome, u64, u64)], last: Option<i64>) -> Summary {
        let mut s = Summary {
            last_finished: last.map(t),
            ..Default::default()
        };
        for (o, n, b) in rows {
            s.total += n;
            s.by_outcome.insert(o.as_str().into(), *n);
            s.bytes_by_outcome.insert(o.as_str().into(), *b);
        }
        s
    }

    fn count(files: u64, bytes: u64) -> Count {
        Count { files, bytes }
    }

    /// A catch-up: 1,000 unchanged (1,000,000 B), 2 target-newer (200 B)
    /// not sent; 20 copy/update keys (2,000 B) and 5 deletes (500 B) sent.
    fn tally() -> Tally {
        Tally {
            compared: 1_030,
            target_listed: 0,
            new: count(10, 1_000),
            changed: [("size".to_string(), count(10, 1_000))].into(),
            unchanged: count(1_000, 1_000_000),
            target_newer: count(2, 200),
            target_only: count(5, 500),
            deletes: count(5, 500),
        }
    }

    fn sync_record(finished: Option<i64>) -> JobRecord {
        // objects: 20 copy/update + 5 deletes; bytes: the 20 only.
        record(25, 2_000, finished, Some(tally()))
    }

    /// Rows: 12 copied, 1 tags-updated, 2 skipped-identical (an update found
    /// equal), 1 target-newer (an update), 3 deleted, 1 kept, 2 failed.
    fn sync_rows(last: i64) -> Summary {
        summary(
            &[
                (Outcome::Copied, 12, 1_200),
                (Outcome::TagsUpdated, 1, 100),
                (Outcome::SkippedIdentical, 2, 200),
                (Outcome::TargetNewer, 1, 100),
                (Outcome::Deleted, 3, 300),
                (Outcome::Kept, 1, 100),
                (Outcome::Failed, 2, 200),
            ],
            Some(last),
        )
    }

    #[test]
    fn every_field_of_a_running_sync_job() {
        let w = Window {
            files: 6,
            bytes: 600,
            seconds: 60.0,
        };
        let p = progress(&sync_record(Some(10)), &sync_rows(100), w, t(120));
        assert_eq!(p.state, State::Running);
        assert_eq!(
            p.files,
            Amounts {
                total: 25 + 1_000 + 2,
                transferred: 13,
                unchanged: 1_000 + 2,
                skipped: 2 + 1 + 1,
                deleted: 3,
                failed: 2,
                remaining: 3,
            }
        );
        assert_eq!(
            p.bytes,
            Amounts {
                total: 2_000 + 1_000_000 + 200 + 500,
                transferred: 1_300,
                unchanged: 1_000_200,
                skipped: 400,
                deleted: 300,
                failed: 200,
                remaining: 300,
            }
        );
        for a in [p.files, p.bytes] {
            assert_eq!(a.finished() + a.remaining, a.total, "{a:?}");
        }
        // Of bytes: (1,002,700 - 300 remaining - 200 failed) / 1,002,700.
        assert_eq!(p.percent_of, "bytes");
        let pc = p.percent_complete.unwrap();
        assert!(
            (pc - 1_002_200.0 * 100.0 / 1_002_700.0).abs() < 1e-9,
            "{pc}"
        );
        assert_eq!(
            p.throughput_current,
            Rate {
                files_per_s: 0.1,
                bytes_per_s: 10.0,
                seconds: 60.0
            }
        );
        // Overall: 22 keys with an outcome, 1,300 B written, in 120 s.
        let o = p.throughput_overall;
        assert_eq!(o.seconds, 120.0);
        assert!((o.files_per_s - 22.0 / 120.0).abs() < 1e-9, "{o:?}");
        assert!((o.bytes_per_s - 1_300.0 / 120.0).abs() < 1e-9, "{o:?}");
        assert_eq!(p.started_at, t(0));
        assert_eq!(p.ended_at, None);
        // 3 files remain at 0.1 files/s: 30 s from now.
        assert_eq!(p.estimated_end_time, Some(t(150)));

        let mut text = String::new();
        render_text(&p, t(120), &mut text);
        assert!(
            text.contains("progress    99.9% complete (of bytes), running\n"),
            "{text}"
        );
        assert!(
            text.contains("  total                1,027     979.2 KiB\n"),
            "{text}"
        );
        assert!(
            text.contains("  deleted                  3         300 B\n"),
            "{text}"
        );
        assert!(
            text.contains("  now         0.1 files/s, 10 B/s (last 1m 00s)\n"),
            "{text}"
        );
        assert!(
            text.contains("  overall     0.2 files/s, 10 B/s (since 2027-01-15T08:00:00Z)\n"),
            "{text}"
        );
        assert!(
            text.contains("  ends        2027-01-15T08:02:30Z (in 30s)\n"),
            "{text}"
        );
    }

    #[test]
    fn a_job_still_listing_has_no_percent_and_no_end_time() {
        let w = Window {
            files: 6,
            bytes: 600,
            seconds: 60.0,
        };
        let p = progress(&sync_record(None), &sync_rows(100), w, t(120));
        assert_eq!(p.state, State::Listing);
        assert_eq!(
            (p.percent_complete, p.estimated_end_time, p.ended_at),
            (None, None, None)
        );
        // The numbers so far are still shown, and rates are measured.
        assert_eq!((p.files.total, p.files.remaining), (1_027, 3));
        assert_eq!(p.throughput_current.files_per_s, 0.1);
        let mut text = String::new();
        render_text(&p, t(120), &mut text);
        assert!(
            text.contains("progress    listing: totals still grow"),
            "{text}"
        );
        assert!(
            text.contains("  ends        unknown while listing\n"),
            "{text}"
        );
        assert!(!text.contains("% complete"), "{text}");
        // Even with nothing left to work yet: not finished, no 100 %.
        let p = progress(
            &record(0, 0, None, None),
            &Summary::default(),
            Window::default(),
            t(5),
        );
        assert_eq!((p.state, p.percent_complete), (State::Listing, None));
    }

    #[test]
    fn a_finished_job_ends_at_its_last_row() {
        let mut s = sync_rows(300);
        // The last 3 keys copied (300 B): nothing remains.
        *s.by_outcome.get_mut("copied").unwrap() += 3;
        *s.bytes_by_outcome.get_mut("copied").unwrap() += 300;
        s.total += 3;
        let p = progress(&sync_record(Some(10)), &s, Window::default(), t(1_000));
        assert_eq!(p.state, State::Finished);
        assert_eq!((p.files.remaining, p.bytes.remaining), (0, 0));
        assert_eq!(p.ended_at, Some(t(300)));
        assert_eq!(p.estimated_end_time, Some(t(300)));
        // Overall rates stop at the end, not at `now`.
        assert_eq!(p.throughput_overall.seconds, 300.0);
        assert!((p.throughput_overall.files_per_s - 25.0 / 300.0).abs() < 1e-9);
        // Failed keys are finished but not complete.
        let pc = p.percent_complete.unwrap();
        assert!(
            (pc - 1_002_500.0 * 100.0 / 1_002_700.0).abs() < 1e-9,
            "{pc}"
        );
        let mut text = String::new();
        render_text(&p, t(1_000), &mut text);
        assert!(
            text.contains("  ends        2027-01-15T08:05:00Z (finished)\n"),
            "{text}"
        );
        assert!(text.contains("% complete (of bytes), finished\n"), "{text}");

        // A sync run that found nothing to send ends when its listing did.
        let t0 = Tally {
            unchanged: count(4, 40),
            ..Default::default()
        };
        let p = progress(
            &record(0, 0, Some(7), Some(t0)),
            &Summary::default(),
            Window::default(),
            t(50),
        );
        assert_eq!(
            (p.state, p.percent_complete),
            (State::Finished, Some(100.0))
        );
        assert_eq!((p.files.unchanged, p.bytes.unchanged), (4, 40));
        assert_eq!(p.estimated_end_time, Some(t(7)));
    }

    #[test]
    fn deletes_count_in_files_and_bytes_and_add_no_transfer() {
        // Only deletes: 5 sent (500 listed bytes), 3 deleted, 1 kept, 1 pending.
        let tally = Tally {
            target_only: count(5, 500),
            deletes: count(5, 500),
            ..Default::default()
        };
        let s = summary(
            &[(Outcome::Deleted, 3, 300), (Outcome::Kept, 1, 100)],
            Some(20),
        );
        let w = Window {
            files: 4,
            bytes: 0,
            seconds: 40.0,
        };
        let p = progress(&record(5, 0, Some(1), Some(tally)), &s, w, t(40));
        assert_eq!(
            (
                p.files.total,
                p.files.deleted,
                p.files.skipped,
                p.files.remaining
            ),
            (5, 3, 1, 1)
        );
        assert_eq!(
            (p.bytes.total, p.bytes.deleted, p.bytes.remaining),
            (500, 300, 100)
        );
        assert_eq!((p.files.transferred, p.bytes.transferred), (0, 0));
        assert_eq!(
            p.throughput_current.bytes_per_s, 0.0,
            "a delete writes nothing"
        );
        assert_eq!(p.percent_complete, Some(80.0));
        // 1 file at 0.1 files/s.
        assert_eq!(p.estimated_end_time, Some(t(50)));
    }

    #[test]
    fn an_ordinary_run_counts_unchanged_from_rows_only() {
        let s = summary(
            &[
                (Outcome::Copied, 4, 400),
                (Outcome::SkippedIdentical, 3, 300),
                (Outcome::SourceMissing, 1, 0),
            ],
            Some(30),
        );
        let p = progress(
            &record(10, 1_000, Some(5), None),
            &s,
            Window::default(),
            t(60),
        );
        assert_eq!(
            p.files,
            Amounts {
                total: 10,
                transferred: 4,
                unchanged: 3,
                skipped: 1,
                deleted: 0,
                failed: 0,
                remaining: 2,
            }
        );
        assert_eq!(
            (p.bytes.total, p.bytes.unchanged, p.bytes.remaining),
            (1_000, 300, 300)
        );
        assert_eq!(p.percent_complete, Some(70.0));
        assert_eq!(p.state, State::Running);
        assert_eq!(p.estimated_end_time, None, "nothing finished in the window");
        let mut text = String::new();
        render_text(&p, t(60), &mut text);
        assert!(
            text.contains("  ends        unknown (nothing finished during the window)\n"),
            "{text}"
        );
        // A check job: verified keys are unchanged, and without bytes the
        // percent is of files.
        let s = summary(&[(Outcome::Verified, 2, 0)], Some(30));
        let p = progress(&record(4, 0, Some(5), None), &s, Window::default(), t(60));
        assert_eq!(
            (p.files.unchanged, p.percent_of, p.percent_complete),
            (2, "files", Some(50.0))
        );
    }

    #[test]
    fn parts_never_exceed_the_total() {
        // A resumed job whose rows outnumber its record: remaining 0, not negative.
        let s = summary(&[(Outcome::Copied, 12, 1_200)], Some(30));
        let p = progress(
            &record(10, 1_000, Some(5), None),
            &s,
            Window::default(),
            t(60),
        );
        assert_eq!(
            (p.files.remaining, p.bytes.remaining, p.state),
            (0, 0, State::Finished)
        );
        assert_eq!(p.percent_complete, Some(100.0));
    }
}
