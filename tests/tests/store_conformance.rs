//! The object-store conformance suite (tests/src/stores.rs) run against S3Store
//! on both S3 test servers, moto and LocalStack (a fresh bucket per test), and
//! DirStore (a fresh temp directory per test), plus the S3-only server-side
//! copy and error mapping on both servers. Each test is a module whose cases
//! are named after the backend (`moto`, `localstack`, `dir`).

use std::sync::Arc;

use bytes::Bytes;
use common::store::dir::DirStore;
use common::store::s3::S3Store;
use common::store::{CopySource, CopyWrite, Finish, ListRequest, ObjectStore, PutOptions};
use common::ErrorKind;
use testsupport::{stores, Server};

async fn s3_store(server: Server) -> Arc<dyn ObjectStore> {
    let bucket = server.bucket("conf").await;
    Arc::new(S3Store::new(server.s3(), bucket))
}

fn dir_store() -> (tempfile::TempDir, Arc<dyn ObjectStore>) {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::create(tmp.path().join("root")).unwrap();
    (tmp, Arc::new(store))
}

/// One behaviour of the suite, run on every backend.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            use testsupport::Server;
            #[tokio::test]
            async fn moto() {
                testsupport::stores::$name(super::s3_store(Server::Moto).await).await;
            }
            #[tokio::test]
            async fn localstack() {
                let Some(server) = Server::localstack() else {
                    return;
                };
                testsupport::stores::$name(super::s3_store(server).await).await;
            }
            #[tokio::test]
            async fn dir() {
                let (_tmp, store) = super::dir_store();
                testsupport::stores::$name(store).await;
            }
        }
    };
}

/// The integrity option of UploadPart, on the backends that check
/// Content-MD5: LocalStack (as AWS) and directories. moto ignores the header
/// (it stores the damaged part), so it is not held to this.
mod part_md5_is_checked {
    use testsupport::Server;
    #[tokio::test]
    async fn localstack() {
        let Some(server) = Server::localstack() else {
            return;
        };
        testsupport::stores::part_md5_is_checked(super::s3_store(server).await).await;
    }
    #[tokio::test]
    async fn dir() {
        let (_tmp, store) = super::dir_store();
        testsupport::stores::part_md5_is_checked(store).await;
    }
}

/// A full-object checksum given with a put is checked, on the backends that
/// check it: LocalStack (as AWS) and directories. moto does not validate
/// checksums (it stores a body whatever value came with it), so it is not
/// held to this.
mod put_checksum_is_checked {
    use testsupport::Server;
    #[tokio::test]
    async fn localstack() {
        let Some(server) = Server::localstack() else {
            return;
        };
        testsupport::stores::put_checksum_is_checked(super::s3_store(server).await).await;
    }
    #[tokio::test]
    async fn dir() {
        let (_tmp, store) = super::dir_store();
        testsupport::stores::put_checksum_is_checked(store).await;
    }
}

/// Conditional deletes (`--sync --delete`) on every backend. moto honours
/// `If-Match` on DeleteObject (the delete is the store's own condition);
/// LocalStack 2026.3.0 answers 501, so the store compares by HEAD first; a
/// directory always compares just before the unlink.
mod delete_if {
    use testsupport::Server;
    #[tokio::test]
    async fn moto() {
        let store = super::s3_store(Server::Moto).await;
        assert!(testsupport::stores::delete_if(store).await, "If-Match used");
    }
    #[tokio::test]
    async fn localstack() {
        let Some(server) = Server::localstack() else {
            return;
        };
        let store = super::s3_store(server).await;
        assert!(
            !testsupport::stores::delete_if(store).await,
            "501 on If-Match: compared by HEAD"
        );
    }
    #[tokio::test]
    async fn dir() {
        let (_tmp, store) = super::dir_store();
        assert!(!testsupport::stores::delete_if(store).await);
    }
}

/// An S3-only test (`async fn $name(server: Server)`), run on both S3 servers.
macro_rules! on_s3 {
    ($name:ident) => {
        mod $name {
            use testsupport::Server;
            #[tokio::test]
            async fn moto() {
                super::$name(Server::Moto).await;
            }
            #[tokio::test]
            async fn localstack() {
                if let Some(server) = Server::localstack() {
                    super::$name(server).await;
                }
            }
        }
    };
}

both!(round_trip);
both!(ranges);
both!(attrs);
both!(tricky_keys);
both!(listing);
both!(abort_leaves_nothing);
both!(dir_markers);
both!(get_if_match);
both!(multipart);
both!(capabilities_hold);
both!(if_none_match_keeps_the_existing_object);

