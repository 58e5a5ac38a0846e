//! Configuration: built-in defaults → `config.yml` → `.env` → environment →
//! command-line flags (later wins), into one validated [`Config`].
//!
//! Table-driven: [`KEYS`] lists every key once (path, kind, default,
//! environment names). Each layer yields raw values tagged with their
//! [`Source`]; the merged map is parsed into the typed [`Config`] once, so every
//! error names the key and where its value came from (file and line, `.env`,
//! environment variable or flag). Secrets never appear in `Debug`, errors or
//! [`Config::render`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::error::{Error, Result};
use crate::location::EndpointPolicy;
pub use crate::logging::LogFormat;

/// The config file read when `-c/--config-file` is not given (missing is fine).
pub const DEFAULT_CONFIG_FILE: &str = "config.yml";
/// The `.env` file read when `-e/--env-file` is not given (missing is fine).
pub const DEFAULT_ENV_FILE: &str = ".env";

// ---------------------------------------------------------------------------
// Typed configuration
// ---------------------------------------------------------------------------

/// A secret string: never shown by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The value, for handing to an SDK. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Credentials, region and endpoint of one AWS section (`aws.inventory`, `aws.copy`,
/// `aws.copy_source`). Unset fields fall back to aws-config's default chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSection {
    pub profile_name: Option<String>,
    pub region_name: Option<String>,
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<Secret>,
    pub aws_session_token: Option<Secret>,
    pub endpoint_url: Option<String>,
    /// Path-style addressing; `None` = on when `endpoint_url` is set.
    pub force_path_style: Option<bool>,
    /// SDK retry attempts (adaptive mode), first try included.
    pub max_attempts: u32,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// `when_required` (default, for S3-compatible stores) or `when_supported`.
    pub request_checksum_calculation: String,
}

impl Default for AwsSection {
    fn default() -> Self {
        AwsSection {
            profile_name: None,
            region_name: None,
            aws_access_key_id: None,
            aws_secret_access_key: None,
            aws_session_token: None,
            endpoint_url: None,
            force_path_style: None,
            max_attempts: 10,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            request_checksum_calculation: "when_required".to_string(),
        }
    }
}

impl AwsSection {
    /// Whether the section picks an account, region or endpoint of its own
    /// (profile, region, keys or endpoint set) rather than only tuning the SDK.
    pub fn is_configured(&self) -> bool {
        self.profile_name.is_some()
            || self.region_name.is_some()
            || self.aws_access_key_id.is_some()
            || self.endpoint_url.is_some()
    }
}

/// The three AWS sections.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AwsConfig {
    /// Reads inventory manifests and data files.
    pub inventory: AwsSection,
    /// Lists the source, writes the target, and (copy mode) copies server-side.
    pub copy: AwsSection,
    /// Reads the source in downup mode when set (cross-account); else `copy` is used.
    pub copy_source: AwsSection,
}

impl AwsConfig {
    /// The section that reads the source in downup mode: `copy_source` when it
    /// [is configured](AwsSection::is_configured), else `copy`.
    pub fn source_section(&self) -> &AwsSection {
        if self.copy_source.is_configured() {
            &self.copy_source
        } else {
            &self.copy
        }
    }
}

/// `migration` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationConfig {
    pub batch_num: usize,
    pub tmp_dir: Option<PathBuf>,
    pub log_level: String,
    pub log_file: Option<PathBuf>,
    pub multipart_threshold: u64,
    pub part_size: u64,
    /// Objects in flight per executor.
    pub concurrency: usize,
    /// `text` (default) or `json` log lines (`--log-format`).
    pub log_format: LogFormat,
    /// Sources a queue message may name (`migration.allowed_sources`);
    /// `None`: the queue backend's default (see [`Config::allowed_sources`]).
    pub allowed_sources: Option<EndpointPolicy>,
    /// Targets a queue message may name (`migration.allowed_targets`).
    pub allowed_targets: Option<EndpointPolicy>,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        MigrationConfig {
            batch_num: 500,
            tmp_dir: None,
            log_level: "info".to_string(),
            log_file: None,
            multipart_threshold: 5 * 1024 * 1024 * 1024,
            part_size: 64 * 1024 * 1024,
            concurrency: 64,
            log_format: LogFormat::Text,
            allowed_sources: None,
            allowed_targets: None,
        }
    }
}

/// The work-queue naming pattern: Python's `{:0>2d}` as in the seed, `{}` or `{:02}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePattern(pub String);

impl QueuePattern {
    /// Check the pattern: exactly one placeholder among `{}`, `{:d}`, `{:0N}`,
    /// `{:0Nd}`, `{:0>N}`, `{:0>Nd}` (N = zero-padded width) and no other braces.
    pub fn parse(s: &str) -> std::result::Result<QueuePattern, String> {
        split_pattern(s)?;
        Ok(QueuePattern(s.to_string()))
    }

    /// Queue name number `n` (1-based): `s3-migration-{:0>2d}` → `s3-migration-01`.
    /// Patterns are validated at load; an unvalidated pattern without a valid
    /// placeholder gets `n` in place of its first `{…}` (or appended).
    pub fn format(&self, n: usize) -> String {
        match split_pattern(&self.0) {
            Ok((head, width, tail)) => format!("{head}{n:0width$}{tail}"),
            Err(_) => match (self.0.find('{'), self.0.find('}')) {
                (Some(a), Some(b)) if a < b => {
                    format!("{}{n}{}", &self.0[..a], &self.0[b + 1..])
                }
                _ => format!("{}{n}", self.0),
            },
        }
    }
}

/// Split a queue-name pattern into (text before, zero-pad width, text after).
fn split_pattern(s: &str) -> std::result::Result<(&str, usize, &str), String> {
    let bad = || {
        format!(
            "invalid queue name pattern '{s}': expected one placeholder {{}}, {{:d}}, {{:02}}, {{:02d}} or {{:0>2d}}"
        )
    };
    let open = s.find('{').ok_or_else(bad)?;
    let close = open + s[open..].find('}').ok_or_else(bad)?;
    let (head, spec, tail) = (&s[..open], &s[open + 1..close], &s[close + 1..]);
    if tail.contains(['{', '}']) || head.contains('}') {
        return Err(bad());
    }
    let width = match spec {
        "" | ":d" => 0,
        _ => {
            let body = spec.strip_prefix(':').ok_or_else(bad)?;
            let body = body.strip_suffix('d').unwrap_or(body);
            let digits = body
                .strip_prefix("0>")
                .or_else(|| body.strip_prefix('0'))
                .ok_or_else(bad)?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            digits.parse::<usize>().map_err(|_| bad())?
        }
    };
    if width > 20 {
        return Err(bad());
    }
    Ok((head, width, tail))
}

/// `sqs` section (also used for the embedded queue's names and timings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsConfig {
    pub queue_num: usize,
    pub queue_name_pattern: QueuePattern,
    pub dead_queue_name: String,
    pub visibility_timeout: Duration,
    pub receive_message_wait_time: Duration,
    pub message_retention_period: Duration,
    /// Messages per ReceiveMessage call (≤ 10).
    pub max_receive_num: usize,
    /// Receives before a message moves to the DLQ (redrive policy).
    pub max_receive_count: u32,
    /// Largest message (and SendMessageBatch payload) the commander produces.
    pub max_message_bytes: usize,
    /// SQS endpoint; `None`: `AWS_ENDPOINT_URL_SQS` / `AWS_ENDPOINT_URL` / AWS.
    /// The SQS client otherwise uses the `aws.copy` section's credentials.
    pub endpoint_url: Option<String>,
}

impl Default for SqsConfig {
    fn default() -> Self {
        SqsConfig {
            queue_num: 5,
            queue_name_pattern: QueuePattern("s3-migration-{:0>2d}".to_string()),
            dead_queue_name: "s3-migration-dead".to_string(),
            visibility_timeout: Duration::from_secs(1800),
            receive_message_wait_time: Duration::from_secs(20),
            message_retention_period: Duration::from_secs(1_209_600),
            max_receive_num: 10,
            max_receive_count: 3,
            max_message_bytes: 256 * 1024,
            endpoint_url: None,
        }
    }
}

/// Which queue service to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueBackend {
    Sqs,
    /// The embedded SQLite queue at this path.
    Local(PathBuf),
}

/// `report` section: how completion reports are buffered (where they go is
/// [`Config::report_location`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportConfig {
    /// Rows buffered before a report part is written.
    pub flush_rows: usize,
    /// Longest time a row waits in the buffer (`report.flush_seconds`).
    pub flush_seconds: Duration,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            flush_rows: 1000,
            flush_seconds: Duration::from_secs(30),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub aws: AwsConfig,
    pub migration: MigrationConfig,
    pub sqs: SqsConfig,
    pub queue: QueueBackend,
    /// Where executors write completion reports and the commander its job record
    /// (`s3://bucket/prefix/` or a directory); `None`: no reports.
    pub report_location: Option<String>,
    /// `report.flush_rows` / `report.flush_seconds`.
    pub report: ReportConfig,
    /// Where each key's value came from, for every key of [`KEYS`] (by path).
    pub sources: BTreeMap<String, Source>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            aws: AwsConfig::default(),
            migration: MigrationConfig::default(),
            sqs: SqsConfig::default(),
            queue: QueueBackend::Sqs,
            report_location: None,
            report: ReportConfig::default(),
            sources: KEYS
                .iter()
                .map(|k| (k.path.to_string(), Source::Default))
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------
// The key table
// ---------------------------------------------------------------------------

/// What a key's value is and how it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Any text (numbers are taken as their text).
    Str,
    /// Text that is never displayed.
    Secret,
    /// `true/false/yes/no/1/0/on/off`.
    Bool,
    /// Unsigned integer up to `u32::MAX`.
    U32,
    /// Unsigned integer.
    Usize,
    /// Bytes, or a number with KB/MB/GB/TB (powers of 1000) or KiB/MiB/GiB/TiB.
    Size,
    /// Whole seconds, or a number with `s`, `m`, `h` or `d`.
    Seconds,
    /// One of the listed names (case-insensitive).
    Enum(&'static [&'static str]),
}

impl KeyKind {
    /// The expected type, for error messages ("expected …").
    pub fn describe(self) -> String {
        match self {
            KeyKind::Str | KeyKind::Secret => "a string".into(),
            KeyKind::Bool => "a boolean (true/false/yes/no/1/0)".into(),
            KeyKind::U32 | KeyKind::Usize => "an unsigned integer".into(),
            KeyKind::Size => "a size (bytes, or e.g. 8MB, 8MiB, 5GiB)".into(),
            KeyKind::Seconds => "a duration (seconds, or e.g. 30s, 5m, 1h)".into(),
            KeyKind::Enum(names) => format!("one of {}", names.join("|")),
        }
    }
}

/// One configuration key: its dotted path, kind, default (as config text) and
/// environment variable names (checked in order; the first one set wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    pub path: &'static str,
    pub kind: KeyKind,
    pub default: Option<&'static str>,
    pub env: &'static [&'static str],
    /// One line for `config.yml` and the docs.
    pub doc: &'static str,
}

const CHECKSUM_MODES: &[&str] = &["when_required", "when_supported"];
const LOG_FORMATS: &[&str] = &["text", "json"];
const BACKENDS: &[&str] = &["sqs", "local"];

