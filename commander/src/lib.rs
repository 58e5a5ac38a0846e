//! The commander: `init` creates the queues, `run` enumerates a source and
//! sends batches of keys to the work queues, `config` prints the effective
//! configuration. `main` only parses flags and calls [`run`], handing in the
//! shutdown signal, so tests can drive a whole command in-process.
//!
//! | module       | role |
//! |--------------|------|
//! | [`cli`]      | flags |
//! | [`source`]   | flags → a checked plan (source, prefixes, filters) |
//! | [`pipeline`] | keys → batches → SendMessageBatch, with the resume point |
//! | [`summary`]  | progress line and final summary |
//! | [`repair`]   | `run --repair JOB`: a re-run attached to the job it repairs |

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use common::config::Config;
use common::exit::Exit;
use common::listing::diff::Tally;
use common::listing::pair::{list_pair, DeleteSpool, PairWalk};
use common::listing::parallel::{list_parallel, Walk};
use common::listing::sorted::{diff_sorted, SourceSide};
use common::listing::{Found, ListStats, SourceEnd};
use common::queue::set::{open_service, QueueSet};
use common::queue::Ensured;
use common::report::{JobRecord, ReportLocation};
use tokio_util::sync::CancellationToken;

pub mod cli;
pub mod ops;
pub mod pipeline;
pub mod repair;
pub mod source;
pub mod summary;

use cli::{Cli, Command, RunArgs};
use pipeline::{Counters, Settings, Sink};
use source::{SourceKind, SyncPlan};
use summary::{shell_quote, QueueCount, Summary};

/// Run one command. `shutdown` (Ctrl-C) stops a `run` cleanly: what was
/// listed is accounted for and the resume point is printed.
pub async fn run(cli: Cli, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    common::config::apply_dotenv_to_process(cli.global.env_file.as_deref())?;
    common::config::warn_unknown_env(cli.global.env_file.as_deref(), &[], &[]);
    let flags: Vec<(&str, Option<String>, &str)> = match &cli.command {
        Command::Run(r) => vec![(
            "migration.batch_num",
            r.batch_num.map(|n| n.to_string()),
            "--batch-num",
        )],
        _ => Vec::new(),
    };
    let cfg = Config::load(&cli.global, &flags)?;
    if cli.global.print_config || matches!(cli.command, Command::Config) {
        print!("{}", cfg.render());
        return Ok(ExitCode::SUCCESS);
    }
    common::logging::init(
        &cfg.migration.log_level,
        cfg.migration.log_format,
        cfg.migration.log_file.as_deref(),
    )?;
    match cli.command {
        Command::Init => init(&cfg).await,
        Command::Run(args) => run_job(&cfg, *args, shutdown).await,
        Command::Config => Ok(ExitCode::SUCCESS),
        Command::Status(a) => ops::status::run(&cfg, &a, shutdown).await,
        Command::Report(a) => ops::report::run(&cfg, &a, shutdown).await,
        Command::Dlq(a) => ops::dlq::run(&cfg, &a, shutdown).await,
        Command::Redrive(a) => ops::redrive::run(&cfg, &a, shutdown).await,
        Command::Cleanup(a) => ops::cleanup::run(&cfg, &a, shutdown).await,
    }
}

