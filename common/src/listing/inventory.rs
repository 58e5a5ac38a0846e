//! S3 Inventory as a source of keys: `manifest.json` (from S3 or a local
//! copy) and its gzip CSV data files, streamed (no temp files) while their MD5
//! is checked against the manifest's `MD5checksum`.
//!
//! - Columns are mapped by `fileSchema`; only `Key` is required.
//! - Keys are form-encoded in inventory CSV (`+` is a space, `%2B` a plus):
//!   decoded exactly, a bad escape is an error naming the file and line.
//! - Delete markers and non-current versions are skipped (and counted).
//! - ETags are quoted as ListObjectsV2 returns them.
//! - `-m` may name a manifest (`…/manifest.json`) or a prefix/directory under
//!   which the greatest `…/manifest.json` key (the newest date folder) is used.
//! - Data files are read from the bucket the manifest was read from (not the
//!   `destinationBucket` ARN, so a copied inventory works); for a local
//!   manifest, `<ancestor>/<key>` for the nearest ancestor directory where the
//!   file exists, else the file's name next to the manifest.
//! - ORC and Parquet inventories are refused with an error naming the format.

use std::borrow::Cow;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use md5::{Digest, Md5};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::parallel::SourceEnd;
use super::{BlockingRead, Candidate, Found, ListStats, Selector, Skip};
use crate::error::{Error, ErrorKind, Result};
use crate::store::{ListRequest, ObjectStore};

/// The parts of `manifest.json` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub source_bucket: String,
    /// Bucket name from the `destinationBucket` ARN (informational).
    pub destination_bucket: String,
    pub file_format: String,
    pub file_schema: String,
    pub files: Vec<DataFile>,
}

/// One data file of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    pub key: String,
    pub size: Option<u64>,
    /// Hex MD5 of the compressed file.
    pub md5: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    source_bucket: String,
    #[serde(default)]
    destination_bucket: String,
    file_format: String,
    #[serde(default)]
    file_schema: String,
    files: Vec<RawFile>,
}

#[derive(Deserialize)]
struct RawFile {
    key: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default, rename = "MD5checksum")]
    md5: Option<String>,
}

/// Parse `manifest.json`; `subject` (its path) names it in errors. Only CSV
/// inventories are read: ORC and Parquet are refused by name.
pub fn parse_manifest(bytes: &[u8], subject: &str) -> Result<Manifest> {
    let raw: RawManifest = serde_json::from_slice(bytes)
        .map_err(|e| Error::input(subject, format!("not a valid S3 Inventory manifest: {e}")))?;
    let format = raw.file_format.trim();
    if !format.eq_ignore_ascii_case("CSV") {
        return Err(Error::input(
            subject,
            format!("inventory fileFormat `{format}` is not supported: only CSV inventories can be read (configure the inventory with CSV output)"),
        ));
    }
    if raw.file_schema.trim().is_empty() {
        return Err(Error::input(subject, "manifest has no fileSchema"));
    }
    let destination_bucket = raw
        .destination_bucket
        .rsplit(":::")
        .next()
        .unwrap_or_default()
        .to_string();
    Ok(Manifest {
        source_bucket: raw.source_bucket,
        destination_bucket,
        file_format: format.to_string(),
        file_schema: raw.file_schema,
        files: raw
            .files
            .into_iter()
            .map(|f| DataFile {
                key: f.key,
                size: f.size,
                md5: f
                    .md5
                    .map(|m| m.trim().to_ascii_lowercase())
                    .filter(|m| !m.is_empty()),
            })
            .collect(),
    })
}

/// Column positions from `fileSchema`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    pub columns: usize,
    pub key: usize,
    pub version_id: Option<usize>,
    pub is_latest: Option<usize>,
    pub is_delete_marker: Option<usize>,
    pub size: Option<usize>,
    pub last_modified: Option<usize>,
    pub etag: Option<usize>,
    pub storage_class: Option<usize>,
    pub checksum_algorithm: Option<usize>,
}

