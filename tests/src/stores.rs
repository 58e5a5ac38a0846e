//! Test support: the object-store conformance suite. One `pub async fn` per
//! behaviour, each taking any [`ObjectStore`] (fresh and empty), so S3 (moto)
//! and local directories are held to the same contract. What a backend cannot
//! do (tags and content headers on directories, 1,024-byte keys in one path
//! component) is decided by [`Caps::of`], never skipped silently.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use common::store::etag::{compute_etag, multipart_etag};
use common::store::{CopyWrite, DeleteIf, Finish, ListRequest, ObjectStore, PutOptions};
use common::ErrorKind;
use futures::StreamExt;
use md5::{Digest, Md5};

/// S3's smallest non-last part: the multipart tests use it on every store.
pub const MIB5: usize = 5 * 1024 * 1024;

/// What a backend supports, so shared tests assert the right thing for each.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Tags and content headers are stored (S3) or dropped (directories).
    pub attrs: bool,
}

impl Caps {
    /// The capabilities of `store`.
    pub fn of(store: &dyn ObjectStore) -> Caps {
        Caps {
            attrs: store.capabilities().object_attrs,
        }
    }
}

/// Deterministic pseudo-random bytes (so a failure is reproducible).
pub fn data(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9E37_79B9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// The quoted MD5 ETag of `bytes`.
pub fn md5_etag(bytes: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(bytes)))
}

/// Read a whole object (or a range) into memory.
pub async fn read(store: &dyn ObjectStore, key: &str, range: Option<(u64, u64)>) -> Vec<u8> {
    let mut body = store
        .get(key, range, None)
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"));
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.unwrap_or_else(|e| panic!("read {key}: {e}")));
    }
    out
}

/// Every key and common prefix of a listing, following continuation tokens,
/// with the number of pages it took.
pub async fn list_all(
    store: &dyn ObjectStore,
    req: ListRequest,
) -> (Vec<String>, Vec<String>, usize) {
    let mut req = req;
    let (mut keys, mut prefixes, mut pages) = (Vec::new(), Vec::new(), 0);
    loop {
        let page = store
            .list_page(&req)
            .await
            .unwrap_or_else(|e| panic!("list {req:?}: {e}"));
        pages += 1;
        keys.extend(page.objects.into_iter().map(|o| o.key));
        prefixes.extend(page.prefixes);
        match page.next {
            Some(t) => req.continuation = Some(t),
            None => break,
        }
        assert!(pages < 10_000, "listing does not end");
    }
    (keys, prefixes, pages)
}

