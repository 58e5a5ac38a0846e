//! The circuit breaker. When one endpoint fails every key in a row the same
//! way (a missing bucket, a refusal, no answer: [`common::Error::is_endpoint_wide`]),
//! working on would only move the whole queue into the DLQ, one message at a
//! time, across the whole fleet. After `threshold` such failures in a row
//! (same endpoint, same class, no success between) the breaker opens: the
//! loop stops receiving, keys failing that way from then on are not parked
//! (their messages go back to their queues, untouched), and the executor
//! exits with the endpoint exit code and one line naming the endpoint and the
//! error. Keys that failed before it opened were parked as usual: at most
//! `threshold - 1` of them, plus those of messages that had already settled.

use std::sync::Mutex;

use common::message::Batch;
use common::transfer::Done;
use common::Error;

/// What one finished key means to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// An ordinary result: record it, park it if it failed.
    Counted,
    /// This failure opened the breaker: stop the loop; the key is not parked.
    Opened,
    /// The breaker is open and this is an endpoint-wide failure: not parked.
    HeldBack,
}

impl Verdict {
    /// Whether the key is left unfinished (its message returned, not parked).
    pub(super) fn holds_back(self) -> bool {
        self != Verdict::Counted
    }
}

/// Why the breaker opened.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Tripped {
    /// The endpoint every key failed on (`s3://bucket`, or a directory).
    pub endpoint: String,
    /// The error class (`NoSuchBucket`, `AccessDenied`, `Dispatch`, ...).
    pub class: String,
    /// The last failure's message.
    pub message: String,
    /// Failures in a row when it opened (the threshold).
    pub in_a_row: usize,
}

impl Tripped {
    /// The error the executor ends with: one line, endpoint first.
    pub fn error(&self) -> Error {
        Error::new(
            common::ErrorKind::Permanent,
            common::error::class::CIRCUIT_OPEN,
            self.endpoint.clone(),
            format!(
                "{} keys in a row failed with {}: {}; stopped receiving and returned the messages it held (set --circuit-breaker 0 to work on regardless)",
                self.in_a_row, self.class, self.message
            ),
        )
    }
}

#[derive(Default)]
struct State {
    /// (endpoint, class) of the current run of failures, and its length.
    last: Option<(String, String)>,
    run: usize,
    open: Option<Tripped>,
}

/// One per `serve`; `threshold` 0 never opens.
pub(super) struct Breaker {
    threshold: usize,
    state: Mutex<State>,
}

impl Breaker {
    pub(super) fn new(threshold: usize) -> Self {
        Breaker {
            threshold,
            state: Mutex::new(State::default()),
        }
    }

    /// Record one finished key of `batch`.
    pub(super) fn observe(&self, batch: &Batch, result: &common::Result<Done>) -> Verdict {
        if self.threshold == 0 {
            return Verdict::Counted;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let e = match result {
            Err(e) if e.is_endpoint_wide() => e,
            _ => {
                st.last = None;
                st.run = 0;
                return Verdict::Counted;
            }
        };
        if st.open.is_some() {
            return Verdict::HeldBack;
        }
        let seen = (endpoint(batch, &e.subject), e.class.clone());
        if st.last.as_ref() == Some(&seen) {
            st.run += 1;
        } else {
            st.last = Some(seen.clone());
            st.run = 1;
        }
        if st.run < self.threshold {
            return Verdict::Counted;
        }
        st.open = Some(Tripped {
            endpoint: seen.0,
            class: seen.1,
            message: e.message.clone(),
            in_a_row: st.run,
        });
        Verdict::Opened
    }

    /// Why it opened, once it has.
    pub(super) fn tripped(&self) -> Option<Tripped> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .open
            .clone()
    }
}

/// The endpoint an error's subject belongs to: the message's source or
/// target when the subject is under one, else the `scheme://bucket` part.
fn endpoint(batch: &Batch, subject: &str) -> String {
    for end in [&batch.source, &batch.target] {
        let end = end.trim_end_matches('/');
        if subject == end || subject.starts_with(&format!("{end}/")) {
            return end.to_string();
        }
    }
    match subject.split_once("://") {
        Some((scheme, rest)) => {
            let bucket = rest.split('/').next().unwrap_or(rest);
            format!("{scheme}://{bucket}")
        }
        None => subject.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::error::Transport;
    use common::report::Outcome;
    use common::ErrorKind;

    fn batch() -> Batch {
        Batch {
            v: 1,
            job_id: "j".into(),
            source: "s3://src".into(),
            target: "s3://dst".into(),
            keys: vec![],
        }
    }

    fn missing(bucket: &str) -> common::Result<Done> {
        Err(Error::new(
            ErrorKind::NotFound,
            common::error::class::NO_SUCH_BUCKET,
            format!("s3://{bucket}"),
            "the bucket does not exist",
        ))
    }

    fn ok() -> common::Result<Done> {
        Ok(Done {
            outcome: Outcome::Copied,
            bytes: 1,
            note: None,
            proof: None,
        })
    }

    #[test]
    fn opens_after_the_same_endpoint_error_in_a_row_only() {
        let b = Breaker::new(3);
        let batch = batch();
        assert_eq!(b.observe(&batch, &missing("dst")), Verdict::Counted);
        assert_eq!(
            b.observe(&batch, &ok()),
            Verdict::Counted,
            "a success resets"
        );
        assert_eq!(b.observe(&batch, &missing("dst")), Verdict::Counted);
        assert_eq!(
            b.observe(&batch, &missing("src")),
            Verdict::Counted,
            "another endpoint restarts the count"
        );
        let key_gone = Err(Error::new(
            ErrorKind::NotFound,
            "NoSuchKey",
            "s3://src/k",
            "gone",
        ));
        assert_eq!(
            b.observe(&batch, &key_gone),
            Verdict::Counted,
            "a missing key is not endpoint-wide"
        );
        assert!(b.tripped().is_none());
        for _ in 0..2 {
            assert_eq!(b.observe(&batch, &missing("dst")), Verdict::Counted);
        }
        assert_eq!(b.observe(&batch, &missing("dst")), Verdict::Opened);
        let refused = Err(Error::new(
            Transport::Dispatch.kind(),
            Transport::Dispatch.class(),
            "s3://src/a/b",
            "connection refused",
        ));
        assert_eq!(b.observe(&batch, &refused), Verdict::HeldBack);
        assert_eq!(b.observe(&batch, &ok()), Verdict::Counted);
        let t = b.tripped().unwrap();
        assert_eq!(
            (t.endpoint.as_str(), t.class.as_str(), t.in_a_row),
            ("s3://dst", "NoSuchBucket", 3)
        );
        let line = t.error().to_string();
        assert!(
            line.starts_with(
                "s3://dst: 3 keys in a row failed with NoSuchBucket: the bucket does not exist;"
            ),
            "{line}"
        );
    }

    #[test]
    fn zero_never_opens() {
        let b = Breaker::new(0);
        let batch = batch();
        for _ in 0..100 {
            assert_eq!(b.observe(&batch, &missing("dst")), Verdict::Counted);
        }
        assert!(b.tripped().is_none());
    }

    #[test]
    fn endpoints_come_from_the_message_ends() {
        let batch = batch();
        assert_eq!(endpoint(&batch, "s3://dst/a/b"), "s3://dst");
        assert_eq!(endpoint(&batch, "s3://src"), "s3://src");
        assert_eq!(endpoint(&batch, "s3://other/x"), "s3://other");
        assert_eq!(endpoint(&batch, "plain"), "plain");
    }
}