/// `commander init`: create or update every queue, saying what happened to each.
async fn init(cfg: &Config) -> anyhow::Result<ExitCode> {
    let svc = open_service(cfg).await?;
    let done = common::queue::set::init(svc.as_ref(), cfg).await?;
    for (name, what) in done {
        match what {
            Ensured::Created => println!("created   {name}"),
            Ensured::Unchanged => println!("unchanged {name}"),
            Ensured::Updated(attrs) => println!("updated   {name} ({})", attrs.join(", ")),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A job id: given (checked) or `YYYYMMDDTHHMMSSZ-<8 hex>`.
pub fn job_id(given: Option<&str>) -> common::Result<String> {
    match given {
        Some(id) => {
            let ok = !id.is_empty()
                && id.len() <= 128
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if ok {
                Ok(id.to_string())
            } else {
                Err(common::Error::input(
                    "--job-id",
                    format!("`{id}`: use 1-128 of A-Z, a-z, 0-9, '-', '_', '.'"),
                ))
            }
        }
        None => {
            let hex = uuid::Uuid::new_v4().simple().to_string();
            Ok(format!(
                "{}-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
                &hex[..8]
            ))
        }
    }
}

/// `commander run`.
async fn run_job(
    cfg: &Config,
    mut args: RunArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let repairs = match args.repair.clone() {
        Some(job) => Some(repair::prepare(cfg, &job, &mut args).await?),
        None => None,
    };
    let job_id = job_id(args.repair.as_deref().or(args.job_id.as_deref()))?;
    let plan = source::plan(cfg, &args).await?;
    if let Some(rec) = &repairs {
        repair::check_target(&job_id, rec, &plan)?;
    }
    if let Err(e) = confirm_target_exists(cfg, &plan).await {
        let hint = if e.is_unreachable() {
            " (check AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 or endpoint_url under aws in config.yml)"
        } else {
            ""
        };
        return Err(anyhow::Error::new(e).context(format!(
            "the target failed its pre-flight check; nothing was sent{hint}"
        )));
    }
    let queue_names = cfg.queue_names();
    let (sink, records) = open_sink(cfg, args.dry_run, &queue_names).await?;
    if args.json {
        eprintln!("job {job_id}");
    } else {
        println!("job {job_id}");
    }
    // DEBUG: the output says the job id now, and source and target in the summary.
    tracing::debug!(job_id = %job_id, source = %plan.describe, target = %plan.target_full, kind = plan.kind.name(), dry_run = args.dry_run, "run starting");

    // Manifests are checked whole (checksums, every row) before anything is
    // sent, so a bad manifest leaves nothing half-done. A dry run needs no
    // pre-pass: it sends nothing anyway.
    if !args.dry_run {
        tokio::select! {
            r = preflight(&plan) => r?,
            _ = shutdown.cancelled() => {
                eprintln!("error: interrupted while checking the manifest; nothing was sent");
                return Ok(Exit::Interrupted.to_exit_code());
            }
        }
    }
    let record = match &records {
        Some(loc) => Some(start_record(loc, &job_id, &plan, args.repair.is_some()).await),
        None => None,
    };

    let job = JobRun {
        counters: Arc::new(Counters::for_queues(queue_names.len())),
        stats: Arc::new(ListStats::default()),
        tally: plan.sync.as_ref().map(|_| Arc::default()),
        id: job_id,
        plan,
        queue_names,
    };
    let outcome = job.send(cfg, &args, sink, &shutdown).await;
    if let (Some(loc), Some(mut rec)) = (&records, record) {
        job.add_to_record(&mut rec, args.repair.is_some());
        write_record(loc, &rec).await;
    }
    let summary = job.summary(args.dry_run, started.elapsed().as_secs_f64(), &outcome);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).context("summary to JSON")?
        );
    } else {
        print!("{}", summary.render_text());
    }
    if let Some(message) = stop_message(&summary, args.job_id.is_some() || args.repair.is_some()) {
        eprintln!("{message}");
    }
    Ok(match (&outcome.error, outcome.interrupted) {
        (Some(e), _) => Exit::for_error(e),
        (None, true) => Exit::Interrupted,
        (None, false) => Exit::Ok,
    }
    .to_exit_code())
}

/// Where a run sends: the work queues and the report location, or, in a dry
/// run, only the queue names (and no report location).
async fn open_sink(
    cfg: &Config,
    dry_run: bool,
    queue_names: &[String],
) -> anyhow::Result<(Sink, Option<ReportLocation>)> {
    if dry_run {
        return Ok((Sink::DryRun(queue_names.to_vec()), None));
    }
    let svc = open_service(cfg).await?;
    let set = QueueSet::open(svc.as_ref(), cfg).await?;
    Ok((
        Sink::Queues(set.work),
        common::report::open_report_location(cfg).await?,
    ))
}

/// One `commander run` of a job: what it sends, and what it counted.
struct JobRun {
    id: String,
    plan: source::Plan,
    queue_names: Vec<String>,
    /// What the source read (listed keys).
    stats: Arc<ListStats>,
    /// What was sent, in total and per queue.
    counters: Arc<Counters>,
    /// `--sync`: what the diff found so far.
    tally: Option<Arc<Mutex<Tally>>>,
}

