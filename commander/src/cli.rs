//! Command-line interface of `commander`: `init`, `run` (alias `commander`,
//! the seed's command) and `config`, plus the global flags of every binary.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use common::config::GlobalArgs;

/// Enumerate an S3 source and send batches of keys to SQS work queues.
#[derive(Parser, Debug, Clone)]
#[command(name = "commander", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Create the work queues and the dead-letter queue (or bring existing ones to the configured attributes)
    Init,
    /// Enumerate a source (ListObjectsV2, S3 Inventory or CSV manifest) and send its keys to the work queues
    #[command(alias = "commander")]
    Run(Box<RunArgs>),
    /// Print the effective configuration (secrets redacted) with where each value came from
    Config,
    /// Queue depths, a job's progress from its reports, throughput and ETA
    Status(crate::ops::status::StatusArgs),
    /// Sum up a job's completion reports; optionally write the failed keys as a CSV manifest
    Report(crate::ops::report::ReportArgs),
    /// List the dead-letter queue grouped by error class, without consuming it
    Dlq(crate::ops::dlq::DlqArgs),
    /// Move dead-letter messages back onto the work queues (all, or one error class)
    Redrive(crate::ops::redrive::RedriveArgs),
    /// Abort multipart uploads on a target older than an age
    Cleanup(crate::ops::cleanup::CleanupArgs),
}

