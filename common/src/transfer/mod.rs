//! One object's work, in any mode: `copy` (server-side CopyObject, or
//! UploadPartCopy reproducing the source's part layout), `downup` (streaming
//! GET → PutObject or multipart upload, memory bounded by parts, optionally
//! within one [`BufferPool`] for the whole process) and `check`
//! (compare, never write). The executor calls [`process_key`] for every key of
//! a message; planning is pure ([`plan`]), comparing is pure ([`crate::verify`]).
//!
//! Guarantees:
//! - a target is never a mix of two source versions: every request that reads
//!   the source is pinned to the ETag seen at listing or HEAD (`if-match` /
//!   `x-amz-copy-source-if-match`); a change fails with class `SourceChanged`;
//! - a failed multipart upload is aborted (also when the work is cancelled),
//!   so no orphaned parts are billed;
//! - in downup, each part's MD5 is computed while reading and checked by the
//!   target (Content-MD5 on S3, the returned part ETag elsewhere);
//! - retryable failures are retried (the SDK per request, plus whole-object
//!   attempts re-planned from a fresh HEAD under [`TransferOptions::retry`]);
//!   everything else is returned for the DLQ.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use tracing::Instrument;

use crate::checksum::{Algorithm, Checksum};
use crate::error::{Error, ErrorKind, Result};
use crate::message::{KeyItem, Op};
use crate::report::{Outcome, Proof};
use crate::retry::{self, Policy};
use crate::store::etag::{compute_etag, compute_multipart_etag};
use crate::store::{Finish, ObjectAttrs, ObjectInfo, ObjectStore, Written, TARGET_EXISTS};
use crate::verify::{self, etag_bare, etag_parts, Verdict};
use crate::window::DateWindow;

mod buffers;
mod carry;
mod copy;
mod downup;
pub mod plan;
mod sync;

pub use buffers::{BufferPool, Reserved};

use carry::Carry;
use plan::{Limits, Plan, Planned, SourceLayout};

/// What the executor does with each key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum Mode {
    /// Server-side copy (CopyObject / UploadPartCopy); streams when the ends
    /// cannot copy server-side (a directory, different endpoints or credentials).
    #[default]
    Copy,
    /// Stream download → upload: any two stores, accounts, regions or endpoints.
    Downup,
    /// Compare source and target; a missing or different target is a failure.
    Check,
}

impl Mode {
    /// The name users type and reports show.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Copy => "copy",
            Mode::Downup => "downup",
            Mode::Check => "check",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to work each key (from the executor's flags and config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferOptions {
    pub mode: Mode,
    /// `--verify`: compare first; identical → skip, tags only → PutObjectTagging only.
    pub verify: bool,
    /// `--deep`: compare content by streaming both objects when metadata cannot decide.
    pub deep: bool,
    /// Objects of at least this size are written in parts (`migration.multipart_threshold`).
    pub multipart_threshold: u64,
    /// Part size for single-part sources that must be split (`migration.part_size`).
    pub part_size: u64,
    /// Parts of ONE object in flight; downup buffers at most this many parts.
    pub part_concurrency: usize,
    /// Storage class of written objects; `None`: the target's default (STANDARD).
    pub storage_class: Option<String>,
    /// Canned ACL of written objects; `None`: omitted (bucket-owner default).
    pub acl: Option<String>,
    /// Work only objects modified inside this window (others: `skipped-filtered`).
    pub window: DateWindow,
    /// Whole-object attempts (re-planned from a fresh HEAD): how many, how
    /// far apart, within how long ([`Policy::object`] by default).
    pub retry: Policy,
    /// Memory budget shared by every object in flight (downup part and object
    /// buffers); `None`: only the per-object bound (`part_concurrency` parts).
    pub buffers: Option<BufferPool>,
    /// `--checksum-algorithm`: the checksum a target gets when its source has
    /// none (a source's own is always carried); `None`: ask for none.
    pub checksum: Option<Algorithm>,
    /// `--no-overwrite`: never replace an existing target (outcome
    /// `target-exists`); writes are conditional (`If-None-Match: *`).
    pub no_overwrite: bool,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            mode: Mode::Copy,
            verify: false,
            deep: false,
            multipart_threshold: 5 * 1024 * 1024 * 1024,
            part_size: 64 * 1024 * 1024,
            part_concurrency: 4,
            storage_class: None,
            acl: None,
            window: DateWindow::default(),
            retry: Policy::object(),
            buffers: None,
            checksum: Some(Algorithm::Crc64Nvme),
            no_overwrite: false,
        }
    }
}

/// The two ends of one message; `server_side` true when copy mode can use
/// CopyObject (both S3, same credentials/endpoint).
#[derive(Debug, Clone)]
pub struct Ends {
    pub source: Arc<dyn ObjectStore>,
    pub target: Arc<dyn ObjectStore>,
    pub server_side: bool,
}

/// A key's successful (non-failed) result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub outcome: Outcome,
    /// Bytes written to the target (copied), or compared (check); 0 when skipped.
    pub bytes: u64,
    /// What the user should know, e.g. "layout not reproducible: ETag differs".
    pub note: Option<String>,
    /// What showed the target equal to the source (copied, verified,
    /// skipped-identical); `None` for outcomes that compare nothing.
    pub proof: Option<Proof>,
}

impl Done {
    fn new(outcome: Outcome, bytes: u64) -> Self {
        Done {
            outcome,
            bytes,
            note: None,
            proof: None,
        }
    }

    fn proven(outcome: Outcome, bytes: u64, proof: Proof) -> Self {
        Done {
            proof: Some(proof),
            ..Done::new(outcome, bytes)
        }
    }
}

/// Class of the error when the source changed (ETag precondition failed).
pub const SOURCE_CHANGED: &str = "SourceChanged";
/// Check mode: the target does not exist.
pub const TARGET_MISSING: &str = "TargetMissing";
/// Check mode: the target differs (message = the reasons, `; `-joined).
pub const MISMATCH: &str = "Mismatch";
/// A part or object whose bytes did not arrive intact (retried).
pub const BAD_DIGEST: &str = "BadDigest";

