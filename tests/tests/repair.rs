//! Closing the failure loop with the real binaries (issue 13): a run whose
//! target cannot take some keys, the failures manifest fed to `commander run
//! --repair JOB`, executors, and `commander report`/`status` of the original
//! job converging to 0 failed; `commander dlq --purge` removing exactly the
//! DLQ messages whose keys have all succeeded since. Also: the full target
//! (bucket and prefix) shown everywhere, check jobs saying "compared", and the
//! report naming source-missing and skipped keys and summing their proofs.
//!
//! Sources are buckets on the moto server of `scripts/test`; targets are local
//! directories (a file standing where a directory must go makes a key fail,
//! removing it fixes the cause) or moto buckets; the queue is the embedded one
//! and the reports go to a directory.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use testsupport::runs::{run_bin, Run};
use testsupport::{bucket, put, s3};

/// A temp directory with the queue file, the report directory and the cwd.
struct Local {
    tmp: tempfile::TempDir,
    queue_flag: String,
    env: Vec<(String, String)>,
}

impl Local {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(tmp.path().join("cwd")).unwrap();
        let queue_flag = format!("local:{}", tmp.path().join("q.db").display());
        let env = vec![
            ("QUEUE_NUM".to_string(), "1".to_string()),
            ("SQS_RECEIVE_MESSAGE_WAIT_TIME".to_string(), "1".to_string()),
            (
                "REPORT_LOCATION".to_string(),
                tmp.path().join("reports").display().to_string(),
            ),
            ("MIGRATION_LOG_LEVEL".to_string(), "warn".to_string()),
        ];
        let local = Local {
            tmp,
            queue_flag,
            env,
        };
        local.commander(&["init"]).assert_ok("commander init");
        local
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn bin(&self, name: &str, args: &[&str]) -> Run {
        let mut all = vec!["--queue", self.queue_flag.as_str()];
        all.extend_from_slice(args);
        run_bin(
            name,
            &all,
            &self.env,
            &self.path("cwd"),
            Duration::from_secs(300),
        )
    }

    fn commander(&self, args: &[&str]) -> Run {
        self.bin("commander", args)
    }

    /// `commander <args>`, asserting success; stdout.
    fn ok(&self, args: &[&str]) -> String {
        let run = self.commander(args);
        run.assert_ok(&format!("commander {args:?}"));
        run.stdout
    }

