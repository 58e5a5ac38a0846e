//! Configuration: built-in defaults → `config.yml` → `.env` → environment →
//! command-line flags (later wins), into one validated [`Config`].
//!
//! LOADER: to be written (see `Config::load`). The types below are the contract
//! the rest of the code uses.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

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
        }
    }
}

/// The work-queue naming pattern: Python's `{:0>2d}` as in the seed, `{}` or `{:02}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePattern(pub String);

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            aws: AwsConfig::default(),
            migration: MigrationConfig::default(),
            sqs: SqsConfig::default(),
            queue: QueueBackend::Sqs,
            report_location: None,
        }
    }
}
