//! End-to-end, commander → SQS → executor: `copy` and `downup` reproduce a corpus
//! (bytes, ETag including a 3-part multipart source, content type, user metadata,
//! tags, awkward keys); `check` parks a changed and a missing target in the DLQ with
//! reasons; replaying the DLQ (`-n -1 -d`) repairs them and leaves it empty.

use std::collections::BTreeSet;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use testsupport::runs::{drain, send_raw, Sandbox};
use testsupport::{bucket, s3};

const MIB: usize = 1024 * 1024;
const SIZES: [&str; 4] = ["--multipart-threshold", "5MiB", "--part-size", "5MiB"];

struct Obj {
    key: &'static str,
    body: Vec<u8>,
    content_type: Option<&'static str>,
    tags: Option<&'static str>,
}

fn corpus() -> Vec<Obj> {
    let o = |key, body: &[u8], content_type, tags| Obj {
        key,
        body: body.to_vec(),
        content_type,
        tags,
    };
    vec![
        o(
            "plain.txt",
            b"hello, plain",
            Some("text/plain"),
            Some("team=a&tier=gold"),
        ),
        o("zero", b"", None, None),
        o(
            "a b+c%d?e#f",
            b"special key",
            Some("application/x-odd"),
            None,
        ),
        o("\u{fc}/\u{e9}.txt", b"unicode key", None, Some("lang=fr")),
        o("folder/", b"", None, None),
    ]
}

async fn put_corpus(src: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for obj in corpus() {
        let mut req = s3()
            .put_object()
            .bucket(src)
            .key(obj.key)
            .metadata("origin", "corpus")
            .body(ByteStream::from(obj.body.clone()));
        if let Some(ct) = obj.content_type {
            req = req.content_type(ct);
        }
        if let Some(t) = obj.tags {
            req = req.tagging(t);
        }
        req.send()
            .await
            .unwrap_or_else(|e| panic!("put {}: {e:?}", obj.key));
        keys.push(obj.key.to_string());
    }
    // A 3-part multipart source: 5 MiB + 5 MiB + 1 MiB.
    let key = "big/multi.bin";
    let up = s3()
        .create_multipart_upload()
        .bucket(src)
        .key(key)
        .content_type("application/octet-stream")
        .metadata("origin", "multipart")
        .tagging("size=big")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let mut parts = Vec::new();
    for (n, len) in [(1, 5 * MIB), (2, 5 * MIB), (3, MIB)] {
        let body: Vec<u8> = (0..len)
            .map(|i| ((i * 31 + n as usize) % 251) as u8)
            .collect();
        let p = s3()
            .upload_part()
            .bucket(src)
            .key(key)
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(body))
            .send()
            .await
            .unwrap();
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(p.e_tag().unwrap())
                .build(),
        );
    }
    s3().complete_multipart_upload()
        .bucket(src)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    keys.push(key.to_string());
    keys
}

async fn body(bucket: &str, key: &str) -> Vec<u8> {
    let out = s3().get_object().bucket(bucket).key(key).send().await;
    let out = out.unwrap_or_else(|e| panic!("get {bucket}/{key}: {e:?}"));
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

async fn tags(bucket: &str, key: &str) -> BTreeSet<(String, String)> {
    let out = s3()
        .get_object_tagging()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    out.tag_set()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect()
}

/// Bytes, ETag, size, content type, user metadata and tags are equal.
async fn assert_same(src: &str, dst: &str, key: &str) {
    let a = s3()
        .head_object()
        .bucket(src)
        .key(key)
        .send()
        .await
        .unwrap();
    let b = s3()
        .head_object()
        .bucket(dst)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key} missing in {dst}: {e:?}"));
    assert_eq!(a.e_tag(), b.e_tag(), "{key}: etag");
    assert_eq!(a.content_length(), b.content_length(), "{key}: size");
    assert_eq!(a.content_type(), b.content_type(), "{key}: content type");
    assert_eq!(a.metadata(), b.metadata(), "{key}: metadata");
    assert_eq!(tags(src, key).await, tags(dst, key).await, "{key}: tags");
    assert!(body(src, key).await == body(dst, key).await, "{key}: bytes");
}

