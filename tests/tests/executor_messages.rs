//! End-to-end, commander → SQS → `executor --until-empty`, for the messages an
//! executor must survive: a malformed body (to the DLQ unchanged, with the reason),
//! the legacy Python format (worked like any other), and a source object that
//! vanished between listing and copy (`source-missing`, a warning, not a failure).

use testsupport::runs::{depths, drain, send_raw, Sandbox};
use testsupport::{bucket, keys, put, s3};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_legacy_and_vanished_source_each_behave() {
    let src = bucket("exm-src").await;
    let dst = bucket("exm-dst").await;
    for k in ["p/a.txt", "p/dir/b.txt", "p/gone.txt", "legacy key+1.txt"] {
        put(&src, k, format!("body of {k}")).await;
    }
    let sb = Sandbox::new("exm", 2);
    sb.init();
    sb.commander(&["run", "-s", &src, "-t", &dst, "-p", "p/"])
        .assert_ok("commander run");
    // Vanishes after listing, before the executor runs.
    s3().delete_object()
        .bucket(&src)
        .key("p/gone.txt")
        .send()
        .await
        .unwrap();
    let malformed = "{\"this is\": not json";
    let legacy = format!(
        r#"{{"source_bucket":"{src}","target_bucket":"{dst}","keys":[{{"source_key":"legacy%20key%2B1.txt","target_key":"legacy%20key%2B1.txt"}}]}}"#
    );
    send_raw(&sb.queue(1), &[malformed, &legacy]).await;

    let run = sb.executor(&["--mode", "copy", "--until-empty"]);
    // A bad message was forwarded to the DLQ: the run ended with a failure
    // (docs/operate.md#exit-codes).
    assert_eq!(run.status.code(), Some(5), "{run:?}");
    assert!(run.stdout.contains("queues empty"), "{}", run.stdout);
    assert!(run.stdout.contains("source-missing 1"), "{}", run.stdout);
    assert!(run.stdout.contains("0 failed"), "{}", run.stdout);
    assert!(
        run.stderr.contains("p/gone.txt") && run.stderr.contains("source-missing"),
        "one warning line names the vanished key:\n{}",
        run.stderr
    );
    assert!(run.stderr.contains("BadMessage"), "{}", run.stderr);

    let mut got = keys(&dst).await;
    got.sort();
    assert_eq!(got, ["legacy key+1.txt", "p/a.txt", "p/dir/b.txt"]);

    let dead = drain(&sb.dead()).await;
    assert_eq!(
        dead.len(),
        1,
        "only the malformed body is dead-lettered: {dead:?}"
    );
    assert_eq!(dead[0].body, malformed, "sent on unchanged");
    assert_eq!(
        dead[0].attributes.get("error_class").map(String::as_str),
        Some("BadMessage")
    );
    assert!(
        dead[0]
            .attributes
            .get("reason")
            .is_some_and(|r| r.contains("JSON")),
        "{:?}",
        dead[0].attributes
    );
    for n in 1..=2 {
        assert_eq!(depths(&sb.queue(n)).await, (0, 0), "queue {n} is empty");
    }
}
