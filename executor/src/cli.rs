//! Command-line flags of the executor: the seed's flags (`--mode`, `-n`, `-d`, `-v`,
//! `--sleep-sec`, `--modified-since`, …) plus concurrency, sizes, `--until-empty`,
//! storage class, ACL and the shutdown grace period. Flags that are also config
//! keys are handed to `Config::load` so precedence stays default < file < env < flag.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Parser;
use common::config::GlobalArgs;
use common::transfer::Mode;
use common::window::{parse_instant, DateWindow};

/// The time parser of `--modified-since` / `--not-modified-since`: the one of
/// `common::window`, shared with the commander.
pub use common::window::parse_instant as parse_time;

/// `executor`: receive batches of keys from the work queues and copy, download-upload
/// or check each key; failed keys are parked in the dead-letter queue.
#[derive(Debug, Clone, Parser)]
#[command(name = "executor", version, about, long_about = None)]
pub struct Cli {
    /// Global flags shared with `commander` (-c, -e, --log-level, --log-format, --queue, --print-config).
    #[command(flatten)]
    pub global: GlobalArgs,

    /// What to do with each key: `copy` (server-side CopyObject / UploadPartCopy),
    /// `downup` (stream download then upload) or `check` (compare; mismatches go to the DLQ).
    #[arg(
        long,
        value_enum,
        default_value = "copy",
        env = "EXECUTOR_MODE",
        help_heading = "Work"
    )]
    pub mode: Mode,

    /// Receive only from work queue N (1-based); `-1` receives from no work queue
    /// (use with `-d` to drain only the dead-letter queue). Default: all work queues, fairly.
    #[arg(
        short = 'n',
        long,
        allow_negative_numbers = true,
        env = "EXECUTOR_QUEUE_NUM",
        help_heading = "Queues"
    )]
    pub queue_num: Option<i64>,

    /// Also receive from the dead-letter queue (retry parked keys).
    #[arg(
        short = 'd',
        long,
        env = "EXECUTOR_INCLUDING_DEAD",
        help_heading = "Queues"
    )]
    pub including_dead: bool,

    /// copy/downup: check the target first; identical → skip, only tags differ → update tags only.
    #[arg(short = 'v', long, env = "EXECUTOR_VERIFY", help_heading = "Work")]
    pub verify: bool,

    /// check (and --verify): when ETags are not comparable, compare the content byte by byte.
    #[arg(long, env = "EXECUTOR_DEEP", help_heading = "Work")]
    pub deep: bool,

    /// The checksum a target gets when its source has none (a source's own is always
    /// carried): crc64nvme, crc32c, crc32, sha256, sha1, or none.
    #[arg(long, value_name = "ALGORITHM", default_value = "crc64nvme", value_parser = parse_checksum, env = "EXECUTOR_CHECKSUM_ALGORITHM", help_heading = "Work")]
    pub checksum_algorithm: ChecksumChoice,

    /// copy/downup: never replace an existing target (outcome `target-exists`); writes are
    /// conditional (`If-None-Match: *`), so a target written meanwhile is not replaced either.
    #[arg(long, env = "EXECUTOR_NO_OVERWRITE", help_heading = "Work")]
    pub no_overwrite: bool,

    /// Seconds a receiver pauses after a receive call that returned nothing (long polling already waits).
    #[arg(long, default_value_t = 0.0, value_parser = parse_seconds, env = "EXECUTOR_SLEEP_SEC", help_heading = "Queues")]
    pub sleep_sec: f64,

    /// Only work objects last modified at or after this time (RFC 3339, YYYY-MM-DD HH:MM:SS or YYYY-MM-DD, UTC); others are `skipped-filtered`.
    #[arg(long, value_parser = parse_instant, env = "EXECUTOR_MODIFIED_SINCE", help_heading = "Work")]
    pub modified_since: Option<DateTime<Utc>>,

    /// Only work objects last modified before this time (same forms; the commander's window rule).
    #[arg(long, value_parser = parse_instant, env = "EXECUTOR_NOT_MODIFIED_SINCE", help_heading = "Work")]
    pub not_modified_since: Option<DateTime<Utc>>,

    /// Sources a message may name, comma-separated: `s3://*`, `s3://bucket`, `file://*`,
    /// `file:///dir` (config `migration.allowed_sources`). Others are parked as BadMessage.
    #[arg(long, value_name = "LIST", help_heading = "Queues")]
    pub allowed_sources: Option<String>,

    /// Targets a message may name, same forms (config `migration.allowed_targets`).
    #[arg(long, value_name = "LIST", help_heading = "Queues")]
    pub allowed_targets: Option<String>,

    /// Temporary directory (config `migration.tmp_dir`); no mode needs disk today.
    #[arg(long, help_heading = "Work")]
    pub tmp_dir: Option<String>,

    /// Work-queue name pattern (config `sqs.queue_name_pattern`), e.g. `s3-migration-{:0>2d}`.
    #[arg(long, help_heading = "Queues")]
    pub queue_name_pattern: Option<String>,

    /// Dead-letter queue name (config `sqs.dead_queue_name`).
    #[arg(long, help_heading = "Queues")]
    pub dead_queue_name: Option<String>,

    /// Messages per receive call, 1–10 (config `sqs.max_receive_num`).
    #[arg(long, help_heading = "Queues")]
    pub max_receive_num: Option<String>,

    /// Objects in flight in this process (config `migration.concurrency`).
    #[arg(long, help_heading = "Performance")]
    pub concurrency: Option<String>,

    /// Part size for multipart copies and uploads, e.g. `64MiB` (config `migration.part_size`).
    #[arg(long, help_heading = "Performance")]
    pub part_size: Option<String>,

    /// Objects at least this large are copied in parts, e.g. `5GiB` (config `migration.multipart_threshold`).
    #[arg(long, help_heading = "Performance")]
    pub multipart_threshold: Option<String>,

    /// Parts of ONE object in flight. Default: 8 in copy mode (server-side, no memory),
    /// 4 in downup/check (part buffers of all objects share one concurrency × part size budget).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64), env = "EXECUTOR_PART_CONCURRENCY", help_heading = "Performance")]
    pub part_concurrency: Option<u32>,

    /// `emf`: print CloudWatch Embedded Metric Format lines (namespace S3Migration: Objects,
    /// Bytes, Failures by ErrorClass, ObjectLatencyMs; dimension Mode) on stdout every 10 s.
    #[arg(
        long,
        value_enum,
        default_value = "none",
        env = "EXECUTOR_METRICS",
        help_heading = "Lifecycle"
    )]
    pub metrics: Metrics,

    /// Exit 0 once the queues hold no visible and no in-flight message and this process is idle.
    #[arg(long, env = "EXECUTOR_UNTIL_EMPTY", help_heading = "Lifecycle")]
    pub until_empty: bool,

    /// Stop after this many keys in a row fail on one endpoint the same way (missing bucket, denied, unreachable); 0: never.
    #[arg(
        long,
        default_value_t = 25,
        env = "EXECUTOR_CIRCUIT_BREAKER",
        help_heading = "Lifecycle"
    )]
    pub circuit_breaker: usize,

    /// Seconds in-flight keys get to finish after SIGTERM/SIGINT before their messages are returned.
    #[arg(long, default_value_t = 25.0, value_parser = parse_seconds, env = "EXECUTOR_GRACE_PERIOD", help_heading = "Lifecycle")]
    pub grace_period: f64,

    /// Storage class of written objects (e.g. STANDARD_IA); default: the store's default.
    #[arg(long, env = "EXECUTOR_STORAGE_CLASS", help_heading = "Target")]
    pub storage_class: Option<String>,

    /// Canned ACL of written objects; `none` sends no ACL (buckets with ACLs disabled).
    #[arg(
        long,
        default_value = "bucket-owner-full-control",
        env = "EXECUTOR_ACL",
        help_heading = "Target"
    )]
    pub acl: String,
}