impl JobRun {
    /// Run the plan's source through batching and sending (with the progress
    /// line) until it is exhausted, fails, or `shutdown` stops it.
    async fn send(
        &self,
        cfg: &Config,
        args: &RunArgs,
        sink: Sink,
        shutdown: &CancellationToken,
    ) -> pipeline::PipelineEnd {
        let settings = Settings {
            job_id: self.id.clone(),
            target: self.plan.target.clone(),
            batch_num: cfg.migration.batch_num,
            max_message_bytes: cfg.sqs.max_message_bytes,
            senders: args.send_concurrency.max(1),
        };
        let progress_stop = CancellationToken::new();
        let progress = summary::spawn_progress(
            self.stats.clone(),
            self.counters.clone(),
            self.tally.clone(),
            progress_stop.clone(),
        );
        let cancel = shutdown.child_token();
        let (kind, selector, st) = (
            self.plan.kind.clone(),
            self.plan.selector.clone(),
            self.stats.clone(),
        );
        let sync = self.plan.sync.clone().zip(self.tally.clone());
        let outcome = pipeline::run(
            settings,
            sink,
            self.counters.clone(),
            cancel,
            move |tx, cancel| source_future(kind, selector, st, sync, tx, cancel),
        )
        .await;
        progress_stop.cancel();
        let _ = progress.await;
        outcome
    }

    /// Add what this run enqueued to the job's record: a resumed run given the
    /// same --job-id accumulates (keys sent twice count twice).
    fn add_to_record(&self, rec: &mut JobRecord, repair: bool) {
        let c = &self.counters;
        if repair {
            repair::finish(rec, c.keys_sent.load(Ordering::Relaxed));
            return;
        }
        rec.finished_at = Some(chrono::Utc::now());
        rec.objects += c.keys_sent.load(Ordering::Relaxed);
        rec.bytes += c.bytes_sent.load(Ordering::Relaxed);
        rec.messages += c.messages_sent.load(Ordering::Relaxed);
        for (q, n) in self.queue_names.iter().zip(&c.per_queue) {
            *rec.per_queue.entry(q.clone()).or_insert(0) += n.load(Ordering::Relaxed);
        }
        for (f, n) in self.plan.selector.counts.snapshot().nonzero() {
            *rec.skipped.entry(f.to_string()).or_insert(0) += n;
        }
        if let Some(t) = self.tally_now() {
            rec.sync.get_or_insert_with(Tally::default).merge(&t);
        }
    }

    /// The diff's tally so far (`None`: not a `--sync` run).
    fn tally_now(&self) -> Option<Tally> {
        self.tally
            .as_ref()
            .map(|t| t.lock().expect("tally lock").clone())
    }

    /// The run's summary, `elapsed` seconds after it started, given how the pipeline ended.
    fn summary(&self, dry_run: bool, elapsed: f64, outcome: &pipeline::PipelineEnd) -> Summary {
        let c = &self.counters;
        let objects = c.keys_sent.load(Ordering::Relaxed);
        let error = match (&outcome.error, outcome.interrupted) {
            (Some(e), _) => Some(error_line(e)),
            (None, true) => Some("interrupted".to_string()),
            (None, false) => None,
        };
        Summary {
            job_id: self.id.clone(),
            source: self.plan.describe.clone(),
            source_kind: self.plan.kind.name(),
            target: self.plan.target_full.clone(),
            dry_run,
            complete: outcome.resume.is_none() && error.is_none(),
            listed: self.stats.seen(),
            objects,
            bytes: c.bytes_sent.load(Ordering::Relaxed),
            messages: c.messages_sent.load(Ordering::Relaxed),
            send_calls: c.send_calls.load(Ordering::Relaxed),
            queues: self
                .queue_names
                .iter()
                .zip(&c.per_queue)
                .map(|(q, n)| QueueCount {
                    queue: q.clone(),
                    messages: n.load(Ordering::Relaxed),
                })
                .collect(),
            skipped: self.plan.selector.counts.snapshot(),
            elapsed_seconds: elapsed,
            keys_per_second: objects as f64 / elapsed.max(0.001),
            error,
            resume_start_after: outcome.resume.clone().map(|r| r.unwrap_or_default()),
            resume_from: outcome.resume_row.map(|r| r.to_string()),
            sync: self.tally_now(),
        }
    }
}

