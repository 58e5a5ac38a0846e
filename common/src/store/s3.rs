//! The S3 backend of [`ObjectStore`]: the only module that sees the SDK's error
//! types. Every SDK error is turned into a [`common::Error`](crate::Error) by
//! [`map_sdk_error`], which decides once whether it is retryable, a missing
//! object, a changed source, a permission problem, an archived object or permanent.
//!
//! Each store learns its bucket's home once ([`home`](self::home)): whether the
//! bucket exists and which region answers for it, so every request goes to the
//! bucket's own region (the SDK does not follow S3's 301 redirects) and a
//! missing bucket is never mistaken for a missing key.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::task::{ready, Context, Poll};

use async_trait::async_trait;
use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::operation::put_object::{PutObjectError, PutObjectOutput};
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm as SdkAlgorithm, ChecksumMode, ChecksumType as SdkChecksumType,
    CompletedMultipartUpload, CompletedPart as SdkCompletedPart, EncodingType, MetadataDirective,
    ObjectCannedAcl, StorageClass, Tag, Tagging, TaggingDirective,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::date_time::Format;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body::{Frame, SizeHint};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::{
    length_mismatch, ByteStream, Capabilities, CompletedPart, CopySource, CopyWrite, DeleteIf,
    Deletion, Finish, ListPage, ListRequest, Listed, ObjectAttrs, ObjectInfo, ObjectStore,
    PutOptions, Upload, WriteChecksum, Written, TARGET_EXISTS,
};
use crate::checksum::{Algorithm, Checksum, ChecksumType};
use crate::error::{Error, ErrorKind, Result};

pub mod home;

/// Bytes left as they are in a `x-amz-copy-source` header: RFC 3986 unreserved and `/`.
const COPY_SOURCE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Bytes left as they are in the `x-amz-tagging` header: RFC 3986 unreserved only.
const TAGGING_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// One bucket on any S3-compatible endpoint, reached through a configured SDK
/// client (re-targeted to the bucket's region when it lives elsewhere).
/// `version`: a read-only view of one version of every key (see
/// [`ObjectStore::at_version`]).
#[derive(Debug, Clone)]
pub struct S3Store {
    home: Arc<home::BucketHome>,
    bucket: String,
    version: Option<String>,
    /// The endpoint answered a DeleteObject with `If-Match` 501 (LocalStack):
    /// later deletes compare by HEAD without asking again.
    no_conditional_delete: Arc<AtomicBool>,
}

/// The `x-amz-copy-source` header value: `bucket/urlencoded-key[?versionId=..]`.
/// Every byte of the key except unreserved characters and `/` is percent-encoded,
/// so keys with spaces, `+`, `%`, `?`, `#` or unicode reach S3 unchanged.
pub fn copy_source_header(src: &CopySource<'_>) -> String {
    let mut out = format!(
        "{}/{}",
        src.bucket,
        utf8_percent_encode(src.key, COPY_SOURCE_SET)
    );
    if let Some(v) = src.version_id {
        out.push_str("?versionId=");
        out.push_str(&utf8_percent_encode(v, TAGGING_SET).to_string());
    }
    out
}

/// Apply `PutOptions` (content headers, metadata, tags, storage class, ACL) to a
/// PutObject or CreateMultipartUpload builder: one list, so both write paths
/// carry exactly the same attributes (the SDK builders share no trait).
macro_rules! with_put_options {
    ($builder:expr, $opts:expr) => {{
        let opts: &PutOptions = $opts;
        let a = &opts.attrs;
        $builder
            .set_content_type(a.content_type.clone())
            .set_content_encoding(a.content_encoding.clone())
            .set_content_disposition(a.content_disposition.clone())
            .set_content_language(a.content_language.clone())
            .set_cache_control(a.cache_control.clone())
            .set_website_redirect_location(a.website_redirect.clone())
            .set_expires(a.expires.as_deref().and_then(parse_http_date))
            .set_metadata(metadata_map(&a.metadata))
            .set_tagging(opts.tags.as_deref().map(tagging_header))
            .set_storage_class(opts.storage_class.as_deref().map(StorageClass::from))
            .set_acl(opts.acl.as_deref().map(ObjectCannedAcl::from))
    }};
}

/// The five `checksum_*` values of an SDK output or result, by algorithm.
macro_rules! checksum_values {
    ($out:expr) => {
        [
            (Algorithm::Crc64Nvme, $out.checksum_crc64_nvme()),
            (Algorithm::Crc32, $out.checksum_crc32()),
            (Algorithm::Crc32c, $out.checksum_crc32_c()),
            (Algorithm::Sha1, $out.checksum_sha1()),
            (Algorithm::Sha256, $out.checksum_sha256()),
        ]
    };
}

/// Set one checksum value (base64) of `algorithm` on a request or part builder.
macro_rules! with_checksum_value {
    ($builder:expr, $algorithm:expr, $value:expr) => {{
        let b = $builder;
        let v: String = $value;
        match $algorithm {
            Algorithm::Crc64Nvme => b.checksum_crc64_nvme(v),
            Algorithm::Crc32 => b.checksum_crc32(v),
            Algorithm::Crc32c => b.checksum_crc32_c(v),
            Algorithm::Sha1 => b.checksum_sha1(v),
            Algorithm::Sha256 => b.checksum_sha256(v),
        }
    }};
}

/// The object's checksum from the values an answer carries and its
/// `x-amz-checksum-type`. Without a type (older S3 clones) a `-N` value is
/// composite and a plain one full-object.
fn checksum_of(
    kind: Option<&SdkChecksumType>,
    values: [(Algorithm, Option<&str>); 5],
) -> Option<Checksum> {
    let (algorithm, value) = values
        .into_iter()
        .find_map(|(a, v)| v.filter(|v| !v.is_empty()).map(|v| (a, v)))?;
    let composite = value
        .rsplit_once('-')
        .is_some_and(|(_, n)| n.parse::<u32>().is_ok());
    let kind = match kind.map(|k| k.as_str()).and_then(ChecksumType::parse) {
        Some(k) => k,
        None if composite => ChecksumType::Composite,
        None => ChecksumType::FullObject,
    };
    Some(Checksum {
        algorithm,
        kind,
        value: value.to_string(),
    })
}

