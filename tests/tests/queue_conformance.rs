//! One behavioural suite (`testsupport::queues`) run against both queue
//! backends — SQS on the moto server and the embedded SQLite queue — plus the
//! embedded queue's multi-process guarantees: several processes sharing one
//! file get disjoint messages, and a process that dies holding a message
//! loses nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use aws_sdk_sqs::config::interceptors::BeforeSerializationInterceptorContextMut;
use aws_sdk_sqs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchInput;
use common::queue::local::LocalService;
use common::queue::sqs::SqsService;
use common::queue::{Outgoing, QueueService};
use testsupport::queues;

/// Body the SQS test client turns into an entry SQS rejects on its own.
const REJECT_ME: &str = "reject-me";

/// moto rejects a batch entry on its own only for an invalid `DelaySeconds`
/// (an empty or oversized body is accepted, or fails the whole call). Our
/// `Outgoing` has no delay, so the test client sets an out-of-range delay on
/// entries whose body is [`REJECT_ME`]: the server then really fails that
/// entry alone, and the adapter's per-entry mapping is what is under test.
#[derive(Debug)]
struct RejectMarkedEntries;

impl Intercept for RejectMarkedEntries {
    fn name(&self) -> &'static str {
        "RejectMarkedEntries"
    }

    fn modify_before_serialization(
        &self,
        ctx: &mut BeforeSerializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(input) = ctx.input_mut().downcast_mut::<SendMessageBatchInput>() {
            for entry in input.entries.iter_mut().flatten() {
                if entry.message_body == REJECT_ME {
                    entry.delay_seconds = Some(1000);
                }
            }
        }
        Ok(())
    }
}

fn sqs() -> SqsService {
    let conf = testsupport::sqs()
        .config()
        .to_builder()
        .interceptor(RejectMarkedEntries)
        .build();
    SqsService::new(aws_sdk_sqs::Client::from_conf(conf))
}

fn local() -> (tempfile::TempDir, LocalService) {
    let dir = tempfile::tempdir().unwrap();
    let svc = LocalService::open(dir.path().join("queues.sqlite")).unwrap();
    (dir, svc)
}

/// `name` against both backends: `sqs_<name>` and `local_<name>`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqs_backend {
            use super::*;
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { queues::$name(&sqs()).await } )*
        }
        mod local_backend {
            use super::*;
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { let (_dir, svc) = local(); queues::$name(&svc).await } )*
        }
    };
}

both!(
    round_trip,
    redelivery_after_visibility_timeout,
    receive_count_increments,
    dead_letter_after_max_receives,
    concurrent_consumers_get_each_message_once,
    depths_count_visible_and_in_flight,
    visibility_extension_and_release,
    ensure_reports_created_unchanged_updated,
    open_missing_queue_names_it,
    init_gives_the_dlq_the_maximum_retention,
    delete_with_a_stale_receipt_is_not_success,
);

#[tokio::test]
async fn sqs_batch_failure_is_per_entry() {
    queues::batch_failure_is_per_entry(&sqs(), Outgoing::body(REJECT_ME)).await;
}

#[tokio::test]
async fn local_batch_failure_is_per_entry() {
    let (_dir, svc) = local();
    // SQS's rule (a body is at least one character), enforced per entry.
    queues::batch_failure_is_per_entry(&svc, Outgoing::body("")).await;
}

// ---- the embedded queue across processes ----------------------------------

const CHILD_FILE: &str = "S3MIG_QUEUE_CHILD_FILE";
const CHILD_QUEUE: &str = "S3MIG_QUEUE_CHILD_QUEUE";
const CHILD_MODE: &str = "S3MIG_QUEUE_CHILD_MODE";

/// Run [`queue_child`] of this test binary as another OS process.
fn spawn_child(file: &Path, queue: &str, mode: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "queue_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_FILE, file)
        .env(CHILD_QUEUE, queue)
        .env(CHILD_MODE, mode)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Bodies a child printed as `GOT <body>` lines.
fn child_bodies(child: std::process::Child) -> Vec<String> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "child failed: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        // libtest may print "test queue_child ... " on the same line first.
        .filter_map(|l| l.split_once("GOT ").map(|(_, body)| body.to_string()))
        .collect()
}

