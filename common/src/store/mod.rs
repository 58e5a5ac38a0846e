//! The object-store abstraction: S3 ([`s3`], the only module that sees SDK
//! types) and local directories ([`dir`]). Everything the binaries and
//! [`crate::transfer`] do with objects goes through [`ObjectStore`]; what only
//! some stores can do (server-side copy, per-object headers and tags, S3
//! ETags, multipart uploads to list) is asked of the store
//! ([`ObjectStore::capabilities`], [`ObjectStore::copy_source_name`]), never
//! of its concrete type.

use std::collections::BTreeMap;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;

use crate::checksum::{Algorithm, Checksum, ChecksumType};
use crate::error::Result;

pub mod dir;
pub mod etag;
pub mod open;
pub mod s3;

/// A stream of body chunks.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// One object as a listing sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<DateTime<Utc>>,
    pub storage_class: Option<String>,
    /// The object's checksum algorithm (S3's name), when the listing says.
    pub checksum_algorithm: Option<String>,
    /// Owner id and display name, only when requested.
    pub owner_id: Option<String>,
    pub owner_name: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub objects: Vec<Listed>,
    /// Common prefixes, when a delimiter was given.
    pub prefixes: Vec<String>,
    /// Continuation token for the next page; `None` when done.
    pub next: Option<String>,
}

/// A listing request.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub start_after: Option<String>,
    pub continuation: Option<String>,
    pub max_keys: Option<i32>,
    pub fetch_owner: bool,
}

/// Content headers and user metadata: what a copy must carry over.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectAttrs {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    pub expires: Option<String>,
    pub website_redirect: Option<String>,
    /// User metadata (`x-amz-meta-*`), names lower-cased.
    pub metadata: BTreeMap<String, String>,
}

/// What HeadObject tells (or the filesystem, for directories).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Quoted ETag as S3 returns it; `None` for directories (computed on demand).
    pub etag: Option<String>,
    pub last_modified: Option<DateTime<Utc>>,
    pub storage_class: Option<String>,
    pub version_id: Option<String>,
    /// Number of parts for a multipart object (from the ETag suffix or HEAD).
    pub parts_count: Option<u32>,
    /// `x-amz-server-side-encryption`, e.g. `aws:kms` (ETags are then not MD5s).
    pub sse: Option<String>,
    /// The object's additional checksum (S3 keeps one algorithm per
    /// object), when the store reports one with a known type.
    pub checksum: Option<Checksum>,
    pub attrs: ObjectAttrs,
}

/// How to write an object: attributes plus per-write options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PutOptions {
    pub attrs: ObjectAttrs,
    /// Tags to set (`None`: leave none).
    pub tags: Option<Vec<(String, String)>>,
    pub storage_class: Option<String>,
    /// Canned ACL (`None`: omit).
    pub acl: Option<String>,
    /// MD5 of a whole-object body ([`ObjectStore::put`]): the store refuses a
    /// body with another MD5 (`BadDigest`) instead of storing damaged bytes.
    pub content_md5: Option<[u8; 16]>,
    /// The additional checksum the object gets (stores that keep none ignore it).
    pub checksum: Option<WriteChecksum>,
    /// Write only if no object exists under the key (`If-None-Match: *`):
    /// an existing one fails the write with class [`TARGET_EXISTS`].
    pub if_none_match: bool,
}

/// The checksum a write gives the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteChecksum {
    /// This full-object value, known before the body is sent (whole-body
    /// writes): the store refuses other bytes (`BadDigest`). For
    /// CreateMultipartUpload it names the algorithm, type full-object.
    Value(Checksum),
    /// This algorithm and type, the value computed as the body is sent (a
    /// streamed PutObject: a trailer) or from the parts (multipart).
    Compute(Algorithm, ChecksumType),
}

impl WriteChecksum {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            WriteChecksum::Value(c) => c.algorithm,
            WriteChecksum::Compute(a, _) => *a,
        }
    }

    pub fn kind(&self) -> ChecksumType {
        match self {
            WriteChecksum::Value(c) => c.kind,
            WriteChecksum::Compute(_, k) => *k,
        }
    }
}

/// What a final write (PutObject, CopyObject, CompleteMultipartUpload)
/// answered: the new ETag, and the checksum the store computed and kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Written {
    pub etag: String,
    pub checksum: Option<Checksum>,
}

