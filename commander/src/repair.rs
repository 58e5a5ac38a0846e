//! `commander run --repair JOB`: a re-run that attaches to the job it repairs.
//! Its messages carry JOB's id, so the executors' report rows land under JOB
//! and `status`/`report` of JOB converge as the repaired keys succeed (a key's
//! latest outcome wins). Its keys are recorded as a repair run in JOB's record,
//! not added to JOB's enqueued objects (they were enqueued before).

use anyhow::Context;
use common::config::Config;
use common::report::{JobRecord, RepairRun};

use crate::cli::RunArgs;
use crate::source::Plan;

/// Read JOB's record and fill the flags left out from it: the target (`-t`,
/// `--target-prefix`) and, unless a source is given, the source prefix (`-p`),
/// so that a failures manifest maps onto the same target keys. The job must
/// have a record: repairing a job nobody ran is a typo.
pub async fn prepare(cfg: &Config, job: &str, args: &mut RunArgs) -> anyhow::Result<JobRecord> {
    let loc = crate::ops::require_report_location(cfg)
        .await
        .context("--repair needs the report location the job was recorded in")?;
    let rec = loc.read_job(job).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "--repair {job}: no job record under {} (`commander report` lists the newest job)",
            crate::ops::describe_location(&loc)
        )
    })?;
    if args.target_bucket.is_none() {
        args.target_bucket = Some(rec.target_root.clone().unwrap_or(rec.target.clone()));
        if args.target_prefix.is_none() {
            args.target_prefix = rec.target_prefix.clone();
        }
    }
    if args.source_bucket.is_none() && args.prefix.is_none() && !rec.prefix.is_empty() {
        args.prefix = Some(rec.prefix.clone());
    }
    Ok(rec)
}

/// A repair writes where the job wrote: the same full target (records older
/// than the full target hold the bucket only: then the bucket must agree).
pub fn check_target(job: &str, rec: &JobRecord, plan: &Plan) -> anyhow::Result<()> {
    let same = match rec.target_root {
        Some(_) => rec.target == plan.target_full,
        None => rec.target == plan.target,
    };
    if !same {
        anyhow::bail!(
            "--repair {job}: this run's target {} is not the job's target {} (leave -t out to use the job's)",
            plan.target_full,
            rec.target
        );
    }
    Ok(())
}

/// Start a repair run in the job's record.
pub fn start(rec: &mut JobRecord, plan: &Plan) {
    rec.repairs.push(RepairRun {
        started_at: chrono::Utc::now(),
        finished_at: None,
        source: plan.describe.clone(),
        keys: 0,
    });
}

/// Finish the latest repair run: `keys` were sent.
pub fn finish(rec: &mut JobRecord, keys: u64) {
    if let Some(r) = rec.repairs.last_mut() {
        r.finished_at = Some(chrono::Utc::now());
        r.keys += keys;
    }
}
