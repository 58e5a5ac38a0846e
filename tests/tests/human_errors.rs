//! What the binaries say when something fails, read the way an operator reads
//! it: an endpoint that refuses connections is named in one human sentence
//! (no SDK `Debug` dump) after a few `retrying:` lines; a failure names the
//! side it came from (source or target); unknown variables with our prefixes
//! are warned about with a did-you-mean; `init` and `run` say each thing once.

use aws_sdk_s3::types::StorageClass;
use testsupport::runs::{drain, send_raw, Sandbox};
use testsupport::{bucket, put, s3};

/// A local port nothing listens on: bound, then released.
fn refused_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = listener.local_addr().expect("local addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[test]
fn a_refused_endpoint_is_named_in_one_human_sentence() {
    let mut sb = Sandbox::new("herr", 1);
    let endpoint = refused_endpoint();
    sb.set("AWS_ENDPOINT_URL", &endpoint);
    let queue = format!("local:{}", sb.dir.path().join("q.db").display());
    sb.commander(&["--queue", &queue, "init"])
        .assert_ok("commander init");
    // An S3 target is checked first (nothing is sent to a target that cannot
    // be reached); a directory target lets the run reach the listing.
    let dir_target = sb.dir.path().join("dst").display().to_string();
    for (target, names) in [
        (
            "s3://dst/",
            "the target failed its pre-flight check; nothing was sent",
        ),
        (dir_target.as_str(), "listing the source s3://src/ops/"),
    ] {
        refused_run(&sb, &queue, &endpoint, target, names);
    }
}

/// One `commander run` against the refused endpoint, to `target`: exit 4,
/// retry lines, one final error line naming `names`, the endpoint and where
/// it is set, and no SDK dump.
fn refused_run(sb: &Sandbox, queue: &str, endpoint: &str, target: &str, names: &str) {
    let run = sb.commander(&[
        "--queue", queue, "run", "-s", "src", "-p", "ops/", "-t", target,
    ]);
    assert_eq!(
        run.status.code(),
        Some(4),
        "an endpoint error: {}",
        run.stderr
    );
    for dump in ["DispatchFailure", "ConnectorError", "{ ", "hyper", "Os {"] {
        assert!(
            !run.stderr.contains(dump) && !run.stdout.contains(dump),
            "no SDK Debug dump ({dump}):\n{}",
            run.stderr
        );
    }
    // Retries say what, where and how far along.
    assert!(
        run.stderr.contains(&format!(
            "retrying: connection refused to {endpoint} (attempt 2 of 3)"
        )),
        "{}",
        run.stderr
    );
    // Before the endpoint ever answered, a refusal is not retried ten times.
    assert!(!run.stderr.contains("(attempt 4 of"), "{}", run.stderr);
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one final error line:\n{}", run.stderr);
    let line = errors[0];
    for want in [
        names,
        &format!("cannot reach {endpoint} (connection refused)"),
        "AWS_ENDPOINT_URL",
    ] {
        assert!(line.contains(want), "{want} in: {line}");
    }
    assert_eq!(line.matches("connection refused").count(), 1, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_names_the_side_it_came_from() {
    let src = bucket("hside-src").await;
    let dst = bucket("hside-dst").await;
    s3().put_object()
        .bucket(&src)
        .key("cold.bin")
        .storage_class(StorageClass::Glacier)
        .body(b"archived".to_vec().into())
        .send()
        .await
        .expect("put a GLACIER object");
    put(&src, "warm.txt", "warm").await;
    let sb = Sandbox::new("hside", 1);
    sb.init();
    // An archived source: CopyObject refuses it, and the source is the subject.
    sb.commander(&["run", "-s", &src, "-t", &dst, "-p", "cold"])
        .assert_ok("commander run");
    // A target bucket that does not exist (sent as a legacy message, so no
    // commander check stands in the way): the target is the subject.
    let missing = format!("{dst}-missing");
    let legacy = format!(
        r#"{{"source_bucket":"{src}","target_bucket":"{missing}","keys":[{{"source_key":"warm.txt","target_key":"warm.txt"}}]}}"#
    );
    send_raw(&sb.queue(1), &[&legacy]).await;
    let run = sb.executor(&["--mode", "copy", "--until-empty"]);

    let mut reasons = Vec::new();
    for m in drain(&sb.dead()).await {
        let batch = common::message::decode(&m.body).expect("DLQ entries are messages");
        for k in batch.keys {
            let f = k.failure.expect("parked keys carry their failure");
            reasons.push((k.key.clone(), f.message));
        }
    }
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}\n{}", run.stderr);
    let (cold, warm) = (&reasons[0], &reasons[1]);
    assert_eq!(cold.0, "cold.bin");
    assert!(
        cold.1.starts_with(&format!("s3://{src}/cold.bin: ")),
        "archived source names the source: {cold:?}"
    );
    assert!(!cold.1.contains(&dst), "{cold:?}");
    // moto's message ends with "Glacier."; the SDK's Display chain repeated it.
    assert_eq!(cold.1.matches("Glacier").count(), 1, "said once: {cold:?}");
    assert!(!cold.1.contains("service error"), "{cold:?}");
    assert_eq!(warm.0, "warm.txt");
    assert!(
        warm.1.starts_with(&format!("s3://{missing}")),
        "missing target names the target: {warm:?}"
    );
    // The executor's log line says the same subject.
    assert!(
        run.stderr.contains(&format!("s3://{src}/cold.bin")),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains(&format!("s3://{dst}/cold.bin")),
        "{}",
        run.stderr
    );
}

#[test]
fn unknown_variables_with_our_prefixes_are_warned_about_once() {
    let mut sb = Sandbox::new("henv", 1);
    sb.set("QUEUE_NUMS", "3");
    std::fs::write(
        sb.dir.path().join(".env"),
        "REPORT_LOCATON=/tmp/reports\nEXECUTOR_MODEE=copy\nQUEUE_NUMS=4\n",
    )
    .expect("write .env");
    let warnings = |stderr: &str| -> Vec<String> {
        stderr
            .lines()
            .filter(|l| l.starts_with("warning:"))
            .map(str::to_string)
            .collect()
    };

    let run = sb.commander(&["config"]);
    run.assert_ok("commander config");
    let w = warnings(&run.stderr);
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(
        w.iter()
            .any(|l| l.contains("environment variable QUEUE_NUMS")
                && l.ends_with("did you mean QUEUE_NUM?")),
        "{w:#?}"
    );
    assert!(
        w.iter().any(|l| l.contains(".env: variable REPORT_LOCATON")
            && l.ends_with("did you mean REPORT_LOCATION?")),
        "{w:#?}"
    );
    // EXECUTOR_* belongs to the executor: the commander does not judge it.
    assert!(!run.stderr.contains("EXECUTOR_MODEE"), "{}", run.stderr);

    let run = sb.executor(&["--print-config"]);
    run.assert_ok("executor --print-config");
    let w = warnings(&run.stderr);
    assert_eq!(w.len(), 3, "{w:#?}");
    assert!(
        w.iter()
            .any(|l| l.contains("EXECUTOR_MODEE") && l.ends_with("did you mean EXECUTOR_MODE?")),
        "{w:#?}"
    );

    // The test suite's own variables (S3MIG_TEST_ENDPOINT, AWS_*) are not ours.
    let clean = Sandbox::new("henv2", 1);
    for run in [
        clean.commander(&["config"]),
        clean.executor(&["--print-config"]),
    ] {
        run.assert_ok("config");
        assert!(warnings(&run.stderr).is_empty(), "{}", run.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_and_run_say_each_line_once() {
    let src = bucket("honce").await;
    put(&src, "a.txt", "a").await;
    let sb = Sandbox::new("honce", 2);
    let init = sb.commander(&["init"]);
    init.assert_ok("commander init");
    let both = format!("{}{}", init.stdout, init.stderr);
    for q in [sb.queue(1), sb.queue(2), sb.dead()] {
        assert_eq!(both.matches(&q).count(), 1, "{q} said once:\n{both}");
    }
    let dst = bucket("honce-dst").await;
    let run = sb.commander(&["run", "-s", &src, "-t", &format!("s3://{dst}/")]);
    run.assert_ok("commander run");
    let job = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("job "))
        .map(str::trim)
        .expect("the job id is printed")
        .to_string();
    let both = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(both.matches(&job).count(), 1, "job id said once:\n{both}");
    let mut seen = std::collections::BTreeSet::new();
    for line in run.stdout.lines().filter(|l| !l.trim().is_empty()) {
        assert!(seen.insert(line), "line said twice: {line}\n{}", run.stdout);
    }
}
