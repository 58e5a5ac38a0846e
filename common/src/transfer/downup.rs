//! Streaming transfer (downup mode, and copy mode when the ends cannot copy
//! server-side): GET from the source, then one PutObject (buffered up to one
//! `part_size`, streamed chunk by chunk above that, up to 5 GiB) or a
//! multipart upload on the target. Memory: at most `part_concurrency` parts
//! of `part_size` per object, and — with [`TransferOptions::buffers`] — one
//! budget for every object in flight; no temp files, no size limit. Every read
//! is pinned to the source ETag and every byte's MD5 is checked. The carried
//! checksum is computed as the bytes are read, checked against the source's
//! (whole object, or the parts' sum) and sent with every request, so the
//! target refuses bytes damaged on the way.
//!
//! [`TransferOptions::buffers`]: super::TransferOptions::buffers

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};

use crate::checksum::{self, Algorithm, ChecksumType, Hasher};
use crate::error::{Error, ErrorKind, Result};
use crate::store::dir::{format_mtime, MTIME_META};
use crate::store::{ByteStream, ObjectInfo, PutOptions, WriteChecksum, Written, SIZE_MISMATCH};
use crate::verify::{etag_bare, etag_parts};

use super::buffers::Reserved;
use super::carry::Carry;
use super::plan::{self, Plan, Planned};
use super::{run_upload, settle, Expected, Job, UploadGuard, Wrote, BAD_DIGEST};
use crate::store::etag::md5_etag;

/// Room reserved in the shared budget for one streamed PutObject: the chunks
/// in flight between the source's GET and the target (a few 1 MiB chunks at most).
const STREAM_WINDOW: u64 = 2 * 1024 * 1024;

/// Transfer as planned.
pub(super) async fn run(
    job: &Job<'_>,
    info: &ObjectInfo,
    pin: Option<&str>,
    planned: &Planned,
    carry: Option<&Carry>,
) -> Result<Wrote> {
    let tags = job.src().get_tags(job.key()).await?;
    let mut attrs = info.attrs.clone();
    if !job.dst().capabilities().object_attrs && !attrs.metadata.contains_key(MTIME_META) {
        // A directory target keeps the object's last-modified time as the file's mtime.
        if let Some(lm) = info.last_modified {
            attrs
                .metadata
                .insert(MTIME_META.to_string(), format_mtime(lm.into()));
        }
    }
    let mut opts = PutOptions {
        attrs,
        tags,
        storage_class: job.opts.storage_class.clone(),
        acl: job.opts.acl.clone(),
        content_md5: None,
        checksum: None,
        if_none_match: job.opts.no_overwrite,
    };
    let algorithm = carry.map(|c| c.algorithm);
    let ranges = match &planned.plan {
        Plan::Single => {
            let _room = reserve(job, info.size).await;
            let (body, md5, digest) = read(job, None, info.size, pin, algorithm).await?;
            check_read(job, info, &md5)?;
            if let (Some(c), Some(d)) = (carry, &digest) {
                c.check_read(d, &job.src_subject())?;
            }
            // The target refuses bytes damaged on the way (BadDigest, retried).
            opts.content_md5 = Some(md5);
            opts.checksum = digest.as_ref().map(|d| WriteChecksum::Value(d.full()));
            let expected = Expected {
                size: info.size,
                etag: Some(md5_etag(&md5)),
                checksum: digest.as_ref().map(checksum::Digest::full),
            };
            let put = job.dst().put(job.tkey(), body, &opts).await;
            let written = settle(job, put, &expected).await?;
            check_written(job, &written, &md5, digest.as_ref()).await?;
            return Ok(Wrote {
                written,
                md5_proven: source_md5(info).is_some(),
                note: None,
            });
        }
        Plan::Stream => {
            // The MD5 is known up front only from a plain source ETag; the
            // checksum from the source's full-object value. Else S3 gives an
            // object written without one a CRC64NVME of its own, which is
            // compared after the write with the one computed here; another
            // algorithm goes as a trailer the SDK computes as it sends (on
            // http it also signs every chunk: see docs/proof.md).
            opts.content_md5 = source_md5(info);
            opts.checksum = carry.and_then(|c| match &c.expect {
                Some(want) => Some(WriteChecksum::Value(want.clone())),
                None if c.algorithm == Algorithm::Crc64Nvme => None,
                None => Some(WriteChecksum::Compute(
                    c.algorithm,
                    ChecksumType::FullObject,
                )),
            });
            return stream_put(job, info, pin, &opts, carry).await;
        }
        Plan::Parts(ranges) => ranges,
    };
    opts.checksum = carry.map(Carry::compute);
    let largest = ranges.iter().map(|(a, b)| b - a + 1).max().unwrap_or(1);
    let in_flight = plan::parts_in_flight(job.opts.part_concurrency, job.opts.part_size, largest);
    let upload_id = job.dst().create_multipart(job.tkey(), &opts).await?;
    tracing::debug!(%upload_id, parts = ranges.len(), in_flight, "multipart upload started");
    let guard = UploadGuard::new(job.ends.target.clone(), job.tkey(), &upload_id);
    let upload_id = &upload_id;
    let written = run_upload(
        job,
        info.size,
        guard,
        ranges,
        in_flight,
        carry,
        |n| async move {
            let (a, b) = ranges[(n - 1) as usize];
            let _room = reserve(job, b - a + 1).await;
            let (body, md5, digest) = read(job, Some((a, b)), b - a + 1, pin, algorithm).await?;
            let checksum = digest.as_ref().map(checksum::Digest::full);
            let mut part = job
                .dst()
                .upload_part(
                    job.tkey(),
                    upload_id,
                    n,
                    body,
                    Some(&md5),
                    checksum.as_ref(),
                )
                .await?;
            // The sum is made of what was read (the target checked each part against it).
            if checksum.is_some() {
                part.checksum = checksum;
            }
            Ok(part)
        },
    )
    .await?;
    Ok(Wrote {
        written,
        md5_proven: false,
        note: None,
    })
}

