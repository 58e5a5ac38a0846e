//! `commander init` against moto (idempotent; redrive policy to the DLQ;
//! changed attributes are updated and said so), `commander config` /
//! `--print-config`, and a whole run on the embedded queue (`--queue local:PATH`)
//! from a local directory.

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName as A;
use common::queue::local::LocalService;
use common::queue::QueueService;
use testsupport::runs::{queue_url, Sandbox};

async fn attribute(queue: &str, name: A) -> String {
    let url = queue_url(queue).await;
    let got = testsupport::sqs()
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(name.clone())
        .send()
        .await
        .unwrap();
    got.attributes()
        .and_then(|m| m.get(&name))
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_twice_and_the_redrive_policy() {
    let mut sb = Sandbox::new("cmd-init", 3);
    sb.set("SQS_MAX_RECEIVE_COUNT", "4");
    let first = sb.commander(&["init"]);
    first.assert_ok("first init");
    assert_eq!(
        first.stdout.matches("created").count(),
        4,
        "{}",
        first.stdout
    );
    let second = sb.commander(&["init"]);
    second.assert_ok("second init");
    assert_eq!(
        second.stdout.matches("unchanged").count(),
        4,
        "{}",
        second.stdout
    );

    for n in 1..=3 {
        let policy: serde_json::Value =
            serde_json::from_str(&attribute(&sb.queue(n), A::RedrivePolicy).await)
                .expect("a redrive policy");
        assert!(
            policy["deadLetterTargetArn"]
                .as_str()
                .unwrap()
                .ends_with(&format!(":{}", sb.dead())),
            "{policy}"
        );
        assert_eq!(policy["maxReceiveCount"].to_string().trim_matches('"'), "4");
    }
    assert_eq!(attribute(&sb.dead(), A::RedrivePolicy).await, "");

    // Changed attributes are applied to the existing queues, and the output says so.
    sb.set("SQS_VISIBILITY_TIMEOUT", "123");
    let third = sb.commander(&["init"]);
    third.assert_ok("third init");
    assert!(
        third.stdout.contains(&format!("updated   {}", sb.queue(1))),
        "{}",
        third.stdout
    );
    assert_eq!(attribute(&sb.queue(2), A::VisibilityTimeout).await, "123");
}

#[test]
fn config_and_print_config_show_the_effective_values() {
    let mut sb = Sandbox::new("cmd-cfg", 2);
    sb.set("BATCH_NUM", "77");
    let run = sb.commander(&["config"]);
    run.assert_ok("config");
    assert!(run.stdout.contains("77"), "{}", run.stdout);
    assert!(run.stdout.contains(&sb.prefix), "{}", run.stdout);
    // --print-config shows flags applied and exits before doing anything.
    let run = sb.commander(&[
        "run",
        "-s",
        "no-such-bucket-x",
        "-t",
        "dst-bucket",
        "-b",
        "33",
        "--print-config",
    ]);
    run.assert_ok("--print-config");
    assert!(
        run.stdout.contains("33") && run.stdout.contains("--batch-num"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_source_on_the_embedded_queue() {
    let sb = Sandbox::new("cmd-local", 2);
    let src = tempfile::tempdir().unwrap();
    let mut want = Vec::new();
    for k in ["a.txt", "sub/b.txt", "sub/deeper/c d.txt", "z/ü.bin"] {
        let p = src.path().join(k);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, k.as_bytes()).unwrap();
        want.push(k.to_string());
    }
    let db = sb.dir.path().join("queue.db").display().to_string();
    let queue = format!("local:{db}");
    sb.commander(&["--queue", &queue, "init"])
        .assert_ok("init local");
    let dst = tempfile::tempdir().unwrap();
    sb.commander(&[
        "--queue",
        &queue,
        "run",
        "-s",
        &src.path().display().to_string(),
        "-t",
        &dst.path().display().to_string(),
        "-b",
        "3",
    ])
    .assert_ok("run from a directory");

    let svc = LocalService::open(&db).unwrap();
    let mut got = Vec::new();
    for n in 1..=2 {
        let q = svc.open(&sb.queue(n)).await.unwrap();
        loop {
            let msgs = q
                .receive(10, Duration::from_millis(100), None)
                .await
                .unwrap();
            if msgs.is_empty() {
                break;
            }
            for m in msgs {
                let batch = common::message::decode(&m.body).unwrap();
                assert!(batch.source.starts_with("file://"), "{}", batch.source);
                assert!(batch.keys.len() <= 3);
                got.extend(batch.keys.into_iter().map(|k| k.key));
                q.delete(&m.receipt).await.unwrap();
            }
        }
    }
    got.sort();
    want.sort();
    assert_eq!(got, want);
}
