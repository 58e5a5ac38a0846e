//! S3 keys → local files: keys that cannot be files are refused with a reason,
//! symbolic links are never followed, file/directory conflicts are reported,
//! and NOTHING is written outside the root (checked on the filesystem).

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use common::store::dir::DirStore;
use common::store::{CompletedPart, ListRequest, ObjectStore, PutOptions};
use common::ErrorKind;
use testsupport::stores::{list_all, read};

/// A sandbox: `<tmp>/root` is the store's root, `<tmp>/outside` is what must
/// never be touched.
struct Sandbox {
    _tmp: tempfile::TempDir,
    top: PathBuf,
    store: Arc<DirStore>,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().canonicalize().unwrap();
        std::fs::create_dir(top.join("outside")).unwrap();
        std::fs::write(top.join("outside/secret.txt"), b"secret").unwrap();
        let store = Arc::new(DirStore::create(top.join("root")).unwrap());
        Sandbox {
            _tmp: tmp,
            top,
            store,
        }
    }

    fn root(&self) -> PathBuf {
        self.top.join("root")
    }

    /// Everything under `top` except the root's subtree, relative to `top`.
    fn outside_tree(&self) -> BTreeSet<String> {
        let mut out = tree(&self.top);
        out.retain(|p| p != "root" && !p.starts_with("root/"));
        out
    }

    fn assert_outside_untouched(&self) {
        assert_eq!(
            self.outside_tree(),
            BTreeSet::from(["outside".to_string(), "outside/secret.txt".to_string()])
        );
        assert_eq!(
            std::fs::read(self.top.join("outside/secret.txt")).unwrap(),
            b"secret"
        );
    }
}

/// Every path under `dir` (hidden files included, links not followed).
fn tree(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.insert(rel);
        }
    }
    out
}

fn opts() -> PutOptions {
    PutOptions::default()
}

#[tokio::test]
async fn unmappable_keys_are_refused_with_a_reason_and_write_nothing() {
    let sb = Sandbox::new();
    let s = sb.store.as_ref();
    let long = "n".repeat(256);
    let cases: &[(&str, &str)] = &[
        ("../x", "`..`"),
        ("../outside/secret.txt", "`..`"),
        ("a/../../x", "`..`"),
        ("a/..", "`..`"),
        ("..", "`..`"),
        ("./x", "`.`"),
        ("a/./b", "`.`"),
        ("//x", "starts with `/`"),
        ("/etc/passwd", "starts with `/`"),
        ("a//b", "`//`"),
        ("a/b/", "ends with `/`"),
        ("nul\0byte", "NUL"),
        (&long, "255-byte"),
        ("", "empty"),
    ];
    for (key, reason) in cases {
        let err = s
            .put(key, Bytes::from_static(b"payload"), &opts())
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Invalid, "{key:?}: {err}");
        assert_eq!(err.class, "UnmappableKey", "{key:?}: {err}");
        assert!(err.message.contains(reason), "{key:?}: {}", err.message);
        assert!(
            err.subject.starts_with("file://"),
            "{key:?}: {}",
            err.subject
        );
        assert!(s.head(key).await.unwrap().is_none(), "{key:?}");
        assert!(s.create_multipart(key, &opts()).await.is_err(), "{key:?}");
    }
    assert!(tree(&sb.root()).is_empty(), "{:?}", tree(&sb.root()));
    sb.assert_outside_untouched();
}

#[tokio::test]
async fn too_long_paths_are_unmappable_not_fatal() {
    let sb = Sandbox::new();
    let c = "d".repeat(250);
    let key = vec![c.as_str(); 20].join("/");
    let err = sb
        .store
        .put(&key, Bytes::from_static(b"x"), &opts())
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind, err.class.as_str()),
        (ErrorKind::Invalid, "UnmappableKey"),
        "{err}"
    );
    // The store keeps working.
    sb.store
        .put("fine", Bytes::from_static(b"ok"), &opts())
        .await
        .unwrap();
    assert_eq!(read(sb.store.as_ref(), "fine", None).await, b"ok");
    sb.assert_outside_untouched();
}

