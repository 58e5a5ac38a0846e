//! The queue message: a versioned JSON batch of keys, plus the legacy format of
//! the Python tool so that its queues and DLQs can still be drained.
//!
//! ```json
//! {"v":1,"job_id":"…","source":"s3://src","target":"s3://dst",
//!  "keys":[{"key":"a/b.txt","size":12,"etag":"\"…\"","last_modified":"2024-01-01T00:00:00Z"}]}
//! ```
//! `source`/`target` are [`crate::location::Location`] strings without a prefix;
//! keys are full keys. Listing facts are optional: executors HEAD what is missing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// Current message format version.
pub const MESSAGE_VERSION: u32 = 1;

/// One queue message: a job's batch of keys from one source to one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub v: u32,
    pub job_id: String,
    pub source: String,
    pub target: String,
    pub keys: Vec<KeyItem>,
}

/// One key and whatever the lister knew about it (so executors can skip a HEAD).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyItem {
    /// Source key.
    pub key: String,
    /// Target key when it differs from `key` (`--target-prefix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// The source's checksum algorithm as listed (`CRC64NVME`, …), so a copy
    /// made without a HEAD knows the source has its own to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_algorithm: Option<String>,
    /// What to do with the key (absent: [`Op::Copy`]). `commander run
    /// --sync` sends the other two; executors older than them park such
    /// messages as bad (unknown field), never misread them.
    #[serde(default, skip_serializing_if = "Op::is_copy")]
    pub op: Op,
    /// [`Op::Update`] only: the listing saw the target modified after the
    /// source, so a target that differs is left alone (outcome
    /// `target-newer`) instead of overwritten (`--overwrite-newer` clears it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_newer_target: bool,
    /// Set on keys parked in the DLQ: why, and how often it was tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// What an executor does with one key.
///
/// For [`Op::Delete`] the listing facts of the item (`size`, `etag`,
/// `last_modified`) are the **target's**: the delete is conditional on the
/// target still being that object, and `key` is the source key it would
/// have been copied from (absent from the source when listed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Work the key in the executor's mode (copy, downup or check).
    #[default]
    Copy,
    /// The listing could not show the target equal (same size, ETags differ
    /// or cannot be compared): compare first, as `--verify` does, and write
    /// only when the target is not proven equal.
    Update,
    /// The key exists on the target only (`--sync --delete`): delete the
    /// target object if it is still the listed one and the source still
    /// lacks the key.
    Delete,
}

impl Op {
    /// The default: nothing to serialize.
    pub fn is_copy(&self) -> bool {
        *self == Op::Copy
    }

    /// The name messages and logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Copy => "copy",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

impl KeyItem {
    /// The key to write on the target.
    pub fn target_key(&self) -> &str {
        self.target_key.as_deref().unwrap_or(&self.key)
    }
}

/// Why a key was parked in the DLQ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    /// Error class (S3 error code or ours, e.g. `SlowDown`, `Mismatch`).
    pub class: String,
    pub message: String,
    pub attempts: u32,
    /// Mode that failed (`copy`, `downup`, `check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// The Python tool's message: `{"source_bucket","target_bucket","keys":[{"source_key","target_key"}]}`
/// with URL-quoted keys.
#[derive(Deserialize)]
struct LegacyBatch {
    source_bucket: String,
    target_bucket: String,
    keys: Vec<LegacyKey>,
}

#[derive(Deserialize)]
struct LegacyKey {
    source_key: String,
    target_key: Option<String>,
}

/// Job id given to messages decoded from the legacy format.
pub const LEGACY_JOB_ID: &str = "legacy";

/// Serialize a batch (compact JSON).
pub fn encode(batch: &Batch) -> String {
    serde_json::to_string(batch).expect("a Batch always serializes")
}

/// Decode a message body: the current format or the legacy one. A body that is
/// neither is an [`ErrorKind::Invalid`] error saying why (it goes to the DLQ unchanged).
pub fn decode(body: &str) -> Result<Batch> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| invalid(format!("message is not JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| invalid("message is not a JSON object".to_string()))?;
    if obj.contains_key("v") {
        let batch: Batch =
            serde_json::from_value(value).map_err(|e| invalid(format!("bad message: {e}")))?;
        if batch.v != MESSAGE_VERSION {
            return Err(invalid(format!(
                "unsupported message version {} (this executor reads {MESSAGE_VERSION})",
                batch.v
            )));
        }
        validate(&batch)?;
        return Ok(batch);
    }
    if obj.contains_key("source_bucket") {
        let legacy: LegacyBatch = serde_json::from_value(value)
            .map_err(|e| invalid(format!("bad legacy message: {e}")))?;
        let mut keys = Vec::with_capacity(legacy.keys.len());
        for k in legacy.keys {
            let key = unquote(&k.source_key)?;
            let target = match k.target_key {
                Some(t) => Some(unquote(&t)?),
                None => None,
            };
            keys.push(KeyItem {
                target_key: target.filter(|t| *t != key),
                key,
                ..KeyItem::default()
            });
        }
        let batch = Batch {
            v: MESSAGE_VERSION,
            job_id: LEGACY_JOB_ID.to_string(),
            source: format!("s3://{}", legacy.source_bucket),
            target: format!("s3://{}", legacy.target_bucket),
            keys,
        };
        validate(&batch)?;
        return Ok(batch);
    }
    Err(invalid(
        "message has neither `v` (current format) nor `source_bucket` (legacy format)".to_string(),
    ))
}

fn validate(batch: &Batch) -> Result<()> {
    if batch.keys.is_empty() {
        return Err(invalid("message has no keys".to_string()));
    }
    for k in &batch.keys {
        if k.key.is_empty() || k.target_key().is_empty() {
            return Err(invalid("message has an empty key".to_string()));
        }
        if k.key.len() > 1024 || k.target_key().len() > 1024 {
            return Err(invalid(format!(
                "key of {} bytes exceeds S3's 1,024-byte limit",
                k.key.len().max(k.target_key().len())
            )));
        }
    }
    Ok(())
}

fn unquote(s: &str) -> Result<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| {
            invalid(format!(
                "legacy key `{s}` is not valid percent-encoded UTF-8"
            ))
        })
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::Invalid, dlq::BAD_MESSAGE, "message", message)
}

