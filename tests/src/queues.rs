//! The queue conformance suite: one async function per behaviour of
//! [`WorkQueue`]/[`QueueService`], run by `tests/tests/queue_conformance.rs`
//! against both backends (SQS on moto, and the embedded SQLite queue). Every
//! queue gets a unique name, so the functions run in parallel on one server.
//!
//! Waiting is bounded by rounds of long polls (a safety cap, never a timing
//! assertion): a behaviour fails because a message is wrong, missing or
//! duplicated, not because the machine was slow.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::queue::{
    Ensured, Outgoing, QueueService, QueueSpec, Received, Redrive, WorkQueue, DLQ_RETENTION,
    STALE_RECEIPT_CLASS,
};
use common::ErrorKind;

use crate::unique;

/// Long poll used by the helpers.
pub const POLL: Duration = Duration::from_secs(1);

/// Upper bound on long polls while waiting for something that must happen.
pub const MAX_ROUNDS: usize = 60;

/// A queue spec with a visibility timeout in seconds and an optional redrive
/// `(dlq, max_receive_count)`.
pub fn spec(name: &str, visibility_secs: u64, redrive: Option<(&str, u32)>) -> QueueSpec {
    QueueSpec {
        name: name.to_string(),
        visibility_timeout: Duration::from_secs(visibility_secs),
        receive_wait_time: Duration::from_secs(1),
        retention: Duration::from_secs(3600),
        redrive: redrive.map(|(dlq, max)| Redrive {
            dead_letter_queue: dlq.to_string(),
            max_receive_count: max,
        }),
    }
}

/// Create a uniquely named queue and open it.
pub async fn fresh(
    svc: &dyn QueueService,
    visibility_secs: u64,
    redrive: Option<(&str, u32)>,
) -> Arc<dyn WorkQueue> {
    let name = unique("q");
    let got = svc
        .ensure(&spec(&name, visibility_secs, redrive))
        .await
        .unwrap();
    assert_eq!(got, Ensured::Created, "{name}");
    svc.open(&name).await.unwrap()
}

/// Send bodies, asserting every entry was accepted.
pub async fn send(q: &dyn WorkQueue, bodies: &[&str]) {
    for chunk in bodies.chunks(10) {
        let msgs: Vec<Outgoing> = chunk.iter().map(|b| Outgoing::body(*b)).collect();
        let results = q.send_batch(&msgs).await.unwrap();
        assert_eq!(results.len(), msgs.len());
        for r in results {
            r.unwrap();
        }
    }
}

/// Receive until `n` messages arrived (or the round cap), with `visibility`.
pub async fn receive_n(q: &dyn WorkQueue, n: usize, visibility: Option<Duration>) -> Vec<Received> {
    let mut out = Vec::new();
    for _ in 0..MAX_ROUNDS {
        if out.len() >= n {
            break;
        }
        out.extend(
            q.receive(10.min(n - out.len()).max(1), POLL, visibility)
                .await
                .unwrap(),
        );
    }
    out
}

fn bodies(msgs: &[Received]) -> Vec<String> {
    let mut b: Vec<String> = msgs.iter().map(|m| m.body.clone()).collect();
    b.sort();
    b
}

/// Send with attributes, receive, delete: bodies, attributes and the receive
/// count come back; a deleted message is gone; deleting twice is fine.
pub async fn round_trip(svc: &dyn QueueService) {
    let q = fresh(svc, 30, None).await;
    let mut first = Outgoing::body(r#"{"v":1,"keys":["a b/ü.txt"]}"#);
    first
        .attributes
        .insert("reason".into(), "source-missing".into());
    first
        .attributes
        .insert("origin".into(), "s3-migration-01".into());
    let msgs = [
        first.clone(),
        Outgoing::body("second"),
        Outgoing::body("third"),
    ];
    let results = q.send_batch(&msgs).await.unwrap();
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");

    let got = receive_n(&*q, 3, None).await;
    assert_eq!(got.len(), 3);
    assert_eq!(bodies(&got), bodies_of(&msgs));
    for m in &got {
        assert_eq!(m.receive_count, 1, "{m:?}");
        assert!(!m.message_id.is_empty() && !m.receipt.is_empty());
        if m.body == first.body {
            assert_eq!(m.attributes, first.attributes);
        } else {
            assert!(m.attributes.is_empty(), "{m:?}");
        }
    }
    let ids: BTreeSet<&str> = got.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids.len(), 3);
    for m in &got {
        q.delete(&m.receipt).await.unwrap();
    }
    q.delete(&got[0].receipt).await.unwrap();
    assert!(q.depths().await.unwrap().is_empty());
    assert!(q
        .receive(10, Duration::ZERO, None)
        .await
        .unwrap()
        .is_empty());
    assert!(q.send_batch(&[]).await.unwrap().is_empty());
}