async fn put(store: &dyn ObjectStore, key: &str, body: &[u8]) -> String {
    store
        .put(key, Bytes::copy_from_slice(body), &PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"))
        .etag
}

/// put → head → get of a zero-byte, a tiny and a 1 MiB + 7 object: sizes,
/// bytes, and ETags (returned by put, by HEAD on S3, computed by compute_etag).
pub async fn round_trip(store: Arc<dyn ObjectStore>) {
    let s = store.as_ref();
    for (key, len) in [
        ("zero", 0usize),
        ("dir/one", 1),
        ("dir/sub/big.bin", 1024 * 1024 + 7),
    ] {
        let body = data(len, len as u8);
        let etag = put(s, key, &body).await;
        assert_eq!(etag, md5_etag(&body), "{key}: put returns the MD5 ETag");
        let info = s.head(key).await.unwrap().expect("head after put");
        assert_eq!(info.key, key);
        assert_eq!(info.size, len as u64, "{key}");
        assert!(info.last_modified.is_some(), "{key}: last_modified");
        if let Some(e) = &info.etag {
            assert_eq!(e, &etag, "{key}: HEAD ETag keeps S3's quotes");
        }
        assert_eq!(read(s, key, None).await, body, "{key}: bytes");
        assert_eq!(compute_etag(s, key, &[]).await.unwrap(), etag, "{key}");
    }
    // Overwrite is atomic and complete: the new content, nothing of the old.
    let etag = put(s, "dir/one", b"second").await;
    assert_eq!(read(s, "dir/one", None).await, b"second");
    assert_eq!(etag, md5_etag(b"second"));
    assert!(s.head("missing").await.unwrap().is_none());
    let err = s
        .get("missing", None, None)
        .await
        .err()
        .expect("get of a missing key fails");
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    assert!(
        err.subject.contains("missing"),
        "error names the key: {err}"
    );
}

/// Inclusive byte ranges, a range running past the end (clamped, as S3 does),
/// and a range starting past the end (an error).
pub async fn ranges(store: Arc<dyn ObjectStore>) {
    let s = store.as_ref();
    let body = data(100, 7);
    put(s, "r", &body).await;
    assert_eq!(read(s, "r", Some((0, 0))).await, &body[..1]);
    assert_eq!(read(s, "r", Some((10, 19))).await, &body[10..20]);
    assert_eq!(read(s, "r", Some((90, 199))).await, &body[90..]);
    assert_eq!(read(s, "r", Some((0, 99))).await, body);
    let err = s
        .get("r", Some((100, 120)), None)
        .await
        .err()
        .expect("range past the end fails");
    assert!(!err.kind.is_retryable(), "{err}");
}

/// Content headers, user metadata and tags survive on S3; on a directory, tags
/// read as `None`, writing them is a no-op, and the `mtime` metadata becomes the
/// file's modification time. Both report `mtime` back unchanged.
pub async fn attrs(store: Arc<dyn ObjectStore>) {
    let s = store.as_ref();
    let caps = Caps::of(s);
    let mut opts = PutOptions::default();
    opts.attrs.content_type = Some("text/plain; charset=utf-8".into());
    opts.attrs.cache_control = Some("max-age=60".into());
    opts.attrs.content_disposition = Some("attachment; filename=\"x.txt\"".into());
    opts.attrs
        .metadata
        .insert("mtime".into(), "1600000000".into());
    opts.attrs.metadata.insert("owner".into(), "team a".into());
    opts.tags = Some(vec![
        ("env".into(), "prod test".into()),
        ("k=+".into(), "v/+ :@".into()),
    ]);
    s.put("doc.txt", Bytes::from_static(b"hello"), &opts)
        .await
        .unwrap();
    let info = s.head("doc.txt").await.unwrap().unwrap();
    assert_eq!(
        info.attrs.metadata.get("mtime").map(String::as_str),
        Some("1600000000")
    );
    let tags = s.get_tags("doc.txt").await.unwrap();
    if caps.attrs {
        assert_eq!(info.attrs.content_type, opts.attrs.content_type);
        assert_eq!(info.attrs.cache_control, opts.attrs.cache_control);
        assert_eq!(
            info.attrs.content_disposition,
            opts.attrs.content_disposition
        );
        assert_eq!(info.attrs.metadata, opts.attrs.metadata);
        let mut tags = tags.expect("S3 has tags");
        tags.sort();
        let mut want = opts.tags.clone().unwrap();
        want.sort();
        assert_eq!(tags, want);
        s.put_tags("doc.txt", &[("a".into(), "1".into())])
            .await
            .unwrap();
        assert_eq!(
            s.get_tags("doc.txt").await.unwrap(),
            Some(vec![("a".into(), "1".into())])
        );
    } else {
        assert_eq!(tags, None, "directories have no tags");
        s.put_tags("doc.txt", &[("a".into(), "1".into())])
            .await
            .unwrap();
        // Guessed from the extension, so Directory → S3 gets a content type.
        assert_eq!(info.attrs.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            info.last_modified.map(|t| t.timestamp()),
            Some(1_600_000_000),
            "mtime metadata sets the file's modification time"
        );
    }
}

/// The keys [`tricky_keys`] writes for a store: spaces, `+`, `%`, `?`, `#`,
/// unicode, and a 1,024-byte key (one component on S3; 255-byte components on
/// a directory, whose names are limited per component).
pub fn tricky_key_set(caps: Caps) -> Vec<String> {
    let mut keys: Vec<String> = [
        "t/sp ace",
        "t/plus+sign",
        "t/a+b c",
        "t/pct%20x",
        "t/pct%2Bliteral",
        "t/q?mark",
        "t/hash#tag",
        "t/amp&eq=",
        "t/unicodé/日本語/ü",
        "t/tilde~star*",
        "t/.hidden",
        "t/..dots",
        "t/trailing space ",
    ]
    .iter()
    .map(|k| k.to_string())
    .collect();
    if caps.attrs {
        keys.push(format!("t/{}", "k".repeat(1022)));
    } else {
        let c = "k".repeat(255);
        let mut long = format!("t/{c}/{c}/{c}/");
        long.push_str(&"k".repeat(1024 - long.len()));
        keys.push(long);
    }
    keys
}

/// Every tricky key round-trips exactly: put, head, get, and one listing that
/// returns each key once, byte for byte.
pub async fn tricky_keys(store: Arc<dyn ObjectStore>) {
    let s = store.as_ref();
    let keys = tricky_key_set(Caps::of(s));
    for (i, key) in keys.iter().enumerate() {
        assert!(key.len() <= 1024, "{key}");
        let body = format!("body of {i}");
        put(s, key, body.as_bytes()).await;
        assert_eq!(
            s.head(key).await.unwrap().map(|h| h.size),
            Some(body.len() as u64),
            "{key}"
        );
        assert_eq!(read(s, key, None).await, body.as_bytes(), "{key}");
    }
    let (listed, _, _) = list_all(
        s,
        ListRequest {
            prefix: "t/".into(),
            ..ListRequest::default()
        },
    )
    .await;
    let mut want = keys.clone();
    want.sort();
    assert_eq!(
        listed, want,
        "listing returns every key exactly, in byte order"
    );
    // Paging one key at a time resumes exactly after tricky keys too.
    let (paged, _, pages) = list_all(
        s,
        ListRequest {
            prefix: "t/".into(),
            max_keys: Some(1),
            ..ListRequest::default()
        },
    )
    .await;
    assert_eq!(paged, want);
    assert_eq!(pages, want.len());
}

/// A tree whose byte order differs from a naive directory walk
/// (`a.txt` < `a/…` < `a0`), used by [`listing`].
pub const TREE: &[&str] = &[
    "a-b/x", "a.txt", "a/b", "a/c/d", "a/c/e", "a/c.txt", "a0", "b", "c/d/e/f", "c/d/e0", "z",
];

/// Listing order, paging, delimiter, prefix and start_after: every key exactly
/// once, in byte order, whatever the page size.
pub async fn listing(store: Arc<dyn ObjectStore>) {
    let s = store.as_ref();
    for k in TREE {
        put(s, k, k.as_bytes()).await;
    }
    let mut sorted: Vec<String> = TREE.iter().map(|k| k.to_string()).collect();
    sorted.sort();
    let all = |max: Option<i32>| ListRequest {
        max_keys: max,
        ..ListRequest::default()
    };
    let (keys, prefixes, _) = list_all(s, all(None)).await;
    assert_eq!(keys, sorted);
    assert!(prefixes.is_empty());
    for max in [1, 2, 3, 5, 1000] {
        let (keys, _, pages) = list_all(s, all(Some(max))).await;
        assert_eq!(keys, sorted, "max_keys {max}");
        assert_eq!(
            pages,
            sorted.len().div_ceil(max as usize).max(1),
            "max_keys {max}"
        );
    }
    let page = s.list_page(&all(None)).await.unwrap();
    assert!(page.next.is_none());
    for o in &page.objects {
        assert_eq!(o.size, o.key.len() as u64, "{}", o.key);
    }

    // Delimiter: at the root, then inside a prefix; paged one entry at a time too.
    let delim = |prefix: &str, max: Option<i32>| ListRequest {
        prefix: prefix.into(),
        delimiter: Some("/".into()),
        max_keys: max,
        ..ListRequest::default()
    };
    for max in [None, Some(1), Some(2)] {
        let (keys, prefixes, _) = list_all(s, delim("", max)).await;
        assert_eq!(keys, ["a.txt", "a0", "b", "z"], "max {max:?}");
        assert_eq!(prefixes, ["a-b/", "a/", "c/"], "max {max:?}");
        let (keys, prefixes, _) = list_all(s, delim("a/", max)).await;
        assert_eq!(keys, ["a/b", "a/c.txt"], "max {max:?}");
        assert_eq!(prefixes, ["a/c/"], "max {max:?}");
    }
    // A prefix ending mid-name.
    let (keys, prefixes, _) = list_all(s, delim("a", None)).await;
    assert_eq!(keys, ["a.txt", "a0"]);
    assert_eq!(prefixes, ["a-b/", "a/"]);
    let (keys, _, _) = list_all(
        s,
        ListRequest {
            prefix: "c/d/e".into(),
            ..ListRequest::default()
        },
    )
    .await;
    assert_eq!(keys, ["c/d/e/f", "c/d/e0"]);

    // start_after: strictly after, including values that are not keys.
    for after in ["a/b", "a/", "a/c", "a/c/zzz", "a.txt", "", "b", "zz"] {
        let want: Vec<_> = sorted
            .iter()
            .filter(|k| k.as_str() > after)
            .cloned()
            .collect();
        for max in [None, Some(2)] {
            let (keys, _, _) = list_all(
                s,
                ListRequest {
                    start_after: Some(after.into()),
                    max_keys: max,
                    ..ListRequest::default()
                },
            )
            .await;
            assert_eq!(keys, want, "start_after {after:?} max {max:?}");
        }
    }
    // start_after with a delimiter: like keys, a common prefix is returned only
    // when it sorts after start_after (as S3 and moto do).
    for (after, want_keys, want_prefixes) in [
        ("a/b", vec!["a0", "b", "z"], vec!["c/"]),
        ("a/", vec!["a0", "b", "z"], vec!["c/"]),
        ("a-b/", vec!["a.txt", "a0", "b", "z"], vec!["a/", "c/"]),
        ("a", vec!["a.txt", "a0", "b", "z"], vec!["a-b/", "a/", "c/"]),
    ] {
        for max in [None, Some(1)] {
            let (keys, prefixes, _) = list_all(
                s,
                ListRequest {
                    start_after: Some(after.into()),
                    ..delim("", max)
                },
            )
            .await;
            assert_eq!(keys, want_keys, "start_after {after:?} max {max:?}");
            assert_eq!(prefixes, want_prefixes, "start_after {after:?} max {max:?}");
        }
    }
    // Keys seen across all listings: each once.
    let set: BTreeSet<_> = list_all(s, all(Some(4))).await.0.into_iter().collect();
    assert_eq!(set.len(), TREE.len());
}

/// Upload three parts (5 MiB, 5 MiB, 1 MiB + 3) out of order, complete, and
/// check bytes and the `-3` ETag (returned, computed from the part MD5s, and
/// recomputed from the stored object with the part layout). Returns the ETag.
pub async fn multipart(store: Arc<dyn ObjectStore>) -> String {
    let s = store.as_ref();
    let key = "mp/object.bin";
    let sizes = [MIB5, MIB5, 1024 * 1024 + 3];
    let parts: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, n)| data(*n, i as u8 + 1))
        .collect();
    let mut opts = PutOptions::default();
    opts.attrs
        .metadata
        .insert("mtime".into(), "1500000000".into());
    let id = s.create_multipart(key, &opts).await.unwrap();
    let mut done = Vec::new();
    for i in [1usize, 0, 2] {
        let part = s
            .upload_part(
                key,
                &id,
                i as i32 + 1,
                Bytes::from(parts[i].clone()),
                None,
                None,
            )
            .await
            .unwrap();
        assert_eq!(part.etag, md5_etag(&parts[i]), "part {}", i + 1);
        assert_eq!(part.number, i as i32 + 1);
        done.push(part);
    }
    done.sort_by_key(|p| p.number);
    let etag = s
        .complete_multipart(key, &id, &done, &Finish::default())
        .await
        .unwrap()
        .etag;
    let digests: Vec<[u8; 16]> = parts.iter().map(|p| Md5::digest(p).into()).collect();
    assert_eq!(etag, multipart_etag(&digests));
    assert!(etag.ends_with("-3\""), "{etag}");
    let whole: Vec<u8> = parts.concat();
    let info = s.head(key).await.unwrap().unwrap();
    assert_eq!(info.size, whole.len() as u64);
    assert_eq!(
        info.attrs.metadata.get("mtime").map(String::as_str),
        Some("1500000000")
    );
    assert!(read(s, key, None).await == whole, "multipart bytes");
    let layout: Vec<u64> = sizes.iter().map(|n| *n as u64).collect();
    assert_eq!(compute_etag(s, key, &layout).await.unwrap(), etag);
    assert_eq!(compute_etag(s, key, &[]).await.unwrap(), md5_etag(&whole));
    // Nothing but the object is listed (no part or temp files).
    let (keys, _, _) = list_all(s, ListRequest::default()).await;
    assert_eq!(keys, [key]);
    etag
}