/// Work one key. Ok = done (any non-failed outcome); Err = failed after
/// retries, its ErrorKind/class say why (the caller parks it in the DLQ).
pub async fn process_key(ends: &Ends, item: &KeyItem, opts: &TransferOptions) -> Result<Done> {
    let span = tracing::info_span!(
        "object",
        mode = %opts.mode,
        source = %ends.source.describe(),
        key = %item.key,
    );
    // Boxed: one attempt's future is deep; callers' futures stay shallow.
    let work = || Box::pin(once(ends, item, opts));
    let result = retry::retry(
        &opts.retry,
        work,
        |e: &Error| should_retry(e, item),
        |e: &Error, after: Duration| {
            tracing::warn!(error = %e, retry_in = ?after, "retrying the object");
        },
    )
    .instrument(span.clone())
    .await;
    let _enter = span.enter();
    let result = result.map_err(|f| {
        let mut e = f.error;
        if f.attempts > 1 {
            e.message = format!("{} (after {} attempts)", e.message, f.attempts);
        }
        e
    });
    match &result {
        Ok(done) => tracing::debug!(outcome = %done.outcome, note = ?done.note, "done"),
        Err(e) => tracing::warn!(error = %e, "failed"),
    }
    result
}

/// Retry a whole object on transient errors, and on a source changed during
/// the work when the message pinned no ETag (a fresh HEAD pins the new version).
fn should_retry(e: &Error, item: &KeyItem) -> bool {
    e.kind.is_retryable() || (e.class == SOURCE_CHANGED && item.etag.is_none())
}

/// One attempt; a source that vanished midway is `source-missing`, a failed
/// ETag precondition is `SourceChanged`. A row naming a version reads that
/// version everywhere (HEAD, part layout, GET, tags, copy source).
async fn once(ends: &Ends, item: &KeyItem, opts: &TransferOptions) -> Result<Done> {
    let as_copy;
    let item = if item.op == Op::Delete {
        match sync::delete(ends, item, opts).await? {
            sync::Deleting::Done(done) => return Ok(done),
            sync::Deleting::CheckAsCopy(copy) => {
                as_copy = *copy;
                &as_copy
            }
        }
    } else {
        item
    };
    let src = match item.version_id.as_deref() {
        Some(v) => ends.source.at_version(v)?,
        None => ends.source.clone(),
    };
    let job = Job {
        ends,
        src,
        item,
        opts,
    };
    let result = match opts.mode {
        Mode::Check => check(&job).await,
        Mode::Copy | Mode::Downup => transfer(&job).await,
    };
    match result {
        Err(e) if e.class == TARGET_EXISTS => Ok(target_exists()),
        Err(e) if e.kind == ErrorKind::PreconditionFailed => Err(source_changed(e)),
        Err(e) if e.is_gone() && e.class != crate::error::class::NO_SUCH_UPLOAD => {
            // Which end is missing? Only a missing source is a warning.
            match job.src.head(&item.key).await? {
                None => Ok(source_missing()),
                Some(_) => Err(e),
            }
        }
        other => other,
    }
}

fn source_changed(e: Error) -> Error {
    let message = format!("the source changed during the work: {}", e.message);
    Error {
        kind: ErrorKind::PreconditionFailed,
        class: SOURCE_CHANGED.to_string(),
        message,
        ..e
    }
}

fn target_exists() -> Done {
    tracing::info!("the target exists and --no-overwrite is set: left as it is");
    Done::new(Outcome::TargetExists, 0)
}

fn source_missing() -> Done {
    tracing::warn!("source object no longer exists");
    Done::new(Outcome::SourceMissing, 0)
}

/// Everything one attempt needs.
struct Job<'a> {
    ends: &'a Ends,
    /// The source store, viewed at the row's version when it names one.
    src: Arc<dyn ObjectStore>,
    item: &'a KeyItem,
    opts: &'a TransferOptions,
}

impl Job<'_> {
    fn key(&self) -> &str {
        &self.item.key
    }

    fn tkey(&self) -> &str {
        self.item.target_key()
    }

    fn src(&self) -> &dyn ObjectStore {
        self.src.as_ref()
    }

    fn dst(&self) -> &dyn ObjectStore {
        self.ends.target.as_ref()
    }

    fn src_subject(&self) -> String {
        format!("{}/{}", self.src().describe(), self.key())
    }

    fn dst_subject(&self) -> String {
        format!("{}/{}", self.dst().describe(), self.tkey())
    }

    /// Compare before writing: `--verify`, or an [`Op::Update`] item.
    fn compares_first(&self) -> bool {
        self.opts.verify || self.item.op == Op::Update
    }

    fn window_set(&self) -> bool {
        self.opts.window.is_set()
    }

    fn in_window(&self, last_modified: DateTime<Utc>) -> bool {
        self.opts.window.contains(last_modified)
    }

    /// The name the target reads the source by, when copy mode copies
    /// server-side (the executor decided the ends allow it; the stores say
    /// whether they can).
    fn server_side(&self) -> Option<&str> {
        if self.opts.mode != Mode::Copy
            || !self.ends.server_side
            || !self.dst().capabilities().server_side_copy
        {
            return None;
        }
        self.src().copy_source_name()
    }

    /// HEAD the source and apply the date window. `Err(done)`: finished early.
    async fn head_source(&self) -> Result<std::result::Result<ObjectInfo, Done>> {
        if let (Some(lm), true) = (self.item.last_modified, self.window_set()) {
            if !self.in_window(lm) {
                return Ok(Err(Done::new(Outcome::SkippedFiltered, 0)));
            }
        }
        let Some(info) = self.src().head(self.key()).await? else {
            return Ok(Err(source_missing()));
        };
        if self.item.last_modified.is_none() && self.window_set() {
            if let Some(lm) = info.last_modified {
                if !self.in_window(lm) {
                    return Ok(Err(Done::new(Outcome::SkippedFiltered, 0)));
                }
            }
        }
        Ok(Ok(info))
    }

    /// The ETag every read of the source is pinned to: the listed one (a
    /// different current ETag means the source changed since listing), else
    /// the one seen at HEAD. A directory has no ETag at HEAD: its reads are
    /// pinned to the file's fingerprint (size, mtime, inode) instead.
    fn pin(&self, info: &ObjectInfo) -> Result<Option<String>> {
        let Some(current) = info.etag.as_deref() else {
            return Ok(info
                .version_id
                .clone()
                .filter(|v| crate::store::dir::is_fingerprint(v)));
        };
        if let Some(listed) = self.item.etag.as_deref() {
            if !etag_bare(listed).eq_ignore_ascii_case(etag_bare(current)) {
                return Err(Error::new(
                    ErrorKind::PreconditionFailed,
                    SOURCE_CHANGED,
                    self.src_subject(),
                    format!(
                        "the source changed since it was listed (ETag {} is now {})",
                        etag_bare(listed),
                        etag_bare(current)
                    ),
                ));
            }
        }
        Ok(Some(format!("\"{}\"", etag_bare(current))))
    }
}