const fn key(
    path: &'static str,
    kind: KeyKind,
    default: Option<&'static str>,
    env: &'static [&'static str],
    doc: &'static str,
) -> KeySpec {
    KeySpec {
        path,
        kind,
        default,
        env,
        doc,
    }
}

use KeyKind::{Bool, Enum, Seconds, Size, Str, Usize, U32};

/// Every configuration key, in `config.yml` order. Environment names: the
/// seed's (`QUEUE_NUM`, `COPY_PROFILE_NAME`, …) plus a systematic
/// `<SECTION>_<KEY>` (`COPY_ENDPOINT_URL`, `SQS_VISIBILITY_TIMEOUT`, …).
#[rustfmt::skip]
pub static KEYS: &[KeySpec] = &[
    // aws.inventory
    key("aws.inventory.profile_name", Str, None, &["INVENTORY_PROFILE_NAME"], "named profile (~/.aws/config); unset: AWS_PROFILE or the default chain"),
    key("aws.inventory.region_name", Str, None, &["INVENTORY_REGION_NAME"], "region; unset: AWS_REGION, the profile, else us-east-1"),
    key("aws.inventory.aws_access_key_id", Str, None, &["INVENTORY_AWS_ACCESS_KEY_ID"], "static access key (with aws_secret_access_key); unset: default chain"),
    key("aws.inventory.aws_secret_access_key", KeyKind::Secret, None, &["INVENTORY_AWS_SECRET_ACCESS_KEY"], "static secret key (never displayed)"),
    key("aws.inventory.aws_session_token", KeyKind::Secret, None, &["INVENTORY_AWS_SESSION_TOKEN"], "session token for temporary static keys (never displayed)"),
    key("aws.inventory.endpoint_url", Str, None, &["INVENTORY_ENDPOINT_URL"], "S3 endpoint (S3-compatible stores); unset: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / AWS"),
    key("aws.inventory.force_path_style", Bool, None, &["INVENTORY_FORCE_PATH_STYLE"], "path-style addressing; unset: on when a custom endpoint is set"),
    key("aws.inventory.max_attempts", U32, Some("10"), &["INVENTORY_MAX_ATTEMPTS"], "SDK attempts per request (adaptive retry), first try included"),
    key("aws.inventory.connect_timeout", Seconds, Some("10"), &["INVENTORY_CONNECT_TIMEOUT"], "TCP/TLS connect timeout"),
    key("aws.inventory.read_timeout", Seconds, Some("60"), &["INVENTORY_READ_TIMEOUT"], "timeout waiting for response bytes"),
    key("aws.inventory.request_checksum_calculation", Enum(CHECKSUM_MODES), Some("when_required"), &["INVENTORY_REQUEST_CHECKSUM_CALCULATION"], "when_required (S3-compatible stores) or when_supported"),
    // aws.copy
    key("aws.copy.profile_name", Str, None, &["COPY_PROFILE_NAME"], "named profile (~/.aws/config); unset: AWS_PROFILE or the default chain"),
    key("aws.copy.region_name", Str, None, &["COPY_REGION_NAME"], "region; unset: AWS_REGION, the profile, else us-east-1"),
    key("aws.copy.aws_access_key_id", Str, None, &["COPY_AWS_ACCESS_KEY_ID"], "static access key (with aws_secret_access_key); unset: default chain"),
    key("aws.copy.aws_secret_access_key", KeyKind::Secret, None, &["COPY_AWS_SECRET_ACCESS_KEY"], "static secret key (never displayed)"),
    key("aws.copy.aws_session_token", KeyKind::Secret, None, &["COPY_AWS_SESSION_TOKEN"], "session token for temporary static keys (never displayed)"),
    key("aws.copy.endpoint_url", Str, None, &["COPY_ENDPOINT_URL"], "S3 endpoint (S3-compatible stores); unset: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / AWS"),
    key("aws.copy.force_path_style", Bool, None, &["COPY_FORCE_PATH_STYLE"], "path-style addressing; unset: on when a custom endpoint is set"),
    key("aws.copy.max_attempts", U32, Some("10"), &["COPY_MAX_ATTEMPTS"], "SDK attempts per request (adaptive retry), first try included"),
    key("aws.copy.connect_timeout", Seconds, Some("10"), &["COPY_CONNECT_TIMEOUT"], "TCP/TLS connect timeout"),
    key("aws.copy.read_timeout", Seconds, Some("60"), &["COPY_READ_TIMEOUT"], "timeout waiting for response bytes"),
    key("aws.copy.request_checksum_calculation", Enum(CHECKSUM_MODES), Some("when_required"), &["COPY_REQUEST_CHECKSUM_CALCULATION"], "when_required (S3-compatible stores) or when_supported"),
    // aws.copy_source
    key("aws.copy_source.profile_name", Str, None, &["COPY_SOURCE_PROFILE_NAME"], "named profile (~/.aws/config); unset: AWS_PROFILE or the default chain"),
    key("aws.copy_source.region_name", Str, None, &["COPY_SOURCE_REGION_NAME"], "region; unset: AWS_REGION, the profile, else us-east-1"),
    key("aws.copy_source.aws_access_key_id", Str, None, &["COPY_SOURCE_AWS_ACCESS_KEY_ID"], "static access key (with aws_secret_access_key); unset: default chain"),
    key("aws.copy_source.aws_secret_access_key", KeyKind::Secret, None, &["COPY_SOURCE_AWS_SECRET_ACCESS_KEY"], "static secret key (never displayed)"),
    key("aws.copy_source.aws_session_token", KeyKind::Secret, None, &["COPY_SOURCE_AWS_SESSION_TOKEN"], "session token for temporary static keys (never displayed)"),
    key("aws.copy_source.endpoint_url", Str, None, &["COPY_SOURCE_ENDPOINT_URL"], "S3 endpoint (S3-compatible stores); unset: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / AWS"),
    key("aws.copy_source.force_path_style", Bool, None, &["COPY_SOURCE_FORCE_PATH_STYLE"], "path-style addressing; unset: on when a custom endpoint is set"),
    key("aws.copy_source.max_attempts", U32, Some("10"), &["COPY_SOURCE_MAX_ATTEMPTS"], "SDK attempts per request (adaptive retry), first try included"),
    key("aws.copy_source.connect_timeout", Seconds, Some("10"), &["COPY_SOURCE_CONNECT_TIMEOUT"], "TCP/TLS connect timeout"),
    key("aws.copy_source.read_timeout", Seconds, Some("60"), &["COPY_SOURCE_READ_TIMEOUT"], "timeout waiting for response bytes"),
    key("aws.copy_source.request_checksum_calculation", Enum(CHECKSUM_MODES), Some("when_required"), &["COPY_SOURCE_REQUEST_CHECKSUM_CALCULATION"], "when_required (S3-compatible stores) or when_supported"),
    // migration
    key("migration.batch_num", Usize, Some("500"), &["BATCH_NUM", "MIGRATION_BATCH_NUM"], "object keys per queue message"),
    key("migration.tmp_dir", Str, None, &["MIGRATION_TMP_DIR"], "directory for temporary files (downup mode); unset: the system temp dir"),
    key("migration.log_level", Str, Some("info"), &["MIGRATION_LOG_LEVEL"], "tracing filter: error|warn|info|debug|trace or directives (RUST_LOG wins)"),
    key("migration.log_format", Enum(LOG_FORMATS), Some("text"), &["MIGRATION_LOG_FORMAT"], "text (people) or json (one object per line, for CloudWatch)"),
    key("migration.log_file", Str, None, &["MIGRATION_LOG_FILE"], "append logs to this file; unset: stderr"),
    key("migration.multipart_threshold", Size, Some("5GiB"), &["MIGRATION_MULTIPART_THRESHOLD"], "objects at or above this size are copied in parts (at most 5GiB)"),
    key("migration.part_size", Size, Some("64MiB"), &["MIGRATION_PART_SIZE"], "part size for multipart copies and uploads (5MiB..5GiB)"),
    key("migration.concurrency", Usize, Some("64"), &["MIGRATION_CONCURRENCY"], "objects in flight per executor"),
    key("migration.allowed_sources", Str, None, &["MIGRATION_ALLOWED_SOURCES"], "sources a queue message may name, comma-separated: s3://*, s3://bucket, file://*, file:///dir; unset: s3://* with the sqs backend, s3://*,file://* with the local one"),
    key("migration.allowed_targets", Str, None, &["MIGRATION_ALLOWED_TARGETS"], "targets a queue message may name (same forms and defaults as allowed_sources)"),
    // sqs
    key("sqs.queue_num", Usize, Some("5"), &["QUEUE_NUM", "SQS_QUEUE_NUM"], "number of work queues"),
    key("sqs.queue_name_pattern", Str, Some("s3-migration-{:0>2d}"), &["QUEUE_NAME_PATTERN", "SQS_QUEUE_NAME_PATTERN"], "work queue names; {:0>2d}, {:02}, {:02d}, {:d} or {} is the queue number"),
    key("sqs.dead_queue_name", Str, Some("s3-migration-dead"), &["DEAD_QUEUE_NAME", "SQS_DEAD_QUEUE_NAME"], "dead-letter queue name"),
    key("sqs.visibility_timeout", Seconds, Some("1800"), &["SQS_VISIBILITY_TIMEOUT"], "time a received message stays hidden (at most 12h)"),
    key("sqs.receive_message_wait_time", Seconds, Some("20"), &["SQS_RECEIVE_MESSAGE_WAIT_TIME"], "long-poll wait (at most 20s)"),
    key("sqs.message_retention_period", Seconds, Some("1209600"), &["SQS_MESSAGE_RETENTION_PERIOD"], "how long queues keep messages (60s..14d)"),
    key("sqs.max_receive_num", Usize, Some("10"), &["MAX_RECEIVE_NUM", "SQS_MAX_RECEIVE_NUM"], "messages per receive call (1..10)"),
    key("sqs.max_receive_count", U32, Some("3"), &["SQS_MAX_RECEIVE_COUNT"], "receives before a message moves to the dead-letter queue"),
    key("sqs.max_message_bytes", Size, Some("256KiB"), &["SQS_MAX_MESSAGE_BYTES"], "largest message the commander sends (1KiB..1MiB)"),
    key("sqs.endpoint_url", Str, None, &["SQS_ENDPOINT_URL"], "SQS endpoint; unset: AWS_ENDPOINT_URL_SQS / AWS_ENDPOINT_URL / AWS"),
    // queue
    key("queue.backend", Enum(BACKENDS), Some("sqs"), &["QUEUE_BACKEND"], "sqs, or local (the embedded SQLite queue at queue.path)"),
    key("queue.path", Str, Some("./s3-migration-queue.db"), &["QUEUE_PATH"], "database file of the local queue"),
    // report
    key("report.location", Str, None, &["REPORT_LOCATION"], "s3://bucket/prefix/ or a directory for completion reports; unset: no reports"),
    key("report.flush_rows", Usize, Some("1000"), &["REPORT_FLUSH_ROWS"], "report rows buffered before a part is written"),
    key("report.flush_seconds", Seconds, Some("30"), &["REPORT_FLUSH_SECONDS"], "longest time a report row waits in the buffer"),
];

/// The table entry of a key path.
pub fn key_spec(path: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|k| k.path == path)
}