fn sdk_algorithm(a: Algorithm) -> SdkAlgorithm {
    SdkAlgorithm::from(a.as_str())
}

fn sdk_type(k: ChecksumType) -> SdkChecksumType {
    SdkChecksumType::from(k.as_str())
}

/// A conditional write's 412 means an object exists under the key (not a
/// changed source, as a 412 on a read or copy source does). A plain write
/// refused by an explicit deny of the bucket's policy is what a bucket that
/// requires conditional writes (`s3:if-none-match`) answers: say so.
fn on_conditional_write(err: Error, if_none_match: bool) -> Error {
    if !if_none_match
        && err.kind == ErrorKind::AccessDenied
        && err.message.contains("resource-based policy")
    {
        let message = format!(
            "{} (if the bucket's policy requires conditional writes, run with --no-overwrite)",
            err.message
        );
        return Error { message, ..err };
    }
    if if_none_match && err.kind == ErrorKind::PreconditionFailed {
        Error {
            class: TARGET_EXISTS.to_string(),
            message: format!(
                "an object already exists under the key and --no-overwrite is set ({})",
                err.message
            ),
            ..err
        }
    } else {
        err
    }
}

/// A conditional delete refused by a policy: AWS needs `s3:GetObject` too
/// for a DeleteObject with `If-Match`, which a delete-only role lacks.
fn on_conditional_delete(err: Error) -> Error {
    if err.kind != ErrorKind::AccessDenied {
        return err;
    }
    let message = format!(
        "{} (a delete with If-Match also needs s3:GetObject on the object, besides s3:DeleteObject)",
        err.message
    );
    Error { message, ..err }
}

impl S3Store {
    /// A store for `bucket` using `client` (endpoint, credentials and retries are the client's).
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        let bucket = bucket.into();
        S3Store {
            home: Arc::new(home::BucketHome::new(client, &bucket)),
            bucket,
            version: None,
            no_conditional_delete: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The client for this bucket's region, learned by one HeadBucket (cached);
    /// fails with class `NoSuchBucket` when the bucket does not exist.
    async fn client(&self) -> Result<&aws_sdk_s3::Client> {
        self.home.client().await
    }

    fn subject(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, key)
    }

    /// One DeleteObject, with `If-Match` when given.
    async fn delete_request(&self, key: &str, if_match: Option<String>) -> Result<()> {
        self.client()
            .await?
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .set_if_match(if_match)
            .send()
            .await
            .map_err(|e| map_sdk_error(e, self.subject(key)))?;
        Ok(())
    }

    /// What a refused conditional delete means: a missing key is `Gone` (in
    /// a bucket shown to exist), a 412 is a changed object (a HEAD says
    /// what changed), a 501 is an endpoint without `If-Match` on deletes
    /// (`Ok(None)`: fall back), a refusal names the permission it needs.
    async fn refused_delete(
        &self,
        key: &str,
        cond: &DeleteIf,
        err: Error,
    ) -> Result<Option<Deletion>> {
        if err.is_gone() {
            self.home.confirm_exists().await?;
            return Ok(Some(Deletion::Gone));
        }
        if err.kind == ErrorKind::PreconditionFailed {
            let Some(now) = self.head(key).await? else {
                return Ok(Some(Deletion::Gone));
            };
            let what = cond
                .differences(now.size, now.etag.as_deref(), now.last_modified, true)
                .unwrap_or_else(|| "the store refused If-Match with the listed ETag".to_string());
            return Ok(Some(Deletion::Changed(what)));
        }
        if err.class == "NotImplemented" || err.class == "Http501" {
            tracing::info!(store = %self.describe(), error = %err,
                "the endpoint has no conditional delete (If-Match): each delete is checked by HEAD just before");
            self.no_conditional_delete.store(true, Ordering::Relaxed);
            return Ok(None);
        }
        Err(on_conditional_delete(err))
    }

    /// A PutObject with `opts`' headers, metadata, tags, storage class and ACL; no body yet.
    /// `Content-MD5` is sent when `opts` carries one, so S3 refuses damaged bytes.
    async fn put_request(&self, key: &str, opts: &PutOptions) -> Result<PutObjectFluentBuilder> {
        let client = self.client().await?;
        let mut req = with_put_options!(client.put_object().bucket(&self.bucket).key(key), opts)
            .set_content_md5(
                opts.content_md5
                    .map(|m| base64::engine::general_purpose::STANDARD.encode(m)),
            )
            .set_if_none_match(opts.if_none_match.then(|| "*".to_string()));
        match &opts.checksum {
            Some(WriteChecksum::Value(c)) => {
                req = with_checksum_value!(req, c.algorithm, c.value.clone())
                    .checksum_algorithm(sdk_algorithm(c.algorithm));
            }
            Some(WriteChecksum::Compute(a, _)) => req = req.checksum_algorithm(sdk_algorithm(*a)),
            None => {}
        }
        Ok(req)
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        format!("s3://{}", self.bucket)
    }

    async fn confirm_exists(&self) -> Result<()> {
        self.home.confirm_exists().await
    }