on_s3!(multipart_etag_is_the_same_on_s3_and_a_directory);
async fn multipart_etag_is_the_same_on_s3_and_a_directory(server: Server) {
    let (_tmp, dir) = dir_store();
    let from_dir = stores::multipart(dir).await;
    let from_s3 = stores::multipart(s3_store(server).await).await;
    assert_eq!(from_dir, from_s3);
    assert!(from_s3.ends_with("-3\""));
}

/// The bucket a server-side copy reads `store` by.
fn bucket(store: &Arc<dyn ObjectStore>) -> &str {
    store
        .copy_source_name()
        .expect("an S3 store is a copy source")
}

fn src<'a>(bucket: &'a str, key: &'a str) -> CopySource<'a> {
    CopySource {
        bucket,
        key,
        version_id: None,
        if_match: None,
    }
}

on_s3!(copy_object_with_copy_directives_keeps_metadata_and_tags);
async fn copy_object_with_copy_directives_keeps_metadata_and_tags(server: Server) {
    let store = s3_store(server).await;
    let key = "src dir/ünï+%#?.txt";
    let mut opts = PutOptions::default();
    opts.attrs.content_type = Some("text/markdown".into());
    opts.attrs.metadata.insert("color".into(), "blue".into());
    opts.tags = Some(vec![("team".into(), "a b".into())]);
    let etag = store
        .put(key, Bytes::from_static(b"copy me"), &opts)
        .await
        .unwrap()
        .etag;

    let new = store
        .copy_object(
            &src(bucket(&store), key),
            "dst/copy+1",
            None,
            &CopyWrite::default(),
        )
        .await
        .unwrap()
        .etag;
    assert_eq!(new, etag, "a single-part copy keeps the MD5 ETag");
    let info = store.head("dst/copy+1").await.unwrap().unwrap();
    assert_eq!(info.attrs.content_type.as_deref(), Some("text/markdown"));
    assert_eq!(info.attrs.metadata, opts.attrs.metadata);
    assert_eq!(
        store.get_tags("dst/copy+1").await.unwrap(),
        Some(vec![("team".into(), "a b".into())])
    );

    // REPLACE: the given attributes and tags, nothing of the source's.
    let mut replaced = PutOptions::default();
    replaced.attrs.metadata.insert("color".into(), "red".into());
    replaced.tags = Some(vec![("x".into(), "1".into())]);
    replaced.storage_class = Some("STANDARD_IA".into());
    store
        .copy_object(
            &src(bucket(&store), key),
            "dst/replaced",
            Some(&replaced),
            &CopyWrite::default(),
        )
        .await
        .unwrap();
    let info = store.head("dst/replaced").await.unwrap().unwrap();
    assert_eq!(
        info.attrs.metadata.get("color").map(String::as_str),
        Some("red")
    );
    assert_eq!(info.storage_class.as_deref(), Some("STANDARD_IA"));
    assert_eq!(
        store.get_tags("dst/replaced").await.unwrap(),
        Some(vec![("x".into(), "1".into())])
    );

    // Across buckets, with the storage class given separately.
    let other = s3_store(server).await;
    other
        .copy_object(
            &src(bucket(&store), key),
            key,
            None,
            &CopyWrite {
                storage_class: Some("STANDARD_IA"),
                ..CopyWrite::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(stores::read(other.as_ref(), key, None).await, b"copy me");
    let info = other.head(key).await.unwrap().unwrap();
    assert_eq!(info.storage_class.as_deref(), Some("STANDARD_IA"));
}

on_s3!(copy_of_a_missing_source_is_not_found_naming_the_source);
async fn copy_of_a_missing_source_is_not_found_naming_the_source(server: Server) {
    let store = s3_store(server).await;
    let err = store
        .copy_object(
            &src(bucket(&store), "no such key"),
            "dst",
            None,
            &CopyWrite::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    assert_eq!(err.subject, format!("s3://{}/no such key", bucket(&store)));
}

on_s3!(upload_part_copy_with_the_source_layout_reproduces_the_etag);
async fn upload_part_copy_with_the_source_layout_reproduces_the_etag(server: Server) {
    let store = s3_store(server).await;
    let etag = stores::multipart(store.clone()).await;
    let key = "mp/object.bin";
    let info = store.head(key).await.unwrap().unwrap();
    assert_eq!(info.etag.as_deref(), Some(etag.as_str()));
    assert_eq!(info.parts_count, Some(3));
    let mut sizes = Vec::new();
    for n in 1..=3 {
        sizes.push(store.part_size(key, n).await.unwrap());
    }
    assert_eq!(
        sizes,
        [stores::MIB5 as u64, stores::MIB5 as u64, 1024 * 1024 + 3]
    );

    let id = store
        .create_multipart("copy/of object", &PutOptions::default())
        .await
        .unwrap();
    let mut parts = Vec::new();
    let mut start = 0u64;
    for (i, size) in sizes.iter().enumerate() {
        let number = i as i32 + 1;
        let part = store
            .upload_part_copy(
                &src(bucket(&store), key),
                "copy/of object",
                &id,
                number,
                (start, start + size - 1),
            )
            .await
            .unwrap();
        assert_eq!(part.number, number);
        parts.push(part);
        start += size;
    }
    let copied = store
        .complete_multipart("copy/of object", &id, &parts, &Finish::default())
        .await
        .unwrap()
        .etag;
    assert_eq!(copied, etag);
    assert_eq!(
        store.head("copy/of object").await.unwrap().unwrap().etag,
        Some(etag)
    );
}

on_s3!(errors_map_to_kinds);
async fn errors_map_to_kinds(server: Server) {
    let store = s3_store(server).await;
    let err = store.get("absent", None, None).await.err().unwrap();
    assert_eq!(
        (err.kind, err.class.as_str()),
        (ErrorKind::NotFound, "NoSuchKey")
    );
    assert_eq!(err.subject, format!("s3://{}/absent", bucket(&store)));
    assert!(store.head("absent").await.unwrap().is_none());
    assert_eq!(
        store.part_size("absent", 1).await.unwrap_err().kind,
        ErrorKind::NotFound
    );

    let missing = S3Store::new(server.s3(), testsupport::unique("nobucket"));
    let err = missing
        .list_page(&ListRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind, err.class.as_str()),
        (ErrorKind::NotFound, "NoSuchBucket")
    );
    assert_eq!(
        err.subject,
        format!("s3://{}", missing.copy_source_name().unwrap())
    );
    // HEAD replies carry no error code, but the store learned by HeadBucket
    // that the bucket is missing: never "a missing key".
    let err = missing.head("k").await.unwrap_err();
    assert_eq!(
        (err.kind, err.class.as_str()),
        (ErrorKind::NotFound, "NoSuchBucket")
    );
    let err = missing
        .put("k", Bytes::from_static(b"x"), &PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind, err.class.as_str()),
        (ErrorKind::NotFound, "NoSuchBucket")
    );

    // A non-last part under 5 MiB is a permanent error, not a retry loop.
    let id = store
        .create_multipart("small", &PutOptions::default())
        .await
        .unwrap();
    let mut parts = Vec::new();
    for n in 1..=2 {
        let part = store
            .upload_part("small", &id, n, Bytes::from_static(b"tiny"), None, None)
            .await
            .unwrap();
        parts.push(part);
    }
    let err = store
        .complete_multipart("small", &id, &parts, &Finish::default())
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind, err.class.as_str()),
        (ErrorKind::Permanent, "EntityTooSmall")
    );
    store.abort_multipart("small", &id).await.unwrap();
}

