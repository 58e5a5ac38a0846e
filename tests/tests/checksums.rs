//! Exact by proof (issue #14), end to end on LocalStack with the real
//! `commander` and `executor` binaries: LocalStack keeps and validates S3's
//! additional checksums as AWS does (moto neither validates them nor keeps
//! CRC64NVME). Sources are written with the SDK, each with the checksum a
//! writer can choose; the targets are read back with HEAD and
//! `x-amz-checksum-mode: ENABLED`.
//! - copy and downup give the target the source's algorithm, type and value —
//!   CRC64NVME (the server's default), CRC32C full-object multipart, CRC32
//!   composite multipart (3 parts), SHA256 — and the report says
//!   `proof=checksum-<alg>`;
//! - a downup with other part sizes than the source still ends with an equal
//!   full-object CRC64NVME (the ETags differ: only the checksum proves it);
//! - a part damaged between read and write (fault proxy, `CorruptPart`) is
//!   refused by the server (`BadDigest`) and the key retried to a good copy,
//!   or, damaged on every try, `failed` with nothing written — never `copied`;
//! - `check` proves by checksum a target written with another part layout,
//!   and a same-size target with other bytes is a `Mismatch`;
//! - `--no-overwrite` leaves existing targets untouched (`target-exists`) and
//!   writes missing ones, in copy and downup, single-part and multipart; also
//!   when the executor's look misses the target (fault proxy,
//!   `hidden_buckets`): the write itself is conditional and refused.
//!
//! Every test returns after a loud SKIPPED line when `S3MIG_NO_LOCALSTACK=1`,
//! and fails when LocalStack was not started otherwise.

use std::collections::BTreeMap;

use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm as SdkAlgorithm, ChecksumMode, ChecksumType as SdkType,
    CompletedMultipartUpload, CompletedPart,
};
use common::checksum::{self, Algorithm, ChecksumType};
use common::report::{Outcome, Proof, ReportRow};
use testsupport::faultproxy::{Fault, FaultConfig, FaultProxy};
use testsupport::runs::{drain_on, Sandbox};
use testsupport::Server;

const MIB: usize = 1024 * 1024;
const SIZES: [&str; 4] = ["--multipart-threshold", "5MiB", "--part-size", "5MiB"];
/// Other part sizes than the sources' 5 MiB ones.
const OTHER_SIZES: [&str; 4] = ["--multipart-threshold", "5MiB", "--part-size", "6MiB"];

/// Deterministic bytes, different per `seed`.
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + seed as usize * 7 + i / 4099) % 251) as u8)
        .collect()
}

/// The parts 5 MiB + 5 MiB + 1 MiB of a multipart source.
fn three_parts(seed: u8) -> Vec<Vec<u8>> {
    [5 * MIB, 5 * MIB, MIB]
        .iter()
        .enumerate()
        .map(|(i, len)| bytes(*len, seed.wrapping_add(i as u8)))
        .collect()
}

/// A client that sends a checksum only when told to (the SDK's default adds a
/// CRC32 to every upload): what an older writer does, so the server chooses.
fn writer(server: Server) -> aws_sdk_s3::Client {
    let conf = server
        .s3()
        .config()
        .to_builder()
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

fn sdk_algorithm(a: Algorithm) -> SdkAlgorithm {
    match a {
        Algorithm::Crc64Nvme => SdkAlgorithm::Crc64Nvme,
        Algorithm::Crc32 => SdkAlgorithm::Crc32,
        Algorithm::Crc32c => SdkAlgorithm::Crc32C,
        Algorithm::Sha1 => SdkAlgorithm::Sha1,
        Algorithm::Sha256 => SdkAlgorithm::Sha256,
    }
}

/// Set the `x-amz-checksum-<alg>` value of any builder that has the five.
macro_rules! with_value {
    ($b:expr, $alg:expr, $v:expr) => {
        match $alg {
            Algorithm::Crc64Nvme => $b.checksum_crc64_nvme($v),
            Algorithm::Crc32 => $b.checksum_crc32($v),
            Algorithm::Crc32c => $b.checksum_crc32_c($v),
            Algorithm::Sha1 => $b.checksum_sha1($v),
            Algorithm::Sha256 => $b.checksum_sha256($v),
        }
    };
}

/// An object's checksum as HEAD with checksum mode answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sum {
    algorithm: &'static str,
    kind: String,
    value: String,
}