/// A part sent with its MD5 is stored; a part whose bytes do not have the MD5
/// given is refused as `BadDigest` (retryable), and the upload still completes
/// with the good parts only.
pub async fn part_md5_is_checked(store: Arc<dyn ObjectStore>) {
    let s = store.as_ref();
    let key = "md5/part.bin";
    let body = data(1024, 3);
    let good: [u8; 16] = Md5::digest(&body).into();
    let id = s
        .create_multipart(key, &PutOptions::default())
        .await
        .unwrap();
    let mut wrong = good;
    wrong[0] ^= 0xff;
    let err = s
        .upload_part(key, &id, 1, Bytes::from(body.clone()), Some(&wrong), None)
        .await
        .expect_err("a body that does not have the given MD5 is refused");
    assert_eq!(
        (err.kind, err.class.as_str()),
        (common::ErrorKind::Retryable, "BadDigest"),
        "{err}"
    );
    let part = s
        .upload_part(key, &id, 1, Bytes::from(body.clone()), Some(&good), None)
        .await
        .unwrap();
    assert_eq!(part.etag, md5_etag(&body));
    s.complete_multipart(key, &id, &[part], &Finish::default())
        .await
        .unwrap();
    assert!(read(s, key, None).await == body, "the good part's bytes");
}

/// What a store says it can do matches what it does: server-side copy and
/// upload listing either work or are refused as `Unsupported`.
pub async fn capabilities_hold(store: Arc<dyn ObjectStore>) {
    let s = store.as_ref();
    let caps = s.capabilities();
    s.put(
        "cap/src",
        Bytes::from_static(b"abc"),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    let name = s.copy_source_name().map(str::to_string);
    assert_eq!(name.is_some(), caps.server_side_copy, "{caps:?}");
    let src = common::store::CopySource {
        bucket: name.as_deref().unwrap_or("none"),
        key: "cap/src",
        version_id: None,
        if_match: None,
    };
    let copied = s
        .copy_object(&src, "cap/dst", None, &CopyWrite::default())
        .await;
    let listed = s.list_uploads("cap/").await;
    if caps.server_side_copy {
        copied.unwrap();
        assert!(read(s, "cap/dst", None).await == b"abc");
    } else {
        assert_eq!(copied.unwrap_err().class, "Unsupported");
    }
    if caps.lists_uploads {
        assert!(listed.unwrap().is_empty());
    } else {
        assert_eq!(listed.unwrap_err().class, "Unsupported");
    }
}

/// An aborted upload leaves no object and no listed key; aborting twice is fine.
pub async fn abort_leaves_nothing(store: Arc<dyn ObjectStore>) {
    let s = store.as_ref();
    let key = "ab/partial.bin";
    let id = s
        .create_multipart(key, &PutOptions::default())
        .await
        .unwrap();
    s.upload_part(key, &id, 1, Bytes::from(data(MIB5, 9)), None, None)
        .await
        .unwrap();
    s.abort_multipart(key, &id).await.unwrap();
    s.abort_multipart(key, &id).await.unwrap();
    assert!(s.head(key).await.unwrap().is_none());
    let (keys, _, _) = list_all(s, ListRequest::default()).await;
    assert!(keys.is_empty(), "{keys:?}");
    let late = s
        .upload_part(key, &id, 2, Bytes::from_static(b"late"), None, None)
        .await;
    let err = late.expect_err("upload to an aborted upload fails");
    // AWS answers NoSuchUpload (404); moto answers HTTP 500, so only directories
    // can be held to NotFound here.
    if !Caps::of(s).attrs {
        assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    }
}

/// GetObject If-Match: the right ETag streams, a wrong one is PreconditionFailed.
pub async fn get_if_match(store: Arc<dyn ObjectStore>) {
    let s = store.as_ref();
    let etag = put(s, "m", b"versioned").await;
    let mut body = s.get("m", None, Some(&etag)).await.unwrap();
    let mut got = Vec::new();
    while let Some(c) = body.next().await {
        got.extend_from_slice(&c.unwrap());
    }
    assert_eq!(got, b"versioned");
    let err = s
        .get("m", None, Some("\"0123456789abcdef0123456789abcdef\""))
        .await
        .err()
        .expect("wrong If-Match fails");
    assert_eq!(err.kind, ErrorKind::PreconditionFailed, "{err}");
}

/// A zero-byte key ending in `/` (a "directory marker") is accepted; content
/// under such a key is refused on directories (a file name cannot end in `/`).
pub async fn dir_markers(store: Arc<dyn ObjectStore>) {
    let s = store.as_ref();
    put(s, "folder/", b"").await;
    put(s, "folder/inside", b"x").await;
    let caps = Caps::of(s);
    let with_content = s
        .put(
            "other/",
            Bytes::from_static(b"data"),
            &PutOptions::default(),
        )
        .await;
    if caps.attrs {
        assert!(with_content.is_ok());
    } else {
        let err = with_content.unwrap_err();
        assert_eq!(
            (err.kind, err.class.as_str()),
            (ErrorKind::Invalid, "UnmappableKey")
        );
        assert!(err.message.contains("ends with `/`"), "{err}");
    }
    assert_eq!(read(s, "folder/inside", None).await, b"x");
}

/// A put whose body does not have the full-object checksum given is refused
/// as `BadDigest` (retryable) and stores nothing; the right value is stored.
pub async fn put_checksum_is_checked(store: Arc<dyn ObjectStore>) {
    use common::checksum::{digest, Algorithm, Checksum};
    use common::store::WriteChecksum;
    let s = store.as_ref();
    let key = "ck/put.bin";
    let body = data(70_000, 5);
    let right = digest(Algorithm::Crc32c, &body).full();
    let wrong = digest(Algorithm::Crc32c, b"other bytes").full();
    assert_ne!(right, wrong);
    let opts = |c: Checksum| PutOptions {
        checksum: Some(WriteChecksum::Value(c)),
        ..PutOptions::default()
    };
    let err = s
        .put(key, Bytes::from(body.clone()), &opts(wrong))
        .await
        .expect_err("a body without the checksum given is refused");
    assert_eq!(
        (err.kind, err.class.as_str()),
        (ErrorKind::Retryable, "BadDigest"),
        "{err}"
    );
    assert!(s.head(key).await.unwrap().is_none(), "nothing stored");
    s.put(key, Bytes::from(body.clone()), &opts(right))
        .await
        .unwrap();
    assert!(read(s, key, None).await == body);
}

/// `if_none_match`: a put onto an existing key fails with class
/// `TargetExists` and leaves the object as it was; onto a new key it writes.
pub async fn if_none_match_keeps_the_existing_object(store: Arc<dyn ObjectStore>) {
    let s = store.as_ref();
    let etag = put(s, "inm/k", b"first").await;
    let opts = PutOptions {
        if_none_match: true,
        ..PutOptions::default()
    };
    let err = s
        .put("inm/k", Bytes::from_static(b"second"), &opts)
        .await
        .expect_err("an existing key is not overwritten");
    assert_eq!(err.class, common::store::TARGET_EXISTS, "{err}");
    assert_eq!(read(s, "inm/k", None).await, b"first");
    // Directories give no ETag at HEAD; S3 stores the one of the first write.
    if let Some(now) = s.head("inm/k").await.unwrap().unwrap().etag {
        assert_eq!(now, etag);
    }
    s.put("inm/new", Bytes::from_static(b"new"), &opts)
        .await
        .unwrap();
    assert_eq!(read(s, "inm/new", None).await, b"new");
}

/// The listing facts of `key` (as `commander run --sync --delete` sends
/// them), or `None` when the listing does not show it.
pub async fn listed_facts(store: &dyn ObjectStore, key: &str) -> Option<DeleteIf> {
    let req = ListRequest {
        prefix: key.to_string(),
        ..ListRequest::default()
    };
    let page = store
        .list_page(&req)
        .await
        .unwrap_or_else(|e| panic!("list {key}: {e}"));
    page.objects
        .into_iter()
        .find(|o| o.key == key)
        .map(|o| DeleteIf {
            etag: o.etag,
            size: o.size,
            last_modified: o.last_modified,
        })
}

/// `delete_if`: the listed object is deleted; one rewritten since it was
/// listed (same size, other bytes) is kept (`Changed`, saying what differs)
/// with its new bytes; a key deleted already, or never written, is `Gone`;
/// a neighbouring key is never touched. Facts without an ETag (as s3s-fs
/// lists) are compared by the store itself before an unconditional delete.
/// Returns whether the delete of the listed object was conditional (the
/// store's own `If-Match`), which only the caller knows to expect.
pub async fn delete_if(store: Arc<dyn ObjectStore>) -> bool {
    use common::store::Deletion;
    let s = store.as_ref();
    put(s, "del/a", b"listed").await;
    put(s, "del/a0", b"neighbour").await;
    put(s, "del/b", b"before").await;
    put(s, "del/c", b"no etag listed").await;
    let a = listed_facts(s, "del/a").await.expect("del/a listed");
    let b = listed_facts(s, "del/b").await.expect("del/b listed");
    let c = listed_facts(s, "del/c").await.expect("del/c listed");

    let conditional = match s.delete_if("del/a", &a).await.unwrap() {
        Deletion::Deleted { conditional } => conditional,
        other => panic!("the listed object is deleted: {other:?}"),
    };
    assert!(s.head("del/a").await.unwrap().is_none(), "del/a is gone");
    assert_eq!(read(s, "del/a0", None).await, b"neighbour");
    assert_eq!(
        s.delete_if("del/a", &a).await.unwrap(),
        Deletion::Gone,
        "deleted already"
    );
    assert_eq!(
        s.delete_if("del/never", &a).await.unwrap(),
        Deletion::Gone,
        "never written"
    );

    // Rewritten after the listing: same size, other bytes (and a later mtime).
    std::thread::sleep(std::time::Duration::from_millis(20));
    put(s, "del/b", b"AFTER!").await;
    match s.delete_if("del/b", &b).await.unwrap() {
        Deletion::Changed(what) => assert!(
            what.contains("ETag") || what.contains("last modified"),
            "{what}"
        ),
        other => panic!("a rewritten object is kept: {other:?}"),
    }
    assert_eq!(read(s, "del/b", None).await, b"AFTER!");

    let no_etag = DeleteIf { etag: None, ..c };
    assert_eq!(
        s.delete_if("del/c", &no_etag).await.unwrap(),
        Deletion::Deleted { conditional: false },
        "without a listed ETag the store compares, then deletes"
    );
    assert!(s.head("del/c").await.unwrap().is_none());
    let (keys, _, _) = list_all(
        s,
        ListRequest {
            prefix: "del/".into(),
            ..ListRequest::default()
        },
    )
    .await;
    assert_eq!(keys, ["del/a0", "del/b"]);
    conditional
}
