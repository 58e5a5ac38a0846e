//! End-to-end on LocalStack, the strict test server (S3 and SQS both there):
//! the AWS behaviours moto does not have, with the real `commander` and
//! `executor` binaries.
//! - copy mode, a source overwritten after listing (small: CopyObject with
//!   `x-amz-copy-source-if-match`; multipart: UploadPartCopy with it) fails
//!   with class `SourceChanged`, in the report and the DLQ, and the target
//!   never holds the new version (moto ignores the precondition);
//! - an archived source (GLACIER, DEEP_ARCHIVE) is parked with the archive
//!   class (`InvalidObjectState` or `ObjectNotInActiveTierError`) in copy and
//!   downup modes, never `copied` or `source-missing` (moto lets UploadPartCopy
//!   read an archived object).
//!
//! Every test returns after a loud SKIPPED line when `S3MIG_NO_LOCALSTACK=1`,
//! and fails when LocalStack was not started otherwise.

use std::collections::BTreeMap;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, StorageClass};
use common::report::{Outcome, ReportRow};
use testsupport::runs::{drain_on, Sandbox};
use testsupport::Server;

const MIB: usize = 1024 * 1024;
const SIZES: [&str; 4] = ["--multipart-threshold", "5MiB", "--part-size", "5MiB"];
/// Classes of a key parked because its source is archived (ErrorKind::InvalidObjectState):
/// the service's code, `InvalidObjectState` (GetObject; LocalStack also answers it
/// to copies) or `ObjectNotInActiveTierError` (AWS's answer to copies).
const ARCHIVE_CLASSES: [&str; 2] = ["InvalidObjectState", "ObjectNotInActiveTierError"];
/// What [`archive_class`] makes of either archive class.
const ARCHIVED: &str = "<archive class>";

/// `class`, or [`ARCHIVED`] for either archive class.
fn archive_class(class: &str) -> String {
    if ARCHIVE_CLASSES.contains(&class) {
        ARCHIVED.to_string()
    } else {
        class.to_string()
    }
}

/// Deterministic bytes, different per `seed`.
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + seed as usize * 7) % 251) as u8)
        .collect()
}

/// Upload `key` as a multipart object of 5 MiB + 5 MiB + 1 MiB parts.
async fn put_multipart(
    server: Server,
    bucket: &str,
    key: &str,
    seed: u8,
    class: Option<StorageClass>,
) {
    let s3 = server.s3();
    let up = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .set_storage_class(class)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create multipart {key}: {e:?}"));
    let id = up.upload_id().expect("upload id");
    let mut parts = Vec::new();
    for (n, len) in [(1, 5 * MIB), (2, 5 * MIB), (3, MIB)] {
        let p = s3
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(bytes(len, seed.wrapping_add(n as u8))))
            .send()
            .await
            .unwrap_or_else(|e| panic!("upload part {n} of {key}: {e:?}"));
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(p.e_tag().expect("part etag"))
                .build(),
        );
    }
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("complete {key}: {e:?}"));
}

async fn put_small(
    server: Server,
    bucket: &str,
    key: &str,
    body: &[u8],
    class: Option<StorageClass>,
) {
    server
        .s3()
        .put_object()
        .bucket(bucket)
        .key(key)
        .set_storage_class(class)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {bucket}/{key}: {e:?}"));
}

async fn etag(server: Server, bucket: &str, key: &str) -> Option<String> {
    match server
        .s3()
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
    {
        Ok(h) => h.e_tag().map(str::to_string),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => None,
        Err(e) => panic!("head {bucket}/{key}: {e:?}"),
    }
}

/// A sandbox on LocalStack whose binaries write reports under its directory.
fn sandbox(server: Server, prefix: &str) -> Sandbox {
    let mut sb = Sandbox::on(server, prefix, 1);
    let reports = sb.dir.path().join("reports");
    sb.set("REPORT_LOCATION", &reports.display().to_string());
    sb
}

/// Every report row of `job_id`, by source key (the latest row of each).
async fn report_rows(sb: &Sandbox, job_id: &str) -> BTreeMap<String, ReportRow> {
    testsupport::runs::report_rows(&sb.dir.path().join("reports"), job_id).await
}