/// The dead-letter queue's contract: the attributes an executor puts on what it
/// parks, which the commander's `dlq` and `redrive` read back.
///
/// * A message of failed keys carries [`ERROR_CLASS`] (the first failed key's
///   class; each key also keeps its own in [`Failure`]) and [`SOURCE_QUEUE`].
/// * A body that is neither format, or that names endpoints the executor refuses,
///   is parked unchanged with [`ERROR_CLASS`] = [`BAD_MESSAGE`], [`REASON`] and
///   [`SOURCE_QUEUE`].
pub mod dlq {
    use std::collections::BTreeMap;

    /// Attribute: the error class of the parked keys (or [`BAD_MESSAGE`]).
    pub const ERROR_CLASS: &str = "error_class";
    /// Attribute: the name of the work queue the parked message was received from.
    pub const SOURCE_QUEUE: &str = "source_queue";
    /// Attribute: why a body was refused (bad messages only).
    pub const REASON: &str = "reason";
    /// Error class of a body that decodes as neither message format, or that
    /// names an endpoint the executor does not admit.
    pub const BAD_MESSAGE: &str = "BadMessage";

    /// The contract's attributes of one DLQ message; `None` = not set.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct DlqAttributes {
        /// [`ERROR_CLASS`].
        pub error_class: Option<String>,
        /// [`SOURCE_QUEUE`].
        pub source_queue: Option<String>,
        /// [`REASON`].
        pub reason: Option<String>,
    }

    impl DlqAttributes {
        /// The set attributes by name, values as they are (callers make them
        /// safe for the queue first, e.g. with `queue::attribute_value`).
        pub fn to_map(&self) -> BTreeMap<String, String> {
            [
                (ERROR_CLASS, &self.error_class),
                (SOURCE_QUEUE, &self.source_queue),
                (REASON, &self.reason),
            ]
            .into_iter()
            .filter_map(|(name, v)| v.clone().map(|v| (name.to_string(), v)))
            .collect()
        }

        /// The contract's attributes found in `attributes` (others are ignored),
        /// values as they are, empty ones included.
        pub fn from_map(attributes: &BTreeMap<String, String>) -> Self {
            DlqAttributes {
                error_class: attributes.get(ERROR_CLASS).cloned(),
                source_queue: attributes.get(SOURCE_QUEUE).cloned(),
                reason: attributes.get(REASON).cloned(),
            }
        }
    }
}

/// Builds batches that close at `max_keys` keys or before the encoded message
/// would exceed `max_bytes`, whichever comes first. A single key always fits
/// (keys are at most 1,024 bytes, far below any queue's limit).
#[derive(Debug)]
pub struct BatchBuilder {
    job_id: String,
    source: String,
    target: String,
    max_keys: usize,
    max_bytes: usize,
    keys: Vec<KeyItem>,
    bytes: usize,
}