/// A run's error in one sentence: [`common::Error::human`], and for an
/// endpoint that never answered, which side it is and where its URL is set.
fn error_line(e: &common::Error) -> String {
    // `cannot reach URL (reason)` / `no answer from URL (reason)`: the words
    // common::clients gives a request that reached no server (a transport
    // class alone may be, e.g., missing credentials).
    let no_server = e.message.contains("cannot reach ") || e.message.contains("no answer from ");
    if !(e.is_unreachable() && no_server) {
        return e.human();
    }
    match e.subject.starts_with("s3://") {
        true => format!(
            "listing the source {}: {}; check AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 or endpoint_url under aws in config.yml",
            e.subject,
            e.full_message()
        ),
        false => format!(
            "sending to the queue {}: {}; check AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_SQS or sqs.endpoint_url in config.yml",
            e.subject,
            e.full_message()
        ),
    }
}

/// What a run that stopped early says on stderr (`None`: it did not): the
/// error, what was sent before it, and how to resume (`--job-id` named unless
/// `job_id_given`).
fn stop_message(summary: &Summary, job_id_given: bool) -> Option<String> {
    let error = summary.error.as_ref()?;
    let nothing_sent = summary.objects == 0 || summary.dry_run;
    let same_job = if job_id_given {
        String::new()
    } else {
        format!("--job-id {} ", summary.job_id)
    };
    let hint = match (&summary.resume_start_after, &summary.resume_from) {
        _ if error.contains("--max-delete") => "look at why so many target keys are missing from the source (`--sync --delete --dry-run` counts them), then run again with a higher --max-delete".to_string(),
        _ if nothing_sent => "nothing was sent: fix the problem and run the same command again".to_string(),
        // Manifests resume at a row, whatever the order of their rows and files.
        (Some(_), Some(row)) => format!(
            "to resume, re-run the same command with {same_job}--resume-from {row} (rows from there on that were already sent are sent again; executors skip identical objects)"
        ),
        (Some(r), None) if !r.is_empty() => format!(
            "to resume, re-run the same command with {same_job}--start-after {} (keys after it that were already sent are sent again; executors skip identical objects)",
            shell_quote(r)
        ),
        _ => format!("to resume, re-run the same command {same_job}(keys already sent are sent again; executors skip identical objects)"),
    };
    Some(if nothing_sent {
        format!("error: {error}\n{hint}")
    } else {
        format!(
            "error: {error}\n{} keys were sent in {} messages before the run stopped; {hint}",
            summary::thousands(summary.objects),
            summary::thousands(summary.messages)
        )
    })
}

/// Read a manifest whole (checksums, every row, filters) without sending, so
/// a bad manifest leaves nothing half-done. Listing has no pre-pass.
async fn preflight(plan: &source::Plan) -> common::Result<()> {
    let selector = Arc::new(plan.selector.with_fresh_counts());
    match &plan.kind {
        SourceKind::Inventory { inventory, .. } => {
            let rows = inventory
                .for_each(selector, None, Arc::new(|_, _| Ok(())))
                .await?;
            let files = inventory.manifest.files.len();
            tracing::info!(rows, files, "inventory checked");
        }
        SourceKind::Csv {
            manifest,
            only_bucket,
        } => {
            let only = only_bucket.clone();
            let rows = manifest
                .for_each(only, selector, None, Arc::new(|_, _, _| Ok(())))
                .await?;
            tracing::info!(rows, "CSV manifest checked");
        }
        SourceKind::List { .. } => {}
    }
    Ok(())
}

/// Refuse a doomed run before anything is sent: the target bucket must exist
/// (a fresh HeadBucket, which also learns its region; a 403 counts as
/// existing, since a writer may not be allowed to list), or the target
/// directory must exist or be creatable. Otherwise every key would be parked
/// in the DLQ by every executor.
async fn confirm_target_exists(cfg: &Config, plan: &source::Plan) -> common::Result<()> {
    let target = common::location::Location::parse(&plan.target, "--target-bucket")?;
    let s3 = common::clients::S3Connector::new(&cfg.aws.copy);
    let store = common::store::open::open_store(&target, &s3, true).await?;
    store.confirm_exists().await?;
    tracing::debug!(target = %plan.target, "target exists");
    Ok(())
}