/// Part sizes of a multipart object on `store` (HEAD with partNumber): part 1
/// and the last, inferred when they add up, else every part. `Ok(None)` when
/// the object is single-part or the store cannot tell (then the layout is not
/// reproducible, which the outcome's note says).
async fn part_layout(
    store: &dyn ObjectStore,
    key: &str,
    info: &ObjectInfo,
    concurrency: usize,
) -> Result<Option<Vec<u64>>> {
    let Some(n) = info
        .parts_count
        .or_else(|| info.etag.as_deref().and_then(etag_parts))
    else {
        return Ok(None);
    };
    let propagate = |e: Error| match e.kind {
        ErrorKind::Retryable | ErrorKind::NotFound => Err(e),
        _ => {
            tracing::warn!(error = %e, "cannot learn the source's part layout");
            Ok(None)
        }
    };
    let first = match store.part_size(key, 1).await {
        Ok(s) => s,
        Err(e) => return propagate(e),
    };
    if n == 1 {
        return Ok(plan::infer_layout(info.size, 1, first, first));
    }
    if first >= info.size {
        // The store ignores partNumber (answers the whole object).
        return Ok(None);
    }
    let last = match store.part_size(key, n).await {
        Ok(s) => s,
        Err(e) => return propagate(e),
    };
    if let Some(sizes) = plan::infer_layout(info.size, n, first, last) {
        return Ok(Some(sizes));
    }
    let sizes: Result<Vec<u64>> = futures::stream::iter(1..=n)
        .map(|p| store.part_size(key, p))
        .buffered(concurrency.max(1))
        .try_collect()
        .await;
    match sizes {
        Ok(sizes) if plan::valid_layout(info.size, &sizes) => Ok(Some(sizes)),
        Ok(_) => Ok(None),
        Err(e) => propagate(e),
    }
}

/// Copy or downup one key.
async fn transfer(job: &Job<'_>) -> Result<Done> {
    if let Some(done) = fast_copy(job).await? {
        return Ok(done);
    }
    let info = match job.head_source().await? {
        Ok(info) => info,
        Err(done) => return Ok(done),
    };
    let pin = job.pin(&info)?;
    let layout = part_layout(job.src(), job.key(), &info, job.opts.part_concurrency).await?;
    if job.compares_first() {
        let checked = compare_ends(job, &info, layout.as_deref(), pin.as_deref()).await?;
        match checked.verdict {
            Verdict::Identical => {
                return Ok(Done {
                    proof: checked.proof,
                    ..Done::new(Outcome::SkippedIdentical, 0)
                })
            }
            Verdict::TagsDiffer | Verdict::Differs(_) | Verdict::Unknown(_)
                if job.item.op == Op::Update && job.item.keep_newer_target =>
            {
                return Ok(sync::target_newer(&checked.verdict));
            }
            Verdict::TagsDiffer if job.opts.no_overwrite => return Ok(target_exists()),
            Verdict::TagsDiffer => {
                let tags = checked.src_tags.unwrap_or_default();
                job.dst().put_tags(job.tkey(), &tags).await?;
                return Ok(Done {
                    proof: checked.proof,
                    ..Done::new(Outcome::TagsUpdated, 0)
                });
            }
            Verdict::Missing => tracing::debug!("target missing: copying"),
            Verdict::Differs(r) => tracing::debug!(reasons = ?r, "target differs: copying"),
            Verdict::Unknown(why) => tracing::debug!(%why, "cannot compare: copying"),
        }
    }
    if job.opts.no_overwrite && job.dst().head(job.tkey()).await?.is_some() {
        return Ok(target_exists());
    }
    let server_side = job.server_side();
    let source_layout = match (
        &layout,
        info.parts_count
            .or_else(|| info.etag.as_deref().and_then(etag_parts)),
    ) {
        (Some(sizes), _) => SourceLayout::Parts(sizes),
        (None, Some(n)) => SourceLayout::UnknownParts(n),
        (None, None) => SourceLayout::Single,
    };
    let limits = Limits {
        multipart_threshold: job.opts.multipart_threshold,
        part_size: job.opts.part_size,
        buffer_limit: match server_side {
            Some(_) => None,
            None => Some(job.opts.part_size),
        },
    };
    let planned = plan::plan(info.size, source_layout, &limits);
    let carry = Carry::plan(
        &info,
        part_ranges(&planned).map(<[_]>::len),
        planned.exact,
        job.opts.checksum,
    );
    tracing::debug!(plan = ?planned.plan, exact = planned.exact, carry = ?carry, "planned");
    let wrote = match server_side {
        Some(src_bucket) => {
            copy::run(
                job,
                src_bucket,
                &info,
                pin.as_deref(),
                &planned,
                carry.as_ref(),
            )
            .await?
        }
        None => downup::run(job, &info, pin.as_deref(), &planned, carry.as_ref()).await?,
    };
    let mut note = planned.note.clone().or(wrote.note);
    let mut proof = carry::proof(carry.as_ref(), &wrote.written, false, &job.dst_subject())?;
    if !matches!(proof, Proof::Checksum(_)) {
        let etag = &wrote.written.etag;
        let mut evidence = wrote.md5_proven;
        if let (true, Some(src_etag)) = (planned.exact, info.etag.as_deref()) {
            match etags_disagree(job, src_etag, etag).await? {
                Some(why) => note = Some(why),
                None => evidence |= etag_evidence(&info, etag),
            }
        }
        if evidence {
            proof = Proof::Etag;
        }
    }
    Ok(Done {
        note,
        ..Done::proven(Outcome::Copied, info.size, proof)
    })
}

/// A written ETag equal to the source's is evidence of equal bytes when the
/// source's ETag is an MD5 (no SSE-KMS: those are not, and two encryptions
/// never agree by chance either way).
fn etag_evidence(src: &ObjectInfo, written: &str) -> bool {
    let kms = src.sse.as_deref().is_some_and(|s| s.starts_with("aws:kms"));
    !kms && !written.is_empty()
        && src
            .etag
            .as_deref()
            .is_some_and(|e| etag_bare(e).eq_ignore_ascii_case(etag_bare(written)))
}