    async fn list_page(&self, req: &ListRequest) -> Result<ListPage> {
        let subject = self.subject(&req.prefix);
        let out = self
            .client()
            .await?
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&req.prefix)
            .set_delimiter(req.delimiter.clone())
            .set_start_after(req.start_after.clone())
            .set_continuation_token(req.continuation.clone())
            .set_max_keys(req.max_keys)
            .fetch_owner(req.fetch_owner)
            .encoding_type(EncodingType::Url)
            .send()
            .await
            .map_err(|e| map_sdk_error(e, &subject))?;
        // Decode only when the server says it encoded (some S3 clones ignore the request).
        let encoded = matches!(out.encoding_type(), Some(EncodingType::Url));
        let decode = |s: &str| -> Result<String> {
            if encoded {
                url_decode(s, &subject)
            } else {
                Ok(s.to_string())
            }
        };
        let mut objects = Vec::with_capacity(out.contents().len());
        for o in out.contents() {
            let Some(key) = o.key() else { continue };
            let owner = if req.fetch_owner { o.owner() } else { None };
            objects.push(Listed {
                key: decode(key)?,
                size: o.size().unwrap_or(0).max(0) as u64,
                etag: o.e_tag().map(str::to_string),
                last_modified: o.last_modified().and_then(to_chrono),
                storage_class: o.storage_class().map(|s| s.as_str().to_string()),
                checksum_algorithm: o
                    .checksum_algorithm()
                    .first()
                    .map(|a| a.as_str().to_string()),
                owner_id: owner.and_then(|w| w.id()).map(str::to_string),
                owner_name: owner.and_then(|w| w.display_name()).map(str::to_string),
            });
        }
        let mut prefixes = Vec::with_capacity(out.common_prefixes().len());
        for p in out.common_prefixes() {
            if let Some(p) = p.prefix() {
                prefixes.push(decode(p)?);
            }
        }
        let next = if out.is_truncated() == Some(true) {
            out.next_continuation_token().map(str::to_string)
        } else {
            None
        };
        Ok(ListPage {
            objects,
            prefixes,
            next,
        })
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let subject = self.subject(key);
        let out = match self
            .client()
            .await?
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(self.version.clone())
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let err = map_sdk_error(e, &subject);
                if err.is_gone() {
                    // A HEAD 404 has no body: it does not say whether the key or
                    // the whole bucket is gone. Only a bucket shown to exist
                    // makes it a missing key.
                    self.home.confirm_exists().await?;
                    return Ok(None);
                }
                return Err(err);
            }
        };
        let etag = out.e_tag().map(str::to_string);
        let parts_count = out
            .parts_count()
            .and_then(|n| u32::try_from(n).ok())
            .or_else(|| etag.as_deref().and_then(etag_parts));
        // Without a type, a plain value on a multipart object is of unknown
        // type (a clone may keep composites without their `-N`): not used.
        let checksum = checksum_of(out.checksum_type(), checksum_values!(out)).filter(|c| {
            out.checksum_type().is_some()
                || c.kind == ChecksumType::Composite
                || parts_count.is_none()
        });
        Ok(Some(ObjectInfo {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            etag,
            last_modified: out.last_modified().and_then(to_chrono),
            storage_class: out.storage_class().map(|s| s.as_str().to_string()),
            version_id: out.version_id().map(str::to_string),
            parts_count,
            sse: out.server_side_encryption().map(|s| s.as_str().to_string()),
            checksum,
            attrs: ObjectAttrs {
                content_type: out.content_type().map(str::to_string),
                content_encoding: out.content_encoding().map(str::to_string),
                content_disposition: out.content_disposition().map(str::to_string),
                content_language: out.content_language().map(str::to_string),
                cache_control: out.cache_control().map(str::to_string),
                expires: out.expires_string().map(str::to_string),
                website_redirect: out.website_redirect_location().map(str::to_string),
                metadata: out
                    .metadata()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
            },
        }))
    }

    async fn part_size(&self, key: &str, part: u32) -> Result<u64> {
        let subject = self.subject(key);
        let number = i32::try_from(part).map_err(|_| {
            Error::new(
                ErrorKind::Invalid,
                "InvalidPartNumber",
                &subject,
                format!("part number {part} is out of range"),
            )
        })?;
        let out = self
            .client()
            .await?
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(self.version.clone())
            .part_number(number)
            .send()
            .await
            .map_err(|e| map_sdk_error(e, &subject))?;
        Ok(out.content_length().unwrap_or(0).max(0) as u64)
    }

    async fn get(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
        if_match: Option<&str>,
    ) -> Result<ByteStream> {
        let subject = self.subject(key);
        let out = self
            .client()
            .await?
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(self.version.clone())
            .set_range(range.map(|(a, b)| format!("bytes={a}-{b}")))
            .set_if_match(if_match.map(str::to_string))
            .send()
            .await
            .map_err(|e| map_sdk_error(e, &subject))?;
        Ok(body_stream(out.body, subject))
    }

    async fn put(&self, key: &str, body: Bytes, opts: &PutOptions) -> Result<Written> {
        let subject = self.subject(key);
        let req = self
            .put_request(key, opts)
            .await?
            .body(SdkByteStream::from(body));
        let out = send_put(req, opts)
            .await
            .map_err(|e| on_conditional_write(map_sdk_error(e, &subject), opts.if_none_match))?;
        Ok(put_written(&out))
    }

    async fn put_stream(
        &self,
        key: &str,
        body: ByteStream,
        len: u64,
        opts: &PutOptions,
    ) -> Result<Written> {
        let subject = self.subject(key);
        let content_length = i64::try_from(len).map_err(|_| {
            Error::new(
                ErrorKind::Invalid,
                "EntityTooLarge",
                &subject,
                format!("{len} bytes cannot be sent in one request"),
            )
        })?;
        let body = LenBody {
            stream: std::sync::Mutex::new(body),
            len,
            remaining: len,
            held: None,
            finished: false,
            subject: subject.clone(),
        };
        let req = self
            .put_request(key, opts)
            .await?
            .content_length(content_length)
            .body(SdkByteStream::from_body_1_x(body));
        let out = send_put(req, opts)
            .await
            .map_err(|e| on_conditional_write(stream_error(e, &subject), opts.if_none_match))?;
        Ok(put_written(&out))
    }

    async fn create_multipart(&self, key: &str, opts: &PutOptions) -> Result<String> {
        let subject = self.subject(key);
        let out = with_put_options!(
            self.client()
                .await?
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(key),
            opts
        )
        .set_checksum_algorithm(opts.checksum.as_ref().map(|c| sdk_algorithm(c.algorithm())))
        .set_checksum_type(opts.checksum.as_ref().map(|c| sdk_type(c.kind())))
        .send()
        .await
        .map_err(|e| map_sdk_error(e, &subject))?;
        required(
            out.upload_id(),
            "NoUploadId",
            subject,
            "CreateMultipartUpload answered without an upload id",
        )
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
        content_md5: Option<&[u8; 16]>,
        checksum: Option<&Checksum>,
    ) -> Result<CompletedPart> {
        let subject = self.subject(key);
        let mut req = self
            .client()
            .await?
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .set_content_md5(
                content_md5.map(|m| base64::engine::general_purpose::STANDARD.encode(m)),
            );
        if let Some(c) = checksum {
            req = with_checksum_value!(req, c.algorithm, c.value.clone())
                .checksum_algorithm(sdk_algorithm(c.algorithm));
        }
        let out = req
            .body(SdkByteStream::from(body))
            .send()
            .await
            .map_err(|e| map_sdk_error(e, &subject))?;
        let etag = required(
            out.e_tag(),
            "PartWithoutETag",
            subject,
            format!("UploadPart of part {number} answered without an ETag"),
        )?;
        // The part's value is kept only when one was sent: a store may echo
        // its own default (CRC64NVME) for an upload created without an
        // algorithm, and completing with it is refused (InvalidPart).
        let answered = checksum.and_then(|_| checksum_of(None, checksum_values!(out)));
        Ok(CompletedPart {
            number,
            etag,
            checksum: answered.or_else(|| checksum.cloned()),
        })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        finish: &Finish,
    ) -> Result<Written> {
        let subject = self.subject(key);
        let upload = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|p| {
                        let b = SdkCompletedPart::builder()
                            .part_number(p.number)
                            .e_tag(&p.etag);
                        match &p.checksum {
                            Some(c) => {
                                with_checksum_value!(b, c.algorithm, c.value.clone()).build()
                            }
                            None => b.build(),
                        }
                    })
                    .collect(),
            ))
            .build();
        let mut req = self
            .client()
            .await?
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(upload)
            .set_if_none_match(finish.if_none_match.then(|| "*".to_string()));
        if let Some(c) = &finish.checksum {
            req = with_checksum_value!(req, c.algorithm, c.value.clone())
                .checksum_type(sdk_type(ChecksumType::FullObject));
        }
        let out = req
            .send()
            .await
            .map_err(|e| on_conditional_write(map_sdk_error(e, &subject), finish.if_none_match))?;
        let etag = required(
            out.e_tag(),
            "CompleteWithoutETag",
            subject,
            "CompleteMultipartUpload answered without an ETag (error in a 200 reply?)",
        )?;
        Ok(Written {
            etag,
            checksum: checksum_of(out.checksum_type(), checksum_values!(out)),
        })
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        let subject = self.subject(key);
        match self
            .client()
            .await?
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = map_sdk_error(e, &subject);
                if err.is_gone() {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    async fn get_tags(&self, key: &str) -> Result<Option<Vec<(String, String)>>> {
        let subject = self.subject(key);
        let out = self
            .client()
            .await?
            .get_object_tagging()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(self.version.clone())
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                let e = map_sdk_error(e, &subject);
                // S3-compatible stores without tagging (e.g. 501 NotImplemented):
                // the object has no tags we could read or copy.
                if e.class == "NotImplemented" || e.class == "Http501" {
                    tracing::debug!(subject, "the store does not implement tagging: no tags");
                    return Ok(None);
                }
                return Err(e);
            }
        };
        Ok(Some(
            out.tag_set()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect(),
        ))
    }

    async fn put_tags(&self, key: &str, tags: &[(String, String)]) -> Result<()> {
        let subject = self.subject(key);
        let mut set = Vec::with_capacity(tags.len());
        for (k, v) in tags {
            set.push(Tag::builder().key(k).value(v).build().map_err(|e| {
                Error::new(ErrorKind::Invalid, "InvalidTag", &subject, e.to_string())
            })?);
        }
        let tagging = Tagging::builder()
            .set_tag_set(Some(set))
            .build()
            .map_err(|e| Error::new(ErrorKind::Invalid, "InvalidTag", &subject, e.to_string()))?;
        self.client()
            .await?
            .put_object_tagging()
            .bucket(&self.bucket)
            .key(key)
            .tagging(tagging)
            .send()
            .await
            .map_err(|e| map_sdk_error(e, &subject))?;
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            object_attrs: true,
            s3_etags: true,
            server_side_copy: true,
            lists_uploads: true,
        }
    }

    fn copy_source_name(&self) -> Option<&str> {
        Some(&self.bucket)
    }

    /// S3's "200 OK with an error body" becomes an `Err` (the SDK parses it as
    /// an error; a reply without an ETag is treated as one too).
    async fn copy_object(
        &self,
        src: &CopySource<'_>,
        key: &str,
        opts: Option<&PutOptions>,
        write: &CopyWrite<'_>,
    ) -> Result<Written> {
        let subject = self.subject(key);
        let (storage_class, acl) = (write.storage_class, write.acl);
        let mut req = self
            .client()
            .await?
            .copy_object()
            .bucket(&self.bucket)
            .key(key)
            .copy_source(copy_source_header(src))
            .set_copy_source_if_match(src.if_match.map(str::to_string))
            .set_checksum_algorithm(write.checksum.map(sdk_algorithm))
            .set_if_none_match(write.if_none_match.then(|| "*".to_string()));
        let (storage_class, acl) = match opts {
            None => {
                req = req
                    .metadata_directive(MetadataDirective::Copy)
                    .tagging_directive(TaggingDirective::Copy);
                (storage_class, acl)
            }
            Some(o) => {
                let a = &o.attrs;
                req = req
                    .metadata_directive(MetadataDirective::Replace)
                    .set_content_type(a.content_type.clone())
                    .set_content_encoding(a.content_encoding.clone())
                    .set_content_disposition(a.content_disposition.clone())
                    .set_content_language(a.content_language.clone())
                    .set_cache_control(a.cache_control.clone())
                    .set_website_redirect_location(a.website_redirect.clone())
                    .set_metadata(metadata_map(&a.metadata))
                    .set_expires(a.expires.as_deref().and_then(parse_http_date));
                req = match &o.tags {
                    Some(tags) => req
                        .tagging_directive(TaggingDirective::Replace)
                        .tagging(tagging_header(tags)),
                    None => req.tagging_directive(TaggingDirective::Replace),
                };
                (
                    o.storage_class.as_deref().or(storage_class),
                    o.acl.as_deref().or(acl),
                )
            }
        };
        req = req
            .set_storage_class(storage_class.map(StorageClass::from))
            .set_acl(acl.map(ObjectCannedAcl::from));
        // A 412 may be either condition's (source if-match, target
        // if-none-match): left to the caller, who looks at the target.
        let out = req.send().await.map_err(|e| {
            let err = on_conditional_write(map_sdk_error(e, &subject), false);
            on_copy_side(err, src)
        })?;
        let result = out.copy_object_result();
        let etag = required(
            result.and_then(|r| r.e_tag()),
            "CopyWithoutETag",
            subject,
            "CopyObject answered without an ETag (error in a 200 reply?)",
        )?;
        Ok(Written {
            etag,
            checksum: result.and_then(|r| checksum_of(r.checksum_type(), checksum_values!(r))),
        })
    }

    async fn upload_part_copy(
        &self,
        src: &CopySource<'_>,
        key: &str,
        upload_id: &str,
        number: i32,
        range: (u64, u64),
    ) -> Result<CompletedPart> {
        let subject = self.subject(key);
        let out = self
            .client()
            .await?
            .upload_part_copy()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .copy_source(copy_source_header(src))
            .copy_source_range(format!("bytes={}-{}", range.0, range.1))
            .set_copy_source_if_match(src.if_match.map(str::to_string))
            .send()
            .await
            .map_err(|e| on_copy_side(map_sdk_error(e, &subject), src))?;
        let result = out.copy_part_result();
        let etag = required(
            result.and_then(|r| r.e_tag()),
            "CopyWithoutETag",
            subject,
            format!("UploadPartCopy of part {number} answered without an ETag"),
        )?;
        Ok(CompletedPart {
            number,
            etag,
            checksum: result.and_then(|r| checksum_of(None, checksum_values!(r))),
        })
    }

    /// DeleteObject with `If-Match: <listed ETag>` (S3 answers 412 when the
    /// object changed, 404 when it is gone). Without a listed ETag, or on an
    /// endpoint that does not implement the condition (501), the object is
    /// compared by HEAD (size, ETag, last modified to the second) and deleted
    /// unconditionally if it matches: `conditional: false`, because a write
    /// landing between the HEAD and the delete is lost.
    async fn delete_if(&self, key: &str, cond: &DeleteIf) -> Result<Deletion> {
        if self.version.is_some() {
            return Err(Error::new(
                ErrorKind::Invalid,
                "VersionView",
                self.subject(key),
                "a view of one version is read-only",
            ));
        }
        let listed = cond
            .etag
            .as_deref()
            .filter(|_| !self.no_conditional_delete.load(Ordering::Relaxed));
        if let Some(etag) = listed {
            let if_match = format!("\"{}\"", etag.trim_matches('"'));
            match self.delete_request(key, Some(if_match)).await {
                Ok(()) => return Ok(Deletion::Deleted { conditional: true }),
                Err(e) => {
                    if let Some(done) = self.refused_delete(key, cond, e).await? {
                        return Ok(done);
                    }
                }
            }
        }
        let Some(now) = self.head(key).await? else {
            return Ok(Deletion::Gone);
        };
        if let Some(what) = cond.differences(now.size, now.etag.as_deref(), now.last_modified, true)
        {
            return Ok(Deletion::Changed(what));
        }
        self.delete_request(key, None).await?;
        Ok(Deletion::Deleted { conditional: false })
    }

    async fn list_uploads(&self, prefix: &str) -> Result<Vec<Upload>> {
        let mut out = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let page = self
                .client()
                .await?
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .encoding_type(EncodingType::Url)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| map_sdk_error(e, self.subject(prefix)))?;
            let encoded = matches!(page.encoding_type(), Some(EncodingType::Url));
            for u in page.uploads() {
                let (Some(k), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                let k = if encoded {
                    url_decode(k, &self.subject(k))?
                } else {
                    k.to_string()
                };
                out.push(Upload {
                    key: k,
                    upload_id: id.to_string(),
                    initiated: u.initiated().and_then(to_chrono),
                });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(|k| {
                if encoded {
                    url_decode(k, "").unwrap_or_else(|_| k.to_string())
                } else {
                    k.to_string()
                }
            });
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && id_marker.is_none() {
                break;
            }
        }
        Ok(out)
    }

    fn at_version(&self, version: &str) -> Result<Arc<dyn ObjectStore>> {
        Ok(Arc::new(S3Store {
            version: Some(version.to_string()),
            ..self.clone()
        }))
    }
}