fn bodies_of(msgs: &[Outgoing]) -> Vec<String> {
    let mut b: Vec<String> = msgs.iter().map(|m| m.body.clone()).collect();
    b.sort();
    b
}

/// A received, undeleted message comes back after the visibility timeout,
/// with a higher receive count and a new receipt.
pub async fn redelivery_after_visibility_timeout(svc: &dyn QueueService) {
    let q = fresh(svc, 1, None).await;
    send(&*q, &["again"]).await;
    let first = receive_n(&*q, 1, None).await;
    assert_eq!(first.len(), 1);
    let second = receive_n(&*q, 1, None).await;
    assert_eq!(
        second.len(),
        1,
        "not redelivered after the visibility timeout"
    );
    assert_eq!(second[0].body, "again");
    assert_eq!(second[0].message_id, first[0].message_id);
    assert_eq!(second[0].receive_count, 2);
    assert_ne!(second[0].receipt, first[0].receipt);
    q.delete(&second[0].receipt).await.unwrap();
    assert!(q.depths().await.unwrap().is_empty());
}

/// Each receive counts: returning the message at once (visibility 0) and
/// receiving it again gives 1, 2, 3.
pub async fn receive_count_increments(svc: &dyn QueueService) {
    let q = fresh(svc, 30, None).await;
    send(&*q, &["counted"]).await;
    for want in 1..=3 {
        let got = receive_n(&*q, 1, None).await;
        assert_eq!(got.len(), 1, "receive {want}");
        assert_eq!(got[0].receive_count, want);
        q.set_visibility(&got[0].receipt, Duration::ZERO)
            .await
            .unwrap();
    }
}

/// With `maxReceiveCount = 2`, the third receive moves the message to the DLQ
/// (body and attributes intact) instead of returning it.
pub async fn dead_letter_after_max_receives(svc: &dyn QueueService) {
    let dead = fresh(svc, 30, None).await;
    let q = fresh(svc, 30, Some((dead.name(), 2))).await;
    let mut poison = Outgoing::body("poison");
    poison.attributes.insert("why".into(), "test".into());
    let results = q.send_batch(&[poison.clone()]).await.unwrap();
    assert!(results[0].is_ok());
    for want in 1..=2 {
        let got = receive_n(&*q, 1, None).await;
        assert_eq!(got.len(), 1, "receive {want}");
        assert_eq!(got[0].receive_count, want);
        q.set_visibility(&got[0].receipt, Duration::ZERO)
            .await
            .unwrap();
    }
    let third = q.receive(10, Duration::ZERO, None).await.unwrap();
    assert!(
        third.is_empty(),
        "the receive after max must not return it: {third:?}"
    );
    let parked = receive_n(&*dead, 1, None).await;
    assert_eq!(parked.len(), 1, "message lost instead of dead-lettered");
    assert_eq!(parked[0].body, "poison");
    assert_eq!(parked[0].attributes, poison.attributes);
    assert!(q.depths().await.unwrap().is_empty());
    dead.delete(&parked[0].receipt).await.unwrap();
}