#[tokio::test]
async fn symlinks_are_never_followed() {
    let sb = Sandbox::new();
    let root = sb.root();
    symlink(sb.top.join("outside"), root.join("link")).unwrap();
    symlink(sb.top.join("outside/secret.txt"), root.join("flink")).unwrap();
    std::fs::create_dir(root.join("real")).unwrap();
    symlink(sb.top.join("outside"), root.join("real/deeper")).unwrap();
    symlink(root.join("real"), root.join("inner")).unwrap();
    let s = sb.store.as_ref();

    for key in [
        "link/x",
        "link/new/dir/file",
        "flink",
        "real/deeper/secret.txt",
        "real/deeper/y",
        "inner/z",
    ] {
        let err = s
            .put(key, Bytes::from_static(b"pwned"), &opts())
            .await
            .unwrap_err();
        assert_eq!(
            (err.kind, err.class.as_str()),
            (ErrorKind::Invalid, "Symlink"),
            "{key}: {err}"
        );
        assert!(err.message.contains("symbolic link"), "{key}: {err}");
        let mp = s.create_multipart(key, &opts()).await;
        assert!(mp.is_err(), "{key}: multipart through a link");
    }
    // Reads do not follow links either.
    for key in ["link/secret.txt", "flink", "real/deeper/secret.txt"] {
        assert_eq!(s.head(key).await.unwrap_err().class, "Symlink", "{key}");
        assert_eq!(
            s.get(key, None, None).await.err().unwrap().class,
            "Symlink",
            "{key}"
        );
    }
    // Directory markers through a link are refused too.
    assert!(s.put("link/sub/", Bytes::new(), &opts()).await.is_err());
    // Listing skips links (and so never reads outside).
    s.put("real/file", Bytes::from_static(b"f"), &opts())
        .await
        .unwrap();
    let (keys, _, _) = list_all(s, ListRequest::default()).await;
    assert_eq!(keys, ["real/file"]);
    sb.assert_outside_untouched();
}

#[tokio::test]
async fn file_and_directory_conflicts_are_reported_per_key() {
    let sb = Sandbox::new();
    let s = sb.store.as_ref();
    s.put("a/b", Bytes::from_static(b"file"), &opts())
        .await
        .unwrap();
    let err = s
        .put("a/b/c", Bytes::from_static(b"under a file"), &opts())
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind, err.class.as_str()),
        (ErrorKind::Invalid, "KeyConflict"),
        "{err}"
    );
    assert!(err.message.contains("`a/b` is a file"), "{err}");
    assert!(err.subject.ends_with("/a/b/c"), "{err}");

    s.put("x/y/z", Bytes::from_static(b"deep"), &opts())
        .await
        .unwrap();
    let err = s
        .put("x/y", Bytes::from_static(b"over a dir"), &opts())
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind, err.class.as_str()),
        (ErrorKind::Invalid, "KeyConflict"),
        "{err}"
    );
    assert!(err.message.contains("`x/y` is a directory"), "{err}");
    let err = s.create_multipart("x/y", &opts()).await.unwrap_err();
    assert_eq!(err.class, "KeyConflict");

    // Nothing was lost or half-written; the run goes on with other keys.
    assert_eq!(read(s, "a/b", None).await, b"file");
    assert_eq!(read(s, "x/y/z", None).await, b"deep");
    assert!(
        s.head("x/y").await.unwrap().is_none(),
        "a directory is not an object"
    );
    assert!(s.head("a/b/c").await.unwrap().is_none());
    assert_eq!(
        tree(&sb.root()),
        BTreeSet::from(["a", "a/b", "x", "x/y", "x/y/z"].map(String::from))
    );
}

#[tokio::test]
async fn directory_markers_make_directories_and_are_not_listed() {
    let sb = Sandbox::new();
    let s = sb.store.as_ref();
    let etag = s
        .put("empty/dir/", Bytes::new(), &opts())
        .await
        .unwrap()
        .etag;
    assert_eq!(etag, "\"d41d8cd98f00b204e9800998ecf8427e\"");
    assert!(sb.root().join("empty/dir").is_dir());
    let (keys, prefixes, _) = list_all(s, ListRequest::default()).await;
    assert!(
        keys.is_empty() && prefixes.is_empty(),
        "{keys:?} {prefixes:?}"
    );
    let err = s
        .put("empty/dir", Bytes::from_static(b"x"), &opts())
        .await
        .unwrap_err();
    assert_eq!(err.class, "KeyConflict");
    s.put("f", Bytes::from_static(b"x"), &opts()).await.unwrap();
    assert_eq!(
        s.put("f/", Bytes::new(), &opts()).await.unwrap_err().class,
        "KeyConflict"
    );
}

