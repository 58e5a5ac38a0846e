//! Streaming transfer (downup mode, and copy mode when the ends cannot copy
//! server-side): GET from the source, PUT or multipart upload on the target.
//! Memory: at most `part_concurrency` parts of `part_size` per object (an
//! object written in one request is buffered only when it fits that budget);
//! no temp files, no size limit. Every read is pinned to the source ETag and
//! every part's MD5 is checked by the target.

use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use md5::{Digest, Md5};

use crate::error::{Error, ErrorKind, Result};
use crate::store::dir::{format_mtime, MTIME_META};
use crate::store::s3::map_sdk_error;
use crate::store::{CompletedPart, ObjectInfo, PutOptions};
use crate::verify::{etag_bare, etag_parts};

use super::plan::{self, Planned};
use super::{part_ranges, run_upload, Job, UploadGuard, BAD_DIGEST};

/// Transfer as planned; returns the target ETag.
pub(super) async fn run(
    job: &Job<'_>,
    info: &ObjectInfo,
    pin: Option<&str>,
    planned: &Planned,
) -> Result<String> {
    let tags = job.src().get_tags(job.key()).await?;
    let mut attrs = info.attrs.clone();
    if job.dst().as_s3().is_none() && !attrs.metadata.contains_key(MTIME_META) {
        // A directory target keeps the object's last-modified time as the file's mtime.
        if let Some(lm) = info.last_modified {
            attrs
                .metadata
                .insert(MTIME_META.to_string(), format_mtime(lm.into()));
        }
    }
    let opts = PutOptions {
        attrs,
        tags,
        storage_class: job.opts.storage_class.clone(),
        acl: job.opts.acl.clone(),
    };
    let Some(ranges) = part_ranges(planned) else {
        let (body, md5) = read(job, None, info.size, pin).await?;
        check_read(job, info, &md5)?;
        let etag = job.dst().put(job.tkey(), body, &opts).await?;
        check_written(job, &etag, &md5).await?;
        return Ok(etag);
    };
    let largest = ranges.iter().map(|(a, b)| b - a + 1).max().unwrap_or(1);
    let in_flight = plan::parts_in_flight(job.opts.part_concurrency, job.opts.part_size, largest);
    let upload_id = job.dst().create_multipart(job.tkey(), &opts).await?;
    tracing::debug!(%upload_id, parts = ranges.len(), in_flight, "multipart upload started");
    let guard = UploadGuard::new(job.ends.target.clone(), job.tkey(), &upload_id);
    let upload_id = &upload_id;
    run_upload(guard, ranges.len(), in_flight, |n| async move {
        let (a, b) = ranges[(n - 1) as usize];
        let (body, md5) = read(job, Some((a, b)), b - a + 1, pin).await?;
        let etag = upload_part(job, upload_id, n, body, &md5).await?;
        Ok(CompletedPart { number: n, etag })
    })
    .await
}

/// Read a range (or the whole object) into memory, hashing as it arrives; a
/// length other than `expected` is a retryable error (the source changed).
async fn read(
    job: &Job<'_>,
    range: Option<(u64, u64)>,
    expected: u64,
    pin: Option<&str>,
) -> Result<(Bytes, [u8; 16])> {
    let mut stream = job.src().get(job.key(), range, pin).await?;
    let mut buf = BytesMut::with_capacity(expected as usize);
    let mut hash = Md5::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if (buf.len() + chunk.len()) as u64 > expected {
            return Err(size_mismatch(job, range, expected, "more"));
        }
        hash.update(&chunk);
        buf.extend_from_slice(&chunk);
    }
    if buf.len() as u64 != expected {
        return Err(size_mismatch(job, range, expected, "fewer"));
    }
    Ok((buf.freeze(), hash.finalize().into()))
}