/// A finished write, and whether the MD5 of the bytes read was shown equal
/// to the source's ETag and accepted by the target on the way (downup).
struct Wrote {
    written: Written,
    md5_proven: bool,
    /// What the user should know about this write (see [`Done::note`]).
    note: Option<String>,
}

/// Class of the failure when a write that reproduced the source's layout
/// produced another ETag on an S3 target, and neither end encrypts with KMS.
pub const INTEGRITY_MISMATCH: &str = "IntegrityMismatch";

/// A copy planned to keep the source's ETag (`exact`) wrote `written` on the
/// target. Equal (or not comparable: no ETag, or a directory target) → `None`.
/// Different → the evidence decides, with one fresh HEAD of each end: the
/// source now has another ETag (or is gone) → `SourceChanged`; either end
/// encrypts with SSE-KMS (ETags are then not MD5s) → `Some(note)`, still
/// copied; otherwise the bytes differ → `IntegrityMismatch` (retried, then
/// parked), never a `copied` row.
async fn etags_disagree(job: &Job<'_>, src_etag: &str, written: &str) -> Result<Option<String>> {
    if written.is_empty()
        || !job.dst().capabilities().s3_etags
        || etag_bare(written).eq_ignore_ascii_case(etag_bare(src_etag))
    {
        return Ok(None);
    }
    let (src_now, dst_now) =
        futures::try_join!(job.src().head(job.key()), job.dst().head(job.tkey()))?;
    let changed = match &src_now {
        None => Some("the source no longer exists".to_string()),
        Some(i) => i
            .etag
            .as_deref()
            .filter(|now| !etag_bare(now).eq_ignore_ascii_case(etag_bare(src_etag)))
            .map(|now| format!("ETag {} is now {}", etag_bare(src_etag), etag_bare(now))),
    };
    if let Some(what) = changed {
        return Err(Error::new(
            ErrorKind::PreconditionFailed,
            SOURCE_CHANGED,
            job.src_subject(),
            format!(
                "the source changed during the copy ({what}); the target may hold the new version"
            ),
        ));
    }
    let kms = |i: &Option<ObjectInfo>| {
        i.as_ref()
            .and_then(|i| i.sse.as_deref())
            .is_some_and(|s| s.starts_with("aws:kms"))
    };
    if kms(&src_now) || kms(&dst_now) {
        return Ok(Some(format!(
            "target ETag {} differs from source ETag {}: SSE-KMS ETags are not MD5s",
            etag_bare(written),
            etag_bare(src_etag)
        )));
    }
    Err(Error::new(
        ErrorKind::Retryable,
        INTEGRITY_MISMATCH,
        job.dst_subject(),
        format!(
            "the target ETag {} is not the source ETag {} although the source's part layout was reproduced",
            etag_bare(written),
            etag_bare(src_etag)
        ),
    ))
}

/// Copy mode without a HEAD, when the message already says everything: a
/// plain (single-part) ETag, a size that needs no parts, and the last-modified
/// time if a date window is set. One CopyObject, pinned to the listed ETag.
async fn fast_copy(job: &Job<'_>) -> Result<Option<Done>> {
    let item = job.item;
    // Without a HEAD the source's checksum value is unknown: only when the
    // listing said the source has an algorithm (CopyObject keeps it), or S3's
    // own default (CRC64NVME for a source without one) is what was asked; and
    // never under --no-overwrite (its pre-check is a HEAD of the target).
    let default_checksum = job.item.checksum_algorithm.is_some()
        || matches!(job.opts.checksum, None | Some(Algorithm::Crc64Nvme));
    let (Some(src_bucket), false, true, false) = (
        job.server_side(),
        job.compares_first(),
        default_checksum,
        job.opts.no_overwrite,
    ) else {
        return Ok(None);
    };
    let (Some(size), Some(etag)) = (item.size, item.etag.as_deref()) else {
        return Ok(None);
    };
    if etag_parts(etag).is_some()
        || size >= job.opts.multipart_threshold
        || size > plan::MAX_SINGLE
        || (job.window_set() && item.last_modified.is_none())
    {
        return Ok(None);
    }
    if let Some(lm) = item.last_modified {
        if job.window_set() && !job.in_window(lm) {
            return Ok(Some(Done::new(Outcome::SkippedFiltered, 0)));
        }
    }
    let pin = format!("\"{}\"", etag_bare(etag));
    let expected = Expected {
        size,
        etag: Some(pin.clone()),
        checksum: None,
    };
    let written = settle(
        job,
        copy::single(job, src_bucket, Some(&pin), None).await,
        &expected,
    )
    .await?;
    // Stores that ignore `x-amz-copy-source-if-match` copy a changed source
    // anyway: the returned ETag is the evidence either way.
    let note = etags_disagree(job, etag, &written.etag).await?;
    let proof = if note.is_none() && etag_bare(&written.etag).eq_ignore_ascii_case(etag_bare(&pin))
    {
        Proof::Etag
    } else {
        Proof::None
    };
    Ok(Some(Done {
        note,
        ..Done::proven(Outcome::Copied, size, proof)
    }))
}

/// What a finished write must show on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    size: u64,
    /// The target ETag a correct write yields; `None` when it cannot be known
    /// in advance.
    etag: Option<String>,
    /// The checksum a correct write yields (also under SSE-KMS, where the
    /// ETag is unknown). With neither, an ambiguous write cannot be confirmed.
    checksum: Option<Checksum>,
}

/// Whether a failed final write (PutObject, CopyObject,
/// CompleteMultipartUpload) may have happened all the same: its answer was
/// lost or unreadable (transport error, timeout, unparseable 200, an error in
/// a 200), or a retry of a completion found the upload gone (`NoSuchUpload`:
/// the first try completed it).
fn ambiguous(e: &Error) -> bool {
    e.kind.is_retryable() || e.class == crate::error::class::NO_SUCH_UPLOAD
}

