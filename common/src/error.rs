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
///
/// A source attached with [`Error::with_stated_source`] (an SDK error whose
/// words the message already carries) is kept for `{:?}` (DEBUG logs) but is
/// not a `source()`: chains printed for people never repeat it.
#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    pub class: String,
    pub subject: String,
    pub message: String,
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.source {
            Some(s) if !s.is::<Stated>() => Some(s.as_ref()),
            _ => None,
        }
    }
}

/// A cause whose words the error's message already says (see
/// [`Error::with_stated_source`]).
#[derive(Debug)]
pub struct Stated(pub Box<dyn std::error::Error + Send + Sync + 'static>);

impl fmt::Display for Stated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Stated {}

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

    /// Attach a cause whose text the message already renders (an SDK error
    /// turned into the service's code and message, or an endpoint and a
    /// reason): kept for DEBUG (`{:?}`), left out of [`Error::full_message`],
    /// [`Error::human`] and `source()`, so no text is said twice.
    pub fn with_stated_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.source = Some(Box::new(Stated(Box::new(source))));
        self
    }

    /// A request that got no answer at all (timeout, refused, DNS, TLS):
    /// the endpoint, not the object, is the problem.
    pub fn is_unreachable(&self) -> bool {
        self.class == Transport::Timeout.class() || self.class == Transport::Dispatch.class()
    }

    /// `subject: message` with each cause once, without the class: what a
    /// key's failure says in logs, DLQ entries and reports (whose class is a
    /// field of its own), naming the side that failed.
    pub fn described(&self) -> String {
        match self.subject.is_empty() {
            true => self.full_message(),
            false => format!("{}: {}", self.subject, self.full_message()),
        }
    }

    /// One line for people, the form every final error and every "stopping"
    /// line uses: `subject: message` with each cause once, and the class in
    /// parentheses only when the text does not already say it (never for
    /// transport failures, whose message names the endpoint and the reason).
    /// E.g. `s3://src/k: cannot reach http://127.0.0.1:1 (connection refused)`,
    /// `s3://src/k: The operation is not valid for the object's storage class (InvalidObjectState)`.
    pub fn human(&self) -> String {
        let text = self.full_message();
        let class = match self.is_unreachable() || text.contains(&self.class) {
            true => String::new(),
            false => format!(" ({})", self.class),
        };
        match self.subject.is_empty() {
            true => format!("{text}{class}"),
            false => format!("{}: {text}{class}", self.subject),
        }
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
            _ => self.is_unreachable(),
        }
    }

    /// The message plus every cause in the chain, on one line (for reports and the DLQ).
    /// A cause that is one of ours counts by its message (its subject is
    /// usually ours too), so a wrapper quoting the inner message adds nothing.
    pub fn full_message(&self) -> String {
        let mut out = self.message.clone();
        let mut src = std::error::Error::source(self);
        while let Some(s) = src {
            let text = match s.downcast_ref::<Error>() {
                Some(ours) => ours.message.clone(),
                None => s.to_string(),
            };
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

/// Any error chain (an `anyhow::Error` at a binary's edge) on one line for
/// people: the first of our [`Error`]s in it speaks for itself and its causes
/// ([`Error::human`]); other links are joined with `: `, none said twice.
pub fn human_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut link = Some(err);
    while let Some(e) = link {
        let text = match e.downcast_ref::<Error>() {
            Some(ours) => ours.human(),
            None => e.to_string(),
        };
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        if e.is::<Error>() {
            break;
        }
        link = e.source();
    }
    out
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

    /// An SDK-like error whose Display restates the service message, as
    /// the SDK's error and its operation error do (`service error` → `Code: message`).
    #[derive(Debug)]
    struct Restating(&'static str, Option<Box<Restating>>);

    impl fmt::Display for Restating {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Restating {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|s| s as _)
        }
    }

    #[test]
    fn no_text_is_said_twice() {
        let glacier = "The operation is not valid for the object's storage class: GLACIER.";
        let sdk = Restating(
            "service error",
            Some(Box::new(Restating(
                "InvalidObjectState: The operation is not valid for the object's storage class: GLACIER.",
                None,
            ))),
        );
        let e = Error::new(
            ErrorKind::InvalidObjectState,
            "InvalidObjectState",
            "s3://src/k",
            glacier,
        )
        .with_stated_source(sdk);
        assert_eq!(e.full_message(), glacier);
        assert_eq!(
            e.human(),
            format!("s3://src/k: {glacier} (InvalidObjectState)")
        );
        // The SDK text is still there for DEBUG logs.
        assert!(format!("{e:?}").contains("service error"));
        // A wrapper quoting the inner message (the listing does) adds only its own words.
        let wrapped = Error::new(
            ErrorKind::InvalidObjectState,
            "InvalidObjectState",
            "s3://src/",
            format!("listing prefix `` failed: {glacier}"),
        )
        .with_source(e);
        assert_eq!(wrapped.full_message().matches("GLACIER").count(), 1);
        let any = anyhow::Error::from(wrapped).context("run");
        let line = human_chain(any.as_ref());
        assert_eq!(line.matches("GLACIER").count(), 1, "{line}");
        assert!(!line.contains("service error"), "{line}");
    }

    #[test]
    fn transport_failures_are_human_without_their_class() {
        let e = Error::new(
            ErrorKind::Retryable,
            Transport::Dispatch.class(),
            "s3://src/",
            "cannot reach http://127.0.0.1:1 (connection refused)",
        );
        assert!(e.is_unreachable());
        assert_eq!(
            e.human(),
            "s3://src/: cannot reach http://127.0.0.1:1 (connection refused)"
        );
    }
}
