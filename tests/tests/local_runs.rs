//! "Runs anywhere": whole migrations through the real `commander` and
//! `executor` binaries on the embedded queue (`--queue local:FILE`), with local
//! directories as one end.
//!
//! - S3 → directory → S3 over the tricky-key corpus: every key a file can hold
//!   comes back byte for byte; every key it cannot hold is parked in the DLQ and
//!   reported with its reason class; nothing is written outside the target.
//! - SIGKILL in the middle of a directory → directory run, then a restart with
//!   `--until-empty`: the target is complete and correct and no temp or part
//!   file is left behind.
//!
//! S3 is the moto server of `scripts/test`; the queue is a SQLite file in the
//! test's temp directory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use common::report::{Outcome, ReportRow};
use common::store::dir::{PART_MARK, TMP_MARK};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use testsupport::runs::{run_bin, signal, spawn_executor, wait_with_limit, Run};
use testsupport::{bucket, keys, put, s3};

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------
// Fixture: one test's queue file, report directory, working directory
// ---------------------------------------------------------------------------

/// A temp directory laid out as `cwd/` (the binaries' working directory),
/// `state/` (queue file and reports) and whatever the test puts beside them.
struct Local {
    tmp: tempfile::TempDir,
    queue_flag: String,
    env: Vec<(String, String)>,
}

impl Local {
    fn new(extra_env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(tmp.path().join("cwd")).unwrap();
        std::fs::create_dir_all(tmp.path().join("state")).unwrap();
        let queue_flag = format!("local:{}", tmp.path().join("state/q.db").display());
        let mut env = vec![
            ("QUEUE_NUM".to_string(), "2".to_string()),
            ("SQS_RECEIVE_MESSAGE_WAIT_TIME".to_string(), "1".to_string()),
            (
                "REPORT_LOCATION".to_string(),
                tmp.path().join("state/reports").display().to_string(),
            ),
            ("MIGRATION_LOG_LEVEL".to_string(), "warn".to_string()),
        ];
        for (k, v) in extra_env {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        let local = Local {
            tmp,
            queue_flag,
            env,
        };
        local.commander(&["init"]).assert_ok("commander init");
        local
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn with_queue<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["--queue", self.queue_flag.as_str()];
        all.extend_from_slice(args);
        all
    }

    fn commander(&self, args: &[&str]) -> Run {
        run_bin(
            "commander",
            &self.with_queue(args),
            &self.env,
            &self.path("cwd"),
            Duration::from_secs(300),
        )
    }

    fn executor(&self, args: &[&str]) -> Run {
        run_bin(
            "executor",
            &self.with_queue(args),
            &self.env,
            &self.path("cwd"),
            Duration::from_secs(300),
        )
    }

    fn spawn_executor(&self, args: &[&str]) -> std::process::Child {
        spawn_executor(&self.with_queue(args), &self.env, &self.path("cwd"))
    }

    /// `commander <args> --json`, asserting success; stdout parsed.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let run = self.commander(&all);
        run.assert_ok(&format!("commander {args:?}"));
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
            panic!(
                "commander {args:?} --json printed no JSON ({e}):\n{}",
                run.stdout
            )
        })
    }

    /// Every report row of `job_id`, latest per source key.
    async fn report_rows(&self, job_id: &str) -> BTreeMap<String, ReportRow> {
        testsupport::runs::report_rows(&self.path("state/reports"), job_id).await
    }
}

/// Files under `root` by `/`-separated relative path, and the directories.
fn walk(root: &Path) -> (BTreeMap<String, Vec<u8>>, BTreeSet<String>) {
    let mut files = BTreeMap::new();
    let mut dirs = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue; // removed while we walk (a temp file renamed away)
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "/");
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                dirs.insert(rel);
                stack.push(p);
            } else if let Ok(data) = std::fs::read(&p) {
                files.insert(rel, data);
            }
        }
    }
    (files, dirs)
}

/// Names of every entry under `root` (no contents), for cheap polling.
fn names(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        }
    }
    out
}

