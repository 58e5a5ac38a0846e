//! Parking in the dead-letter queue: the DLQ entries of failed keys (sized to
//! fit a message), bodies that are not a message, the contract's attributes
//! ([`common::message::dlq`]), and the memory of what this run parked itself
//! (so a DLQ replay does not work it again).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::message::dlq::{DlqAttributes, BAD_MESSAGE};
use common::message::{self, Batch, BatchBuilder, Failure, KeyItem};
use common::queue::set::send_all;
use common::queue::{attribute_value, Outgoing, Received, WorkQueue};
use common::Error;

use super::Shared;

/// Longest error message kept in a DLQ entry or message attribute (bytes, cut at a char boundary).
pub const MAX_REASON_BYTES: usize = 1024;

/// Bytes kept free under the message size limit for a DLQ message's attributes.
const ATTRIBUTE_ROOM: usize = 1024;

/// Cut `s` to at most `max` bytes at a char boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The DLQ entry for a failed key: the key with why, how often, and in which mode.
pub fn failed_item(item: &KeyItem, err: &Error, mode: &str) -> KeyItem {
    let attempts = item.failure.as_ref().map_or(0, |f| f.attempts) + 1;
    KeyItem {
        failure: Some(Failure {
            class: err.class.clone(),
            message: truncate(&err.described(), MAX_REASON_BYTES),
            attempts,
            mode: Some(mode.to_string()),
        }),
        ..item.clone()
    }
}

/// Encode failed keys of `batch` into DLQ bodies, each at most `max_bytes`.
pub fn dlq_bodies(batch: &Batch, failed: Vec<KeyItem>, max_bytes: usize) -> Vec<String> {
    let mut builder = BatchBuilder::new(
        &batch.job_id,
        &batch.source,
        &batch.target,
        usize::MAX,
        max_bytes,
    );
    let mut out = Vec::new();
    for item in failed {
        if let Some(closed) = builder.push(item) {
            out.push(message::encode(&closed));
        }
    }
    out.extend(builder.take().map(|b| message::encode(&b)));
    out
}

fn body_hash(body: &str) -> u64 {
    let mut h = DefaultHasher::new();
    body.hash(&mut h);
    h.finish()
}

impl Shared {
    /// Whether this run sent exactly this body to the DLQ.
    pub(super) fn is_parked_here(&self, body: &str) -> bool {
        self.parked
            .lock()
            .expect("parked lock")
            .contains(&body_hash(body))
    }

    fn remember_parked(&self, body: &str) {
        self.parked
            .lock()
            .expect("parked lock")
            .insert(body_hash(body));
    }

    /// Send bodies to the DLQ; remember them so this run does not work them again.
    async fn send_dead(&self, msgs: Vec<Outgoing>) -> common::Result<()> {
        // Bodies were sized to fit; never let the per-call limit refuse one.
        let max = msgs
            .iter()
            .map(Outgoing::size)
            .max()
            .unwrap_or(0)
            .max(self.settings.max_message_bytes);
        let bodies: Vec<String> = msgs.iter().map(|m| m.body.clone()).collect();
        send_all(&*self.dead, msgs, max).await?;
        for b in &bodies {
            self.remember_parked(b);
        }
        Ok(())
    }

    /// Park the failed keys of a finished message as new DLQ messages (with the
    /// first failure's class and the source queue), then delete the message; if
    /// the DLQ send fails, return the message instead: nothing is lost.
    pub(super) async fn park_failed(
        &self,
        queue: &dyn WorkQueue,
        msg: &Received,
        batch: &Batch,
        failed: Vec<KeyItem>,
    ) {
        let count = failed.len();
        let class = failed[0]
            .failure
            .as_ref()
            .map(|f| f.class.clone())
            .unwrap_or_default();
        let attributes = DlqAttributes {
            error_class: Some(attribute_value(&class, MAX_REASON_BYTES)),
            source_queue: Some(queue.name().to_string()),
            reason: None,
        }
        .to_map();
        let outgoing: Vec<Outgoing> = dlq_bodies(
            batch,
            failed,
            self.settings
                .max_message_bytes
                .saturating_sub(ATTRIBUTE_ROOM)
                .max(1024),
        )
        .into_iter()
        .map(|body| Outgoing {
            body,
            attributes: attributes.clone(),
        })
        .collect();
        let sent = outgoing.len() as u64;
        match self.send_dead(outgoing).await {
            Ok(()) => {
                self.counters
                    .dlq_messages
                    .fetch_add(sent, Ordering::Relaxed);
                tracing::info!(queue = queue.name(), message_id = %msg.message_id, failed = count,
                    dlq = self.dead.name(), "failed keys parked in the dead-letter queue");
                self.delete(queue, msg).await;
            }
            Err(e) => {
                tracing::error!(queue = queue.name(), message_id = %msg.message_id, error = %e,
                    "could not park failed keys in the dead-letter queue; returning the message");
                self.return_message(queue, msg).await;
            }
        }
    }

