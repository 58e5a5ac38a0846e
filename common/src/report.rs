//! Per-key outcomes (what executors record, one row per key) and, later, the
//! completion-report writer and its summaries.

use serde::{Deserialize, Serialize};

/// What happened to one key. The names (kebab-case) are what reports and logs show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Written to the target (copy or downup).
    Copied,
    /// `--verify` found the target identical: nothing written.
    SkippedIdentical,
    /// `--verify` found only the tags different: PutObjectTagging alone.
    TagsUpdated,
    /// Outside the `--modified-since` / `--not-modified-since` window.
    SkippedFiltered,
    /// The source no longer exists (a warning, not a failure).
    SourceMissing,
    /// `--no-overwrite`: an object exists under the target key; left as it is.
    TargetExists,
    /// Check mode: target matches source.
    Verified,
    /// `--sync --delete`: a target-only object deleted (it was still the
    /// listed object and the source still lacked the key).
    Deleted,
    /// `--sync --delete`: a target-only object not deleted, because it
    /// changed since it was listed or the source has the key again (the
    /// note says which).
    Kept,
    /// `--sync`: the target differs from the source and was modified after
    /// it; left as it is (`--overwrite-newer` overwrites).
    TargetNewer,
    /// Parked in the DLQ with its error class and message.
    Failed,
}

impl Outcome {
    /// The report/log name, e.g. `skipped-identical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Copied => "copied",
            Outcome::SkippedIdentical => "skipped-identical",
            Outcome::TagsUpdated => "tags-updated",
            Outcome::SkippedFiltered => "skipped-filtered",
            Outcome::SourceMissing => "source-missing",
            Outcome::TargetExists => "target-exists",
            Outcome::Verified => "verified",
            Outcome::Deleted => "deleted",
            Outcome::Kept => "kept",
            Outcome::TargetNewer => "target-newer",
            Outcome::Failed => "failed",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The evidence a key's outcome rests on (report column `proof`): what showed
/// the target equal to the source. Strongest first; see docs/proof.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proof {
    /// Equal S3 checksums of this algorithm: both full-object, or both
    /// composite over the same part layout.
    Checksum(crate::checksum::Algorithm),
    /// Equal ETags that are MD5s of the bytes (plain, or multipart over the
    /// same part layout; never under SSE-KMS), or the MD5 of the bytes read
    /// equal to the source's ETag and accepted by the target as Content-MD5.
    Etag,
    /// Both objects read and compared byte for byte (`--deep`).
    Bytes,
    /// Nothing showed the content equal (the note says why).
    None,
}

impl Proof {
    /// The report name: `checksum-crc64nvme`, `etag`, `bytes`, `none`.
    pub fn as_str(self) -> &'static str {
        use crate::checksum::Algorithm as A;
        match self {
            Proof::Checksum(A::Crc64Nvme) => "checksum-crc64nvme",
            Proof::Checksum(A::Crc32) => "checksum-crc32",
            Proof::Checksum(A::Crc32c) => "checksum-crc32c",
            Proof::Checksum(A::Sha1) => "checksum-sha1",
            Proof::Checksum(A::Sha256) => "checksum-sha256",
            Proof::Etag => "etag",
            Proof::Bytes => "bytes",
            Proof::None => "none",
        }
    }

    pub fn parse(name: &str) -> Option<Proof> {
        match name {
            "etag" => Some(Proof::Etag),
            "bytes" => Some(Proof::Bytes),
            "none" => Some(Proof::None),
            _ => crate::checksum::Algorithm::parse(name.strip_prefix("checksum-")?)
                .map(Proof::Checksum),
        }
    }
}

impl std::fmt::Display for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------
// Completion reports: one row per key, written as gzip CSV objects under
// `<location>/<job id>/<executor id>/<sequence>.csv.gz` (S3 Batch Operations style).
// ---------------------------------------------------------------------------

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::error::{Error, ErrorKind, Result};
use crate::store::{ListRequest, ObjectStore, PutOptions};

/// Column names of a report file, in order (the header row). New columns go
/// last, so files written before them (13 columns: no `proof`) still read.
pub const REPORT_COLUMNS: [&str; 14] = [
    "job_id",
    "executor_id",
    "source",
    "source_key",
    "target",
    "target_key",
    "size",
    "outcome",
    "error_class",
    "error_message",
    "attempts",
    "duration_ms",
    "finished_at",
    "proof",
];

/// Columns of the files written before the `proof` column.
const OLD_REPORT_COLUMNS: usize = 13;

/// One key's outcome, as written to a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    pub job_id: String,
    pub executor_id: String,
    /// Source location (`s3://bucket` or `file:///dir`).
    pub source: String,
    pub source_key: String,
    pub target: String,
    pub target_key: String,
    pub size: Option<u64>,
    pub outcome: Outcome,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    pub attempts: u32,
    pub duration_ms: u64,
    pub finished_at: DateTime<Utc>,
    /// What showed the target equal to the source; `None` for outcomes that
    /// compare nothing and in rows written before the column existed.
    pub proof: Option<Proof>,
}