/// The outcome of a final write, checked rather than guessed when it is
/// ambiguous: the target is looked at, and the write counts as done only if
/// the target has the expected size and ETag. Otherwise the write's own error
/// stands.
async fn settle(job: &Job<'_>, written: Result<Written>, expected: &Expected) -> Result<Written> {
    let err = match written {
        Ok(w) => return Ok(w),
        Err(e) if ambiguous(&e) => e,
        Err(e) => return Err(e),
    };
    if expected.etag.is_none() && expected.checksum.is_none() {
        return Err(err);
    }
    match job.dst().head(job.tkey()).await {
        Ok(Some(info)) if info.size == expected.size && shows(&info, expected) => {
            tracing::warn!(error = %err, etag = ?info.etag, checksum = ?info.checksum, "the write's answer was lost or unreadable; the target shows it was done");
            Ok(Written {
                etag: info.etag.unwrap_or_default(),
                checksum: info.checksum,
            })
        }
        Ok(_) => Err(err),
        Err(head) => {
            tracing::warn!(error = %head, "could not look at the target after an ambiguous write");
            Err(err)
        }
    }
}

/// Whether a target shows the expected ETag or checksum.
fn shows(info: &ObjectInfo, expected: &Expected) -> bool {
    let etag = match (expected.etag.as_deref(), info.etag.as_deref()) {
        (Some(want), Some(got)) => etag_bare(got).eq_ignore_ascii_case(etag_bare(want)),
        _ => false,
    };
    let checksum = match (&expected.checksum, &info.checksum) {
        (Some(want), Some(got)) => want.proves_equal(got) == Some(true),
        _ => false,
    };
    etag || checksum
}

/// The ETag a multipart upload of these parts yields, when every part ETag is
/// a plain MD5 (not under SSE-KMS).
fn expected_multipart_etag(parts: &[crate::store::CompletedPart]) -> Option<String> {
    let digests: Option<Vec<[u8; 16]>> = parts
        .iter()
        .map(|p| {
            let bare = etag_bare(&p.etag);
            hex::decode(bare).ok()?.try_into().ok()
        })
        .collect();
    Some(crate::store::etag::multipart_etag(&digests?))
}

/// The result of comparing both ends.
struct Compared {
    verdict: Verdict,
    /// What showed the content equal (`Identical`, `TagsDiffer`).
    proof: Option<Proof>,
    /// Source tags (to fix a tags-only difference).
    src_tags: Option<Vec<(String, String)>>,
}

/// Compare source and target. Headers, metadata and tags are compared only
/// when both ends are S3 (a directory has none of its own: its content type
/// is guessed and its metadata is its mtime). A directory end's ETag is
/// computed from its content with the other end's part layout. When metadata
/// cannot decide and `--deep` is set, both contents are streamed and compared.
async fn compare_ends(
    job: &Job<'_>,
    src_info: &ObjectInfo,
    src_layout: Option<&[u64]>,
    pin: Option<&str>,
) -> Result<Compared> {
    let Some(mut dst_info) = job.dst().head(job.tkey()).await? else {
        return Ok(Compared {
            verdict: Verdict::Missing,
            proof: None,
            src_tags: None,
        });
    };
    let mut src_info = src_info.clone();
    let both_keep_attrs =
        job.src().capabilities().object_attrs && job.dst().capabilities().object_attrs;
    let (src_tags, dst_tags) = if both_keep_attrs {
        let (a, b) = futures::try_join!(
            job.src().get_tags(job.key()),
            job.dst().get_tags(job.tkey())
        )?;
        (a, b)
    } else {
        src_info.attrs = ObjectAttrs::default();
        dst_info.attrs = ObjectAttrs::default();
        (None, None)
    };
    if src_info.size == dst_info.size && (src_info.etag.is_none() || dst_info.etag.is_none()) {
        fill_etags(job, &mut src_info, &mut dst_info, src_layout).await?;
    }
    let (mut verdict, mut proof) = verify::compare(
        &src_info,
        src_tags.as_deref(),
        Some(&dst_info),
        dst_tags.as_deref(),
    );
    if let (Verdict::Unknown(why), true) = (&verdict, job.opts.deep) {
        tracing::debug!(%why, "comparing contents (--deep)");
        verdict = if contents_equal(job, pin).await? {
            proof = Some(Proof::Bytes);
            match (&src_tags, &dst_tags) {
                (Some(a), Some(b)) if !verify::tags_equal(a, b) => Verdict::TagsDiffer,
                _ => Verdict::Identical,
            }
        } else {
            Verdict::Differs(vec!["content differs (--deep)".to_string()])
        };
    }
    Ok(Compared {
        verdict,
        proof,
        src_tags,
    })
}

/// Give a directory end (no ETag) the ETag S3 would give its content with the
/// other end's part layout, so the two can be compared.
async fn fill_etags(
    job: &Job<'_>,
    src: &mut ObjectInfo,
    dst: &mut ObjectInfo,
    src_layout: Option<&[u64]>,
) -> Result<()> {
    let conc = job.opts.part_concurrency;
    // The layout (and whether it is the multipart form) the etag-less side is hashed with.
    let (layout, multipart): (Option<Vec<u64>>, bool) = match (&src.etag, &dst.etag) {
        (None, None) => (Some(vec![src.size]), false),
        (Some(e), None) => match etag_parts(e) {
            None => (Some(vec![src.size]), false),
            Some(_) => match src_layout {
                Some(l) => (Some(l.to_vec()), true),
                None => (part_layout(job.src(), job.key(), src, conc).await?, true),
            },
        },
        (None, Some(e)) => match etag_parts(e) {
            None => (Some(vec![dst.size]), false),
            Some(_) => (part_layout(job.dst(), job.tkey(), dst, conc).await?, true),
        },
        (Some(_), Some(_)) => return Ok(()),
    };
    let Some(layout) = layout else {
        return Ok(());
    };
    if src.etag.is_none() {
        src.etag = Some(layout_etag(job.src(), job.key(), &layout, multipart).await?);
    }
    if dst.etag.is_none() {
        dst.etag = Some(layout_etag(job.dst(), job.tkey(), &layout, multipart).await?);
    }
    Ok(())
}

/// The ETag of `key`'s content with `layout` (`multipart`: the `-N` form even for one part).
async fn layout_etag(
    store: &dyn ObjectStore,
    key: &str,
    layout: &[u64],
    multipart: bool,
) -> Result<String> {
    if multipart {
        compute_multipart_etag(store, key, layout).await
    } else {
        compute_etag(store, key, layout).await
    }
}