/// Our temp and part files (see `common::store::dir`).
fn is_temp(name: &str) -> bool {
    name.contains(TMP_MARK) || name.contains(PART_MARK)
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

// ---------------------------------------------------------------------------
// S3 → directory → S3 over the tricky-key corpus
// ---------------------------------------------------------------------------

/// Keys a file system can hold, with their bodies (besides the multipart
/// object, the directory marker and the file/prefix pair, added separately).
fn mappable_keys() -> Vec<(String, Vec<u8>)> {
    let names = [
        "plain.txt",
        "with space/file name.txt",
        "plus+sign/a+b c.txt",
        "percent/100%.txt",
        "percent/%41%2F%zz.txt",
        "question/why?.txt",
        "question/?a=1&b=2",
        "hash/#tag#.txt",
        "unicode/ünïcödé/日本語 ファイル.txt",
        "unicode/emoji-🎉.bin",
        "quotes/it's \"quoted\" ;=,.txt",
        "dots/...",
        "dots/..hidden..",
        "dots/.dotfile",
        "nested/a/b/c/d/e/f/g/deep.txt",
        "zero-bytes.bin",
    ];
    let mut out: Vec<(String, Vec<u8>)> = names
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let body = if k.starts_with("zero") {
                Vec::new()
            } else {
                random_bytes(i as u64, 10 + i * 997)
            };
            (k.to_string(), body)
        })
        .collect();
    // A component of exactly 255 bytes is the longest a file name can be.
    out.push((format!("long-ok/{}", "y".repeat(255)), b"255".to_vec()));
    out
}

/// Keys a directory cannot hold, with the reason class they must be parked under.
fn unmappable_keys() -> Vec<(String, Vec<u8>)> {
    // A 1,024-byte key (S3's maximum) whose last component is over 255 bytes.
    let too_long = format!("too-long/{}", "z".repeat(1024 - "too-long/".len()));
    assert_eq!(too_long.len(), 1024);
    vec![
        ("a//b".to_string(), b"double slash".to_vec()),
        ("../x".to_string(), b"escape attempt".to_vec()),
        ("../../etc/escape".to_string(), b"escape attempt 2".to_vec()),
        ("a/./b".to_string(), b"dot component".to_vec()),
        ("a/../../y".to_string(), b"dotdot inside".to_vec()),
        (too_long, b"too long".to_vec()),
        ("notempty/".to_string(), b"a marker with content".to_vec()),
        (
            format!("sneaky/.f{}0123", TMP_MARK),
            b"named like our temp files".to_vec(),
        ),
    ]
}

const MARKER: &str = "marker/";
const MULTIPART_KEY: &str = "big/multipart object.bin";
const CONFLICT: [&str; 2] = ["p/q", "p/q/r"];

/// Upload `body` as a multipart object with 5 MiB parts (moto's minimum).
async fn put_multipart(bucket: &str, key: &str, body: &[u8]) {
    let client = s3();
    let up = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("create multipart");
    let id = up.upload_id().expect("upload id").to_string();
    let mut parts = Vec::new();
    for (i, chunk) in body.chunks(5 * MIB).enumerate() {
        let n = i as i32 + 1;
        let out = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(chunk.to_vec()))
            .send()
            .await
            .expect("upload part");
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(out.e_tag().expect("part etag"))
                .build(),
        );
    }
    let done = client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .expect("complete multipart");
    assert!(
        done.e_tag().unwrap_or_default().contains("-2"),
        "the fixture must be a 2-part object: {:?}",
        done.e_tag()
    );
}

async fn get(bucket: &str, key: &str) -> Vec<u8> {
    s3().get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {bucket}/{key}: {e:?}"))
        .body
        .collect()
        .await
        .expect("read body")
        .into_bytes()
        .to_vec()
}