impl ReportRow {
    fn to_record(&self) -> [String; 14] {
        [
            self.job_id.clone(),
            self.executor_id.clone(),
            self.source.clone(),
            self.source_key.clone(),
            self.target.clone(),
            self.target_key.clone(),
            self.size.map(|s| s.to_string()).unwrap_or_default(),
            self.outcome.as_str().to_string(),
            self.error_class.clone().unwrap_or_default(),
            self.error_message.clone().unwrap_or_default(),
            self.attempts.to_string(),
            self.duration_ms.to_string(),
            self.finished_at.to_rfc3339(),
            self.proof
                .map(Proof::as_str)
                .unwrap_or_default()
                .to_string(),
        ]
    }

    fn from_record(rec: &csv::StringRecord, file: &str, line: u64) -> Result<Self> {
        let bad =
            |what: &str| Error::input(format!("{file}:{line}"), format!("bad report row: {what}"));
        if rec.len() != REPORT_COLUMNS.len() && rec.len() != OLD_REPORT_COLUMNS {
            return Err(bad(&format!(
                "{} columns, expected {} (or {}, written before the proof column)",
                rec.len(),
                REPORT_COLUMNS.len(),
                OLD_REPORT_COLUMNS
            )));
        }
        let opt = |i: usize| Some(rec[i].to_string()).filter(|s| !s.is_empty());
        Ok(ReportRow {
            job_id: rec[0].to_string(),
            executor_id: rec[1].to_string(),
            source: rec[2].to_string(),
            source_key: rec[3].to_string(),
            target: rec[4].to_string(),
            target_key: rec[5].to_string(),
            size: opt(6)
                .map(|s| s.parse().map_err(|_| bad("size")))
                .transpose()?,
            outcome: parse_outcome(&rec[7]).ok_or_else(|| bad("outcome"))?,
            error_class: opt(8),
            error_message: opt(9),
            attempts: rec[10].parse().map_err(|_| bad("attempts"))?,
            duration_ms: rec[11].parse().map_err(|_| bad("duration_ms"))?,
            finished_at: DateTime::parse_from_rfc3339(&rec[12])
                .map_err(|_| bad("finished_at"))?
                .with_timezone(&Utc),
            proof: match rec.get(13).filter(|s| !s.is_empty()) {
                Some(p) => Some(Proof::parse(p).ok_or_else(|| bad("proof"))?),
                None => None,
            },
        })
    }
}

/// The outcome a report names (`skipped-identical`), if any.
pub fn parse_outcome(s: &str) -> Option<Outcome> {
    [
        Outcome::Copied,
        Outcome::SkippedIdentical,
        Outcome::TagsUpdated,
        Outcome::SkippedFiltered,
        Outcome::SourceMissing,
        Outcome::TargetExists,
        Outcome::Verified,
        Outcome::Deleted,
        Outcome::Kept,
        Outcome::TargetNewer,
        Outcome::Failed,
    ]
    .into_iter()
    .find(|o| o.as_str() == s)
}

/// Encode rows as a gzip CSV file with a header.
pub fn encode_rows(rows: &[ReportRow]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut w = csv::Writer::from_writer(gz);
    w.write_record(REPORT_COLUMNS).expect("write to memory");
    for r in rows {
        w.write_record(r.to_record()).expect("write to memory");
    }
    let gz = w.into_inner().expect("flush to memory");
    gz.finish().expect("finish gzip in memory")
}

/// Decode a gzip CSV report file; `file` names it in errors.
pub fn decode_rows(data: &[u8], file: &str) -> Result<Vec<ReportRow>> {
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut text)
        .map_err(|e| Error::input(file, format!("not a gzip report file: {e}")))?;
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_slice());
    let mut rows = Vec::new();
    for (i, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| Error::input(format!("{file}:{}", i + 2), e.to_string()))?;
        rows.push(ReportRow::from_record(&rec, file, i as u64 + 2)?);
    }
    Ok(rows)
}

/// Where reports and job records live: a store plus a key prefix (`""` or ending in `/`).
#[derive(Debug, Clone)]
pub struct ReportLocation {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: String,
}