impl Cli {
    /// The environment variables the executor's flags read (`EXECUTOR_MODE`, …):
    /// known names for [`common::config::warn_unknown_env`].
    pub fn env_names() -> Vec<String> {
        <Cli as clap::CommandFactory>::command()
            .get_arguments()
            .filter_map(|a| a.get_env()?.to_str().map(str::to_string))
            .collect()
    }

    /// Flags that are config keys, as `(key path, value, flag name)` for `Config::load`.
    pub fn config_flags(&self) -> Vec<(&'static str, Option<String>, &'static str)> {
        vec![
            (
                "sqs.queue_name_pattern",
                self.queue_name_pattern.clone(),
                "--queue-name-pattern",
            ),
            (
                "sqs.dead_queue_name",
                self.dead_queue_name.clone(),
                "--dead-queue-name",
            ),
            (
                "sqs.max_receive_num",
                self.max_receive_num.clone(),
                "--max-receive-num",
            ),
            (
                "migration.concurrency",
                self.concurrency.clone(),
                "--concurrency",
            ),
            ("migration.part_size", self.part_size.clone(), "--part-size"),
            (
                "migration.multipart_threshold",
                self.multipart_threshold.clone(),
                "--multipart-threshold",
            ),
            ("migration.tmp_dir", self.tmp_dir.clone(), "--tmp-dir"),
            (
                "migration.allowed_sources",
                self.allowed_sources.clone(),
                "--allowed-sources",
            ),
            (
                "migration.allowed_targets",
                self.allowed_targets.clone(),
                "--allowed-targets",
            ),
        ]
    }

    /// The ACL to send: `None` for `none` (or an empty value).
    pub fn acl(&self) -> Option<String> {
        let acl = self.acl.trim();
        if acl.is_empty() || acl.eq_ignore_ascii_case("none") {
            None
        } else {
            Some(acl.to_string())
        }
    }