impl Schema {
    /// Map `Bucket, Key, VersionId, …` (any order, any extra columns).
    pub fn parse(file_schema: &str, subject: &str) -> Result<Self> {
        let names: Vec<&str> = file_schema.split(',').map(str::trim).collect();
        let find = |n: &str| names.iter().position(|x| x.eq_ignore_ascii_case(n));
        let key = find("Key").ok_or_else(|| {
            Error::input(
                subject,
                format!("fileSchema `{file_schema}` has no Key column"),
            )
        })?;
        Ok(Schema {
            columns: names.len(),
            key,
            version_id: find("VersionId"),
            is_latest: find("IsLatest"),
            is_delete_marker: find("IsDeleteMarker"),
            size: find("Size"),
            last_modified: find("LastModifiedDate"),
            etag: find("ETag"),
            storage_class: find("StorageClass"),
            checksum_algorithm: find("ChecksumAlgorithm"),
        })
    }
}

/// What reading one data file found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileStats {
    /// CSV rows read.
    pub rows: u64,
    /// Compressed bytes read.
    pub compressed_bytes: u64,
}

/// Decode a form-encoded key (`+` is a space, `%XX` a byte); `None` on a bad
/// escape or invalid UTF-8. Borrowed when nothing needs decoding.
pub fn decode_form(raw: &[u8]) -> Option<Cow<'_, str>> {
    decode_escapes(raw, true)
}

/// Strict RFC 3986 percent-decoding (`+` stays `+`): a bad escape (`%G1`, a
/// lone `%`) or invalid UTF-8 is `None`, never kept as literal text.
pub fn decode_percent(raw: &[u8]) -> Option<Cow<'_, str>> {
    decode_escapes(raw, false)
}

fn decode_escapes(raw: &[u8], plus_is_space: bool) -> Option<Cow<'_, str>> {
    if !raw
        .iter()
        .any(|b| *b == b'%' || (plus_is_space && *b == b'+'))
    {
        return std::str::from_utf8(raw).ok().map(Cow::Borrowed);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                let hi = raw.get(i + 1).and_then(|c| (*c as char).to_digit(16))?;
                let lo = raw.get(i + 2).and_then(|c| (*c as char).to_digit(16))?;
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// A reader that hashes (MD5) and counts what passes through it.
struct Hashing<R> {
    inner: R,
    md5: Md5,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.md5.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Read one gzip CSV data file, calling `emit` for every selected key in file
/// order; verify the compressed bytes against `file`'s MD5 and size at the end.
/// `name` (`s3://bucket/key` or a path) names the file in errors, with the
/// line number for a bad row. `emit` gets each key with its line and may stop
/// the read by returning an error.
/// `rows_read` (if given) counts rows as they are read, for progress.
pub fn read_data_file<R: Read>(
    reader: R,
    name: &str,
    file: &DataFile,
    schema: &Schema,
    selector: &Selector,
    rows_read: Option<&AtomicU64>,
    emit: &mut dyn FnMut(u64, crate::message::KeyItem) -> Result<()>,
) -> Result<FileStats> {
    let mut hashing = Hashing {
        inner: reader,
        md5: Md5::new(),
        bytes: 0,
    };
    let mut rows = 0u64;
    {
        let gz =
            flate2::read::MultiGzDecoder::new(BufReader::with_capacity(256 * 1024, &mut hashing));
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(256 * 1024)
            .from_reader(gz);
        let mut rec = csv::ByteRecord::new();
        let mut storage_class: Option<String> = None;
        loop {
            match csv.read_byte_record(&mut rec) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    let line = rows + 1;
                    let what = if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                        "cannot read the gzip CSV data"
                    } else {
                        "bad CSV"
                    };
                    return Err(Error::input(
                        format!("{name}:{line}"),
                        format!("{what}: {e}"),
                    ));
                }
            }
            rows += 1;
            if let Some(r) = rows_read {
                r.fetch_add(1, Ordering::Relaxed);
            }
            // Inventory rows are one per line (keys are URL-encoded, so no field
            // holds a line break): the record number is the line number. The csv
            // crate's own line counter lags on CRLF files (rust-csv#395).
            let line = rows;
            if rec.len() != schema.columns {
                return Err(Error::input(
                    format!("{name}:{line}"),
                    format!(
                        "row has {} columns, fileSchema has {}",
                        rec.len(),
                        schema.columns
                    ),
                ));
            }
            if let Some(item) = row_item(&rec, schema, selector, &mut storage_class)
                .map_err(|m| Error::input(format!("{name}:{line}"), m))?
            {
                emit(line, item)?;
            }
        }
        let gz = csv.into_inner();
        let mut rest = gz.into_inner();
        std::io::copy(&mut rest, &mut std::io::sink())
            .map_err(|e| Error::input(name, format!("cannot read the data file: {e}")))?;
    }
    let digest = hex::encode(hashing.md5.finalize());
    if let Some(want) = &file.md5 {
        if *want != digest {
            return Err(Error::new(
                ErrorKind::Input,
                "ChecksumMismatch",
                name,
                format!("MD5 of the data file is {digest}, the manifest says {want}: the file is corrupt or not the one the manifest lists"),
            ));
        }
    }
    if let Some(want) = file.size {
        if want != hashing.bytes {
            return Err(Error::new(
                ErrorKind::Input,
                "SizeMismatch",
                name,
                format!(
                    "data file has {} bytes, the manifest says {want}",
                    hashing.bytes
                ),
            ));
        }
    }
    Ok(FileStats {
        rows,
        compressed_bytes: hashing.bytes,
    })
}

