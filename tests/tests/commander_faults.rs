//! `commander run` through the fault-injecting proxy in front of moto's SQS:
//! entries that fail inside a SendMessageBatch are retried (every key still
//! arrives exactly once), and a send that keeps failing stops the run with a
//! non-zero exit, the count of keys sent and a `--start-after` hint with which
//! a second run delivers every missing key.

mod commander_support;

use std::collections::BTreeSet;
use std::time::Duration;

use commander_support::*;
use testsupport::faultproxy::{Fault, FaultConfig, FaultProxy};
use testsupport::runs::{depths, run_bin};

fn send_faults(kinds: Vec<Fault>, rate: f64) -> FaultConfig {
    FaultConfig {
        sqs_rate: rate,
        kinds,
        sqs_ops: vec!["SendMessageBatch".to_string()],
        ..FaultConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_batch_entries_are_retried() {
    let bucket = testsupport::bucket("cmd-retry").await;
    let keys: Vec<String> = (0..400).map(|i| format!("k/{i:04}")).collect();
    put_many(&bucket, &keys, Some(b"1")).await;
    let proxy = FaultProxy::start(
        &testsupport::endpoint(),
        send_faults(vec![Fault::BatchEntries], 0.5),
        11,
    )
    .await;
    let mut sb = sandbox(2);
    sb.set("SQS_ENDPOINT_URL", &proxy.url());
    let (run, summary) = run_json(&sb, &["-s", &bucket, "-t", "dst-bucket", "-b", "10"]);
    run.assert_ok("run through faults");
    assert!(
        proxy.stats().total_faults() > 0,
        "the proxy injected nothing"
    );
    assert_exactly(&read_back(&sb, 2).await, &keys);
    assert_eq!(num(&summary, "objects"), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_that_keeps_failing_stops_with_a_resume_point() {
    let bucket = testsupport::bucket("cmd-resume").await;
    let keys: Vec<String> = (0..1000).map(|i| format!("d{}/k{i:04}", i % 7)).collect();
    put_many(&bucket, &keys, Some(b"1")).await;
    // Phase 1: sends are slow, so the run is still going when phase 2 starts.
    let slow = FaultConfig {
        delay: Duration::from_millis(300),
        ..send_faults(vec![Fault::Delay], 1.0)
    };
    let proxy = FaultProxy::start(&testsupport::endpoint(), slow, 5).await;
    let mut sb = sandbox(1);
    sb.set("SQS_ENDPOINT_URL", &proxy.url());
    let args: Vec<String> = [
        "run",
        "-s",
        &bucket,
        "-t",
        "dst-bucket",
        "-b",
        "5",
        "--list-page-size",
        "20",
        "--send-concurrency",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (env, dir) = (sb.env.clone(), sb.dir.path().to_path_buf());
    let first = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_bin("commander", &args, &env, &dir, Duration::from_secs(300))
    });
    // Phase 2, once some messages are in: every send fails (after retries).
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
    assert!(first.stderr.contains("keys were sent"), "{}", first.stderr);
    assert!(
        first.stderr.contains(&sb.queue(1)),
        "the error names the queue: {}",
        first.stderr
    );
    let hint = first
        .stderr
        .split("--start-after '")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .map(str::to_string);
    let sent_first: BTreeSet<String> = key_counts(&read_back(&sb, 1).await).into_keys().collect();
    assert!(
        !sent_first.is_empty() && sent_first.len() < keys.len(),
        "{} sent",
        sent_first.len()
    );

    // Resume without faults: the union of both runs is every key.
    proxy.set_config(FaultConfig::default());
    let mut args = vec!["-s", bucket.as_str(), "-t", "dst-bucket"];
    if let Some(h) = &hint {
        args.extend(["--start-after", h.as_str()]);
    }
    let (second, _) = run_json(&sb, &args);
    second.assert_ok("resumed run");
    let sent_second: BTreeSet<String> = key_counts(&read_back(&sb, 1).await).into_keys().collect();
    if let Some(h) = &hint {
        assert!(sent_second.iter().all(|k| k.as_str() > h.as_str()));
    }
    let union: BTreeSet<String> = sent_first.union(&sent_second).cloned().collect();
    let all: BTreeSet<String> = keys.into_iter().collect();
    assert_eq!(union, all);
}
