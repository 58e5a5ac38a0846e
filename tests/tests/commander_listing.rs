//! `commander run` with the parallel ListObjectsV2 lister against moto: every
//! key exactly once (nested prefixes, range splits, tricky keys), message size
//! limits with 1,024-byte keys, `--start-after` and `--dry-run`.

mod commander_support;

use commander_support::*;
use testsupport::runs::drain;

fn tricky_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "a/",
        "a//b",
        "a/b/",
        "sp ace/x y",
        "plus+sign",
        "pct%41%",
        "q?x",
        "h#x",
        "ü/ñ/ß",
        "~tilde",
        "emoji/🦀",
        "amp&eq=",
        "dir/",
        "dir/sub/",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    keys.push("L".repeat(1024));
    keys.push(format!("deep/{}", "é".repeat(509)));
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_listing_sends_every_key_exactly_once() {
    let bucket = testsupport::bucket("cmd-list").await;
    let mut keys = Vec::new();
    for a in 0..10 {
        for b in 0..10 {
            for c in 0..15 {
                keys.push(format!("n/{a}/{b}/{c:02}.dat"));
            }
            keys.push(format!("n/{a}/{b}"));
        }
        keys.push(format!("n/{a}/top-{a}"));
    }
    for i in 0..1400 {
        keys.push(format!("flat/{i:05}.log"));
    }
    keys.extend(tricky_keys());
    assert!(keys.len() >= 3000);
    put_many(&bucket, &keys, Some(b"x")).await;

    let sb = sandbox(3);
    let (run, summary) = run_json(
        &sb,
        &[
            "-s",
            &bucket,
            "-t",
            "target-bucket",
            "--list-depth",
            "2",
            "--list-page-size",
            "100",
            "--list-concurrency",
            "8",
            "-b",
            "97",
        ],
    );
    run.assert_ok("commander run");
    let batches = read_back(&sb, 3).await;
    assert_exactly(&batches, &keys);
    assert_eq!(num(&summary, "objects"), keys.len() as u64);
    assert_eq!(num(&summary, "bytes"), keys.len() as u64);
    assert_eq!(num(&summary, "messages"), batches.len() as u64);
    for (_, _, b) in &batches {
        assert!(b.keys.len() <= 97);
        assert_eq!(b.source, format!("s3://{bucket}"));
        assert_eq!(b.target, "s3://target-bucket");
        assert_eq!(b.job_id, summary["job_id"].as_str().unwrap());
        for k in &b.keys {
            assert_eq!(k.size, Some(1));
            assert!(
                k.etag.as_deref().is_some_and(|e| e.starts_with('"')),
                "{k:?}"
            );
            assert!(k.last_modified.is_some());
        }
    }
    // Messages are spread over every work queue.
    for n in 1..=3 {
        assert!(
            batches.iter().any(|(q, _, _)| *q == n),
            "queue {n} got nothing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flat_prefix_is_split_into_ranges_and_still_sends_each_key_once() {
    let bucket = testsupport::bucket("cmd-flat").await;
    let keys: Vec<String> = (0..260)
        .map(|i| format!("flat/2024-01-{:02}/{i:04}", i % 9))
        .collect();
    put_many(&bucket, &keys, None).await;
    let sb = sandbox(2);
    let run = sb.commander(&[
        "run",
        "-s",
        &bucket,
        "-t",
        "dst-bucket",
        "-p",
        "flat/",
        "--list-depth",
        "0",
        "--list-page-size",
        "10",
        "--split-after-pages",
        "2",
        "--log-level",
        "info,common::listing=debug",
    ]);
    run.assert_ok("commander run");
    assert!(
        run.stderr.contains("range split"),
        "no split happened:\n{}",
        run.stderr
    );
    let batches = read_back(&sb, 2).await;
    assert_exactly(&batches, &keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_keys_respect_the_message_size_limit() {
    let bucket = testsupport::bucket("cmd-long").await;
    let keys: Vec<String> = (0..600)
        .map(|i| {
            let head = format!("long/{i:04}/");
            format!("{head}{}", "k".repeat(1024 - head.len()))
        })
        .collect();
    assert!(keys.iter().all(|k| k.len() == 1024));
    put_many(&bucket, &keys, Some(b"1")).await;
    let sb = sandbox(2);
    let (run, summary) = run_json(&sb, &["-s", &bucket, "-t", "dst-bucket", "-b", "500"]);
    run.assert_ok("commander run");
    let batches = read_back(&sb, 2).await;
    assert_exactly(&batches, &keys);
    const LIMIT: usize = 256 * 1024;
    let total: usize = batches.iter().map(|(_, len, _)| len).sum();
    for (_, len, b) in &batches {
        assert!(*len <= LIMIT, "message of {len} bytes");
        assert!(b.keys.len() < 500, "size, not count, closes these batches");
    }
    // Each SendMessageBatch call stays under the limit too: since every message
    // is over half of it, each call can only carry one.
    assert!(batches.iter().all(|(_, len, _)| *len > LIMIT / 2));
    assert_eq!(num(&summary, "send_calls"), batches.len() as u64);
    assert!(total > LIMIT, "the test must need several messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn start_after_resumes_and_dry_run_sends_nothing() {
    let bucket = testsupport::bucket("cmd-resume").await;
    let keys: Vec<String> = (0..120).map(|i| format!("r/{i:03}")).collect();
    put_many(&bucket, &keys, Some(b"abc")).await;
    let sb = sandbox(1);

    let (run, summary) = run_json(&sb, &["-s", &bucket, "-t", "dst-bucket", "--dry-run"]);
    run.assert_ok("dry run");
    assert_eq!(num(&summary, "objects"), 120);
    assert_eq!(num(&summary, "bytes"), 360);
    assert_eq!(summary["dry_run"], true);
    assert!(
        drain(&sb.queue(1)).await.is_empty(),
        "a dry run sent messages"
    );

    // A report location gets the job record (`commander status` reads it);
    // runs with the same --job-id add up.
    let reports = tempfile::tempdir().unwrap();
    let mut sb = sb;
    sb.set("REPORT_LOCATION", &reports.path().display().to_string());
    let (run, summary) = run_json(
        &sb,
        &[
            "-s",
            &bucket,
            "-t",
            "dst-bucket",
            "--start-after",
            "r/099",
            "--list-page-size",
            "7",
            "--job-id",
            "resume-job",
        ],
    );
    run.assert_ok("resume");
    let record = || -> serde_json::Value {
        let path = reports.path().join("resume-job/job.json");
        serde_json::from_slice(&std::fs::read(&path).expect("job record written")).unwrap()
    };
    assert_eq!(record()["objects"], 20);
    assert!(record()["finished_at"].is_string());
    let batches = read_back(&sb, 1).await;
    let want: Vec<String> = keys
        .iter()
        .filter(|k| k.as_str() > "r/099")
        .cloned()
        .collect();
    assert_exactly(&batches, &want);
    assert_eq!(num(&summary, "objects"), 20);
    let (run, _) = run_json(
        &sb,
        &[
            "-s",
            &bucket,
            "-t",
            "dst-bucket",
            "--start-after",
            "r/109",
            "--job-id",
            "resume-job",
        ],
    );
    run.assert_ok("second run of the job");
    assert_eq!(record()["objects"], 30);
    assert_eq!(read_back(&sb, 1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nonexistent_bucket_fails_naming_it() {
    let sb = sandbox(1);
    let missing = testsupport::unique("cmd-missing");
    let run = sb.commander(&["run", "-s", &missing, "-t", "dst-bucket"]);
    assert!(!run.status.success());
    assert!(run.stderr.contains(&missing), "{}", run.stderr);
    assert!(run.stderr.contains("NoSuchBucket"), "{}", run.stderr);
    assert!(drain(&sb.queue(1)).await.is_empty());
}
