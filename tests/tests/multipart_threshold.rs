//! The multipart threshold's one rule, end to end on moto: an object of
//! **exactly** `--multipart-threshold` bytes is written in parts (target ETag
//! `…-N`), one byte less is one request (target ETag = the source's MD5), in
//! copy and downup modes. The AWS CLI's `multipart_threshold` means the same
//! (size >= threshold → multipart); `--help` and docs say "at least".

use md5::{Digest, Md5};
use testsupport::runs::Sandbox;
use testsupport::{bucket, put, s3};

const MIB: usize = 1024 * 1024;
/// 6 MiB threshold and 5 MiB parts: the object at the threshold is 2 parts.
const SIZES: [&str; 4] = ["--multipart-threshold", "6MiB", "--part-size", "5MiB"];

async fn etag(bucket: &str, key: &str) -> String {
    let head = s3().head_object().bucket(bucket).key(key).send().await;
    let head = head.unwrap_or_else(|e| panic!("head {bucket}/{key}: {e:?}"));
    head.e_tag().expect("etag").trim_matches('"').to_string()
}

async fn boundary(mode: &str) {
    let src = bucket("thr-src").await;
    let dst = bucket("thr-dst").await;
    let at = vec![7u8; 6 * MIB];
    let below = vec![9u8; 6 * MIB - 1];
    put(&src, "at-threshold.bin", at.clone()).await;
    put(&src, "below-threshold.bin", below.clone()).await;

    let sb = Sandbox::new(&format!("thr-{mode}"), 1);
    sb.init();
    sb.commander(&["run", "-s", &src, "-t", &dst])
        .assert_ok("commander run");
    let mut args = vec!["--mode", mode, "--until-empty"];
    args.extend(SIZES);
    let run = sb.executor(&args);
    run.assert_ok("executor");
    assert!(run.stdout.contains("0 failed"), "{}", run.stdout);

    let got = etag(&dst, "at-threshold.bin").await;
    assert!(
        got.ends_with("-2"),
        "{mode}: an object of exactly the threshold is written in 2 parts, ETag {got}"
    );
    let got = etag(&dst, "below-threshold.bin").await;
    assert_eq!(
        got,
        hex::encode(Md5::digest(&below)),
        "{mode}: one byte below the threshold is one request with the source's MD5"
    );
    // The split object is logged with the rule's wording.
    assert!(
        run.stderr
            .contains("is at or above the multipart threshold (6291456 bytes): written in 2 parts"),
        "{mode}: {}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_splits_at_exactly_the_threshold() {
    boundary("copy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downup_splits_at_exactly_the_threshold() {
    boundary("downup").await;
}

#[test]
fn help_says_at_least() {
    let out = std::process::Command::new(testsupport::bin("executor"))
        .arg("--help")
        .output()
        .expect("executor --help");
    let help = String::from_utf8_lossy(&out.stdout).replace('\n', " ");
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains("Objects at least this large are copied in parts"),
        "{help}"
    );
}
