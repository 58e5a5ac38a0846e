//! The README's "S3 → S3: the recipe", run as written: its settings block
//! (AWS, or an S3-compatible store) and its command block are taken from
//! README.md by their `<!-- recipe: … -->` markers and run with bash, `set -e`,
//! the debug binaries first on `PATH`, and only the placeholders replaced by
//! moto's (endpoint, bucket names). "AWS" is SQS and S3 on moto (the endpoint
//! comes from the environment, as a user's credentials would); the
//! S3-compatible store is S3 on moto through the recipe's own `COPY_*`
//! settings, with the embedded queue. Every command must exit 0, every object
//! must arrive exact (bytes and ETag, a multipart source included) and the
//! reports must say 0 failed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use testsupport::runs::wait_with_limit;
use testsupport::scenario::put_multipart;
use testsupport::{bin, bucket, endpoint, keys, put, s3, server_env, unique, workspace_root};

const AWS: &str = "<!-- recipe: AWS settings -->";
const COMPATIBLE: &str = "<!-- recipe: S3-compatible settings -->";
const COMMANDS: &str = "<!-- recipe: commands -->";
const MIB: usize = 1024 * 1024;

fn readme() -> String {
    std::fs::read_to_string(workspace_root().join("README.md")).expect("read README.md")
}

/// The ```sh block right after `marker` in the README.
fn block(readme: &str, marker: &str) -> String {
    let at = readme
        .find(marker)
        .unwrap_or_else(|| panic!("README.md has no `{marker}` line"));
    let rest = readme[at + marker.len()..].trim_start();
    let body = rest
        .strip_prefix("```sh\n")
        .unwrap_or_else(|| panic!("the line after `{marker}` must open a ```sh block"));
    let end = body.find("\n```").expect("the recipe block is closed");
    body[..end].to_string()
}

/// Replace a placeholder the recipe must contain.
fn fill(script: String, placeholder: &str, value: &str) -> String {
    assert!(
        script.contains(placeholder),
        "the recipe no longer names `{placeholder}`:\n{script}"
    );
    script.replace(placeholder, value)
}

/// Source objects: small, empty, awkward names, nested, and a 2-part multipart
/// source (5 MiB + 1 MiB) whose ETag `-2` must survive.
async fn put_source(src: &str) -> Vec<String> {
    let small: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let objects: [(&str, Vec<u8>); 4] = [
        ("photos/2026/a b+c%d.jpg", small.clone()),
        ("empty", Vec::new()),
        ("\u{fc}/\u{e9}t\u{e9}.txt", b"unicode".to_vec()),
        ("deep/x/y/z.bin", small.repeat(30)),
    ];
    for (k, v) in &objects {
        put(src, k, v.clone()).await;
    }
    let big: Vec<u8> = (0..6 * MIB).map(|i| (i * 31 % 253) as u8).collect();
    put_multipart(src, "multi/big.bin", &big, 5 * MIB).await;
    let mut all: Vec<String> = objects.iter().map(|(k, _)| k.to_string()).collect();
    all.push("multi/big.bin".to_string());
    all.sort();
    all
}

async fn object(bucket: &str, key: &str) -> (Vec<u8>, String) {
    let out = s3().get_object().bucket(bucket).key(key).send().await;
    let out = out.unwrap_or_else(|e| panic!("get {bucket}/{key}: {e:?}"));
    let etag = out.e_tag().expect("etag").to_string();
    (
        out.body.collect().await.unwrap().into_bytes().to_vec(),
        etag,
    )
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?} is not JSON ({e}):\n{text}"))
}

/// Run the recipe with the settings block after `settings`, in a scratch
/// directory (also `HOME`) with `env` and nothing else of ours.
async fn run_recipe(settings: &str, env: &[(String, String)]) {
    let src = bucket("recipe-src").await;
    let dst = bucket("recipe-dst").await;
    let reports = bucket("recipe-reports").await;
    let keys_in = put_source(&src).await;

    let readme = readme();
    let script = format!(
        "{}\n{}\n",
        block(&readme, settings),
        block(&readme, COMMANDS)
    );
    let script = fill(script, "my-source-bucket", &src);
    let script = fill(script, "my-target-bucket", &dst);
    let script = fill(script, "my-report-bucket", &reports);
    let script = if settings == COMPATIBLE {
        fill(script, "https://s3.example.com", &endpoint())
    } else {
        script
    };
    // The test's own look at the job afterwards, as JSON.
    let script = format!(
        "set -euxo pipefail\n{script}\n\
         commander report --job-id \"$JOB\" --json > copy.json\n\
         commander report --job-id \"$JOB-check\" --json > check.json\n"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let bin_dir = bin("commander").parent().expect("bin dir").to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", path)
        .env("HOME", dir.path())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("start bash");
    let run = wait_with_limit(child, Duration::from_secs(600), "the README recipe");
    run.assert_ok(&format!("the README recipe ({settings})"));

    // Every object exact, nothing else in the target.
    let mut got = keys(&dst).await;
    got.sort();
    assert_eq!(got, keys_in, "target keys");
    for key in &keys_in {
        let (want, want_etag) = object(&src, key).await;
        let (have, have_etag) = object(&dst, key).await;
        assert!(have == want, "{key}: bytes differ");
        assert_eq!(have_etag, want_etag, "{key}: ETag");
    }
    let n = keys_in.len();
    let copy = json(&dir.path().join("copy.json"));
    assert_eq!(copy["summary"]["failed"], 0, "{copy:#}");
    assert_eq!(copy["summary"]["succeeded"], n, "{copy:#}");
    assert_eq!(copy["summary"]["by_outcome"]["copied"], n, "{copy:#}");
    let check = json(&dir.path().join("check.json"));
    assert_eq!(check["summary"]["failed"], 0, "{check:#}");
    assert_eq!(check["summary"]["by_outcome"]["verified"], n, "{check:#}");
    // What the user reads: both printed reports say `failed 0`.
    let failed_zero = run
        .stdout
        .lines()
        .filter(|l| l.split_whitespace().collect::<Vec<_>>() == ["failed", "0"])
        .count();
    assert_eq!(failed_zero, 2, "printed reports:\n{}", run.stdout);
}

#[test]
fn the_recipe_follows_the_quick_start() {
    let readme = readme();
    let quick = readme
        .find("\n## Quick start")
        .expect("quick start section");
    let next = quick + 1 + readme[quick + 1..].find("\n## ").expect("a next section");
    assert!(
        readme[next..].starts_with("\n## S3 → S3"),
        "the section after the quick start must be the S3 → S3 recipe"
    );
    for marker in [AWS, COMPATIBLE, COMMANDS] {
        assert!(readme[next..].contains(marker), "{marker}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recipe_runs_on_aws_sqs_and_s3() {
    // The user's credentials and (here) the endpoint come from the
    // environment; unique queue names keep parallel tests apart.
    let prefix = unique("recipe");
    let mut env = server_env();
    env.extend(
        [
            ("QUEUE_NAME_PATTERN", format!("{prefix}-{{}}")),
            ("DEAD_QUEUE_NAME", format!("{prefix}-dead")),
            ("SQS_RECEIVE_MESSAGE_WAIT_TIME", "1".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    run_recipe(AWS, &env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recipe_runs_on_an_s3_compatible_store() {
    // Nothing from the environment: the recipe's COPY_* settings must suffice.
    run_recipe(COMPATIBLE, &[]).await;
}
