//! `commander cleanup`: abort multipart uploads left behind on a target
//! (executors that were killed mid-copy leave them, and S3 bills their parts)
//! that started more than `--older-than` ago, under the target's prefix. On a
//! directory target it removes our leftover temporary and part files instead.
//! Pick an age well above the longest copy: an upload still in progress is
//! indistinguishable from a stale one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use clap::Args;
use common::clients::S3Connector;
use common::config::Config;
use common::location::Location;
use common::store::dir::is_internal_name;
use common::store::open::open_store;
use common::store::ObjectStore;
use futures::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{human_duration, parse_duration_flag};
use crate::summary::thousands;

/// Aborts in flight at once.
const ABORT_CONCURRENCY: usize = 8;

/// Flags of `commander cleanup`.
#[derive(Args, Debug, Clone)]
pub struct CleanupArgs {
    /// Target to clean: bucket, s3://bucket/prefix (only uploads under the prefix) or a directory
    #[arg(
        short = 't',
        long = "target-bucket",
        value_name = "BUCKET|s3://BUCKET/PREFIX|DIR"
    )]
    pub target: String,
    /// Only uploads started longer ago than this (e.g. 24h, 7d; a number alone is seconds)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_flag)]
    pub older_than: Duration,
    /// List what would be aborted; abort nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the outcome as one JSON object
    #[arg(long)]
    pub json: bool,
}

/// One stale upload (or, on a directory, one leftover file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stale {
    pub key: String,
    /// Upload id (empty for a directory's leftover file).
    pub upload_id: String,
    pub initiated: DateTime<Utc>,
    /// Aborted (removed); `false` on a dry run or when it failed.
    pub aborted: bool,
    pub error: Option<String>,
}

/// What `cleanup --json` prints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CleanupReport {
    pub target: String,
    pub dry_run: bool,
    pub older_than_seconds: u64,
    /// Uploads (leftover files) found under the target.
    pub found: u64,
    /// Found but too young, or without a start time.
    pub kept: u64,
    pub stale: Vec<Stale>,
    pub aborted: u64,
    pub failed: u64,
    /// Ctrl-C stopped it before every stale upload was handled.
    pub interrupted: bool,
}

/// Whether an upload started at `initiated` is older than `age` at `now`
/// (an unknown start time is never stale).
pub fn is_stale(initiated: Option<DateTime<Utc>>, now: DateTime<Utc>, age: Duration) -> bool {
    let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
    initiated.is_some_and(|t| now.signed_duration_since(t) >= age)
}

/// Abort `target`'s multipart uploads under its prefix older than `age`.
pub async fn cleanup_s3(
    store: &dyn ObjectStore,
    prefix: &str,
    age: Duration,
    dry_run: bool,
    shutdown: &CancellationToken,
) -> common::Result<CleanupReport> {
    let now = Utc::now();
    let uploads = store.list_uploads(prefix).await?;
    let mut report = CleanupReport {
        found: uploads.len() as u64,
        ..Default::default()
    };
    let mut stale = Vec::new();
    for common::store::Upload {
        key,
        upload_id,
        initiated,
    } in uploads
    {
        match initiated {
            Some(t) if is_stale(Some(t), now, age) => stale.push(Stale {
                key,
                upload_id,
                initiated: t,
                aborted: false,
                error: None,
            }),
            _ => report.kept += 1,
        }
    }
    if !dry_run {
        let results: Vec<(usize, common::Result<()>)> =
            futures::stream::iter(stale.iter().enumerate())
                .map(|(i, s)| async move {
                    if shutdown.is_cancelled() {
                        return (
                            i,
                            Err(common::Error::new(
                                common::ErrorKind::Permanent,
                                "Interrupted",
                                &s.key,
                                "interrupted",
                            )),
                        );
                    }
                    (i, store.abort_multipart(&s.key, &s.upload_id).await)
                })
                .buffer_unordered(ABORT_CONCURRENCY)
                .collect()
                .await;
        for (i, r) in results {
            match r {
                Ok(()) => stale[i].aborted = true,
                Err(e) if e.class == "Interrupted" => report.interrupted = true,
                Err(e) => {
                    tracing::warn!(key = %stale[i].key, upload_id = %stale[i].upload_id, error = %e, "abort failed");
                    stale[i].error = Some(e.to_string());
                }
            }
        }
    }
    report.aborted = stale.iter().filter(|s| s.aborted).count() as u64;
    report.failed = stale.iter().filter(|s| s.error.is_some()).count() as u64;
    report.stale = stale;
    Ok(report)
}