#[tokio::test]
async fn s3_to_directory_to_s3_round_trips_tricky_keys_and_parks_unmappable_ones() {
    let local = Local::new(&[]);
    let first = bucket("lr-src").await;
    let second = bucket("lr-back").await;

    // The corpus in the first bucket.
    let mappable = mappable_keys();
    let unmappable = unmappable_keys();
    for (k, body) in mappable.iter().chain(&unmappable) {
        put(&first, k, body.clone()).await;
    }
    put(&first, MARKER, Vec::new()).await;
    for k in CONFLICT {
        put(&first, k, format!("body of {k}").into_bytes()).await;
    }
    let big = random_bytes(99, 5 * MIB + 700 * 1024);
    put_multipart(&first, MULTIPART_KEY, &big).await;
    let listed: BTreeSet<String> = keys(&first).await.into_iter().collect();
    let expected_listed = mappable.len() + unmappable.len() + 1 + CONFLICT.len() + 1;
    assert_eq!(
        listed.len(),
        expected_listed,
        "moto must hold every corpus key as given: {listed:?}"
    );

    // Leg 1: S3 → directory, copy mode (streams: one end is a directory).
    std::fs::create_dir_all(local.path("area/inner")).unwrap();
    let target = local.path("area/inner/target");
    let target_s = target.display().to_string();
    local
        .commander(&[
            "run",
            "-s",
            &format!("s3://{first}"),
            "-t",
            &target_s,
            "--job-id",
            "to-dir",
            "-b",
            "4",
        ])
        .assert_ok("commander run S3 → directory");
    let exec_flags = [
        "--until-empty",
        "--multipart-threshold",
        "5MiB",
        "--part-size",
        "5MiB",
        "--concurrency",
        "8",
    ];
    let mut args = vec!["--mode", "copy"];
    args.extend(exec_flags);
    let run = local.executor(&args);
    // Unmappable keys are parked: the run ends with failures (exit 5).
    assert_eq!(run.status.code(), Some(5), "{run:?}");

    // Exactly one of the file/prefix pair fits; the other is a KeyConflict.
    let (files, dirs) = walk(&target);
    let winner = match (
        files.contains_key(CONFLICT[0]),
        files.contains_key(CONFLICT[1]),
    ) {
        (true, false) => CONFLICT[0],
        (false, true) => CONFLICT[1],
        other => panic!(
            "exactly one of {CONFLICT:?} must be written, got {other:?}; files: {:?}",
            files.keys()
        ),
    };
    let loser = CONFLICT.iter().copied().find(|k| *k != winner).unwrap();

    // The target holds every mappable key's bytes and nothing else.
    let mut expected: BTreeMap<String, Vec<u8>> = mappable.iter().cloned().collect();
    expected.insert(MULTIPART_KEY.to_string(), big.clone());
    expected.insert(winner.to_string(), format!("body of {winner}").into_bytes());
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "files in the target directory"
    );
    for (k, body) in &expected {
        assert!(
            files[k] == *body,
            "bytes of {k:?} in the target directory differ"
        );
    }
    assert!(
        dirs.contains("marker"),
        "the directory marker `marker/` makes a directory: {dirs:?}"
    );

    // Nothing was written outside the target: the only things beside it are
    // the directories the test made, the queue file and the reports.
    let (outside, outside_dirs) = walk(&local.path("area"));
    let stray: Vec<_> = outside
        .keys()
        .chain(&outside_dirs)
        .filter(|p| *p != "inner" && *p != "inner/target" && !p.starts_with("inner/target/"))
        .collect();
    assert!(
        stray.is_empty(),
        "written outside the target directory: {stray:?}"
    );
    let top: BTreeSet<String> = std::fs::read_dir(local.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        top,
        ["area", "cwd", "state"].map(String::from).into(),
        "the test's temp dir"
    );
    let (cwd_files, _) = walk(&local.path("cwd"));
    assert!(
        cwd_files.is_empty(),
        "files written in the working directory: {:?}",
        cwd_files.keys()
    );

    // The DLQ holds every unmappable key with its reason class, and only those.
    let mut want_class: BTreeMap<String, &str> = unmappable
        .iter()
        .map(|(k, _)| (k.clone(), "UnmappableKey"))
        .collect();
    want_class.insert(loser.to_string(), "KeyConflict");
    let dlq = local.json(&["dlq", "--examples", "100"]);
    let classes = dlq["classes"].as_object().expect("classes");
    assert_eq!(
        classes.keys().collect::<BTreeSet<_>>(),
        BTreeSet::from([&"KeyConflict".to_string(), &"UnmappableKey".to_string()]),
        "DLQ classes: {dlq:#}"
    );
    assert_eq!(dlq["keys"], want_class.len(), "keys in the DLQ: {dlq:#}");
    for (key, class) in &want_class {
        let examples = classes[*class]["examples"].as_array().expect("examples");
        assert!(
            examples.iter().any(|e| e
                .as_str()
                .is_some_and(|e| e.starts_with(&format!("{key}: ")))),
            "{key:?} is not in the DLQ under {class}: {examples:#?}"
        );
    }

    // The reports: one failed row per unmappable key with its class, every
    // other key copied; the summary counts the classes.
    let rows = local.report_rows("to-dir").await;
    for (key, class) in &want_class {
        let row = rows
            .get(key)
            .unwrap_or_else(|| panic!("no report row for {key:?}"));
        assert_eq!(row.outcome, Outcome::Failed, "{key:?}: {row:?}");
        assert_eq!(row.error_class.as_deref(), Some(*class), "{key:?}: {row:?}");
        assert!(
            row.error_message.as_deref().is_some_and(|m| !m.is_empty()),
            "{row:?}"
        );
    }
    for key in expected.keys().map(String::as_str).chain([MARKER]) {
        let row = rows
            .get(key)
            .unwrap_or_else(|| panic!("no report row for {key:?}"));
        assert_eq!(row.outcome, Outcome::Copied, "{key:?}: {row:?}");
    }
    let report = local.json(&["report", "--job-id", "to-dir"]);
    let summary = &report["summary"];
    assert_eq!(summary["failed"], want_class.len(), "{report:#}");
    assert_eq!(
        summary["failures"]["UnmappableKey"]["count"],
        unmappable.len(),
        "{report:#}"
    );
    assert_eq!(summary["failures"]["KeyConflict"]["count"], 1, "{report:#}");
    assert_eq!(summary["succeeded"], expected.len() + 1, "{report:#}");

    // Leg 2: directory → the second bucket, downup mode.
    local
        .commander(&[
            "run",
            "-s",
            &target_s,
            "-t",
            &format!("s3://{second}"),
            "--job-id",
            "to-s3",
            "-b",
            "4",
        ])
        .assert_ok("commander run directory → S3");
    let mut args = vec!["--mode", "downup"];
    args.extend(exec_flags);
    local.executor(&args).assert_ok("executor directory → S3");

    // The second bucket equals the first on every mappable key, byte for byte.
    // (A directory marker does not come back: a directory is not an object.)
    let back: BTreeSet<String> = keys(&second).await.into_iter().collect();
    assert_eq!(
        back,
        expected.keys().cloned().collect::<BTreeSet<_>>(),
        "keys of the second bucket"
    );
    for key in expected.keys() {
        let original = get(&first, key).await;
        assert!(
            get(&second, key).await == original,
            "bytes of {key:?} differ after the round trip"
        );
    }
    let report = local.json(&["report", "--job-id", "to-s3"]);
    assert_eq!(report["summary"]["failed"], 0, "{report:#}");
    assert_eq!(report["summary"]["succeeded"], expected.len(), "{report:#}");
    // Leg 2 parked nothing new.
    let dlq = local.json(&["dlq", "--examples", "0"]);
    assert_eq!(dlq["keys"], want_class.len(), "{dlq:#}");
}