/// Whether `path` is a section (has keys below it), e.g. `aws`, `aws.copy`.
fn is_section(path: &str) -> bool {
    KEYS.iter().any(|k| {
        k.path
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// The names directly below `prefix` ("" = top level).
fn children(prefix: &str) -> BTreeSet<&'static str> {
    KEYS.iter()
        .filter_map(|k| {
            let rest = if prefix.is_empty() {
                Some(k.path)
            } else {
                k.path
                    .strip_prefix(prefix)
                    .and_then(|r| r.strip_prefix('.'))
            }?;
            rest.split('.').next()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Sources and inputs
// ---------------------------------------------------------------------------

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default of [`KEYS`] (also: unset everywhere).
    Default,
    /// A config file, at this line.
    File { path: PathBuf, line: u64 },
    /// A `.env` file variable that was not already in the environment.
    DotEnv { path: PathBuf, var: String },
    /// An environment variable.
    Env { var: String },
    /// A command-line flag.
    Flag { flag: String },
}

impl Source {
    /// The layer name: `default`, `file`, `.env`, `env` or `flag`.
    pub fn layer(&self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::File { .. } => "file",
            Source::DotEnv { .. } => ".env",
            Source::Env { .. } => "env",
            Source::Flag { .. } => "flag",
        }
    }

    /// How errors name this source: `config.yml:12`, `env QUEUE_NUM`, `--batch-num`.
    fn subject(&self) -> String {
        match self {
            Source::Default => "built-in default".into(),
            Source::File { path, line } => format!("{}:{line}", path.display()),
            Source::DotEnv { path, var } => format!("{} ({var})", path.display()),
            Source::Env { var } => format!("env {var}"),
            Source::Flag { flag } => flag.clone(),
        }
    }
}

impl fmt::Display for Source {
    /// `default`, `file config.yml:12`, `.env QUEUE_NUM`, `env QUEUE_NUM`, `flag --batch-num`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File { path, line } => write!(f, "file {}:{line}", path.display()),
            Source::DotEnv { var, .. } => write!(f, ".env {var}"),
            Source::Env { var } => write!(f, "env {var}"),
            Source::Flag { flag } => write!(f, "flag {flag}"),
        }
    }
}

/// A config or `.env` file input of [`LoadInputs`].
#[derive(Clone, Default)]
pub enum FileInput {
    /// No file.
    #[default]
    None,
    /// The default location: read when it exists, silently skipped when missing.
    Default(PathBuf),
    /// Named by the user: a missing file is an error.
    Named(PathBuf),
    /// Contents given directly (tests); `name` is used in errors and sources.
    Text { name: PathBuf, text: String },
}

impl fmt::Debug for FileInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileInput::None => f.write_str("None"),
            FileInput::Default(p) => write!(f, "Default({p:?})"),
            FileInput::Named(p) => write!(f, "Named({p:?})"),
            // The text may hold secrets.
            FileInput::Text { name, text } => {
                write!(f, "Text({name:?}, {} bytes)", text.len())
            }
        }
    }
}

/// One flag-sourced value: config key path, raw value, flag name for messages.
#[derive(Clone, PartialEq, Eq)]
pub struct FlagValue {
    pub key: String,
    pub value: String,
    pub flag: String,
}

impl FlagValue {
    /// A flag value for `key` given by `flag`.
    pub fn new(key: impl Into<String>, value: impl Into<String>, flag: impl Into<String>) -> Self {
        FlagValue {
            key: key.into(),
            value: value.into(),
            flag: flag.into(),
        }
    }
}

impl fmt::Debug for FlagValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = key_spec(&self.key).is_some_and(|k| k.kind == KeyKind::Secret);
        let value = if secret { "***" } else { &self.value };
        write!(f, "{}={value:?} ({})", self.key, self.flag)
    }
}

/// Everything [`Config::load_from`] reads, made explicit so tests need neither
/// the process environment nor the working directory.
#[derive(Clone, Default)]
pub struct LoadInputs {
    pub config_file: FileInput,
    pub env_file: FileInput,
    /// The environment (variable name → value).
    pub env: BTreeMap<String, String>,
    /// Flag values, applied in order (later wins).
    pub flags: Vec<FlagValue>,
}

impl fmt::Debug for LoadInputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadInputs")
            .field("config_file", &self.config_file)
            .field("env_file", &self.env_file)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("flags", &self.flags)
            .finish()
    }
}

/// Flags every command accepts, before or after its subcommand.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// Config file [default: ./config.yml, skipped when missing]
    #[arg(short = 'c', long, global = true, value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// .env file; its variables never override the environment [default: ./.env, skipped when missing]
    #[arg(short = 'e', long, global = true, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// Log level or tracing filter (error, warn, info, debug, trace); RUST_LOG wins
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log line format
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Queue service: sqs, local or local:PATH (the embedded SQLite queue)
    #[arg(long, global = true, value_name = "sqs|local:PATH")]
    pub queue: Option<String>,
    /// Print the effective configuration (secrets redacted, with sources) and exit
    #[arg(long, global = true)]
    pub print_config: bool,
}

impl GlobalArgs {
    /// The config values these flags set: `--log-level` → `migration.log_level`,
    /// `--log-format` → `migration.log_format`, `--queue` → `queue.backend`
    /// (+ `queue.path`). Fails on a `--queue` value that is none of the forms.
    pub fn flag_values(&self) -> Result<Vec<FlagValue>> {
        let mut out = Vec::new();
        if let Some(level) = &self.log_level {
            out.push(FlagValue::new("migration.log_level", level, "--log-level"));
        }
        if let Some(format) = self.log_format {
            out.push(FlagValue::new(
                "migration.log_format",
                format.as_str(),
                "--log-format",
            ));
        }
        if let Some(queue) = &self.queue {
            let q = queue.trim();
            if q.eq_ignore_ascii_case("sqs") {
                out.push(FlagValue::new("queue.backend", "sqs", "--queue"));
            } else if q.eq_ignore_ascii_case("local") {
                out.push(FlagValue::new("queue.backend", "local", "--queue"));
            } else if let Some(path) = q.strip_prefix("local:").filter(|p| !p.is_empty()) {
                out.push(FlagValue::new("queue.backend", "local", "--queue"));
                out.push(FlagValue::new("queue.path", path, "--queue"));
            } else {
                return Err(Error::input(
                    "--queue",
                    format!("expected sqs, local or local:PATH, found '{queue}'"),
                ));
            }
        }
        Ok(out)
    }
}

/// Names of variables [`apply_dotenv_to_process`] set, so [`Config::load`]
/// still reports them as `.env` values rather than environment ones.
static DOTENV_APPLIED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Copy the `.env` file's variables into the process environment, never
/// overriding a variable that is already set (dotenvy semantics), so standard
/// `AWS_*` variables written there reach aws-config's default chain.
/// `None` reads `./.env` when it exists; a named file must exist.
/// Call it early, before threads are started.
pub fn apply_dotenv_to_process(path: Option<&Path>) -> Result<()> {
    let input = match path {
        Some(p) => FileInput::Named(p.to_path_buf()),
        None => FileInput::Default(PathBuf::from(DEFAULT_ENV_FILE)),
    };
    let Some((name, text)) = read_input(&input, ".env file")? else {
        return Ok(());
    };
    let vars = parse_dotenv(&name, &text)?;
    let mut applied = DOTENV_APPLIED.lock().unwrap_or_else(|e| e.into_inner());
    for (k, v) in vars {
        if std::env::var_os(&k).is_none() {
            std::env::set_var(&k, v);
            applied.insert(k);
        }
    }
    Ok(())
}

/// The process environment (UTF-8 entries), minus variables that only came
/// from [`apply_dotenv_to_process`].
fn process_env() -> BTreeMap<String, String> {
    let applied = DOTENV_APPLIED.lock().unwrap_or_else(|e| e.into_inner());
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| !applied.contains(k))
        .collect()
}

/// Prefixes of the environment names the configuration reads (see [`KEYS`]):
/// a variable starting with one of them that is no key's name is taken for a
/// typo. The bare seed names count as prefixes too, so `QUEUE_NUMS` and
/// `BATCH_NUMS` are caught. Not ours, never warned about: `AWS_*` (the SDK's),
/// `RUST_LOG`, `S3MIG_*` (the test suite's and scripts'), anything else.
pub const ENV_PREFIXES: &[&str] = &[
    "INVENTORY_",
    "COPY_",
    "MIGRATION_",
    "SQS_",
    "QUEUE_",
    "REPORT_",
    "BATCH_NUM",
    "DEAD_QUEUE_NAME",
    "MAX_RECEIVE_NUM",
];

/// Say on stderr, once per name, which variables of the environment or the
/// `.env` file look like ours ([`ENV_PREFIXES`], plus `extra_prefixes`) but
/// name nothing we read, with the closest known name. `extra_known` and
/// `extra_prefixes`: a binary's own variables (the executor's `EXECUTOR_*`
/// flags); the commander passes none, so it never judges `EXECUTOR_*`.
/// Call after [`apply_dotenv_to_process`] (the `.env` names are then in the
/// environment, and remembered as coming from the file).
pub fn warn_unknown_env(env_file: Option<&Path>, extra_known: &[&str], extra_prefixes: &[&str]) {
    let applied = DOTENV_APPLIED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    let file = env_file.map_or_else(|| DEFAULT_ENV_FILE.to_string(), |p| p.display().to_string());
    for (name, suggestion) in unknown_env_names(&names, extra_known, extra_prefixes) {
        let origin = match applied.contains(&name) {
            true => format!("{file}: variable {name}"),
            false => format!("environment variable {name}"),
        };
        match suggestion {
            Some(s) => eprintln!("warning: {origin} is not a setting; did you mean {s}?"),
            None => eprintln!("warning: {origin} is not a setting (see docs/config.md); ignored"),
        }
    }
}

