//! Fault-injection scenarios (issue #8): the real `commander` and `executor`
//! run with the fault proxy as their only S3 and SQS endpoint, and every
//! scenario ends with the same proof that nothing was lost — a check job run
//! without faults parks nothing, and an independent SDK comparison finds every
//! target object byte-identical to its source (ETag included), none missing;
//! every key that failed on the way is accounted for in the DLQ and the
//! completion reports. Each scenario prints its figures (requests, faults,
//! retries, keys parked, check result) to stderr.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use testsupport::faultproxy::{Fault, FaultConfig, FaultProxy};
use testsupport::runs::Sandbox;
use testsupport::scenario::{
    commander, corpus, direct, drain_dlq, enqueue, executor, final_check, job_outcome,
    print_figures, summary_line, via, Parked, SMALL_PARTS,
};

/// A scenario's sandbox (unique queues, reports in its temp dir, short
/// visibility timeout so work held by a crashed executor comes back quickly)
/// with queues created directly on the server, and a proxy in front of it.
async fn scene(name: &str, faults: FaultConfig, seed: u64) -> (Sandbox, FaultProxy) {
    let mut sb = Sandbox::new(name, 2);
    sb.set("SQS_VISIBILITY_TIMEOUT", "8");
    // Kills and failed deletes redeliver messages: leave room before the
    // queue's own redrive policy would move a message to the DLQ.
    sb.set("SQS_MAX_RECEIVE_COUNT", "10");
    let reports = sb.dir.path().join("reports");
    sb.set("REPORT_LOCATION", &reports.display().to_string());
    commander(&sb, &["init"]).await.assert_ok("commander init");
    let proxy = FaultProxy::start(&testsupport::endpoint(), faults, seed).await;
    via(&mut sb, &proxy.url());
    (sb, proxy)
}

/// Keys a job parked (from the drained DLQ) must be exactly the keys its
/// reports say failed; every enqueued key has an outcome.
async fn assert_accounted(sb: &Sandbox, job: &str, target: &str, parked: &[Parked], keys: usize) {
    let outcome = job_outcome(sb, job).await;
    let in_dlq: BTreeSet<String> = parked
        .iter()
        .filter(|p| p.target == target)
        .map(|p| p.key.clone())
        .collect();
    assert_eq!(
        outcome.failed, in_dlq,
        "{job}: failed keys in the reports vs keys parked in the DLQ"
    );
    let s = &outcome.json["summary"];
    assert_eq!(
        s["total"].as_u64(),
        Some(keys as u64),
        "{job}: every key has an outcome: {}",
        outcome.json
    );
    assert_eq!(
        outcome.json["without_outcome"].as_u64(),
        Some(0),
        "{job}: {}",
        outcome.json
    );
}

/// Replay the DLQ without faults (`-n -1 -d --until-empty`): every parked key
/// of a transient failure must copy now.
async fn replay_dlq(sb: &mut Sandbox, mode: &str) -> String {
    direct(sb);
    let mut args = vec!["--mode", mode, "-n", "-1", "-d", "--until-empty"];
    args.extend(SMALL_PARTS);
    let run = executor(sb, &args).await;
    run.assert_ok("DLQ replay");
    let line = summary_line(&run);
    assert!(line.contains(", 0 failed"), "replay: {line}");
    line
}

// ---------------------------------------------------------------------------
// 1. 10% of S3 requests faulted, small and multipart objects, copy and downup
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_faults_on_one_request_in_ten_lose_nothing() {
    let t0 = Instant::now();
    let src = corpus("sc1-src", 150, &[11, 16], 101).await;
    let n = src.md5.len();
    let faults = FaultConfig {
        s3_rate: 0.10,
        kinds: vec![
            Fault::SlowDown,
            Fault::InternalError,
            Fault::Reset,
            Fault::Delay,
            Fault::Truncate,
            Fault::ErrorBody200,
        ],
        delay: Duration::from_millis(300),
        ..Default::default()
    };
    let (mut sb, proxy) = scene("sc1", faults, 1).await;
    let mut summaries = Vec::new();
    let mut parked = Vec::new();
    for mode in ["copy", "downup"] {
        let dst = testsupport::bucket(&format!("sc1-{mode}")).await;
        let job = format!("sc1-{mode}");
        via(&mut sb, &proxy.url());
        enqueue(&sb, &src.bucket, &dst, &job, 10, &[]).await;
        let mut args = vec!["--mode", mode, "--until-empty"];
        args.extend(SMALL_PARTS);
        let run = executor(&sb, &args).await;
        run.assert_ok(&format!("executor --mode {mode}"));
        summaries.push(format!("{mode}: {}", summary_line(&run)));
        let dlq = drain_dlq(&sb).await;
        assert_accounted(&sb, &job, &format!("s3://{dst}"), &dlq.parked, n).await;
        if !dlq.parked.is_empty() {
            dlq.put_back(&sb).await;
            summaries.push(format!("replay: {}", replay_dlq(&mut sb, mode).await));
        }
        parked.extend(dlq.parked);
        let check = final_check(&mut sb, &src.bucket, &dst, &format!("{job}-check")).await;
        assert_eq!(check.compared, n);
        if mode == "downup" {
            print_figures(
                "1 (10% S3 faults)",
                &proxy.stats(),
                &parked,
                &summaries,
                &check,
                t0.elapsed(),
            );
        }
    }
    assert!(proxy.stats().total_faults() > 0);
}