/// Room for a buffer of `bytes` in the shared budget, if there is one; held
/// until the bytes are sent.
async fn reserve(job: &Job<'_>, bytes: u64) -> Option<Reserved> {
    match &job.opts.buffers {
        Some(pool) => Some(pool.reserve(bytes).await),
        None => None,
    }
}

/// One PutObject of known length whose body streams from the source's GET
/// (memory: the chunks in flight). The MD5 of the bytes is computed as they
/// pass, and the last chunk is handed on only after that MD5 matched the
/// source ETag (when it is a plain MD5): a damaged or changed read fails the
/// request before the target stores anything. The target's ETag is then
/// compared with the MD5 sent; a mismatch (damage on the way to the target)
/// is `BadDigest`, retried: the target holds the damaged object until the
/// retry overwrites it (after the last attempt the key goes to the DLQ).
async fn stream_put(
    job: &Job<'_>,
    info: &ObjectInfo,
    pin: Option<&str>,
    opts: &PutOptions,
    carry: Option<&Carry>,
) -> Result<Wrote> {
    let _room = reserve(job, STREAM_WINDOW.min(info.size)).await;
    let source = job.src().get(job.key(), None, pin).await?;
    let sent = Arc::new(Mutex::new(None));
    let body = Hashed {
        inner: source,
        hash: Md5::new(),
        checksum: carry.map(|c| (Hasher::new(c.algorithm), c.clone())),
        seen: 0,
        len: info.size,
        expected: source_md5(info),
        sent: sent.clone(),
        subject: job.src_subject(),
        done: false,
    };
    let put = job
        .dst()
        .put_stream(job.tkey(), Box::pin(body), info.size, opts)
        .await;
    let expected = Expected {
        size: info.size,
        etag: opts.content_md5.as_ref().map(md5_etag),
        checksum: carry.and_then(|c| c.expect.clone()),
    };
    let written = settle(job, put, &expected).await?;
    let sent = sent.lock().unwrap_or_else(PoisonError::into_inner).take();
    // With Content-MD5 the target itself checked the whole body (or settle
    // found the expected ETag): that MD5 is the one sent.
    let (md5, digest) = match (sent, opts.content_md5) {
        (Some((md5, digest)), _) => (md5, digest),
        (None, Some(md5)) => (md5, None),
        (None, None) => {
            return Err(Error::new(
                ErrorKind::Retryable,
                "IncompleteBody",
                job.dst_subject(),
                "the target answered before the whole body was sent",
            ))
        }
    };
    check_written(job, &written, &md5, digest.as_ref()).await?;
    // Nothing was sent for S3's own CRC64NVME to stand for: say when the
    // store gave none, so an operator knows a later check needs bytes.
    let note = match (carry, &opts.checksum, &written.checksum) {
        (Some(c), None, None) if job.dst().capabilities().s3_etags => Some(format!(
            "the target store gave the object no {} of its own (AWS S3 does)",
            c.algorithm
        )),
        _ => None,
    };
    Ok(Wrote {
        written,
        md5_proven: source_md5(info).is_some(),
        note,
    })
}