#[tokio::test]
async fn no_temp_file_remains_and_failed_writes_leave_no_final_name() {
    let sb = Sandbox::new();
    let s = sb.store.as_ref();
    s.put("d/k", Bytes::from(vec![1u8; 3 * 1024 * 1024]), &opts())
        .await
        .unwrap();
    assert_eq!(
        tree(&sb.root()),
        BTreeSet::from(["d", "d/k"].map(String::from))
    );

    // A multipart upload whose completion fails (wrong part ETag) leaves no file
    // under the final name and no temp file; abort then removes the parts.
    let id = s.create_multipart("d/mp", &opts()).await.unwrap();
    s.upload_part("d/mp", &id, 1, Bytes::from_static(b"part one"), None, None)
        .await
        .unwrap();
    let err = s
        .complete_multipart(
            "d/mp",
            &id,
            &[CompletedPart {
                number: 1,
                etag: "\"00000000000000000000000000000000\"".into(),
                checksum: None,
            }],
            &common::store::Finish::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.class, "InvalidPart", "{err}");
    assert!(
        !sb.root().join("d/mp").exists(),
        "no partial file under the final name"
    );
    assert!(
        !tree(&sb.root()).iter().any(|p| p.contains(".s3mig-tmp-")),
        "{:?}",
        tree(&sb.root())
    );
    // Part files exist meanwhile, but listings never show them.
    let (keys, _, _) = list_all(s, ListRequest::default()).await;
    assert_eq!(keys, ["d/k"]);
    s.abort_multipart("d/mp", &id).await.unwrap();
    assert_eq!(
        tree(&sb.root()),
        BTreeSet::from(["d", "d/k"].map(String::from))
    );

    // A leftover temp file from a crash is never listed.
    std::fs::write(sb.root().join("d/.k.s3mig-tmp-0123"), b"half").unwrap();
    let (keys, _, _) = list_all(s, ListRequest::default()).await;
    assert_eq!(keys, ["d/k"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_the_old_or_the_new_file_never_a_mix() {
    let sb = Sandbox::new();
    let store = sb.store.clone();
    let len = 2 * 1024 * 1024;
    store
        .put("hot", Bytes::from(vec![b'a'; len]), &opts())
        .await
        .unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..20 {
                let byte = if i % 2 == 0 { b'b' } else { b'a' };
                store
                    .put("hot", Bytes::from(vec![byte; len]), &opts())
                    .await
                    .unwrap();
            }
        })
    };
    for _ in 0..20 {
        let body = read(store.as_ref(), "hot", None).await;
        assert_eq!(body.len(), len);
        assert!(
            body.iter().all(|b| *b == body[0]),
            "a read mixed two versions"
        );
    }
    writer.await.unwrap();
    assert_eq!(tree(&sb.root()), BTreeSet::from(["hot".to_string()]));
}

#[tokio::test]
async fn mtime_metadata_round_trips_through_a_file() {
    let sb = Sandbox::new();
    let s = sb.store.as_ref();
    let mut o = opts();
    o.attrs
        .metadata
        .insert("mtime".into(), "1234567890.5".into());
    s.put("t.json", Bytes::from_static(b"{}"), &o)
        .await
        .unwrap();
    let info = s.head("t.json").await.unwrap().unwrap();
    assert_eq!(
        info.attrs.metadata.get("mtime").map(String::as_str),
        Some("1234567890.5")
    );
    assert_eq!(info.attrs.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        info.etag, None,
        "directories keep no ETag; compute_etag makes one"
    );
    assert_eq!(s.get_tags("t.json").await.unwrap(), None);
}

#[tokio::test]
async fn sources_must_exist_and_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-dir");
    let err = DirStore::open_existing(&missing).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Input);
    assert!(err.to_string().contains("no-such-dir"), "{err}");
    assert!(!missing.exists(), "opening a source never creates it");
    std::fs::write(tmp.path().join("file"), b"x").unwrap();
    let err = DirStore::open_existing(tmp.path().join("file")).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[tokio::test]
async fn listing_a_large_flat_directory_pages_in_order() {
    let sb = Sandbox::new();
    let root = sb.root();
    let mut want = Vec::new();
    for i in 0..2500 {
        let name = format!("f{:05}", (i * 7919) % 2500);
        std::fs::write(root.join(&name), b"").unwrap();
        want.push(name);
    }
    want.sort();
    let (keys, _, pages) = list_all(
        sb.store.as_ref(),
        ListRequest {
            max_keys: Some(1000),
            ..ListRequest::default()
        },
    )
    .await;
    assert_eq!(keys, want);
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn continuation_tokens_resume_in_a_fresh_store() {
    // A token is the last key (or common prefix) returned, so any process can
    // resume a listing, not only the one holding the cached walk.
    let sb = Sandbox::new();
    for k in testsupport::stores::TREE {
        sb.store
            .put(k, Bytes::copy_from_slice(k.as_bytes()), &opts())
            .await
            .unwrap();
    }
    for delimiter in [None, Some("/".to_string())] {
        let want = list_all(
            sb.store.as_ref(),
            ListRequest {
                delimiter: delimiter.clone(),
                ..ListRequest::default()
            },
        )
        .await;
        let mut req = ListRequest {
            delimiter: delimiter.clone(),
            max_keys: Some(1),
            ..ListRequest::default()
        };
        let (mut keys, mut prefixes) = (Vec::new(), Vec::new());
        loop {
            let fresh = DirStore::open_existing(sb.root()).unwrap();
            let page = fresh.list_page(&req).await.unwrap();
            keys.extend(page.objects.into_iter().map(|o| o.key));
            prefixes.extend(page.prefixes);
            match page.next {
                Some(t) => req.continuation = Some(t),
                None => break,
            }
        }
        assert_eq!(
            (keys, prefixes),
            (want.0, want.1),
            "delimiter {delimiter:?}"
        );
    }
}