impl ReportLocation {
    /// `prefix` is normalised to end in `/` (unless empty).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        let mut prefix = prefix.to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        ReportLocation { store, prefix }
    }

    /// Key of a report file.
    pub fn report_key(&self, job_id: &str, executor_id: &str, seq: u64) -> String {
        format!("{}{job_id}/{executor_id}/{seq:08}.csv.gz", self.prefix)
    }

    /// Key of a job's record.
    pub fn job_key(&self, job_id: &str) -> String {
        format!("{}{job_id}/job.json", self.prefix)
    }

    async fn read_all(&self, key: &str) -> Result<Vec<u8>> {
        let mut stream = self.store.get(key, None, None).await?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    /// Every row of one report file (`key` as [`report_files`](Self::report_files)
    /// lists it). Report files are written once and never changed, so a reader
    /// may remember which files it has read.
    pub async fn read_rows(&self, key: &str) -> Result<Vec<ReportRow>> {
        let data = self.read_all(key).await?;
        decode_rows(&data, key)
    }

    /// Write the job record (overwrites).
    pub async fn write_job(&self, job: &JobRecord) -> Result<()> {
        let body = serde_json::to_vec_pretty(job).expect("JobRecord serializes");
        let opts = PutOptions {
            attrs: crate::store::ObjectAttrs {
                content_type: Some("application/json".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        self.store
            .put(&self.job_key(&job.job_id), Bytes::from(body), &opts)
            .await?;
        Ok(())
    }

    /// Read a job record; `Ok(None)` when the job has none.
    pub async fn read_job(&self, job_id: &str) -> Result<Option<JobRecord>> {
        let key = self.job_key(job_id);
        if self.store.head(&key).await?.is_none() {
            return Ok(None);
        }
        let data = self.read_all(&key).await?;
        serde_json::from_slice(&data).map(Some).map_err(|e| {
            Error::input(
                format!("{}{key}", self.store.describe()),
                format!("bad job record: {e}"),
            )
        })
    }

    /// Every job id that has a record, newest last by `started_at`.
    pub async fn jobs(&self) -> Result<Vec<JobRecord>> {
        let mut req = ListRequest {
            prefix: self.prefix.clone(),
            delimiter: Some("/".into()),
            ..Default::default()
        };
        let mut prefixes = Vec::new();
        loop {
            let page = self.store.list_page(&req).await?;
            prefixes.extend(page.prefixes);
            match page.next {
                Some(t) => req.continuation = Some(t),
                None => break,
            }
        }
        let mut jobs = Vec::new();
        for p in prefixes {
            let id = p[self.prefix.len()..].trim_end_matches('/');
            if let Some(j) = self.read_job(id).await? {
                jobs.push(j);
            }
        }
        jobs.sort_by_key(|j| j.started_at);
        Ok(jobs)
    }

    /// Every report file of a job, in key order.
    pub async fn report_files(&self, job_id: &str) -> Result<Vec<String>> {
        let mut req = ListRequest {
            prefix: format!("{}{job_id}/", self.prefix),
            ..Default::default()
        };
        let mut keys = Vec::new();
        loop {
            let page = self.store.list_page(&req).await?;
            keys.extend(
                page.objects
                    .into_iter()
                    .map(|o| o.key)
                    .filter(|k| k.ends_with(".csv.gz")),
            );
            match page.next {
                Some(t) => req.continuation = Some(t),
                None => break,
            }
        }
        Ok(keys)
    }

    /// Read every row of a job, calling `f` per row (memory: one file at a time).
    pub async fn for_each_row(&self, job_id: &str, mut f: impl FnMut(ReportRow)) -> Result<()> {
        for key in self.report_files(job_id).await? {
            let data = self.read_all(&key).await?;
            for row in decode_rows(&data, &key)? {
                f(row);
            }
        }
        Ok(())
    }
}

/// Open the configured report location (`report.location`): `s3://bucket/prefix/`
/// through the `aws.copy` section's S3 client, or a directory (created when
/// missing). `Ok(None)` when no location is configured: no reports are written
/// and `commander status` shows queue depths only. Errors name `report.location`.
pub async fn open_report_location(cfg: &crate::config::Config) -> Result<Option<ReportLocation>> {
    let Some(text) = cfg.report_location.as_deref() else {
        return Ok(None);
    };
    let location = crate::location::Location::parse(text, "report.location")?;
    let s3 = crate::clients::S3Connector::new(&cfg.aws.copy);
    let store = crate::store::open::open_store(&location.container(), &s3, true).await?;
    Ok(Some(ReportLocation::new(store, location.prefix())))
}

/// What `commander run` records about a job, next to its reports. Fields
/// added later default when absent, so older records still read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobRecord {
    pub job_id: String,
    pub source: String,
    /// The full target, bucket and key prefix (`s3://dst/new-prefix/`) or
    /// directory and prefix; records written before it was full hold the
    /// bucket only.
    pub target: String,
    /// The target without prefix, as messages carry it (`None`: an older record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_root: Option<String>,
    /// The source prefix that `target_prefix` replaces in target keys.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// The target key prefix (`None`: target keys are the source keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_prefix: Option<String>,
    pub started_at: DateTime<Utc>,
    /// `None` while the commander is still listing.
    pub finished_at: Option<DateTime<Utc>>,
    pub objects: u64,
    pub bytes: u64,
    pub messages: u64,
    /// Messages sent per work queue.
    pub per_queue: BTreeMap<String, u64>,
    /// Keys skipped by each listing filter.
    pub skipped: BTreeMap<String, u64>,
    /// `commander run --repair` runs that re-sent keys of this job (their
    /// keys are not added to `objects`: they were enqueued before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repairs: Vec<RepairRun>,
    /// `--sync` runs: what the diff found (unchanged keys are never sent,
    /// so only this says they are part of the job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<crate::listing::diff::Tally>,
}

/// One `commander run --repair` of a job.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RepairRun {
    pub started_at: DateTime<Utc>,
    /// `None` while it is still sending (or if it died).
    pub finished_at: Option<DateTime<Utc>>,
    /// What it enumerated (usually a failures manifest).
    pub source: String,
    /// Keys it sent.
    pub keys: u64,
}

/// Records rows and flushes them every `flush_rows` rows or `flush_interval`,
/// from a background task. A crash loses at most the unflushed interval (those
/// keys are redelivered anyway, because their messages were not yet deleted... or
/// were: then they are simply missing from the report, never wrong).
#[derive(Debug, Clone)]
pub struct Reporter {
    tx: mpsc::Sender<ReportRow>,
}

/// Handle to wait for the reporter's final flush.
#[derive(Debug)]
pub struct ReporterTask {
    handle: tokio::task::JoinHandle<Result<u64>>,
}

impl ReporterTask {
    /// Wait until every recorded row is written; returns the number of files written.
    pub async fn finish(self) -> Result<u64> {
        self.handle.await.map_err(|e| {
            Error::new(
                ErrorKind::Permanent,
                "ReportWriter",
                "report",
                e.to_string(),
            )
        })?
    }
}

impl Reporter {
    /// Start the writer task. Dropping every `Reporter` clone ends it after a final flush.
    pub fn start(
        location: ReportLocation,
        executor_id: String,
        flush_rows: usize,
        flush_interval: Duration,
    ) -> (Reporter, ReporterTask) {
        let (tx, rx) = mpsc::channel(flush_rows.max(1) * 2);
        let handle = tokio::spawn(write_loop(
            location,
            executor_id,
            flush_rows.max(1),
            flush_interval,
            rx,
        ));
        (Reporter { tx }, ReporterTask { handle })
    }

    /// Record one row (waits only if the writer is far behind).
    pub async fn record(&self, row: ReportRow) {
        if self.tx.send(row).await.is_err() {
            tracing::error!("report writer has stopped; a report row was dropped");
        }
    }
}

async fn write_loop(
    loc: ReportLocation,
    executor_id: String,
    flush_rows: usize,
    interval: Duration,
    mut rx: mpsc::Receiver<ReportRow>,
) -> Result<u64> {
    let mut pending: HashMap<String, Vec<ReportRow>> = HashMap::new();
    let mut count = 0usize;
    let mut seq = 0u64;
    let mut files = 0u64;
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        let closed = tokio::select! {
            row = rx.recv() => match row {
                Some(row) => {
                    pending.entry(row.job_id.clone()).or_default().push(row);
                    count += 1;
                    if count < flush_rows { continue; }
                    false
                }
                None => true,
            },
            _ = tick.tick() => false,
        };
        for (job, rows) in pending.drain() {
            if rows.is_empty() {
                continue;
            }
            let key = loc.report_key(&job, &executor_id, seq);
            seq += 1;
            let body = Bytes::from(encode_rows(&rows));
            let opts = PutOptions::default();
            let put = || async { loc.store.put(&key, body.clone(), &opts).await };
            use crate::retry::{retry, Policy};
            let retryable = |e: &Error| e.kind.is_retryable();
            match retry(&Policy::report_flush(), put, retryable, |_, _| {}).await {
                Ok(_) => files += 1,
                Err(f) => {
                    tracing::error!(error = %f.error, attempts = f.attempts, rows = rows.len(), key, "could not write a report file")
                }
            }
        }
        count = 0;
        if closed {
            return Ok(files);
        }
    }
}

