//! Fault-injection scenarios (issue #8): the real `commander` and `executor`
//! run with the fault proxy as their only S3 and SQS endpoint, and every
//! scenario ends with the same proof that nothing was lost — a check job run
//! without faults parks nothing, and an independent SDK comparison finds every
//! target object byte-identical to its source (ETag included), none missing;
//! every key that failed on the way is accounted for in the DLQ and the
//! completion reports. Each scenario prints its figures (requests, faults,
//! retries, keys parked, check result) to stderr.

use std::collections::BTreeSet;
use std::process::Child;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use testsupport::faultproxy::{Fault, FaultConfig, FaultProxy};
use testsupport::runs::{signal, wait_with_limit, Sandbox};
use testsupport::scenario::{
    commander, corpus, direct, drain_dlq, enqueue, executor, final_check, job_outcome, mark,
    open_uploads, print_figures, summary_line, via, Parked, MIB, SMALL_PARTS,
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
    // `without_outcome` needs the job record `commander run` may write.
    if let Some(left) = outcome.json["without_outcome"].as_u64() {
        assert_eq!(left, 0, "{job}: {}", outcome.json);
    }
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
    let src = corpus("sc1-src", 120, &[11, 16], 101).await;
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
    let mut last = None;
    for mode in ["copy", "downup"] {
        let dst = testsupport::bucket(&format!("sc1-{mode}")).await;
        let job = format!("sc1-{mode}");
        via(&mut sb, &proxy.url());
        enqueue(&sb, &src.bucket, &dst, &job, 10, &[]).await;
        mark("sc1", t0, &format!("{mode}: enqueued"));
        let mut args = vec!["--mode", mode, "--until-empty"];
        args.extend(SMALL_PARTS);
        let run = executor(&sb, &args).await;
        run.assert_finished(&format!("executor --mode {mode}"));
        mark("sc1", t0, &format!("{mode}: executed"));
        summaries.push(format!("{mode}: {}", summary_line(&run)));
        let dlq = drain_dlq(&sb).await;
        assert_accounted(&sb, &job, &format!("s3://{dst}"), &dlq.parked, n).await;
        if !dlq.parked.is_empty() {
            dlq.put_back(&sb).await;
            summaries.push(format!("replay: {}", replay_dlq(&mut sb, mode).await));
        }
        parked.extend(dlq.parked);
        let check = final_check(&mut sb, &src.bucket, &dst, &format!("{job}-check")).await;
        mark("sc1", t0, &format!("{mode}: checked"));
        assert_eq!(check.compared, n);
        summaries.push(format!("{mode} check: {}", check.summary));
        last = Some(check);
    }
    let stats = proxy.stats();
    assert!(stats.total_faults() > 0);
    print_figures(
        "1 (10% S3 faults)",
        &stats,
        &parked,
        &summaries,
        &last.expect("two modes ran"),
        t0.elapsed(),
    );
}

// ---------------------------------------------------------------------------
// 2. SQS faults: failed entries in SendMessageBatch, receive and delete errors
// ---------------------------------------------------------------------------