/// How a multipart upload is completed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Finish {
    /// The full-object checksum the object must have (S3 refuses another:
    /// `BadDigest`); `None` for composite uploads or when unknown.
    pub checksum: Option<Checksum>,
    /// Complete only if no object exists under the key (`If-None-Match: *`).
    pub if_none_match: bool,
}

/// Class of a conditional write (`If-None-Match: *`) refused because an
/// object exists under the key (S3's 412 on a write, not on a read).
pub const TARGET_EXISTS: &str = "TargetExists";

/// A completed part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompletedPart {
    pub number: i32,
    pub etag: String,
    /// The part's checksum (of the upload's algorithm), as the store
    /// answered it; sent back on completion.
    pub checksum: Option<Checksum>,
}

/// The source of a server-side copy, in a store on the same endpoint as the
/// target. `if_match` makes the store refuse (412, `PreconditionFailed`) when
/// the source changed since it was listed, so a copy is never of another version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopySource<'a> {
    /// The source store's [`ObjectStore::copy_source_name`] (S3: its bucket).
    pub bucket: &'a str,
    pub key: &'a str,
    pub version_id: Option<&'a str>,
    pub if_match: Option<&'a str>,
}

impl CopySource<'_> {
    /// `s3://bucket/key`, for errors about the source.
    pub fn subject(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

/// What a CopyObject sets on the target besides what it copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CopyWrite<'a> {
    pub storage_class: Option<&'a str>,
    pub acl: Option<&'a str>,
    /// The checksum algorithm the copy gets (S3 keeps the source's when not asked).
    pub checksum: Option<Algorithm>,
    /// Copy only if no object exists under the key (`If-None-Match: *`).
    pub if_none_match: bool,
}

/// The facts a listing gave about an object that is to be deleted
/// ([`ObjectStore::delete_if`]): the delete happens only while the object is
/// still that one, so an object written after the listing survives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteIf {
    /// The listed ETag (S3: sent as `If-Match`); `None` when the listing had none.
    pub etag: Option<String>,
    pub size: u64,
    pub last_modified: Option<DateTime<Utc>>,
}

/// What a conditional delete did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// The object was removed. `conditional`: the store itself refused to
    /// remove another object (`If-Match`); `false`: the object was compared
    /// just before an unconditional delete (a write landing in between is lost).
    Deleted { conditional: bool },
    /// Not removed: the object is no longer the listed one (what differs).
    Changed(String),
    /// Not removed: nothing is there.
    Gone,
}

impl DeleteIf {
    /// What differs between the listed facts and the object as it is now
    /// (`None`: nothing that was listed). `whole_seconds`: compare times to
    /// the second (S3's HEAD says `Last-Modified` in seconds, its listing in
    /// milliseconds).
    pub fn differences(
        &self,
        size: u64,
        etag: Option<&str>,
        last_modified: Option<DateTime<Utc>>,
        whole_seconds: bool,
    ) -> Option<String> {
        let mut out = Vec::new();
        if size != self.size {
            out.push(format!("size {} is now {size}", self.size));
        }
        if let (Some(listed), Some(now)) = (self.etag.as_deref(), etag) {
            if !etag::etag_eq(listed, now) {
                out.push(format!(
                    "ETag {} is now {}",
                    listed.trim_matches('"'),
                    now.trim_matches('"')
                ));
            }
        }
        if let (Some(listed), Some(now)) = (self.last_modified, last_modified) {
            let same = if whole_seconds {
                listed.timestamp() == now.timestamp()
            } else {
                listed == now
            };
            if !same {
                out.push(format!(
                    "last modified {} is now {}",
                    listed.to_rfc3339(),
                    now.to_rfc3339()
                ));
            }
        }
        (!out.is_empty()).then(|| out.join(", "))
    }
}

/// A multipart upload in progress (for `commander cleanup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub key: String,
    pub upload_id: String,
    /// When it was started; `None` when the store does not say.
    pub initiated: Option<DateTime<Utc>>,
}