/// The names among `names` that look like ours but are unknown, each once,
/// sorted, with the closest known name when one is close (the same rule as
/// an unknown config key's did-you-mean).
pub fn unknown_env_names(
    names: &[String],
    extra_known: &[&str],
    extra_prefixes: &[&str],
) -> Vec<(String, Option<String>)> {
    let known: BTreeSet<&str> = KEYS
        .iter()
        .flat_map(|k| k.env.iter().copied())
        .chain(extra_known.iter().copied())
        .collect();
    let ours = |n: &str| {
        ENV_PREFIXES
            .iter()
            .chain(extra_prefixes)
            .any(|p| n.starts_with(p))
    };
    let unknown: BTreeSet<&String> = names
        .iter()
        .filter(|n| ours(n) && !known.contains(n.as_str()))
        .collect();
    unknown
        .into_iter()
        .map(|n| {
            let best = known
                .iter()
                .map(|c| (edit_distance(n, c), *c))
                .min()
                .filter(|(d, c)| *d <= 2 || *d * 3 <= n.len().max(c.len()))
                .map(|(_, c)| c.to_string());
            (n.clone(), best)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

/// A scalar from one layer, before it is parsed by kind.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Str(String),
    Bool(bool),
    Int(i128),
    Float(f64),
}

/// A raw value and where it came from.
#[derive(Debug, Clone)]
struct Raw {
    value: Scalar,
    source: Source,
}

impl Config {
    /// Load with flag overrides: each (key path, value, flag name), e.g.
    /// `("migration.batch_num", Some("100"), "--batch-num")`; `None` values are
    /// skipped. Reads `-c` (or `./config.yml` if present), `-e` (or `./.env` if
    /// present) and the process environment.
    pub fn load(global: &GlobalArgs, flags: &[(&str, Option<String>, &str)]) -> Result<Config> {
        let mut all = global.flag_values()?;
        all.extend(flags.iter().filter_map(|(key, value, flag)| {
            value.as_ref().map(|v| FlagValue::new(*key, v, *flag))
        }));
        let inputs = LoadInputs {
            config_file: match &global.config_file {
                Some(p) => FileInput::Named(p.clone()),
                None => FileInput::Default(PathBuf::from(DEFAULT_CONFIG_FILE)),
            },
            env_file: match &global.env_file {
                Some(p) => FileInput::Named(p.clone()),
                None => FileInput::Default(PathBuf::from(DEFAULT_ENV_FILE)),
            },
            env: process_env(),
            flags: all,
        };
        Config::load_from(&inputs)
    }

    /// Pure core for tests: explicit file contents/paths and an explicit environment map.
    pub fn load_from(inputs: &LoadInputs) -> Result<Config> {
        let mut merged: BTreeMap<&'static str, Raw> = BTreeMap::new();
        for spec in KEYS {
            if let Some(d) = spec.default {
                merged.insert(
                    spec.path,
                    Raw {
                        value: Scalar::Str(d.to_string()),
                        source: Source::Default,
                    },
                );
            }
        }

        if let Some((name, text)) = read_input(&inputs.config_file, "config file")? {
            for (spec, value, line) in parse_yaml(&name, &text)? {
                // A YAML null or empty value means "unset": the earlier layer stays.
                if let Some(value) = value {
                    let source = Source::File {
                        path: name.clone(),
                        line,
                    };
                    merged.insert(spec.path, Raw { value, source });
                }
            }
        }

        if let Some((name, text)) = read_input(&inputs.env_file, ".env file")? {
            let dotenv: BTreeMap<String, String> =
                parse_dotenv(&name, &text)?.into_iter().collect();
            for spec in KEYS {
                let hit = spec.env.iter().find_map(|var| {
                    if inputs.env.contains_key(*var) {
                        return None; // the environment wins over .env
                    }
                    dotenv
                        .get(*var)
                        .filter(|v| !v.is_empty())
                        .map(|v| (*var, v))
                });
                if let Some((var, v)) = hit {
                    let source = Source::DotEnv {
                        path: name.clone(),
                        var: var.to_string(),
                    };
                    let value = Scalar::Str(v.clone());
                    merged.insert(spec.path, Raw { value, source });
                }
            }
        }

        for spec in KEYS {
            let hit = spec.env.iter().find_map(|var| {
                inputs
                    .env
                    .get(*var)
                    .filter(|v| !v.is_empty())
                    .map(|v| (*var, v))
            });
            if let Some((var, v)) = hit {
                let source = Source::Env {
                    var: var.to_string(),
                };
                let value = Scalar::Str(v.clone());
                merged.insert(spec.path, Raw { value, source });
            }
        }

        for f in &inputs.flags {
            let spec = key_spec(&f.key).ok_or_else(|| {
                Error::input(
                    &f.flag,
                    format!("internal: '{}' is not a configuration key", f.key),
                )
            })?;
            let source = Source::Flag {
                flag: f.flag.clone(),
            };
            let value = Scalar::Str(f.value.clone());
            merged.insert(spec.path, Raw { value, source });
        }

        build(&Merged { map: merged })
    }

    /// Queue name number n (1-based) from the pattern.
    pub fn queue_name(&self, n: usize) -> String {
        self.sqs.queue_name_pattern.format(n)
    }

    /// The sources a queue message may name: `migration.allowed_sources`, else
    /// every bucket (and, with the embedded queue, every directory too).
    pub fn allowed_sources(&self) -> EndpointPolicy {
        self.migration
            .allowed_sources
            .clone()
            .unwrap_or_else(|| self.default_endpoints())
    }

    /// The targets a queue message may name (see [`Config::allowed_sources`]).
    pub fn allowed_targets(&self) -> EndpointPolicy {
        self.migration
            .allowed_targets
            .clone()
            .unwrap_or_else(|| self.default_endpoints())
    }

    fn default_endpoints(&self) -> EndpointPolicy {
        match self.queue {
            QueueBackend::Sqs => EndpointPolicy::s3_only(),
            QueueBackend::Local(_) => EndpointPolicy::anything(),
        }
    }

    /// All work queue names, 1..=`sqs.queue_num`.
    pub fn queue_names(&self) -> Vec<String> {
        (1..=self.sqs.queue_num)
            .map(|n| self.queue_name(n))
            .collect()
    }

    /// Where `path`'s value came from (`Source::Default` for unknown paths).
    pub fn source(&self, path: &str) -> Source {
        self.sources.get(path).cloned().unwrap_or(Source::Default)
    }

    /// Effective config as YAML-ish text, secrets shown as ***, each line annotated `# default|file|.env|env NAME|flag --x`.
    /// Loading the output back (secrets aside) gives the same configuration.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# Effective configuration (secrets shown as \"***\"); the source of each value on its right.\n",
        );
        let mut open: Vec<&str> = Vec::new();
        for spec in KEYS {
            let segs: Vec<&str> = spec.path.split('.').collect();
            let (sections, leaf) = segs.split_at(segs.len() - 1);
            let common = open
                .iter()
                .zip(sections)
                .take_while(|(a, b)| a == b)
                .count();
            open.truncate(common);
            for (depth, s) in sections.iter().enumerate().skip(common) {
                out.push_str(&format!("{}{s}:\n", "  ".repeat(depth)));
                open.push(s);
            }
            let mut note = self.source(spec.path).to_string();
            let value = if spec.path == "queue.path" && self.queue == QueueBackend::Sqs {
                note.push_str(" (unused: queue.backend is sqs)");
                "~".to_string()
            } else {
                self.value_text(spec.path)
            };
            let line = format!("{}{}: {value}", "  ".repeat(sections.len()), leaf[0]);
            out.push_str(&format!("{line:<52} # {note}\n"));
        }
        out
    }

    /// One key's effective value as YAML text (`~` when unset, `"***"` for secrets).
    fn value_text(&self, path: &str) -> String {
        fn q(s: &str) -> String {
            serde_json::Value::String(s.to_string()).to_string()
        }
        fn opt(v: Option<String>) -> String {
            v.unwrap_or_else(|| "~".to_string())
        }
        fn secs(d: Duration) -> String {
            d.as_secs().to_string()
        }
        if let Some(rest) = path.strip_prefix("aws.") {
            let Some((section, key)) = rest.split_once('.') else {
                return "~".into();
            };
            let s = match section {
                "inventory" => &self.aws.inventory,
                "copy" => &self.aws.copy,
                _ => &self.aws.copy_source,
            };
            return match key {
                "profile_name" => opt(s.profile_name.as_deref().map(q)),
                "region_name" => opt(s.region_name.as_deref().map(q)),
                "aws_access_key_id" => opt(s.aws_access_key_id.as_deref().map(q)),
                "aws_secret_access_key" => opt(s.aws_secret_access_key.as_ref().map(|_| q("***"))),
                "aws_session_token" => opt(s.aws_session_token.as_ref().map(|_| q("***"))),
                "endpoint_url" => opt(s.endpoint_url.as_deref().map(q)),
                "force_path_style" => opt(s.force_path_style.map(|b| b.to_string())),
                "max_attempts" => s.max_attempts.to_string(),
                "connect_timeout" => secs(s.connect_timeout),
                "read_timeout" => secs(s.read_timeout),
                "request_checksum_calculation" => s.request_checksum_calculation.clone(),
                _ => "~".into(),
            };
        }
        let path_text = |p: &Option<PathBuf>| opt(p.as_ref().map(|p| q(&p.to_string_lossy())));
        let m = &self.migration;
        let s = &self.sqs;
        match path {
            "migration.batch_num" => m.batch_num.to_string(),
            "migration.tmp_dir" => path_text(&m.tmp_dir),
            "migration.log_level" => q(&m.log_level),
            "migration.log_format" => m.log_format.to_string(),
            "migration.log_file" => path_text(&m.log_file),
            "migration.multipart_threshold" => format_size(m.multipart_threshold),
            "migration.part_size" => format_size(m.part_size),
            "migration.concurrency" => m.concurrency.to_string(),
            "migration.allowed_sources" => {
                opt(m.allowed_sources.as_ref().map(|p| q(&p.to_config_text())))
            }
            "migration.allowed_targets" => {
                opt(m.allowed_targets.as_ref().map(|p| q(&p.to_config_text())))
            }
            "sqs.queue_num" => s.queue_num.to_string(),
            "sqs.queue_name_pattern" => q(&s.queue_name_pattern.0),
            "sqs.dead_queue_name" => q(&s.dead_queue_name),
            "sqs.visibility_timeout" => secs(s.visibility_timeout),
            "sqs.receive_message_wait_time" => secs(s.receive_message_wait_time),
            "sqs.message_retention_period" => secs(s.message_retention_period),
            "sqs.max_receive_num" => s.max_receive_num.to_string(),
            "sqs.max_receive_count" => s.max_receive_count.to_string(),
            "sqs.max_message_bytes" => format_size(s.max_message_bytes as u64),
            "sqs.endpoint_url" => opt(s.endpoint_url.as_deref().map(q)),
            "queue.backend" => match self.queue {
                QueueBackend::Sqs => "sqs".into(),
                QueueBackend::Local(_) => "local".into(),
            },
            "queue.path" => match &self.queue {
                QueueBackend::Local(p) => q(&p.to_string_lossy()),
                QueueBackend::Sqs => "~".into(),
            },
            "report.location" => opt(self.report_location.as_deref().map(q)),
            "report.flush_rows" => self.report.flush_rows.to_string(),
            "report.flush_seconds" => secs(self.report.flush_seconds),
            _ => "~".into(),
        }
    }
}

/// Read a file input; `Ok(None)` for no file or a missing default file.
fn read_input(input: &FileInput, what: &str) -> Result<Option<(PathBuf, String)>> {
    let (path, named) = match input {
        FileInput::None => return Ok(None),
        FileInput::Text { name, text } => return Ok(Some((name.clone(), text.clone()))),
        FileInput::Default(p) => (p, false),
        FileInput::Named(p) => (p, true),
    };
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some((path.clone(), text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::input(
            path.display().to_string(),
            format!("{what} not found"),
        )
        .with_source(e)),
        Err(e) => Err(
            Error::input(path.display().to_string(), format!("cannot read {what}")).with_source(e),
        ),
    }
}