/// One row to a [`crate::message::KeyItem`], or `None` when it is skipped
/// (delete marker, old version, filtered). `Err` is the reason a row is bad.
fn row_item(
    rec: &csv::ByteRecord,
    schema: &Schema,
    selector: &Selector,
    storage_class: &mut Option<String>,
) -> std::result::Result<Option<crate::message::KeyItem>, String> {
    let field = |i: Option<usize>| i.map(|i| &rec[i]).filter(|f| !f.is_empty());
    let text = |i: Option<usize>, what: &str| -> std::result::Result<Option<&str>, String> {
        field(i)
            .map(|f| std::str::from_utf8(f).map_err(|_| format!("{what} is not UTF-8")))
            .transpose()
    };
    if field(schema.is_delete_marker).is_some_and(|f| f.eq_ignore_ascii_case(b"true")) {
        selector.counts.add(Skip::DeleteMarker);
        return Ok(None);
    }
    if field(schema.is_latest).is_some_and(|f| f.eq_ignore_ascii_case(b"false")) {
        selector.counts.add(Skip::NotLatest);
        return Ok(None);
    }
    let raw_key = &rec[schema.key];
    let key = decode_form(raw_key).ok_or_else(|| {
        format!(
            "key `{}` is not valid URL-encoded UTF-8",
            String::from_utf8_lossy(raw_key)
        )
    })?;
    if key.is_empty() {
        return Err("empty key".to_string());
    }
    if key.len() > super::MAX_KEY_BYTES {
        return Err(format!(
            "key of {} bytes is over S3's 1,024-byte limit",
            key.len()
        ));
    }
    let size = text(schema.size, "Size")?
        .map(|s| {
            s.parse::<u64>()
                .map_err(|_| format!("Size `{s}` is not a number"))
        })
        .transpose()?;
    let last_modified = text(schema.last_modified, "LastModifiedDate")?
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| format!("LastModifiedDate `{s}` is not an RFC 3339 date"))
        })
        .transpose()?;
    let c = Candidate {
        key: &key,
        size,
        last_modified,
        owner_id: None,
        owner_name: None,
    };
    let Some(mut item) = selector.item(&c) else {
        return Ok(None);
    };
    if let Some(e) = text(schema.etag, "ETag")? {
        item.etag = Some(if e.starts_with('"') {
            e.to_string()
        } else {
            format!("\"{e}\"")
        });
    }
    if let Some(sc) = text(schema.storage_class, "StorageClass")? {
        if storage_class.as_deref() != Some(sc) {
            *storage_class = Some(sc.to_string());
        }
        item.storage_class = storage_class.clone();
    }
    item.version_id = text(schema.version_id, "VersionId")?.map(str::to_string);
    item.checksum_algorithm =
        text(schema.checksum_algorithm, "ChecksumAlgorithm")?.map(str::to_string);
    Ok(Some(item))
}

/// Where the manifest was found.
#[derive(Debug, Clone)]
enum Place {
    S3 {
        store: Arc<dyn ObjectStore>,
        bucket: String,
    },
    Local {
        dir: PathBuf,
    },
}

/// An opened inventory: the manifest, its schema, and where its files are.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub manifest: Manifest,
    pub schema: Schema,
    /// `s3://bucket/key` or the path of the manifest, for messages.
    pub manifest_name: String,
    /// `--resume-from`: rows before this one are not read (files before its
    /// file are not even opened).
    pub resume_from: Option<super::Row>,
    place: Place,
}

