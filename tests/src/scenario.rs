//! Building blocks of the fault-injection scenarios (`tests/tests/scenarios.rs`):
//! a seeded corpus of small and multipart objects, one migration job driven
//! through the real binaries with the fault proxy as their only endpoint, what
//! the DLQ and the completion reports say happened, and the final proof that
//! nothing was lost — a check job without faults plus an independent
//! byte-for-byte comparison of every target object with its source.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::faultproxy::Stats;
use crate::runs::{drain, run_bin, Run, Sandbox};
use crate::{endpoint, s3};

/// One MiB.
pub const MIB: usize = 1024 * 1024;

/// Executor flags that make 11–16 MiB objects multipart (5 MiB parts).
pub const SMALL_PARTS: [&str; 4] = ["--multipart-threshold", "5MiB", "--part-size", "5MiB"];

/// Deterministic pseudo-random bytes (the corpus is the same for a given seed).
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = vec![0u8; len];
    rng.fill(&mut out[..]);
    out
}

/// Hex MD5 of some bytes.
pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

/// Upload `body` as a multipart object with parts of `part` bytes, so that its
/// ETag is `…-N` and a copy must reproduce the layout to keep it.
pub async fn put_multipart(bucket: &str, key: &str, body: &[u8], part: usize) {
    let c = s3();
    let up = c
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .content_type("application/octet-stream")
        .metadata("origin", "scenario")
        .send()
        .await
        .unwrap_or_else(|e| panic!("create upload {bucket}/{key}: {e:?}"));
    let id = up.upload_id().expect("upload id");
    let mut parts = Vec::new();
    for (i, chunk) in body.chunks(part).enumerate() {
        let n = i as i32 + 1;
        let p = c
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(chunk.to_vec()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("upload part {n} of {bucket}/{key}: {e:?}"));
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(p.e_tag().expect("part etag"))
                .build(),
        );
    }
    c.complete_multipart_upload()
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
        .unwrap_or_else(|e| panic!("complete {bucket}/{key}: {e:?}"));
}

/// A source bucket filled with a seeded corpus.
pub struct Corpus {
    /// The source bucket.
    pub bucket: String,
    /// Every key with the MD5 of its content.
    pub md5: BTreeMap<String, String>,
    /// Keys of the multipart objects.
    pub multipart: Vec<String>,
}