/// Four consumers receiving and deleting at once: every message is received
/// exactly once (the visibility timeout is long, so nothing is redelivered).
pub async fn concurrent_consumers_get_each_message_once(svc: &dyn QueueService) {
    const N: usize = 60;
    let q = fresh(svc, 120, None).await;
    let sent: Vec<String> = (0..N).map(|i| format!("m-{i:03}")).collect();
    send(&*q, &sent.iter().map(String::as_str).collect::<Vec<_>>()).await;

    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (q, seen) = (Arc::clone(&q), Arc::clone(&seen));
        tasks.push(tokio::spawn(async move {
            for _ in 0..MAX_ROUNDS {
                let total: usize = seen.lock().unwrap().values().sum();
                if total >= N {
                    break;
                }
                for m in q.receive(3, POLL, None).await.unwrap() {
                    *seen.lock().unwrap().entry(m.body.clone()).or_default() += 1;
                    q.delete(&m.receipt).await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered to two consumers: {twice:?}");
    let mut got: Vec<String> = seen.keys().cloned().collect();
    got.sort();
    assert_eq!(got, sent);
    assert!(q.depths().await.unwrap().is_empty());
}

/// Depths count visible and in-flight messages.
pub async fn depths_count_visible_and_in_flight(svc: &dyn QueueService) {
    let q = fresh(svc, 120, None).await;
    assert!(q.depths().await.unwrap().is_empty());
    send(&*q, &["1", "2", "3", "4", "5"]).await;
    let d = q.depths().await.unwrap();
    assert_eq!((d.visible, d.in_flight), (5, 0));
    let got = receive_n(&*q, 2, None).await;
    assert_eq!(got.len(), 2);
    let d = q.depths().await.unwrap();
    assert_eq!((d.visible, d.in_flight), (3, 2));
    q.delete(&got[0].receipt).await.unwrap();
    let d = q.depths().await.unwrap();
    assert_eq!((d.visible, d.in_flight), (3, 1));
}

/// Extending a message's visibility keeps it hidden past its original
/// timeout; setting it to 0 returns it at once.
pub async fn visibility_extension_and_release(svc: &dyn QueueService) {
    let q = fresh(svc, 1, None).await;
    send(&*q, &["held"]).await;
    let got = receive_n(&*q, 1, None).await;
    assert_eq!(got.len(), 1);
    q.set_visibility(&got[0].receipt, Duration::from_secs(120))
        .await
        .unwrap();
    // Three long polls of 1 s each: well past the original 1 s timeout.
    for _ in 0..3 {
        let early = q.receive(10, POLL, None).await.unwrap();
        assert!(early.is_empty(), "redelivered while extended: {early:?}");
    }
    assert_eq!(q.depths().await.unwrap().in_flight, 1);
    q.set_visibility(&got[0].receipt, Duration::ZERO)
        .await
        .unwrap();
    let back = receive_n(&*q, 1, None).await;
    assert_eq!(back.len(), 1, "visibility 0 did not return the message");
    assert_eq!(back[0].receive_count, 2);
    // The receive override applies to that receive only.
    q.set_visibility(&back[0].receipt, Duration::ZERO)
        .await
        .unwrap();
    let held = receive_n(&*q, 1, Some(Duration::from_secs(120))).await;
    assert_eq!(held.len(), 1);
    for _ in 0..2 {
        assert!(q.receive(10, POLL, None).await.unwrap().is_empty());
    }
}

/// `ensure` is idempotent and says what it did.
pub async fn ensure_reports_created_unchanged_updated(svc: &dyn QueueService) {
    let dead = unique("dead");
    let name = unique("work");
    assert_eq!(
        svc.ensure(&spec(&dead, 30, None)).await.unwrap(),
        Ensured::Created
    );
    let s = spec(&name, 30, Some((&dead, 3)));
    assert_eq!(svc.ensure(&s).await.unwrap(), Ensured::Created);
    assert_eq!(svc.ensure(&s).await.unwrap(), Ensured::Unchanged);
    let mut changed = s.clone();
    changed.visibility_timeout = Duration::from_secs(45);
    assert_eq!(
        svc.ensure(&changed).await.unwrap(),
        Ensured::Updated(vec!["VisibilityTimeout".into()])
    );
    changed.redrive.as_mut().unwrap().max_receive_count = 7;
    changed.retention = Duration::from_secs(7200);
    assert_eq!(
        svc.ensure(&changed).await.unwrap(),
        Ensured::Updated(vec![
            "MessageRetentionPeriod".into(),
            "RedrivePolicy".into()
        ])
    );
    assert_eq!(svc.ensure(&changed).await.unwrap(), Ensured::Unchanged);
    // The update took effect: a message now survives 7 receives, not 3.
    let q = svc.open(&name).await.unwrap();
    send(&*q, &["x"]).await;
    for want in 1..=4 {
        let got = receive_n(&*q, 1, None).await;
        assert_eq!(got.len(), 1, "receive {want}");
        q.set_visibility(&got[0].receipt, Duration::ZERO)
            .await
            .unwrap();
    }
    // A redrive to a queue that does not exist is refused, naming it.
    let nodlq = unique("nodlq");
    let err = svc
        .ensure(&spec(&unique("w"), 30, Some((&nodlq, 3))))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&nodlq), "{err}");
}

/// `commander init` gives the DLQ the longest retention (14 days) whatever
/// the work queues use, and brings an existing DLQ with another value to it.
pub async fn init_gives_the_dlq_the_maximum_retention(svc: &dyn QueueService) {
    let mut cfg = common::config::Config::default();
    cfg.sqs.queue_num = 1;
    cfg.sqs.dead_queue_name = unique("dead");
    cfg.sqs.queue_name_pattern = common::config::QueuePattern(format!("{}-{{}}", unique("work")));
    cfg.sqs.message_retention_period = Duration::from_secs(86_400);
    // A DLQ made by an older init, with the work queues' retention.
    let mut old = spec(&cfg.sqs.dead_queue_name, 30, None);
    old.visibility_timeout = cfg.sqs.visibility_timeout;
    old.receive_wait_time = cfg.sqs.receive_message_wait_time;
    old.retention = cfg.sqs.message_retention_period;
    assert_eq!(svc.ensure(&old).await.unwrap(), Ensured::Created);

    let done = common::queue::set::init(svc, &cfg).await.unwrap();
    assert_eq!(
        done[0],
        (
            cfg.sqs.dead_queue_name.clone(),
            Ensured::Updated(vec!["MessageRetentionPeriod".into()])
        )
    );
    assert_eq!(done[1].1, Ensured::Created);
    // What the backend now holds is exactly 14 days for the DLQ, and the
    // configured retention for the work queue.
    let mut dlq = old.clone();
    dlq.retention = DLQ_RETENTION;
    assert_eq!(svc.ensure(&dlq).await.unwrap(), Ensured::Unchanged);
    let again = common::queue::set::init(svc, &cfg).await.unwrap();
    assert!(
        again.iter().all(|(_, e)| *e == Ensured::Unchanged),
        "{again:?}"
    );
}

/// A delete whose receipt no longer names the message — it was moved to the
/// DLQ by a later receive — is a `ReceiptHandleIsInvalid` error, never a
/// success: the message was not deleted by it.
pub async fn delete_with_a_stale_receipt_is_not_success(svc: &dyn QueueService) {
    let dead = fresh(svc, 30, None).await;
    let q = fresh(svc, 30, Some((dead.name(), 1))).await;
    send(&*q, &["moved"]).await;
    let first = receive_n(&*q, 1, None).await;
    assert_eq!(first.len(), 1);
    q.set_visibility(&first[0].receipt, Duration::ZERO)
        .await
        .unwrap();
    // The receive after the last allowed one moves it to the DLQ.
    let none = q.receive(10, Duration::ZERO, None).await.unwrap();
    assert!(none.is_empty(), "{none:?}");
    let err = q.delete(&first[0].receipt).await.unwrap_err();
    assert_eq!(err.class, STALE_RECEIPT_CLASS, "{err}");
    assert_eq!(err.kind, ErrorKind::Invalid, "{err}");
    let parked = receive_n(&*dead, 1, None).await;
    assert_eq!(parked.len(), 1, "the message is in the DLQ, not deleted");
    assert_eq!(parked[0].body, "moved");
    dead.delete(&parked[0].receipt).await.unwrap();
    // Deleting an already deleted message stays fine.
    dead.delete(&parked[0].receipt).await.unwrap();
}

/// Opening a missing queue fails with an `Input` error naming it and
/// pointing at `commander init`.
pub async fn open_missing_queue_names_it(svc: &dyn QueueService) {
    let name = unique("missing");
    let err = svc.open(&name).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Input, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&name) && text.contains("commander init"),
        "{text}"
    );
}

/// One bad entry in a batch fails alone, non-retryable, in its position; the
/// others are delivered. `bad` is an entry the backend rejects per entry.
pub async fn batch_failure_is_per_entry(svc: &dyn QueueService, bad: Outgoing) {
    let q = fresh(svc, 30, None).await;
    let msgs = [Outgoing::body("good-1"), bad, Outgoing::body("good-2")];
    let results = q.send_batch(&msgs).await.unwrap();
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    let err = results[1].as_ref().unwrap_err();
    assert!(!err.kind.is_retryable(), "{err}");
    assert_eq!(err.subject, q.name());
    let got = receive_n(&*q, 2, None).await;
    assert_eq!(bodies(&got), ["good-1", "good-2"]);
    assert!(q
        .receive(10, Duration::ZERO, None)
        .await
        .unwrap()
        .is_empty());
}

/// Consume a queue until it is empty (nothing visible or in flight), deleting
/// each message; returns the bodies received. For multi-consumer tests.
pub async fn drain(q: &dyn WorkQueue) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..MAX_ROUNDS * 10 {
        let got = q
            .receive(10, Duration::from_millis(300), None)
            .await
            .unwrap();
        if got.is_empty() && q.depths().await.unwrap().is_empty() {
            break;
        }
        for m in got {
            q.delete(&m.receipt).await.unwrap();
            out.push(m.body);
        }
    }
    out
}

/// Count occurrences (to spot a message received twice).
pub fn counts(bodies: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for b in bodies {
        *out.entry(b).or_default() += 1;
    }
    out
}