/// A job's outcome counts, deduplicated by source key (a key worked twice, after a
/// redelivery, counts once with its latest outcome).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub total: u64,
    pub succeeded: u64,
    pub skipped: u64,
    pub failed: u64,
    pub source_missing: u64,
    /// Target-only objects deleted (`--sync --delete`).
    pub deleted: u64,
    /// Bytes written by succeeded keys (copied, tags updated).
    pub bytes: u64,
    /// Bytes compared by check mode (verified keys): read, not written.
    pub bytes_compared: u64,
    pub by_outcome: BTreeMap<String, u64>,
    /// The sizes of the same keys, summed by outcome (`commander status`'s
    /// progress in bytes: unchanged, deleted, failed, ...).
    pub bytes_by_outcome: BTreeMap<String, u64>,
    /// The proofs of the keys whose latest outcome compared source and target.
    pub proofs: ProofSums,
    /// Failure classes with counts and up to three example keys.
    pub failures: BTreeMap<String, FailureClass>,
    /// Rows read (before deduplication).
    pub rows: u64,
    pub first_finished: Option<DateTime<Utc>>,
    pub last_finished: Option<DateTime<Utc>>,
}

/// The proofs behind the keys whose latest outcome rests on source and
/// target being equal (copied, verified, skipped-identical, tags-updated),
/// summed by proof. Failed, source-missing and skipped-filtered keys compared
/// nothing and are not counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProofSums {
    /// Proven by equal checksums, whatever the algorithm.
    pub checksum: u64,
    /// The same by algorithm (`crc64nvme`, `sha256`, ...): only those used.
    pub checksum_by_algorithm: BTreeMap<String, u64>,
    pub etag: u64,
    pub bytes: u64,
    /// Proof `none`, or no proof in the row (written by an executor from
    /// before the proof column): nothing showed the content equal.
    pub unproven: u64,
}