    /// `commander <args> --json`, asserting success; stdout parsed.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.ok(&all);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("commander {args:?} --json printed no JSON ({e}):\n{out}"))
    }

    /// Work the queues until they are empty. Keys that fail are parked (the
    /// exit status is another part's business), so only a clean run is asserted.
    fn executor(&self, args: &[&str], expect_clean: bool) -> Run {
        let mut all = vec!["--until-empty"];
        all.extend_from_slice(args);
        let run = self.bin("executor", &all);
        if expect_clean {
            run.assert_ok(&format!("executor {args:?}"));
        }
        run
    }

    fn job_record(&self, job: &str) -> Value {
        let path = self.path(&format!("reports/{job}/job.json"));
        serde_json::from_slice(&std::fs::read(&path).expect("job record")).unwrap()
    }

    /// The rows of a job's report files, each file's header checked to end
    /// with the `proof` column.
    fn report_rows(&self, job: &str) -> Vec<common::report::ReportRow> {
        use std::io::Read;
        let mut rows = Vec::new();
        let mut dirs = vec![self.path(&format!("reports/{job}"))];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.display().to_string();
                if path.is_dir() {
                    dirs.push(path);
                } else if name.ends_with(".csv.gz") {
                    let data = std::fs::read(&path).unwrap();
                    let mut text = String::new();
                    flate2::read::GzDecoder::new(data.as_slice())
                        .read_to_string(&mut text)
                        .unwrap();
                    let header = text.lines().next().unwrap_or_default();
                    assert!(header.ends_with(",finished_at,proof"), "{name}: {header}");
                    rows.extend(common::report::decode_rows(&data, &name).unwrap());
                }
            }
        }
        rows
    }

    /// `commander report` of a job whose `keys` all compared source and
    /// target once each: its proofs (text line and `summary.proofs`) add up
    /// to `keys` and match the `proof` column of the rows. Which proofs
    /// they are is the transfer's business.
    fn assert_proofs_add_up(&self, job: &str, keys: u64) {
        let rows = self.report_rows(job);
        assert_eq!(rows.len() as u64, keys, "{rows:#?}");
        let r = self.json(&["report", "--job-id", job]);
        let p = &r["summary"]["proofs"];
        let by_alg: u64 = p["checksum_by_algorithm"]
            .as_object()
            .unwrap_or_else(|| panic!("no summary.proofs in {r:#}"))
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(by_alg, n(p, "checksum"), "{r:#}");
        let count = |name: &str| {
            rows.iter()
                .filter(|row| row.proof.map_or("none", |p| p.as_str()).starts_with(name))
                .count() as u64
        };
        for f in ["checksum", "etag", "bytes"] {
            assert_eq!(n(p, f), count(f), "{f}: {r:#}\n{rows:#?}");
        }
        assert_eq!(n(p, "unproven"), count("none"), "{r:#}");
        let text = self.ok(&["report", "--job-id", job]);
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("proofs          "))
            .unwrap_or_else(|| panic!("no proofs line:\n{text}"));
        let without_algs = match (line.find(" ("), line.find(')')) {
            (Some(a), Some(b)) => format!("{}{}", &line[..a], &line[b + 1..]),
            _ => line.to_string(),
        };
        let total: u64 = without_algs
            .split(", ")
            .map(|part| {
                part.split(' ')
                    .next()
                    .unwrap()
                    .replace(',', "")
                    .parse::<u64>()
                    .unwrap()
            })
            .sum();
        assert_eq!(total, keys, "{text}");
    }
}

fn n(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("`{field}` is not a number in {v:#}"))
}

