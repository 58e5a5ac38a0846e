//! Operating a migration with the real `commander` binary: `status` (depths,
//! progress from reports, ETA), `report` (summary, failures manifest fed back
//! to `run`), `dlq` (peek grouped by error class), `redrive` (all, one class,
//! undecodable bodies; an executor then copies the keys) and `cleanup` (stale
//! multipart uploads). The embedded queue is planted in-process (the test
//! shares its SQLite file with the binary); SQS and S3 are moto.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::config::{Config, QueueBackend};
use common::message::{decode, encode, Batch, Failure, KeyItem};
use common::queue::local::LocalService;
use common::queue::set::{init, send_all, QueueSet};
use common::queue::{Outgoing, Received, WorkQueue, MAX_MESSAGE_BYTES};
use common::report::{encode_rows, JobRecord, Outcome, ReportLocation, ReportRow};
use common::store::dir::DirStore;
use common::store::s3::S3Store;
use common::store::PutOptions;
use serde_json::Value;
use testsupport::runs::{run_bin, Run, Sandbox};

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// An embedded queue file with `queue_num` work queues (default names), opened
/// in-process, and the environment that points the binary at it.
struct Local {
    dir: tempfile::TempDir,
    set: QueueSet,
    env: Vec<(String, String)>,
}

async fn local(queue_num: usize) -> Local {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queues.db");
    let mut cfg = Config {
        queue: QueueBackend::Local(path.clone()),
        ..Config::default()
    };
    cfg.sqs.queue_num = queue_num;
    let svc = LocalService::open(&path).unwrap();
    init(&svc, &cfg).await.unwrap();
    let set = QueueSet::open(&svc, &cfg).await.unwrap();
    let env = vec![
        ("QUEUE_BACKEND".to_string(), "local".to_string()),
        ("QUEUE_PATH".to_string(), path.display().to_string()),
        ("QUEUE_NUM".to_string(), queue_num.to_string()),
        ("MIGRATION_LOG_LEVEL".to_string(), "warn".to_string()),
    ];
    Local { dir, set, env }
}

impl Local {
    fn commander(&self, args: &[&str]) -> Run {
        run_bin(
            "commander",
            args,
            &self.env,
            self.dir.path(),
            Duration::from_secs(300),
        )
    }

    /// Run a command with `--json`, assert success, parse stdout.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        json_of(self.commander(&all), args)
    }

    fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }
}

fn json_of(run: Run, what: &[&str]) -> Value {
    run.assert_ok(&format!("commander {what:?}"));
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{what:?}: stdout is not JSON ({e}):\n{}", run.stdout))
}

fn key(k: &str, class: Option<&str>) -> KeyItem {
    KeyItem {
        key: k.to_string(),
        size: Some(5),
        failure: class.map(|c| Failure {
            class: c.to_string(),
            message: format!("{c} on {k}"),
            attempts: 3,
            mode: Some("copy".into()),
        }),
        ..KeyItem::default()
    }
}

fn parked(source: &str, target: &str, keys: Vec<KeyItem>) -> Batch {
    Batch {
        v: 1,
        job_id: "job-dlq".into(),
        source: source.into(),
        target: target.into(),
        keys,
    }
}

fn with_attrs(body: String, attrs: &[(&str, &str)]) -> Outgoing {
    let mut m = Outgoing::body(body);
    for (k, v) in attrs {
        m.attributes.insert(k.to_string(), v.to_string());
    }
    m
}

/// The DLQ mix used by the embedded-queue tests: a message with two
/// AccessDenied keys and a SlowDown key (failed on queue 2), a SlowDown
/// message, an undecodable body, and a key without a recorded failure.
fn dlq_mix() -> Vec<Outgoing> {
    let (s, t) = ("s3://src-bucket", "s3://dst-bucket");
    vec![
        with_attrs(
            encode(&parked(
                s,
                t,
                vec![
                    key("a1", Some("AccessDenied")),
                    key("a2", Some("AccessDenied")),
                    key("a3", Some("SlowDown")),
                ],
            )),
            &[
                ("error_class", "AccessDenied"),
                ("source_queue", "s3-migration-02"),
            ],
        ),
        with_attrs(
            encode(&parked(s, t, vec![key("b1", Some("SlowDown"))])),
            &[("error_class", "SlowDown")],
        ),
        with_attrs(
            "garbage {".to_string(),
            &[
                ("error_class", "BadMessage"),
                ("reason", "message is not JSON"),
            ],
        ),
        Outgoing::body(encode(&parked(s, t, vec![key("d1", None)]))),
    ]
}