/// The source's content MD5, when its ETag is one (single-part, no SSE-KMS).
fn source_md5(info: &ObjectInfo) -> Option<[u8; 16]> {
    let etag = info.etag.as_deref()?;
    if !plain_md5(etag, info.sse.as_deref()) {
        return None;
    }
    hex::decode(etag_bare(etag)).ok()?.try_into().ok()
}

/// The MD5 of a streamed body, and its carried checksum when there is one.
type Sent = ([u8; 16], Option<checksum::Digest>);

/// The source's chunks, passed on while their MD5, carried checksum and
/// count are taken: more or fewer than `len` bytes is `SizeMismatch`; an MD5
/// other than `expected`, or a checksum other than the source's, is
/// `BadDigest`, reported instead of the last chunk. The digests of a
/// complete body are left in `sent`.
struct Hashed {
    inner: ByteStream,
    hash: Md5,
    checksum: Option<(Hasher, Carry)>,
    seen: u64,
    len: u64,
    expected: Option<[u8; 16]>,
    sent: Arc<Mutex<Option<Sent>>>,
    subject: String,
    done: bool,
}

impl Hashed {
    /// All bytes seen: check the MD5 and checksum and publish them.
    fn finish(&mut self) -> Result<()> {
        let digest = match self.checksum.take() {
            Some((hasher, carry)) => {
                let d = hasher.finish();
                carry.check_read(&d, &self.subject)?;
                Some(d)
            }
            None => None,
        };
        let md5: [u8; 16] = std::mem::take(&mut self.hash).finalize().into();
        if let Some(want) = self.expected {
            if want != md5 {
                return Err(Error::new(
                    ErrorKind::Retryable,
                    BAD_DIGEST,
                    &self.subject,
                    format!(
                        "the bytes read have MD5 {}, not the source ETag {}",
                        hex::encode(md5),
                        hex::encode(want)
                    ),
                ));
            }
        }
        *self.sent.lock().unwrap_or_else(PoisonError::into_inner) = Some((md5, digest));
        Ok(())
    }

    fn mismatch(&self, what: &str) -> Error {
        Error::new(
            ErrorKind::Retryable,
            SIZE_MISMATCH,
            &self.subject,
            format!(
                "reading the object returned {what} than the expected {} bytes",
                self.len
            ),
        )
    }
}