/// The job's record at the start of a run: the existing one when this job id
/// already has one (a resumed run), else a fresh one (written now, so
/// `commander status` shows the job while it is listed). A `--repair` run is
/// added to the record's repair runs instead.
async fn start_record(
    loc: &common::report::ReportLocation,
    job_id: &str,
    plan: &source::Plan,
    repair: bool,
) -> common::report::JobRecord {
    let existing = match loc.read_job(job_id).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(job_id, error = %e, "cannot read the job record; starting a new one");
            None
        }
    };
    let mut rec = existing.unwrap_or_else(|| common::report::JobRecord {
        job_id: job_id.to_string(),
        source: plan.describe.clone(),
        target: plan.target_full.clone(),
        target_root: Some(plan.target.clone()),
        prefix: plan.prefix.clone(),
        target_prefix: plan.target_prefix.clone(),
        started_at: chrono::Utc::now(),
        finished_at: None,
        objects: 0,
        bytes: 0,
        messages: 0,
        per_queue: Default::default(),
        skipped: Default::default(),
        repairs: Vec::new(),
        sync: None,
    });
    if repair {
        repair::start(&mut rec, plan);
    } else {
        rec.finished_at = None;
    }
    write_record(loc, &rec).await;
    rec
}

/// Write the job record; a failure is a warning (the record only feeds
/// `commander status`/`report`; the messages are what matter).
async fn write_record(loc: &common::report::ReportLocation, rec: &common::report::JobRecord) {
    if let Err(e) = loc.write_job(rec).await {
        tracing::warn!(job_id = %rec.job_id, error = %e, "cannot write the job record");
    }
}

async fn source_future(
    kind: SourceKind,
    selector: Arc<common::listing::Selector>,
    stats: Arc<ListStats>,
    sync: Option<(SyncPlan, Arc<Mutex<Tally>>)>,
    tx: tokio::sync::mpsc::Sender<Found>,
    cancel: CancellationToken,
) -> SourceEnd {
    match kind {
        SourceKind::List {
            store,
            opts,
            source,
        } => {
            let walk = Walk {
                opts,
                selector,
                source,
                stats,
            };
            match sync {
                None => list_parallel(store, walk, tx, cancel).await,
                Some((plan, tally)) => {
                    sync_source(SourceSide::List(store), walk, plan, tally, tx, cancel).await
                }
            }
        }
        SourceKind::Inventory { inventory, source } => match sync {
            None => inventory.send(selector, source, stats, tx, cancel).await,
            Some((plan, tally)) => {
                let walk = Walk {
                    opts: Default::default(),
                    selector,
                    source,
                    stats,
                };
                let side = SourceSide::Inventory(inventory);
                sync_source(side, walk, plan, tally, tx, cancel).await
            }
        },
        SourceKind::Csv {
            manifest,
            only_bucket,
        } => {
            manifest
                .send(only_bucket, selector, stats, tx, cancel)
                .await
        }
    }
}