// ---------------------------------------------------------------------------
// SIGKILL mid-run, restart
// ---------------------------------------------------------------------------

#[test]
fn sigkill_mid_run_then_restart_leaves_a_complete_target_and_no_temp_files() {
    // A short visibility timeout: the killed executor's messages come back soon.
    let local = Local::new(&[("SQS_VISIBILITY_TIMEOUT", "3"), ("QUEUE_NUM", "1")]);
    let source = local.path("source");
    let target = local.path("target");

    // Small files first in listing order, then large ones of several parts.
    let mut want: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in 0..24u64 {
        let len = [0, 1, 4096, 70_000][i as usize % 4] + i as usize;
        want.insert(
            format!("a-small/d{}/f-{i:02}.bin", i % 3),
            random_bytes(i, len),
        );
    }
    for i in 0..4u64 {
        want.insert(
            format!("z-big/big {i}.bin"),
            random_bytes(1000 + i, 24 * MIB + 12_345),
        );
    }
    for (k, body) in &want {
        let p = source.join(k);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    let (source_s, target_s) = (source.display().to_string(), target.display().to_string());
    local
        .commander(&[
            "run", "-s", &source_s, "-t", &target_s, "--job-id", "killed", "-b", "4",
        ])
        .assert_ok("commander run directory → directory");
    let args = [
        "--mode",
        "copy",
        "--until-empty",
        "--multipart-threshold",
        "5MiB",
        "--part-size",
        "5MiB",
        "--concurrency",
        "2",
        "--part-concurrency",
        "1",
    ];

    // Kill -9 once some files are done and a large one has parts on disk.
    let mut child = local.spawn_executor(&args);
    let start = Instant::now();
    let seen = loop {
        let now = names(&target);
        let done = now
            .iter()
            .filter(|n| n.ends_with(".bin") && !is_temp(n))
            .count();
        let parts: Vec<&String> = now
            .iter()
            .filter(|n| n.contains(PART_MARK) && !n.ends_with("meta"))
            .collect();
        if done >= 2 && !parts.is_empty() {
            signal(&child, "KILL");
            break parts.into_iter().cloned().collect::<Vec<_>>();
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            let run = wait_with_limit(child, Duration::from_secs(5), "executor");
            panic!(
                "the executor ended ({status}) before it was caught mid-run (files done: {done}); stderr:\n{}",
                run.stderr
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the executor made no progress in 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let killed = wait_with_limit(child, Duration::from_secs(30), "killed executor");
    assert!(
        !killed.status.success(),
        "the executor was killed: {:?}",
        killed.status
    );
    // The premise: the kill left the work half done, temp files included.
    let leftovers: Vec<String> = names(&target).into_iter().filter(|n| is_temp(n)).collect();
    assert!(
        !leftovers.is_empty(),
        "the kill should leave part files behind (seen before the kill: {seen:?})"
    );
    let (files, _) = walk(&target);
    let finished = files.keys().filter(|k| !is_temp(k)).count();
    assert!(
        finished < want.len(),
        "the kill came after every file was done: nothing to recover"
    );

    // Restart: the held messages come back after the visibility timeout.
    let again = local.executor(&args);
    again.assert_ok("executor after the kill");

    // Every file complete and correct (temp files aside), nothing parked.
    let (files, dirs) = walk(&target);
    assert_eq!(
        files.keys().filter(|k| !is_temp(k)).collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "files in the target"
    );
    for (k, body) in &want {
        assert!(files[k] == *body, "bytes of {k:?} differ in the target");
    }
    let dlq = local.json(&["dlq"]);
    assert_eq!(dlq["messages"], 0, "nothing may be parked: {dlq:#}");
    // (Rows the killed executor still buffered are lost, so the report may
    // count fewer keys than the target holds; none of them failed.)
    let report = local.json(&["report", "--job-id", "killed"]);
    assert_eq!(report["summary"]["failed"], 0, "{report:#}");
    // And no temp or part file of the killed executor is left behind.
    let temps: Vec<&String> = files.keys().chain(&dirs).filter(|n| is_temp(n)).collect();
    assert!(
        temps.is_empty(),
        "temp/part files left under the target after the restart (the killed executor's \
         uploads and temp files are never removed): {temps:?}"
    );
}