impl ProofSums {
    /// Count one key whose outcome compared source and target.
    pub fn add(&mut self, proof: Option<Proof>) {
        match proof {
            Some(p @ Proof::Checksum(_)) => {
                self.checksum += 1;
                let alg = p.as_str().trim_start_matches("checksum-");
                *self
                    .checksum_by_algorithm
                    .entry(alg.to_string())
                    .or_default() += 1;
            }
            Some(Proof::Etag) => self.etag += 1,
            Some(Proof::Bytes) => self.bytes += 1,
            Some(Proof::None) | None => self.unproven += 1,
        }
    }

    /// Keys counted.
    pub fn total(&self) -> u64 {
        self.checksum + self.etag + self.bytes + self.unproven
    }
}

/// One failure class in a [`Summary`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FailureClass {
    pub count: u64,
    pub examples: Vec<String>,
}

/// How many skipped rows an [`Aggregator`] keeps to name skipped keys (a
/// re-run can skip millions; the count stays exact, the names are examples).
pub const SKIPPED_KEPT: usize = 10_000;

/// Aggregates rows into a [`Summary`] and, optionally, the keys behind the
/// counts. A key's latest outcome is the row with the latest `finished_at`
/// (equal times: the row read last), whichever run or executor wrote it.
/// Memory: about 32 bytes per distinct key (a hash, a timestamp, an
/// outcome, a size and a proof), plus the kept rows.
#[derive(Debug, Default)]
pub struct Aggregator {
    latest: HashMap<u64, (i64, Outcome, u64, Option<Proof>)>,
    rows: u64,
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
    /// Failed and source-missing rows, and up to [`SKIPPED_KEPT`] skipped ones.
    kept_rows: Vec<ReportRow>,
    kept_skipped: usize,
    keep_failed: bool,
}

/// The keys behind a [`Summary`]'s counts: rows whose outcome is still their
/// key's latest, one per key.
#[derive(Debug, Clone, Default)]
pub struct KeptKeys {
    pub failed: Vec<ReportRow>,
    pub source_missing: Vec<ReportRow>,
    /// At most [`SKIPPED_KEPT`] (the summary has the full count).
    pub skipped: Vec<ReportRow>,
}

fn key_hash(row: &ReportRow) -> u64 {
    hash_of(&row.source, &row.source_key)
}