/// Archived objects cannot be copied until restored: they are the keys this
/// scenario expects in the DLQ, parked through a faulty SendMessageBatch.
const COLD: [&str; 2] = ["cold/archived-1", "cold/archived-2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_faults_never_lose_a_message() {
    let t0 = Instant::now();
    let src = corpus("sc2-src", 120, &[11], 202).await;
    for k in COLD {
        testsupport::s3()
            .put_object()
            .bucket(&src.bucket)
            .key(k)
            .storage_class(aws_sdk_s3::types::StorageClass::Glacier)
            .body(k.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let n = src.md5.len() + COLD.len();
    let dst = testsupport::bucket("sc2-dst").await;

    // The commander's sends: half the SendMessageBatch calls lose entries or fail.
    let (mut sb, proxy) = scene(
        "sc2",
        FaultConfig {
            sqs_rate: 0.5,
            kinds: vec![Fault::BatchEntries, Fault::InternalError, Fault::SlowDown],
            sqs_ops: vec!["SendMessageBatch".into()],
            ..Default::default()
        },
        2,
    )
    .await;
    enqueue(&sb, &src.bucket, &dst, "sc2", 5, &[]).await;
    mark("sc2", t0, "enqueued");
    let sends = proxy.stats();

    // The executor's receives, deletes, visibility changes and DLQ sends fail
    // 30% of the time; with 2 SDK attempts per call some failures reach the
    // executor itself (a failed delete means the message comes back and is
    // worked again).
    proxy.set_config(FaultConfig {
        sqs_rate: 0.3,
        kinds: vec![
            Fault::InternalError,
            Fault::SlowDown,
            Fault::Reset,
            Fault::BatchEntries,
        ],
        sqs_ops: [
            "ReceiveMessage",
            "DeleteMessage",
            "DeleteMessageBatch",
            "ChangeMessageVisibility",
            "ChangeMessageVisibilityBatch",
            "SendMessageBatch",
            "SendMessage",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    });
    sb.set("COPY_MAX_ATTEMPTS", "2");
    let mut args = vec!["--mode", "copy", "--until-empty"];
    args.extend(SMALL_PARTS);
    let run = executor(&sb, &args).await;
    run.assert_finished("executor");
    mark("sc2", t0, "executed");
    sb.set("COPY_MAX_ATTEMPTS", "10");
    let stats = proxy.stats();
    let mut summaries = vec![format!("copy: {}", summary_line(&run))];

    let by_op = testsupport::scenario::faults_by_op(&stats);
    let sent_faults = by_op.get("SendMessageBatch").copied().unwrap_or(0);
    assert!(
        sends.total_faults() > 0,
        "the commander's sends were faulted"
    );
    assert!(
        by_op.get("ReceiveMessage").copied().unwrap_or(0) > 0,
        "receives were faulted: {by_op:?}"
    );
    assert!(
        by_op.get("DeleteMessage").copied().unwrap_or(0)
            + by_op.get("DeleteMessageBatch").copied().unwrap_or(0)
            > 0,
        "deletes were faulted: {by_op:?}"
    );
    assert!(sent_faults >= sends.total_faults());

    // Exactly the archived keys are parked (a message whose delete failed after
    // its DLQ send is worked again, so a key may be parked twice), and the
    // reports agree.
    let dlq = drain_dlq(&sb).await;
    let keys: BTreeSet<&str> = dlq.parked.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, BTreeSet::from(COLD), "{:?}", dlq.parked);
    for p in &dlq.parked {
        assert!(
            ["ObjectNotInActiveTierError", "InvalidObjectState"].contains(&p.class.as_str()),
            "{p:?}"
        );
    }
    let mut once = dlq.parked.clone();
    once.dedup_by(|a, b| a.key == b.key);
    assert_accounted(&sb, "sc2", &format!("s3://{dst}"), &once, n).await;

    // Restore them, replay the DLQ: now they copy.
    for k in COLD {
        testsupport::s3()
            .restore_object()
            .bucket(&src.bucket)
            .key(k)
            .restore_request(aws_sdk_s3::types::RestoreRequest::builder().days(1).build())
            .send()
            .await
            .unwrap();
    }
    dlq.put_back(&sb).await;
    summaries.push(format!("replay: {}", replay_dlq(&mut sb, "copy").await));

    mark("sc2", t0, "replayed");
    let check = final_check(&mut sb, &src.bucket, &dst, "sc2-check").await;
    mark("sc2", t0, "checked");
    assert_eq!(check.compared, n);
    print_figures(
        "2 (SQS faults)",
        &stats,
        &dlq.parked,
        &summaries,
        &check,
        t0.elapsed(),
    );
}

// ---------------------------------------------------------------------------
// 3. SIGKILL three times, once in the middle of a multipart copy
// ---------------------------------------------------------------------------

/// A background executor, killed and reaped if the test fails before it ends.
struct Running(Option<Child>);

impl Running {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("the executor is running")
    }

    fn take(mut self) -> Child {
        self.0.take().expect("the executor is running")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Start an executor of the sandbox in the background.
fn spawn(sb: &Sandbox, args: &[&str]) -> Running {
    let mut all = args.to_vec();
    all.extend(SMALL_PARTS);
    Running(Some(sb.spawn_executor(&all)))
}

/// SIGKILL a running executor and reap it (it must still have been running).
async fn kill9(mut running: Running) {
    assert!(
        running.child().try_wait().expect("try_wait").is_none(),
        "the executor ended before it was killed"
    );
    let child = running.take();
    signal(&child, "KILL");
    let run = tokio::task::spawn_blocking(move || {
        wait_with_limit(child, Duration::from_secs(30), "killed executor")
    })
    .await
    .unwrap();
    assert!(!run.status.success(), "SIGKILL ends the process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_three_times_loses_nothing_and_cleanup_leaves_no_upload() {
    let t0 = Instant::now();
    let src = corpus("sc3-src", 150, &[11, 16], 303).await;
    let n = src.md5.len();
    let dst = testsupport::bucket("sc3-dst").await;
    // Every S3 request is slowed down a little, so kills land in the middle
    // of the work and a multipart copy is slow enough to be caught open.
    let slow = FaultConfig {
        s3_rate: 1.0,
        kinds: vec![Fault::Delay],
        delay: Duration::from_millis(150),
        ..Default::default()
    };
    let (mut sb, proxy) = scene("sc3", slow, 3).await;
    enqueue(&sb, &src.bucket, &dst, "sc3", 10, &[]).await;
    mark("sc3", t0, "enqueued");
    let mut rng = rand::rngs::StdRng::seed_from_u64(303);

    // Kill 1: as soon as one of our multipart uploads is open on the target.
    let copy = ["--mode", "copy", "--concurrency", "8"];
    let child = spawn(&sb, &copy);
    let waited = Instant::now();
    let caught = loop {
        let open = open_uploads(&dst).await;
        if !open.is_empty() {
            break open;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(120),
            "no multipart upload was ever seen open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    kill9(child).await;
    mark("sc3", t0, "kill 1");
    let mut kills = vec![format!(
        "kill 1 with {} multipart upload(s) open",
        caught.len()
    )];

    // Kills 2 and 3: after a random time.
    for k in 2..=3 {
        let child = spawn(&sb, &copy);
        let ms = rng.random_range(500..2500);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        kill9(child).await;
        kills.push(format!("kill {k} after {ms} ms"));
    }

    // The survivor: messages held by the dead reappear after their visibility
    // timeout and are worked again.
    let mut args = vec!["--mode", "copy", "--until-empty"];
    args.extend(SMALL_PARTS);
    let run = executor(&sb, &args).await;
    run.assert_ok("executor after the kills");
    mark("sc3", t0, "survivor done");
    let stats = proxy.stats();
    let mut summaries = kills;
    summaries.push(format!("survivor: {}", summary_line(&run)));

    // Nothing parked: the redrive policy (10 receives) was never reached.
    let dlq = drain_dlq(&sb).await;
    assert!(dlq.parked.is_empty(), "{:?}", dlq.parked);
    let outcome = job_outcome(&sb, "sc3").await;
    assert!(outcome.failed.is_empty(), "{}", outcome.json);

    // The killed multipart copy left its upload open; cleanup aborts it.
    let left = open_uploads(&dst).await;
    assert!(
        left.iter().any(|u| caught.contains(u)),
        "the upload open at the kill is still open: {left:?} vs {caught:?}"
    );
    direct(&mut sb);
    let v = commander(
        &sb,
        &["cleanup", "-t", &dst, "--older-than", "0s", "--json"],
    )
    .await;
    v.assert_ok("commander cleanup");
    let v: serde_json::Value = serde_json::from_str(&v.stdout).expect("cleanup --json");
    summaries.push(format!("cleanup: aborted {}", v["aborted"]));
    assert!(v["aborted"].as_u64() >= Some(1), "{v}");
    assert!(
        open_uploads(&dst).await.is_empty(),
        "uploads left after cleanup"
    );

    let check = final_check(&mut sb, &src.bucket, &dst, "sc3-check").await;
    mark("sc3", t0, "checked");
    assert_eq!(check.compared, n);
    print_figures(
        "3 (SIGKILL x3)",
        &stats,
        &dlq.parked,
        &summaries,
        &check,
        t0.elapsed(),
    );
}

// ---------------------------------------------------------------------------
// 4. The source changes between listing and copy
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_changed_after_listing_is_never_copied_as_a_mix() {
    let t0 = Instant::now();
    let src = corpus("sc4-src", 100, &[11], 404).await;
    let n = src.md5.len();
    let modes = ["copy", "downup"];
    let mut runs = Vec::new();
    for mode in modes {
        let (sb, proxy) = scene(&format!("sc4{mode}"), FaultConfig::default(), 4).await;
        let dst = testsupport::bucket(&format!("sc4-{mode}")).await;
        enqueue(&sb, &src.bucket, &dst, &format!("sc4-{mode}"), 10, &[]).await;
        runs.push((mode, sb, proxy, dst));
    }

    // Listed; now every tenth small object and the multipart one are overwritten
    // with different content (and size) before any executor runs.
    let keys: Vec<String> = src.md5.keys().cloned().collect();
    let mut changed: Vec<String> = keys
        .iter()
        .filter(|k| !src.multipart.contains(k))
        .step_by(10)
        .cloned()
        .collect();
    changed.extend(src.multipart.iter().cloned());
    let mut new_md5 = std::collections::BTreeMap::new();
    for (i, k) in changed.iter().enumerate() {
        let body = if src.multipart.contains(k) {
            let body = testsupport::scenario::bytes(4040 + i as u64, 12 * MIB + 77);
            testsupport::scenario::put_multipart(&src.bucket, k, &body, 5 * MIB).await;
            body
        } else {
            let body = testsupport::scenario::bytes(4040 + i as u64, 1000 + 37 * i);
            testsupport::put(&src.bucket, k, body.clone()).await;
            body
        };
        new_md5.insert(k.clone(), testsupport::scenario::md5_hex(&body));
    }

    mark("sc4", t0, "enqueued and changed");
    let mut summaries = Vec::new();
    let mut all_parked = Vec::new();
    let mut requests = testsupport::faultproxy::Stats::default();
    for (mode, sb, proxy, dst) in &mut runs {
        let job = format!("sc4-{mode}");
        let mut args = vec!["--mode", *mode, "--until-empty"];
        args.extend(SMALL_PARTS);
        let run = executor(sb, &args).await;
        run.assert_finished(&format!("executor --mode {mode}"));
        mark("sc4", t0, &format!("{mode}: executed"));
        summaries.push(format!("{mode}: {}", summary_line(&run)));
        requests.requests += proxy.stats().requests;

        // Every changed key is either the NEW version in full or parked as
        // SourceChanged with nothing written; never the old one, never a mix.
        let dlq = drain_dlq(sb).await;
        let parked: BTreeSet<&str> = dlq.parked.iter().map(|p| p.key.as_str()).collect();
        for p in &dlq.parked {
            assert_eq!(p.class, "SourceChanged", "{mode}: {p:?}");
            assert!(
                changed.contains(&p.key),
                "{mode}: unchanged key parked: {p:?}"
            );
        }
        let mut copied_new = 0;
        for k in &changed {
            let got = testsupport::scenario::seen(dst, k).await;
            match got {
                None => assert!(
                    parked.contains(k.as_str()),
                    "{mode}: {k} neither copied nor parked"
                ),
                Some(got) => {
                    assert_ne!(got.md5, src.md5[k], "{mode}: {k} copied as the OLD version");
                    assert_eq!(got.md5, new_md5[k], "{mode}: {k} is a mix of versions");
                    let now = testsupport::scenario::seen(&src.bucket, k).await.unwrap();
                    assert_eq!(got.etag, now.etag, "{mode}: {k} ETag");
                    // moto ignores the copy precondition: the copy wrote the
                    // new version, and its ETag (not the listed one) made the
                    // key SourceChanged all the same.
                    if !parked.contains(k.as_str()) {
                        copied_new += 1;
                    }
                }
            }
        }
        // A multipart source is HEADed (its part layout) and every part read is
        // pinned: the change is seen in both modes.
        for k in &src.multipart {
            assert!(parked.contains(k.as_str()), "{mode}: {k} not SourceChanged");
        }
        // Every changed key is reported as SourceChanged in both modes: ranged
        // GETs carry If-Match, which the test server enforces (downup), and a
        // copy whose ETag is not the listed one is SourceChanged (copy).
        assert_eq!(parked.len(), changed.len(), "{mode}: {:?}", dlq.parked);
        summaries.push(format!(
            "{mode}: {} changed keys: {} parked SourceChanged, {copied_new} copied as the new version",
            changed.len(),
            parked.len()
        ));
        assert_accounted(sb, &job, &format!("s3://{dst}"), &dlq.parked, n).await;
        all_parked.extend(dlq.parked.iter().cloned());

        // What an operator does next: the reports' failures manifest, listed
        // anew (so pinned to the new ETags), copied.
        let manifest = sb.dir.path().join(format!("{job}-failed.csv"));
        if !parked.is_empty() {
            direct(sb);
            let m = manifest.display().to_string();
            let again = format!("{job}-again");
            let b = "10".to_string();
            let r = commander(
                sb,
                &[
                    "run",
                    "--csv-manifest",
                    &m,
                    "-t",
                    dst,
                    "--job-id",
                    &again,
                    "-b",
                    &b,
                ],
            )
            .await;
            r.assert_ok("commander run --csv-manifest");
            let run = executor(sb, &args).await;
            run.assert_ok("executor (again)");
            let line = summary_line(&run);
            assert!(line.contains(", 0 failed"), "{line}");
            summaries.push(format!("{mode} again: {line}"));
            mark("sc4", t0, &format!("{mode}: repaired"));
        }
    }

    let mut last = None;
    for (mode, sb, _, dst) in &mut runs {
        let check = final_check(sb, &src.bucket, dst, &format!("sc4-{mode}-check")).await;
        mark("sc4", t0, &format!("{mode}: checked"));
        assert_eq!(check.compared, n);
        last = Some(check);
    }
    print_figures(
        "4 (source changed after listing)",
        &requests,
        &all_parked,
        &summaries,
        &last.unwrap(),
        t0.elapsed(),
    );
}

// ---------------------------------------------------------------------------
// 5. A throttling storm, then recovery
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_storm_is_ridden_out() {
    let t0 = Instant::now();
    let src = corpus("sc5-src", 150, &[11], 505).await;
    let n = src.md5.len();
    let dst = testsupport::bucket("sc5-dst").await;
    // Requests are slowed a little so the storm finds the work in full swing.
    let slow = FaultConfig {
        s3_rate: 1.0,
        kinds: vec![Fault::Delay],
        delay: Duration::from_millis(100),
        ..Default::default()
    };
    let (sb, proxy) = scene("sc5", FaultConfig::default(), 5).await;
    enqueue(&sb, &src.bucket, &dst, "sc5", 10, &[]).await;
    mark("sc5", t0, "enqueued");

    proxy.set_config(slow);
    let mut running = spawn(
        &sb,
        &["--mode", "copy", "--until-empty", "--concurrency", "16"],
    );
    // As soon as the first object lands, every request, S3 and SQS, is
    // throttled for 5 s.
    while testsupport::keys(&dst).await.is_empty() {
        assert!(
            running.child().try_wait().expect("try_wait").is_none(),
            "the executor ended before copying anything"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let storm = Duration::from_secs(5);
    let before = proxy.stats();
    proxy.set_config(FaultConfig {
        storm_until: Some(Instant::now() + storm),
        ..Default::default()
    });
    mark("sc5", t0, "storm");
    let child = running.take();
    let run = tokio::task::spawn_blocking(move || {
        wait_with_limit(child, Duration::from_secs(300), "executor")
    })
    .await
    .unwrap();
    run.assert_ok("executor through the storm");
    mark("sc5", t0, "executor done");
    let stats = proxy.stats();
    let line = summary_line(&run);
    assert!(line.contains(", 0 failed"), "{line}");

    // Backoff is bounded, not a hot loop: each of the few dozen requests in
    // flight retried a handful of times during the storm.
    let throttled = stats.total_faults() - before.total_faults();
    assert!(throttled > 0, "the storm throttled something");
    assert!(
        throttled < 2_000,
        "{throttled} throttled requests in {storm:?}: retries do not back off"
    );

    let dlq = drain_dlq(&sb).await;
    assert!(dlq.parked.is_empty(), "{:?}", dlq.parked);
    let outcome = job_outcome(&sb, "sc5").await;
    assert!(outcome.failed.is_empty(), "{}", outcome.json);
    assert_eq!(outcome.json["summary"]["total"].as_u64(), Some(n as u64));

    let mut sb = sb;
    let check = final_check(&mut sb, &src.bucket, &dst, "sc5-check").await;
    assert_eq!(check.compared, n);
    mark("sc5", t0, "checked");
    print_figures(
        "5 (5 s throttling storm)",
        &stats,
        &dlq.parked,
        &[
            format!("copy: {line}"),
            format!("throttled during the storm: {throttled}"),
        ],
        &check,
        t0.elapsed(),
    );
}
