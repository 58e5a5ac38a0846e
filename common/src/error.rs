//! One error type for everything in `common`; its [`ErrorKind`] is decided once,
//! where the error is made, and tells the caller what to do with it.

use std::fmt;

/// What the caller should do with an error. Decided where the error is made
/// (the S3/SQS adapters map service codes here), never by downcasting later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Transient: throttling, 5xx, timeouts, connection resets. Retry with backoff.
    Retryable,
    /// The object (or bucket) does not exist. For a source this is `source-missing`.
    NotFound,
    /// The source changed under us (ETag precondition failed).
    PreconditionFailed,
    /// Permission problem; retrying will not help.
    AccessDenied,
    /// Archived object (Glacier / Deep Archive) that needs a restore first.
    InvalidObjectState,
    /// The object or key cannot be handled (unmappable key, bad message, too large, ...).
    Invalid,
    /// Bad user input (config, flags, manifest): stop with a clear message.
    Input,
    /// Anything else that is permanent for this object.
    Permanent,
}

impl ErrorKind {
    /// Whether a retry of the same request could succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Retryable)
    }
}

/// An error with the service's code (`class`, e.g. `SlowDown`, `AccessDenied`),
/// the thing it concerns (`subject`, e.g. `s3://bucket/key` or `config.yml:12`)
/// and a human message. `class` is what reports and the DLQ group failures by.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    pub kind: ErrorKind,
    pub class: String,
    pub subject: String,
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.subject.is_empty() {
            write!(f, "{}: {}", self.class, self.message)
        } else {
            write!(f, "{}: {} ({})", self.subject, self.message, self.class)
        }
    }
}

impl Error {
    /// Build an error; `class` defaults to the kind's name when empty.
    pub fn new(
        kind: ErrorKind,
        class: impl Into<String>,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let mut class = class.into();
        if class.is_empty() {
            class = format!("{kind:?}");
        }
        Error {
            kind,
            class,
            subject: subject.into(),
            message: message.into(),
            source: None,
        }
    }

    /// Bad user input naming `subject` (a file, line, flag or key).
    pub fn input(subject: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Input, "InvalidInput", subject, message)
    }

    /// Attach the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Re-label the subject (e.g. add the key once it is known).
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = subject.into();
        self
    }

    /// What the request named (a key, version or upload) is gone, and its
    /// bucket is not: the one test for "missing key, not missing bucket".
    pub fn is_gone(&self) -> bool {
        self.kind == ErrorKind::NotFound && self.class != class::NO_SUCH_BUCKET
    }

    /// A failure every request to the same endpoint would meet, not this
    /// key's alone: a missing bucket, a refusal (credentials, signature or a
    /// deny: a per-object deny looks the same, so the circuit breaker that
    /// acts on this counts them in a row), or no answer at all. The one test
    /// behind the executor's circuit breaker and the endpoint exit code.
    pub fn is_endpoint_wide(&self) -> bool {
        match self.kind {
            ErrorKind::NotFound => self.class == class::NO_SUCH_BUCKET,
            ErrorKind::AccessDenied => true,
            _ => [Transport::Dispatch, Transport::Timeout]
                .iter()
                .any(|t| self.class == t.class()),
        }
    }

    /// The message plus every cause in the chain, on one line (for reports and the DLQ).
    pub fn full_message(&self) -> String {
        let mut out = self.message.clone();
        let mut src = std::error::Error::source(self);
        while let Some(s) = src {
            let text = s.to_string();
            if !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            src = s.source();
        }
        out
    }
}

/// Class names that more than one module acts on, named once.
pub mod class {
    /// The bucket does not exist (the whole run is misconfigured, not one key).
    pub const NO_SUCH_BUCKET: &str = "NoSuchBucket";
    /// The multipart upload does not exist (aborted, or completed by an earlier try).
    pub const NO_SUCH_UPLOAD: &str = "NoSuchUpload";
    /// The executor's circuit breaker stopped it: one endpoint failed every key in a row.
    pub const CIRCUIT_OPEN: &str = "CircuitOpen";
}

/// A request that got no service answer to read, whatever the service: one
/// class name and one kind each, for S3 and SQS alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// No answer in time (connect, read or the whole call).
    Timeout,
    /// The request could not be sent (connection refused or reset, DNS, TLS).
    Dispatch,
    /// An answer arrived but could not be read.
    Response,
    /// The request could not be built (a bug or a bad setting, not the network).
    Construction,
}

impl Transport {
    /// The class reports and the DLQ show.
    pub fn class(self) -> &'static str {
        match self {
            Transport::Timeout => "Timeout",
            Transport::Dispatch => "Dispatch",
            Transport::Response => "Response",
            Transport::Construction => "Construction",
        }
    }

    /// Network failures are retried; a request that cannot be built is not.
    pub fn kind(self) -> ErrorKind {
        match self {
            Transport::Construction => ErrorKind::Permanent,
            _ => ErrorKind::Retryable,
        }
    }
}

/// The class of a service error that carries no code: `Http404`, or
/// `Unknown` without a status.
pub fn http_class(status: Option<u16>) -> String {
    match status {
        Some(s) => format!("Http{s}"),
        None => "Unknown".to_string(),
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_subject_and_class() {
        let e = Error::new(
            ErrorKind::AccessDenied,
            "AccessDenied",
            "s3://b/k",
            "denied",
        );
        assert_eq!(e.to_string(), "s3://b/k: denied (AccessDenied)");
        assert!(!e.kind.is_retryable());
        let e = Error::new(ErrorKind::Retryable, "", "", "slow");
        assert_eq!(e.class, "Retryable");
    }
}