impl Sum {
    fn new(algorithm: Algorithm, kind: ChecksumType, value: String) -> Sum {
        Sum {
            algorithm: algorithm.as_str(),
            kind: kind.as_str().to_string(),
            value,
        }
    }
}

/// The checksum of `bucket/key` (HEAD, `x-amz-checksum-mode: ENABLED`), and
/// its part count (HEAD of part 1; `None` for a single-part object).
async fn head_sum(server: Server, bucket: &str, key: &str) -> (Option<Sum>, Option<i32>) {
    let h = server
        .s3()
        .head_object()
        .bucket(bucket)
        .key(key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap_or_else(|e| panic!("head {bucket}/{key}: {e:?}"));
    let kind = h
        .checksum_type()
        .map(|t| t.as_str().to_string())
        .unwrap_or_default();
    let values = [
        ("CRC64NVME", h.checksum_crc64_nvme()),
        ("CRC32", h.checksum_crc32()),
        ("CRC32C", h.checksum_crc32_c()),
        ("SHA1", h.checksum_sha1()),
        ("SHA256", h.checksum_sha256()),
    ];
    let sum = values.into_iter().find_map(|(a, v)| {
        v.map(|v| Sum {
            algorithm: a,
            kind: kind.clone(),
            value: v.to_string(),
        })
    });
    let part = server
        .s3()
        .head_object()
        .bucket(bucket)
        .key(key)
        .part_number(1)
        .send()
        .await
        .unwrap_or_else(|e| panic!("head part 1 of {bucket}/{key}: {e:?}"));
    (sum, part.parts_count())
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

async fn read(server: Server, bucket: &str, key: &str) -> Vec<u8> {
    server
        .s3()
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {bucket}/{key}: {e:?}"))
        .body
        .collect()
        .await
        .unwrap_or_else(|e| panic!("read {bucket}/{key}: {e:?}"))
        .to_vec()
}

/// A single-part object without a checksum from the writer: the server gives
/// it its default, a full-object CRC64NVME (asserted).
async fn put_plain(server: Server, bucket: &str, key: &str, body: &[u8]) {
    writer(server)
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {bucket}/{key}: {e:?}"));
    let want = checksum::digest(Algorithm::Crc64Nvme, body).base64();
    let want = Sum::new(Algorithm::Crc64Nvme, ChecksumType::FullObject, want);
    assert_eq!(head_sum(server, bucket, key).await.0, Some(want), "{key}");
}

/// A single-part object with the writer's SHA256 (asserted on the object).
async fn put_sha256(server: Server, bucket: &str, key: &str, body: &[u8]) {
    let value = checksum::digest(Algorithm::Sha256, body).base64();
    writer(server)
        .put_object()
        .bucket(bucket)
        .key(key)
        .checksum_algorithm(SdkAlgorithm::Sha256)
        .checksum_sha256(&value)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {bucket}/{key}: {e:?}"));
    let want = Sum::new(Algorithm::Sha256, ChecksumType::FullObject, value);
    assert_eq!(head_sum(server, bucket, key).await.0, Some(want), "{key}");
}

/// A multipart object of `parts` with `alg` of type `kind`: every part sends
/// its value, completion sends the parts' values and, full-object, the whole
/// object's. The object's checksum is asserted to be the one computed here.
async fn put_parts(
    server: Server,
    bucket: &str,
    key: &str,
    parts: &[Vec<u8>],
    alg: Algorithm,
    kind: ChecksumType,
) {
    let s3 = writer(server);
    let sdk_kind = match kind {
        ChecksumType::FullObject => SdkType::FullObject,
        ChecksumType::Composite => SdkType::Composite,
    };
    let up = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .checksum_algorithm(sdk_algorithm(alg))
        .checksum_type(sdk_kind.clone())
        .send()
        .await
        .unwrap_or_else(|e| panic!("create multipart {key}: {e:?}"));
    let id = up.upload_id().expect("upload id");
    let mut done = Vec::new();
    let mut digests = Vec::new();
    for (i, body) in parts.iter().enumerate() {
        let n = i as i32 + 1;
        let d = checksum::digest(alg, body);
        let req = s3
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .part_number(n)
            .checksum_algorithm(sdk_algorithm(alg));
        let p = with_value!(req, alg, d.base64())
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("upload part {n} of {key}: {e:?}"));
        let part = CompletedPart::builder()
            .part_number(n)
            .e_tag(p.e_tag().expect("part etag"));
        done.push(with_value!(part, alg, d.base64()).build());
        digests.push(d);
    }
    let want = match kind {
        ChecksumType::FullObject => checksum::digest(alg, &parts.concat()).full(),
        ChecksumType::Composite => checksum::composite(&digests).expect("composite"),
    };
    let mut complete = s3
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        );
    if kind == ChecksumType::FullObject {
        complete = with_value!(complete, alg, want.value.clone()).checksum_type(sdk_kind);
    }
    complete
        .send()
        .await
        .unwrap_or_else(|e| panic!("complete {key}: {e:?}"));
    let (sum, count) = head_sum(server, bucket, key).await;
    assert_eq!(sum, Some(Sum::new(alg, kind, want.value)), "{key}");
    assert_eq!(count, Some(parts.len() as i32), "{key}");
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

/// `(outcome, error class, proof)` of each key of `job_id`'s report.
type Line = (Outcome, Option<String>, Option<Proof>);

async fn lines(sb: &Sandbox, job_id: &str) -> BTreeMap<String, Line> {
    report_rows(sb, job_id)
        .await
        .into_iter()
        .map(|(k, r)| (k, (r.outcome, r.error_class, r.proof)))
        .collect()
}

fn copied(alg: Algorithm) -> Line {
    (Outcome::Copied, None, Some(Proof::Checksum(alg)))
}

/// `(key, class)` of every key parked in the DLQ, sorted.
async fn parked(server: Server, sb: &Sandbox) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for m in drain_on(server, &sb.dead()).await {
        let batch = common::message::decode(&m.body).expect("DLQ entries are messages");
        for k in batch.keys {
            let f = k.failure.expect("parked keys carry their failure");
            out.push((k.key, f.class));
        }
    }
    out.sort();
    out
}