/// Receive and delete every message of an in-process queue.
async fn drain(q: &dyn WorkQueue) -> Vec<Received> {
    let mut out = Vec::new();
    loop {
        let got = q.receive(10, Duration::ZERO, None).await.unwrap();
        if got.is_empty() {
            return out;
        }
        for m in got {
            q.delete(&m.receipt).await.unwrap();
            out.push(m);
        }
    }
}

/// `(visible, in_flight)` of an in-process queue.
async fn depth(q: &dyn WorkQueue) -> (u64, u64) {
    let d = q.depths().await.unwrap();
    (d.visible, d.in_flight)
}

fn row(job: &str, source: &str, k: &str, outcome: Outcome, at: DateTime<Utc>) -> ReportRow {
    let failed = outcome == Outcome::Failed;
    ReportRow {
        job_id: job.into(),
        executor_id: "e".into(),
        source: source.into(),
        source_key: k.into(),
        target: "s3://dst-bucket".into(),
        target_key: k.into(),
        size: Some(10),
        outcome,
        error_class: failed.then(|| {
            if k.ends_with('2') || k.contains("slow") {
                "SlowDown".to_string()
            } else {
                "AccessDenied".to_string()
            }
        }),
        error_message: failed.then(|| format!("could not copy {k}")),
        attempts: 1,
        duration_ms: 3,
        finished_at: at,
        proof: None,
    }
}

/// Write one report file as an executor would.
async fn plant_report(loc: &ReportLocation, job: &str, executor: &str, rows: &[ReportRow]) {
    loc.store
        .put(
            &loc.report_key(job, executor, 0),
            encode_rows(rows).into(),
            &PutOptions::default(),
        )
        .await
        .unwrap();
}

fn job_record(id: &str, objects: u64, started: DateTime<Utc>) -> JobRecord {
    JobRecord {
        job_id: id.into(),
        source: "s3://src-bucket".into(),
        target: "s3://dst-bucket".into(),
        started_at: started,
        finished_at: Some(started + chrono::Duration::seconds(30)),
        objects,
        bytes: objects * 10,
        messages: objects.div_ceil(3),
        per_queue: BTreeMap::new(),
        skipped: BTreeMap::new(),
        target_root: None,
        prefix: String::new(),
        target_prefix: None,
        repairs: Vec::new(),
        sync: None,
    }
}

fn dir_location(path: &Path) -> ReportLocation {
    ReportLocation::new(Arc::new(DirStore::create(path).unwrap()), "")
}