impl Inventory {
    /// Open from S3: `path` is a `manifest.json` key, or a prefix under which
    /// the greatest `…manifest.json` key is used. `store` reads `bucket` with the
    /// inventory credentials.
    pub async fn open_s3(store: Arc<dyn ObjectStore>, bucket: &str, path: &str) -> Result<Self> {
        let key = if path.ends_with("manifest.json") {
            path.to_string()
        } else {
            newest_manifest_key(store.as_ref(), bucket, path).await?
        };
        let name = format!("s3://{bucket}/{key}");
        let bytes = read_all(store.as_ref(), &key, &name).await?;
        let manifest = parse_manifest(&bytes, &name)?;
        let schema = Schema::parse(&manifest.file_schema, &name)?;
        Ok(Inventory {
            manifest,
            schema,
            manifest_name: name,
            resume_from: None,
            place: Place::S3 {
                store,
                bucket: bucket.to_string(),
            },
        })
    }

    /// Open a local manifest file, or the newest `manifest.json` under a directory.
    pub fn open_local(path: &Path) -> Result<Self> {
        let file = if path.is_dir() {
            newest_local_manifest(path)?
        } else {
            path.to_path_buf()
        };
        let name = file.display().to_string();
        let bytes = std::fs::read(&file)
            .map_err(|e| Error::input(&name, format!("cannot read the manifest: {e}")))?;
        let manifest = parse_manifest(&bytes, &name)?;
        let schema = Schema::parse(&manifest.file_schema, &name)?;
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Inventory {
            manifest,
            schema,
            manifest_name: name,
            resume_from: None,
            place: Place::Local { dir },
        })
    }

    /// How a data file is named in errors.
    pub fn file_name(&self, f: &DataFile) -> String {
        match &self.place {
            Place::S3 { bucket, .. } => format!("s3://{bucket}/{}", f.key),
            Place::Local { dir } => local_data_path(dir, &f.key).display().to_string(),
        }
    }

    /// A blocking reader of a data file's compressed bytes (use it off the runtime).
    pub async fn open_file(&self, f: &DataFile) -> Result<Box<dyn Read + Send>> {
        let name = self.file_name(f);
        match &self.place {
            Place::S3 { store, .. } => {
                let stream = store.get(&f.key, None, None).await.map_err(|e| {
                    let msg = format!("cannot read the inventory data file: {}", e.message);
                    Error::new(e.kind, e.class.clone(), &name, msg).with_source(e)
                })?;
                Ok(Box::new(BlockingRead::new(stream)))
            }
            Place::Local { .. } => {
                let file = std::fs::File::open(&name).map_err(|e| {
                    Error::input(&name, format!("cannot open the inventory data file: {e}"))
                })?;
                Ok(Box::new(file))
            }
        }
    }

    /// Read every data file in manifest order, calling `emit` (on a blocking
    /// thread) for each selected key; returns the rows read. Used both for the
    /// counting pre-pass and for sending. Stops at the first bad file.
    pub async fn for_each(
        &self,
        selector: Arc<Selector>,
        stats: Option<Arc<ListStats>>,
        emit: Emit,
    ) -> Result<u64> {
        let mut rows = 0;
        let from = self.resume_from.unwrap_or(super::Row::FIRST);
        for (i, f) in self.manifest.files.iter().enumerate() {
            let file_no = u32::try_from(i + 1).unwrap_or(u32::MAX);
            if file_no < from.file {
                continue;
            }
            let first_line = if file_no == from.file { from.line } else { 1 };
            let reader = self.open_file(f).await?;
            let name = self.file_name(f);
            let (file, schema, sel) = (f.clone(), self.schema.clone(), selector.clone());
            let (stats2, emit2) = (stats.clone(), emit.clone());
            let read = tokio::task::spawn_blocking(move || {
                let seen = stats2.as_ref().map(|s| &s.seen);
                read_data_file(
                    reader,
                    &name,
                    &file,
                    &schema,
                    &sel,
                    seen,
                    &mut |line, item| {
                        if line < first_line {
                            return Ok(());
                        }
                        emit2(
                            super::Row {
                                file: file_no,
                                line,
                            },
                            item,
                        )
                    },
                )
            })
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Permanent,
                    "Panic",
                    self.file_name(f),
                    e.to_string(),
                )
            })??;
            rows += read.rows;
            tracing::info!(file = %self.file_name(f), rows = read.rows, "inventory data file read");
            if let Some(s) = &stats {
                s.pages.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(rows)
    }

    /// Send every selected key into `tx` as coming from `source`. Stops on the
    /// first bad file or when `cancel` fires; the result says where to resume:
    /// the row after the last one handed on (a row, not a key: rows and files
    /// need not be in key order).
    pub async fn send(
        &self,
        selector: Arc<Selector>,
        source: Arc<str>,
        stats: Arc<ListStats>,
        tx: mpsc::Sender<Found>,
        cancel: CancellationToken,
    ) -> SourceEnd {
        let tracker = Arc::new(std::sync::Mutex::new(super::RowTracker::new(
            self.resume_from,
        )));
        let emit = sending_emit(source, tx, cancel, tracker.clone());
        let result = self.for_each(selector, Some(stats), emit).await;
        let next = tracker.lock().expect("tracker lock").next();
        finish(result.map(|_| ()), next)
    }
}