/// Send a PutObject. A checksum to compute (`WriteChecksum::Compute`, a value
/// not known before the body is sent) is the SDK's to compute as it sends
/// (a header for bytes in memory, an aws-chunked trailer for streamed
/// bodies), so the store still checks every byte.
async fn send_put(
    req: PutObjectFluentBuilder,
    opts: &PutOptions,
) -> std::result::Result<PutObjectOutput, SdkError<PutObjectError, HttpResponse>> {
    if !matches!(opts.checksum, Some(WriteChecksum::Compute(..))) {
        return req.send().await;
    }
    let computed = aws_sdk_s3::config::Builder::default()
        .request_checksum_calculation(RequestChecksumCalculation::WhenSupported);
    req.customize().config_override(computed).send().await
}

/// What a PutObject answered: the ETag and the checksum the store kept.
fn put_written(out: &PutObjectOutput) -> Written {
    Written {
        etag: out.e_tag().unwrap_or_default().to_string(),
        checksum: checksum_of(out.checksum_type(), checksum_values!(out)),
    }
}

/// A field a successful reply must carry (an ETag, an upload id). A reply
/// without it is S3's error-in-a-200 or a broken store: a retryable error of
/// `class`, never an empty value taken for a result.
fn required(
    value: Option<&str>,
    class: &str,
    subject: String,
    what: impl Into<String>,
) -> Result<String> {
    value
        .map(str::to_string)
        .ok_or_else(|| Error::new(ErrorKind::Retryable, class, subject, what))
}

