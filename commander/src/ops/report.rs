//! `commander report`: a job's completion reports summed up (total, succeeded,
//! skipped, source missing, failed, bytes; failures grouped by error class
//! with counts and examples), and on request the failed keys as a
//! `bucket,key` CSV manifest that `commander run --csv-manifest` reads, so a
//! re-run targets exactly the keys that failed. Source-missing and skipped
//! keys are named too (a bounded list and the count of the rest), and the
//! proofs the outcomes rest on are summed.

use std::process::ExitCode;

use bytes::Bytes;
use clap::Args;
use common::config::Config;
use common::location::Location;
use common::report::{
    failures_manifest, Aggregator, JobRecord, KeptKeys, ProofSums, ReportRow, Summary,
};
use common::store::open::open_store;
use common::store::PutOptions;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{pick_job, require_report_location};
use crate::summary::{human_bytes, thousands};

/// Flags of `commander report`.
#[derive(Args, Debug, Clone, Default)]
pub struct ReportArgs {
    /// Job to report on [default: the newest job record at report.location]
    #[arg(long, value_name = "ID")]
    pub job_id: Option<String>,
    /// Print the summary as one JSON object
    #[arg(long)]
    pub json: bool,
    /// Write the failed keys as a `bucket,key` CSV manifest (for `commander run --csv-manifest`)
    #[arg(long, value_name = "PATH|s3://BUCKET/KEY")]
    pub failures_manifest: Option<String>,
    /// Also write the source-missing keys to the failures manifest (to re-run them once they exist)
    #[arg(long, requires = "failures_manifest")]
    pub include_missing: bool,
    /// Source-missing and skipped keys named (text and --json); the rest are counted
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub keys: usize,
}

/// Some keys of one outcome: the first `--keys` of them, and how many more.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeyList {
    /// `key` (source-missing) or `key (outcome)` (skipped).
    pub keys: Vec<String>,
    /// Keys of this outcome not named.
    pub more: u64,
}

impl KeyList {
    /// The first `n` of `rows`, out of `total` keys of the outcome.
    fn of(rows: &[ReportRow], total: u64, n: usize, with_outcome: bool) -> Self {
        let keys: Vec<String> = rows
            .iter()
            .take(n)
            .map(|r| {
                if with_outcome {
                    format!("{} ({})", r.source_key, r.outcome)
                } else {
                    r.source_key.clone()
                }
            })
            .collect();
        KeyList {
            more: total.saturating_sub(keys.len() as u64),
            keys,
        }
    }

    fn render(&self, o: &mut String) {
        for k in &self.keys {
            o.push_str(&format!("      {k}\n"));
        }
        if self.more > 0 {
            o.push_str(&format!("      ... and {} more\n", thousands(self.more)));
        }
    }
}

/// `12.0 MiB written`, `22.9 MiB compared` (check mode reads, it does not
/// write), or both.
pub fn bytes_phrase(written: u64, compared: u64) -> String {
    match (written, compared) {
        (w, 0) => format!("{} written", human_bytes(w)),
        (0, c) => format!("{} compared", human_bytes(c)),
        (w, c) => format!("{} written, {} compared", human_bytes(w), human_bytes(c)),
    }
}

/// `1,203,311 proven by checksum (1,203,000 crc64nvme, 311 sha256), 2,001
/// by ETag, 0 by bytes, 5 unproven`: what the keys that compared source and
/// target rest on (algorithms by count, largest first).
pub fn proof_phrase(p: &ProofSums) -> String {
    let mut algs: Vec<(&String, &u64)> = p.checksum_by_algorithm.iter().collect();
    algs.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let algs: Vec<String> = algs
        .into_iter()
        .map(|(alg, n)| format!("{} {alg}", thousands(*n)))
        .collect();
    let by_alg = if algs.is_empty() {
        String::new()
    } else {
        format!(" ({})", algs.join(", "))
    };
    format!(
        "{} proven by checksum{by_alg}, {} by ETag, {} by bytes, {} unproven",
        thousands(p.checksum),
        thousands(p.etag),
        thousands(p.bytes),
        thousands(p.unproven)
    )
}