impl Stream for Hashed {
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let item = match ready!(this.inner.as_mut().poll_next(cx)) {
            Some(Ok(chunk)) => {
                this.seen += chunk.len() as u64;
                if this.seen > this.len {
                    Err(this.mismatch("more"))
                } else {
                    this.hash.update(&chunk);
                    if let Some((h, _)) = this.checksum.as_mut() {
                        h.update(&chunk);
                    }
                    if this.seen == this.len && !chunk.is_empty() {
                        this.finish().map(|()| chunk)
                    } else {
                        Ok(chunk)
                    }
                }
            }
            Some(Err(e)) => Err(e),
            None if this.seen < this.len => Err(this.mismatch("fewer")),
            None => {
                this.done = true;
                if this.len == 0 {
                    // No chunk carried the end: check the (empty) MD5 here.
                    if let Err(e) = this.finish() {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                return Poll::Ready(None);
            }
        };
        if item.is_err() {
            // A failed body publishes no MD5 (even if its length was reached before).
            this.done = true;
            *this.sent.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        Poll::Ready(Some(item))
    }
}

/// Read a range (or the whole object) into memory, taking its MD5 (and its
/// `algorithm` checksum) as it arrives; a length other than `expected` is a
/// retryable error (the source changed).
async fn read(
    job: &Job<'_>,
    range: Option<(u64, u64)>,
    expected: u64,
    pin: Option<&str>,
    algorithm: Option<Algorithm>,
) -> Result<(Bytes, [u8; 16], Option<checksum::Digest>)> {
    let mut stream = job.src().get(job.key(), range, pin).await?;
    let mut buf = BytesMut::with_capacity(expected as usize);
    let mut hash = Md5::new();
    let mut checksum = algorithm.map(Hasher::new);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if (buf.len() + chunk.len()) as u64 > expected {
            return Err(size_mismatch(job, range, expected, "more"));
        }
        hash.update(&chunk);
        if let Some(h) = checksum.as_mut() {
            h.update(&chunk);
        }
        buf.extend_from_slice(&chunk);
    }
    if buf.len() as u64 != expected {
        return Err(size_mismatch(job, range, expected, "fewer"));
    }
    Ok((
        buf.freeze(),
        hash.finalize().into(),
        checksum.map(Hasher::finish),
    ))
}

fn size_mismatch(job: &Job<'_>, range: Option<(u64, u64)>, expected: u64, what: &str) -> Error {
    let part = match range {
        Some((a, b)) => format!("bytes {a}-{b}"),
        None => "the object".to_string(),
    };
    Error::new(
        ErrorKind::Retryable,
        SIZE_MISMATCH,
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

/// The object written must have the checksum of the bytes sent (when the
/// target keeps one), and their MD5 as ETag unless the target encrypts with
/// KMS (then its ETag is not an MD5).
async fn check_written(
    job: &Job<'_>,
    written: &Written,
    md5: &[u8; 16],
    digest: Option<&checksum::Digest>,
) -> Result<()> {
    if let (Some(d), Some(got)) = (digest, written.checksum.as_ref()) {
        if d.full().proves_equal(got) == Some(false) {
            return Err(Error::new(
                ErrorKind::Retryable,
                BAD_DIGEST,
                job.dst_subject(),
                format!(
                    "the target's checksum {} is not the {} {} of the bytes sent",
                    got.describe(),
                    d.algorithm,
                    d.base64()
                ),
            ));
        }
    }
    let etag = written.etag.as_str();
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

#[cfg(test)]
mod tests {
    //! The streamed body's checks, and downup between two real directory
    //! stores: streamed single requests, and reads that hold room in the
    //! shared buffer budget.

    use async_trait::async_trait;

    use super::*;
    use crate::checksum::Checksum;
    use crate::message::KeyItem;
    use crate::report::Outcome;
    use crate::store::dir::DirStore;
    use crate::store::{CompletedPart, Finish, ListPage, ListRequest, ObjectStore};
    use crate::transfer::{process_key, BufferPool, Ends, Mode, TransferOptions};

    fn hashed(chunks: &[&'static [u8]], len: u64, expected: Option<[u8; 16]>) -> Hashed {
        let items: Vec<Result<Bytes>> = chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
        Hashed {
            inner: Box::pin(futures::stream::iter(items)),
            hash: Md5::new(),
            checksum: None,
            seen: 0,
            len,
            expected,
            sent: Arc::default(),
            subject: "src/k".into(),
            done: false,
        }
    }

    async fn drain(h: Hashed) -> (Vec<Result<Bytes>>, Option<[u8; 16]>) {
        let sent = h.sent.clone();
        let items = h.collect::<Vec<_>>().await;
        let md5 = sent.lock().unwrap().as_ref().map(|(m, _)| *m);
        (items, md5)
    }

    #[tokio::test]
    async fn the_streamed_body_is_counted_and_hashed() {
        let md5: [u8; 16] = Md5::digest(b"hello world").into();
        let (items, sent) = drain(hashed(&[b"hello", b" ", b"world"], 11, Some(md5))).await;
        assert_eq!(items.len(), 3);
        assert!(items.iter().all(Result::is_ok));
        assert_eq!(sent, Some(md5));

        // A wrong MD5 replaces the last chunk with BadDigest: the target never gets it all.
        let (items, sent) = drain(hashed(&[b"hello", b" ", b"world"], 11, Some([0; 16]))).await;
        assert_eq!(items.len(), 3);
        let err = items[2].as_ref().unwrap_err();
        assert_eq!(err.class, BAD_DIGEST);
        assert!(err.kind.is_retryable());
        assert_eq!(sent, None);

        for (chunks, len, what) in [
            (&[b"hello".as_slice(), b" world"][..], 5, "more"),
            (&[b"hello".as_slice()][..], 11, "fewer"),
        ] {
            let (items, sent) = drain(hashed(chunks, len, None)).await;
            let err = items.last().unwrap().as_ref().unwrap_err();
            assert_eq!(err.class, SIZE_MISMATCH, "{what}");
            assert!(err.message.contains(what), "{}", err.message);
            assert_eq!(sent, None, "{what}");
        }

        let empty: [u8; 16] = Md5::digest(b"").into();
        let (items, sent) = drain(hashed(&[], 0, Some(empty))).await;
        assert!(items.is_empty());
        assert_eq!(sent, Some(empty));
    }

    /// A directory store that notes how much of a budget is free at each GET.
    #[derive(Debug)]
    struct Watched {
        inner: DirStore,
        pool: BufferPool,
        free_at_get: Mutex<Vec<u64>>,
    }

    #[async_trait]
    impl ObjectStore for Watched {
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
            self.free_at_get.lock().unwrap().push(self.pool.available());
            self.inner.get(key, range, if_match).await
        }
        async fn put(&self, key: &str, body: Bytes, opts: &PutOptions) -> Result<Written> {
            self.inner.put(key, body, opts).await
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

    #[tokio::test]
    async fn single_part_objects_stream_and_every_read_holds_room_in_the_budget() {
        const MIB: u64 = 1024 * 1024;
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let big: Vec<u8> = (0..3 * MIB + 5).map(|i| (i % 251) as u8).collect();
        std::fs::write(src.path().join("big"), &big).unwrap();
        std::fs::write(src.path().join("small"), b"abc").unwrap();
        let pool = BufferPool::new(8 * MIB);
        let source = Arc::new(Watched {
            inner: DirStore::open_existing(src.path()).unwrap(),
            pool: pool.clone(),
            free_at_get: Mutex::new(Vec::new()),
        });
        let ends = Ends {
            source: source.clone(),
            target: Arc::new(DirStore::create(dst.path()).unwrap()),
            server_side: false,
        };
        let item = |k: &str| KeyItem {
            key: k.to_string(),
            ..KeyItem::default()
        };
        let opts = TransferOptions {
            mode: Mode::Downup,
            multipart_threshold: 100 * MIB,
            part_size: MIB,
            part_concurrency: 1,
            buffers: Some(pool.clone()),
            ..TransferOptions::default()
        };
        // Streamed (larger than one part buffer), buffered (smaller): both one request.
        for (key, content) in [("big", &big[..]), ("small", b"abc")] {
            let done = process_key(&ends, &item(key), &opts).await.unwrap();
            assert_eq!(done.outcome, Outcome::Copied, "{key}");
            assert_eq!(done.note, None, "{key}: one request, no note");
            assert!(
                std::fs::read(dst.path().join(key)).unwrap() == content,
                "{key}"
            );
        }
        // Split in parts: each part's read holds room for the part.
        let parts = TransferOptions {
            multipart_threshold: MIB,
            ..opts.clone()
        };
        let done = process_key(&ends, &item("big"), &parts).await.unwrap();
        assert!(done.note.unwrap_or_default().contains("-4"));
        assert!(std::fs::read(dst.path().join("big")).unwrap() == big);

        let free = source.free_at_get.lock().unwrap().clone();
        assert_eq!(
            free,
            vec![
                6 * MIB,
                8 * MIB - 64 * 1024,
                7 * MIB,
                7 * MIB,
                7 * MIB,
                8 * MIB - 64 * 1024
            ],
            "stream window, one unit for 3 bytes, then one part of 1 MiB at a time (the last 5 bytes: one unit)"
        );
        assert_eq!(pool.available(), pool.capacity(), "all room given back");
    }
}