/// What a store keeps and can do beyond the operations every store has, so
/// callers ask the store, not its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Keeps content headers, user metadata and tags per object (S3). A
    /// directory keeps bytes and the file's mtime only (its content type is
    /// guessed from the name), so those are neither compared nor copied.
    pub object_attrs: bool,
    /// The ETag a write returns is the one S3 computes from the bytes and the
    /// part layout written (MD5, or MD5 of the part MD5s), so an ETag that
    /// differs from the source's after an exact layout is evidence that the
    /// bytes differ.
    pub s3_etags: bool,
    /// Server-side copies into this store ([`ObjectStore::copy_object`],
    /// [`ObjectStore::upload_part_copy`]) from stores on the same endpoint.
    pub server_side_copy: bool,
    /// [`ObjectStore::list_uploads`] lists the multipart uploads in progress.
    pub lists_uploads: bool,
}

/// The error of an operation this store does not have (see [`Capabilities`]).
pub fn unsupported(store: String, what: &str) -> crate::Error {
    crate::Error::new(
        crate::ErrorKind::Invalid,
        "Unsupported",
        store,
        format!("this store cannot {what}"),
    )
}

/// Class of the error when a streamed body is longer or shorter than announced.
pub const SIZE_MISMATCH: &str = "SizeMismatch";

/// The error of a [`ObjectStore::put_stream`] body whose length is not the
/// announced one: retryable (the source changed or a read was cut short).
pub fn length_mismatch(subject: &str, len: u64, what: &str) -> crate::Error {
    crate::Error::new(
        crate::ErrorKind::Retryable,
        SIZE_MISMATCH,
        subject,
        format!("the body has {what} than the announced {len} bytes"),
    )
}

