//! Issue #11, items 5, 6 and two bullets of 3, end to end:
//! - an executor opens only the endpoints its configuration allows: a message
//!   naming anything else is parked whole as a BadMessage with the reason,
//!   nothing is written, and allowed messages are still worked;
//! - `--modified-since` / `--not-modified-since` mean the same in both
//!   binaries (since inclusive, until exclusive), for an object at exactly T;
//! - a directory source read in parts is pinned to its fingerprint: a file
//!   changed between parts ends `SourceChanged`, the target gets nothing;
//! - the resume point of a failed CSV-manifest run never skips a key.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use common::checksum::Checksum;
use common::message::{decode, encode, Batch, KeyItem, MESSAGE_VERSION};
use common::retry::Policy;
use common::store::dir::DirStore;
use common::store::{
    ByteStream, CompletedPart, Finish, ListPage, ListRequest, ObjectInfo, ObjectStore, PutOptions,
    Written,
};
use common::transfer::{process_key, Ends, Mode, TransferOptions, SOURCE_CHANGED};
use common::ErrorKind;
use testsupport::runs::{drain, send_raw, Sandbox};
use testsupport::{bucket, keys, put, s3};

fn batch(job: &str, source: &str, target: &str, keys: &[&str]) -> String {
    encode(&Batch {
        v: MESSAGE_VERSION,
        job_id: job.into(),
        source: source.into(),
        target: target.into(),
        keys: keys
            .iter()
            .map(|k| KeyItem {
                key: k.to_string(),
                ..KeyItem::default()
            })
            .collect(),
    })
}

/// Every file below `dir`, as relative paths.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_naming_disallowed_endpoints_are_parked_as_bad_messages() {
    let src = bucket("pw-src").await;
    let dst = bucket("pw-dst").await;
    put(&src, "ok.txt", b"fine".to_vec()).await;

    // A directory the operator allowed, one beside it, and a symlink escaping it.
    let top = tempfile::tempdir().unwrap();
    let top = top.path().canonicalize().unwrap();
    let allowed = top.join("allowed");
    let outside = top.join("outside");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(allowed.join("a.txt"), b"from the allowed dir").unwrap();
    std::fs::write(outside.join("secret.txt"), b"secret").unwrap();
    std::os::unix::fs::symlink(&outside, allowed.join("escape")).unwrap();
    let allowed_s = allowed.display().to_string();
    let outside_s = outside.display().to_string();

    let mut sb = Sandbox::new("pw-allow", 1);
    sb.init();
    let s3_src = format!("s3://{src}");
    let s3_dst = format!("s3://{dst}");
    // Default with the SQS backend: S3 only, so file:///etc is refused.
    let etc = batch("pw", "file:///etc", &s3_dst, &["passwd", "hostname"]);
    let good = batch("pw", &s3_src, &s3_dst, &["ok.txt"]);
    send_raw(&sb.queue(1), &[&etc, &good]).await;
    let run = sb.executor(&["--mode", "downup", "--until-empty"]);
    // A message parked as bad: the run ended with a failure (exit 5).
    assert_eq!(run.status.code(), Some(5), "{run:?}");
    assert_eq!(keys(&dst).await, vec!["ok.txt"], "only the allowed message");
    let parked = drain(&sb.dead()).await;
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].body, etc, "parked unchanged, every key kept");
    assert_eq!(
        parked[0].attributes.get("error_class").map(String::as_str),
        Some("BadMessage")
    );
    let reason = parked[0]
        .attributes
        .get("reason")
        .cloned()
        .unwrap_or_default();
    assert!(
        reason.contains("file:///etc") && reason.contains("migration.allowed_sources"),
        "{reason}"
    );

    // Directories allowed under one root: the root is accepted; `..`, a
    // symlink out of it and a sibling directory are not.
    sb.set(
        "MIGRATION_ALLOWED_SOURCES",
        &format!("s3://*, file://{allowed_s}"),
    );
    let from_dir = batch("pw", &format!("file://{allowed_s}"), &s3_dst, &["a.txt"]);
    let dotdot = batch(
        "pw",
        &format!("file://{allowed_s}/../outside"),
        &s3_dst,
        &["secret.txt"],
    );
    let link = batch(
        "pw",
        &format!("file://{allowed_s}/escape"),
        &s3_dst,
        &["secret.txt"],
    );
    let sibling = batch(
        "pw",
        &format!("file://{outside_s}"),
        &s3_dst,
        &["secret.txt"],
    );
    // A target directory is not a source: targets keep their S3-only default.
    let to_dir = batch(
        "pw",
        &s3_src,
        &format!("file://{allowed_s}/copy"),
        &["ok.txt"],
    );
    send_raw(
        &sb.queue(1),
        &[&from_dir, &dotdot, &link, &sibling, &to_dir],
    )
    .await;
    let run = sb.executor(&["--mode", "downup", "--until-empty"]);
    assert_eq!(run.status.code(), Some(5), "bad messages parked: {run:?}");
    let mut got = keys(&dst).await;
    got.sort();
    assert_eq!(got, vec!["a.txt", "ok.txt"], "no secret was copied");
    assert!(
        !allowed.join("copy").exists(),
        "nothing written to a directory"
    );
    let parked = drain(&sb.dead()).await;
    let mut bodies: Vec<&str> = parked.iter().map(|m| m.body.as_str()).collect();
    bodies.sort();
    let mut want = vec![
        dotdot.as_str(),
        link.as_str(),
        sibling.as_str(),
        to_dir.as_str(),
    ];
    want.sort();
    assert_eq!(bodies, want);
    for m in &parked {
        assert_eq!(
            m.attributes.get("error_class").map(String::as_str),
            Some("BadMessage"),
            "{m:?}"
        );
        assert!(
            m.attributes
                .get("reason")
                .is_some_and(|r| r.contains("EndpointNotAllowed") || r.contains("not allowed")),
            "{m:?}"
        );
    }
    assert_eq!(
        std::fs::read(outside.join("secret.txt")).unwrap(),
        b"secret"
    );
}

