//! `commander run --csv-manifest` (S3 Batch Operations format) against moto:
//! local and s3:// manifests, several buckets, RFC 3986 keys, version ids,
//! prefix/target-prefix; bad rows and flag combinations fail naming the input.

mod commander_support;

use commander_support::*;
use testsupport::runs::drain;

const MANIFEST: &str = "src-one,a%20b+c%2Bd.txt,\n\
src-one,\"dir/caf%C3%A9\",3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY\n\
\n\
src-two,plain/key\n\
src-one,logs/x.log\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_local_manifest_with_two_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.csv");
    std::fs::write(&path, MANIFEST).unwrap();
    let sb = sandbox(2);
    let (run, summary) = run_json(
        &sb,
        &[
            "--csv-manifest",
            &path.display().to_string(),
            "-t",
            "dst-bucket",
        ],
    );
    run.assert_ok("run --csv-manifest");
    let batches = read_back(&sb, 2).await;
    let mut got: Vec<(String, String, Option<String>)> = batches
        .iter()
        .flat_map(|(_, _, b)| {
            b.keys
                .iter()
                .map(move |k| (b.source.clone(), k.key.clone(), k.version_id.clone()))
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("s3://src-one".into(), "a b+c+d.txt".into(), None),
            (
                "s3://src-one".into(),
                "dir/café".into(),
                Some("3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY".into())
            ),
            ("s3://src-one".into(), "logs/x.log".into(), None),
            ("s3://src-two".into(), "plain/key".into(), None),
        ]
    );
    // One message per source bucket: a batch never mixes buckets.
    assert_eq!(num(&summary, "messages"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_s3_manifest_with_prefix_and_target_prefix() {
    let inv = testsupport::bucket("cmd-csv").await;
    testsupport::put(&inv, "jobs/manifest.csv", MANIFEST.as_bytes().to_vec()).await;
    let sb = sandbox(1);
    let url = format!("s3://{inv}/jobs/manifest.csv");
    let (run, summary) = run_json(
        &sb,
        &[
            "--csv-manifest",
            &url,
            "-s",
            "src-one",
            "-t",
            "dst-bucket",
            "-p",
            "dir/",
            "--target-prefix",
            "new/",
        ],
    );
    // -s restricts rows to one bucket: src-two's row is an error naming its line.
    assert!(!run.status.success());
    assert!(run.stderr.contains(&format!("{url}:4")), "{}", run.stderr);
    assert!(
        drain(&sb.queue(1)).await.is_empty(),
        "nothing is sent from a bad manifest"
    );
    let _ = summary;

    let (run, summary) = run_json(
        &sb,
        &[
            "--csv-manifest",
            &url,
            "-t",
            "dst-bucket",
            "-p",
            "dir/",
            "--target-prefix",
            "new/",
        ],
    );
    run.assert_ok("run --csv-manifest s3://");
    let batches = read_back(&sb, 1).await;
    assert_eq!(batches.len(), 1);
    let k = &batches[0].2.keys[0];
    assert_eq!((k.key.as_str(), k.target_key()), ("dir/café", "new/café"));
    assert_eq!(summary["skipped"]["prefix"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_rows_and_bad_combinations_name_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.csv");
    std::fs::write(&path, "src-one,ok\nsrc-one,a,b,c\n").unwrap();
    let path = path.display().to_string();
    let sb = sandbox(1);
    let run = sb.commander(&["run", "--csv-manifest", &path, "-t", "dst-bucket"]);
    assert!(!run.status.success());
    assert!(run.stderr.contains(&format!("{path}:2")), "{}", run.stderr);

    let run = sb.commander(&[
        "run",
        "--csv-manifest",
        &path,
        "-m",
        "s3://x-bucket/m/",
        "-t",
        "dst-bucket",
    ]);
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("--csv-manifest") && run.stderr.contains("--manifest-path"),
        "{}",
        run.stderr
    );

    let run = sb.commander(&["run", "--csv-manifest", &path]);
    assert!(!run.status.success());
    assert!(run.stderr.contains("--target-bucket"), "{}", run.stderr);

    let missing = dir.path().join("missing.csv").display().to_string();
    let run = sb.commander(&["run", "--csv-manifest", &missing, "-t", "dst-bucket"]);
    assert!(!run.status.success());
    assert!(run.stderr.contains(&missing), "{}", run.stderr);

    let run = sb.commander(&[
        "run",
        "--csv-manifest",
        &path,
        "-t",
        "dst-bucket",
        "--min-size",
        "1",
    ]);
    assert!(!run.status.success());
    assert!(run.stderr.contains("--min-size"), "{}", run.stderr);
    assert!(drain(&sb.queue(1)).await.is_empty());
}