/// Stream both objects and compare them byte for byte (memory: one chunk of each).
async fn contents_equal(job: &Job<'_>, pin: Option<&str>) -> Result<bool> {
    let mut a = job.src().get(job.key(), None, pin).await?;
    let mut b = job.dst().get(job.tkey(), None, None).await?;
    let (mut ca, mut cb) = (Bytes::new(), Bytes::new());
    loop {
        if ca.is_empty() {
            match a.next().await {
                Some(c) => {
                    ca = c?;
                    continue;
                }
                None => {
                    // Source done: equal if the target is done too.
                    if !cb.is_empty() {
                        return Ok(false);
                    }
                    while let Some(c) = b.next().await {
                        if !c?.is_empty() {
                            return Ok(false);
                        }
                    }
                    return Ok(true);
                }
            }
        }
        if cb.is_empty() {
            match b.next().await {
                Some(c) => {
                    cb = c?;
                    continue;
                }
                None => return Ok(false),
            }
        }
        let n = ca.len().min(cb.len());
        if ca[..n] != cb[..n] {
            return Ok(false);
        }
        ca = ca.slice(n..);
        cb = cb.slice(n..);
    }
}

/// Check mode: compare, never write.
async fn check(job: &Job<'_>) -> Result<Done> {
    let info = match job.head_source().await? {
        Ok(info) => info,
        Err(done) => return Ok(done),
    };
    let pin = job.pin(&info)?;
    let compared = compare_ends(job, &info, None, pin.as_deref()).await?;
    match compared.verdict {
        Verdict::Identical => Ok(Done {
            proof: compared.proof,
            ..Done::new(Outcome::Verified, info.size)
        }),
        Verdict::Unknown(why) => Ok(Done {
            outcome: Outcome::Verified,
            bytes: info.size,
            note: Some(format!(
                "size, headers and metadata match; content not compared: {why} (use --deep)"
            )),
            proof: Some(Proof::None),
        }),
        Verdict::Missing => Err(Error::new(
            ErrorKind::Permanent,
            TARGET_MISSING,
            job.dst_subject(),
            "the target object does not exist",
        )),
        Verdict::TagsDiffer => Err(Error::new(
            ErrorKind::Permanent,
            MISMATCH,
            job.dst_subject(),
            "tags differ",
        )),
        Verdict::Differs(reasons) => Err(Error::new(
            ErrorKind::Permanent,
            MISMATCH,
            job.dst_subject(),
            reasons.join("; "),
        )),
    }
}

/// Aborts of cancelled multipart uploads (spawned by [`UploadGuard`]'s drop)
/// that may still be running: one tracker for the process, so whoever shuts
/// down can wait for them instead of letting the runtime drop them unrun.
fn abort_tasks() -> &'static tokio_util::task::TaskTracker {
    static TASKS: std::sync::OnceLock<tokio_util::task::TaskTracker> = std::sync::OnceLock::new();
    TASKS.get_or_init(tokio_util::task::TaskTracker::new)
}

/// Wait up to `limit` for the aborts of cancelled multipart uploads started so
/// far (call it after the work was cancelled, before the process exits).
/// Returns how many were still running when the limit ran out (0: all done).
pub async fn wait_for_aborts(limit: Duration) -> usize {
    let tasks = abort_tasks();
    // Polled, not `close` + `wait`: the tracker is shared by the whole process
    // and must stay open for uploads cancelled later (or by other callers).
    let _ = tokio::time::timeout(limit, async {
        while !tasks.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    tasks.len()
}

/// Aborts a multipart upload if dropped before [`UploadGuard::disarm`]: on
/// errors (awaited by [`UploadGuard::abort`]) and on cancellation (spawned on
/// the process-wide tracker that [`wait_for_aborts`] waits for), so no
/// orphaned parts are billed.
struct UploadGuard {
    store: Arc<dyn ObjectStore>,
    key: String,
    upload_id: Option<String>,
}

impl UploadGuard {
    fn new(store: Arc<dyn ObjectStore>, key: &str, upload_id: &str) -> Self {
        UploadGuard {
            store,
            key: key.to_string(),
            upload_id: Some(upload_id.to_string()),
        }
    }

    /// The upload completed: nothing to abort.
    fn disarm(mut self) {
        self.upload_id = None;
    }

    /// Abort now (after a failure); an abort failure is logged, the original error wins.
    async fn abort(mut self) {
        if let Some(id) = self.upload_id.take() {
            if let Err(e) = self.store.abort_multipart(&self.key, &id).await {
                tracing::error!(error = %e, upload_id = %id, "could not abort the multipart upload");
            }
        }
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        let Some(id) = self.upload_id.take() else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::error!(upload_id = %id, key = %self.key, "multipart upload left open (no runtime to abort it)");
            return;
        };
        let store = self.store.clone();
        let key = std::mem::take(&mut self.key);
        abort_tasks().spawn_on(async move {
            if let Err(e) = store.abort_multipart(&key, &id).await {
                tracing::error!(error = %e, upload_id = %id, "could not abort a cancelled multipart upload");
            }
        }, &handle);
    }
}

#[cfg(test)]
mod upload_guard_tests {
    use super::*;
    use crate::store::dir::DirStore;
    use crate::store::PutOptions;

    fn part_files(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("s3mig-part"))
            .collect()
    }

    /// A cancelled upload's abort is spawned by the drop; `wait_for_aborts`
    /// lets it finish even when the runtime is dropped right after (as at
    /// process exit), so no parts are left behind.
    #[test]
    fn the_abort_of_a_dropped_upload_is_awaited_before_exit() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(DirStore::new(dir.path()).unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let id = store
                .create_multipart("big", &PutOptions::default())
                .await
                .unwrap();
            store
                .upload_part("big", &id, 1, Bytes::from_static(b"part one"), None, None)
                .await
                .unwrap();
            assert!(!part_files(dir.path()).is_empty(), "a part was written");
            drop(UploadGuard::new(store.clone(), "big", &id));
            assert_eq!(wait_for_aborts(Duration::from_secs(60)).await, 0);
        });
        drop(rt);
        assert_eq!(part_files(dir.path()), Vec::<String>::new());
    }
}