/// Parse `.env` text (dotenvy syntax) into (name, value) pairs, in file order.
/// Parse errors name the file and line but never echo the line (it may hold a secret).
fn parse_dotenv(name: &Path, text: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        match item {
            Ok(kv) => out.push(kv),
            Err(dotenvy::Error::LineParse(line, at)) => {
                let lineno = text
                    .lines()
                    .position(|l| l.trim() == line.trim() || l.contains(line.trim()))
                    .map(|i| i + 1)
                    .unwrap_or(0);
                let var = line.split('=').next().unwrap_or("").trim().to_string();
                return Err(Error::input(
                    format!("{}:{lineno}", name.display()),
                    format!("cannot parse the .env line of '{var}' (at column {at}); expected NAME=value"),
                ));
            }
            Err(e) => {
                return Err(
                    Error::input(name.display().to_string(), "cannot read .env file")
                        .with_source(e),
                );
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// YAML
// ---------------------------------------------------------------------------

/// A YAML node with the line of each mapping value (from serde-saphyr's `Spanned`).
#[derive(Debug)]
enum Yaml {
    Null,
    Scalar(Scalar),
    Seq,
    Map(Vec<(String, Spanned<Yaml>)>),
}

impl Yaml {
    /// The node's type, for "found …" in errors.
    fn describe(&self) -> String {
        match self {
            Yaml::Null => "nothing".into(),
            Yaml::Scalar(s) => describe_scalar(s),
            Yaml::Seq => "a sequence".into(),
            Yaml::Map(_) => "a mapping".into(),
        }
    }
}

fn describe_scalar(s: &Scalar) -> String {
    match s {
        Scalar::Str(_) => "a string".into(),
        Scalar::Bool(b) => format!("the boolean {b}"),
        Scalar::Int(i) => format!("the integer {i}"),
        Scalar::Float(f) => format!("the number {f}"),
    }
}

impl<'de> Deserialize<'de> for Yaml {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(YamlVisitor)
    }
}

struct YamlVisitor;

impl<'de> Visitor<'de> for YamlVisitor {
    type Value = Yaml;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Scalar(Scalar::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Scalar(Scalar::Int(v.into())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Scalar(Scalar::Int(v.into())))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Scalar(Scalar::Int(v)))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Scalar(Scalar::Int(
            i128::try_from(v).unwrap_or(i128::MAX),
        )))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Scalar(Scalar::Float(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Scalar(Scalar::Str(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Scalar(Scalar::Str(v)))
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Null)
    }
    fn visit_none<E: de::Error>(self) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Yaml, D::Error> {
        Yaml::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Yaml, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Yaml::Seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Yaml, A::Error> {
        let mut out = Vec::new();
        while let Some(KeyText(k)) = map.next_key::<KeyText>()? {
            let v = map.next_value::<Spanned<Yaml>>()?;
            out.push((k, v));
        }
        Ok(Yaml::Map(out))
    }
}

/// A mapping key as text (YAML allows numbers and booleans as keys).
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> std::result::Result<KeyText, E> {
                Ok(KeyText("~".to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parse config-file text and check it against [`KEYS`]: every leaf key with
/// its value (`None` = YAML null/empty) and line. Unknown keys, sections given
/// a scalar and keys given a mapping or sequence are errors naming the path.
fn parse_yaml(name: &Path, text: &str) -> Result<Vec<(&'static KeySpec, Option<Scalar>, u64)>> {
    let blank = text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    });
    if blank {
        return Ok(Vec::new());
    }
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true; // `yes`/`no` stay strings; bool keys accept them anyway
    options.with_snippet = false; // snippets could show secrets
    let root: Spanned<Yaml> = serde_saphyr::from_str_with_options(text, options)
        .map_err(|e| Error::input(name.display().to_string(), format!("invalid YAML: {e}")))?;
    let mut out = Vec::new();
    match root.value {
        Yaml::Null => {}
        Yaml::Map(entries) => walk(name, "", entries, &mut out)?,
        other => {
            return Err(Error::input(
                format!("{}:{}", name.display(), root.referenced.line()),
                format!(
                    "expected a mapping of sections (aws, migration, sqs, queue, report), found {}",
                    other.describe()
                ),
            ))
        }
    }
    Ok(out)
}

fn walk(
    name: &Path,
    prefix: &str,
    entries: Vec<(String, Spanned<Yaml>)>,
    out: &mut Vec<(&'static KeySpec, Option<Scalar>, u64)>,
) -> Result<()> {
    for (k, node) in entries {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let line = node.referenced.line();
        let at = || format!("{}:{line}", name.display());
        if let Some(spec) = key_spec(&path) {
            let value = match node.value {
                Yaml::Null => None,
                Yaml::Scalar(s) => Some(s),
                other => {
                    return Err(Error::input(
                        at(),
                        format!(
                            "{path}: expected {}, found {}",
                            spec.kind.describe(),
                            other.describe()
                        ),
                    ))
                }
            };
            out.push((spec, value, line));
        } else if is_section(&path) {
            match node.value {
                Yaml::Null => {}
                Yaml::Map(m) => walk(name, &path, m, out)?,
                other => {
                    return Err(Error::input(
                        at(),
                        format!(
                            "{path}: expected a mapping (a section), found {}",
                            other.describe()
                        ),
                    ))
                }
            }
        } else {
            return Err(Error::input(at(), unknown_key_message(prefix, &k, &path)));
        }
    }
    Ok(())
}

/// `sqs.queue_nmu: unknown key; did you mean queue_num?`
fn unknown_key_message(prefix: &str, key: &str, path: &str) -> String {
    let siblings = children(prefix);
    let best = siblings
        .iter()
        .map(|c| (edit_distance(key, c), *c))
        .min()
        .filter(|(d, c)| *d <= 2 || *d * 3 <= key.len().max(c.len()));
    if let Some((_, c)) = best {
        return format!("{path}: unknown key; did you mean {c}?");
    }
    // The right name in the wrong section?
    if let Some(spec) = KEYS.iter().find(|s| s.path.rsplit('.').next() == Some(key)) {
        return format!("{path}: unknown key; did you mean {}?", spec.path);
    }
    let known: Vec<&str> = siblings.into_iter().collect();
    format!("{path}: unknown key (known here: {})", known.join(", "))
}

/// Levenshtein distance (insert, delete, substitute), on chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------
// Scalar parsing
// ---------------------------------------------------------------------------

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
const TIB: u64 = 1024 * GIB;

/// Parse a size: plain bytes, or a number with `B`, `KB`/`MB`/`GB`/`TB`
/// (powers of 1000) or `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024), any case;
/// decimals allowed when the result is whole bytes (`1.5GiB`).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let bad = || {
        format!("invalid size '{t}' (expected bytes, or a number with KB, MB, GB, TB, KiB, MiB, GiB, TiB)")
    };
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => KIB,
        "mib" => MIB,
        "gib" => GIB,
        "tib" => TIB,
        _ => return Err(bad()),
    };
    if num.is_empty() {
        return Err(bad());
    }
    if let Some((whole, frac)) = num.split_once('.') {
        if whole.is_empty() || frac.is_empty() || frac.contains('.') {
            return Err(bad());
        }
        // Exact decimal arithmetic: whole*mult + frac*mult/10^len(frac).
        let scale = 10u128.checked_pow(frac.len() as u32).ok_or_else(bad)?;
        let w: u128 = whole.parse().map_err(|_| bad())?;
        let f: u128 = frac.parse().map_err(|_| bad())?;
        let m = u128::from(mult);
        let frac_bytes = f * m;
        if !frac_bytes.is_multiple_of(scale) {
            return Err(format!("invalid size '{t}': not a whole number of bytes"));
        }
        let total = w
            .checked_mul(m)
            .and_then(|x| x.checked_add(frac_bytes / scale))
            .ok_or_else(bad)?;
        return u64::try_from(total).map_err(|_| bad());
    }
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(bad)
}

/// A size as config text: the largest exact binary unit (`5GiB`), else bytes.
pub fn format_size(n: u64) -> String {
    for (unit, name) in [(TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
        if n >= unit && n.is_multiple_of(unit) {
            return format!("{}{name}", n / unit);
        }
    }
    n.to_string()
}

/// Parse a duration: whole seconds, or a whole number with `s`, `m`, `h` or `d`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let bad =
        || format!("invalid duration '{t}' (expected seconds, or a number with s, m, h or d)");
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(mult).map(Duration::from_secs).ok_or_else(bad)
}

/// Parse a boolean: true/false, yes/no, on/off, 1/0 (any case).
pub fn parse_bool(s: &str) -> std::result::Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!(
            "invalid boolean '{}' (expected true/false/yes/no/1/0)",
            s.trim()
        )),
    }
}

// ---------------------------------------------------------------------------
// Merged map → typed Config
// ---------------------------------------------------------------------------

struct Merged {
    map: BTreeMap<&'static str, Raw>,
}

impl Merged {
    /// An input error about `path`, naming where its value came from.
    fn err(&self, path: &str, msg: impl fmt::Display) -> Error {
        let subject = self
            .map
            .get(path)
            .map(|r| r.source.subject())
            .unwrap_or_else(|| "configuration".to_string());
        Error::input(subject, format!("{path}: {msg}"))
    }

    fn kind(path: &str) -> KeyKind {
        key_spec(path).map(|k| k.kind).unwrap_or(KeyKind::Str)
    }

    /// Wrong-type error: "expected an unsigned integer, found the boolean true".
    fn type_err(&self, path: &str, found: &Scalar) -> Error {
        self.err(
            path,
            format!(
                "expected {}, found {}",
                Self::kind(path).describe(),
                describe_scalar(found)
            ),
        )
    }

    fn string(&self, path: &str) -> Result<Option<String>> {
        match self.map.get(path).map(|r| &r.value) {
            None => Ok(None),
            Some(Scalar::Str(s)) => Ok(Some(s.clone())),
            Some(Scalar::Int(i)) => Ok(Some(i.to_string())),
            Some(Scalar::Float(f)) => Ok(Some(f.to_string())),
            Some(b @ Scalar::Bool(_)) => Err(self.type_err(path, b)),
        }
    }

    /// A non-empty string (an empty one is an error naming the key).
    fn text(&self, path: &str) -> Result<Option<String>> {
        match self.string(path)? {
            Some(s) if s.trim().is_empty() => Err(self.err(path, "must not be empty")),
            other => Ok(other),
        }
    }

    fn secret(&self, path: &str) -> Result<Option<Secret>> {
        match self.map.get(path).map(|r| &r.value) {
            None => Ok(None),
            Some(Scalar::Str(s)) => Ok(Some(Secret::new(s.clone()))),
            Some(Scalar::Int(i)) => Ok(Some(Secret::new(i.to_string()))),
            // Never echo the value of a secret, even its type's rendering.
            Some(_) => Err(self.err(path, "expected a string")),
        }
    }

    fn bool(&self, path: &str) -> Result<Option<bool>> {
        match self.map.get(path).map(|r| &r.value) {
            None => Ok(None),
            Some(Scalar::Bool(b)) => Ok(Some(*b)),
            Some(Scalar::Int(0)) => Ok(Some(false)),
            Some(Scalar::Int(1)) => Ok(Some(true)),
            Some(Scalar::Str(s)) => parse_bool(s).map(Some).map_err(|m| self.err(path, m)),
            Some(other) => Err(self.type_err(path, other)),
        }
    }