fn size_mismatch(job: &Job<'_>, range: Option<(u64, u64)>, expected: u64, what: &str) -> Error {
    let part = match range {
        Some((a, b)) => format!("bytes {a}-{b}"),
        None => "the object".to_string(),
    };
    Error::new(
        ErrorKind::Retryable,
        "SizeMismatch",
        job.src_subject(),
        format!("reading {part} returned {what} than the expected {expected} bytes"),
    )
}

/// Whether an ETag is an MD5 of the content: plain hex (no `-N`) and no SSE-KMS.
fn plain_md5(etag: &str, sse: Option<&str>) -> bool {
    let bare = etag_bare(etag);
    etag_parts(bare).is_none()
        && bare.len() == 32
        && bare.bytes().all(|c| c.is_ascii_hexdigit())
        && !sse.is_some_and(|s| s.starts_with("aws:kms"))
}

/// The bytes read must be the source's (when its ETag is their MD5).
fn check_read(job: &Job<'_>, info: &ObjectInfo, md5: &[u8; 16]) -> Result<()> {
    let Some(etag) = info.etag.as_deref() else {
        return Ok(());
    };
    if plain_md5(etag, info.sse.as_deref())
        && !etag_bare(etag).eq_ignore_ascii_case(&hex::encode(md5))
    {
        return Err(Error::new(
            ErrorKind::Retryable,
            BAD_DIGEST,
            job.src_subject(),
            format!(
                "the bytes read have MD5 {}, not the source ETag {}",
                hex::encode(md5),
                etag_bare(etag)
            ),
        ));
    }
    Ok(())
}

/// The object written must have the MD5 of the bytes sent, unless the target
/// encrypts with KMS (then its ETag is not an MD5).
async fn check_written(job: &Job<'_>, etag: &str, md5: &[u8; 16]) -> Result<()> {
    if !plain_md5(etag, None) || etag_bare(etag).eq_ignore_ascii_case(&hex::encode(md5)) {
        return Ok(());
    }
    let sse = job.dst().head(job.tkey()).await?.and_then(|i| i.sse);
    if sse.as_deref().is_some_and(|s| s.starts_with("aws:kms")) {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Retryable,
        BAD_DIGEST,
        job.dst_subject(),
        format!(
            "the target ETag {} is not the MD5 {} of the bytes sent",
            etag_bare(etag),
            hex::encode(md5)
        ),
    ))
}

/// Upload one part so that the target checks its MD5: Content-MD5 on S3 (S3
/// refuses a corrupted body with BadDigest), the returned part ETag elsewhere.
async fn upload_part(
    job: &Job<'_>,
    upload_id: &str,
    number: i32,
    body: Bytes,
    md5: &[u8; 16],
) -> Result<String> {
    let subject = job.dst_subject();
    let Some(s3) = job.dst().as_s3() else {
        let etag = job
            .dst()
            .upload_part(job.tkey(), upload_id, number, body)
            .await?;
        if !etag_bare(&etag).eq_ignore_ascii_case(&hex::encode(md5)) {
            return Err(Error::new(
                ErrorKind::Retryable,
                BAD_DIGEST,
                subject,
                format!("part {number} was stored with ETag {etag}, not the MD5 of the bytes sent"),
            ));
        }
        return Ok(etag);
    };
    let out = s3
        .client()
        .upload_part()
        .bucket(s3.bucket())
        .key(job.tkey())
        .upload_id(upload_id)
        .part_number(number)
        .content_md5(base64::engine::general_purpose::STANDARD.encode(md5))
        .body(SdkByteStream::from(body))
        .send()
        .await
        .map_err(|e| {
            let mut err = map_sdk_error(e, &subject);
            if matches!(err.class.as_str(), "BadDigest" | "InvalidDigest") {
                err.kind = ErrorKind::Retryable;
            }
            err
        })?;
    out.e_tag().map(str::to_string).ok_or_else(|| {
        Error::new(
            ErrorKind::Retryable,
            "PartWithoutETag",
            subject,
            format!("UploadPart of part {number} answered without an ETag"),
        )
    })
}