/// The last-modified time of `key`, as RFC 3339 with the server's precision.
async fn last_modified(bucket: &str, key: &str) -> String {
    let head = s3()
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let t = head.last_modified().unwrap();
    chrono::DateTime::<chrono::Utc>::from_timestamp(t.secs(), t.subsec_nanos())
        .unwrap()
        .to_rfc3339()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commander_and_executor_agree_on_an_object_modified_exactly_at_t() {
    let src = bucket("pw-win-src").await;
    let dst = bucket("pw-win-dst").await;
    put(&src, "edge.txt", b"at T".to_vec()).await;
    let t = last_modified(&src, "edge.txt").await;
    let sb = Sandbox::new("pw-win", 1);
    sb.init();

    // --modified-since T: T is inside, for both binaries.
    let out = sb.commander(&[
        "run",
        "-s",
        &src,
        "-t",
        &dst,
        "--modified-since",
        &t,
        "--json",
    ]);
    out.assert_ok("commander --modified-since");
    let sent: Vec<String> = drain(&sb.queue(1))
        .await
        .iter()
        .flat_map(|m| decode(&m.body).unwrap().keys)
        .map(|k| k.key)
        .collect();
    assert_eq!(
        sent,
        vec!["edge.txt"],
        "the commander keeps last_modified == T"
    );
    send_raw(
        &sb.queue(1),
        &[&batch(
            "pw-win",
            &format!("s3://{src}"),
            &format!("s3://{dst}"),
            &["edge.txt"],
        )],
    )
    .await;
    let run = sb.executor(&["--until-empty", "--modified-since", &t]);
    run.assert_ok("executor --modified-since");
    assert!(run.stdout.contains("copied 1"), "{}", run.stdout);
    assert_eq!(keys(&dst).await, vec!["edge.txt"]);

    // --not-modified-since T: T is outside, for both binaries.
    let out = sb.commander(&[
        "run",
        "-s",
        &src,
        "-t",
        &dst,
        "--not-modified-since",
        &t,
        "--job-id",
        "pw-win-2",
    ]);
    out.assert_ok("commander --not-modified-since");
    assert!(
        drain(&sb.queue(1)).await.is_empty(),
        "the commander drops T"
    );
    s3().delete_object()
        .bucket(&dst)
        .key("edge.txt")
        .send()
        .await
        .unwrap();
    send_raw(
        &sb.queue(1),
        &[&batch(
            "pw-win",
            &format!("s3://{src}"),
            &format!("s3://{dst}"),
            &["edge.txt"],
        )],
    )
    .await;
    let run = sb.executor(&["--until-empty", "--not-modified-since", &t]);
    run.assert_ok("executor --not-modified-since");
    assert!(run.stdout.contains("skipped-filtered 1"), "{}", run.stdout);
    assert!(keys(&dst).await.is_empty());
}

/// A directory source that rewrites the file once its first part was read.
#[derive(Debug)]
struct ChangesAfterFirstPart {
    inner: DirStore,
    path: std::path::PathBuf,
    gets: AtomicU32,
    /// How to change the file: in place (same inode) or by replacing it.
    replace: bool,
}

#[async_trait]
impl ObjectStore for ChangesAfterFirstPart {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn confirm_exists(&self) -> common::Result<()> {
        self.inner.confirm_exists().await
    }
    async fn list_page(&self, req: &ListRequest) -> common::Result<ListPage> {
        self.inner.list_page(req).await
    }
    async fn head(&self, key: &str) -> common::Result<Option<ObjectInfo>> {
        self.inner.head(key).await
    }
    async fn part_size(&self, key: &str, part: u32) -> common::Result<u64> {
        self.inner.part_size(key, part).await
    }
    async fn get(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
        if_match: Option<&str>,
    ) -> common::Result<ByteStream> {
        use futures::StreamExt;
        let n = self.gets.fetch_add(1, Ordering::SeqCst);
        let stream = self.inner.get(key, range, if_match).await?;
        if n != 0 {
            return Ok(stream);
        }
        // Read the first part fully (its end-of-read check passes), then change the file.
        let chunks: Vec<_> = stream.collect().await;
        let len = std::fs::metadata(&self.path).unwrap().len() as usize;
        let new = vec![b'Z'; len];
        if self.replace {
            let tmp = self.path.with_extension("new");
            std::fs::write(&tmp, &new).unwrap();
            std::fs::rename(&tmp, &self.path).unwrap();
        } else {
            // Same size, same inode; only the content (and mtime) change.
            std::thread::sleep(std::time::Duration::from_millis(20));
            std::fs::write(&self.path, &new).unwrap();
        }
        Ok(Box::pin(futures::stream::iter(chunks)))
    }
    async fn put(&self, key: &str, body: Bytes, opts: &PutOptions) -> common::Result<Written> {
        self.inner.put(key, body, opts).await
    }
    async fn create_multipart(&self, key: &str, opts: &PutOptions) -> common::Result<String> {
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
    ) -> common::Result<CompletedPart> {
        self.inner
            .upload_part(key, id, n, body, md5, checksum)
            .await
    }
    fn capabilities(&self) -> common::store::Capabilities {
        self.inner.capabilities()
    }
    async fn complete_multipart(
        &self,
        key: &str,
        id: &str,
        parts: &[CompletedPart],
        finish: &Finish,
    ) -> common::Result<Written> {
        self.inner.complete_multipart(key, id, parts, finish).await
    }
    async fn abort_multipart(&self, key: &str, id: &str) -> common::Result<()> {
        self.inner.abort_multipart(key, id).await
    }
    async fn get_tags(&self, key: &str) -> common::Result<Option<Vec<(String, String)>>> {
        self.inner.get_tags(key).await
    }
    async fn put_tags(&self, key: &str, tags: &[(String, String)]) -> common::Result<()> {
        self.inner.put_tags(key, tags).await
    }
}

#[tokio::test]
async fn a_directory_file_changed_between_parts_is_source_changed_and_writes_nothing() {
    for replace in [false, true] {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let path = src.path().join("big.bin");
        let original: Vec<u8> = (0..64u32).map(|i| b'a' + (i % 26) as u8).collect();
        std::fs::write(&path, &original).unwrap();
        let ends = Ends {
            source: Arc::new(ChangesAfterFirstPart {
                inner: DirStore::open_existing(src.path()).unwrap(),
                path: path.clone(),
                gets: AtomicU32::new(0),
                replace,
            }),
            target: Arc::new(DirStore::create(dst.path()).unwrap()),
            server_side: false,
        };
        let opts = TransferOptions {
            mode: Mode::Downup,
            multipart_threshold: 16,
            part_size: 16,
            part_concurrency: 1,
            // One attempt: a retry would HEAD again and copy the new version whole.
            retry: Policy {
                max_attempts: 1,
                ..Policy::object()
            },
            ..TransferOptions::default()
        };
        let item = KeyItem {
            key: "big.bin".into(),
            ..KeyItem::default()
        };
        let err = process_key(&ends, &item, &opts)
            .await
            .expect_err("a file changed between parts must not be copied");
        assert_eq!(err.class, SOURCE_CHANGED, "replace={replace}: {err}");
        assert_eq!(err.kind, ErrorKind::PreconditionFailed);
        assert!(
            files(dst.path()).is_empty(),
            "replace={replace}: the target holds {:?}",
            files(dst.path())
        );
    }
}

/// Keys of every message of a queue (drained).
async fn sent_keys(queue: &str) -> std::collections::BTreeSet<String> {
    drain(queue)
        .await
        .iter()
        .flat_map(|m| decode(&m.body).unwrap().keys)
        .map(|k| k.key)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_csv_manifest_run_resumes_from_a_row_and_skips_no_key() {
    use std::time::Duration;
    use testsupport::faultproxy::{Fault, FaultConfig, FaultProxy};
    use testsupport::runs::{depths, run_bin};

    // Rows in key order for longer than the commander reads ahead, then
    // smaller keys: at the failure the rows read so far look sorted.
    let mut all: Vec<String> = (0..12_000).map(|i| format!("m/{i:05}")).collect();
    all.extend((0..8_000).map(|i| format!("a/{i:05}")));
    let work = tempfile::tempdir().unwrap();
    let manifest = work.path().join("manifest.csv");
    let text: String = all.iter().map(|k| format!("pw-csv-src,{k}\n")).collect();
    std::fs::write(&manifest, text).unwrap();
    let manifest_s = manifest.display().to_string();

    let send_faults = |kinds: Vec<Fault>, rate: f64| FaultConfig {
        sqs_rate: rate,
        kinds,
        sqs_ops: vec!["SendMessageBatch".to_string()],
        ..FaultConfig::default()
    };
    let slow = FaultConfig {
        delay: Duration::from_millis(300),
        ..send_faults(vec![Fault::Delay], 1.0)
    };
    let proxy = FaultProxy::start(&testsupport::endpoint(), slow, 7).await;
    let mut sb = Sandbox::new("pw-resume", 1);
    sb.init();
    sb.set("SQS_ENDPOINT_URL", &proxy.url());
    let args: Vec<String> = [
        "run",
        "--csv-manifest",
        &manifest_s,
        "-t",
        "dst-bucket",
        "-b",
        "50",
        "--send-concurrency",
        "1",
        "--job-id",
        "pw-resume",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (env, dir) = (sb.env.clone(), sb.dir.path().to_path_buf());
    let first = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_bin("commander", &args, &env, &dir, Duration::from_secs(300))
    });
    // Once some messages are in, every send fails (after retries).
    let mut rounds = 0;
    while depths(&sb.queue(1)).await.0 < 3 {
        rounds += 1;
        assert!(rounds < 600, "the run never sent anything");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.set_config(send_faults(vec![Fault::BatchEntries], 1.0));
    let first = first.await.unwrap();
    assert!(
        !first.status.success(),
        "the run did not fail:\n{}",
        first.stdout
    );
    let hint = first
        .stderr
        .split("--resume-from ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no --resume-from hint: {}", first.stderr));
    assert!(!first.stderr.contains("--start-after"), "{}", first.stderr);
    let sent_first = sent_keys(&sb.queue(1)).await;
    assert!(
        !sent_first.is_empty() && sent_first.len() < all.len(),
        "{} sent",
        sent_first.len()
    );

    // Resume from the printed row without faults: no key is missing.
    proxy.set_config(FaultConfig::default());
    sb.commander(&[
        "run",
        "--csv-manifest",
        &manifest_s,
        "-t",
        "dst-bucket",
        "-b",
        "200",
        "--job-id",
        "pw-resume",
        "--resume-from",
        &hint,
    ])
    .assert_ok("resumed run");
    let sent_second = sent_keys(&sb.queue(1)).await;
    assert!(
        sent_second.len() < all.len(),
        "the resume re-sent everything"
    );
    let union: std::collections::BTreeSet<String> =
        sent_first.union(&sent_second).cloned().collect();
    let missing: Vec<&String> = all.iter().filter(|k| !union.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} keys never sent (hint {hint}), e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
}