impl BatchBuilder {
    /// `max_keys` ≥ 1; `max_bytes` is the queue's message size limit.
    pub fn new(
        job_id: &str,
        source: &str,
        target: &str,
        max_keys: usize,
        max_bytes: usize,
    ) -> Self {
        let mut b = BatchBuilder {
            job_id: job_id.to_string(),
            source: source.to_string(),
            target: target.to_string(),
            max_keys: max_keys.max(1),
            max_bytes,
            keys: Vec::new(),
            bytes: 0,
        };
        b.bytes = b.envelope_len();
        b
    }

    fn envelope_len(&self) -> usize {
        encode(&Batch {
            v: MESSAGE_VERSION,
            job_id: self.job_id.clone(),
            source: self.source.clone(),
            target: self.target.clone(),
            keys: Vec::new(),
        })
        .len()
    }

    /// Add a key; returns the batch it closed, if adding it closed one.
    pub fn push(&mut self, key: KeyItem) -> Option<Batch> {
        let key_len = serde_json::to_string(&key)
            .expect("KeyItem serializes")
            .len();
        let sep = usize::from(!self.keys.is_empty());
        let mut closed = None;
        if !self.keys.is_empty() && self.bytes + sep + key_len > self.max_bytes {
            closed = self.take();
        }
        let sep = usize::from(!self.keys.is_empty());
        self.bytes += sep + key_len;
        self.keys.push(key);
        if self.keys.len() >= self.max_keys {
            debug_assert!(closed.is_none() || self.max_keys == 1);
            if closed.is_none() {
                closed = self.take();
            }
        }
        closed
    }