/// `commander run` of `src` → `dst` as `job`, asserted to succeed.
fn enqueue(sb: &Sandbox, src: &str, dst: &str, job: &str) {
    sb.commander(&["run", "-s", src, "-t", dst, "--job-id", job])
        .assert_ok("commander run");
}

/// `executor --mode MODE --until-empty` plus `extra`.
fn work(sb: &Sandbox, mode: &str, extra: &[&str]) -> testsupport::runs::Run {
    let mut args = vec!["--mode", mode, "--until-empty"];
    args.extend_from_slice(extra);
    sb.executor(&args)
}

/// Sources with each kind of checksum a writer can choose, copied in `mode`:
/// every target ends with its source's algorithm, type and value, proven so.
async fn targets_keep_the_source_checksum(mode: &str) {
    let Some(ls) = Server::localstack() else {
        return;
    };
    let src = ls.bucket("ck-src").await;
    let dst = ls.bucket("ck-dst").await;
    put_plain(ls, &src, "default.bin", &bytes(300_000, 1)).await;
    put_sha256(ls, &src, "sha256.txt", &bytes(200_000, 2)).await;
    let full = three_parts(3);
    put_parts(
        ls,
        &src,
        "crc32c-full.bin",
        &full,
        Algorithm::Crc32c,
        ChecksumType::FullObject,
    )
    .await;
    let comp = three_parts(4);
    put_parts(
        ls,
        &src,
        "crc32-composite.bin",
        &comp,
        Algorithm::Crc32,
        ChecksumType::Composite,
    )
    .await;

    let job = format!("keep-{mode}");
    let sb = sandbox(ls, &format!("ck-keep-{mode}"));
    sb.init();
    enqueue(&sb, &src, &dst, &job);
    work(&sb, mode, &SIZES).assert_ok(mode);

    let want = BTreeMap::from([
        ("crc32-composite.bin".to_string(), Algorithm::Crc32),
        ("crc32c-full.bin".to_string(), Algorithm::Crc32c),
        ("default.bin".to_string(), Algorithm::Crc64Nvme),
        ("sha256.txt".to_string(), Algorithm::Sha256),
    ]);
    for key in want.keys() {
        let source = head_sum(ls, &src, key).await;
        let target = head_sum(ls, &dst, key).await;
        assert!(source.0.is_some(), "{key}");
        assert_eq!(target, source, "{mode}: {key}: target vs source");
    }
    let single = ["default.bin", "sha256.txt"];
    let want_lines: BTreeMap<String, Line> = want
        .into_iter()
        .map(|(k, a)| {
            // copy mode copies a small source with a plain ETag in one
            // CopyObject without a HEAD (transfer::fast_copy): the source's
            // checksum value is not known there, and the equal ETag is the
            // proof. The targets' checksums are still the sources' (above).
            let line = if mode == "copy" && single.contains(&k.as_str()) {
                (Outcome::Copied, None, Some(Proof::Etag))
            } else {
                copied(a)
            };
            (k, line)
        })
        .collect();
    assert_eq!(lines(&sb, &job).await, want_lines, "{mode}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_targets_keep_the_source_checksum() {
    targets_keep_the_source_checksum("copy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downup_targets_keep_the_source_checksum() {
    targets_keep_the_source_checksum("downup").await;
}

/// A single-part 11 MiB CRC64NVME source, downup'd in 6 MiB parts (2 parts),
/// and a 3-part full-object CRC64NVME one (its layout is reproduced whatever
/// the part size: 3 parts), as job `job`.
async fn downup_in_other_parts(ls: Server, sb: &Sandbox, job: &str) -> (String, String) {
    let src = ls.bucket("ck-src").await;
    let dst = ls.bucket("ck-dst").await;
    put_plain(ls, &src, "single.bin", &bytes(11 * MIB, 5)).await;
    put_parts(
        ls,
        &src,
        "multi.bin",
        &three_parts(6),
        Algorithm::Crc64Nvme,
        ChecksumType::FullObject,
    )
    .await;
    sb.init();
    enqueue(sb, &src, &dst, job);
    work(sb, "downup", &OTHER_SIZES).assert_ok("downup");
    (src, dst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downup_with_other_part_sizes_keeps_an_equal_full_object_crc64nvme() {
    let Some(ls) = Server::localstack() else {
        return;
    };
    let sb = sandbox(ls, "ck-other");
    let (src, dst) = downup_in_other_parts(ls, &sb, "other").await;
    for (key, source_parts, written_parts) in [("single.bin", None, 2), ("multi.bin", Some(3), 3)] {
        let (source, parts) = head_sum(ls, &src, key).await;
        assert_eq!(parts, source_parts, "{key}");
        let (target, target_parts) = head_sum(ls, &dst, key).await;
        assert_eq!(target_parts, Some(written_parts), "{key}");
        let source = source.expect("source checksum");
        assert_eq!(
            (source.algorithm, source.kind.as_str()),
            ("CRC64NVME", "FULL_OBJECT"),
            "{key}"
        );
        assert_eq!(target, Some(source), "{key}");
        if source_parts.is_none() {
            // Other layouts: the ETags cannot prove the copy, the checksum does.
            assert_ne!(etag(ls, &src, key).await, etag(ls, &dst, key).await);
        }
        assert!(
            read(ls, &dst, key).await == read(ls, &src, key).await,
            "{key}"
        );
    }
    let want: BTreeMap<String, Line> = ["multi.bin", "single.bin"]
        .into_iter()
        .map(|k| (k.to_string(), copied(Algorithm::Crc64Nvme)))
        .collect();
    assert_eq!(lines(&sb, "other").await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_proves_other_layouts_by_checksum_and_finds_a_same_size_mismatch() {
    let Some(ls) = Server::localstack() else {
        return;
    };
    let sb = sandbox(ls, "ck-check");
    let (src, dst) = downup_in_other_parts(ls, &sb, "write").await;

    enqueue(&sb, &src, &dst, "check");
    work(&sb, "check", &[]).assert_ok("check");
    let proven = (
        Outcome::Verified,
        None,
        Some(Proof::Checksum(Algorithm::Crc64Nvme)),
    );
    let want: BTreeMap<String, Line> = ["multi.bin", "single.bin"]
        .into_iter()
        .map(|k| (k.to_string(), proven.clone()))
        .collect();
    assert_eq!(lines(&sb, "check").await, want);

    // Same size, other bytes (a CRC64NVME of its own): a mismatch.
    put_plain(ls, &dst, "single.bin", &bytes(11 * MIB, 99)).await;
    enqueue(&sb, &src, &dst, "recheck");
    let run = work(&sb, "check", &[]);
    assert_eq!(run.status.code(), Some(5), "{run:?}");
    let got = lines(&sb, "recheck").await;
    assert_eq!(got["multi.bin"], proven);
    let (outcome, class, _) = &got["single.bin"];
    assert_eq!(
        (outcome, class.as_deref()),
        (&Outcome::Failed, Some("Mismatch")),
        "{got:?}"
    );
    assert_eq!(
        parked(ls, &sb).await,
        [("single.bin".to_string(), "Mismatch".to_string())]
    );
}

/// An 11 MiB source downup'd in 5 MiB parts through the fault proxy, which
/// damages UploadPart bodies (`max_faults` of them; `None`: all).
async fn downup_with_corrupted_parts(
    max_faults: Option<u64>,
) -> Option<(Server, Sandbox, FaultProxy, String, String)> {
    let ls = Server::localstack()?;
    let src = ls.bucket("ck-src").await;
    let dst = ls.bucket("ck-dst").await;
    put_plain(ls, &src, "big.bin", &bytes(11 * MIB, 7)).await;
    let mut sb = sandbox(ls, "ck-corrupt");
    sb.init();
    enqueue(&sb, &src, &dst, "corrupt");
    let faults = FaultConfig {
        s3_rate: 1.0,
        kinds: vec![Fault::CorruptPart],
        max_faults,
        ..FaultConfig::default()
    };
    let proxy = FaultProxy::start(&ls.endpoint(), faults, 17).await;
    sb.set("AWS_ENDPOINT_URL", &proxy.url());
    let run = work(&sb, "downup", &SIZES);
    run.assert_finished("downup through the proxy");
    sb.set("AWS_ENDPOINT_URL", &ls.endpoint());
    Some((ls, sb, proxy, src, dst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_damaged_before_the_write_is_refused_and_the_key_retried() {
    let Some((ls, sb, proxy, src, dst)) = downup_with_corrupted_parts(Some(1)).await else {
        return;
    };
    let stats = proxy.stats();
    assert_eq!(
        stats.corrupted,
        [(400, "BadDigest".to_string())],
        "the server refused the damaged part: {stats:?}"
    );
    let want = BTreeMap::from([("big.bin".to_string(), copied(Algorithm::Crc64Nvme))]);
    assert_eq!(lines(&sb, "corrupt").await, want);
    assert!(read(ls, &dst, "big.bin").await == read(ls, &src, "big.bin").await);
    assert_eq!(
        head_sum(ls, &dst, "big.bin").await.0,
        head_sum(ls, &src, "big.bin").await.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_damaged_on_every_try_fails_the_key_and_writes_nothing() {
    let Some((ls, sb, proxy, _src, dst)) = downup_with_corrupted_parts(None).await else {
        return;
    };
    let stats = proxy.stats();
    assert!(stats.corrupted.len() >= 2, "retried: {stats:?}");
    assert!(
        stats
            .corrupted
            .iter()
            .all(|(status, code)| (*status, code.as_str()) == (400, "BadDigest")),
        "{stats:?}"
    );
    let got = lines(&sb, "corrupt").await;
    let (outcome, class, _) = &got["big.bin"];
    assert_eq!(
        (outcome, class.as_deref()),
        (&Outcome::Failed, Some("BadDigest")),
        "{got:?}"
    );
    assert_eq!(
        parked(ls, &sb).await,
        [("big.bin".to_string(), "BadDigest".to_string())]
    );
    assert_eq!(etag(ls, &dst, "big.bin").await, None);
    let uploads = ls
        .s3()
        .list_multipart_uploads()
        .bucket(&dst)
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "{:?}", uploads.uploads());
}

/// `--no-overwrite` in `mode`: existing targets (single-part and multipart,
/// other bytes) stay as they were and are `target-exists`; missing ones are
/// written.
async fn no_overwrite_keeps_existing_targets(mode: &str) {
    let Some(ls) = Server::localstack() else {
        return;
    };
    let src = ls.bucket("ck-src").await;
    let dst = ls.bucket("ck-dst").await;
    for (key, seed) in [("small.txt", 10), ("new.txt", 11)] {
        put_plain(ls, &src, key, &bytes(1000, seed)).await;
    }
    for (key, seed) in [("big.bin", 12), ("new-big.bin", 13)] {
        let parts = three_parts(seed);
        put_parts(
            ls,
            &src,
            key,
            &parts,
            Algorithm::Crc64Nvme,
            ChecksumType::FullObject,
        )
        .await;
    }
    put_plain(ls, &dst, "small.txt", b"the target's own bytes").await;
    put_plain(ls, &dst, "big.bin", &bytes(11 * MIB, 14)).await;
    let before: Vec<Vec<u8>> = vec![
        read(ls, &dst, "small.txt").await,
        read(ls, &dst, "big.bin").await,
    ];

    let job = format!("keep-{mode}");
    let sb = sandbox(ls, &format!("ck-noov-{mode}"));
    sb.init();
    enqueue(&sb, &src, &dst, &job);
    let mut extra = vec!["--no-overwrite"];
    extra.extend(SIZES);
    let run = work(&sb, mode, &extra);
    run.assert_finished(mode);
    assert!(run.stdout.contains(", 0 failed,"), "{mode}: {}", run.stdout);

    let after: Vec<Vec<u8>> = vec![
        read(ls, &dst, "small.txt").await,
        read(ls, &dst, "big.bin").await,
    ];
    assert!(
        after == before,
        "{mode}: the existing targets were replaced"
    );
    for key in ["new.txt", "new-big.bin"] {
        assert!(
            read(ls, &dst, key).await == read(ls, &src, key).await,
            "{mode}: {key}"
        );
    }
    let got: BTreeMap<String, Outcome> = lines(&sb, &job)
        .await
        .into_iter()
        .map(|(k, (o, _, _))| (k, o))
        .collect();
    let want = BTreeMap::from([
        ("big.bin".to_string(), Outcome::TargetExists),
        ("new-big.bin".to_string(), Outcome::Copied),
        ("new.txt".to_string(), Outcome::Copied),
        ("small.txt".to_string(), Outcome::TargetExists),
    ]);
    assert_eq!(got, want, "{mode}");
    assert!(parked(ls, &sb).await.is_empty(), "{mode}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_with_no_overwrite_keeps_existing_targets() {
    no_overwrite_keeps_existing_targets("copy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downup_with_no_overwrite_keeps_existing_targets() {
    no_overwrite_keeps_existing_targets("downup").await;
}

/// `--no-overwrite` when the executor's look at the target misses it (the
/// proxy hides the target's objects from HEAD, as if they appeared just
/// after the look): the write itself is conditional (`If-None-Match: *` on
/// CopyObject, PutObject and CompleteMultipartUpload), the server refuses
/// it, the key is `target-exists`, and no upload is left behind.
///
/// In copy mode the small target's bytes are not asserted: LocalStack
/// 2026.3.0 answers a CopyObject with `If-None-Match: *` onto an existing key
/// 412 as AWS does, but has already written the source's bytes into the
/// target (cut to the target's length, the target's checksum kept): a server
/// bug, not ours. Its outcome is still asserted.
async fn no_overwrite_writes_are_conditional(mode: &str) {
    let Some(ls) = Server::localstack() else {
        return;
    };
    let src = ls.bucket("ck-src").await;
    let dst = ls.bucket("ck-dst").await;
    put_plain(ls, &src, "small.txt", &bytes(1000, 20)).await;
    let parts = three_parts(21);
    put_parts(
        ls,
        &src,
        "big.bin",
        &parts,
        Algorithm::Crc64Nvme,
        ChecksumType::FullObject,
    )
    .await;
    put_plain(ls, &dst, "small.txt", b"the target's own bytes").await;
    put_plain(ls, &dst, "big.bin", &bytes(11 * MIB, 22)).await;
    let kept: &[&str] = if mode == "copy" {
        &["big.bin"]
    } else {
        &["small.txt", "big.bin"]
    };
    let mut before = Vec::new();
    for key in kept {
        before.push(read(ls, &dst, key).await);
    }

    let job = format!("race-{mode}");
    let mut sb = sandbox(ls, &format!("ck-race-{mode}"));
    sb.init();
    enqueue(&sb, &src, &dst, &job);
    let faults = FaultConfig {
        hidden_buckets: vec![dst.clone()],
        ..FaultConfig::default()
    };
    let proxy = FaultProxy::start(&ls.endpoint(), faults, 23).await;
    sb.set("AWS_ENDPOINT_URL", &proxy.url());
    let mut extra = vec!["--no-overwrite"];
    extra.extend(SIZES);
    let run = work(&sb, mode, &extra);
    sb.set("AWS_ENDPOINT_URL", &ls.endpoint());
    run.assert_finished(mode);
    assert!(run.stdout.contains(", 0 failed,"), "{mode}: {}", run.stdout);
    let hidden = proxy
        .stats()
        .faulted
        .get(&("HeadObject".to_string(), "Hidden404".to_string()))
        .copied()
        .unwrap_or(0);
    assert!(hidden >= 2, "{mode}: {:?}", proxy.stats());

    let mut after = Vec::new();
    for key in kept {
        after.push(read(ls, &dst, key).await);
    }
    assert!(
        after == before,
        "{mode}: the existing targets were replaced"
    );
    let got: BTreeMap<String, Outcome> = lines(&sb, &job)
        .await
        .into_iter()
        .map(|(k, (o, _, _))| (k, o))
        .collect();
    let want = BTreeMap::from([
        ("big.bin".to_string(), Outcome::TargetExists),
        ("small.txt".to_string(), Outcome::TargetExists),
    ]);
    assert_eq!(got, want, "{mode}");
    assert!(parked(ls, &sb).await.is_empty(), "{mode}");
    let uploads = ls
        .s3()
        .list_multipart_uploads()
        .bucket(&dst)
        .send()
        .await
        .unwrap();
    assert!(
        uploads.uploads().is_empty(),
        "{mode}: {:?}",
        uploads.uploads()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_with_no_overwrite_writes_conditionally() {
    no_overwrite_writes_are_conditional("copy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downup_with_no_overwrite_writes_conditionally() {
    no_overwrite_writes_are_conditional("downup").await;
}