/// Remove a directory target's leftover temporary and part files older than `age`.
pub fn cleanup_dir(root: &Path, age: Duration, dry_run: bool) -> std::io::Result<CleanupReport> {
    let now = Utc::now();
    let mut report = CleanupReport::default();
    let mut dirs: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(entry.path());
                continue;
            }
            let name = entry.file_name();
            if !kind.is_file() || !is_internal_name(&name.to_string_lossy()) {
                continue;
            }
            report.found += 1;
            let modified: DateTime<Utc> = entry
                .metadata()?
                .modified()
                .unwrap_or(SystemTime::now())
                .into();
            if !is_stale(Some(modified), now, age) {
                report.kept += 1;
                continue;
            }
            let path = entry.path();
            let key = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let mut s = Stale {
                key,
                upload_id: String::new(),
                initiated: modified,
                aborted: false,
                error: None,
            };
            if !dry_run {
                match std::fs::remove_file(&path) {
                    Ok(()) => s.aborted = true,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => s.aborted = true,
                    Err(e) => s.error = Some(format!("{}: {e}", path.display())),
                }
            }
            report.stale.push(s);
        }
    }
    report.stale.sort_by(|a, b| a.key.cmp(&b.key));
    report.aborted = report.stale.iter().filter(|s| s.aborted).count() as u64;
    report.failed = report.stale.iter().filter(|s| s.error.is_some()).count() as u64;
    Ok(report)
}

/// The human rendering (several lines, ending with a newline).
pub fn render_text(r: &CleanupReport) -> String {
    let mut o = String::new();
    let now = Utc::now();
    for s in &r.stale {
        let verb = match (&s.error, s.aborted, r.dry_run) {
            (Some(_), _, _) => "FAILED",
            (None, true, _) => "aborted",
            (None, false, true) => "would abort",
            (None, false, false) => "skipped",
        };
        let age = human_duration(now.signed_duration_since(s.initiated).num_seconds() as f64);
        let id = if s.upload_id.is_empty() {
            String::new()
        } else {
            format!(" (upload {})", s.upload_id)
        };
        o.push_str(&format!("{verb:<12} {}{id}, started {age} ago\n", s.key));
        if let Some(e) = &s.error {
            o.push_str(&format!("             {e}\n"));
        }
    }
    o.push_str(&format!(
        "{}: {} found, {} older than {}, {} {}, {} kept{}\n",
        r.target,
        thousands(r.found),
        thousands(r.stale.len() as u64),
        human_duration(r.older_than_seconds as f64),
        thousands(if r.dry_run {
            r.stale.len() as u64
        } else {
            r.aborted
        }),
        if r.dry_run {
            "would be aborted"
        } else {
            "aborted"
        },
        thousands(r.kept),
        if r.interrupted { " (interrupted)" } else { "" }
    ));
    o
}

/// `commander cleanup`.
pub async fn run(
    cfg: &Config,
    args: &CleanupArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let target = Location::parse(&args.target, "--target-bucket")?;
    let mut report = match &target {
        Location::S3 { prefix, .. } => {
            let s3 = S3Connector::new(&cfg.aws.copy);
            let store = open_store(&target.container(), &s3, false).await?;
            tracing::info!(target = %store.describe(), prefix, "listing multipart uploads");
            cleanup_s3(
                store.as_ref(),
                prefix,
                args.older_than,
                args.dry_run,
                &shutdown,
            )
            .await?
        }
        Location::Dir { root } => {
            let (root, age, dry_run) = (root.clone(), args.older_than, args.dry_run);
            tokio::task::spawn_blocking(move || cleanup_dir(&root, age, dry_run))
                .await?
                .map_err(|e| anyhow::anyhow!("--target-bucket {}: {e}", args.target))?
        }
    };
    report.target = target.to_string();
    report.dry_run = args.dry_run;
    report.older_than_seconds = args.older_than.as_secs();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_text(&report));
    }
    if report.failed > 0 {
        eprintln!(
            "error: {} uploads could not be aborted",
            thousands(report.failed)
        );
        return Ok(common::exit::Exit::Failures.to_exit_code());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_means_at_least_the_age_and_a_known_start() {
        let now = Utc::now();
        let day = Duration::from_secs(86_400);
        assert!(is_stale(Some(now - chrono::Duration::hours(25)), now, day));
        assert!(!is_stale(Some(now - chrono::Duration::hours(23)), now, day));
        assert!(!is_stale(None, now, Duration::ZERO));
        assert!(is_stale(Some(now), now, Duration::ZERO));
    }

    #[test]
    fn directory_leftovers_older_than_the_age_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let sub = tmp.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        let old = sub.join(".x.bin.s3mig-part-u1-1");
        let young = tmp.path().join(".y.s3mig-part-u2-1");
        let data = sub.join("x.bin");
        for p in [&old, &young, &data] {
            std::fs::write(p, b"x").unwrap();
        }
        let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86_400);
        for p in [&old, &data] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(two_days_ago)
                .unwrap();
        }
        let day = Duration::from_secs(86_400);
        let dry = cleanup_dir(tmp.path(), day, true).unwrap();
        assert_eq!((dry.found, dry.stale.len(), dry.kept), (2, 1, 1));
        assert!(old.exists());
        let done = cleanup_dir(tmp.path(), day, false).unwrap();
        assert_eq!(done.aborted, 1);
        assert_eq!(done.stale[0].key, "a/b/.x.bin.s3mig-part-u1-1");
        assert!(!old.exists() && young.exists() && data.exists());
    }
}