    /// A body that is neither format, or that the worker does not admit: to the
    /// DLQ unchanged (with the reason), then delete.
    /// From the DLQ itself it is left where it is (held until exit).
    pub(super) async fn bad_message(
        &self,
        queue: &Arc<dyn WorkQueue>,
        from_dead: bool,
        msg: &Received,
        err: Error,
    ) {
        // Made safe for an attribute: a reason SQS refuses would loop the message.
        let reason = attribute_value(&err.full_message(), MAX_REASON_BYTES);
        tracing::warn!(queue = queue.name(), message_id = %msg.message_id, error_class = BAD_MESSAGE,
            error = %reason, "bad message (unknown format or refused endpoint)");
        if from_dead {
            self.hold(queue, msg);
            return;
        }
        let out = Outgoing {
            body: msg.body.clone(),
            attributes: DlqAttributes {
                error_class: Some(BAD_MESSAGE.into()),
                source_queue: Some(queue.name().to_string()),
                reason: Some(reason),
            }
            .to_map(),
        };
        match self.send_dead(vec![out]).await {
            Ok(()) => {
                self.counters.bad_messages.fetch_add(1, Ordering::Relaxed);
                self.delete(&**queue, msg).await;
            }
            Err(e) => {
                tracing::error!(queue = queue.name(), message_id = %msg.message_id, error = %e,
                    "could not forward a bad message to the dead-letter queue; returning it");
                self.return_message(&**queue, msg).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use common::ErrorKind;

    use super::super::testkit::*;
    use super::super::StopReason;
    use super::*;

    #[test]
    fn failed_items_count_attempts_and_keep_listing_facts() {
        let item = KeyItem {
            key: "a".into(),
            size: Some(3),
            etag: Some("\"x\"".into()),
            ..KeyItem::default()
        };
        let err = Error::new(
            ErrorKind::AccessDenied,
            "AccessDenied",
            "s3://b/a",
            "denied",
        );
        let once = failed_item(&item, &err, "copy");
        let f = once.failure.clone().unwrap();
        assert_eq!(
            (f.class.as_str(), f.attempts, f.mode.as_deref()),
            ("AccessDenied", 1, Some("copy"))
        );
        assert_eq!((once.size, once.etag.as_deref()), (Some(3), Some("\"x\"")));
        let twice = failed_item(&once, &err, "downup");
        assert_eq!(twice.failure.unwrap().attempts, 2);
    }

    #[test]
    fn dlq_bodies_fit_the_size_limit_and_keep_every_key() {
        let batch = Batch {
            v: 1,
            job_id: "j".into(),
            source: "s3://src".into(),
            target: "s3://dst".into(),
            keys: vec![],
        };
        let err = Error::new(ErrorKind::Permanent, "Boom", "", "x".repeat(3000));
        let failed: Vec<KeyItem> = (0..50)
            .map(|i| {
                failed_item(
                    &KeyItem {
                        key: format!("{}{i}", "k".repeat(900)),
                        ..KeyItem::default()
                    },
                    &err,
                    "copy",
                )
            })
            .collect();
        let bodies = dlq_bodies(&batch, failed, 16 * 1024);
        assert!(bodies.len() > 1);
        let mut n = 0;
        for b in &bodies {
            assert!(b.len() <= 16 * 1024, "{}", b.len());
            let decoded = message::decode(b).unwrap();
            assert_eq!(decoded.job_id, "j");
            for k in &decoded.keys {
                assert!(k.failure.as_ref().unwrap().message.len() <= MAX_REASON_BYTES + 3);
            }
            n += decoded.keys.len();
        }
        assert_eq!(n, 50);
        assert_eq!(dlq_bodies(&batch, vec![], 1024), Vec::<String>::new());
    }

    #[test]
    fn truncate_cuts_at_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééé", 3), "é…");
        assert_eq!(truncate("abcdef", 3), "abc…");
    }

    // ---- parking, against the embedded queue ----

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_keys_are_parked_in_one_dlq_message_then_the_original_deleted() {
        let q = queues().await;
        send(&*q.work, vec![body(&["ok-1", "fail-a", "ok-2", "panic-b"])]).await;
        let w = Arc::new(Scripted::default());
        let stats = serve_until_empty(&q, vec![q.work.clone()], w.clone(), test_settings()).await;
        assert_eq!(
            (
                stats.keys,
                stats.failed,
                stats.dlq_messages,
                stats.messages_done
            ),
            (4, 2, 1, 1)
        );
        assert!(q.work.depths().await.unwrap().is_empty());
        let dead = drain(&*q.dead).await;
        assert_eq!(dead.len(), 1);
        let parked = message::decode(&dead[0].body).unwrap();
        assert_eq!(
            (
                parked.job_id.as_str(),
                parked.source.as_str(),
                parked.target.as_str()
            ),
            ("job-1", "s3://src", "s3://dst")
        );
        let keys: Vec<(&str, &str, u32)> = parked
            .keys
            .iter()
            .map(|k| {
                let f = k.failure.as_ref().unwrap();
                assert_eq!(f.mode.as_deref(), Some("copy"));
                (k.key.as_str(), f.class.as_str(), f.attempts)
            })
            .collect();
        assert_eq!(
            keys,
            [("fail-a", "AccessDenied", 1), ("panic-b", "Panic", 1)]
        );
        assert!(parked.keys[1]
            .failure
            .as_ref()
            .unwrap()
            .message
            .contains("scripted panic"));
        assert_eq!(
            dead[0].attributes.get("source_queue").map(String::as_str),
            Some("work")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_bodies_go_to_the_dlq_unchanged_and_legacy_bodies_are_worked() {
        let q = queues().await;
        let legacy = r#"{"source_bucket":"src","target_bucket":"dst","keys":[{"source_key":"a%20b%2Bc","target_key":"a%20b%2Bc"}]}"#;
        send(
            &*q.work,
            vec![
                "not json {".into(),
                legacy.into(),
                r#"{"v":1,"job_id":"j"}"#.into(),
            ],
        )
        .await;
        let w = Arc::new(Scripted::default());
        let stats = serve_until_empty(&q, vec![q.work.clone()], w.clone(), test_settings()).await;
        assert_eq!(w.calls(), ["a b+c"]);
        assert_eq!((stats.bad_messages, stats.messages_done), (2, 3));
        assert!(q.work.depths().await.unwrap().is_empty());
        let mut dead = drain(&*q.dead).await;
        dead.sort_by(|a, b| a.body.cmp(&b.body));
        assert_eq!(dead.len(), 2);
        assert_eq!(dead[0].body, "not json {");
        assert_eq!(dead[1].body, r#"{"v":1,"job_id":"j"}"#);
        for m in &dead {
            assert_eq!(
                m.attributes.get("error_class").map(String::as_str),
                Some("BadMessage")
            );
        }
        assert!(
            dead[0].attributes["reason"].contains("not JSON"),
            "{:?}",
            dead[0].attributes
        );
        assert!(
            dead[1].attributes["reason"].contains("bad message"),
            "{:?}",
            dead[1].attributes
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_poison_message_with_an_unsafe_reason_reaches_the_dlq() {
        let q = queues().await;
        // The decode error quotes the key, control character included.
        let poison = r#"{"source_bucket":"src","target_bucket":"dst","keys":[{"source_key":"bad\u0001\u001b[31m%ff"}]}"#;
        send(&*q.work, vec![poison.into()]).await;
        let w = Arc::new(Scripted::default());
        let stats = serve_until_empty(&q, vec![q.work.clone()], w.clone(), test_settings()).await;
        assert!(w.calls().is_empty());
        assert_eq!(
            (
                stats.bad_messages,
                stats.messages_done,
                stats.messages_returned
            ),
            (1, 1, 0)
        );
        let dead = drain(&*q.dead).await;
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].body, poison);
        let reason = &dead[0].attributes["reason"];
        assert!(reason.contains("bad\\u{1}\\u{1b}[31m%ff"), "{reason}");
        assert!(!reason.chars().any(char::is_control), "{reason}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dlq_replay_reparks_failures_once_and_ends() {
        let q = queues().await;
        let err = Error::new(ErrorKind::AccessDenied, "AccessDenied", "", "denied");
        let parked = Batch {
            v: 1,
            job_id: "job-1".into(),
            source: "s3://src".into(),
            target: "s3://dst".into(),
            keys: vec![
                failed_item(
                    &KeyItem {
                        key: "fixed".into(),
                        ..KeyItem::default()
                    },
                    &err,
                    "copy",
                ),
                failed_item(
                    &KeyItem {
                        key: "fail-still".into(),
                        ..KeyItem::default()
                    },
                    &err,
                    "copy",
                ),
            ],
        };
        send(&*q.dead, vec![message::encode(&parked), "garbage".into()]).await;
        let w = Arc::new(Scripted::default());
        let stats = serve_until_empty(&q, vec![q.dead.clone()], w.clone(), test_settings()).await;
        let mut calls = w.calls();
        calls.sort();
        assert_eq!(
            calls,
            ["fail-still", "fixed"],
            "each key tried once in this run"
        );
        assert_eq!(stats.stopped_by, StopReason::QueuesEmpty);
        assert_eq!(
            stats.held, 2,
            "the re-parked message and the garbage are held, not reworked"
        );
        let mut dead = drain(&*q.dead).await;
        dead.sort_by(|a, b| a.body.cmp(&b.body));
        assert_eq!(dead.len(), 2, "{dead:?}");
        assert_eq!(
            dead[0].body, "garbage",
            "a bad body in the DLQ stays as it is"
        );
        let again = message::decode(&dead[1].body).unwrap();
        assert_eq!(again.keys.len(), 1);
        assert_eq!(again.keys[0].key, "fail-still");
        assert_eq!(again.keys[0].failure.as_ref().unwrap().attempts, 2);
    }
}