/// Fill a new bucket with `small` objects of 0–48 KiB (plain and awkward keys, a
/// few nested levels) and one multipart object per entry of `big_mib` (sizes in
/// MiB, uploaded in 5 MiB parts).
pub async fn corpus(prefix: &str, small: usize, big_mib: &[usize], seed: u64) -> Corpus {
    let bucket = crate::bucket(prefix).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut objects: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..small {
        let key = match i % 10 {
            0 => format!("odd/a b+c {i}.txt"),
            1..=3 => format!("d{}/e{}/obj-{i:04}", i % 3, i % 7),
            _ => format!("flat/obj-{i:04}"),
        };
        let len = if i % 25 == 0 {
            0
        } else {
            rng.random_range(1..48 * 1024)
        };
        objects.push((key, bytes(seed ^ (i as u64 + 1), len)));
    }
    let mut md5: BTreeMap<String, String> = objects
        .iter()
        .map(|(k, b)| (k.clone(), md5_hex(b)))
        .collect();
    futures::stream::iter(objects)
        .map(|(k, b)| {
            let bucket = bucket.clone();
            async move { crate::put(&bucket, &k, b).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let mut multipart = Vec::new();
    for (i, mib) in big_mib.iter().enumerate() {
        let key = format!("big/multi-{i}.bin");
        let body = bytes(seed.wrapping_mul(31) + i as u64, mib * MIB + 12_345);
        put_multipart(&bucket, &key, &body, 5 * MIB).await;
        md5.insert(key.clone(), md5_hex(&body));
        multipart.push(key);
    }
    Corpus {
        bucket,
        md5,
        multipart,
    }
}

/// What an object is, as the final comparison sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub md5: String,
    pub etag: String,
    pub size: usize,
}

/// Read one object (through the test server directly).
pub async fn seen(bucket: &str, key: &str) -> Option<Seen> {
    let out = match s3().get_object().bucket(bucket).key(key).send().await {
        Ok(o) => o,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return None,
        Err(e) => panic!("get {bucket}/{key}: {e:?}"),
    };
    let etag = out.e_tag().unwrap_or_default().to_string();
    let data = out
        .body
        .collect()
        .await
        .unwrap_or_else(|e| panic!("read {bucket}/{key}: {e:?}"))
        .into_bytes();
    Some(Seen {
        md5: md5_hex(&data),
        etag,
        size: data.len(),
    })
}

/// Every object of a bucket: key → content MD5, ETag, size.
pub async fn snapshot(bucket: &str) -> BTreeMap<String, Seen> {
    let keys = crate::keys(bucket).await;
    futures::stream::iter(keys)
        .map(|k| async move {
            let s = seen(bucket, &k)
                .await
                .unwrap_or_else(|| panic!("{bucket}/{k} listed but gone"));
            Ok::<_, ()>((k, s))
        })
        .buffer_unordered(16)
        .try_collect()
        .await
        .expect("snapshot")
}

/// The independent proof: the target holds exactly the source's keys, each with
/// the same bytes (MD5), size and ETag (multipart layouts reproduced). Returns
/// the number of objects compared.
pub async fn assert_exact(src: &str, dst: &str) -> usize {
    let a = snapshot(src).await;
    let b = snapshot(dst).await;
    let ka: BTreeSet<&String> = a.keys().collect();
    let kb: BTreeSet<&String> = b.keys().collect();
    let missing: Vec<_> = ka.difference(&kb).collect();
    let extra: Vec<_> = kb.difference(&ka).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{dst}: missing {missing:?}, unexpected {extra:?}"
    );
    for (k, s) in &a {
        let t = &b[k];
        assert_eq!(s.md5, t.md5, "{dst}/{k}: bytes differ from the source");
        assert_eq!(s.size, t.size, "{dst}/{k}: size");
        assert_eq!(s.etag, t.etag, "{dst}/{k}: ETag (layout not reproduced?)");
    }
    a.len()
}

/// Open multipart uploads on a bucket (key, upload id).
pub async fn open_uploads(bucket: &str) -> Vec<(String, String)> {
    let out = s3()
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("list uploads of {bucket}: {e:?}"));
    out.uploads()
        .iter()
        .map(|u| {
            (
                u.key().unwrap_or_default().to_string(),
                u.upload_id().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A key parked in the DLQ.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Parked {
    pub key: String,
    /// The failure class (`SourceChanged`, `TargetMissing`, …); `-` for a key
    /// without a recorded failure (a message the queue's redrive policy moved).
    pub class: String,
    pub attempts: u32,
    /// Target of the job it belongs to (`s3://bucket`).
    pub target: String,
}

/// What was in the DLQ: the parked keys and the raw bodies (to put back).
#[derive(Debug, Clone, Default)]
pub struct Dlq {
    /// Every parked key, sorted.
    pub parked: Vec<Parked>,
    /// The messages as received.
    pub bodies: Vec<String>,
}

impl Dlq {
    /// Send the drained messages back to the sandbox's DLQ unchanged.
    pub async fn put_back(&self, sb: &Sandbox) {
        let bodies: Vec<&str> = self.bodies.iter().map(String::as_str).collect();
        crate::runs::send_raw(&sb.dead(), &bodies).await;
    }
}

/// Receive and delete everything in the sandbox's DLQ; every body must be a
/// message (the executor never loses a body, but we never plant bad ones here).
pub async fn drain_dlq(sb: &Sandbox) -> Dlq {
    let mut out = Vec::new();
    let mut bodies = Vec::new();
    for m in drain(&sb.dead()).await {
        bodies.push(m.body.clone());
        let batch = common::message::decode(&m.body)
            .unwrap_or_else(|e| panic!("DLQ body is not a message ({e}): {}", m.body));
        for k in batch.keys {
            let (class, attempts) = k
                .failure
                .as_ref()
                .map_or(("-".to_string(), 0), |f| (f.class.clone(), f.attempts));
            out.push(Parked {
                key: k.key,
                class,
                attempts,
                target: batch.target.clone(),
            });
        }
    }
    out.sort();
    Dlq {
        parked: out,
        bodies,
    }
}

/// Decode `%XX` escapes (the failures manifest URL-encodes keys).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).expect("manifest keys are UTF-8")
}

/// Run a binary of the sandbox on a blocking thread, so the fault proxy (served
/// by this test's runtime) keeps answering the child while we wait for it.
pub async fn run_in(sb: &Sandbox, name: &str, args: &[&str]) -> Run {
    let env = sb.env.clone();
    let dir = sb.dir.path().to_path_buf();
    let name = name.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_bin(&name, &args, &env, &dir, Duration::from_secs(300))
    })
    .await
    .expect("binary runner thread")
}

/// `commander ARGS` with the sandbox's environment (see [`run_in`]).
pub async fn commander(sb: &Sandbox, args: &[&str]) -> Run {
    let server = sb.server;
    tokio::task::spawn_blocking(move || crate::runs::ensure_placeholder_targets(server))
        .await
        .expect("placeholder targets");
    run_in(sb, "commander", args).await
}

/// `executor ARGS` with the sandbox's environment (see [`run_in`]).
pub async fn executor(sb: &Sandbox, args: &[&str]) -> Run {
    run_in(sb, "executor", args).await
}

/// What the completion reports of one job say.
#[derive(Debug, Clone, Default)]
pub struct JobOutcome {
    /// `commander report --json` as printed.
    pub json: Value,
    /// Keys whose latest outcome is `failed`.
    pub failed: BTreeSet<String>,
}

/// `commander report --job-id JOB --json --failures-manifest …`, asserted to
/// succeed; the failed keys are read back from the manifest.
pub async fn job_outcome(sb: &Sandbox, job: &str) -> JobOutcome {
    let manifest = sb.dir.path().join(format!("{job}-failed.csv"));
    let run = commander(
        sb,
        &[
            "report",
            "--job-id",
            job,
            "--json",
            "--failures-manifest",
            &manifest.display().to_string(),
        ],
    )
    .await;
    run.assert_ok("commander report");
    let json: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}): {}", run.stdout));
    let failed = std::fs::read_to_string(&manifest)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(','))
        .map(|(_, k)| percent_decode(k))
        .collect();
    JobOutcome { json, failed }
}