/// What `report --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub job_id: String,
    /// The job record, when `commander run` wrote one.
    pub job: Option<JobRecord>,
    /// Report files read.
    pub files: u64,
    pub summary: Summary,
    /// Enqueued objects without an outcome yet (needs the job record).
    pub without_outcome: Option<u64>,
    /// Keys whose latest outcome is source-missing.
    pub source_missing_keys: KeyList,
    /// Keys whose latest outcome is skipped (identical, filtered, kept or target-newer).
    pub skipped_keys: KeyList,
    /// The failures manifest written, if any.
    pub failures_manifest: Option<ManifestWritten>,
}

/// Where the failures manifest went and what it holds.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestWritten {
    pub path: String,
    /// Rows written (one per failed key, and per source-missing key with
    /// `--include-missing`).
    pub keys: u64,
    /// Of those, source-missing keys.
    pub source_missing: u64,
    /// Failed keys left out because their source is not a bucket.
    pub skipped_not_s3: u64,
}

/// Read every report of `job_id` into a summary and the keys behind it.
pub async fn aggregate(
    loc: &common::report::ReportLocation,
    job_id: &str,
) -> common::Result<(u64, Summary, KeptKeys)> {
    let mut agg = Aggregator::new(true);
    let files = loc.report_files(job_id).await?;
    for key in &files {
        for row in loc.read_rows(key).await? {
            agg.add(row);
        }
    }
    let (summary, keys) = agg.finish_keys();
    Ok((files.len() as u64, summary, keys))
}