// ---------------------------------------------------------------------------
// dlq and redrive on the embedded queue
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn dlq_groups_keys_by_class_and_returns_every_message() {
    let l = local(2).await;
    send_all(&*l.set.dead, dlq_mix(), MAX_MESSAGE_BYTES)
        .await
        .unwrap();

    let v = l.json(&["dlq"]);
    assert_eq!(
        (v["messages"].as_u64(), v["keys"].as_u64()),
        (Some(4), Some(5)),
        "{v}"
    );
    let class = |c: &str| {
        (
            v["classes"][c]["keys"].as_u64(),
            v["classes"][c]["messages"].as_u64(),
        )
    };
    assert_eq!(class("AccessDenied"), (Some(2), Some(1)));
    assert_eq!(class("SlowDown"), (Some(2), Some(2)));
    assert_eq!(class("BadMessage"), (Some(0), Some(1)));
    assert_eq!(class("MaxReceiveCount"), (Some(1), Some(1)));
    assert_eq!(v["partial"], false);
    let examples = v["classes"]["AccessDenied"]["examples"].as_array().unwrap();
    assert_eq!(examples[0], "a1: AccessDenied on a1");
    assert!(v["classes"]["BadMessage"]["examples"][0]
        .as_str()
        .unwrap()
        .contains("message is not JSON"));
    assert_eq!(depth(&*l.set.dead).await, (4, 0), "every message is back");

    let text = l.commander(&["dlq"]);
    text.assert_ok("dlq");
    assert!(
        text.stdout
            .contains("s3-migration-dead: 4 messages, 5 keys"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("e.g. a1: AccessDenied on a1"),
        "{}",
        text.stdout
    );

    let v = l.json(&["dlq", "--max", "2"]);
    assert_eq!(
        (v["messages"].as_u64(), v["partial"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(depth(&*l.set.dead).await, (4, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn redrive_one_class_then_the_rest_then_bad_bodies_loses_nothing() {
    let l = local(2).await;
    send_all(&*l.set.dead, dlq_mix(), MAX_MESSAGE_BYTES)
        .await
        .unwrap();

    let v = l.json(&["redrive", "--dry-run"]);
    assert_eq!(v["dry_run"], true);
    assert_eq!(
        (v["moved_messages"].as_u64(), v["moved_keys"].as_u64()),
        (Some(3), Some(5)),
        "{v}"
    );
    assert_eq!(v["bad_skipped"].as_u64(), Some(1));
    assert_eq!(depth(&*l.set.dead).await, (4, 0));
    for q in &l.set.work {
        assert_eq!(depth(&**q).await, (0, 0), "a dry run sends nothing");
    }

    // Only AccessDenied: a1 and a2 go back to the queue they failed on; a3 stays parked.
    let v = l.json(&["redrive", "--error-class", "AccessDenied"]);
    assert_eq!(
        (v["moved_messages"].as_u64(), v["moved_keys"].as_u64()),
        (Some(1), Some(2)),
        "{v}"
    );
    assert_eq!(v["moved_by_class"]["AccessDenied"].as_u64(), Some(2));
    assert_eq!(v["per_queue"]["s3-migration-02"].as_u64(), Some(1));
    assert_eq!(v["kept_keys"].as_u64(), Some(3), "a3 + b1 + d1: {v}");
    assert_eq!(
        v["examined"].as_u64(),
        Some(4),
        "the re-parked a3 is not examined again: {v}"
    );
    assert_eq!(depth(&*l.set.dead).await, (4, 0));
    let peek = l.json(&["dlq"]);
    assert!(peek["classes"].get("AccessDenied").is_none(), "{peek}");
    assert_eq!(peek["classes"]["SlowDown"]["keys"].as_u64(), Some(2));
    let moved = drain(&*l.set.work[1]).await;
    assert_eq!(moved.len(), 1);
    let batch = decode(&moved[0].body).unwrap();
    let keys: Vec<&str> = batch.keys.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["a1", "a2"]);
    assert!(
        batch.keys.iter().all(|k| k.failure.is_none()),
        "failures are cleared"
    );
    assert_eq!(batch.keys[0].size, Some(5), "listing facts survive");

    // Everything else that decodes.
    let v = l.json(&["redrive"]);
    assert_eq!(v["method"], "receive-send-delete");
    assert_eq!(
        (v["moved_messages"].as_u64(), v["moved_keys"].as_u64()),
        (Some(3), Some(3)),
        "{v}"
    );
    assert_eq!(v["bad_skipped"].as_u64(), Some(1));
    assert_eq!(
        depth(&*l.set.dead).await,
        (1, 0),
        "only the bad body is left"
    );

    // The bad body, on request.
    let v = l.json(&["redrive", "--include-bad"]);
    assert_eq!(v["moved_bad"].as_u64(), Some(1), "{v}");
    assert_eq!(depth(&*l.set.dead).await, (0, 0));

    let mut keys = BTreeMap::new();
    let mut bad = 0;
    for q in &l.set.work {
        for m in drain(&**q).await {
            match decode(&m.body) {
                Ok(b) => b
                    .keys
                    .iter()
                    .for_each(|k| *keys.entry(k.key.clone()).or_insert(0) += 1),
                Err(_) => {
                    assert_eq!(m.body, "garbage {");
                    bad += 1;
                }
            }
        }
    }
    let want: BTreeMap<String, i32> = ["a3", "b1", "d1"]
        .iter()
        .map(|k| (k.to_string(), 1))
        .collect();
    assert_eq!(keys, want, "each remaining key moved exactly once");
    assert_eq!(bad, 1);
}

// ---------------------------------------------------------------------------
// status
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn status_numbers_match_the_queues_and_the_reports() {
    let mut l = local(2).await;
    let now = Utc::now();
    // Queues: 3 messages on queue 1 (one of them in flight), 1 on queue 2, 1 in the DLQ.
    let body = |k: &str| {
        Outgoing::body(encode(&parked(
            "s3://src-bucket",
            "s3://dst-bucket",
            vec![key(k, None)],
        )))
    };
    send_all(
        &*l.set.work[0],
        vec![body("q1"), body("q2"), body("q3")],
        MAX_MESSAGE_BYTES,
    )
    .await
    .unwrap();
    send_all(&*l.set.work[1], vec![body("q4")], MAX_MESSAGE_BYTES)
        .await
        .unwrap();
    send_all(&*l.set.dead, vec![body("q5")], MAX_MESSAGE_BYTES)
        .await
        .unwrap();
    let held = l.set.work[0]
        .receive(1, Duration::ZERO, Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(held.len(), 1);

    // Without a report location: queue depths only.
    let v = l.json(&["status"]);
    let depths: Vec<(u64, u64, bool)> = v["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["visible"].as_u64().unwrap(),
                q["in_flight"].as_u64().unwrap(),
                q["dead"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(depths, [(2, 1, false), (1, 0, false), (1, 0, true)]);
    assert!(v["job"].is_null());
    assert!(v["notes"].to_string().contains("report.location"), "{v}");

    // Reports: an old job, and job-1 with 10 enqueued objects and 6 keys done.
    let reports = l.dir.path().join("reports");
    let loc = dir_location(&reports);
    l.set_env("REPORT_LOCATION", &reports.display().to_string());
    loc.write_job(&job_record("old-job", 3, now - chrono::Duration::hours(2)))
        .await
        .unwrap();
    loc.write_job(&job_record(
        "job-1",
        10,
        now - chrono::Duration::minutes(10),
    ))
    .await
    .unwrap();
    let src = "s3://src-bucket";
    let at = |s: i64| now - chrono::Duration::seconds(s);
    plant_report(
        &loc,
        "job-1",
        "e1",
        &[
            row("job-1", src, "k0", Outcome::Failed, at(100)),
            row("job-1", src, "k1", Outcome::Copied, at(90)),
            row("job-1", src, "k2", Outcome::SkippedIdentical, at(80)),
            row("job-1", src, "k3", Outcome::SourceMissing, at(70)),
            row("job-1", src, "k4", Outcome::Failed, at(60)),
            row("job-1", src, "k5", Outcome::Copied, at(55)),
        ],
    )
    .await;
    // k0 redriven and copied by another executor.
    plant_report(
        &loc,
        "job-1",
        "e2",
        &[row("job-1", src, "k0", Outcome::Copied, at(50))],
    )
    .await;

    let v = l.json(&["status"]);
    assert_eq!(v["job"]["job_id"], "job-1", "the newest job: {v}");
    let n = |f: &str| v[f].as_u64();
    assert_eq!(
        (n("enqueued"), n("done"), n("remaining")),
        (Some(10), Some(6), Some(4)),
        "{v}"
    );
    assert_eq!(
        (
            n("succeeded"),
            n("skipped"),
            n("source_missing"),
            n("failed")
        ),
        (Some(3), Some(1), Some(1), Some(1))
    );
    assert_eq!(n("bytes_done"), Some(30));
    let throughput = v["throughput_per_s"].as_f64().unwrap();
    assert!(throughput > 0.0, "{v}");
    let eta = v["eta_seconds"]
        .as_f64()
        .expect("an ETA while keys remain and keys finish");
    assert!((eta - 4.0 / throughput).abs() < 1e-6, "{v}");
    assert_eq!(v["queues"][0]["in_flight"].as_u64(), Some(1));

    // The rest finishes: done == enqueued, ETA 0.
    let rest: Vec<ReportRow> = (6..10)
        .map(|i| row("job-1", src, &format!("k{i}"), Outcome::Copied, at(5)))
        .collect();
    plant_report(&loc, "job-1", "e3", &rest).await;
    let v = l.json(&["status"]);
    assert_eq!(
        (v["done"].as_u64(), v["enqueued"].as_u64()),
        (Some(10), Some(10)),
        "{v}"
    );
    assert_eq!(
        (v["remaining"].as_u64(), v["eta_seconds"].as_f64()),
        (Some(0), Some(0.0))
    );
    let text = l.commander(&["status"]);
    text.assert_ok("status");
    assert!(
        text.stdout.contains("ETA         0 (nothing remains)"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("s3-migration-dead (DLQ)"),
        "{}",
        text.stdout
    );

    // An older job by id: nothing done, nothing finishing, so no ETA.
    let v = l.json(&["status", "--job-id", "old-job"]);
    assert_eq!(v["job"]["job_id"], "old-job");
    assert_eq!(
        (v["done"].as_u64(), v["remaining"].as_u64()),
        (Some(0), Some(3))
    );
    assert!(v["eta_seconds"].is_null(), "{v}");
}

/// A `--sync --delete` job: 4 copy/update keys (400 B) and 2 deletes (30 B
/// listed on the target) sent; 50 unchanged keys (5,000 B) and 1 target-newer
/// key (100 B) found by the diff and never sent. Reports so far: one copied,
/// one update found identical, one delete done, one failed.
#[tokio::test(flavor = "multi_thread")]
async fn status_shows_shift_style_progress_of_a_sync_job() {
    use common::listing::diff::{Count, Tally};
    let mut l = local(1).await;
    let reports = l.dir.path().join("reports");
    let loc = dir_location(&reports);
    l.set_env("REPORT_LOCATION", &reports.display().to_string());
    let now = Utc::now();
    let count = |files, bytes| Count { files, bytes };
    let mut record = job_record("sync-job", 6, now - chrono::Duration::minutes(10));
    record.bytes = 400;
    record.sync = Some(Tally {
        compared: 57,
        target_listed: 50,
        new: count(2, 200),
        changed: [("size".to_string(), count(2, 200))].into(),
        unchanged: count(50, 5_000),
        target_newer: count(1, 100),
        target_only: count(2, 30),
        deletes: count(2, 30),
    });
    loc.write_job(&record).await.unwrap();
    let src = "s3://src-bucket";
    let at = |s: i64| now - chrono::Duration::seconds(s);
    let sized = |k: &str, outcome, size, t| ReportRow {
        size: Some(size),
        ..row("sync-job", src, k, outcome, at(t))
    };
    plant_report(
        &loc,
        "sync-job",
        "e1",
        &[
            sized("new-1", Outcome::Copied, 100, 40),
            sized("changed-1", Outcome::SkippedIdentical, 100, 30),
            sized("gone-1", Outcome::Deleted, 20, 20),
            sized("changed-2", Outcome::Failed, 100, 10),
        ],
    )
    .await;

    let v = l.json(&["status"]);
    // The fields other tools read are unchanged: sent keys only.
    let n = |f: &str| v[f].as_u64();
    assert_eq!(
        (n("enqueued"), n("done"), n("remaining")),
        (Some(6), Some(4), Some(2)),
        "{v}"
    );
    let outcomes = ["succeeded", "skipped", "failed", "deleted"].map(n);
    assert_eq!(outcomes, [Some(1); 4], "{v}");
    let p = &v["progress"];
    assert_eq!(p["state"], "running", "{v}");
    let amounts = |unit: &str| -> Vec<u64> {
        [
            "total",
            "transferred",
            "unchanged",
            "skipped",
            "deleted",
            "failed",
            "remaining",
        ]
        .iter()
        .map(|f| {
            p[unit][f]
                .as_u64()
                .unwrap_or_else(|| panic!("{unit}.{f}: {p}"))
        })
        .collect()
    };
    // total = 6 sent + 50 unchanged + 1 target-newer; unchanged = 50 + the
    // identical update; skipped = the target-newer key; remaining = the
    // copy and the delete not reported yet.
    assert_eq!(amounts("files"), [57, 1, 51, 1, 1, 1, 2], "{p}");
    // total = 400 sent + 5,000 + 100 unsent + 30 to delete.
    assert_eq!(
        amounts("bytes"),
        [5_530, 100, 5_100, 100, 20, 100, 110],
        "{p}"
    );
    assert_eq!(p["percent_of"], "bytes");
    let pc = p["percent_complete"].as_f64().unwrap();
    assert!((pc - 5_320.0 * 100.0 / 5_530.0).abs() < 1e-9, "{p}");
    // 4 rows in the 5-minute window: 2 files remain at 4/300 files/s.
    let current = &p["throughput_current"];
    assert_eq!(current["seconds"].as_f64(), Some(300.0), "{p}");
    assert!((current["files_per_s"].as_f64().unwrap() - 4.0 / 300.0).abs() < 1e-9);
    assert!((current["bytes_per_s"].as_f64().unwrap() - 100.0 / 300.0).abs() < 1e-9);
    let time = |f: &str| {
        DateTime::parse_from_rfc3339(v[f].as_str().unwrap_or_else(|| panic!("{f}: {v}")))
            .unwrap_or_else(|e| panic!("{f} is not RFC 3339 ({e}): {v}"))
    };
    let end = DateTime::parse_from_rfc3339(p["estimated_end_time"].as_str().unwrap()).unwrap();
    let eta = (end - time("at")).num_milliseconds();
    assert!(
        (eta - 150_000).abs() <= 1,
        "estimated end {end}, {eta} ms after `at`"
    );
    assert!(
        p["throughput_overall"]["files_per_s"].as_f64().unwrap() > 0.0,
        "{p}"
    );

    let text = l.commander(&["status"]);
    text.assert_ok("status");
    for line in [
        "(succeeded 1, skipped 1, source missing 0, failed 1, deleted 1; 100 B written)\n",
        "progress    96.2% complete (of bytes), running\n",
        "  total                   57       5.4 KiB\n",
        "  unchanged               51       5.0 KiB\n",
        "  deleted                  1          20 B\n",
        "  remaining                2         110 B\n",
        "  ends        ",
    ] {
        assert!(text.stdout.contains(line), "{line:?} in\n{}", text.stdout);
    }

    // While the commander is still listing: the numbers so far, no percent
    // and no end time.
    record.job_id = "sync-listing".into();
    record.started_at = now;
    record.finished_at = None;
    loc.write_job(&record).await.unwrap();
    let v = l.json(&["status"]);
    let p = &v["progress"];
    assert_eq!(v["job"]["job_id"], "sync-listing");
    assert_eq!(
        (p["state"].as_str(), p["files"]["total"].as_u64()),
        (Some("listing"), Some(57)),
        "{p}"
    );
    assert!(
        p["percent_complete"].is_null() && p["estimated_end_time"].is_null(),
        "{p}"
    );
    let text = l.commander(&["status"]);
    text.assert_ok("status");
    assert!(
        text.stdout
            .contains("progress    listing: totals still grow"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("  ends        unknown while listing\n"),
        "{}",
        text.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_over_sqs_with_reports_in_s3() {
    let mut sb = Sandbox::new("opst", 2);
    sb.init();
    let bucket = testsupport::bucket("opst").await;
    sb.set("REPORT_LOCATION", &format!("s3://{bucket}/reports/"));
    let loc = ReportLocation::new(
        Arc::new(S3Store::new(testsupport::s3(), bucket.clone())),
        "reports/",
    );
    let now = Utc::now();
    loc.write_job(&job_record(
        "sqs-job",
        4,
        now - chrono::Duration::minutes(1),
    ))
    .await
    .unwrap();
    let src = "s3://src-bucket";
    plant_report(
        &loc,
        "sqs-job",
        "e1",
        &[
            row("sqs-job", src, "x1", Outcome::Copied, now),
            row("sqs-job", src, "x2", Outcome::Copied, now),
        ],
    )
    .await;
    testsupport::runs::send_raw(&sb.queue(2), &["one", "two"]).await;
    testsupport::runs::send_raw(&sb.dead(), &["three"]).await;

    let v = json_of(sb.commander(&["status", "--json"]), &["status"]);
    let visible: Vec<u64> = v["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["visible"].as_u64().unwrap())
        .collect();
    assert_eq!(visible, [0, 2, 1], "{v}");
    assert_eq!(v["job"]["job_id"], "sqs-job");
    assert_eq!(
        (v["done"].as_u64(), v["remaining"].as_u64()),
        (Some(2), Some(2)),
        "{v}"
    );
    assert!(v["eta_seconds"].as_f64().is_some_and(|e| e > 0.0), "{v}");
}

// ---------------------------------------------------------------------------
// report and the failures manifest
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn report_counts_the_corpus_and_its_manifest_reruns_exactly_the_failed_keys() {
    let mut l = local(1).await;
    let src = testsupport::bucket("oprep-src").await;
    let dst = testsupport::bucket("oprep-dst").await;
    let source = format!("s3://{src}");
    let reports = l.dir.path().join("reports");
    let loc = dir_location(&reports);
    l.set_env("REPORT_LOCATION", &reports.display().to_string());
    let now = Utc::now();
    loc.write_job(&job_record("rep-1", 15, now - chrono::Duration::hours(1)))
        .await
        .unwrap();
    let t = |s: i64| now - chrono::Duration::seconds(s);
    let mut rows: Vec<ReportRow> = (0..8)
        .map(|i| row("rep-1", &source, &format!("ok/{i}"), Outcome::Copied, t(30)))
        .collect();
    rows.push(row(
        "rep-1",
        &source,
        "skip/0",
        Outcome::SkippedIdentical,
        t(30),
    ));
    rows.push(row(
        "rep-1",
        &source,
        "gone/0",
        Outcome::SourceMissing,
        t(30),
    ));
    rows.push(row(
        "rep-1",
        &source,
        "fail/a b+c%.txt",
        Outcome::Failed,
        t(30),
    ));
    rows.push(row("rep-1", &source, "fail/2", Outcome::Failed, t(30)));
    rows.push(row("rep-1", &source, "fail/3", Outcome::Failed, t(30)));
    rows.push(row("rep-1", &source, "retry/1", Outcome::Failed, t(40)));
    plant_report(&loc, "rep-1", "e1", &rows).await;
    // retry/1 succeeded later (after a redrive), on another executor.
    plant_report(
        &loc,
        "rep-1",
        "e2",
        &[row("rep-1", &source, "retry/1", Outcome::Copied, t(10))],
    )
    .await;

    let manifest = l.dir.path().join("failed.csv");
    let manifest_arg = manifest.display().to_string();
    let v = l.json(&["report", "--failures-manifest", &manifest_arg]);
    let s = &v["summary"];
    let n = |f: &str| s[f].as_u64();
    assert_eq!(
        (
            n("total"),
            n("succeeded"),
            n("skipped"),
            n("source_missing"),
            n("failed"),
            n("bytes")
        ),
        (Some(14), Some(9), Some(1), Some(1), Some(3), Some(90)),
        "{v}"
    );
    assert_eq!(n("rows"), Some(15));
    assert_eq!(v["files"].as_u64(), Some(2));
    assert_eq!(v["without_outcome"].as_u64(), Some(1));
    assert_eq!(s["failures"]["AccessDenied"]["count"].as_u64(), Some(2));
    assert_eq!(s["failures"]["SlowDown"]["count"].as_u64(), Some(1));
    assert_eq!(v["failures_manifest"]["keys"].as_u64(), Some(3));
    let mut lines: Vec<String> = std::fs::read_to_string(&manifest)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!("{src},fail/2"),
            format!("{src},fail/3"),
            format!("{src},fail/a%20b%2Bc%25.txt")
        ]
    );

    let text = l.commander(&["report", "--job-id", "rep-1"]);
    text.assert_ok("report");
    assert!(text.stdout.contains("failed          3"), "{}", text.stdout);
    assert!(text.stdout.contains("AccessDenied"), "{}", text.stdout);

    // The same manifest to S3.
    let s3_manifest = format!("s3://{src}/manifests/failed.csv");
    l.json(&["report", "--failures-manifest", &s3_manifest]);
    let got = testsupport::s3()
        .get_object()
        .bucket(&src)
        .key("manifests/failed.csv")
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(got.as_ref(), std::fs::read(&manifest).unwrap().as_slice());

    // Feeding it back to `commander run` enqueues exactly the failed keys.
    let run = l.commander(&[
        "run",
        "--csv-manifest",
        &manifest_arg,
        "-t",
        &format!("s3://{dst}"),
        "--job-id",
        "rerun-1",
        "--json",
    ]);
    run.assert_ok("run --csv-manifest");
    let mut keys = Vec::new();
    for m in drain(&*l.set.work[0]).await {
        let b = decode(&m.body).unwrap();
        assert_eq!(
            (b.source.as_str(), b.job_id.as_str()),
            (source.as_str(), "rerun-1")
        );
        keys.extend(b.keys.into_iter().map(|k| k.key));
    }
    keys.sort();
    assert_eq!(keys, ["fail/2", "fail/3", "fail/a b+c%.txt"]);
}

// ---------------------------------------------------------------------------
// SQS: redrive, then an executor copies the keys
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn sqs_redrive_falls_back_and_an_executor_then_copies_the_keys() {
    let mut sb = Sandbox::new("oprd", 2);
    sb.init();
    let src = testsupport::bucket("oprd-src").await;
    let dst = testsupport::bucket("oprd-dst").await;
    for k in ["r/1", "r/2", "r/3"] {
        testsupport::put(&src, k, k.as_bytes().to_vec()).await;
    }
    let reports = sb.dir.path().join("reports");
    sb.set("REPORT_LOCATION", &reports.display().to_string());
    let denied = encode(&Batch {
        job_id: "redrive-job".into(),
        ..parked(
            &format!("s3://{src}"),
            &format!("s3://{dst}"),
            vec![
                key("r/1", Some("AccessDenied")),
                key("r/2", Some("AccessDenied")),
            ],
        )
    });
    let slow = encode(&Batch {
        job_id: "redrive-job".into(),
        ..parked(
            &format!("s3://{src}"),
            &format!("s3://{dst}"),
            vec![key("r/3", Some("SlowDown"))],
        )
    });
    testsupport::runs::send_raw(&sb.dead(), &[&denied, &slow, "not a message"]).await;

    let v = json_of(sb.commander(&["dlq", "--json"]), &["dlq"]);
    assert_eq!(
        v["classes"]["AccessDenied"]["keys"].as_u64(),
        Some(2),
        "{v}"
    );
    assert_eq!(v["classes"]["SlowDown"]["keys"].as_u64(), Some(1), "{v}");
    assert_eq!(
        v["classes"]["BadMessage"]["messages"].as_u64(),
        Some(1),
        "{v}"
    );
    assert_eq!(testsupport::runs::depths(&sb.dead()).await, (3, 0));

    let v = json_of(
        sb.commander(&["redrive", "--error-class", "AccessDenied", "--json"]),
        &["redrive"],
    );
    assert_eq!(v["moved_keys"].as_u64(), Some(2), "{v}");
    // No filter: StartMessageMoveTask is tried; moto lacks it, so messages move one by one.
    let v = json_of(sb.commander(&["redrive", "--json"]), &["redrive"]);
    assert_eq!(v["method"], "receive-send-delete", "{v}");
    assert_eq!(
        (v["moved_keys"].as_u64(), v["bad_skipped"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(testsupport::runs::depths(&sb.dead()).await, (1, 0));

    sb.executor(&["--until-empty"]).assert_ok("executor");
    let mut copied = testsupport::keys(&dst).await;
    copied.sort();
    assert_eq!(copied, ["r/1", "r/2", "r/3"]);
    let v = json_of(
        sb.commander(&["report", "--job-id", "redrive-job", "--json"]),
        &["report"],
    );
    assert_eq!(
        (
            v["summary"]["succeeded"].as_u64(),
            v["summary"]["failed"].as_u64()
        ),
        (Some(3), Some(0)),
        "{v}"
    );
}

// ---------------------------------------------------------------------------
// cleanup
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_aborts_only_old_enough_uploads_under_the_prefix() {
    let sb = Sandbox::new("opcl", 1);
    let bucket = testsupport::bucket("opcl").await;
    for k in ["tmp/a", "tmp/b", "keep/c"] {
        testsupport::s3()
            .create_multipart_upload()
            .bucket(&bucket)
            .key(k)
            .send()
            .await
            .unwrap();
    }
    let uploads = || async {
        let mut keys: Vec<String> = testsupport::s3()
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .unwrap()
            .uploads()
            .iter()
            .filter_map(|u| u.key().map(str::to_string))
            .collect();
        keys.sort();
        keys
    };
    let target = format!("s3://{bucket}/tmp/");

    // moto reports every upload as initiated on 2010-11-10: an age of a
    // century keeps them all, any realistic age aborts them.
    let v = json_of(
        sb.commander(&["cleanup", "-t", &target, "--older-than", "36500d", "--json"]),
        &["cleanup"],
    );
    assert_eq!(
        (
            v["found"].as_u64(),
            v["kept"].as_u64(),
            v["aborted"].as_u64()
        ),
        (Some(2), Some(2), Some(0)),
        "{v}"
    );

    let v = json_of(
        sb.commander(&[
            "cleanup",
            "-t",
            &target,
            "--older-than",
            "0s",
            "--dry-run",
            "--json",
        ]),
        &["cleanup"],
    );
    assert_eq!(
        (v["stale"].as_array().unwrap().len(), v["aborted"].as_u64()),
        (2, Some(0)),
        "{v}"
    );
    assert_eq!(uploads().await.len(), 3, "a dry run aborts nothing");

    let run = sb.commander(&["cleanup", "-t", &target, "--older-than", "24h"]);
    run.assert_ok("cleanup");
    assert!(run.stdout.contains("aborted      tmp/a"), "{}", run.stdout);
    assert_eq!(uploads().await, ["keep/c"]);

    let bad = sb.commander(&["cleanup", "-t", &target, "--older-than", "soon"]);
    assert!(!bad.status.success());
    assert!(bad.stderr.contains("--older-than"), "{}", bad.stderr);
}