/// What to do with an S3 error, from its service code and HTTP status (pure, so
/// it is table-tested). Codes win over statuses: `NoSuchKey` is NotFound even
/// if a proxy changed the status.
pub fn error_kind(code: Option<&str>, status: Option<u16>) -> ErrorKind {
    match code {
        Some(
            "SlowDown"
            | "InternalError"
            | "ServiceUnavailable"
            | "RequestTimeout"
            | "RequestTimeTooSkewed"
            | "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottled"
            | "RequestLimitExceeded"
            | "TooManyRequests"
            | "TooManyRequestsException"
            | "BandwidthLimitExceeded"
            | "OperationAborted"
            | "EC2ThrottledException"
            | "PriorRequestNotComplete"
            | "IDPCommunicationError"
            // The body arrived damaged (Content-MD5 or checksum refused): send it again.
            | "BadDigest"
            // A conditional write raced another write of the key: start it again.
            | "ConditionalRequestConflict",
        ) => return ErrorKind::Retryable,
        Some("NoSuchKey" | "NotFound" | "NoSuchBucket" | "NoSuchUpload" | "NoSuchVersion") => {
            return ErrorKind::NotFound
        }
        Some("PreconditionFailed") => return ErrorKind::PreconditionFailed,
        Some(
            "AccessDenied" | "AllAccessDisabled" | "InvalidAccessKeyId" | "SignatureDoesNotMatch",
        ) => return ErrorKind::AccessDenied,
        Some("InvalidObjectState" | "ObjectNotInActiveTierError") => {
            return ErrorKind::InvalidObjectState
        }
        _ => {}
    }
    match status {
        Some(404) => ErrorKind::NotFound,
        Some(412) => ErrorKind::PreconditionFailed,
        Some(403) => ErrorKind::AccessDenied,
        Some(408 | 429 | 500 | 502 | 503 | 504) => ErrorKind::Retryable,
        // A success status the SDK could not read (e.g. an unexpected XML
        // root): the request may have happened; the caller must look.
        Some(200..=299) => ErrorKind::Retryable,
        _ => ErrorKind::Permanent,
    }
}