/// Called for every selected key with its row, on a blocking thread; an error stops the read.
pub type Emit = Arc<dyn Fn(super::Row, crate::message::KeyItem) -> Result<()> + Send + Sync>;

/// An [`Emit`] that hands keys to the pipeline and tracks the resume point.
pub(crate) fn sending_emit(
    source: Arc<str>,
    tx: mpsc::Sender<Found>,
    cancel: CancellationToken,
    tracker: Arc<std::sync::Mutex<super::RowTracker>>,
) -> Emit {
    Arc::new(move |row: super::Row, item: crate::message::KeyItem| {
        if cancel.is_cancelled() {
            return Err(stopped());
        }
        tx.blocking_send(Found {
            source: source.clone(),
            item,
            row: Some(row),
        })
        .map_err(|_| stopped())?;
        tracker.lock().expect("tracker lock").handed_on(row);
        Ok(())
    })
}

/// A manifest source's end from its result: a stop is not an error. A
/// stopped manifest resumes at `next` (a row); as keys it would resume from
/// the beginning, since its rows need not be in key order.
pub(crate) fn finish(result: Result<()>, next: super::Row) -> SourceEnd {
    let error = match result {
        Ok(()) => return SourceEnd::default(),
        Err(e) if e.class == "Stopped" => None,
        Err(e) => Some(e),
    };
    SourceEnd {
        error,
        unfinished: Some(None),
        next_row: Some(next),
    }
}

fn stopped() -> Error {
    Error::new(ErrorKind::Permanent, "Stopped", "", "the pipeline stopped")
}

async fn read_all(store: &dyn ObjectStore, key: &str, name: &str) -> Result<Vec<u8>> {
    use futures::StreamExt;
    let mut stream = store.get(key, None, None).await.map_err(|e| {
        let msg = if e.kind == ErrorKind::NotFound {
            "manifest not found".to_string()
        } else {
            format!("cannot read the manifest: {}", e.message)
        };
        Error::new(e.kind, e.class.clone(), name, msg).with_source(e)
    })?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            let msg = format!("cannot read the manifest: {}", e.message);
            Error::new(e.kind, e.class.clone(), name, msg).with_source(e)
        })?;
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The greatest key ending in `manifest.json` under `prefix` (date folders
/// sort by time, so that is the newest inventory).
async fn newest_manifest_key(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
) -> Result<String> {
    let mut best: Option<String> = None;
    let mut req = ListRequest {
        prefix: prefix.to_string(),
        ..ListRequest::default()
    };
    loop {
        let page = store.list_page(&req).await.map_err(|e| {
            let msg = format!("cannot list the manifest location: {}", e.message);
            Error::new(
                e.kind,
                e.class.clone(),
                format!("s3://{bucket}/{prefix}"),
                msg,
            )
            .with_source(e)
        })?;
        for o in page.objects {
            if o.key.ends_with("manifest.json") && best.as_ref().is_none_or(|b| o.key > *b) {
                best = Some(o.key);
            }
        }
        match page.next {
            Some(t) => req.continuation = Some(t),
            None => break,
        }
    }
    best.ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            "ManifestNotFound",
            format!("s3://{bucket}/{prefix}"),
            "no manifest.json under this location",
        )
    })
}