/// `--sync`: the paired walk (or, with `--target-manifest-path`, the sorted
/// diff against the target's inventory), then (only when the whole diff is
/// done, and within `--max-delete`) the target-only keys as deletes.
async fn sync_source(
    side: SourceSide,
    walk: Walk,
    plan: SyncPlan,
    tally: Arc<Mutex<Tally>>,
    tx: tokio::sync::mpsc::Sender<Found>,
    cancel: CancellationToken,
) -> SourceEnd {
    let failed = |e| SourceEnd {
        error: Some(e),
        unfinished: None,
        next_row: None,
    };
    let spool = match plan.delete {
        false => None,
        true => match DeleteSpool::new() {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => return failed(e),
        },
    };
    let source = walk.source.clone();
    let pair = PairWalk {
        walk,
        target: plan.target,
        map: plan.map,
        rule: plan.rule,
        tally: tally.clone(),
        deletes: spool.clone(),
    };
    let end = match (plan.target_inventory, side) {
        (Some(inv), side) => diff_sorted(side, pair, inv, tx.clone(), cancel).await,
        (None, SourceSide::List(store)) => list_pair(store, pair, tx.clone(), cancel).await,
        (None, SourceSide::Inventory(_)) => {
            let why = "an inventory source (-m) needs --target-manifest-path";
            return failed(common::Error::input("--sync", why));
        }
    };
    let Some(spool) = spool else { return end };
    if end.error.is_some() || end.unfinished.is_some() {
        let n = spool.count().files;
        if n > 0 {
            tracing::warn!(
                target_only = n,
                "the diff did not finish: no delete was sent"
            );
        }
        return end;
    }
    let count = spool.count();
    if let Some(max) = plan.max_delete.filter(|m| count.files > *m) {
        return failed(common::Error::new(
            common::ErrorKind::Permanent,
            "MaxDeleteExceeded",
            "--max-delete",
            format!(
                "{} target keys would be deleted, more than --max-delete {max}: no delete was sent (new and changed keys were)",
                count.files
            ),
        ));
    }
    // The walk has ended: nothing else holds the spool.
    let items = match Arc::try_unwrap(spool)
        .map_err(|_| spool_busy())
        .and_then(DeleteSpool::into_items)
    {
        Ok(items) => items,
        Err(e) => return failed(e),
    };
    for item in items {
        let item = match item {
            Ok(i) => i,
            Err(e) => return failed(e),
        };
        tally
            .lock()
            .expect("tally lock")
            .deletes
            .add(item.size.unwrap_or(0));
        let found = Found {
            source: source.clone(),
            item,
            row: None,
        };
        if tx.send(found).await.is_err() {
            break;
        }
    }
    SourceEnd::default()
}

fn spool_busy() -> common::Error {
    common::Error::new(
        common::ErrorKind::Permanent,
        "SpoolFailed",
        "the delete spool",
        "still in use after the diff ended: no delete was sent",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_generated_or_checked() {
        let id = job_id(None).unwrap();
        assert_eq!(id.len(), "20240101T000000Z-".len() + 8, "{id}");
        assert_eq!(job_id(Some("nightly-1")).unwrap(), "nightly-1");
        let e = job_id(Some("has space")).unwrap_err();
        assert!(e.to_string().contains("--job-id"), "{e}");
    }

    #[test]
    fn a_stopped_run_says_why_and_how_to_resume() {
        let mut s = Summary {
            job_id: "j-1".into(),
            source: "s3://src".into(),
            source_kind: "list",
            target: "s3://dst".into(),
            dry_run: false,
            complete: true,
            listed: 0,
            objects: 0,
            bytes: 0,
            messages: 0,
            send_calls: 0,
            queues: vec![],
            skipped: Default::default(),
            elapsed_seconds: 1.0,
            keys_per_second: 0.0,
            error: None,
            resume_start_after: None,
            resume_from: None,
            sync: None,
        };
        assert_eq!(stop_message(&s, false), None, "a complete run says nothing");
        s.error = Some("boom".into());
        s.resume_start_after = Some("a b".into());
        assert_eq!(
            stop_message(&s, false).unwrap(),
            "error: boom\nnothing was sent: fix the problem and run the same command again"
        );
        (s.objects, s.messages) = (1500, 2);
        let m = stop_message(&s, false).unwrap();
        assert!(
            m.starts_with("error: boom\n1,500 keys were sent in 2 messages before the run stopped; to resume, re-run the same command with --job-id j-1 --start-after 'a b' ("),
            "{m}"
        );
        s.resume_from = Some("m.csv:7".into());
        let m = stop_message(&s, true).unwrap();
        assert!(
            m.contains("command with --resume-from m.csv:7 (rows"),
            "{m}"
        );
        (s.resume_start_after, s.resume_from) = (Some(String::new()), None);
        let m = stop_message(&s, true).unwrap();
        assert!(
            m.contains("re-run the same command (keys already sent"),
            "{m}"
        );
        s.error =
            Some("--max-delete: 12 target keys would be deleted, more than --max-delete 9".into());
        let m = stop_message(&s, true).unwrap();
        assert!(
            m.contains("with a higher --max-delete") && !m.contains("re-run the same command"),
            "the same command would stop again: {m}"
        );
    }
}