/// Class of an error whose HTTP status said success but whose body could not be read.
pub const UNREADABLE_REPLY: &str = "UnreadableReply";

/// Turn an SDK error into our error: kind from [`error_kind`] (transport failures
/// are retryable), class = the service code or `HttpNNN`/`Timeout`/`Dispatch`/
/// `Response`/`Construction`, subject = `s3://bucket/key`.
pub fn map_sdk_error<E>(err: SdkError<E, HttpResponse>, subject: impl Into<String>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let subject = subject.into();
    let transport = crate::clients::transport_failure(&err);
    let (kind, class, message) = match (&err, transport) {
        (_, Some(t)) => (
            t.kind(),
            t.class().to_string(),
            crate::clients::transport_message(&err, t),
        ),
        (SdkError::ServiceError(se), None) => {
            let code = err.code();
            let status = Some(se.raw().status().as_u16());
            // A bucket-level 404 without a code still says which bucket is missing.
            let class = match (code, status) {
                (Some(c), _) => c.to_string(),
                (None, Some(200..=299)) => UNREADABLE_REPLY.to_string(),
                (None, s) => crate::error::http_class(s),
            };
            let message = err
                .message()
                .map(str::to_string)
                .unwrap_or_else(|| match status {
                    Some(s) => format!("HTTP {s}"),
                    None => "service error".to_string(),
                });
            (error_kind(code, status), class, message)
        }
        _ => (
            ErrorKind::Permanent,
            "Unknown".to_string(),
            "unexpected SDK error".to_string(),
        ),
    };
    let subject = if class == crate::error::class::NO_SUCH_BUCKET {
        // Name the bucket, not the key: the whole run is misconfigured.
        bucket_of(&subject)
    } else {
        subject
    };
    // The message already says what the SDK error says (code and message,
    // or endpoint and reason): kept for DEBUG, not repeated in full_message.
    Error::new(kind, class, subject, message).with_stated_source(err)
}