    /// Parts of one object in flight (see `--part-concurrency`).
    pub fn part_concurrency(&self) -> usize {
        match (self.part_concurrency, self.mode) {
            (Some(n), _) => n as usize,
            (None, Mode::Copy) => 8,
            (None, _) => 4,
        }
    }

    /// Shutdown grace period.
    pub fn grace(&self) -> Duration {
        Duration::from_secs_f64(self.grace_period)
    }

    /// The date window of `--modified-since` / `--not-modified-since`
    /// (the one rule of both binaries: since inclusive, until exclusive).
    pub fn window(&self) -> common::Result<DateWindow> {
        DateWindow::new(self.modified_since, self.not_modified_since)
    }

    /// Pause after an empty receive call.
    pub fn sleep(&self) -> Duration {
        Duration::from_secs_f64(self.sleep_sec)
    }
}

/// Parse a non-negative number of seconds (fractions allowed).
/// `--checksum-algorithm`: an algorithm, or `none` (ask for no checksum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChecksumChoice(pub Option<common::checksum::Algorithm>);

pub fn parse_checksum(s: &str) -> Result<ChecksumChoice, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(ChecksumChoice(None));
    }
    common::checksum::Algorithm::parse(s)
        .map(|a| ChecksumChoice(Some(a)))
        .ok_or_else(|| format!("`{s}` is not one of crc64nvme, crc32c, crc32, sha256, sha1, none"))
}

pub fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "`{s}` is not a number of seconds between 0 and 86400"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind as ClapKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let mut all = vec!["executor"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all)
    }

    #[test]
    fn defaults_match_the_seed() {
        let cli = parse(&[]).unwrap();
        assert_eq!(cli.mode, Mode::Copy);
        assert_eq!(cli.queue_num, None);
        assert!(!cli.including_dead && !cli.verify && !cli.until_empty);
        assert_eq!(cli.acl().as_deref(), Some("bucket-owner-full-control"));
        assert_eq!(cli.grace(), Duration::from_secs(25));
        assert_eq!(cli.sleep(), Duration::ZERO);
        assert_eq!(cli.part_concurrency(), 8);
        assert!(cli.config_flags().iter().all(|(_, v, _)| v.is_none()));
    }

    #[test]
    fn seed_flags_parse() {
        let cli = parse(&[
            "--mode",
            "downup",
            "-n",
            "-1",
            "-d",
            "-v",
            "--sleep-sec",
            "2.5",
            "--modified-since",
            "2024-05-01",
            "--not-modified-since",
            "2024-06-01T10:00:00+02:00",
            "--queue-name-pattern",
            "q-{}",
            "--dead-queue-name",
            "dead",
            "--max-receive-num",
            "5",
            "--acl",
            "none",
            "--concurrency",
            "7",
            "--multipart-threshold",
            "8MiB",
        ])
        .unwrap();
        assert_eq!(cli.mode, Mode::Downup);
        assert_eq!(cli.queue_num, Some(-1));
        assert!(cli.including_dead && cli.verify);
        assert_eq!(cli.sleep(), Duration::from_millis(2500));
        assert_eq!(
            cli.modified_since.unwrap().to_rfc3339(),
            "2024-05-01T00:00:00+00:00"
        );
        assert_eq!(
            cli.not_modified_since.unwrap().to_rfc3339(),
            "2024-06-01T08:00:00+00:00"
        );
        assert_eq!(cli.acl(), None);
        assert_eq!(cli.part_concurrency(), 4);
        let flags = cli.config_flags();
        let get = |k: &str| flags.iter().find(|(p, _, _)| *p == k).unwrap().1.clone();
        assert_eq!(get("sqs.queue_name_pattern").as_deref(), Some("q-{}"));
        assert_eq!(get("sqs.dead_queue_name").as_deref(), Some("dead"));
        assert_eq!(get("sqs.max_receive_num").as_deref(), Some("5"));
        assert_eq!(get("migration.concurrency").as_deref(), Some("7"));
        assert_eq!(
            get("migration.multipart_threshold").as_deref(),
            Some("8MiB")
        );
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (args, flag) in [
            (vec!["--modified-since", "yesterday"], "--modified-since"),
            (
                vec!["--not-modified-since", "2024-13-01"],
                "--not-modified-since",
            ),
            (vec!["--mode", "move"], "--mode"),
            (vec!["--sleep-sec=-1"], "--sleep-sec"),
            (vec!["--grace-period", "abc"], "--grace-period"),
            (vec!["-n", "x"], "--queue-num"),
            (vec!["--part-concurrency", "0"], "--part-concurrency"),
        ] {
            let e = parse(&args).unwrap_err();
            assert!(
                matches!(e.kind(), ClapKind::ValueValidation | ClapKind::InvalidValue),
                "{args:?}: {e}"
            );
            assert!(e.to_string().contains(flag), "{args:?}: {e}");
        }
    }
}

/// Metrics output of the executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Metrics {
    /// Only the periodic throughput log line.
    #[default]
    None,
    /// Also CloudWatch Embedded Metric Format lines on stdout.
    Emf,
}