/// Write `text` to a local file or an `s3://bucket/key` object.
async fn write_manifest(cfg: &Config, path: &str, text: String) -> anyhow::Result<()> {
    if path.starts_with("s3://") {
        let loc = Location::parse(path, "--failures-manifest")?;
        let key = loc.prefix();
        if key.is_empty() || key.ends_with('/') {
            anyhow::bail!("--failures-manifest `{path}`: name an object (s3://bucket/key.csv)");
        }
        let s3 = common::clients::S3Connector::new(&cfg.aws.copy);
        let store = open_store(&loc.container(), &s3, false).await?;
        let opts = PutOptions {
            attrs: common::store::ObjectAttrs {
                content_type: Some("text/csv".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        store.put(key, Bytes::from(text), &opts).await?;
    } else {
        tokio::fs::write(path, text)
            .await
            .map_err(|e| anyhow::anyhow!("--failures-manifest `{path}`: {e}"))?;
    }
    Ok(())
}

/// The human rendering (several lines, ending with a newline).
pub fn render_text(r: &JobReport) -> String {
    let s = &r.summary;
    let mut o = String::new();
    match &r.job {
        Some(j) => {
            o.push_str(&format!(
                "job             {}  {} -> {}\n",
                r.job_id, j.source, j.target
            ));
            o.push_str(&format!(
                "enqueued        {} objects, {}\n",
                thousands(j.objects),
                human_bytes(j.bytes)
            ));
            for rp in &j.repairs {
                o.push_str(&format!(
                    "repair run      {}: {} keys from {}{}\n",
                    rp.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    thousands(rp.keys),
                    rp.source,
                    if rp.finished_at.is_none() {
                        " (not finished)"
                    } else {
                        ""
                    }
                ));
            }
        }
        None => o.push_str(&format!("job             {}  (no job record)\n", r.job_id)),
    }
    o.push_str(&format!(
        "keys            {} (from {} rows in {} report files)\n",
        thousands(s.total),
        thousands(s.rows),
        thousands(r.files)
    ));
    o.push_str(&format!(
        "succeeded       {}  ({})\n",
        thousands(s.succeeded),
        bytes_phrase(s.bytes, s.bytes_compared)
    ));
    o.push_str(&format!("skipped         {}\n", thousands(s.skipped)));
    r.skipped_keys.render(&mut o);
    if s.deleted > 0 {
        o.push_str(&format!("deleted         {}\n", thousands(s.deleted)));
    }
    o.push_str(&format!(
        "source missing  {}\n",
        thousands(s.source_missing)
    ));
    r.source_missing_keys.render(&mut o);
    o.push_str(&format!("failed          {}\n", thousands(s.failed)));
    o.push_str(&format!("proofs          {}\n", proof_phrase(&s.proofs)));
    if let Some(n) = r.without_outcome.filter(|n| *n > 0) {
        o.push_str(&format!(
            "no outcome yet  {} (still queued, in flight, or their report was not flushed)\n",
            thousands(n)
        ));
    }
    if !s.by_outcome.is_empty() {
        let parts: Vec<String> = s
            .by_outcome
            .iter()
            .map(|(k, v)| format!("{k} {}", thousands(*v)))
            .collect();
        o.push_str(&format!("by outcome      {}\n", parts.join(", ")));
    }
    if !s.failures.is_empty() {
        o.push_str("failures by error class:\n");
        let mut classes: Vec<_> = s.failures.iter().collect();
        classes.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        for (class, fc) in classes {
            o.push_str(&format!("  {class:<28} {}\n", thousands(fc.count)));
            for e in &fc.examples {
                o.push_str(&format!("      e.g. {e}\n"));
            }
        }
    }
    if let Some(m) = &r.failures_manifest {
        o.push_str(&format!(
            "failures manifest: {} keys written to {}\n",
            thousands(m.keys),
            m.path
        ));
        if m.source_missing > 0 {
            o.push_str(&format!(
                "  ({} of them source-missing: --include-missing)\n",
                thousands(m.source_missing)
            ));
        }
        if m.skipped_not_s3 > 0 {
            o.push_str(&format!(
                "  ({} failed keys left out: their source is a directory)\n",
                thousands(m.skipped_not_s3)
            ));
        }
    }
    o
}

/// `commander report`.
pub async fn run(
    cfg: &Config,
    args: &ReportArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let work = async {
        let loc = require_report_location(cfg).await?;
        let Some((job_id, job)) = pick_job(&loc, args.job_id.as_deref()).await? else {
            anyhow::bail!(
                "no job record under {}: give --job-id",
                super::describe_location(&loc)
            );
        };
        let (files, summary, kept) = aggregate(&loc, &job_id).await?;
        let mut report = JobReport {
            without_outcome: job
                .as_ref()
                .map(|j| j.objects.saturating_sub(summary.total)),
            source_missing_keys: KeyList::of(
                &kept.source_missing,
                summary.source_missing,
                args.keys,
                false,
            ),
            skipped_keys: KeyList::of(&kept.skipped, summary.skipped, args.keys, true),
            job_id,
            job,
            files,
            summary,
            failures_manifest: None,
        };
        if let Some(path) = &args.failures_manifest {
            let mut rows = kept.failed;
            let missing = if args.include_missing {
                let text = failures_manifest(&kept.source_missing);
                rows.extend(kept.source_missing);
                text.lines().count() as u64
            } else {
                0
            };
            let text = failures_manifest(&rows);
            let keys = text.lines().count() as u64;
            write_manifest(cfg, path, text).await?;
            tracing::info!(path, keys, "failures manifest written");
            report.failures_manifest = Some(ManifestWritten {
                path: path.clone(),
                keys,
                source_missing: missing,
                skipped_not_s3: rows.len() as u64 - keys,
            });
        }
        anyhow::Ok(report)
    };
    let report = tokio::select! {
        r = work => r?,
        _ = shutdown.cancelled() => anyhow::bail!("interrupted"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_text(&report));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::report::FailureClass;

    #[test]
    fn text_lists_failure_classes_by_count() {
        let mut summary = Summary {
            total: 10,
            failed: 3,
            succeeded: 7,
            rows: 12,
            ..Default::default()
        };
        summary.failures.insert(
            "AccessDenied".into(),
            FailureClass {
                count: 1,
                examples: vec!["k1: denied".into()],
            },
        );
        summary.failures.insert(
            "SlowDown".into(),
            FailureClass {
                count: 2,
                examples: vec!["k2: slow".into()],
            },
        );
        let r = JobReport {
            job_id: "j".into(),
            job: None,
            files: 2,
            summary,
            without_outcome: None,
            source_missing_keys: KeyList {
                keys: vec!["gone/a".into()],
                more: 2,
            },
            skipped_keys: KeyList::default(),
            failures_manifest: Some(ManifestWritten {
                path: "f.csv".into(),
                keys: 3,
                source_missing: 0,
                skipped_not_s3: 0,
            }),
        };
        let t = render_text(&r);
        let slow = t.find("SlowDown").unwrap();
        let denied = t.find("AccessDenied").unwrap();
        assert!(slow < denied, "larger class first:\n{t}");
        assert!(t.contains("e.g. k1: denied"), "{t}");
        assert!(t.contains("3 keys written to f.csv"), "{t}");
        assert!(t.contains("(no job record)"), "{t}");
        assert!(t.contains("      gone/a\n      ... and 2 more\n"), "{t}");
        assert!(t.contains("(0 B written)"), "{t}");
    }

    /// `--sync` outcomes: a deleted key is its own count (no bytes, no
    /// proof); kept and target-newer keys are skipped and named.
    #[test]
    fn sync_outcomes_are_summed_and_named() {
        use chrono::DateTime;
        use common::report::Outcome;
        let row = |key: &str, outcome: Outcome| ReportRow {
            job_id: "j".into(),
            executor_id: "e".into(),
            source: "s3://src".into(),
            source_key: key.into(),
            target: "s3://dst".into(),
            target_key: key.into(),
            size: Some(100),
            outcome,
            error_class: None,
            error_message: None,
            attempts: 1,
            duration_ms: 1,
            finished_at: DateTime::from_timestamp(1, 0).unwrap(),
            proof: None,
        };
        let mut agg = Aggregator::new(true);
        for r in [
            row("gone", Outcome::Deleted),
            row("rewritten", Outcome::Kept),
            row("newer", Outcome::TargetNewer),
        ] {
            agg.add(r);
        }
        let (summary, kept) = agg.finish_keys();
        assert_eq!(
            (summary.deleted, summary.skipped, summary.succeeded),
            (1, 2, 0)
        );
        assert_eq!((summary.bytes, summary.proofs.total()), (0, 0));
        let skipped = KeyList::of(&kept.skipped, summary.skipped, 10, true);
        let r = JobReport {
            job_id: "j".into(),
            job: None,
            files: 1,
            summary,
            without_outcome: None,
            source_missing_keys: KeyList::default(),
            skipped_keys: skipped,
            failures_manifest: None,
        };
        let t = render_text(&r);
        assert!(t.contains("deleted         1\n"), "{t}");
        assert!(t.contains("rewritten (kept)"), "{t}");
        assert!(t.contains("newer (target-newer)"), "{t}");
    }

    #[test]
    fn proofs_line_sums_latest_outcomes_old_and_new_rows() {
        use chrono::DateTime;
        use common::checksum::Algorithm::{Crc64Nvme, Sha256};
        use common::report::{Outcome, Proof};
        let row = |key: &str, outcome: Outcome, t: i64, proof: Option<Proof>| ReportRow {
            job_id: "j".into(),
            executor_id: "e".into(),
            source: "s3://src".into(),
            source_key: key.into(),
            target: "s3://dst".into(),
            target_key: key.into(),
            size: Some(1),
            outcome,
            error_class: None,
            error_message: None,
            attempts: 1,
            duration_ms: 1,
            finished_at: DateTime::from_timestamp(t, 0).unwrap(),
            proof,
        };
        // One job, older executors (their 13-column rows read with no
        // proof) and newer ones: the key's latest row counts.
        let old = [
            row("k1", Outcome::Copied, 1, None),
            row("k5", Outcome::Copied, 1, None),
            row("k6", Outcome::Failed, 1, None),
        ];
        let new = [
            row("k1", Outcome::Verified, 2, Some(Proof::Checksum(Crc64Nvme))),
            row("k2", Outcome::Copied, 1, Some(Proof::Checksum(Crc64Nvme))),
            row("k3", Outcome::Copied, 1, Some(Proof::Checksum(Sha256))),
            row("k4", Outcome::SkippedIdentical, 1, Some(Proof::Etag)),
            row("k7", Outcome::TagsUpdated, 1, Some(Proof::None)),
            row("k8", Outcome::SourceMissing, 1, None),
            row("k9", Outcome::SkippedFiltered, 1, None),
            row("k10", Outcome::Verified, 1, Some(Proof::Bytes)),
        ];
        let mut agg = Aggregator::new(true);
        for r in old.into_iter().chain(new) {
            agg.add(r);
        }
        let (summary, _) = agg.finish_keys();
        assert_eq!(
            proof_phrase(&summary.proofs),
            "3 proven by checksum (2 crc64nvme, 1 sha256), 1 by ETag, 1 by bytes, 2 unproven"
        );
        let r = JobReport {
            job_id: "j".into(),
            job: None,
            files: 2,
            summary,
            without_outcome: None,
            source_missing_keys: KeyList::default(),
            skipped_keys: KeyList::default(),
            failures_manifest: None,
        };
        let t = render_text(&r);
        assert!(
            t.contains("\nproofs          3 proven by checksum (2 crc64nvme, 1 sha256), "),
            "{t}"
        );
        let json = serde_json::to_value(&r).unwrap();
        let p = &json["summary"]["proofs"];
        assert_eq!(
            (&p["checksum"], &p["etag"], &p["bytes"], &p["unproven"]),
            (&3.into(), &1.into(), &1.into(), &2.into()),
            "{json:#}"
        );
        assert_eq!(p["checksum_by_algorithm"]["crc64nvme"], 2, "{json:#}");
    }

    #[test]
    fn proofs_line_without_checksums_and_in_thousands() {
        let p = ProofSums {
            checksum: 1_203_311,
            checksum_by_algorithm: [("sha256".into(), 311), ("crc64nvme".into(), 1_203_000)]
                .into_iter()
                .collect(),
            etag: 2_001,
            bytes: 0,
            unproven: 5,
        };
        assert_eq!(
            proof_phrase(&p),
            "1,203,311 proven by checksum (1,203,000 crc64nvme, 311 sha256), 2,001 by ETag, 0 by bytes, 5 unproven"
        );
        let by_count = ProofSums {
            checksum: 6,
            checksum_by_algorithm: [("crc32c".into(), 1), ("sha256".into(), 5)]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        assert!(
            proof_phrase(&by_count).starts_with("6 proven by checksum (5 sha256, 1 crc32c), "),
            "{}",
            proof_phrase(&by_count)
        );
        assert_eq!(
            proof_phrase(&ProofSums::default()),
            "0 proven by checksum, 0 by ETag, 0 by bytes, 0 unproven"
        );
    }

    #[test]
    fn check_mode_bytes_are_compared() {
        assert_eq!(bytes_phrase(0, 0), "0 B written");
        assert_eq!(bytes_phrase(0, 2048), "2.0 KiB compared");
        assert_eq!(
            bytes_phrase(1024, 2048),
            "1.0 KiB written, 2.0 KiB compared"
        );
    }
}
