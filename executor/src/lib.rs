//! The executor: receives batches of keys from the work queues (and, with `-d`, the
//! dead-letter queue) and copies, download-uploads or checks each key, parking failed
//! keys in the DLQ. [`run`] is handed its flags and its shutdown signal, so tests (and
//! `main`) decide when it stops; the loop itself is in [`worker`].

pub mod cli;
pub mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use common::clients::S3Connector;
use common::config::Config;
use common::exit::Exit;
use common::location::{EndpointPolicy, Location};
use common::message::{Batch, KeyItem};
use common::queue::set::{open_service, QueueSet};
use common::report::{ReportLocation, Reporter};
use common::store::open::open_store;
use common::store::ObjectStore;
use common::transfer::{self, BufferPool, Ends, Mode, TransferOptions};
use tokio_util::sync::CancellationToken;

pub use cli::Cli;
pub use worker::{KeyWorker, RunStats, Settings, StopReason};

/// Interval of the `--until-empty` emptiness checks (two in a row end the run).
pub const EMPTY_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Interval of the throughput log line.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// Longest receive wait with `--until-empty`: polls always finish, so this bounds the exit delay.
pub const UNTIL_EMPTY_WAIT: Duration = Duration::from_secs(2);

/// Run the executor until `shutdown` is cancelled (SIGTERM/SIGINT in `main`) or, with
/// `--until-empty`, until its queues are empty. Errors only on bad flags/config or
/// queues that cannot be opened; per-key failures go to the DLQ, never here.
pub async fn run(cli: Cli, shutdown: CancellationToken) -> anyhow::Result<RunStats> {
    let cfg = Config::load(&cli.global, &cli.config_flags())?;
    if cli.global.print_config {
        println!("{}", cfg.render());
        return Ok(RunStats::default());
    }
    common::logging::init(
        &cfg.migration.log_level,
        cfg.migration.log_format,
        cfg.migration.log_file.as_deref(),
    )?;
    check_flags(&cli)?;

    let service = open_service(&cfg)
        .await
        .context("opening the queue service")?;
    let queues = QueueSet::open(&*service, &cfg).await?;
    let order = queues.receive_order(cli.queue_num, cli.including_dead)?;
    if order.is_empty() {
        return Err(common::Error::input(
            "--queue-num",
            "no queue to receive from: `--queue-num -1` needs `-d/--including-dead`",
        )
        .into());
    }

    let worker = TransferWorker::new(&cfg, &cli).await;
    let executor_id = executor_id();
    let (reporter, reporter_task) = match &cfg.report_location {
        Some(loc) => {
            let location = Location::parse(loc, "report.location")?;
            let s3 = S3Connector::new(&cfg.aws.copy);
            let store = open_store(&location.container(), &s3, true).await?;
            let (r, t) = Reporter::start(
                ReportLocation::new(store, location.prefix()),
                executor_id.clone(),
                cfg.report.flush_rows,
                cfg.report.flush_seconds,
            );
            (Some(r), Some(t))
        }
        None => (None, None),
    };

    let settings = Settings {
        concurrency: cfg.migration.concurrency,
        max_receive_num: cfg.sqs.max_receive_num,
        receivers: 0,
        // Long polls are always allowed to finish (a poll abandoned mid-flight can
        // swallow a message until its visibility timeout), so with --until-empty
        // they are kept short: the exit then follows the empty queues within ~2 s.
        wait: if cli.until_empty {
            cfg.sqs.receive_message_wait_time.min(UNTIL_EMPTY_WAIT)
        } else {
            cfg.sqs.receive_message_wait_time
        },
        visibility: cfg.sqs.visibility_timeout,
        sleep_after_empty: cli.sleep(),
        grace: cli.grace(),
        until_empty: cli.until_empty,
        empty_check_interval: EMPTY_CHECK_INTERVAL,
        max_message_bytes: cfg.sqs.max_message_bytes,
        keys_per_message_hint: cfg.migration.batch_num,
        mode: cli.mode.to_string(),
        executor_id,
        progress_interval: PROGRESS_INTERVAL,
        emf: cli.metrics == cli::Metrics::Emf,
        circuit_breaker: cli.circuit_breaker,
    };
    let stats = worker::serve(
        order,
        queues.dead.clone(),
        Arc::new(worker),
        settings,
        reporter,
        shutdown,
    )
    .await;
    if let Some(task) = reporter_task {
        match task.finish().await {
            Ok(files) => tracing::debug!(files, "completion report written"),
            Err(e) => tracing::error!(error = %e, "completion report could not be written"),
        }
    }
    println!("{}", summary_line(&stats));
    tracing::info!(keys = stats.keys, failed = stats.failed, bytes = stats.bytes, stopped_by = ?stats.stopped_by, "executor finished");
    if let Some(t) = &stats.circuit {
        return Err(t.error().into());
    }
    Ok(stats)
}