/// `(outcome, error class)` of each key in the report.
fn outcomes(rows: &BTreeMap<String, ReportRow>) -> BTreeMap<String, (Outcome, Option<String>)> {
    rows.iter()
        .map(|(k, r)| (k.clone(), (r.outcome, r.error_class.clone())))
        .collect()
}

/// `(key, class)` of every key parked in the DLQ, sorted.
async fn parked(server: Server, sb: &Sandbox, mode: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for m in drain_on(server, &sb.dead()).await {
        let batch = common::message::decode(&m.body).expect("DLQ entries are messages");
        for k in batch.keys {
            let f = k.failure.expect("parked keys carry their failure");
            assert_eq!(f.mode.as_deref(), Some(mode), "{}", k.key);
            assert!(!f.message.is_empty(), "{}", k.key);
            out.push((k.key, f.class));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_of_a_source_overwritten_after_listing_is_source_changed() {
    let Some(ls) = Server::localstack() else {
        return;
    };
    let src = ls.bucket("strict-src").await;
    let dst = ls.bucket("strict-dst").await;
    put_small(ls, &src, "small.txt", b"version one", None).await;
    put_multipart(ls, &src, "big/multi.bin", 1, None).await;
    let old_big = etag(ls, &src, "big/multi.bin")
        .await
        .expect("multipart source");
    assert!(old_big.ends_with("-3\""), "{old_big}");

    let sb = sandbox(ls, "strict-chg");
    sb.init();
    sb.commander(&["run", "-s", &src, "-t", &dst, "--job-id", "changed"])
        .assert_ok("commander run");

    // Overwritten after listing: the messages carry the old ETags.
    put_small(ls, &src, "small.txt", b"version two", None).await;
    put_multipart(ls, &src, "big/multi.bin", 2, None).await;
    let new_big = etag(ls, &src, "big/multi.bin").await.expect("new version");
    assert_ne!(new_big, old_big);

    let mut args = vec!["--mode", "copy", "--until-empty"];
    args.extend(SIZES);
    let run = sb.executor(&args);
    // Parked keys: exit 5 (docs/operate.md#exit-codes).
    assert_eq!(run.status.code(), Some(5), "{run:?}");
    assert!(run.stdout.contains("2 failed"), "{}", run.stdout);

    let want = [
        ("big/multi.bin".to_string(), "SourceChanged".to_string()),
        ("small.txt".to_string(), "SourceChanged".to_string()),
    ];
    assert_eq!(parked(ls, &sb, "copy").await, want);
    let rows = outcomes(&report_rows(&sb, "changed").await);
    let want_rows: BTreeMap<_, _> = want
        .iter()
        .map(|(k, c)| (k.clone(), (Outcome::Failed, Some(c.clone()))))
        .collect();
    assert_eq!(rows, want_rows);

    // Nothing of the new (or any) version reached the target, and no parts linger.
    for key in ["small.txt", "big/multi.bin"] {
        assert_eq!(etag(ls, &dst, key).await, None, "{key} in the target");
    }
    let uploads = ls
        .s3()
        .list_multipart_uploads()
        .bucket(&dst)
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "{:?}", uploads.uploads());
}

/// Archived sources, in `mode`: every one parked with the archive class.
async fn archived_sources_are_parked(mode: &str) {
    let Some(ls) = Server::localstack() else {
        return;
    };
    let src = ls.bucket("strict-src").await;
    let dst = ls.bucket("strict-dst").await;
    put_small(
        ls,
        &src,
        "glacier.txt",
        b"cold",
        Some(StorageClass::Glacier),
    )
    .await;
    put_small(
        ls,
        &src,
        "deep.txt",
        b"colder",
        Some(StorageClass::DeepArchive),
    )
    .await;
    put_multipart(
        ls,
        &src,
        "glacier-multi.bin",
        3,
        Some(StorageClass::Glacier),
    )
    .await;
    put_small(ls, &src, "warm.txt", b"standard", None).await;

    let job = format!("archived-{mode}");
    let sb = sandbox(ls, &format!("strict-arc-{mode}"));
    sb.init();
    sb.commander(&["run", "-s", &src, "-t", &dst, "--job-id", &job])
        .assert_ok("commander run");
    let mut args = vec!["--mode", mode, "--until-empty"];
    args.extend(SIZES);
    let run = sb.executor(&args);
    assert_eq!(run.status.code(), Some(5), "{run:?}");
    assert!(run.stdout.contains("3 failed"), "{}", run.stdout);

    let archived = ["deep.txt", "glacier-multi.bin", "glacier.txt"];
    let want: Vec<(String, String)> = archived
        .iter()
        .map(|k| (k.to_string(), ARCHIVED.to_string()))
        .collect();
    let got: Vec<(String, String)> = parked(ls, &sb, mode)
        .await
        .into_iter()
        .map(|(k, c)| (k, archive_class(&c)))
        .collect();
    assert_eq!(got, want);
    let mut want_rows: BTreeMap<_, _> = archived
        .iter()
        .map(|k| (k.to_string(), (Outcome::Failed, Some(ARCHIVED.to_string()))))
        .collect();
    want_rows.insert("warm.txt".into(), (Outcome::Copied, None));
    let rows: BTreeMap<_, _> = outcomes(&report_rows(&sb, &job).await)
        .into_iter()
        .map(|(k, (o, c))| (k, (o, c.map(|c| archive_class(&c)))))
        .collect();
    assert_eq!(rows, want_rows);
    for key in archived {
        assert_eq!(etag(ls, &dst, key).await, None, "{key} in the target");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_parks_archived_sources_with_the_archive_class() {
    archived_sources_are_parked("copy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downup_parks_archived_sources_with_the_archive_class() {
    archived_sources_are_parked("downup").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_naming_a_missing_bucket_fails_every_key_as_no_such_bucket() {
    let Some(ls) = Server::localstack() else {
        return;
    };
    let dst = ls.bucket("strict-dst").await;
    let missing = testsupport::unique("strict-nobucket");
    let sb = sandbox(ls, "strict-nob");
    sb.init();
    let manifest = sb.dir.path().join("manifest.csv");
    std::fs::write(&manifest, format!("{missing},a\n{missing},b/c\n")).unwrap();
    let manifest = manifest.display().to_string();
    for mode in ["copy", "downup", "check"] {
        let job = format!("nob-{mode}");
        sb.commander(&[
            "run",
            "--csv-manifest",
            &manifest,
            "-t",
            &dst,
            "--job-id",
            &job,
        ])
        .assert_ok("commander run");
        let run = sb.executor(&["--mode", mode, "--until-empty"]);
        assert_eq!(run.status.code(), Some(5), "{mode}: {run:?}");
        assert!(run.stdout.contains("2 failed"), "{mode}: {}", run.stdout);
        let want = [
            ("a".to_string(), "NoSuchBucket".to_string()),
            ("b/c".to_string(), "NoSuchBucket".to_string()),
        ];
        assert_eq!(parked(ls, &sb, mode).await, want, "{mode}");
        let rows = outcomes(&report_rows(&sb, &job).await);
        let want_rows: BTreeMap<_, _> = want
            .iter()
            .map(|(k, c)| (k.clone(), (Outcome::Failed, Some(c.clone()))))
            .collect();
        assert_eq!(rows, want_rows, "{mode}");
    }
}

/// Single-part writes carry `Content-MD5`: S3 refuses a body that does not
/// have it (`BadDigest`, retryable) and stores nothing (moto does not check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_bytes_do_not_match_its_content_md5_is_refused() {
    use common::store::{ObjectStore, PutOptions};
    let Some(ls) = Server::localstack() else {
        return;
    };
    let bucket = ls.bucket("strict-md5").await;
    let store = common::store::s3::S3Store::new(ls.s3(), &bucket);
    let body = bytes::Bytes::from_static(b"the bytes sent");
    let wrong = PutOptions {
        content_md5: Some([7u8; 16]),
        ..PutOptions::default()
    };
    let err = store.put("k", body.clone(), &wrong).await.unwrap_err();
    assert_eq!(err.class, "BadDigest", "{err}");
    assert!(err.kind.is_retryable());
    assert_eq!(etag(ls, &bucket, "k").await, None);
    let right = PutOptions {
        content_md5: Some(<md5::Md5 as md5::Digest>::digest(&body).into()),
        ..PutOptions::default()
    };
    let etag_written = store.put("k", body, &right).await.unwrap().etag;
    assert_eq!(etag(ls, &bucket, "k").await, Some(etag_written));
}