    fn uint(&self, path: &str, max: u64) -> Result<Option<u64>> {
        let n = match self.map.get(path).map(|r| &r.value) {
            None => return Ok(None),
            Some(Scalar::Int(i)) => u64::try_from(*i)
                .map_err(|_| self.err(path, format!("invalid unsigned integer '{i}'")))?,
            Some(Scalar::Str(s)) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| self.err(path, format!("invalid unsigned integer '{}'", s.trim())))?,
            Some(other) => return Err(self.type_err(path, other)),
        };
        if n > max {
            return Err(self.err(path, format!("{n} is too large (at most {max})")));
        }
        Ok(Some(n))
    }

    fn size(&self, path: &str) -> Result<Option<u64>> {
        match self.map.get(path).map(|r| &r.value) {
            None => Ok(None),
            Some(Scalar::Int(i)) => u64::try_from(*i)
                .map(Some)
                .map_err(|_| self.err(path, format!("invalid size '{i}'"))),
            Some(Scalar::Str(s)) => parse_size(s).map(Some).map_err(|m| self.err(path, m)),
            Some(other) => Err(self.type_err(path, other)),
        }
    }

    fn secs(&self, path: &str) -> Result<Option<Duration>> {
        match self.map.get(path).map(|r| &r.value) {
            None => Ok(None),
            Some(Scalar::Int(i)) => u64::try_from(*i)
                .map(|n| Some(Duration::from_secs(n)))
                .map_err(|_| self.err(path, format!("invalid duration '{i}'"))),
            Some(Scalar::Str(s)) => parse_duration(s).map(Some).map_err(|m| self.err(path, m)),
            Some(other) => Err(self.type_err(path, other)),
        }
    }

    fn choice(&self, path: &str) -> Result<Option<&'static str>> {
        let KeyKind::Enum(names) = Self::kind(path) else {
            return Err(self.err(path, "internal: not an enum key"));
        };
        match self.map.get(path).map(|r| &r.value) {
            None => Ok(None),
            Some(Scalar::Str(s)) => {
                let t = s.trim().to_ascii_lowercase();
                names
                    .iter()
                    .find(|n| **n == t)
                    .copied()
                    .map(Some)
                    .ok_or_else(|| {
                        self.err(
                            path,
                            format!("expected one of {}, found '{}'", names.join("|"), s.trim()),
                        )
                    })
            }
            Some(other) => Err(self.type_err(path, other)),
        }
    }

    /// A value every defaulted key has.
    fn need<T>(&self, path: &str, v: Option<T>) -> Result<T> {
        v.ok_or_else(|| self.err(path, "internal: no value and no default"))
    }

    fn range(&self, path: &str, v: u64, lo: u64, hi: u64, show: fn(u64) -> String) -> Result<()> {
        if v < lo || v > hi {
            return Err(self.err(
                path,
                format!("{} is out of range ({}..={})", show(v), show(lo), show(hi)),
            ));
        }
        Ok(())
    }

    fn url(&self, path: &str) -> Result<Option<String>> {
        let v = self.text(path)?;
        if let Some(u) = &v {
            let rest = u
                .strip_prefix("http://")
                .or_else(|| u.strip_prefix("https://"))
                .unwrap_or("");
            if rest.is_empty() || u.contains(char::is_whitespace) {
                return Err(self.err(
                    path,
                    format!("invalid URL '{u}' (expected http://host[:port] or https://…)"),
                ));
            }
        }
        Ok(v)
    }
}

fn build(m: &Merged) -> Result<Config> {
    let aws = AwsConfig {
        inventory: aws_section(m, "aws.inventory")?,
        copy: aws_section(m, "aws.copy")?,
        copy_source: aws_section(m, "aws.copy_source")?,
    };
    let migration = migration_config(m)?;
    let sqs = sqs_config(m)?;
    let queue = match m.need("queue.backend", m.choice("queue.backend")?)? {
        "local" => QueueBackend::Local(PathBuf::from(m.need("queue.path", m.text("queue.path")?)?)),
        _ => QueueBackend::Sqs,
    };
    let report = report_config(m)?;
    Ok(Config {
        aws,
        migration,
        sqs,
        queue,
        report_location: m.text("report.location")?,
        report,
        sources: key_sources(m),
    })
}

/// A count as it is shown in a range error.
fn show_count(v: u64) -> String {
    v.to_string()
}

/// Seconds as they are shown in a range error.
fn show_secs(v: u64) -> String {
    format!("{v}s")
}

/// The `migration` section, every value checked.
fn migration_config(m: &Merged) -> Result<MigrationConfig> {
    let batch_num = m.need(
        "migration.batch_num",
        m.uint("migration.batch_num", usize::MAX as u64)?,
    )?;
    m.range("migration.batch_num", batch_num, 1, u64::MAX, show_count)?;
    let log_level = m.need("migration.log_level", m.text("migration.log_level")?)?;
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
        return Err(m
            .err(
                "migration.log_level",
                format!("invalid log level '{log_level}'"),
            )
            .with_source(e));
    }
    let log_format = match m.need("migration.log_format", m.choice("migration.log_format")?)? {
        "json" => LogFormat::Json,
        _ => LogFormat::Text,
    };
    let multipart_threshold = m.need(
        "migration.multipart_threshold",
        m.size("migration.multipart_threshold")?,
    )?;
    m.range(
        "migration.multipart_threshold",
        multipart_threshold,
        1,
        5 * GIB,
        format_size,
    )?;
    let part_size = m.need("migration.part_size", m.size("migration.part_size")?)?;
    m.range(
        "migration.part_size",
        part_size,
        5 * MIB,
        5 * GIB,
        format_size,
    )?;
    let concurrency = m.need(
        "migration.concurrency",
        m.uint("migration.concurrency", usize::MAX as u64)?,
    )?;
    m.range(
        "migration.concurrency",
        concurrency,
        1,
        u64::MAX,
        show_count,
    )?;
    Ok(MigrationConfig {
        batch_num: batch_num as usize,
        tmp_dir: m.text("migration.tmp_dir")?.map(PathBuf::from),
        log_level,
        log_file: m.text("migration.log_file")?.map(PathBuf::from),
        multipart_threshold,
        part_size,
        concurrency: concurrency as usize,
        log_format,
        allowed_sources: policy(m, "migration.allowed_sources")?,
        allowed_targets: policy(m, "migration.allowed_targets")?,
    })
}

/// The `sqs` section, every value checked.
fn sqs_config(m: &Merged) -> Result<SqsConfig> {
    let (queue_num, queue_name_pattern, dead_queue_name) = queue_naming(m)?;
    let visibility_timeout = m.need("sqs.visibility_timeout", m.secs("sqs.visibility_timeout")?)?;
    m.range(
        "sqs.visibility_timeout",
        visibility_timeout.as_secs(),
        0,
        12 * 3600,
        show_secs,
    )?;
    let wait = m.need(
        "sqs.receive_message_wait_time",
        m.secs("sqs.receive_message_wait_time")?,
    )?;
    m.range(
        "sqs.receive_message_wait_time",
        wait.as_secs(),
        0,
        20,
        show_secs,
    )?;
    let retention = m.need(
        "sqs.message_retention_period",
        m.secs("sqs.message_retention_period")?,
    )?;
    m.range(
        "sqs.message_retention_period",
        retention.as_secs(),
        60,
        1_209_600,
        show_secs,
    )?;
    let max_receive_num = m.need(
        "sqs.max_receive_num",
        m.uint("sqs.max_receive_num", u64::MAX)?,
    )?;
    m.range("sqs.max_receive_num", max_receive_num, 1, 10, show_count)?;
    let max_receive_count = m.need(
        "sqs.max_receive_count",
        m.uint("sqs.max_receive_count", 1000)?,
    )?;
    m.range(
        "sqs.max_receive_count",
        max_receive_count,
        1,
        1000,
        show_count,
    )?;
    let max_message_bytes = m.need("sqs.max_message_bytes", m.size("sqs.max_message_bytes")?)?;
    m.range(
        "sqs.max_message_bytes",
        max_message_bytes,
        KIB,
        MIB,
        format_size,
    )?;
    Ok(SqsConfig {
        queue_num: queue_num as usize,
        queue_name_pattern,
        dead_queue_name,
        visibility_timeout,
        receive_message_wait_time: wait,
        message_retention_period: retention,
        max_receive_num: max_receive_num as usize,
        max_receive_count: max_receive_count as u32,
        max_message_bytes: max_message_bytes as usize,
        endpoint_url: m.url("sqs.endpoint_url")?,
    })
}

/// `sqs.queue_num`, `sqs.queue_name_pattern` and `sqs.dead_queue_name`: every
/// name they make is a valid queue name, and the DLQ's is not a work queue's.
fn queue_naming(m: &Merged) -> Result<(u64, QueuePattern, String)> {
    let queue_num = m.need("sqs.queue_num", m.uint("sqs.queue_num", 1000)?)?;
    m.range("sqs.queue_num", queue_num, 1, 1000, show_count)?;
    let pattern_text = m.need("sqs.queue_name_pattern", m.text("sqs.queue_name_pattern")?)?;
    let queue_name_pattern =
        QueuePattern::parse(&pattern_text).map_err(|e| m.err("sqs.queue_name_pattern", e))?;
    for n in [1, queue_num as usize] {
        let name = queue_name_pattern.format(n);
        check_queue_name(&name).map_err(|e| m.err("sqs.queue_name_pattern", e))?;
    }
    let dead_queue_name = m.need("sqs.dead_queue_name", m.text("sqs.dead_queue_name")?)?;
    check_queue_name(&dead_queue_name).map_err(|e| m.err("sqs.dead_queue_name", e))?;
    if (1..=queue_num as usize).any(|n| queue_name_pattern.format(n) == dead_queue_name) {
        return Err(m.err(
            "sqs.dead_queue_name",
            format!("'{dead_queue_name}' is also a work queue name"),
        ));
    }
    Ok((queue_num, queue_name_pattern, dead_queue_name))
}

/// The `report` section's flush settings, checked.
fn report_config(m: &Merged) -> Result<ReportConfig> {
    let flush_rows = m.need(
        "report.flush_rows",
        m.uint("report.flush_rows", usize::MAX as u64)?,
    )?;
    m.range("report.flush_rows", flush_rows, 1, u64::MAX, show_count)?;
    let flush_seconds = m.need("report.flush_seconds", m.secs("report.flush_seconds")?)?;
    m.range(
        "report.flush_seconds",
        flush_seconds.as_secs(),
        1,
        u64::MAX,
        show_secs,
    )?;
    Ok(ReportConfig {
        flush_rows: flush_rows as usize,
        flush_seconds,
    })
}

/// Where each key's value came from (a key set nowhere: its default).
fn key_sources(m: &Merged) -> BTreeMap<String, Source> {
    KEYS.iter()
        .map(|k| {
            let source = m
                .map
                .get(k.path)
                .map(|r| r.source.clone())
                .unwrap_or(Source::Default);
            (k.path.to_string(), source)
        })
        .collect()
}

/// An endpoint list key; errors name the key and where its value came from.
fn policy(m: &Merged, path: &str) -> Result<Option<EndpointPolicy>> {
    m.text(path)?
        .map(|t| EndpointPolicy::parse(&t, path).map_err(|e| m.err(path, e.message)))
        .transpose()
}

fn aws_section(m: &Merged, prefix: &str) -> Result<AwsSection> {
    let p = |k: &str| format!("{prefix}.{k}");
    let max_attempts = m.need(
        &p("max_attempts"),
        m.uint(&p("max_attempts"), u32::MAX as u64)?,
    )?;
    m.range(&p("max_attempts"), max_attempts, 1, u32::MAX as u64, |v| {
        v.to_string()
    })?;
    let section = AwsSection {
        profile_name: m.text(&p("profile_name"))?,
        region_name: m.text(&p("region_name"))?,
        aws_access_key_id: m.text(&p("aws_access_key_id"))?,
        aws_secret_access_key: m.secret(&p("aws_secret_access_key"))?,
        aws_session_token: m.secret(&p("aws_session_token"))?,
        endpoint_url: m.url(&p("endpoint_url"))?,
        force_path_style: m.bool(&p("force_path_style"))?,
        max_attempts: max_attempts as u32,
        connect_timeout: m.need(&p("connect_timeout"), m.secs(&p("connect_timeout"))?)?,
        read_timeout: m.need(&p("read_timeout"), m.secs(&p("read_timeout"))?)?,
        request_checksum_calculation: m
            .need(
                &p("request_checksum_calculation"),
                m.choice(&p("request_checksum_calculation"))?,
            )?
            .to_string(),
    };
    match (&section.aws_access_key_id, &section.aws_secret_access_key) {
        (Some(_), None) => {
            return Err(m.err(
                &p("aws_access_key_id"),
                format!("is set but {prefix}.aws_secret_access_key is not; set both or neither"),
            ))
        }
        (None, Some(_)) => {
            return Err(m.err(
                &p("aws_secret_access_key"),
                format!("is set but {prefix}.aws_access_key_id is not; set both or neither"),
            ))
        }
        (None, None) if section.aws_session_token.is_some() => {
            return Err(m.err(
                &p("aws_session_token"),
                "is set without aws_access_key_id and aws_secret_access_key",
            ))
        }
        _ => {}
    }
    Ok(section)
}