/// Run a multipart upload's parts and completion (an ambiguous completion is
/// [`settle`]d against the ETag the parts make); abort on failure.
async fn run_upload<F, Fut>(
    job: &Job<'_>,
    size: u64,
    guard: UploadGuard,
    ranges: &[(u64, u64)],
    in_flight: usize,
    carry: Option<&Carry>,
    part: F,
) -> Result<Written>
where
    F: Fn(i32) -> Fut,
    Fut: std::future::Future<Output = Result<crate::store::CompletedPart>>,
{
    let result = async {
        let mut parts: Vec<_> = futures::stream::iter(1..=ranges.len() as i32)
            .map(&part)
            .buffer_unordered(in_flight.max(1))
            .try_collect()
            .await?;
        parts.sort_by_key(|p: &crate::store::CompletedPart| p.number);
        // Part checksums go back on completion only for the upload's own
        // algorithm (a store may answer its default for an upload without one).
        for p in &mut parts {
            if p.checksum.as_ref().map(|c| c.algorithm) != carry.map(|c| c.algorithm) {
                p.checksum = None;
            }
        }
        // The parts' checksums add up to the object's: it must be the
        // source's before the object exists (else nothing is completed).
        let sum = carry.and_then(|c| c.of_parts(&parts, ranges));
        if let (Some(c), Some(sum)) = (carry, &sum) {
            c.check_parts(sum, &job.dst_subject())?;
        }
        let id = guard.upload_id.as_deref().unwrap_or_default();
        let expected = Expected {
            size,
            etag: expected_multipart_etag(&parts),
            checksum: sum.clone(),
        };
        let finish = Finish {
            checksum: sum.filter(|c| c.kind == crate::checksum::ChecksumType::FullObject),
            if_none_match: job.opts.no_overwrite,
        };
        let completed = guard
            .store
            .complete_multipart(&guard.key, id, &parts, &finish)
            .await;
        settle(job, completed, &expected).await
    }
    .await;
    match result {
        Ok(written) => {
            guard.disarm();
            Ok(written)
        }
        Err(e) => {
            guard.abort().await;
            Err(e)
        }
    }
}

/// Planned as parts: their ranges, for the runners.
fn part_ranges(planned: &Planned) -> Option<&[(u64, u64)]> {
    match &planned.plan {
        Plan::Single | Plan::Stream => None,
        Plan::Parts(r) => Some(r),
    }
}

#[cfg(test)]
mod tests {
    //! process_key between two real directory stores (no server needed), and
    //! its retry policy through a fault-injecting wrapper around one.

    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::store::dir::DirStore;
    use crate::store::{ByteStream, CompletedPart, ListPage, ListRequest, PutOptions};

    /// A directory store whose next GETs fail with queued errors.
    #[derive(Debug)]
    struct Flaky {
        inner: DirStore,
        failures: Mutex<Vec<(ErrorKind, &'static str)>>,
        gets: AtomicU32,
    }