/// How a run that returned its stats ends: failed or bad keys make
/// `--until-empty` exit with [`Exit::Failures`], a signal before the queues
/// were empty with [`Exit::Interrupted`]. Without `--until-empty` a signal is
/// the normal end of a fleet member: 0 (its failures are in the DLQ and the
/// reports, for `commander status`).
pub fn exit_for(stats: &RunStats, until_empty: bool) -> Exit {
    match (until_empty, stats.stopped_by) {
        (_, StopReason::CircuitOpen) => Exit::Endpoint,
        (false, _) => Exit::Ok,
        (true, StopReason::Signal) => Exit::Interrupted,
        (true, StopReason::QueuesEmpty) if stats.failed > 0 || stats.bad_messages > 0 => {
            Exit::Failures
        }
        (true, StopReason::QueuesEmpty) => Exit::Ok,
    }
}

/// Flag combinations clap cannot express.
fn check_flags(cli: &Cli) -> anyhow::Result<()> {
    if let Some(n) = cli.queue_num {
        if n == 0 || n < -1 {
            return Err(common::Error::input(
                "--queue-num",
                format!("{n} is not a queue number (1..=queue_num, or -1 with -d)"),
            )
            .into());
        }
        if n == -1 && !cli.including_dead {
            return Err(common::Error::input(
                "--queue-num",
                "-1 receives from no work queue: add -d/--including-dead to drain the dead-letter queue",
            )
            .into());
        }
    }
    cli.window()?;
    Ok(())
}

/// `hostname-pid-random`: unique per process, safe as a path component of report keys.
fn executor_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let host = if host.is_empty() {
        "executor".to_string()
    } else {
        host
    };
    format!("{host}-{}-{}", std::process::id(), &id[..8])
}

/// The one-line summary printed to stdout at exit.
pub fn summary_line(s: &RunStats) -> String {
    let why = match s.stopped_by {
        StopReason::Signal => "stopped by signal",
        StopReason::QueuesEmpty => "queues empty",
        StopReason::CircuitOpen => "circuit breaker open",
    };
    let outcomes = if s.by_outcome.is_empty() {
        String::new()
    } else {
        let parts: Vec<String> = s
            .by_outcome
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        format!(" ({})", parts.join(", "))
    };
    let secs = s.busy.as_secs_f64();
    let rate = if secs > 0.0 {
        format!(
            "; busy {secs:.2} s: {:.0} objects/s, {:.1} MB/s",
            s.keys as f64 / secs,
            s.bytes as f64 / secs / 1e6
        )
    } else {
        String::new()
    };
    let capped = if s.visibility_limit_reached > 0 {
        format!(
            ", {} redelivered at the visibility limit",
            s.visibility_limit_reached
        )
    } else {
        String::new()
    };
    format!(
        "executor: {why}: {} keys{outcomes}, {} failed, {} bytes; messages: {} done, {} returned, {} bad, {} parked in DLQ{capped}{rate}",
        s.keys, s.failed, s.bytes, s.messages_done, s.messages_returned, s.bad_messages, s.dlq_messages
    )
}