/// SQS queue names: 1–80 characters of `A-Z a-z 0-9 - _`.
fn check_queue_name(name: &str) -> std::result::Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if name.is_empty() || name.len() > 80 || !ok_chars {
        return Err(format!(
            "invalid queue name '{name}' (1-80 characters of A-Z, a-z, 0-9, - and _)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> LoadInputs {
        LoadInputs {
            config_file: FileInput::Text {
                name: PathBuf::from("config.yml"),
                text: text.to_string(),
            },
            ..LoadInputs::default()
        }
    }

    fn load_err(inputs: &LoadInputs) -> Error {
        Config::load_from(inputs).expect_err("expected a config error")
    }

    fn without_sources(mut c: Config) -> Config {
        c.sources.clear();
        c
    }

    #[test]
    fn nothing_set_gives_the_typed_defaults() {
        let c = Config::load_from(&LoadInputs::default()).unwrap();
        assert_eq!(c, Config::default());
        assert!(c.sources.values().all(|s| *s == Source::Default));
        assert_eq!(c.sources.len(), KEYS.len());
    }

    #[test]
    fn the_shipped_config_yml_lists_every_key_with_its_default() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config.yml");
        let text = std::fs::read_to_string(&path).unwrap();
        let listed: BTreeSet<&str> = parse_yaml(&path, &text)
            .unwrap()
            .into_iter()
            .map(|(spec, _, _)| spec.path)
            .collect();
        let all: BTreeSet<&str> = KEYS.iter().map(|k| k.path).collect();
        assert_eq!(listed, all, "config.yml must list every key once");
        let inputs = LoadInputs {
            config_file: FileInput::Named(path),
            ..LoadInputs::default()
        };
        let c = Config::load_from(&inputs).unwrap();
        assert_eq!(without_sources(c), without_sources(Config::default()));
    }

    #[test]
    fn table_is_consistent() {
        let mut paths = BTreeSet::new();
        let mut vars = BTreeSet::new();
        for k in KEYS {
            assert!(paths.insert(k.path), "duplicate key {}", k.path);
            assert!(!k.env.is_empty(), "{} has no environment name", k.path);
            for v in k.env {
                assert!(vars.insert(*v), "env {v} used twice");
            }
            if let KeyKind::Enum(names) = k.kind {
                assert!(names.contains(&k.default.unwrap()), "{}", k.path);
            }
        }
        // Sections are contiguous, so render() opens each once.
        let mut seen = Vec::new();
        for k in KEYS {
            let section = k.path.rsplit_once('.').unwrap().0;
            if seen.last() != Some(&section) {
                assert!(!seen.contains(&section), "section {section} is split");
                seen.push(section);
            }
        }
    }

    #[test]
    fn file_values_are_typed_and_sourced_with_their_line() {
        let c = Config::load_from(&yaml(
            "aws:\n  copy:\n    region_name: eu-west-1\n    force_path_style: yes\n    connect_timeout: 2m\n\
             migration:\n  batch_num: 100\n  part_size: 8MiB\n  multipart_threshold: 1.5GiB\n\
             sqs:\n  queue_name_pattern: job-{:02}\n  max_message_bytes: 1000000\n  endpoint_url:\n\
             queue:\n  backend: local\n  path: /tmp/q.db\n\
             report:\n  location: s3://r/p/\n  flush_seconds: 1h\n",
        ))
        .unwrap();
        assert_eq!(c.aws.copy.region_name.as_deref(), Some("eu-west-1"));
        assert_eq!(c.aws.copy.force_path_style, Some(true));
        assert_eq!(c.aws.copy.connect_timeout, Duration::from_secs(120));
        assert_eq!(c.migration.batch_num, 100);
        assert_eq!(c.migration.part_size, 8 * MIB);
        assert_eq!(c.migration.multipart_threshold, 3 * GIB / 2);
        assert_eq!(c.queue_name(3), "job-03");
        assert_eq!(c.sqs.max_message_bytes, 1_000_000);
        assert_eq!(c.sqs.endpoint_url, None, "empty value = unset");
        assert_eq!(c.queue, QueueBackend::Local(PathBuf::from("/tmp/q.db")));
        assert_eq!(c.report_location.as_deref(), Some("s3://r/p/"));
        assert_eq!(c.report.flush_seconds, Duration::from_secs(3600));
        assert_eq!(
            c.source("migration.batch_num"),
            Source::File {
                path: PathBuf::from("config.yml"),
                line: 7
            }
        );
        assert_eq!(c.source("sqs.endpoint_url"), Source::Default);
        assert_eq!(c.source("sqs.queue_num"), Source::Default);
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_path_and_a_suggestion() {
        let e = load_err(&yaml("sqs:\n  queue_num: 3\n  queue_nmu: 4\n"));
        assert_eq!(e.kind, crate::ErrorKind::Input);
        assert_eq!(e.subject, "config.yml:3");
        assert_eq!(
            e.message,
            "sqs.queue_nmu: unknown key; did you mean queue_num?"
        );
        let e = load_err(&yaml("migraton:\n  batch_num: 3\n"));
        assert!(
            e.message
                .starts_with("migraton: unknown key; did you mean migration?"),
            "{e}"
        );
        let e = load_err(&yaml("migration:\n  queue_num: 3\n"));
        assert_eq!(
            e.message,
            "migration.queue_num: unknown key; did you mean sqs.queue_num?"
        );
        let e = load_err(&yaml("aws:\n  copy:\n    zzz: 1\n"));
        assert!(
            e.message
                .starts_with("aws.copy.zzz: unknown key (known here: aws_access_key_id"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_name_the_key_and_the_expected_type() {
        let e = load_err(&yaml("sqs:\n  queue_num: [1, 2]\n"));
        assert_eq!(
            e.message,
            "sqs.queue_num: expected an unsigned integer, found a sequence"
        );
        let e = load_err(&yaml("sqs:\n  queue_num: true\n"));
        assert_eq!(
            e.message,
            "sqs.queue_num: expected an unsigned integer, found the boolean true"
        );
        let e = load_err(&yaml("sqs: 5\n"));
        assert_eq!(
            e.message,
            "sqs: expected a mapping (a section), found the integer 5"
        );
        let e = load_err(&yaml("aws:\n  copy:\n    force_path_style: maybe\n"));
        assert!(
            e.message
                .contains("aws.copy.force_path_style: invalid boolean 'maybe'"),
            "{e}"
        );
        let e = load_err(&yaml("migration:\n  batch_num: -3\n"));
        assert_eq!(
            e.message,
            "migration.batch_num: invalid unsigned integer '-3'"
        );
        let e = load_err(&yaml("migration:\n  part_size: 8 apples\n"));
        assert!(
            e.message
                .starts_with("migration.part_size: invalid size '8 apples'"),
            "{e}"
        );
        let e = load_err(&yaml("sqs:\n  visibility_timeout: soon\n"));
        assert!(
            e.message
                .starts_with("sqs.visibility_timeout: invalid duration 'soon'"),
            "{e}"
        );
        let e = load_err(&yaml("queue:\n  backend: kafka\n"));
        assert_eq!(
            e.message,
            "queue.backend: expected one of sqs|local, found 'kafka'"
        );
        let e = load_err(&yaml("- a\n- b\n"));
        assert!(e.message.contains("expected a mapping of sections"), "{e}");
        let e = load_err(&yaml("sqs:\n  queue_num: 1\n  queue_num: 2\n"));
        assert!(e.message.contains("invalid YAML"), "duplicate keys: {e}");
        let e = load_err(&yaml("sqs:\n  queue_num: [1\n"));
        assert!(e.message.contains("invalid YAML"), "{e}");
    }

    #[test]
    fn ranges_and_names_are_validated() {
        for (text, needle) in [
            (
                "migration:\n  batch_num: 0\n",
                "migration.batch_num: 0 is out of range",
            ),
            ("sqs:\n  queue_num: 0\n", "sqs.queue_num: 0 is out of range"),
            (
                "sqs:\n  max_receive_num: 11\n",
                "sqs.max_receive_num: 11 is out of range (1..=10)",
            ),
            (
                "migration:\n  part_size: 1MiB\n",
                "migration.part_size: 1MiB is out of range (5MiB..=5GiB)",
            ),
            (
                "sqs:\n  max_message_bytes: 2MiB\n",
                "sqs.max_message_bytes: 2MiB is out of range (1KiB..=1MiB)",
            ),
            (
                "migration:\n  concurrency: 0\n",
                "migration.concurrency: 0 is out of range",
            ),
            (
                "sqs:\n  visibility_timeout: 13h\n",
                "sqs.visibility_timeout: 46800s is out of range",
            ),
            (
                "sqs:\n  queue_name_pattern: 'q-{:x}'\n",
                "sqs.queue_name_pattern: invalid queue name pattern",
            ),
            (
                "sqs:\n  queue_name_pattern: 'q.{}'\n",
                "sqs.queue_name_pattern: invalid queue name 'q.1'",
            ),
            (
                "sqs:\n  dead_queue_name: 'bad name'\n",
                "sqs.dead_queue_name: invalid queue name",
            ),
            (
                "sqs:\n  dead_queue_name: s3-migration-02\n",
                "is also a work queue name",
            ),
            (
                "aws:\n  copy:\n    endpoint_url: localhost:9000\n",
                "aws.copy.endpoint_url: invalid URL",
            ),
            (
                "aws:\n  copy:\n    aws_access_key_id: AK\n",
                "set both or neither",
            ),
            (
                "migration:\n  log_level: 'info,=['\n",
                "migration.log_level: invalid log level",
            ),
        ] {
            let e = load_err(&yaml(text));
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
            assert!(e.subject.starts_with("config.yml:"), "{e}");
        }
    }

    #[test]
    fn env_values_and_flags_name_their_source_in_errors() {
        let mut inputs = LoadInputs::default();
        inputs.env.insert("QUEUE_NUM".into(), "many".into());
        let e = load_err(&inputs);
        assert_eq!(e.subject, "env QUEUE_NUM");
        assert_eq!(e.message, "sqs.queue_num: invalid unsigned integer 'many'");
        let inputs = LoadInputs {
            flags: vec![FlagValue::new("migration.batch_num", "x", "--batch-num")],
            ..LoadInputs::default()
        };
        let e = load_err(&inputs);
        assert_eq!(e.subject, "--batch-num");
        let inputs = LoadInputs {
            flags: vec![FlagValue::new("migration.nope", "1", "--nope")],
            ..LoadInputs::default()
        };
        assert_eq!(load_err(&inputs).subject, "--nope");
    }

    #[test]
    fn sizes_durations_and_bools_parse() {
        assert_eq!(parse_size("8MB").unwrap(), 8_000_000);
        assert_eq!(parse_size("8mib").unwrap(), 8 * MIB);
        assert_eq!(parse_size("5GiB").unwrap(), 5 * GIB);
        assert_eq!(parse_size("5GB").unwrap(), 5_000_000_000);
        assert_eq!(parse_size("1KiB").unwrap(), 1024);
        assert_eq!(parse_size(" 4096 ").unwrap(), 4096);
        assert_eq!(parse_size("12 b").unwrap(), 12);
        assert_eq!(parse_size("0.5KiB").unwrap(), 512);
        assert_eq!(parse_size("2TiB").unwrap(), 2 * TIB);
        for bad in [
            "",
            "MB",
            "8M",
            "1.2.3MB",
            "0.3B",
            "99999999999999999999",
            "-1",
            "x8MB",
            "20000000TiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(format_size(5 * GIB), "5GiB");
        assert_eq!(format_size(256 * KIB), "256KiB");
        assert_eq!(format_size(1000), "1000");
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5M").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(
            parse_duration("14d").unwrap(),
            Duration::from_secs(1_209_600)
        );
        for bad in ["", "s", "1.5h", "1w", "-1"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for (s, b) in [
            ("true", true),
            ("YES", true),
            ("1", true),
            ("off", false),
            ("No", false),
            ("0", false),
        ] {
            assert_eq!(parse_bool(s).unwrap(), b, "{s}");
        }
        assert!(parse_bool("2").is_err());
    }

    #[test]
    fn queue_patterns_format_like_python() {
        for (pattern, n, want) in [
            ("s3-migration-{:0>2d}", 1, "s3-migration-01"),
            ("s3-migration-{:0>2d}", 12, "s3-migration-12"),
            ("q{:02}", 3, "q03"),
            ("q{:02d}-x", 3, "q03-x"),
            ("q{:03d}", 7, "q007"),
            ("q-{}", 7, "q-7"),
            ("q-{:d}", 17, "q-17"),
            ("{}-q", 2, "2-q"),
        ] {
            let p = QueuePattern::parse(pattern).unwrap();
            assert_eq!(p.format(n), want, "{pattern}");
        }
        for bad in [
            "no-placeholder",
            "q-{:x}",
            "q-{}-{}",
            "q-{",
            "q-}{",
            "q-{:2d}",
            "q-{:0>}",
        ] {
            assert!(QueuePattern::parse(bad).is_err(), "{bad}");
        }
        // Unvalidated patterns still produce a name.
        assert_eq!(QueuePattern("q-{:x}".into()).format(4), "q-4");
        let c = Config::default();
        assert_eq!(c.queue_names().len(), 5);
        assert_eq!(c.queue_names()[4], "s3-migration-05");
    }

    #[test]
    fn unknown_env_names_are_ours_by_prefix_only() {
        let names: Vec<String> = [
            "QUEUE_NUMS",
            "QUEUE_NUM",
            "COPY_REGON_NAME",
            "EXECUTOR_MODEE",
            "S3MIG_TEST_ENDPOINT",
            "AWS_ENDPOINT_URL",
            "PATH",
            "BATCH_NUMS",
        ]
        .map(String::from)
        .to_vec();
        let found = unknown_env_names(&names, &[], &[]);
        assert_eq!(
            found,
            vec![
                ("BATCH_NUMS".to_string(), Some("BATCH_NUM".to_string())),
                (
                    "COPY_REGON_NAME".to_string(),
                    Some("COPY_REGION_NAME".to_string())
                ),
                ("QUEUE_NUMS".to_string(), Some("QUEUE_NUM".to_string())),
            ]
        );
        let found = unknown_env_names(&names, &["EXECUTOR_MODE"], &["EXECUTOR_"]);
        assert!(found.contains(&(
            "EXECUTOR_MODEE".to_string(),
            Some("EXECUTOR_MODE".to_string())
        )));
    }

    #[test]
    fn did_you_mean_uses_edit_distance() {
        assert_eq!(edit_distance("queue_nmu", "queue_num"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn global_flags_map_to_keys() {
        let g = GlobalArgs {
            log_level: Some("debug".into()),
            log_format: Some(LogFormat::Json),
            queue: Some("local:/tmp/x.db".into()),
            ..GlobalArgs::default()
        };
        let inputs = LoadInputs {
            flags: g.flag_values().unwrap(),
            ..LoadInputs::default()
        };
        let c = Config::load_from(&inputs).unwrap();
        assert_eq!(c.migration.log_level, "debug");
        assert_eq!(c.migration.log_format, LogFormat::Json);
        assert_eq!(c.queue, QueueBackend::Local(PathBuf::from("/tmp/x.db")));
        assert_eq!(
            c.source("queue.path"),
            Source::Flag {
                flag: "--queue".into()
            }
        );
        let local = GlobalArgs {
            queue: Some("local".into()),
            ..GlobalArgs::default()
        };
        let c = Config::load_from(&LoadInputs {
            flags: local.flag_values().unwrap(),
            ..LoadInputs::default()
        })
        .unwrap();
        assert_eq!(
            c.queue,
            QueueBackend::Local(PathBuf::from("./s3-migration-queue.db"))
        );
        let bad = GlobalArgs {
            queue: Some("kafka".into()),
            ..GlobalArgs::default()
        };
        assert_eq!(bad.flag_values().unwrap_err().subject, "--queue");
    }

    #[test]
    fn global_flags_are_accepted_before_or_after_a_subcommand() {
        use clap::Parser;
        #[derive(Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            global: GlobalArgs,
            #[command(subcommand)]
            cmd: Cmd,
        }
        #[derive(clap::Subcommand, Debug)]
        enum Cmd {
            Init,
        }
        let a = Cli::try_parse_from([
            "x",
            "-c",
            "a.yml",
            "--log-format",
            "json",
            "init",
            "-e",
            "b.env",
        ])
        .unwrap();
        let b = Cli::try_parse_from([
            "x",
            "init",
            "--config-file",
            "a.yml",
            "--env-file",
            "b.env",
            "--log-format=json",
        ])
        .unwrap();
        for cli in [a, b] {
            assert_eq!(cli.global.config_file, Some(PathBuf::from("a.yml")));
            assert_eq!(cli.global.env_file, Some(PathBuf::from("b.env")));
            assert_eq!(cli.global.log_format, Some(LogFormat::Json));
            assert!(matches!(cli.cmd, Cmd::Init));
        }
    }

    #[test]
    fn render_redacts_secrets_annotates_sources_and_round_trips() {
        let mut inputs = yaml(
            "aws:\n  copy:\n    aws_access_key_id: AKIDFILE\n    aws_secret_access_key: file-secret-1\n\
             sqs:\n  queue_num: 7\n  queue_name_pattern: 'w-{:02}'\n",
        );
        inputs
            .env
            .insert("COPY_AWS_SESSION_TOKEN".into(), "env-token-2".into());
        inputs
            .env
            .insert("MIGRATION_PART_SIZE".into(), "16MiB".into());
        inputs
            .flags
            .push(FlagValue::new("migration.batch_num", "9", "--batch-num"));
        let c = Config::load_from(&inputs).unwrap();
        let text = c.render();
        assert!(
            !text.contains("file-secret-1") && !text.contains("env-token-2"),
            "{text}"
        );
        assert!(!format!("{c:?}").contains("file-secret-1"));
        assert!(!format!("{c:?}").contains("env-token-2"));
        assert!(!format!("{inputs:?}").contains("env-token-2"));
        let line = |key: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(&format!("{key}:")))
                .unwrap_or_else(|| panic!("{key} missing in\n{text}"))
                .to_string()
        };
        assert_eq!(
            text.matches("aws_secret_access_key: \"***\"").count(),
            1,
            "{text}"
        );
        assert_eq!(
            text.matches("aws_session_token: \"***\"").count(),
            1,
            "{text}"
        );
        assert!(line("batch_num").ends_with("# flag --batch-num"), "{text}");
        assert!(line("part_size").contains("16MiB"));
        assert!(line("part_size").ends_with("# env MIGRATION_PART_SIZE"));
        assert!(line("queue_num").ends_with("# file config.yml:6"), "{text}");
        assert!(line("dead_queue_name").ends_with("# default"));
        // Loading the rendered text gives the same configuration (secrets aside).
        let again = Config::load_from(&yaml(&text)).unwrap();
        let mut want = c.clone();
        want.aws.copy.aws_secret_access_key = Some(Secret::new("***"));
        want.aws.copy.aws_session_token = Some(Secret::new("***"));
        assert_eq!(without_sources(again), without_sources(want));
        // And the defaults render back to the defaults.
        let d = Config::load_from(&yaml(&Config::default().render())).unwrap();
        assert_eq!(without_sources(d), without_sources(Config::default()));
    }

    #[test]
    fn dotenv_fills_what_the_environment_does_not_set() {
        let mut inputs = LoadInputs {
            env_file: FileInput::Text {
                name: PathBuf::from("test.env"),
                text: "QUEUE_NUM=7\nBATCH_NUM=50\n# comment\nexport DEAD_QUEUE_NAME=\"dlq\"\n"
                    .into(),
            },
            ..LoadInputs::default()
        };
        inputs.env.insert("QUEUE_NUM".into(), "3".into());
        let c = Config::load_from(&inputs).unwrap();
        assert_eq!(c.sqs.queue_num, 3);
        assert_eq!(
            c.source("sqs.queue_num"),
            Source::Env {
                var: "QUEUE_NUM".into()
            }
        );
        assert_eq!(c.migration.batch_num, 50);
        assert_eq!(c.sqs.dead_queue_name, "dlq");
        assert_eq!(c.source("migration.batch_num").layer(), ".env");
        let bad = LoadInputs {
            env_file: FileInput::Text {
                name: PathBuf::from("bad.env"),
                text: "A=1\nCOPY_AWS_SECRET_ACCESS_KEY='unterminated-secret\n".into(),
            },
            ..LoadInputs::default()
        };
        let e = load_err(&bad);
        assert!(e.subject.starts_with("bad.env:"), "{e}");
        assert!(!e.to_string().contains("unterminated-secret"), "{e}");
    }

    #[test]
    fn missing_files_named_or_default() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.yml");
        let named = LoadInputs {
            config_file: FileInput::Named(missing.clone()),
            ..LoadInputs::default()
        };
        let e = load_err(&named);
        assert_eq!(e.subject, missing.display().to_string());
        assert_eq!(e.message, "config file not found");
        let default = LoadInputs {
            config_file: FileInput::Default(missing.clone()),
            env_file: FileInput::Default(dir.path().join(".env")),
            ..LoadInputs::default()
        };
        assert_eq!(Config::load_from(&default).unwrap(), Config::default());
        let named_env = LoadInputs {
            env_file: FileInput::Named(dir.path().join("x.env")),
            ..LoadInputs::default()
        };
        assert_eq!(load_err(&named_env).message, ".env file not found");
    }

    #[test]
    fn source_section_falls_back_to_copy() {
        let mut aws = AwsConfig::default();
        aws.copy.region_name = Some("a".into());
        assert_eq!(aws.source_section().region_name.as_deref(), Some("a"));
        aws.copy_source.profile_name = Some("other".into());
        assert_eq!(aws.source_section().profile_name.as_deref(), Some("other"));
    }
}