/// A store of objects addressed by key.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// `s3://bucket` or `file:///root`, for messages and errors.
    fn describe(&self) -> String;

    /// Show that the bucket (or directory) exists now: a fresh HeadBucket,
    /// or the root's metadata. The commander's pre-flight check of a target.
    async fn confirm_exists(&self) -> Result<()>;

    /// One page of keys under a prefix, in key (byte) order.
    async fn list_page(&self, req: &ListRequest) -> Result<ListPage>;

    /// Metadata of an object; `Ok(None)` when it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>>;

    /// Size of part `part` (1-based) of a multipart object, to reproduce its layout.
    async fn part_size(&self, key: &str, part: u32) -> Result<u64>;

    /// Stream the object (or the inclusive byte `range`). `if_match`: fail with
    /// `PreconditionFailed` if the ETag differs (so a copy is never a mix).
    async fn get(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
        if_match: Option<&str>,
    ) -> Result<ByteStream>;

    /// Write a whole object in one request. Atomic: readers see the old or the new object.
    async fn put(&self, key: &str, body: Bytes, opts: &PutOptions) -> Result<Written>;

    /// Write a whole object from a stream of known length in one request (S3:
    /// one PutObject with Content-Length; directories: temp file + rename).
    /// Memory: the chunks in flight, not the object. Atomic like [`put`](Self::put):
    /// a body that fails, or yields more or fewer than `len` bytes, writes
    /// nothing and fails with the body's error (class `SizeMismatch` for a
    /// wrong length). The request is not retried by the store (a stream cannot
    /// be replayed): the caller restarts it. Returns the new ETag.
    ///
    /// The default buffers the body and calls [`put`](Self::put): correct, not
    /// streaming; the stores of this crate override it.
    async fn put_stream(
        &self,
        key: &str,
        body: ByteStream,
        len: u64,
        opts: &PutOptions,
    ) -> Result<Written> {
        use futures::StreamExt;
        let subject = format!("{}/{key}", self.describe());
        let mut body = body;
        let mut buf = bytes::BytesMut::new();
        while let Some(chunk) = body.next().await {
            buf.extend_from_slice(&chunk?);
            if buf.len() as u64 > len {
                return Err(length_mismatch(&subject, len, "more"));
            }
        }
        if (buf.len() as u64) < len {
            return Err(length_mismatch(&subject, len, "fewer"));
        }
        self.put(key, buf.freeze(), opts).await
    }

    /// Start a multipart upload; returns its id.
    async fn create_multipart(&self, key: &str, opts: &PutOptions) -> Result<String>;

    /// Upload one part. With `content_md5` or `checksum` (the part's value
    /// of the upload's algorithm) the store refuses a body with another
    /// digest (class `BadDigest`, retryable) instead of storing damaged bytes.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
        content_md5: Option<&[u8; 16]>,
        checksum: Option<&Checksum>,
    ) -> Result<CompletedPart>;

    /// Complete an upload of `parts` (in order).
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        finish: &Finish,
    ) -> Result<Written>;

    /// Abort an upload (so no orphaned parts are billed). Idempotent.
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()>;

    /// Tags of an object (`Ok(None)` when the store has no tags, e.g. directories).
    async fn get_tags(&self, key: &str) -> Result<Option<Vec<(String, String)>>>;

    /// Replace the tags of an object.
    async fn put_tags(&self, key: &str, tags: &[(String, String)]) -> Result<()>;

    /// A read-only view of version `version` of every key (HEAD, GET, part
    /// sizes and tags of that version), for manifest rows that name one.
    /// Stores without versions (directories) refuse with class `NoVersions`.
    fn at_version(&self, version: &str) -> Result<std::sync::Arc<dyn ObjectStore>> {
        Err(crate::Error::new(
            crate::ErrorKind::Invalid,
            "NoVersions",
            self.describe(),
            format!("this store keeps no versions (asked for version {version})"),
        ))
    }

    /// What this store keeps and can do beyond the common operations.
    fn capabilities(&self) -> Capabilities;

    /// The name under which a server-side copy into another store of the same
    /// endpoint reads this store (S3: its bucket); `None` when it cannot be
    /// a copy source.
    fn copy_source_name(&self) -> Option<&str> {
        None
    }

    /// Server-side copy of `src` to `key`. `opts: None` copies the source's
    /// headers, metadata, tags and checksum algorithm, with `write`'s storage
    /// class, ACL, checksum algorithm (for a source without one) and
    /// condition; `Some(opts)` replaces them with `opts`'. Stores without
    /// [`Capabilities::server_side_copy`] refuse (class `Unsupported`).
    async fn copy_object(
        &self,
        src: &CopySource<'_>,
        key: &str,
        opts: Option<&PutOptions>,
        write: &CopyWrite<'_>,
    ) -> Result<Written> {
        let _ = (src, key, opts, write);
        Err(unsupported(self.describe(), "copy objects server-side"))
    }

    /// Server-side copy of the inclusive byte `range` of `src` as part
    /// `number` of an upload (its checksum computed by the store with the
    /// upload's algorithm). Stores without
    /// [`Capabilities::server_side_copy`] refuse (class `Unsupported`).
    async fn upload_part_copy(
        &self,
        src: &CopySource<'_>,
        key: &str,
        upload_id: &str,
        number: i32,
        range: (u64, u64),
    ) -> Result<CompletedPart> {
        let _ = (src, key, upload_id, number, range);
        Err(unsupported(self.describe(), "copy parts server-side"))
    }

    /// Delete `key` only if it is still the object `cond` describes (see
    /// [`Deletion`]). Never touches any other key. Stores that cannot delete
    /// refuse (class `Unsupported`).
    async fn delete_if(&self, key: &str, cond: &DeleteIf) -> Result<Deletion> {
        let _ = (key, cond);
        Err(unsupported(self.describe(), "delete objects"))
    }

    /// Multipart uploads in progress under `prefix`. Stores without
    /// [`Capabilities::lists_uploads`] refuse (class `Unsupported`).
    async fn list_uploads(&self, prefix: &str) -> Result<Vec<Upload>> {
        let _ = prefix;
        Err(unsupported(self.describe(), "list multipart uploads"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_conditions_name_what_differs() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let listed = DeleteIf {
            etag: Some("\"abc\"".into()),
            size: 5,
            last_modified: Some(at("2026-01-01T00:00:00.250Z")),
        };
        // HEAD says seconds, the listing milliseconds: equal to the second.
        let head = Some(at("2026-01-01T00:00:00Z"));
        assert_eq!(listed.differences(5, Some("ABC"), head, true), None);
        assert!(listed
            .differences(5, Some("abc"), head, false)
            .unwrap()
            .starts_with("last modified"));
        let what = listed.differences(6, Some("\"def\""), None, true).unwrap();
        assert_eq!(what, "size 5 is now 6, ETag abc is now def");
        // No ETag on one side: size and time decide.
        assert_eq!(listed.differences(5, None, head, true), None);
    }
}