fn hash_of(source: &str, key: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

impl Outcome {
    /// The target is known to be right: written and shown to match, found
    /// identical, or verified. (Skipped by a filter or source missing is not.)
    pub fn is_success(self) -> bool {
        matches!(
            self,
            Outcome::Copied | Outcome::TagsUpdated | Outcome::Verified | Outcome::SkippedIdentical
        )
    }
}

impl Aggregator {
    /// `keep_failed`: remember failed, source-missing and (some) skipped rows
    /// (for a failures manifest and the key lists of `commander report`).
    pub fn new(keep_failed: bool) -> Self {
        Aggregator {
            keep_failed,
            ..Default::default()
        }
    }

    /// Add one row.
    pub fn add(&mut self, row: ReportRow) {
        self.rows += 1;
        self.first = Some(
            self.first
                .map_or(row.finished_at, |f| f.min(row.finished_at)),
        );
        self.last = Some(
            self.last
                .map_or(row.finished_at, |f| f.max(row.finished_at)),
        );
        let ts = row.finished_at.timestamp_micros();
        let h = key_hash(&row);
        let newer = self.latest.get(&h).is_none_or(|(t, ..)| ts >= *t);
        if newer {
            self.latest
                .insert(h, (ts, row.outcome, row.size.unwrap_or(0), row.proof));
        }
        if !self.keep_failed {
            return;
        }
        match row.outcome {
            Outcome::Failed | Outcome::SourceMissing => self.kept_rows.push(row),
            Outcome::SkippedIdentical
            | Outcome::SkippedFiltered
            | Outcome::Kept
            | Outcome::TargetNewer
                if self.kept_skipped < SKIPPED_KEPT =>
            {
                self.kept_skipped += 1;
                self.kept_rows.push(row);
            }
            _ => {}
        }
    }

    /// The latest outcome of `key` from `source` (`s3://bucket`, as report rows
    /// name it), if any row was added for it.
    pub fn latest(&self, source: &str, key: &str) -> Option<Outcome> {
        self.latest.get(&hash_of(source, key)).map(|(_, o, ..)| *o)
    }

    /// The summary so far, without consuming the aggregator (so `commander
    /// status --watch` can keep adding the rows of new report files). Failure
    /// classes are filled only when the aggregator keeps failed rows.
    pub fn snapshot(&self) -> Summary {
        self.summarize().0
    }

    /// The summary, and the rows whose latest outcome is `failed`.
    pub fn finish(self) -> (Summary, Vec<ReportRow>) {
        let (s, keys) = self.finish_keys();
        (s, keys.failed)
    }

    /// The summary, and the kept rows that are still their key's latest outcome.
    pub fn finish_keys(self) -> (Summary, KeptKeys) {
        let (s, keep) = self.summarize();
        let mut keys = KeptKeys::default();
        for (row, k) in self.kept_rows.into_iter().zip(keep) {
            if !k {
                continue;
            }
            match row.outcome {
                Outcome::Failed => keys.failed.push(row),
                Outcome::SourceMissing => keys.source_missing.push(row),
                _ => keys.skipped.push(row),
            }
        }
        (s, keys)
    }

    /// The summary, and per kept row whether it is still its key's latest
    /// outcome (the first such row of a key only).
    fn summarize(&self) -> (Summary, Vec<bool>) {
        let mut s = Summary {
            rows: self.rows,
            first_finished: self.first,
            last_finished: self.last,
            ..Default::default()
        };
        for (_, outcome, size, proof) in self.latest.values() {
            s.total += 1;
            if outcome.is_success() {
                s.proofs.add(*proof);
            }
            *s.by_outcome
                .entry(outcome.as_str().to_string())
                .or_default() += 1;
            *s.bytes_by_outcome
                .entry(outcome.as_str().to_string())
                .or_default() += size;
            match outcome {
                Outcome::Copied | Outcome::TagsUpdated => {
                    s.succeeded += 1;
                    s.bytes += size;
                }
                Outcome::Verified => {
                    s.succeeded += 1;
                    s.bytes_compared += size;
                }
                Outcome::SkippedIdentical
                | Outcome::SkippedFiltered
                | Outcome::TargetExists
                | Outcome::Kept
                | Outcome::TargetNewer => s.skipped += 1,
                Outcome::Deleted => s.deleted += 1,
                Outcome::SourceMissing => s.source_missing += 1,
                Outcome::Failed => s.failed += 1,
            }
        }
        let mut keep = Vec::with_capacity(self.kept_rows.len());
        let mut seen = std::collections::HashSet::new();
        for row in &self.kept_rows {
            let h = key_hash(row);
            let latest = self.latest.get(&h).is_some_and(|(t, o, ..)| {
                *o == row.outcome && *t == row.finished_at.timestamp_micros()
            }) && seen.insert(h);
            if latest && row.outcome == Outcome::Failed {
                let class = row.error_class.clone().unwrap_or_else(|| "Unknown".into());
                let fc = s.failures.entry(class).or_default();
                fc.count += 1;
                if fc.examples.len() < 3 {
                    fc.examples.push(format!(
                        "{}: {}",
                        row.source_key,
                        row.error_message.clone().unwrap_or_default()
                    ));
                }
            }
            keep.push(latest);
        }
        (s, keep)
    }
}

/// A failures manifest in the `bucket,key` CSV format `commander run --csv-manifest`
/// reads (keys percent-encoded). Rows whose source is not a bucket are skipped.
pub fn failures_manifest(rows: &[ReportRow]) -> String {
    let mut out = String::new();
    for r in rows {
        if let Some(bucket) = r.source.strip_prefix("s3://") {
            let bucket = bucket.split('/').next().unwrap_or(bucket);
            out.push_str(bucket);
            out.push(',');
            out.push_str(&encode_key(&r.source_key));
            out.push('\n');
        }
    }
    out
}

/// RFC 3986 percent-encoding of a key for CSV manifests (`/` kept).
pub fn encode_key(key: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(key, SET).to_string()
}

/// Write helper used by tests and tools: encode to a `Write`.
pub fn write_rows(rows: &[ReportRow], mut w: impl Write) -> std::io::Result<()> {
    w.write_all(&encode_rows(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, outcome: Outcome, t: i64) -> ReportRow {
        ReportRow {
            job_id: "j".into(),
            executor_id: "e".into(),
            source: "s3://src".into(),
            source_key: key.into(),
            target: "s3://dst".into(),
            target_key: key.into(),
            size: Some(10),
            outcome,
            error_class: (outcome == Outcome::Failed).then(|| "AccessDenied".into()),
            error_message: (outcome == Outcome::Failed).then(|| "denied, \"quoted\"\nline".into()),
            attempts: 1,
            duration_ms: 5,
            finished_at: DateTime::from_timestamp(t, 0).unwrap(),
            proof: None,
        }
    }

    fn proven(key: &str, outcome: Outcome, t: i64, proof: Proof) -> ReportRow {
        ReportRow {
            proof: Some(proof),
            ..row(key, outcome, t)
        }
    }

    /// A report file as earlier versions (or a broken writer) left it.
    fn gz(text: &str) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    }

    const OLD_HEADER: &str = "job_id,executor_id,source,source_key,target,target_key,size,\
        outcome,error_class,error_message,attempts,duration_ms,finished_at\n";

    #[test]
    fn rows_round_trip_through_gzip_csv() {
        let rows = vec![
            row("a b,c", Outcome::Copied, 1),
            row("ü/\"x\"", Outcome::Failed, 2),
        ];
        assert_eq!(decode_rows(&encode_rows(&rows), "f").unwrap(), rows);
        let e = decode_rows(b"nope", "some/file.csv.gz").unwrap_err();
        assert!(e.to_string().contains("some/file.csv.gz"));
    }

    #[test]
    fn proof_is_the_last_column_and_round_trips() {
        use crate::checksum::Algorithm;
        let rows = vec![
            proven(
                "a",
                Outcome::Copied,
                1,
                Proof::Checksum(Algorithm::Crc64Nvme),
            ),
            proven(
                "b",
                Outcome::Verified,
                2,
                Proof::Checksum(Algorithm::Sha256),
            ),
            proven("c", Outcome::SkippedIdentical, 3, Proof::Etag),
            proven("d", Outcome::Verified, 4, Proof::Bytes),
            proven("e", Outcome::Copied, 5, Proof::None),
            row("f", Outcome::Failed, 6),
        ];
        let data = encode_rows(&rows);
        assert_eq!(decode_rows(&data, "f").unwrap(), rows);
        let mut text = String::new();
        flate2::read::GzDecoder::new(data.as_slice())
            .read_to_string(&mut text)
            .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with(",finished_at,proof"), "{text}");
        assert!(lines[1].ends_with(",checksum-crc64nvme"), "{text}");
        assert!(lines[3].ends_with(",etag"), "{text}");
        assert!(text.trim_end().ends_with(','), "no proof: empty\n{text}");
    }

    #[test]
    fn rows_of_earlier_versions_read_without_proof() {
        let old = format!(
            "{OLD_HEADER}j,e,s3://src,k1,s3://dst,k1,10,copied,,,1,5,1970-01-01T00:00:07+00:00\n"
        );
        let rows = decode_rows(&gz(&old), "old.csv.gz").unwrap();
        assert_eq!(rows, [row("k1", Outcome::Copied, 7)]);
        assert_eq!(rows[0].proof, None);
        // One job, old and new executors: the files aggregate together.
        let mut a = Aggregator::new(false);
        for r in rows {
            a.add(r);
        }
        let new = [proven("k2", Outcome::Copied, 8, Proof::Etag)];
        for r in decode_rows(&encode_rows(&new), "new.csv.gz").unwrap() {
            a.add(r);
        }
        let s = a.snapshot();
        assert_eq!((s.total, s.succeeded), (2, 2));
        assert_eq!((s.proofs.etag, s.proofs.unproven), (1, 1));
    }

    #[test]
    fn bad_column_counts_and_proofs_name_file_and_line() {
        let short = format!("{OLD_HEADER}j,e,s3://src,k,s3://dst,k,10,copied,,,1,5\n");
        let long = "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o\n".repeat(3);
        let bad_proof = format!(
            "{},proof\nj,e,s3://src,k,s3://dst,k,10,copied,,,1,5,1970-01-01T00:00:07Z,md5\n",
            OLD_HEADER.trim_end()
        );
        for (text, want) in [
            (short, "x.csv.gz:2"),
            (
                long,
                "x.csv.gz:2: bad report row: 15 columns, expected 14 (or 13",
            ),
            (bad_proof, "x.csv.gz:2: bad report row: proof"),
        ] {
            let e = decode_rows(&gz(&text), "x.csv.gz").unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn proofs_sum_the_latest_outcomes_that_compared() {
        use crate::checksum::Algorithm::{Crc64Nvme, Sha256};
        let mut a = Aggregator::new(false);
        a.add(proven("k1", Outcome::Copied, 1, Proof::Etag));
        a.add(proven(
            "k1",
            Outcome::Verified,
            2,
            Proof::Checksum(Crc64Nvme),
        )); // latest
        a.add(proven("k2", Outcome::Copied, 1, Proof::Checksum(Sha256)));
        a.add(proven("k3", Outcome::TagsUpdated, 1, Proof::Bytes));
        a.add(proven("k4", Outcome::SkippedIdentical, 1, Proof::None));
        a.add(row("k5", Outcome::Copied, 1)); // an older executor: no proof
        a.add(row("k6", Outcome::Failed, 1));
        a.add(row("k7", Outcome::SourceMissing, 1));
        a.add(row("k8", Outcome::SkippedFiltered, 1));
        let p = a.snapshot().proofs;
        assert_eq!((p.checksum, p.etag, p.bytes, p.unproven), (2, 0, 1, 2));
        assert_eq!(p.checksum_by_algorithm["crc64nvme"], 1);
        assert_eq!(p.checksum_by_algorithm["sha256"], 1);
        assert_eq!(p.total(), 5);
    }

    #[test]
    fn aggregation_dedupes_by_key_latest_wins() {
        let mut a = Aggregator::new(true);
        a.add(row("k1", Outcome::Failed, 1));
        a.add(row("k1", Outcome::Copied, 5)); // redriven and copied later
        a.add(row("k2", Outcome::Failed, 3));
        a.add(row("k3", Outcome::SkippedIdentical, 3));
        a.add(row("k4", Outcome::SourceMissing, 3));
        let (s, failed) = a.finish();
        assert_eq!(
            (s.total, s.succeeded, s.failed, s.skipped, s.source_missing),
            (4, 1, 1, 1, 1)
        );
        assert_eq!(s.rows, 5);
        assert_eq!(s.bytes, 10);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].source_key, "k2");
        assert_eq!(s.failures["AccessDenied"].count, 1);
        assert_eq!(failures_manifest(&failed), "src,k2\n");
    }

    #[test]
    fn kept_keys_are_the_latest_outcomes_once_each() {
        let mut a = Aggregator::new(true);
        a.add(row("gone", Outcome::SourceMissing, 1));
        a.add(row("gone", Outcome::SourceMissing, 2)); // redelivered
        a.add(row("back", Outcome::SourceMissing, 1));
        a.add(row("back", Outcome::Copied, 4)); // created, then repaired
        a.add(row("same", Outcome::SkippedIdentical, 1));
        a.add(row("fixed", Outcome::Failed, 1));
        a.add(row("fixed", Outcome::Copied, 9)); // a repair run's row
        assert_eq!(a.latest("s3://src", "fixed"), Some(Outcome::Copied));
        assert_eq!(a.latest("s3://src", "nope"), None);
        let (s, keys) = a.finish_keys();
        assert_eq!((s.failed, s.succeeded, s.source_missing), (0, 2, 1));
        let names = |rows: &[ReportRow]| -> Vec<String> {
            rows.iter().map(|r| r.source_key.clone()).collect()
        };
        assert_eq!(names(&keys.source_missing), ["gone"]);
        assert_eq!(names(&keys.skipped), ["same"]);
        assert!(keys.failed.is_empty());
    }

    #[test]
    fn verified_bytes_are_compared_not_written() {
        let mut a = Aggregator::new(false);
        a.add(row("v", Outcome::Verified, 1));
        a.add(row("c", Outcome::Copied, 1));
        let s = a.snapshot();
        assert_eq!((s.bytes, s.bytes_compared, s.succeeded), (10, 10, 2));
    }

    #[test]
    fn bytes_by_outcome_sum_the_latest_outcomes() {
        let mut a = Aggregator::new(false);
        a.add(row("k1", Outcome::Failed, 1));
        a.add(ReportRow {
            size: Some(7),
            ..row("k1", Outcome::Copied, 2)
        }); // redriven: the latest row's size counts
        a.add(row("k2", Outcome::Deleted, 1));
        a.add(row("k3", Outcome::Deleted, 1));
        a.add(ReportRow {
            size: None,
            ..row("k4", Outcome::Failed, 1)
        });
        let b = a.snapshot().bytes_by_outcome;
        assert_eq!(b["copied"], 7);
        assert_eq!(b["deleted"], 20);
        assert_eq!(b["failed"], 0, "size unknown: 0");
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn old_job_records_still_read() {
        let old = r#"{"job_id":"j","source":"s3://a","target":"s3://b",
            "started_at":"2024-01-01T00:00:00Z","finished_at":null,"objects":1,
            "bytes":2,"messages":1,"per_queue":{},"skipped":{}}"#;
        let r: JobRecord = serde_json::from_str(old).unwrap();
        assert_eq!(
            (r.target.as_str(), r.target_root.as_deref()),
            ("s3://b", None)
        );
        assert!(r.repairs.is_empty() && r.prefix.is_empty());
    }

    #[test]
    fn snapshot_is_finish_without_consuming() {
        let mut a = Aggregator::new(true);
        a.add(row("k1", Outcome::Failed, 1));
        a.add(row("k2", Outcome::Copied, 2));
        let early = a.snapshot();
        assert_eq!((early.total, early.failed, early.succeeded), (2, 1, 1));
        a.add(row("k1", Outcome::Copied, 3));
        let snap = a.snapshot();
        let (done, failed) = a.finish();
        assert_eq!(snap, done);
        assert_eq!((done.total, done.failed, done.succeeded), (2, 0, 2));
        assert!(failed.is_empty() && done.failures.is_empty());
    }

    #[test]
    fn manifest_keys_are_percent_encoded() {
        assert_eq!(encode_key("a b+c%/ü"), "a%20b%2Bc%25/%C3%BC");
    }
}