/// The production [`KeyWorker`]: opens (and caches) the stores a message names and
/// calls [`transfer::process_key`].
pub struct TransferWorker {
    opts: TransferOptions,
    /// S3 clients are built on first use, so a run between directories never
    /// touches AWS configuration (no region or IMDS lookups).
    target_s3: S3Connector,
    /// `aws.copy_source` when the source is read separately, else `aws.copy`.
    source_s3: S3Connector,
    /// The source is read with `aws.copy_source` (downup/check with that section set).
    separate_source: bool,
    /// What a message may name (`migration.allowed_sources` / `allowed_targets`).
    allowed_sources: EndpointPolicy,
    allowed_targets: EndpointPolicy,
    ends: Mutex<HashMap<(String, String), Arc<Ends>>>,
}

impl std::fmt::Debug for TransferWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferWorker")
            .field("mode", &self.opts.mode)
            .field("separate_source", &self.separate_source)
            .finish()
    }
}

/// Whether `aws.copy_source` says anything (credentials, profile, region or endpoint).
pub fn copy_source_is_set(cfg: &Config) -> bool {
    let s = &cfg.aws.copy_source;
    s.profile_name.is_some()
        || s.aws_access_key_id.is_some()
        || s.endpoint_url.is_some()
        || s.region_name.is_some()
}

impl TransferWorker {
    /// Prepare the worker; S3 clients are built when a message first needs one.
    pub async fn new(cfg: &Config, cli: &Cli) -> Self {
        let separate_source = cli.mode != Mode::Copy && copy_source_is_set(cfg);
        TransferWorker {
            opts: transfer_options(cfg, cli),
            target_s3: S3Connector::new(&cfg.aws.copy),
            source_s3: S3Connector::new(if separate_source {
                &cfg.aws.copy_source
            } else {
                &cfg.aws.copy
            }),
            separate_source,
            allowed_sources: cfg.allowed_sources(),
            allowed_targets: cfg.allowed_targets(),
            ends: Mutex::new(HashMap::new()),
        }
    }

    /// The message's two ends, checked against the allowed lists (directories
    /// resolved to their real paths, which are what gets opened).
    fn locations(&self, batch: &Batch) -> common::Result<(Location, Location)> {
        let source = Location::parse(&batch.source, "message source")?;
        let target = Location::parse(&batch.target, "message target")?;
        let source = self
            .allowed_sources
            .admit(&source, "source", "migration.allowed_sources")?;
        let target = self
            .allowed_targets
            .admit(&target, "target", "migration.allowed_targets")?;
        Ok((source, target))
    }

    async fn ends(&self, batch: &Batch) -> common::Result<Arc<Ends>> {
        let cache_key = (batch.source.clone(), batch.target.clone());
        if let Some(e) = self.ends.lock().expect("ends lock").get(&cache_key) {
            return Ok(e.clone());
        }
        let (source, target) = self.locations(batch)?;
        let both_s3 = matches!(
            (&source, &target),
            (Location::S3 { .. }, Location::S3 { .. })
        );
        let source_store: Arc<dyn ObjectStore> =
            open_store(&source, &self.source_s3, false).await?;
        // A missing target directory is created for writing, never for checking.
        let create = self.opts.mode != Mode::Check;
        let target_store: Arc<dyn ObjectStore> =
            open_store(&target, &self.target_s3, create).await?;
        let ends = Arc::new(Ends {
            source: source_store,
            target: target_store,
            server_side: self.opts.mode == Mode::Copy && both_s3 && !self.separate_source,
        });
        self.ends
            .lock()
            .expect("ends lock")
            .insert(cache_key, ends.clone());
        Ok(ends)
    }
}

#[async_trait]
impl KeyWorker for TransferWorker {
    async fn work(&self, batch: &Batch, item: &KeyItem) -> common::Result<transfer::Done> {
        let ends = self.ends(batch).await?;
        transfer::process_key(&ends, item, &self.opts).await
    }

    fn admit(&self, batch: &Batch) -> common::Result<()> {
        self.locations(batch).map(|_| ())
    }
}

