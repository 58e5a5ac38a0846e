//! Server-side copy (copy mode, both ends S3 on one endpoint): CopyObject with
//! the metadata and tags copied by S3 (COPY directives), or a multipart copy
//! whose UploadPartCopy parts reproduce the planned layout, with headers,
//! metadata and tags set explicitly on CreateMultipartUpload (which does not
//! copy them). The checksum: S3 keeps the source's algorithm on CopyObject
//! (asked for one only when the source has none); a multipart copy's upload
//! is created with the carried algorithm and type, S3 computes each copied
//! part's checksum, and their sum must be the source's before completing.

use crate::checksum::Algorithm;
use crate::error::{Error, ErrorKind, Result};
use crate::store::{CopySource, CopyWrite, ObjectInfo, PutOptions, Written, TARGET_EXISTS};
use crate::verify::etag_bare;

use super::carry::Carry;
use super::plan::Planned;
use super::{part_ranges, run_upload, settle, Expected, Job, UploadGuard, Wrote};

/// One CopyObject: metadata, tags and checksum algorithm copied
/// server-side, storage class and ACL as configured, the source pinned to
/// `pin`; `checksum`: the algorithm for a source without one.
pub(super) async fn single(
    job: &Job<'_>,
    src_bucket: &str,
    pin: Option<&str>,
    checksum: Option<Algorithm>,
) -> Result<Written> {
    let write = CopyWrite {
        storage_class: job.opts.storage_class.as_deref(),
        acl: job.opts.acl.as_deref(),
        checksum,
        if_none_match: job.opts.no_overwrite,
    };
    job.dst()
        .copy_object(&copy_source(job, src_bucket, pin), job.tkey(), None, &write)
        .await
}

/// Copy as planned.
pub(super) async fn run(
    job: &Job<'_>,
    src_bucket: &str,
    info: &ObjectInfo,
    pin: Option<&str>,
    planned: &Planned,
    carry: Option<&Carry>,
) -> Result<Wrote> {
    let Some(ranges) = part_ranges(planned) else {
        let expected = Expected {
            size: info.size,
            etag: pin
                .filter(|_| {
                    !info
                        .sse
                        .as_deref()
                        .is_some_and(|s| s.starts_with("aws:kms"))
                })
                .map(str::to_string),
            checksum: carry.and_then(|c| c.expect.clone()),
        };
        let asked = carry
            .filter(|_| info.checksum.is_none())
            .map(|c| c.algorithm);
        let copied = match single(job, src_bucket, pin, asked).await {
            Err(e) if e.kind == ErrorKind::PreconditionFailed && job.opts.no_overwrite => {
                Err(which_condition(job, pin, e).await?)
            }
            other => other,
        };
        let written = settle(job, copied, &expected).await?;
        return Ok(Wrote {
            written,
            md5_proven: false,
            note: None,
        });
    };
    let tags = job.src().get_tags(job.key()).await?;
    let opts = PutOptions {
        attrs: info.attrs.clone(),
        tags,
        storage_class: job.opts.storage_class.clone(),
        acl: job.opts.acl.clone(),
        content_md5: None,
        checksum: carry.map(Carry::compute),
        if_none_match: job.opts.no_overwrite,
    };
    let upload_id = job.dst().create_multipart(job.tkey(), &opts).await?;
    tracing::debug!(%upload_id, parts = ranges.len(), "multipart copy started");
    let guard = UploadGuard::new(job.ends.target.clone(), job.tkey(), &upload_id);
    let source = copy_source(job, src_bucket, pin);
    let (source, upload_id) = (&source, &upload_id);
    let written = run_upload(
        job,
        info.size,
        guard,
        ranges,
        job.opts.part_concurrency,
        carry,
        |n| async move {
            let range = ranges[(n - 1) as usize];
            job.dst()
                .upload_part_copy(source, job.tkey(), upload_id, n, range)
                .await
        },
    )
    .await?;
    Ok(Wrote {
        written,
        md5_proven: false,
        note: None,
    })
}

/// A CopyObject under `--no-overwrite` carries two conditions (source
/// `if-match`, target `If-None-Match: *`) and a 412 does not say which
/// failed. The source decides: still at the pinned ETag → the target's
/// condition failed (class `TargetExists`); changed or gone → the source's.
async fn which_condition(job: &Job<'_>, pin: Option<&str>, e: Error) -> Result<Error> {
    let now = job.src().head(job.key()).await?;
    let unchanged = match (pin, now.as_ref().and_then(|i| i.etag.as_deref())) {
        (Some(pin), Some(etag)) => etag_bare(pin).eq_ignore_ascii_case(etag_bare(etag)),
        _ => false,
    };
    Ok(if unchanged {
        Error {
            class: TARGET_EXISTS.to_string(),
            message: format!(
                "an object already exists under the key and --no-overwrite is set ({})",
                e.message
            ),
            subject: job.dst_subject(),
            ..e
        }
    } else {
        e
    })
}

/// The job's source key (at the row's version), read from `src_bucket`, pinned to `pin`.
fn copy_source<'a>(job: &'a Job<'_>, src_bucket: &'a str, pin: Option<&'a str>) -> CopySource<'a> {
    CopySource {
        bucket: src_bucket,
        key: job.key(),
        version_id: job.item.version_id.as_deref(),
        if_match: pin,
    }
}