/// A file standing where the target needs a directory: the key under it fails.
fn block(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    std::fs::write(dir, b"in the way").unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repair_run_closes_the_failure_loop_and_purge_removes_what_succeeded() {
    let local = Local::new();
    let src = bucket("rp-src").await;
    for k in ["ops/ok.txt", "ops/fixed/a.txt", "ops/stuck/b.txt"] {
        put(&src, k, format!("body of {k}")).await;
    }
    // Listed, then gone before an executor gets to it: source-missing.
    put(&src, "ops/late.txt", "late").await;
    let target = local.path("tgt");
    block(&target.join("new/fixed"));
    block(&target.join("new/stuck"));
    let t = target.display().to_string();
    let src_url = format!("s3://{src}");

    let run = local.ok(&[
        "run",
        "-s",
        &src_url,
        "-p",
        "ops/",
        "-t",
        &t,
        "--target-prefix",
        "new/",
        "--job-id",
        "j1",
        "-b",
        "1",
    ]);
    assert!(
        run.contains(&format!("target   file://{t}/new/\n")),
        "the summary shows the full target:\n{run}"
    );
    s3().delete_object()
        .bucket(&src)
        .key("ops/late.txt")
        .send()
        .await
        .unwrap();
    local.executor(&["--mode", "copy"], false);

    let r = local.json(&["report", "--job-id", "j1"]);
    assert_eq!(n(&r["summary"], "failed"), 2, "{r:#}");
    assert_eq!(n(&r["summary"], "source_missing"), 1, "{r:#}");
    assert_eq!(r["source_missing_keys"]["keys"][0], "ops/late.txt", "{r:#}");
    let text = local.ok(&["report", "--job-id", "j1"]);
    assert!(
        text.contains("source missing  1\n      ops/late.txt\n"),
        "the report names the source-missing key:\n{text}"
    );
    let dlq = local.json(&["dlq"]);
    assert_eq!(n(&dlq, "messages"), 2, "{dlq:#}");

    // Fix one cause, and create the missing source; the other key stays stuck.
    std::fs::remove_file(target.join("new/fixed")).unwrap();
    put(&src, "ops/late.txt", "late").await;
    let manifest = local.path("failed.csv");
    let m = manifest.display().to_string();
    let r = local.json(&[
        "report",
        "--job-id",
        "j1",
        "--failures-manifest",
        &m,
        "--include-missing",
    ]);
    assert_eq!(n(&r["failures_manifest"], "keys"), 3, "{r:#}");
    assert_eq!(n(&r["failures_manifest"], "source_missing"), 1, "{r:#}");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains(&format!("{src},ops/late.txt\n")), "{text}");

    // The repair: no -t or -p (the job's), messages carry j1.
    let run = local.ok(&["run", "--repair", "j1", "--csv-manifest", &m]);
    assert!(run.starts_with("job j1\n"), "{run}");
    assert!(
        run.contains(&format!("target   file://{t}/new/\n")),
        "{run}"
    );
    local.executor(&["--mode", "copy"], false);
    assert_eq!(
        std::fs::read_to_string(target.join("new/fixed/a.txt")).unwrap(),
        "body of ops/fixed/a.txt",
        "the repaired key lands under the job's target prefix"
    );
    assert_eq!(
        std::fs::read_to_string(target.join("new/late.txt")).unwrap(),
        "late"
    );

    let r = local.json(&["report", "--job-id", "j1"]);
    let s = &r["summary"];
    assert_eq!(
        (n(s, "total"), n(s, "succeeded"), n(s, "failed")),
        (4, 3, 1),
        "each key once, its latest outcome: {r:#}"
    );
    assert_eq!(n(s, "source_missing"), 0, "{r:#}");
    let repairs = &local.job_record("j1")["repairs"];
    assert_eq!(repairs.as_array().map(Vec::len), Some(1), "{repairs:#}");
    assert_eq!(n(&repairs[0], "keys"), 3, "{repairs:#}");
    assert_eq!(
        n(&local.job_record("j1"), "objects"),
        4,
        "not counted twice"
    );

    // DLQ: the fixed key's message goes, the stuck key's two messages stay.
    let dry = local.json(&["dlq", "--purge"]);
    assert_eq!(
        (
            n(&dry, "removed_messages"),
            n(&dry, "kept_messages"),
            dry["dry_run"].as_bool()
        ),
        (1, 2, Some(true)),
        "{dry:#}"
    );
    assert_eq!(
        n(&local.json(&["dlq"]), "messages"),
        3,
        "--purge alone removes nothing"
    );
    let text = local.ok(&["dlq", "--purge", "--yes", "--job-id", "j1"]);
    assert!(
        text.contains("removed 1 messages") && text.contains("kept 2 messages"),
        "{text}"
    );
    assert!(text.contains("ops/stuck/b.txt (failed)"), "{text}");
    let dlq = local.json(&["dlq"]);
    assert_eq!(n(&dlq, "messages"), 2, "{dlq:#}");
    let other = local.json(&["dlq", "--purge", "--yes", "--job-id", "another-job"]);
    assert_eq!(
        (n(&other, "removed_messages"), n(&other, "not_selected")),
        (0, 2),
        "{other:#}"
    );

    // Fix the last cause; a second repair; the job converges to 0 failed.
    std::fs::remove_file(target.join("new/stuck")).unwrap();
    local.ok(&["report", "--job-id", "j1", "--failures-manifest", &m]);
    assert_eq!(
        std::fs::read_to_string(&manifest).unwrap(),
        format!("{src},ops/stuck/b.txt\n")
    );
    local.ok(&["run", "--repair", "j1", "--csv-manifest", &m]);
    local.executor(&["--mode", "copy"], true);
    let text = local.ok(&["report", "--job-id", "j1"]);
    assert!(text.contains("failed          0\n"), "{text}");
    assert!(text.contains("repair run"), "{text}");
    let st = local.json(&["status", "--job-id", "j1"]);
    assert_eq!((n(&st, "failed"), n(&st, "succeeded")), (0, 4), "{st:#}");
    let gone = local.json(&["dlq", "--purge", "--yes", "--error-class", "KeyConflict"]);
    let dlq = local.json(&["dlq"]);
    assert_eq!(
        (n(&gone, "removed_messages"), n(&dlq, "messages")),
        (2, 0),
        "{gone:#} {dlq:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repair_refuses_another_target_and_an_unknown_job() {
    let local = Local::new();
    let src = bucket("rp-ref").await;
    put(&src, "k", "v").await;
    let t = local.path("tgt").display().to_string();
    let other = local.path("other").display().to_string();
    local.ok(&["run", "-s", &src, "-t", &t, "--job-id", "j2"]);
    let run = local.commander(&["run", "--repair", "j2", "-s", &src, "-t", &other]);
    assert!(!run.status.success(), "{}", run.stdout);
    assert!(
        run.stderr.contains("--repair j2") && run.stderr.contains(&other),
        "{}",
        run.stderr
    );
    let run = local.commander(&["run", "--repair", "nope", "-s", &src]);
    assert!(!run.status.success());
    assert!(run.stderr.contains("--repair nope"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_full_target_is_shown_everywhere_and_check_jobs_say_compared() {
    let local = Local::new();
    let src = bucket("rp-full").await;
    let dst = bucket("rp-dst").await;
    for k in ["ops/a.txt", "ops/b.txt"] {
        put(&src, k, format!("body of {k}")).await;
    }
    let full = format!("s3://{dst}/new-prefix/");
    let args = |job: &'static str| {
        vec![
            "run".to_string(),
            "-s".into(),
            src.clone(),
            "-p".into(),
            "ops/".into(),
            "-t".into(),
            full.clone(),
            "--job-id".into(),
            job.to_string(),
        ]
    };
    let copy = args("full-copy");
    let copy: Vec<&str> = copy.iter().map(String::as_str).collect();
    let out = local.ok(&copy);
    assert!(out.contains(&format!("target   {full}\n")), "{out}");
    let mut with_json = copy.clone();
    with_json[8] = "full-json";
    let js = local.json(&with_json);
    assert_eq!(js["target"], full.as_str(), "{js:#}");
    assert_eq!(local.job_record("full-copy")["target"], full.as_str());
    local.executor(&["--mode", "copy"], true);
    let landed = testsupport::keys(&dst).await;
    assert_eq!(landed, ["new-prefix/a.txt", "new-prefix/b.txt"]);

    let status = local.ok(&["status", "--job-id", "full-copy"]);
    assert!(status.contains(&format!("-> {full}  (")), "{status}");
    let report = local.ok(&["report", "--job-id", "full-copy"]);
    assert!(report.contains(&format!("-> {full}\n")), "{report}");
    assert!(report.contains("B written)"), "{report}");
    local.assert_proofs_add_up("full-copy", 2);

    // A check job compares; it writes nothing.
    let check = args("full-check");
    let check: Vec<&str> = check.iter().map(String::as_str).collect();
    local.ok(&check);
    local.executor(&["--mode", "check"], true);
    let report = local.ok(&["report", "--job-id", "full-check"]);
    assert!(
        report.contains("succeeded       2  (34 B compared)"),
        "{report}"
    );
    assert!(!report.contains("written"), "{report}");
    let status = local.ok(&["status", "--job-id", "full-check"]);
    assert!(status.contains("; 34 B compared)"), "{status}");
    local.assert_proofs_add_up("full-check", 2);

    // --verify over the same keys: skipped-identical, and the report names them.
    let again = args("full-again");
    let again: Vec<&str> = again.iter().map(String::as_str).collect();
    local.ok(&again);
    local.executor(&["--mode", "copy", "--verify"], true);
    let r = local.json(&["report", "--job-id", "full-again", "--keys", "1"]);
    let named = r["skipped_keys"]["keys"][0].as_str().unwrap_or_default();
    assert!(
        [
            "ops/a.txt (skipped-identical)",
            "ops/b.txt (skipped-identical)"
        ]
        .contains(&named),
        "{r:#}"
    );
    assert_eq!(n(&r["skipped_keys"], "more"), 1, "{r:#}");
    let text = local.ok(&["report", "--job-id", "full-again", "--keys", "1"]);
    assert!(
        text.contains(&format!(
            "skipped         2\n      {named}\n      ... and 1 more\n"
        )),
        "{text}"
    );
    local.assert_proofs_add_up("full-again", 2);
}