    #[async_trait]
    impl ObjectStore for Flaky {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        async fn confirm_exists(&self) -> Result<()> {
            self.inner.confirm_exists().await
        }
        async fn list_page(&self, req: &ListRequest) -> Result<ListPage> {
            self.inner.list_page(req).await
        }
        async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
            self.inner.head(key).await
        }
        async fn part_size(&self, key: &str, part: u32) -> Result<u64> {
            self.inner.part_size(key, part).await
        }
        async fn get(
            &self,
            key: &str,
            range: Option<(u64, u64)>,
            if_match: Option<&str>,
        ) -> Result<ByteStream> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            let failure = self.failures.lock().unwrap().pop();
            if let Some((kind, class)) = failure {
                return Err(Error::new(kind, class, key, "injected"));
            }
            self.inner.get(key, range, if_match).await
        }
        async fn put(&self, key: &str, body: Bytes, opts: &PutOptions) -> Result<Written> {
            self.inner.put(key, body, opts).await
        }
        async fn put_stream(
            &self,
            key: &str,
            body: ByteStream,
            len: u64,
            opts: &PutOptions,
        ) -> Result<Written> {
            self.inner.put_stream(key, body, len, opts).await
        }
        async fn create_multipart(&self, key: &str, opts: &PutOptions) -> Result<String> {
            self.inner.create_multipart(key, opts).await
        }
        async fn upload_part(
            &self,
            key: &str,
            id: &str,
            n: i32,
            body: Bytes,
            md5: Option<&[u8; 16]>,
            checksum: Option<&Checksum>,
        ) -> Result<CompletedPart> {
            self.inner
                .upload_part(key, id, n, body, md5, checksum)
                .await
        }
        fn capabilities(&self) -> crate::store::Capabilities {
            self.inner.capabilities()
        }
        async fn complete_multipart(
            &self,
            key: &str,
            id: &str,
            parts: &[CompletedPart],
            finish: &Finish,
        ) -> Result<Written> {
            self.inner.complete_multipart(key, id, parts, finish).await
        }
        async fn abort_multipart(&self, key: &str, id: &str) -> Result<()> {
            self.inner.abort_multipart(key, id).await
        }
        async fn get_tags(&self, key: &str) -> Result<Option<Vec<(String, String)>>> {
            self.inner.get_tags(key).await
        }
        async fn put_tags(&self, key: &str, tags: &[(String, String)]) -> Result<()> {
            self.inner.put_tags(key, tags).await
        }
    }

    fn item(key: &str) -> KeyItem {
        KeyItem {
            key: key.to_string(),
            ..KeyItem::default()
        }
    }

    fn opts(mode: Mode) -> TransferOptions {
        TransferOptions {
            mode,
            multipart_threshold: 8,
            part_size: 4,
            part_concurrency: 2,
            ..TransferOptions::default()
        }
    }

    struct Dirs {
        src: tempfile::TempDir,
        dst: tempfile::TempDir,
        ends: Ends,
    }

    fn dirs(files: &[(&str, &[u8])]) -> Dirs {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for (k, v) in files {
            let p = src.path().join(k);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, v).unwrap();
        }
        let ends = Ends {
            source: Arc::new(DirStore::open_existing(src.path()).unwrap()),
            target: Arc::new(DirStore::create(dst.path()).unwrap()),
            // Copy mode asked for server-side, but directories cannot: it streams.
            server_side: true,
        };
        Dirs { src, dst, ends }
    }

    async fn ok(ends: &Ends, item: &KeyItem, opts: &TransferOptions) -> Done {
        process_key(ends, item, opts).await.unwrap()
    }

    #[tokio::test]
    async fn directory_to_directory_in_every_mode() {
        let files: [(&str, &[u8]); 3] = [
            ("a/eleven.bin", b"hello world"),
            ("empty", b""),
            ("small.txt", b"abc"),
        ];
        let d = dirs(&files);
        for (key, content) in files {
            for mode in [Mode::Copy, Mode::Downup] {
                let done = ok(&d.ends, &item(key), &opts(mode)).await;
                assert_eq!(done.outcome, Outcome::Copied, "{mode} {key}");
                assert_eq!(done.bytes, content.len() as u64);
                assert_eq!(std::fs::read(d.dst.path().join(key)).unwrap(), content);
            }
            let done = ok(&d.ends, &item(key), &opts(Mode::Check)).await;
            assert_eq!(done.outcome, Outcome::Verified, "{key}");
            let mut verify = opts(Mode::Downup);
            verify.verify = true;
            let done = ok(&d.ends, &item(key), &verify).await;
            assert_eq!(done.outcome, Outcome::SkippedIdentical, "{key}");
        }
        // Eleven bytes above an 8-byte threshold: three parts of 4, 4, 3 bytes.
        let done = ok(&d.ends, &item("a/eleven.bin"), &opts(Mode::Downup)).await;
        assert!(done.note.unwrap().contains("-3"));

        std::fs::write(d.dst.path().join("small.txt"), b"abd").unwrap();
        let err = process_key(&d.ends, &item("small.txt"), &opts(Mode::Check))
            .await
            .unwrap_err();
        assert_eq!(err.class, MISMATCH);
        assert!(err.message.starts_with("etag "), "{}", err.message);
        let mut verify = opts(Mode::Copy);
        verify.verify = true;
        assert_eq!(
            ok(&d.ends, &item("small.txt"), &verify).await.outcome,
            Outcome::Copied
        );
        assert_eq!(
            std::fs::read(d.dst.path().join("small.txt")).unwrap(),
            b"abc"
        );

        std::fs::remove_file(d.dst.path().join("empty")).unwrap();
        let err = process_key(&d.ends, &item("empty"), &opts(Mode::Check))
            .await
            .unwrap_err();
        assert_eq!(err.class, TARGET_MISSING);

        for mode in [Mode::Copy, Mode::Downup, Mode::Check] {
            let done = ok(&d.ends, &item("nope"), &opts(mode)).await;
            assert_eq!(done.outcome, Outcome::SourceMissing, "{mode}");
        }
        let mut window = opts(Mode::Downup);
        window.window.since = Some(Utc::now() + chrono::Duration::hours(1));
        let done = ok(&d.ends, &item("small.txt"), &window).await;
        assert_eq!(done.outcome, Outcome::SkippedFiltered);
        drop(d.src);
    }

    #[tokio::test]
    async fn deep_compare_finds_same_size_changes() {
        let d = dirs(&[("k", b"0123456789")]);
        ok(&d.ends, &item("k"), &opts(Mode::Downup)).await;
        let mut deep = opts(Mode::Check);
        deep.deep = true;
        assert_eq!(
            ok(&d.ends, &item("k"), &deep).await.outcome,
            Outcome::Verified
        );
        assert!(contents_equal(
            &Job {
                ends: &d.ends,
                src: d.ends.source.clone(),
                item: &item("k"),
                opts: &deep
            },
            None
        )
        .await
        .unwrap());
        std::fs::write(d.dst.path().join("k"), b"0123456780").unwrap();
        let job = Job {
            ends: &d.ends,
            src: d.ends.source.clone(),
            item: &item("k"),
            opts: &deep,
        };
        assert!(!contents_equal(&job, None).await.unwrap());
        std::fs::write(d.dst.path().join("k"), b"01234567890").unwrap();
        assert!(!contents_equal(&job, None).await.unwrap(), "longer target");
        std::fs::write(d.dst.path().join("k"), b"012345678").unwrap();
        assert!(!contents_equal(&job, None).await.unwrap(), "shorter target");
    }

    fn flaky(d: &Dirs, failures: Vec<(ErrorKind, &'static str)>) -> (Ends, Arc<Flaky>) {
        let src = Arc::new(Flaky {
            inner: DirStore::open_existing(d.src.path()).unwrap(),
            failures: Mutex::new(failures),
            gets: AtomicU32::new(0),
        });
        let ends = Ends {
            source: src.clone(),
            target: d.ends.target.clone(),
            server_side: false,
        };
        (ends, src)
    }

    #[tokio::test]
    async fn retryable_failures_are_retried_and_permanent_ones_are_not() {
        let d = dirs(&[("k", b"abc")]);
        let o = opts(Mode::Downup);

        let (ends, src) = flaky(&d, vec![(ErrorKind::Retryable, "SlowDown")]);
        assert_eq!(ok(&ends, &item("k"), &o).await.outcome, Outcome::Copied);
        assert_eq!(src.gets.load(Ordering::SeqCst), 2);

        let (ends, src) = flaky(&d, vec![(ErrorKind::AccessDenied, "AccessDenied")]);
        let err = process_key(&ends, &item("k"), &o).await.unwrap_err();
        assert_eq!(err.class, "AccessDenied");
        assert_eq!(src.gets.load(Ordering::SeqCst), 1);

        let once = TransferOptions {
            retry: Policy {
                max_attempts: 1,
                ..Policy::object()
            },
            ..o.clone()
        };
        let (ends, _) = flaky(&d, vec![(ErrorKind::Retryable, "SlowDown")]);
        let err = process_key(&ends, &item("k"), &once).await.unwrap_err();
        assert!(err.kind.is_retryable());
    }

    #[tokio::test]
    async fn a_source_changed_midway_is_replanned_unless_the_listing_pinned_it() {
        let d = dirs(&[("k", b"abc")]);
        let o = opts(Mode::Downup);
        let changed = (ErrorKind::PreconditionFailed, "PreconditionFailed");

        let (ends, src) = flaky(&d, vec![changed]);
        assert_eq!(ok(&ends, &item("k"), &o).await.outcome, Outcome::Copied);
        assert_eq!(src.gets.load(Ordering::SeqCst), 2);

        let pinned = KeyItem {
            etag: Some("\"0123\"".into()),
            ..item("k")
        };
        let (ends, src) = flaky(&d, vec![changed]);
        let err = process_key(&ends, &pinned, &o).await.unwrap_err();
        assert_eq!(err.class, SOURCE_CHANGED);
        assert_eq!(err.kind, ErrorKind::PreconditionFailed);
        assert_eq!(src.gets.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn mode_names() {
        use clap::ValueEnum;
        for m in Mode::value_variants() {
            assert_eq!(Mode::from_str(m.as_str(), false).unwrap(), *m);
            assert_eq!(m.to_string(), m.as_str());
        }
    }
}
