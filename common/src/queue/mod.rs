//! The work-queue abstraction. Commander and executor only ever talk to
//! [`WorkQueue`]; Amazon SQS ([`sqs`]) and the embedded SQLite queue ([`local`])
//! are its two backends and pass one behavioural suite.
//!
//! Semantics (SQS's, which the embedded queue reproduces): a received message is
//! invisible for the visibility timeout, then reappears unless deleted; every
//! receive counts; a queue with a [`Redrive`] moves a message to its DLQ on the
//! receive after `max_receive_count`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;

pub mod local;
pub mod set;
pub mod sqs;

/// SendMessageBatch's entry limit, which both backends honour.
pub const MAX_BATCH_ENTRIES: usize = 10;

/// Largest message (body plus attributes) SQS accepts today, and the limit
/// the embedded queue enforces per message and per SendMessageBatch call.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Longest retention SQS allows, which the DLQ always gets (whatever the work
/// queues use): a parked key must outlive the time it takes someone to look.
pub const DLQ_RETENTION: Duration = Duration::from_secs(1_209_600);

/// SQS's cap on a message's visibility, counted from the receive that issued
/// the receipt handle: an extension past it is refused with
/// [`VISIBILITY_LIMIT_CLASS`]. The embedded queue enforces the same cap.
pub const MAX_TOTAL_VISIBILITY: Duration = Duration::from_secs(43_200);

/// Error class of a visibility change refused because it would pass
/// [`MAX_TOTAL_VISIBILITY`]: the message will become visible (and be
/// redelivered) whatever the holder does.
pub const VISIBILITY_LIMIT_CLASS: &str = "TotalVisibilityLimit";

/// Error class of a delete (or visibility change) whose receipt handle no
/// longer names the message: it was received again, or moved to the DLQ.
/// The message was *not* deleted by this call.
pub const STALE_RECEIPT_CLASS: &str = "ReceiptHandleIsInvalid";

/// Longest text [`attribute_value`] keeps (bytes, before the ellipsis).
pub const MAX_ATTRIBUTE_TEXT: usize = 1024;

/// Characters SQS accepts in a message body or attribute: tab, LF, CR, and
/// U+0020 upwards except U+FFFE/U+FFFF (surrogates cannot occur in a Rust string).
pub fn valid_sqs_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

/// Make arbitrary text (an error message, a reason) safe as a message
/// attribute value on either backend: every control character (tab and line
/// breaks included, so the value stays one line) and every character SQS
/// refuses is written as `\u{..}`, a backslash as `\\`, and the result is cut
/// to at most `max` bytes at a character boundary (`…` marks a cut). Never
/// empty, so SQS never sees an empty attribute value.
pub fn attribute_value(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 4);
    for c in text.chars() {
        let piece = if c == '\\' {
            "\\\\".to_string()
        } else if c.is_control() || !valid_sqs_char(c) {
            c.escape_unicode().to_string()
        } else {
            c.to_string()
        };
        if out.len() + piece.len() > max {
            out.push('…');
            break;
        }
        out.push_str(&piece);
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}

/// `max` must be 1..=10, as ReceiveMessage's `MaxNumberOfMessages`; both
/// backends refuse other values the same way.
pub(crate) fn check_receive_max(queue: &str, max: usize) -> Result<()> {
    if (1..=MAX_BATCH_ENTRIES).contains(&max) {
        Ok(())
    } else {
        Err(crate::error::Error::new(
            crate::error::ErrorKind::Invalid,
            "InvalidParameterValue",
            queue,
            format!("can receive 1 to {MAX_BATCH_ENTRIES} messages per call, not {max}"),
        ))
    }
}

/// A SendMessageBatch holds at most [`MAX_BATCH_ENTRIES`] messages; both
/// backends refuse more the same way, before sending anything.
pub(crate) fn check_batch_len(queue: &str, len: usize) -> Result<()> {
    if len <= MAX_BATCH_ENTRIES {
        return Ok(());
    }
    Err(crate::error::Error::new(
        crate::error::ErrorKind::Invalid,
        "TooManyEntriesInBatchRequest",
        queue,
        format!("{len} messages in one batch; the limit is {MAX_BATCH_ENTRIES}"),
    ))
}

/// How a queue is created (`commander init`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: String,
    pub visibility_timeout: Duration,
    pub receive_wait_time: Duration,
    pub retention: Duration,
    /// Where messages go after too many receives (none for the DLQ itself).
    pub redrive: Option<Redrive>,
}

/// Dead-letter policy of a work queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    pub dead_letter_queue: String,
    pub max_receive_count: u32,
}

/// What `ensure` did, so `init` can say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    Created,
    /// Existed with other attributes; these were changed (attribute names).
    Updated(Vec<String>),
    Unchanged,
}

/// A message to send: a body and optional string attributes (e.g. the reason a
/// body was dead-lettered unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outgoing {
    pub body: String,
    pub attributes: BTreeMap<String, String>,
}

impl Outgoing {
    /// A message with a body and no attributes.
    pub fn body(body: impl Into<String>) -> Self {
        Outgoing {
            body: body.into(),
            attributes: BTreeMap::new(),
        }
    }