/// A copy request (CopyObject, UploadPartCopy) goes to the target, but some
/// of its refusals are about the source: name the side that failed. The
/// source's key or version is missing, archived, or changed (`if-match`);
/// a missing bucket is the source's, since the target bucket was shown to
/// exist (HeadBucket) before the copy was sent. Anything else (a missing
/// upload, access, throttling) stays the target's.
fn on_copy_side(err: Error, src: &CopySource<'_>) -> Error {
    let source_side = err.class == crate::error::class::NO_SUCH_BUCKET
        || matches!(
            err.kind,
            ErrorKind::InvalidObjectState | ErrorKind::PreconditionFailed
        )
        || (err.is_gone() && err.class != crate::error::class::NO_SUCH_UPLOAD);
    match (
        source_side,
        err.class == crate::error::class::NO_SUCH_BUCKET,
    ) {
        (false, _) => err,
        (true, true) => err.with_subject(format!("s3://{}", src.bucket)),
        (true, false) => err.with_subject(src.subject()),
    }
}

fn bucket_of(subject: &str) -> String {
    match subject.strip_prefix("s3://") {
        Some(rest) => format!("s3://{}", rest.split('/').next().unwrap_or(rest)),
        None => subject.to_string(),
    }
}

/// Decode a key from a ListObjectsV2 reply made with `encoding-type=url`: S3
/// form-encodes (a space may come as `+`; a literal `+` always comes as `%2B`).
pub fn url_decode(s: &str, subject: &str) -> Result<String> {
    let plus_as_space = s.replace('+', " ");
    percent_decode_str(&plus_as_space)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|e| {
            Error::new(
                ErrorKind::Permanent,
                "InvalidEncoding",
                subject,
                format!("listing returned a key that is not URL-encoded UTF-8: `{s}`"),
            )
            .with_source(e)
        })
}

/// The `Tagging` header of a put: `k=v&k2=v2`, each part URL-encoded.
pub fn tagging_header(tags: &[(String, String)]) -> String {
    tags.iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, TAGGING_SET),
                utf8_percent_encode(v, TAGGING_SET)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Number of parts from a multipart ETag's `-N` suffix (`"abc-3"` → 3).
pub fn etag_parts(etag: &str) -> Option<u32> {
    let e = etag.trim_matches('"');
    let (_, n) = e.rsplit_once('-')?;
    n.parse().ok()
}

