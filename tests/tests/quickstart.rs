//! The README's first command, `scripts/quickstart`, run as a newcomer would on
//! a clean clone: no AWS settings in the environment, no server. It must end
//! with an identical target, reports with nothing failed and a check job that
//! verified every file, and print nothing alarming (warnings, errors, panics).
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

    // The check executor runs with `--metrics emf`: its CloudWatch EMF lines
    // account for every object it verified.
    let emf: Vec<Value> = out
        .lines()
        .filter(|l| l.starts_with('{') && l.contains("\"_aws\""))
        .map(|l| serde_json::from_str(l).expect("EMF lines are JSON"))
        .collect();
    assert!(!emf.is_empty(), "no EMF line in the output");
    let objects: u64 = emf.iter().filter_map(|v| v["Objects"].as_u64()).sum();
    assert_eq!(
        objects, files as u64,
        "EMF Objects must add up to the verified keys"
    );
    assert!(emf.iter().all(
        |v| v["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "S3Migration" && v["Mode"] == "check"
    ));

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