    /// Size as SQS counts it against the message and batch limits: the body
    /// plus each attribute's name, data type (`String`) and value, in bytes.
    pub fn size(&self) -> usize {
        self.body.len()
            + self
                .attributes
                .iter()
                .map(|(k, v)| k.len() + "String".len() + v.len())
                .sum::<usize>()
    }
}

/// A received message; `receipt` is needed to delete it or change its visibility.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    pub attributes: BTreeMap<String, String>,
    /// How many times this message has been received, this time included.
    pub receive_count: u32,
}

/// Approximate depths, as SQS reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Depths {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

impl Depths {
    /// Nothing visible and nothing in flight.
    pub fn is_empty(&self) -> bool {
        self.visible == 0 && self.in_flight == 0 && self.delayed == 0
    }
}

/// One queue.
#[async_trait]
pub trait WorkQueue: Send + Sync + std::fmt::Debug {
    /// The queue's name.
    fn name(&self) -> &str;

    /// Send up to [`MAX_BATCH_ENTRIES`] messages. Returns, per entry in order,
    /// `Ok(())` or the error of that entry (a partial failure is not an `Err`
    /// of the call: the caller retries only the failed entries).
    async fn send_batch(&self, messages: &[Outgoing]) -> Result<Vec<Result<()>>>;

    /// Receive up to `max` (≤ 10) messages, waiting up to `wait` for the first.
    /// `visibility` overrides the queue's visibility timeout for these messages.
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<Vec<Received>>;

    /// Delete a received message. Deleting an already deleted message is not an
    /// error. A receipt that no longer names the message (received again, moved
    /// to the DLQ) is an error of class [`STALE_RECEIPT_CLASS`]: the message was
    /// not deleted and is, or will be, back.
    async fn delete(&self, receipt: &str) -> Result<()>;

    /// Change a received message's visibility: extend it, or `0` to return it now.
    /// An extension past [`MAX_TOTAL_VISIBILITY`] is an error of class
    /// [`VISIBILITY_LIMIT_CLASS`].
    async fn set_visibility(&self, receipt: &str, timeout: Duration) -> Result<()>;

    /// Approximate depths.
    async fn depths(&self) -> Result<Depths>;

    /// Age of the oldest message in the queue, when the backend can tell
    /// cheaply. SQS has no such attribute (only a CloudWatch metric): `None`.
    async fn oldest_message_age(&self) -> Result<Option<Duration>> {
        Ok(None)
    }
}

/// A move of every message from one queue to another that the service runs
/// itself (SQS StartMessageMoveTask), as last seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MoveTask {
    pub task_handle: String,
    pub destination: String,
    /// `RUNNING`, `COMPLETED`, `CANCELLING`, `CANCELLED` or `FAILED`.
    pub status: String,
    pub moved: i64,
    pub to_move: Option<i64>,
    pub failure_reason: Option<String>,
}

/// A queue service: creates and opens queues by name.
#[async_trait]
pub trait QueueService: Send + Sync + std::fmt::Debug {
    /// Create the queue, or bring an existing one to `spec`. Idempotent.
    async fn ensure(&self, spec: &QueueSpec) -> Result<Ensured>;

    /// Open an existing queue; a missing queue is an error naming it and
    /// suggesting `commander init`.
    async fn open(&self, name: &str) -> Result<Arc<dyn WorkQueue>>;

    /// Move every message of queue `from` to queue `to` with the service's
    /// own move task, and follow it until it ends or `stop` is cancelled (the
    /// task then goes on without us). Asked once, without retries: a service
    /// that lacks the operation refuses at once (class `Unsupported` for the
    /// embedded queue), and the caller moves the messages itself.
    async fn move_all(
        &self,
        from: &str,
        to: &str,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<MoveTask> {
        let _ = (to, stop);
        Err(crate::error::Error::new(
            crate::error::ErrorKind::Invalid,
            "Unsupported",
            from,
            "this queue service has no message move task",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_values_escape_controls_and_cut_at_char_boundaries() {
        assert_eq!(attribute_value("plain", 100), "plain");
        assert_eq!(
            attribute_value("a\u{1}b\nc\\d\u{FFFE}", 100),
            "a\\u{1}b\\u{a}c\\\\d\\u{fffe}"
        );
        assert_eq!(attribute_value("", 100), "-");
        assert_eq!(attribute_value("ééé", 3), "é…");
        assert_eq!(attribute_value("ab\u{7}", 4), "ab…", "no half escape");
    }

    proptest::proptest! {
        /// Whatever the text, the value is non-empty, bounded, and only holds
        /// characters SQS accepts (no control characters at all).
        #[test]
        fn any_text_makes_a_safe_attribute_value(text in proptest::prelude::any::<String>(), max in 1usize..2048) {
            let v = attribute_value(&text, max);
            proptest::prop_assert!(!v.is_empty());
            proptest::prop_assert!(v.len() <= max.max(1) + '…'.len_utf8(), "{} > {}", v.len(), max);
            proptest::prop_assert!(v.chars().all(|c| valid_sqs_char(c) && !c.is_control()), "{v:?}");
        }
    }
}