fn metadata_map(m: &BTreeMap<String, String>) -> Option<HashMap<String, String>> {
    if m.is_empty() {
        None
    } else {
        Some(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

fn parse_http_date(s: &str) -> Option<aws_smithy_types::DateTime> {
    let parsed = aws_smithy_types::DateTime::from_str(s, Format::HttpDate)
        .or_else(|_| aws_smithy_types::DateTime::from_str(s, Format::DateTime));
    if parsed.is_err() {
        tracing::warn!(
            expires = s,
            "dropping an Expires header that is not an HTTP date"
        );
    }
    parsed.ok()
}

fn to_chrono(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

/// The body of a streamed PutObject: our chunk stream as an http-body 1.x body
/// of exactly `len` bytes. A longer or shorter stream is an error (so S3 never
/// waits for bytes that will not come, and never stores a truncated object);
/// the chunk that completes `len` is held back until the stream has ended,
/// because the HTTP client stops reading a body once Content-Length is sent.
/// The SDK wants a `Sync` body: the mutex provides that and is never contended
/// (only `poll_frame`, through `&mut self`, touches the stream).
struct LenBody {
    stream: std::sync::Mutex<ByteStream>,
    len: u64,
    remaining: u64,
    /// The last chunk, waiting for the end of the stream.
    held: Option<Bytes>,
    finished: bool,
    subject: String,
}

impl http_body::Body for LenBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>>>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        let stream = this
            .stream
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            let next = ready!(stream.as_mut().poll_next(cx));
            let frame = match (this.held.take(), next) {
                (_, Some(Err(e))) => Err(e),
                (Some(last), None) => {
                    this.finished = true;
                    Ok(Frame::data(last))
                }
                (Some(last), Some(Ok(chunk))) if chunk.is_empty() => {
                    this.held = Some(last);
                    continue;
                }
                (Some(_), Some(Ok(_))) => Err(length_mismatch(&this.subject, this.len, "more")),
                (None, Some(Ok(chunk))) if chunk.len() as u64 > this.remaining => {
                    Err(length_mismatch(&this.subject, this.len, "more"))
                }
                (None, Some(Ok(chunk))) => {
                    this.remaining -= chunk.len() as u64;
                    if this.remaining == 0 && !chunk.is_empty() {
                        this.held = Some(chunk);
                        continue;
                    }
                    Ok(Frame::data(chunk))
                }
                (None, None) if this.remaining > 0 => {
                    Err(length_mismatch(&this.subject, this.len, "fewer"))
                }
                (None, None) => {
                    this.finished = true;
                    return Poll::Ready(None);
                }
            };
            if frame.is_err() {
                this.finished = true;
            }
            return Poll::Ready(Some(frame));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.held.as_ref().map_or(0, |b| b.len() as u64);
        SizeHint::with_exact(self.remaining + held)
    }
}

/// A failed streamed request: the body's own error when it was the cause (its
/// class says what went wrong with the source, e.g. `SizeMismatch`,
/// `BodyRead`), else the SDK error mapped by [`map_sdk_error`].
fn stream_error<E>(err: SdkError<E, HttpResponse>, subject: &str) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    let mut found = None;
    while let Some(c) = cause {
        if let Some(ours) = c.downcast_ref::<Error>() {
            found = Some((
                ours.kind,
                ours.class.clone(),
                ours.subject.clone(),
                ours.message.clone(),
            ));
            break;
        }
        cause = c.source();
    }
    match found {
        Some((kind, class, subj, message)) => {
            Error::new(kind, class, subj, message).with_source(err)
        }
        None => map_sdk_error(err, subject),
    }
}

fn body_stream(body: SdkByteStream, subject: String) -> ByteStream {
    Box::pin(futures::stream::unfold(
        (body, subject, false),
        |(mut body, subject, done)| async move {
            if done {
                return None;
            }
            match body.next().await {
                None => None,
                Some(Ok(chunk)) => Some((Ok(chunk), (body, subject, false))),
                Some(Err(e)) => {
                    let err = Error::new(
                        ErrorKind::Retryable,
                        "BodyRead",
                        &subject,
                        "reading the object body failed",
                    )
                    .with_source(e);
                    Some((Err(err), (body, subject, true)))
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditional_writes_name_what_refused_them() {
        let denied = || {
            Error::new(
                ErrorKind::AccessDenied,
                "AccessDenied",
                "s3://b/k",
                "User: arn:aws:iam::1:role/r is not authorized to perform: s3:PutObject on resource: \"arn:aws:s3:::b/k\" with an explicit deny in a resource-based policy",
            )
        };
        let plain = on_conditional_write(denied(), false);
        assert!(
            plain.message.ends_with("run with --no-overwrite)"),
            "{}",
            plain.message
        );
        assert_eq!(plain.class, "AccessDenied");
        assert!(!on_conditional_write(denied(), true)
            .message
            .contains("--no-overwrite"));
        let taken = || {
            Error::new(
                ErrorKind::PreconditionFailed,
                "PreconditionFailed",
                "s3://b/k",
                "At least one of the pre-conditions you specified did not hold",
            )
        };
        assert_eq!(on_conditional_write(taken(), true).class, TARGET_EXISTS);
        assert_eq!(
            on_conditional_write(taken(), false).class,
            "PreconditionFailed"
        );
    }

    #[test]
    fn a_refused_conditional_delete_names_the_permission() {
        let denied = Error::new(
            ErrorKind::AccessDenied,
            "AccessDenied",
            "s3://b/k",
            "denied",
        );
        let e = on_conditional_delete(denied);
        assert_eq!(e.class, "AccessDenied");
        assert!(e.message.contains("s3:GetObject"), "{}", e.message);
        let other = Error::new(ErrorKind::Permanent, "InvalidRequest", "s3://b/k", "no");
        assert_eq!(on_conditional_delete(other).message, "no");
    }

    #[test]
    fn error_kind_table() {
        let cases: &[(Option<&str>, Option<u16>, ErrorKind)] = &[
            (Some("SlowDown"), Some(503), ErrorKind::Retryable),
            (None, Some(503), ErrorKind::Retryable),
            (None, Some(500), ErrorKind::Retryable),
            (Some("InternalError"), Some(200), ErrorKind::Retryable),
            (Some("RequestTimeout"), Some(400), ErrorKind::Retryable),
            (Some("ThrottlingException"), Some(400), ErrorKind::Retryable),
            (Some("NoSuchKey"), Some(404), ErrorKind::NotFound),
            (Some("NoSuchBucket"), Some(404), ErrorKind::NotFound),
            (None, Some(404), ErrorKind::NotFound),
            (Some("NotFound"), None, ErrorKind::NotFound),
            (
                Some("PreconditionFailed"),
                Some(412),
                ErrorKind::PreconditionFailed,
            ),
            (None, Some(412), ErrorKind::PreconditionFailed),
            (Some("AccessDenied"), Some(403), ErrorKind::AccessDenied),
            (None, Some(403), ErrorKind::AccessDenied),
            (
                Some("InvalidObjectState"),
                Some(403),
                ErrorKind::InvalidObjectState,
            ),
            (
                Some("ObjectNotInActiveTierError"),
                Some(403),
                ErrorKind::InvalidObjectState,
            ),
            (Some("EntityTooSmall"), Some(400), ErrorKind::Permanent),
            (Some("BadDigest"), Some(400), ErrorKind::Retryable),
            (None, Some(200), ErrorKind::Retryable),
            (Some("InvalidDigest"), Some(400), ErrorKind::Permanent),
            (
                Some("ConditionalRequestConflict"),
                Some(409),
                ErrorKind::Retryable,
            ),
            (Some("InvalidRequest"), Some(400), ErrorKind::Permanent),
            (None, None, ErrorKind::Permanent),
        ];
        for (code, status, want) in cases {
            assert_eq!(error_kind(*code, *status), *want, "{code:?} {status:?}");
        }
    }

    #[test]
    fn copy_source_header_encodes_everything_but_unreserved_and_slash() {
        let src = CopySource {
            bucket: "b",
            key: "dir/a b+c%d?e#f/été~_.-",
            version_id: None,
            if_match: None,
        };
        assert_eq!(
            copy_source_header(&src),
            "b/dir/a%20b%2Bc%25d%3Fe%23f/%C3%A9t%C3%A9~_.-"
        );
        let src = CopySource {
            version_id: Some("v1"),
            ..src
        };
        assert!(copy_source_header(&src).ends_with("?versionId=v1"));
    }

    #[test]
    fn url_decode_handles_form_and_percent_encoding() {
        assert_eq!(url_decode("a+b%2Bc%20d", "").unwrap(), "a b+c d");
        assert_eq!(url_decode("%C3%A9t%C3%A9", "").unwrap(), "été");
        assert_eq!(url_decode("p/q", "").unwrap(), "p/q");
        assert!(url_decode("%FF", "s3://b/k").is_err());
    }

    #[test]
    fn tagging_header_is_url_encoded() {
        let tags = vec![
            ("a b".to_string(), "x&y=z".to_string()),
            ("k".to_string(), "v".to_string()),
        ];
        assert_eq!(tagging_header(&tags), "a%20b=x%26y%3Dz&k=v");
    }

    #[test]
    fn etag_parts_reads_the_suffix() {
        assert_eq!(etag_parts("\"abc-3\""), Some(3));
        assert_eq!(etag_parts("\"abc\""), None);
        assert_eq!(etag_parts("abc-x"), None);
    }

    #[test]
    fn bucket_of_drops_the_key() {
        assert_eq!(bucket_of("s3://b/k/x"), "s3://b");
        assert_eq!(bucket_of("s3://b"), "s3://b");
    }
}
