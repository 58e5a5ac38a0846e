//! The README's first command, `scripts/quickstart`, run as a newcomer would on
//! a clean clone: no AWS settings in the environment, no server. It must end
//! with an identical target, reports with nothing failed and a check job that
//! verified every file, and print a story (each step's `==>` line and what it
//! did), with no log line, no EMF metrics line and nothing alarming.
//! The test hands the script the debug binaries (`S3MIG_BIN_DIR`) so it does not
//! build a release.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use testsupport::runs::{wait_with_limit, Run};
use testsupport::{bin, workspace_root};

/// Regular files under `root`.
fn count_files(root: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let t = e.file_type().expect("file type");
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                n += 1;
            }
        }
    }
    n
}

/// A newcomer's environment: PATH and HOME, nothing AWS- or project-specific.
fn clean(cmd: &mut Command) -> &mut Command {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(home) = std::env::var_os("HOME") {
        cmd.env("HOME", home);
    }
    cmd
}

/// `commander report --job-id <job> --json` on the quick start's queue and reports.
fn report(work: &Path, job: &str) -> Value {
    let queue = format!("local:{}", work.join("queue.db").display());
    let mut cmd = Command::new(bin("commander"));
    clean(&mut cmd)
        .args(["--queue", &queue, "report", "--job-id", job, "--json"])
        .env("REPORT_LOCATION", work.join("reports"))
        .current_dir(work);
    let child = cmd.spawn().expect("start commander report");
    let run = wait_with_limit(child, Duration::from_secs(120), "commander report");
    run.assert_ok(&format!("commander report --job-id {job}"));
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("report of {job} is not JSON ({e}):\n{}", run.stdout))
}

/// The `==>` lines of `scripts/quickstart` (and one line of what each step
/// printed), in order: what was created, what moved, what was checked.
const STORY: &[&str] = &[
    "==> 1. sample data: ",
    "==> 2. commander init: the work queues and the DLQ",
    "s3-migration-dead",
    "==> 3. commander run: list ",
    "303",
    "==> 4. two executors copy every key to ",
    "executor: queues empty: ",
    "==> 5. a check job: commander run again, executor --mode check compares",
    "(verified 303)",
    "==> 6. commander status: ",
    "==> 7. commander report: ",
    "copied 303",
    "==> commander report of the check job",
    "verified 303",
    "==> target is identical to source (diff -r)",
];

/// Log lines (text format: `<timestamp>  INFO target: …`; JSON: `"level":`).
fn log_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| {
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                .iter()
                .any(|lvl| l.contains(&format!(" {lvl} ")))
                || l.contains("\"level\":")
        })
        .collect()
}

/// Lines a newcomer would find alarming.
fn scary_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| {
            l.contains(" WARN ")
                || l.contains(" ERROR ")
                || l.contains("panicked")
                || l.starts_with("Error")
                || l.starts_with("error")
        })
        .collect()
}

#[test]
fn quickstart_migrates_checks_and_reports_cleanly() {
    let bin_dir = bin("commander")
        .parent()
        .expect("binary directory")
        .to_path_buf();
    let tmp = tempfile::tempdir().expect("temp dir");
    let work = tmp.path().join("quickstart");

    let mut cmd = Command::new(workspace_root().join("scripts/quickstart"));
    clean(&mut cmd).arg(&work).env("S3MIG_BIN_DIR", &bin_dir);
    let child = cmd.spawn().expect("start scripts/quickstart");
    let run: Run = wait_with_limit(child, Duration::from_secs(600), "scripts/quickstart");
    run.assert_ok("scripts/quickstart");
    let out = &run.stdout;

    assert!(
        out.contains("==> target is identical to source (diff -r)"),
        "the quick start must say the target is identical:\n{out}"
    );
    // `commander report` as the script printed it: nothing failed, twice
    // (the copy job and the check job).
    let failed_zero = out
        .lines()
        .filter(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some("failed") && w.next() == Some("0") && w.next().is_none()
        })
        .count();
    assert_eq!(failed_zero, 2, "both reports must show `failed 0`:\n{out}");

    // The same reports as JSON: every file copied, then verified.
    let files = count_files(&work.join("source"));
    assert!(files > 300, "sample data: {files} files");
    assert_eq!(
        count_files(&work.join("target")),
        files,
        "files in the target"
    );
    let job = out
        .lines()
        .find_map(|l| l.strip_prefix("job ").map(str::trim))
        .unwrap_or_else(|| panic!("no `job <id>` line in the output:\n{out}"))
        .to_string();
    let copy = report(&work, &job);
    assert_eq!(copy["summary"]["failed"], 0, "{copy:#}");
    assert_eq!(copy["summary"]["succeeded"], files, "{copy:#}");
    assert_eq!(copy["summary"]["by_outcome"]["copied"], files, "{copy:#}");
    let check = report(&work, &format!("{job}-check"));
    assert_eq!(check["summary"]["failed"], 0, "{check:#}");
    assert_eq!(
        check["summary"]["by_outcome"]["verified"], files,
        "the check job must verify every key: {check:#}"
    );

    // A story, not a log: no CloudWatch EMF line (the script leaves
    // `--metrics` at `none`) and no log line at all on a clean run (the
    // binaries log at `warn`, so notes like "target ETag is -3" stay out).
    let both = format!("{out}\n{}", run.stderr);
    let emf: Vec<&str> = both.lines().filter(|l| l.contains("\"_aws\"")).collect();
    assert!(emf.is_empty(), "EMF lines in the quick start: {emf:?}");
    let logs: Vec<&str> = log_lines(&both);
    assert!(
        logs.is_empty(),
        "the quick start printed {} log line(s), e.g.:\n{}",
        logs.len(),
        logs.iter().take(5).copied().collect::<Vec<_>>().join("\n")
    );
    // Each step of the story, in order.
    let mut rest = out.as_str();
    for step in STORY {
        let at = rest
            .find(step)
            .unwrap_or_else(|| panic!("step `{step}` missing or out of order in:\n{out}"));
        rest = &rest[at + step.len()..];
    }
    assert!(
        out.contains(&format!("({files} files")) || out.contains(&format!(": {files} files")),
        "the sample-data step names the number of files ({files}):\n{out}"
    );

    // Nothing alarming for a newcomer.
    let scary: Vec<&str> = scary_lines(out)
        .into_iter()
        .chain(scary_lines(&run.stderr))
        .collect();
    assert!(
        scary.is_empty(),
        "the quick start printed {} alarming line(s), e.g.:\n{}",
        scary.len(),
        scary.iter().take(5).copied().collect::<Vec<_>>().join("\n")
    );
}