    /// Close the current batch, if it has keys.
    pub fn take(&mut self) -> Option<Batch> {
        if self.keys.is_empty() {
            return None;
        }
        let keys = std::mem::take(&mut self.keys);
        self.bytes = self.envelope_len();
        Some(Batch {
            v: MESSAGE_VERSION,
            job_id: self.job_id.clone(),
            source: self.source.clone(),
            target: self.target.clone(),
            keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> KeyItem {
        KeyItem {
            key: k.to_string(),
            size: Some(1),
            ..KeyItem::default()
        }
    }

    #[test]
    fn round_trips_the_current_format() {
        let b = Batch {
            v: 1,
            job_id: "j".into(),
            source: "s3://a".into(),
            target: "file:///t".into(),
            keys: vec![
                key("a b+c%/ü"),
                KeyItem {
                    target_key: Some("x/y".into()),
                    ..key("y")
                },
            ],
        };
        assert_eq!(decode(&encode(&b)).unwrap(), b);
    }

    #[test]
    fn decodes_legacy_messages_with_quoted_keys() {
        let body = r#"{"source_bucket":"src","target_bucket":"dst","keys":[{"source_key":"a%20b%2Bc","target_key":"a%20b%2Bc"}]}"#;
        let b = decode(body).unwrap();
        assert_eq!(b.source, "s3://src");
        assert_eq!(b.keys[0].key, "a b+c");
        assert_eq!(b.keys[0].target_key(), "a b+c");
        assert_eq!(b.job_id, LEGACY_JOB_ID);
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        for (body, why) in [
            ("not json", "not JSON"),
            ("[1]", "not a JSON object"),
            ("{}", "neither"),
            (
                r#"{"v":2,"job_id":"j","source":"s3://a","target":"s3://b","keys":[{"key":"k"}]}"#,
                "version 2",
            ),
            (
                r#"{"v":1,"job_id":"j","source":"s3://a","target":"s3://b","keys":[]}"#,
                "no keys",
            ),
            (
                r#"{"v":1,"job_id":"j","source":"s3://a","target":"s3://b","keys":[{"key":""}]}"#,
                "empty key",
            ),
        ] {
            let e = decode(body).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Invalid);
            assert!(e.message.contains(why), "{body}: {e}");
        }
    }

    #[test]
    fn batches_close_on_count_and_on_size() {
        let mut b = BatchBuilder::new("j", "s3://a", "s3://b", 3, 1 << 20);
        let closed: Vec<_> = (0..7)
            .filter_map(|i| b.push(key(&format!("k{i}"))))
            .collect();
        assert_eq!(closed.len(), 2);
        assert_eq!(b.take().unwrap().keys.len(), 1);

        let long = "x".repeat(1024);
        let mut b = BatchBuilder::new("j", "s3://a", "s3://b", 500, 8 * 1024);
        let mut all = Vec::new();
        for i in 0..100 {
            all.extend(b.push(key(&format!("{long}{i}"))));
        }
        all.extend(b.take());
        assert_eq!(all.iter().map(|b| b.keys.len()).sum::<usize>(), 100);
        for batch in &all {
            assert!(encode(batch).len() <= 8 * 1024, "{}", encode(batch).len());
        }
    }

    #[test]
    fn hostile_keys_are_rejected_with_a_reason() {
        let long = "k".repeat(1025);
        for (body, why) in [
            (format!(r#"{{"v":1,"job_id":"j","source":"s3://a","target":"s3://b","keys":[{{"key":"{long}"}}]}}"#), "1,024"),
            (r#"{"source_bucket":"a","target_bucket":"b","keys":[{"source_key":"%FF%FE"}]}"#.to_string(), "percent-encoded"),
            (r#"{"source_bucket":"a","target_bucket":"b","keys":[{"source_key":""}]}"#.to_string(), "empty key"),
            (r#"{"v":1,"job_id":"j","source":"s3://a","target":"s3://b","keys":[{"key":"k","extra":1}]}"#.to_string(), "unknown field"),
        ] {
            let e = decode(&body).unwrap_err();
            assert_eq!(e.subject, "message");
            assert!(e.message.contains(why), "{why}: {e}");
        }
        // Control characters are legal in S3 keys and survive a round trip.
        let b = Batch {
            v: 1,
            job_id: "j".into(),
            source: "s3://a".into(),
            target: "s3://b".into(),
            keys: vec![key("a\u{1}b\n\t\u{7f}")],
        };
        assert_eq!(decode(&encode(&b)).unwrap(), b);
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics_on_any_text(body in ".{0,400}") {
            if let Err(e) = decode(&body) {
                proptest::prop_assert_eq!(e.kind, ErrorKind::Invalid);
                proptest::prop_assert_eq!(e.subject.as_str(), "message");
            }
        }

        #[test]
        fn decode_never_panics_on_json_shaped_input(
            keys in proptest::collection::vec(".{0,1100}", 0..4),
            legacy in proptest::bool::ANY,
            v in 0u32..3,
        ) {
            let body = if legacy {
                serde_json::json!({"source_bucket": "a", "target_bucket": "b",
                    "keys": keys.iter().map(|k| serde_json::json!({"source_key": k})).collect::<Vec<_>>()})
            } else {
                serde_json::json!({"v": v, "job_id": "j", "source": "s3://a", "target": "s3://b",
                    "keys": keys.iter().map(|k| serde_json::json!({"key": k})).collect::<Vec<_>>()})
            };
            match decode(&body.to_string()) {
                Ok(b) => {
                    proptest::prop_assert!(!b.keys.is_empty());
                    proptest::prop_assert!(b.keys.iter().all(|k| !k.key.is_empty() && k.key.len() <= 1024));
                }
                Err(e) => proptest::prop_assert_eq!(e.kind, ErrorKind::Invalid),
            }
        }

        #[test]
        fn every_batch_fits_and_no_key_is_lost(
            keys in proptest::collection::vec("[a-z/\\u{80}-\\u{10ffff}]{1,300}", 1..200),
            max_keys in 1usize..50,
            max_bytes in 2048usize..20_000,
        ) {
            let mut b = BatchBuilder::new("job", "s3://a", "s3://b", max_keys, max_bytes);
            let mut out = Vec::new();
            for k in &keys {
                out.extend(b.push(KeyItem { key: k.clone(), ..KeyItem::default() }));
            }
            out.extend(b.take());
            let got: Vec<&str> = out.iter().flat_map(|b| b.keys.iter().map(|k| k.key.as_str())).collect();
            let want: Vec<&str> = keys.iter().map(String::as_str).collect();
            proptest::prop_assert_eq!(got, want);
            for batch in &out {
                proptest::prop_assert!(batch.keys.len() <= max_keys);
                proptest::prop_assert!(encode(batch).len() <= max_bytes || batch.keys.len() == 1);
            }
        }
    }

    #[test]
    fn dlq_attributes_round_trip_and_leave_others_alone() {
        let a = dlq::DlqAttributes {
            error_class: Some(dlq::BAD_MESSAGE.into()),
            source_queue: Some("q-01".into()),
            reason: None,
        };
        let mut map = a.to_map();
        assert_eq!(
            map.keys().map(String::as_str).collect::<Vec<_>>(),
            [dlq::ERROR_CLASS, dlq::SOURCE_QUEUE]
        );
        map.insert("other".into(), "x".into());
        assert_eq!(dlq::DlqAttributes::from_map(&map), a);
        assert_eq!(
            dlq::DlqAttributes::from_map(&Default::default()),
            dlq::DlqAttributes::default()
        );
        assert_eq!(decode("nope").unwrap_err().class, dlq::BAD_MESSAGE);
    }
}