/// Point both binaries at `url` for S3 and SQS (the proxy, or the server itself).
pub fn via(sb: &mut Sandbox, url: &str) {
    sb.set("AWS_ENDPOINT_URL", url);
}

/// Point both binaries straight at the test server (no faults).
pub fn direct(sb: &mut Sandbox) {
    via(sb, &endpoint());
}

/// `commander run -s SRC -t DST --job-id JOB -b BATCH` (plus `extra`), asserted to succeed.
pub async fn enqueue(
    sb: &Sandbox,
    src: &str,
    dst: &str,
    job: &str,
    batch: usize,
    extra: &[&str],
) -> Run {
    let b = batch.to_string();
    let mut args = vec!["run", "-s", src, "-t", dst, "--job-id", job, "-b", &b];
    args.extend_from_slice(extra);
    let run = commander(sb, &args).await;
    run.assert_ok("commander run");
    run
}

/// The executor's closing summary line (`executor: …`).
pub fn summary_line(run: &Run) -> String {
    run.stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("executor:"))
        .unwrap_or_default()
        .to_string()
}

/// Result of [`final_check`].
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// Objects compared byte for byte with the SDK.
    pub compared: usize,
    /// The check executor's summary line.
    pub summary: String,
}

/// The end of every scenario: without faults, a check job over the whole source
/// (`commander run` + `executor --mode check --until-empty`) must park nothing,
/// and an independent SDK comparison must find every target object identical to
/// its source (bytes, size, ETag) with no key missing or extra. The DLQ must be
/// empty before it starts (the scenario accounted for what it parked).
pub async fn final_check(sb: &mut Sandbox, src: &str, dst: &str, job: &str) -> CheckResult {
    direct(sb);
    let left = drain_dlq(sb).await.parked;
    assert!(
        left.is_empty(),
        "the scenario left unaccounted keys in the DLQ: {left:?}"
    );
    enqueue(sb, src, dst, job, 25, &[]).await;
    let mut args = vec!["--mode", "check", "--until-empty"];
    args.extend(SMALL_PARTS);
    let run = executor(sb, &args).await;
    run.assert_ok("executor --mode check");
    let summary = summary_line(&run);
    assert!(summary.contains(", 0 failed"), "check: {summary}");
    let parked = drain_dlq(sb).await.parked;
    assert!(parked.is_empty(), "check parked {parked:?}");
    let compared = assert_exact(src, dst).await;
    CheckResult { compared, summary }
}

/// Faults injected, summed per kind.
pub fn faults_by_kind(stats: &Stats) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for ((_, kind), n) in &stats.faulted {
        *out.entry(kind.clone()).or_default() += n;
    }
    out
}

/// Faults injected, summed per operation.
pub fn faults_by_op(stats: &Stats) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for ((op, _), n) in &stats.faulted {
        *out.entry(op.clone()).or_default() += n;
    }
    out
}

/// Print `[name +12.3s] what` to stderr: where a scenario's time goes.
pub fn mark(name: &str, t0: std::time::Instant, what: &str) {
    eprintln!("[{name} +{:.1}s] {what}", t0.elapsed().as_secs_f64());
}

/// One scenario's figures for the closing note, printed to stderr.
pub fn print_figures(
    name: &str,
    stats: &Stats,
    parked: &[Parked],
    summaries: &[String],
    check: &CheckResult,
    elapsed: Duration,
) {
    let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
    for p in parked {
        *classes.entry(p.class.as_str()).or_default() += 1;
    }
    eprintln!("==== scenario {name} ({:.1} s)", elapsed.as_secs_f64());
    let delays = faults_by_kind(stats).get("Delay").copied().unwrap_or(0);
    eprintln!(
        "  proxy: {} requests, {} faulted; retries forced: {} (every fault but a delay is a retry the SDK or our backoff had to make)",
        stats.requests,
        stats.total_faults(),
        stats.total_faults() - delays
    );
    eprintln!("  faults by kind: {:?}", faults_by_kind(stats));
    eprintln!("  faults by operation: {:?}", faults_by_op(stats));
    eprintln!("  keys parked: {} {:?}", parked.len(), classes);
    for s in summaries {
        eprintln!("  {s}");
    }
    eprintln!(
        "  final check: {} objects byte-identical, 0 missing; {}",
        check.compared, check.summary
    );
}