async fn queue_with(path: &Path, visibility_secs: u64, n: usize) -> String {
    let svc = LocalService::open(path).unwrap();
    let name = testsupport::unique("shared");
    svc.ensure(&queues::spec(&name, visibility_secs, None))
        .await
        .unwrap();
    let q = svc.open(&name).await.unwrap();
    let bodies: Vec<String> = (0..n).map(|i| format!("msg-{i:04}")).collect();
    queues::send(&*q, &bodies.iter().map(String::as_str).collect::<Vec<_>>()).await;
    name
}

/// The child side of the multi-process tests. Run by the harness on its own
/// (no environment), it drains a queue file of its own and checks it got
/// every message once — the same code path the children run.
#[tokio::test]
async fn queue_child() {
    let (file, queue, mode) = match (
        std::env::var_os(CHILD_FILE),
        std::env::var(CHILD_QUEUE),
        std::env::var(CHILD_MODE),
    ) {
        (Some(f), Ok(q), Ok(m)) => (PathBuf::from(f), q, m),
        _ => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("q.sqlite");
            let name = queue_with(&path, 30, 25).await;
            let q = LocalService::open(&path)
                .unwrap()
                .open(&name)
                .await
                .unwrap();
            let counts = queues::counts(queues::drain(&*q).await);
            assert_eq!(counts.len(), 25);
            assert!(counts.values().all(|n| *n == 1), "{counts:?}");
            return;
        }
    };
    let q = LocalService::open(&file)
        .unwrap()
        .open(&queue)
        .await
        .unwrap();
    match mode.as_str() {
        "drain" => {
            for body in queues::drain(&*q).await {
                println!("GOT {body}");
            }
        }
        "crash" => {
            // Take one message and die without deleting it or cleaning up.
            let got = queues::receive_n(&*q, 1, None).await;
            assert_eq!(got.len(), 1);
            println!("GOT {}", got[0].body);
            std::process::exit(0);
        }
        other => panic!("unknown child mode {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_processes_sharing_a_file_get_disjoint_messages() {
    const N: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queues.sqlite");
    let name = queue_with(&path, 120, N).await;

    let children: Vec<_> = (0..3).map(|_| spawn_child(&path, &name, "drain")).collect();
    // This process consumes too, through a service of its own.
    let mine = {
        let q = LocalService::open(&path)
            .unwrap()
            .open(&name)
            .await
            .unwrap();
        queues::drain(&*q).await
    };
    let mut all = mine;
    let mut per_child = Vec::new();
    for c in children {
        let got = tokio::task::spawn_blocking(move || child_bodies(c))
            .await
            .unwrap();
        per_child.push(got.len());
        all.extend(got);
    }
    let counts = queues::counts(all);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "received by two processes: {twice:?}");
    assert_eq!(
        counts.len(),
        N,
        "lost messages (children got {per_child:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_message_of_a_crashed_process_reappears() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queues.sqlite");
    let name = queue_with(&path, 1, 1).await;

    let taken = child_bodies(spawn_child(&path, &name, "crash"));
    assert_eq!(taken, ["msg-0000"]);

    let q = LocalService::open(&path)
        .unwrap()
        .open(&name)
        .await
        .unwrap();
    let back = queues::receive_n(&*q, 1, None).await;
    assert_eq!(back.len(), 1, "the crashed process's message was lost");
    assert_eq!(back[0].body, "msg-0000");
    assert_eq!(back[0].receive_count, 2);
    q.delete(&back[0].receipt).await.unwrap();
    assert!(q.depths().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_services_in_threads_share_a_file() {
    // Independent services (own connections, own runtimes) on one file.
    const N: usize = 120;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queues.sqlite");
    let name = queue_with(&path, 120, N).await;
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (path, name) = (path.clone(), name.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let q = LocalService::open(&path)
                        .unwrap()
                        .open(&name)
                        .await
                        .unwrap();
                    queues::drain(&*q).await
                })
            })
        })
        .collect();
    let all: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let counts = queues::counts(all);
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    assert_eq!(counts.len(), N);
}