fn newest_local_manifest(dir: &Path) -> Result<PathBuf> {
    fn walk(dir: &Path, best: &mut Option<PathBuf>, depth: u32) -> std::io::Result<()> {
        if depth > 8 {
            return Ok(());
        }
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                walk(&path, best, depth + 1)?;
            } else if path.file_name().is_some_and(|n| n == "manifest.json")
                && best.as_ref().is_none_or(|b| path > *b)
            {
                *best = Some(path);
            }
        }
        Ok(())
    }
    let mut best = None;
    walk(dir, &mut best, 0).map_err(|e| {
        Error::input(
            dir.display().to_string(),
            format!("cannot read the manifest directory: {e}"),
        )
    })?;
    best.ok_or_else(|| {
        Error::input(
            dir.display().to_string(),
            "no manifest.json under this directory",
        )
    })
}

/// `<ancestor>/<key>` for the nearest ancestor of `dir` where it exists, else
/// the key's file name in `dir`.
fn local_data_path(dir: &Path, key: &str) -> PathBuf {
    let mut at = Some(dir);
    while let Some(d) = at {
        let candidate = d.join(key);
        if candidate.is_file() {
            return candidate;
        }
        at = d.parent();
    }
    dir.join(key.rsplit('/').next().unwrap_or(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::{FilterSpec, KeyFilter, KeyMap};
    use std::io::Write;

    const SCHEMA: &str = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass, IsMultipartUploaded";

    fn gz(text: &str) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    }

    fn selector() -> Selector {
        Selector::new(
            KeyFilter::new(FilterSpec::default()).unwrap(),
            KeyMap::default(),
        )
    }

    fn read(data: &[u8], file: &DataFile, sel: &Selector) -> Result<Vec<crate::message::KeyItem>> {
        let schema = Schema::parse(SCHEMA, "m").unwrap();
        let mut out = Vec::new();
        read_data_file(
            data,
            "s3://inv/data/1.csv.gz",
            file,
            &schema,
            sel,
            None,
            &mut |_, i| {
                out.push(i);
                Ok(())
            },
        )?;
        Ok(out)
    }

    fn file_for(data: &[u8]) -> DataFile {
        DataFile {
            key: "data/1.csv.gz".into(),
            size: Some(data.len() as u64),
            md5: Some(hex::encode(Md5::digest(data))),
        }
    }

    #[test]
    fn parses_a_real_manifest_and_refuses_other_formats() {
        let json = r#"{
          "sourceBucket": "example-source-bucket",
          "destinationBucket": "arn:aws:s3:::example-inventory-destination-bucket",
          "version": "2016-11-30",
          "creationTimestamp": "1514944800000",
          "fileFormat": "CSV",
          "fileSchema": "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass",
          "files": [{"key": "Inventory/example-source-bucket/2016-11-06T21-32Z/files/939c6d46.csv.gz",
                     "size": 2147483647, "MD5checksum": "F11166069f1990abeb9c97ace9cdfabc"}]
        }"#;
        let m = parse_manifest(json.as_bytes(), "m.json").unwrap();
        assert_eq!(m.source_bucket, "example-source-bucket");
        assert_eq!(m.destination_bucket, "example-inventory-destination-bucket");
        assert_eq!(
            m.files[0].md5.as_deref(),
            Some("f11166069f1990abeb9c97ace9cdfabc")
        );
        let s = Schema::parse(&m.file_schema, "m.json").unwrap();
        assert_eq!(
            (s.columns, s.key, s.size, s.storage_class),
            (9, 1, Some(5), Some(8))
        );

        for fmt in ["ORC", "Parquet"] {
            let bad = json.replace("\"CSV\"", &format!("\"{fmt}\""));
            let e = parse_manifest(bad.as_bytes(), "s3://inv/m.json").unwrap_err();
            assert!(
                e.to_string().contains(fmt) && e.to_string().contains("s3://inv/m.json"),
                "{e}"
            );
        }
        let e = parse_manifest(b"{not json", "x/manifest.json").unwrap_err();
        assert!(e.to_string().contains("x/manifest.json"), "{e}");
        let e = Schema::parse("Bucket, Size", "m").unwrap_err();
        assert!(e.to_string().contains("Key"), "{e}");
    }

    #[test]
    fn decodes_form_encoded_keys_exactly() {
        assert_eq!(decode_form(b"plain/key").unwrap(), "plain/key");
        assert_eq!(decode_form(b"a+b%2Bc%20d").unwrap(), "a b+c d");
        assert_eq!(decode_form(b"%C3%BC%25").unwrap(), "ü%");
        assert!(decode_form(b"bad%2").is_none());
        assert!(decode_form(b"bad%zz").is_none());
        assert!(decode_form(b"%FF").is_none());
    }

    #[test]
    fn reads_rows_skipping_markers_and_old_versions() {
        let text = concat!(
            "\"src\",\"a+b%2Bc\",\"v1\",\"true\",\"false\",\"12\",\"2024-01-02T03:04:05.000Z\",\"0123abcd\",\"STANDARD\",\"false\"\n",
            "\"src\",\"old\",\"v0\",\"false\",\"false\",\"5\",\"2023-01-01T00:00:00.000Z\",\"ff\",\"STANDARD\",\"false\"\n",
            "\"src\",\"gone\",\"v2\",\"true\",\"true\",\"\",\"2024-01-01T00:00:00.000Z\",\"\",\"\",\"\"\n",
            "\"src\",\"dir%2Fx%C3%BC\",\"\",\"\",\"\",\"0\",\"2024-01-02T00:00:00.000Z\",\"ee\",\"GLACIER\",\"false\"\n",
        );
        let data = gz(text);
        let sel = selector();
        let items = read(&data, &file_for(&data), &sel).unwrap();
        let keys: Vec<_> = items.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["a b+c", "dir/xü"]);
        assert_eq!(items[0].size, Some(12));
        assert_eq!(items[0].etag.as_deref(), Some("\"0123abcd\""));
        assert_eq!(items[0].version_id.as_deref(), Some("v1"));
        assert_eq!(
            items[0].last_modified.unwrap().to_rfc3339(),
            "2024-01-02T03:04:05+00:00"
        );
        assert_eq!(items[1].storage_class.as_deref(), Some("GLACIER"));
        assert_eq!(items[1].version_id, None);
        assert_eq!(
            (
                sel.counts.get(Skip::NotLatest),
                sel.counts.get(Skip::DeleteMarker)
            ),
            (1, 1)
        );
    }

    #[test]
    fn bad_files_name_the_file_and_line() {
        let good = "\"src\",\"k\",\"\",\"true\",\"false\",\"1\",\"2024-01-01T00:00:00Z\",\"e\",\"STANDARD\",\"false\"\n";
        let data = gz(&format!("{good}{good}\"src\",\"short\"\n"));
        let e = read(&data, &file_for(&data), &selector()).unwrap_err();
        assert!(e.to_string().contains("s3://inv/data/1.csv.gz:3"), "{e}");
        assert!(e.to_string().contains("2 columns"), "{e}");

        let data = gz(good);
        let mut f = file_for(&data);
        f.md5 = Some("00000000000000000000000000000000".into());
        let e = read(&data, &f, &selector()).unwrap_err();
        assert_eq!(e.class, "ChecksumMismatch");
        assert!(e.to_string().contains("s3://inv/data/1.csv.gz"), "{e}");

        let e = read(
            b"not gzip at all",
            &file_for(b"not gzip at all"),
            &selector(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("s3://inv/data/1.csv.gz"), "{e}");

        let data = gz(&good.replace("\"1\"", "\"one\""));
        let e = read(&data, &file_for(&data), &selector()).unwrap_err();
        assert!(
            e.to_string().contains(":1") && e.to_string().contains("Size"),
            "{e}"
        );
    }

    #[test]
    fn local_data_files_are_found_by_key_or_name() {
        let dir = tempfile::tempdir().unwrap();
        let mdir = dir.path().join("src/cfg/2024-01-01T00-00Z");
        std::fs::create_dir_all(&mdir).unwrap();
        std::fs::create_dir_all(dir.path().join("src/cfg/data")).unwrap();
        std::fs::write(dir.path().join("src/cfg/data/x.csv.gz"), b"").unwrap();
        assert_eq!(
            local_data_path(&mdir, "src/cfg/data/x.csv.gz"),
            dir.path().join("src/cfg/data/x.csv.gz")
        );
        assert_eq!(
            local_data_path(&mdir, "elsewhere/y.csv.gz"),
            mdir.join("y.csv.gz")
        );
        std::fs::write(mdir.join("manifest.json"), b"{}").unwrap();
        let older = dir.path().join("src/cfg/2023-01-01T00-00Z");
        std::fs::create_dir_all(&older).unwrap();
        std::fs::write(older.join("manifest.json"), b"{}").unwrap();
        assert_eq!(
            newest_local_manifest(dir.path()).unwrap(),
            mdir.join("manifest.json")
        );
    }
}
