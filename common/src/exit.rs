//! The exit codes of both binaries: one table, so a script or an ECS task
//! reads the same mistake the same way from either (docs/operate.md#exit-codes).
//!
//! What an error means for the exit code is decided here, from the
//! [`ErrorKind`] and class its maker gave it, never from its text.

use std::process::ExitCode;

use crate::error::{class, Error, ErrorKind};

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked was done.
    Ok,
    /// An error none of the codes below names (a bug, a local I/O failure, a
    /// queue failing in the middle of a run).
    Error,
    /// A flag or argument is wrong (clap's own code, kept for ours).
    Usage,
    /// The configuration is wrong: config file, `.env`, environment, manifest.
    Config,
    /// A source, target, queue or report endpoint refused or could not be
    /// reached (missing bucket, denied, connection refused), or the executor's
    /// circuit breaker stopped it.
    Endpoint,
    /// The command ran to its end, but some of its work failed (keys parked
    /// in the DLQ, messages redrive could not move, uploads cleanup could not
    /// abort). `commander report` and `status` describe a job and exit 0
    /// whatever it holds: their output is the verdict.
    Failures,
    /// A signal stopped the command before its work was done.
    Interrupted,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Error => 1,
            Exit::Usage => 2,
            Exit::Config => 3,
            Exit::Endpoint => 4,
            Exit::Failures => 5,
            Exit::Interrupted => 130,
        }
    }

    /// For `main`'s return.
    pub fn to_exit_code(self) -> ExitCode {
        ExitCode::from(self.code())
    }

    /// The code for an error that ended a command: the first [`Error`] in its
    /// chain decides; an error without one is [`Exit::Error`].
    pub fn for_anyhow(err: &anyhow::Error) -> Exit {
        err.chain()
            .find_map(|e| e.downcast_ref::<Error>())
            .map_or(Exit::Error, Exit::for_error)
    }

    /// The code for one [`Error`]: bad input naming a flag (`--x`, `-x`) is a
    /// usage error, other bad input a config error; an endpoint-wide failure
    /// ([`Error::is_endpoint_wide`]) an endpoint error.
    pub fn for_error(err: &Error) -> Exit {
        if err.kind == ErrorKind::Input {
            return if err.subject.starts_with('-') {
                Exit::Usage
            } else {
                Exit::Config
            };
        }
        if err.is_endpoint_wide() || err.class == class::CIRCUIT_OPEN {
            return Exit::Endpoint;
        }
        Exit::Error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Transport;

    #[test]
    fn the_table_is_fixed() {
        let codes: Vec<u8> = [
            Exit::Ok,
            Exit::Error,
            Exit::Usage,
            Exit::Config,
            Exit::Endpoint,
            Exit::Failures,
            Exit::Interrupted,
        ]
        .iter()
        .map(|e| e.code())
        .collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 130]);
    }

    #[test]
    fn errors_map_by_kind_and_class() {
        let flag = Error::input("--newer-than", "not a date");
        let file = Error::input("config.yml:3", "unknown key");
        let bucket = Error::new(
            ErrorKind::NotFound,
            class::NO_SUCH_BUCKET,
            "s3://b",
            "missing",
        );
        let key = Error::new(ErrorKind::NotFound, "NoSuchKey", "s3://b/k", "missing");
        let refused = Error::new(
            Transport::Dispatch.kind(),
            Transport::Dispatch.class(),
            "s3://b",
            "connection refused",
        );
        assert_eq!(Exit::for_error(&flag), Exit::Usage);
        assert_eq!(Exit::for_error(&file), Exit::Config);
        assert_eq!(Exit::for_error(&bucket), Exit::Endpoint);
        assert_eq!(Exit::for_error(&refused), Exit::Endpoint);
        assert_eq!(Exit::for_error(&key), Exit::Error);
        let wrapped = anyhow::Error::new(flag).context("loading");
        assert_eq!(Exit::for_anyhow(&wrapped), Exit::Usage);
        assert_eq!(Exit::for_anyhow(&anyhow::anyhow!("plain")), Exit::Error);
    }
}