/// Flags of `commander run`.
#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// Source: bucket, s3://bucket/prefix or a local directory (required unless a manifest gives it)
    #[arg(
        short = 's',
        long,
        value_name = "BUCKET|s3://BUCKET/PREFIX|DIR",
        help_heading = "Source"
    )]
    pub source_bucket: Option<String>,
    /// Only keys under this prefix (must agree with a prefix given in -s)
    #[arg(short = 'p', long, value_name = "PREFIX", help_heading = "Source")]
    pub prefix: Option<String>,
    /// S3 Inventory manifest: s3://bucket/…/manifest.json, an s3:// prefix (newest manifest under it), a local file or directory
    #[arg(
        short = 'm',
        long,
        value_name = "PATH",
        help_heading = "Source",
        conflicts_with = "csv_manifest"
    )]
    pub manifest_path: Option<String>,
    /// S3 Batch Operations CSV manifest (bucket,key[,version_id], keys URL-encoded): a local path or s3://bucket/key
    #[arg(long, value_name = "PATH|s3://BUCKET/KEY", help_heading = "Source")]
    pub csv_manifest: Option<String>,
    /// Only keys strictly after this one (the resume point a failed run prints)
    #[arg(long, value_name = "KEY", help_heading = "Source")]
    pub start_after: Option<String>,
    /// Inventories and CSV manifests: start at this row, FILE:LINE (data file number
    /// in manifest order and line, both from 1), the resume point a failed run prints
    #[arg(long, value_name = "FILE:LINE", help_heading = "Source")]
    pub resume_from: Option<String>,

    /// Target: bucket, s3://bucket/prefix or a local directory
    #[arg(
        short = 't',
        long,
        required_unless_present = "repair",
        value_name = "BUCKET|s3://BUCKET/PREFIX|DIR",
        help_heading = "Target"
    )]
    pub target_bucket: Option<String>,
    /// Replace the source prefix (-p) by this one in target keys (same as a prefix in -t)
    #[arg(long, value_name = "PREFIX", help_heading = "Target")]
    pub target_prefix: Option<String>,

    /// Keep keys matching this glob (full key; `*` also matches `/`); repeatable
    #[arg(long, value_name = "GLOB", help_heading = "Filters")]
    pub include: Vec<String>,
    /// Drop keys matching this glob; repeatable
    #[arg(long, value_name = "GLOB", help_heading = "Filters")]
    pub exclude: Vec<String>,
    /// Keep objects of at least this size (bytes, or with K/M/G/T, 1024-based)
    #[arg(long, value_name = "SIZE", help_heading = "Filters")]
    pub min_size: Option<String>,
    /// Keep objects of at most this size
    #[arg(long, value_name = "SIZE", help_heading = "Filters")]
    pub max_size: Option<String>,
    /// Keep objects last modified at or after this time (RFC 3339 or YYYY-MM-DD, UTC)
    #[arg(long, value_name = "TIME", help_heading = "Filters")]
    pub modified_since: Option<String>,
    /// Keep objects last modified before this time
    #[arg(long, value_name = "TIME", help_heading = "Filters")]
    pub not_modified_since: Option<String>,
    /// Keep objects whose owner id or display name is this (ListObjectsV2 only)
    #[arg(
        long,
        value_name = "OWNER",
        help_heading = "Filters",
        conflicts_with = "no_owner"
    )]
    pub owner: Option<String>,
    /// Keep objects whose owner is not this (ListObjectsV2 only)
    #[arg(long, value_name = "OWNER", help_heading = "Filters")]
    pub no_owner: Option<String>,

    /// Keys per message (migration.batch_num); a message also closes before sqs.max_message_bytes
    #[arg(short = 'b', long, value_name = "N", help_heading = "Batching")]
    pub batch_num: Option<usize>,
    /// Job id carried in every message [default: generated and printed]
    #[arg(long, value_name = "ID", help_heading = "Batching")]
    pub job_id: Option<String>,
    /// Attach this run to job JOB, whose keys it re-sends (e.g. its failures manifest): messages carry JOB's id, so `status`/`report` of JOB count the new outcomes; -t, -p and --target-prefix default to JOB's
    #[arg(
        long,
        value_name = "JOB",
        help_heading = "Batching",
        conflicts_with = "job_id"
    )]
    pub repair: Option<String>,
    /// Count objects, bytes and messages; send nothing
    #[arg(long, help_heading = "Batching")]
    pub dry_run: bool,

    /// Catch-up run: list the target beside the source and send only keys that are new or changed (see docs/sync.md)
    #[arg(
        long,
        visible_alias = "skip-unchanged",
        help_heading = "Sync",
        conflicts_with_all = ["csv_manifest", "repair", "resume_from"]
    )]
    pub sync: bool,
    /// With --sync: read the target's S3 Inventory instead of listing the target (same forms as -m; needed with -m)
    #[arg(long, value_name = "PATH", requires = "sync", help_heading = "Sync")]
    pub target_manifest_path: Option<String>,
    /// What shows a key unchanged [default: auto: size, then ETag; what the listings cannot decide goes to executors to compare]
    #[arg(
        long,
        value_name = "HOW",
        value_enum,
        requires = "sync",
        help_heading = "Sync"
    )]
    pub compare: Option<common::listing::diff::Compare>,
    /// Also send keys whose target differs and was modified after the source (default: report them as target-newer, leave them)
    #[arg(long, requires = "sync", help_heading = "Sync")]
    pub overwrite_newer: bool,
    /// Also delete target keys the source does not have (under the target prefix, admitted by the filters), conditionally, after the whole diff is done
    #[arg(
        long,
        requires = "sync",
        help_heading = "Sync",
        conflicts_with_all = ["owner", "no_owner", "modified_since", "not_modified_since"]
    )]
    pub delete: bool,
    /// With --delete: stop before sending any delete if more than N would be deleted
    #[arg(long, value_name = "N", requires = "delete", help_heading = "Sync")]
    pub max_delete: Option<u64>,

    /// ListObjectsV2 requests in flight
    #[arg(long, value_name = "N", default_value_t = 16, help_heading = "Tuning")]
    pub list_concurrency: usize,
    /// Levels listed with delimiter `/` before listing flat (0: flat from the start)
    #[arg(long, value_name = "N", default_value_t = 3, help_heading = "Tuning")]
    pub list_depth: u32,
    /// SendMessageBatch calls in flight
    #[arg(long, value_name = "N", default_value_t = 8, help_heading = "Tuning")]
    pub send_concurrency: usize,
    /// MaxKeys per ListObjectsV2 request (testing: small pages force range splits)
    #[arg(long, value_name = "N", hide = true)]
    pub list_page_size: Option<i32>,
    /// Pages a flat range reads before it splits
    #[arg(long, value_name = "N", default_value_t = 2, hide = true)]
    pub split_after_pages: u32,
    /// Pieces per range split
    #[arg(long, value_name = "N", default_value_t = 16, hide = true)]
    pub split_fanout: usize,
    /// Accepted for compatibility with the Python tool; unused by the commander
    #[arg(long, value_name = "DIR", hide = true)]
    pub tmp_dir: Option<PathBuf>,

    /// Print the final summary as JSON (stdout) instead of text
    #[arg(long, help_heading = "Output")]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("commander").chain(args.iter().copied()))
    }

    #[test]
    fn seed_flags_parse() {
        let cli = parse(&[
            "-c", "cfg.yml", "run", "-s", "src", "-t", "dst", "-p", "a/", "-b", "100", "--owner",
            "me",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("run expected")
        };
        assert_eq!(r.source_bucket.as_deref(), Some("src"));
        assert_eq!(r.target_bucket.as_deref(), Some("dst"));
        assert_eq!(r.prefix.as_deref(), Some("a/"));
        assert_eq!(r.batch_num, Some(100));
        assert_eq!(r.owner.as_deref(), Some("me"));
        assert_eq!(cli.global.config_file, Some(PathBuf::from("cfg.yml")));
        // The seed's command name still works.
        assert!(matches!(
            parse(&["commander", "-m", "s3://i/m/", "-t", "d"])
                .unwrap()
                .command,
            Command::Run(_)
        ));
        let cli = parse(&[
            "run",
            "-t",
            "d",
            "-s",
            "s",
            "--include",
            "*.a",
            "--include",
            "*.b",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!()
        };
        assert_eq!(r.include, ["*.a", "*.b"]);
    }

    #[test]
    fn bad_combinations_are_usage_errors_naming_the_flags() {
        for (flag, value) in [("--owner", "a"), ("--modified-since", "2024-01-01")] {
            let e = parse(&[
                "run", "-s", "s", "-t", "d", "--sync", "--delete", flag, value,
            ])
            .unwrap_err();
            assert!(e.to_string().contains("--delete"), "{flag}: {e}");
        }
        let e = parse(&["run", "-s", "s", "-t", "d", "--delete"]).unwrap_err();
        assert!(e.to_string().contains("--sync"), "{e}");
        let e = parse(&["run", "-s", "src"]).unwrap_err();
        assert!(e.to_string().contains("--target-bucket"), "{e}");
        let e = parse(&["run", "-t", "d", "-m", "m.json", "--csv-manifest", "x.csv"]).unwrap_err();
        assert!(e.to_string().contains("--csv-manifest"), "{e}");
        let e = parse(&[
            "run",
            "-t",
            "d",
            "-s",
            "s",
            "--owner",
            "a",
            "--no-owner",
            "b",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("--no-owner"), "{e}");
    }
}