/// The per-key options from config and flags.
pub fn transfer_options(cfg: &Config, cli: &Cli) -> TransferOptions {
    TransferOptions {
        mode: cli.mode,
        verify: cli.verify,
        deep: cli.deep,
        multipart_threshold: cfg.migration.multipart_threshold,
        part_size: cfg.migration.part_size,
        part_concurrency: cli.part_concurrency(),
        storage_class: cli.storage_class.clone(),
        acl: cli.acl(),
        // Checked by `check_flags`; an empty window cannot get here.
        window: cli.window().unwrap_or_default(),
        retry: common::retry::Policy::object(),
        // One budget for every object's part buffers: streaming stays within
        // concurrency × part_size for the whole process.
        buffers: Some(BufferPool::new(
            (cfg.migration.concurrency as u64).saturating_mul(cfg.migration.part_size),
        )),
        checksum: cli.checksum_algorithm.0,
        no_overwrite: cli.no_overwrite,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["executor"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap()
    }

    #[test]
    fn flag_combinations_are_checked() {
        assert!(check_flags(&cli(&[])).is_ok());
        assert!(check_flags(&cli(&["-n", "-1", "-d"])).is_ok());
        assert!(check_flags(&cli(&["-n", "2"])).is_ok());
        for (args, needle) in [
            (vec!["-n", "-1"], "--including-dead"),
            (vec!["-n", "0"], "--queue-num"),
            (vec!["-n", "-5", "-d"], "--queue-num"),
            (
                vec![
                    "--modified-since",
                    "2024-02-01",
                    "--not-modified-since",
                    "2024-02-01",
                ],
                "--not-modified-since",
            ),
        ] {
            let e = check_flags(&cli(&args)).unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn transfer_options_follow_flags_and_config() {
        let mut cfg = Config::default();
        cfg.migration.multipart_threshold = 8 << 20;
        cfg.migration.part_size = 5 << 20;
        let o = transfer_options(
            &cfg,
            &cli(&[
                "--mode",
                "downup",
                "-v",
                "--acl",
                "none",
                "--storage-class",
                "STANDARD_IA",
            ]),
        );
        assert_eq!((o.mode, o.verify, o.deep), (Mode::Downup, true, false));
        assert_eq!(
            (o.multipart_threshold, o.part_size, o.part_concurrency),
            (8 << 20, 5 << 20, 4)
        );
        assert_eq!(
            (o.acl, o.storage_class.as_deref()),
            (None, Some("STANDARD_IA"))
        );
        let o = transfer_options(&cfg, &cli(&["--modified-since", "2024-01-01", "--deep"]));
        assert_eq!(o.acl.as_deref(), Some("bucket-owner-full-control"));
        assert!(o.deep && o.window.since.is_some() && o.window.until.is_none());
        assert_eq!(o.part_concurrency, 8);
        let pool = o.buffers.expect("a shared buffer budget");
        assert_eq!(pool.capacity(), 64 * (5 << 20));
    }

    #[test]
    fn copy_source_counts_as_set_when_anything_is_given() {
        let mut cfg = Config::default();
        assert!(!copy_source_is_set(&cfg));
        cfg.aws.copy_source.endpoint_url = Some("http://other".into());
        assert!(copy_source_is_set(&cfg));
        let mut cfg = Config::default();
        cfg.aws.copy_source.profile_name = Some("src-account".into());
        assert!(copy_source_is_set(&cfg));
    }

    #[test]
    fn summary_names_the_stop_reason_and_counts() {
        let mut s = RunStats {
            keys: 3,
            failed: 1,
            bytes: 20,
            messages_done: 2,
            ..RunStats::default()
        };
        s.by_outcome.insert("copied".into(), 2);
        s.by_outcome.insert("failed".into(), 1);
        s.stopped_by = StopReason::QueuesEmpty;
        let line = summary_line(&s);
        assert!(
            line.starts_with(
                "executor: queues empty: 3 keys (copied 2, failed 1), 1 failed, 20 bytes"
            ),
            "{line}"
        );
        assert!(line.contains("2 done"), "{line}");
        s.stopped_by = StopReason::Signal;
        assert!(summary_line(&s).contains("stopped by signal"));
    }

    #[test]
    fn executor_ids_are_unique_and_path_safe() {
        let (a, b) = (executor_id(), executor_id());
        assert_ne!(a, b);
        assert!(
            a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{a}"
        );
    }
}
