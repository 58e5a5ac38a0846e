//! End-to-end: stopping an executor loses nothing. SIGTERM mid-run returns every
//! unfinished message at once (nothing left invisible) and exits 0; a crashed
//! executor's messages come back after their visibility timeout and a later
//! `--until-empty` run waits for them. Either way a second run completes and
//! `--mode check` finds the target identical.

use std::time::{Duration, Instant};

use futures::StreamExt;
use testsupport::runs::{depths, drain, signal, sigterm, wait_with_limit, Sandbox};
use testsupport::{bucket, keys, put};

async fn corpus(n: usize) -> String {
    let src = bucket("exs-src").await;
    futures::stream::iter(0..n)
        .map(|i| {
            let src = src.clone();
            async move { put(&src, &format!("d{}/k{i:04}", i % 7), format!("object {i}")).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    src
}

/// Wait until the target holds at least `n` objects (the executor is mid-run).
async fn wait_for_objects(dst: &str, n: usize) {
    let start = Instant::now();
    while keys(dst).await.len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "executor made no progress"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sorted_keys(b: &str) -> Vec<String> {
    let mut k = keys(b).await;
    k.sort();
    k
}

/// Second run to completion, then a check run over a fresh listing: DLQ empty.
async fn finish_and_check(sb: &Sandbox, src: &str, dst: &str, total: usize) {
    let second = sb.executor(&["--mode", "downup", "--until-empty"]);
    second.assert_ok("second executor run");
    assert!(second.stdout.contains("queues empty"), "{}", second.stdout);
    assert_eq!(sorted_keys(dst).await, sorted_keys(src).await);

    sb.commander(&["run", "-s", src, "-t", dst])
        .assert_ok("commander run (for check)");
    let check = sb.executor(&["--mode", "check", "--until-empty"]);
    check.assert_ok("check run");
    assert!(
        check.stdout.contains(&format!("verified {total}")),
        "{}",
        check.stdout
    );
    assert!(drain(&sb.dead()).await.is_empty(), "check parked nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_returns_unfinished_messages_and_loses_nothing() {
    let total = 240;
    let src = corpus(total).await;
    let dst = bucket("exs-dst").await;
    let sb = Sandbox::new("exs", 2);
    sb.init();
    sb.commander(&["run", "-s", &src, "-t", &dst, "-b", "10"])
        .assert_ok("commander run");

    let child = sb.spawn_executor(&["--mode", "downup", "--concurrency", "1", "--until-empty"]);
    wait_for_objects(&dst, 5).await;
    sigterm(&child);
    let first = wait_with_limit(child, Duration::from_secs(60), "executor after SIGTERM");
    // Stopped before the queues were empty: interrupted (docs/operate.md#exit-codes).
    assert_eq!(first.status.code(), Some(130), "{first:?}");
    assert!(
        first.stdout.contains("stopped by signal"),
        "{}",
        first.stdout
    );

    // Nothing is left invisible: unfinished messages were returned at once.
    let (mut visible, mut in_flight) = (0, 0);
    for n in 1..=2 {
        let (v, f) = depths(&sb.queue(n)).await;
        visible += v;
        in_flight += f;
    }
    assert_eq!(in_flight, 0, "no message left in flight after SIGTERM");
    assert!(visible > 0, "the run was stopped mid-way: {}", first.stdout);
    assert!(keys(&dst).await.len() < total);

    finish_and_check(&sb, &src, &dst, total).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_executors_messages_are_waited_for_and_redone() {
    let total = 120;
    let src = corpus(total).await;
    let dst = bucket("exs-dst").await;
    let mut sb = Sandbox::new("exk", 1);
    sb.set("SQS_VISIBILITY_TIMEOUT", "5");
    sb.init();
    sb.commander(&["run", "-s", &src, "-t", &dst, "-b", "10"])
        .assert_ok("commander run");

    let child = sb.spawn_executor(&["--mode", "downup", "--concurrency", "2"]);
    wait_for_objects(&dst, 3).await;
    signal(&child, "KILL");
    let _ = wait_with_limit(child, Duration::from_secs(30), "killed executor");
    let (_, in_flight) = depths(&sb.queue(1)).await;
    assert!(in_flight > 0, "the killed executor held messages");

    finish_and_check(&sb, &src, &dst, total).await;
}
