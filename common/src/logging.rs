//! Tracing setup shared by both binaries: a level filter (`--log-level`,
//! `migration.log_level`, or `RUST_LOG` when set), human-readable text or JSON
//! lines (`--log-format json`, for CloudWatch), written to stderr or appended
//! to `migration.log_file`. Stdout stays free for command output.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use tracing::Subscriber;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

use crate::error::{Error, Result};

/// Log line format. `text` is for people; `json` emits one JSON object per
/// line (timestamp, level, target, fields, spans) that CloudWatch Logs Insights
/// can query without a parser.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The name used in flags, config and environment (`text`, `json`).
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("expected one of text|json, found '{other}'")),
        }
    }
}

/// Install the global tracing subscriber. `level` is an `EnvFilter` directive
/// (`info`, `debug`, `common=debug,warn`); a non-empty `RUST_LOG` wins over it.
/// Logs go to stderr, or are appended to `file` when given (created if missing).
/// Fails (kind `Input`) on a bad directive or an unwritable file. A
/// subscriber already installed (a second run in one process, as tests do)
/// is kept: both binaries call this and treat every error as fatal.
pub fn init(level: &str, format: LogFormat, file: Option<&Path>) -> Result<()> {
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let subscriber = subscriber(level, rust_log.as_deref(), format, file)?;
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        tracing::debug!("a tracing subscriber is already installed; keeping it");
    }
    Ok(())
}

/// Build (without installing) the subscriber [`init`] would install; `rust_log`
/// is the value of `RUST_LOG`, passed in so callers and tests control it.
pub fn subscriber(
    level: &str,
    rust_log: Option<&str>,
    format: LogFormat,
    file: Option<&Path>,
) -> Result<Box<dyn Subscriber + Send + Sync + 'static>> {
    let filter = filter(level, rust_log)?;
    let (writer, ansi) = match file {
        Some(path) => {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    Error::input(
                        path.display().to_string(),
                        "cannot open the log file for appending",
                    )
                    .with_source(e)
                })?;
            (BoxMakeWriter::new(Mutex::new(f)), false)
        }
        None => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    Ok(match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
    })
}

/// The level filter: `RUST_LOG` (when given) wins over `level`.
fn filter(level: &str, rust_log: Option<&str>) -> Result<EnvFilter> {
    let (subject, given, directive) = match rust_log {
        Some(v) => ("RUST_LOG", v, v.to_string()),
        None => ("migration.log_level", level, quiet_sdk(level)),
    };
    EnvFilter::try_new(&directive)
        .map_err(|e| Error::input(subject, format!("invalid log level '{given}'")).with_source(e))
}

/// The SDK's own WARN lines (IMDS, the credential chain) are `Debug` dumps of
/// its errors; our messages say the same in words. They are kept at `debug`
/// and `trace`, when the level names an `aws` target, and under `RUST_LOG`.
fn quiet_sdk(level: &str) -> String {
    let verbose = matches!(level.trim(), "debug" | "trace") || level.contains("aws");
    match verbose {
        true => level.to_string(),
        false => format!("{level},{}", crate::clients::QUIET_SDK_LOGS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_warnings_are_quiet_unless_asked_for() {
        assert_eq!(
            quiet_sdk("info"),
            format!("info,{}", crate::clients::QUIET_SDK_LOGS)
        );
        assert_eq!(quiet_sdk("debug"), "debug");
        assert_eq!(quiet_sdk("info,aws_config=warn"), "info,aws_config=warn");
    }
    use crate::error::ErrorKind;

    #[test]
    fn log_format_parses_and_prints() {
        assert_eq!("JSON".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("text".parse::<LogFormat>().unwrap(), LogFormat::Text);
        assert!("xml".parse::<LogFormat>().is_err());
        assert_eq!(LogFormat::Json.to_string(), "json");
    }

    #[test]
    fn json_lines_go_to_the_log_file_and_respect_the_level() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.log");
        std::fs::write(&path, "earlier line\n").unwrap();
        let sub = subscriber("info", None, LogFormat::Json, Some(&path)).unwrap();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(bucket = "b", "copied");
            tracing::debug!("hidden at info");
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "earlier line", "the file is appended to");
        assert_eq!(lines.len(), 2, "debug is filtered out: {text}");
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["fields"]["message"], "copied");
        assert_eq!(v["fields"]["bucket"], "b");
    }

    #[test]
    fn rust_log_wins_over_the_level() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.log");
        let sub = subscriber("error", Some("debug"), LogFormat::Text, Some(&path)).unwrap();
        tracing::subscriber::with_default(sub, || tracing::debug!("visible"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("visible"), "{text}");
        assert!(!text.contains('\u{1b}'), "no colour codes in files: {text}");
    }

    #[test]
    fn a_bad_level_names_the_key() {
        let err = subscriber("info,=[", None, LogFormat::Text, None)
            .err()
            .unwrap();
        assert_eq!(err.kind, ErrorKind::Input);
        assert_eq!(err.subject, "migration.log_level");
        let err = subscriber("info", Some("=["), LogFormat::Text, None)
            .err()
            .unwrap();
        assert_eq!(err.subject, "RUST_LOG");
    }
}
