//! Server-side copy (copy mode, both ends S3 on one endpoint): CopyObject with
//! the metadata and tags copied by S3 (COPY directives), or a multipart copy
//! whose UploadPartCopy parts reproduce the planned layout, with headers,
//! metadata and tags set explicitly on CreateMultipartUpload (which does not
//! copy them).

use crate::error::Result;
use crate::store::{CompletedPart, CopySource, ObjectInfo, PutOptions};

use super::plan::Planned;
use super::{part_ranges, run_upload, settle, Expected, Job, UploadGuard};

/// One CopyObject: metadata and tags copied server-side, storage class and ACL
/// as configured, the source pinned to `pin`. Returns the target ETag.
pub(super) async fn single(job: &Job<'_>, src_bucket: &str, pin: Option<&str>) -> Result<String> {
    job.dst()
        .copy_object(
            &copy_source(job, src_bucket, pin),
            job.tkey(),
            None,
            job.opts.storage_class.as_deref(),
            job.opts.acl.as_deref(),
        )
        .await
}

/// Copy as planned; returns the target ETag.
pub(super) async fn run(
    job: &Job<'_>,
    src_bucket: &str,
    info: &ObjectInfo,
    pin: Option<&str>,
    planned: &Planned,
) -> Result<String> {
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
        };
        return settle(job, single(job, src_bucket, pin).await, &expected).await;
    };
    let tags = job.src().get_tags(job.key()).await?;
    let opts = PutOptions {
        attrs: info.attrs.clone(),
        tags,
        storage_class: job.opts.storage_class.clone(),
        acl: job.opts.acl.clone(),
        content_md5: None,
    };
    let upload_id = job.dst().create_multipart(job.tkey(), &opts).await?;
    tracing::debug!(%upload_id, parts = ranges.len(), "multipart copy started");
    let guard = UploadGuard::new(job.ends.target.clone(), job.tkey(), &upload_id);
    let source = copy_source(job, src_bucket, pin);
    let (source, upload_id) = (&source, &upload_id);
    run_upload(
        job,
        info.size,
        guard,
        ranges.len(),
        job.opts.part_concurrency,
        |n| async move {
            let range = ranges[(n - 1) as usize];
            let etag = job
                .dst()
                .upload_part_copy(source, job.tkey(), upload_id, n, range)
                .await?;
            Ok(CompletedPart { number: n, etag })
        },
    )
    .await
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