async fn migrate(mode: &str) {
    let src = bucket("exo-src").await;
    let dst = bucket("exo-dst").await;
    let keys = put_corpus(&src).await;
    let big = s3()
        .head_object()
        .bucket(&src)
        .key("big/multi.bin")
        .send()
        .await
        .unwrap();
    assert!(big.e_tag().unwrap().ends_with("-3\""), "{:?}", big.e_tag());

    let sb = Sandbox::new(&format!("exo-{mode}"), 2);
    sb.init();
    sb.commander(&["run", "-s", &src, "-t", &dst, "-b", "3"])
        .assert_ok("commander run");
    let mut args = vec!["--mode", mode, "--until-empty"];
    args.extend(SIZES);
    let run = sb.executor(&args);
    run.assert_ok("executor");
    assert!(run.stdout.contains("0 failed"), "{}", run.stdout);
    for key in &keys {
        assert_same(&src, &dst, key).await;
    }
    assert!(drain(&sb.dead()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_reproduces_the_corpus() {
    migrate("copy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downup_reproduces_the_corpus() {
    migrate("downup").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_parks_changed_and_missing_keys_and_a_dlq_replay_repairs_them() {
    let src = bucket("exh-src").await;
    let dst = bucket("exh-dst").await;
    let keys = put_corpus(&src).await;
    let sb = Sandbox::new("exh", 1);
    sb.init();
    let mut copy = vec!["--mode", "copy", "--until-empty"];
    copy.extend(SIZES);
    sb.commander(&["run", "-s", &src, "-t", &dst])
        .assert_ok("commander run");
    sb.executor(&copy).assert_ok("copy");

    // Change one target, delete another.
    testsupport::put(&dst, "plain.txt", "changed behind our back").await;
    s3().delete_object()
        .bucket(&dst)
        .key("zero")
        .send()
        .await
        .unwrap();

    sb.commander(&["run", "-s", &src, "-t", &dst])
        .assert_ok("commander run (check)");
    let mut check = vec!["--mode", "check", "--until-empty"];
    check.extend(SIZES);
    let run = sb.executor(&check);
    // Keys that differ are failures: exit 5 (docs/operate.md#exit-codes).
    assert_eq!(run.status.code(), Some(5), "{run:?}");
    assert!(run.stdout.contains("2 failed"), "{}", run.stdout);

    let dead = drain(&sb.dead()).await;
    let mut parked = Vec::new();
    for m in &dead {
        let batch = common::message::decode(&m.body).expect("DLQ entries are messages");
        assert_eq!(
            (batch.source.as_str(), batch.target.as_str()),
            (&*format!("s3://{src}"), &*format!("s3://{dst}"))
        );
        for k in batch.keys {
            let f = k.failure.expect("parked keys carry their failure");
            assert_eq!(f.mode.as_deref(), Some("check"));
            assert_eq!(f.attempts, 1);
            assert!(!f.message.is_empty());
            parked.push((k.key, f.class));
        }
    }
    parked.sort();
    assert_eq!(
        parked,
        [
            ("plain.txt".to_string(), "Mismatch".to_string()),
            ("zero".to_string(), "TargetMissing".to_string())
        ]
    );

    // Put them back and replay the DLQ only, in copy mode: repaired, DLQ empty.
    let bodies: Vec<&str> = dead.iter().map(|m| m.body.as_str()).collect();
    send_raw(&sb.dead(), &bodies).await;
    let mut replay = vec!["--mode", "copy", "-n", "-1", "-d", "--until-empty"];
    replay.extend(SIZES);
    let run = sb.executor(&replay);
    run.assert_ok("DLQ replay");
    assert!(run.stdout.contains("0 failed"), "{}", run.stdout);
    assert!(
        drain(&sb.dead()).await.is_empty(),
        "DLQ empty after the replay"
    );
    for key in &keys {
        assert_same(&src, &dst, key).await;
    }
}