on_s3!(list_multipart_uploads_shows_uploads_in_progress);
async fn list_multipart_uploads_shows_uploads_in_progress(server: Server) {
    let store = s3_store(server).await;
    let key = "up/load +1%.bin";
    let id = store
        .create_multipart(key, &PutOptions::default())
        .await
        .unwrap();
    store
        .create_multipart("elsewhere", &PutOptions::default())
        .await
        .unwrap();
    assert!(store.capabilities().lists_uploads);
    let uploads = store.list_uploads("up/").await.unwrap();
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    assert_eq!(uploads[0].key, key);
    assert_eq!(uploads[0].upload_id, id);
    assert!(uploads[0].initiated.is_some(), "start time");
    store.abort_multipart(key, &id).await.unwrap();
    assert!(store.list_uploads("up/").await.unwrap().is_empty());
}

on_s3!(fetch_owner_only_when_asked);
async fn fetch_owner_only_when_asked(server: Server) {
    let store = s3_store(server).await;
    store
        .put("o", Bytes::from_static(b"x"), &PutOptions::default())
        .await
        .unwrap();
    let page = store.list_page(&ListRequest::default()).await.unwrap();
    assert_eq!(page.objects[0].owner_id, None);
    assert_eq!(
        page.objects[0].etag.as_deref(),
        Some("\"9dd4e461268c8034f5c8564e155c67a6\""),
        "listing ETags keep S3's quotes"
    );
    let page = store
        .list_page(&ListRequest {
            fetch_owner: true,
            ..ListRequest::default()
        })
        .await
        .unwrap();
    assert!(page.objects[0].owner_id.is_some());
}
