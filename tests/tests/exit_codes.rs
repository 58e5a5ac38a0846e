//! The exit-code table of docs/operate.md#exit-codes, one run of the real
//! binaries per row (moto; 130 is asserted by executor_signals.rs, where a
//! SIGTERM stops `--until-empty` mid-run), and the two ways a doomed run is
//! refused: the commander's pre-flight check of the target and the executor's
//! circuit breaker.

use testsupport::runs::{drain, Run, Sandbox};
use testsupport::{bucket, keys, put, s3};

fn code(run: &Run) -> i32 {
    run.status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {run:?}"))
}

fn assert_code(run: &Run, want: i32, what: &str) {
    assert_eq!(
        code(run),
        want,
        "{what}: exit code\n--- stdout\n{}\n--- stderr\n{}",
        run.stdout,
        run.stderr
    );
}

/// A source bucket with `n` small objects.
async fn corpus(prefix: &str, n: usize) -> String {
    let src = bucket(prefix).await;
    for i in 0..n {
        put(&src, &format!("k/{i:03}"), format!("object {i}")).await;
    }
    src
}

#[test]
fn usage_and_config_errors_exit_2_and_3_from_both_binaries() {
    let sb = Sandbox::new("xu", 1);
    // The same bad date: a usage error from both.
    let c = sb.commander(&[
        "run",
        "-s",
        "src",
        "-t",
        "dst",
        "--modified-since",
        "yesterday",
    ]);
    assert_code(&c, 2, "commander with a bad date");
    assert!(c.stderr.contains("--modified-since"), "{}", c.stderr);
    let e = sb.executor(&["--modified-since", "yesterday"]);
    assert_code(&e, 2, "executor with a bad date");
    assert_code(&sb.executor(&["-n", "0"]), 2, "executor -n 0");
    assert_code(&sb.commander(&["run", "--no-such-flag"]), 2, "unknown flag");

    // A bad value in config.yml: a config error from both, naming the file.
    std::fs::write(
        sb.dir.path().join("config.yml"),
        "migration:\n  concurrency: many\n",
    )
    .unwrap();
    let c = sb.commander(&["status"]);
    assert_code(&c, 3, "commander with a bad config value");
    assert!(c.stderr.contains("config.yml"), "{}", c.stderr);
    let e = sb.executor(&["--until-empty"]);
    assert_code(&e, 3, "executor with a bad config value");
    assert!(e.stderr.contains("config.yml"), "{}", e.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_to_a_missing_target_bucket_is_refused_before_anything_is_sent() {
    let src = corpus("xt-src", 3).await;
    let sb = Sandbox::new("xt", 1);
    sb.init();
    let missing = testsupport::unique("xt-missing");
    for dry in [false, true] {
        let mut args = vec!["run", "-s", src.as_str(), "-t", missing.as_str()];
        if dry {
            args.push("--dry-run");
        }
        let run = sb.commander(&args);
        assert_code(&run, 4, "run to a missing target");
        assert!(
            run.stderr.contains(&format!("s3://{missing}"))
                && run.stderr.contains("NoSuchBucket")
                && run.stderr.contains("nothing was sent"),
            "the error names the target and the cause:\n{}",
            run.stderr
        );
    }
    assert!(drain(&sb.queue(1)).await.is_empty(), "nothing was sent");

    // The same run to an existing bucket (under a new prefix) goes ahead.
    let dst = bucket("xt-dst").await;
    sb.commander(&["run", "-s", &src, "-t", &format!("s3://{dst}/new/")])
        .assert_ok("run to an existing target");
    assert_eq!(drain(&sb.queue(1)).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_stops_an_executor_whose_target_is_gone_and_loses_nothing() {
    let total = 60;
    let src = corpus("xb-src", total).await;
    let dst = bucket("xb-dst").await;
    let sb = Sandbox::new("xb", 2);
    sb.init();
    sb.commander(&["run", "-s", &src, "-t", &dst, "-b", "10"])
        .assert_ok("commander run");
    // The target disappears after the keys were sent.
    s3().delete_bucket().bucket(&dst).send().await.unwrap();

    let run = sb.executor(&["--until-empty", "--circuit-breaker", "5"]);
    assert_code(&run, 4, "executor against a missing target");
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line:\n{}", run.stderr);
    assert!(
        errors[0].contains(&format!("s3://{dst}"))
            && errors[0].contains("5 keys in a row failed with NoSuchBucket"),
        "{}",
        errors[0]
    );
    assert!(
        run.stdout.contains("circuit breaker open"),
        "{}",
        run.stdout
    );
    // No message of 10 keys can finish before 5 failures in a row open the
    // breaker: nothing was parked, every message went back to its queue.
    assert!(
        drain(&sb.dead()).await.is_empty(),
        "the breaker parked nothing"
    );

    // Fixed: the same queues finish the job.
    s3().create_bucket().bucket(&dst).send().await.unwrap();
    sb.executor(&["--until-empty"])
        .assert_ok("executor after the fix");
    assert_eq!(keys(&dst).await.len(), total, "no key was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_can_be_turned_off_and_failed_keys_exit_5() {
    let src = corpus("xf-src", 12).await;
    let dst = bucket("xf-dst").await;
    let sb = Sandbox::new("xf", 1);
    sb.init();
    sb.commander(&["run", "-s", &src, "-t", &dst, "-b", "4"])
        .assert_ok("commander run");
    s3().delete_bucket().bucket(&dst).send().await.unwrap();
    let run = sb.executor(&["--until-empty", "--circuit-breaker", "0"]);
    assert_code(&run, 5, "every key parked, the breaker off");
    assert_eq!(
        drain(&sb.dead()).await.len(),
        3,
        "all three messages parked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_that_finds_differences_exits_5_and_a_clean_one_0() {
    let src = corpus("xc-src", 4).await;
    let dst = bucket("xc-dst").await;
    let sb = Sandbox::new("xc", 1);
    sb.init();
    sb.commander(&["run", "-s", &src, "-t", &dst])
        .assert_ok("commander run");
    sb.executor(&["--until-empty"]).assert_ok("copy");
    put(&dst, "k/001", "changed").await;
    sb.commander(&["run", "-s", &src, "-t", &dst])
        .assert_ok("commander run (check)");
    let run = sb.executor(&["--mode", "check", "--until-empty"]);
    assert_code(&run, 5, "check with a mismatch");
}
