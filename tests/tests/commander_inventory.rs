//! `commander run -m` with S3 Inventory manifests in moto (and a local copy):
//! a real-format manifest with two gzip CSV data files (full `fileSchema`,
//! quoted fields, form-encoded keys) yields exactly the expected keys; bad
//! manifests fail naming the input and send nothing.

mod commander_support;

use std::io::Write;

use commander_support::*;
use md5::{Digest, Md5};
use testsupport::runs::drain;

const SCHEMA: &str = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass, IsMultipartUploaded, ReplicationStatus, EncryptionStatus, ObjectLockRetainUntilDate, ObjectLockMode, ObjectLockLegalHoldStatus, IntelligentTieringAccessTier, BucketKeyStatus, ChecksumAlgorithm, ObjectAccessControlList, ObjectOwner";

/// One inventory row with every column of [`SCHEMA`], all quoted.
fn row(
    key_encoded: &str,
    version: &str,
    latest: bool,
    marker: bool,
    size: &str,
    etag: &str,
) -> String {
    let fields = [
        "src-bucket",
        key_encoded,
        version,
        if latest { "true" } else { "false" },
        if marker { "true" } else { "false" },
        size,
        "2024-03-04T05:06:07.000Z",
        etag,
        "STANDARD",
        "false",
        "",
        "SSE-S3",
        "",
        "",
        "",
        "",
        "DISABLED",
        "",
        "",
        "123456789012",
    ];
    let quoted: Vec<String> = fields.iter().map(|f| format!("\"{f}\"")).collect();
    format!("{}\n", quoted.join(","))
}

fn gz(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

fn md5_hex(b: &[u8]) -> String {
    hex::encode(Md5::digest(b))
}

/// The two data files and the keys they should yield.
fn data_files() -> (Vec<u8>, Vec<u8>, Vec<String>) {
    let one = gz(&[
        row("photos/a+b.jpg", "v1", true, false, "10", "etag1"),
        row("photos/plus%2Bsign.jpg", "v2", true, false, "20", "etag2"),
        row("photos/old.jpg", "v0", false, false, "30", "etag3"),
        row("photos/deleted.jpg", "v9", true, true, "", ""),
        row(
            "caf%C3%A9/men%C3%BC+%26+more.txt",
            "",
            true,
            false,
            "40",
            "etag4",
        ),
    ]
    .concat());
    let two = gz(&[
        row("dir%2Fencoded%2Fslash", "", true, false, "50", "etag5"),
        row("100%25+sure%3F", "", true, false, "60", "etag6"),
        row("trailing/", "", true, false, "0", "etag7"),
    ]
    .concat());
    let keys = [
        "photos/a b.jpg",
        "photos/plus+sign.jpg",
        "café/menü & more.txt",
        "dir/encoded/slash",
        "100% sure?",
        "trailing/",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    (one, two, keys)
}

fn manifest(files: &[(&str, &[u8])], md5_override: Option<&str>, format: &str) -> String {
    let files: Vec<serde_json::Value> = files
        .iter()
        .map(|(key, data)| {
            serde_json::json!({
                "key": key,
                "size": data.len(),
                "MD5checksum": md5_override.map(str::to_string).unwrap_or_else(|| md5_hex(data)),
            })
        })
        .collect();
    serde_json::json!({
        "sourceBucket": "src-bucket",
        "destinationBucket": "arn:aws:s3:::inventory-bucket",
        "version": "2016-11-30",
        "creationTimestamp": "1709528767000",
        "fileFormat": format,
        "fileSchema": SCHEMA,
        "files": files,
    })
    .to_string()
}

/// Put a full inventory (two data files, two dated manifests) in a new bucket;
/// returns (bucket, newest manifest key, expected keys).
async fn inventory_in_s3(md5_override: Option<&str>) -> (String, String, Vec<String>) {
    let inv = testsupport::bucket("cmd-inv").await;
    let (one, two, keys) = data_files();
    let k1 = "src-bucket/daily/data/6f5c-one.csv.gz";
    let k2 = "src-bucket/daily/data/9a1e-two.csv.gz";
    testsupport::put(&inv, k1, one.clone()).await;
    testsupport::put(&inv, k2, two.clone()).await;
    let newest = "src-bucket/daily/2024-03-05T01-00Z/manifest.json";
    let m = manifest(&[(k1, &one), (k2, &two)], md5_override, "CSV");
    testsupport::put(&inv, newest, m.into_bytes()).await;
    // An older inventory listing only the first file: `-m <prefix>` must pick the newest.
    let older = manifest(&[(k1, &one)], None, "CSV");
    testsupport::put(
        &inv,
        "src-bucket/daily/2024-03-04T01-00Z/manifest.json",
        older.into_bytes(),
    )
    .await;
    testsupport::put(
        &inv,
        "src-bucket/daily/2024-03-05T01-00Z/manifest.checksum",
        b"x".to_vec(),
    )
    .await;
    (inv, newest.to_string(), keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inventory_yields_exactly_the_current_keys() {
    let (inv, newest, keys) = inventory_in_s3(None).await;
    let sb = sandbox(2);
    let manifest_url = format!("s3://{inv}/{newest}");
    let (run, summary) = run_json(&sb, &["-m", &manifest_url, "-t", "dst-bucket"]);
    run.assert_ok("commander run -m");
    let batches = read_back(&sb, 2).await;
    assert_exactly(&batches, &keys);
    assert_eq!(num(&summary, "bytes"), 10 + 20 + 40 + 50 + 60);
    assert_eq!(summary["skipped"]["delete_marker"], 1);
    assert_eq!(summary["skipped"]["not_latest"], 1);
    let first = batches
        .iter()
        .flat_map(|(_, _, b)| b.keys.iter().map(move |k| (b, k)))
        .find(|(_, k)| k.key == "photos/a b.jpg")
        .unwrap();
    assert_eq!(first.0.source, "s3://src-bucket");
    assert_eq!(first.1.size, Some(10));
    assert_eq!(first.1.etag.as_deref(), Some("\"etag1\""));
    assert_eq!(first.1.version_id.as_deref(), Some("v1"));
    assert_eq!(first.1.storage_class.as_deref(), Some("STANDARD"));
    assert_eq!(
        first.1.last_modified.unwrap().to_rfc3339(),
        "2024-03-04T05:06:07+00:00"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_manifest_prefix_picks_the_newest_and_s_overrides_the_source() {
    let (inv, _, keys) = inventory_in_s3(None).await;
    let sb = sandbox(1);
    let prefix = format!("s3://{inv}/src-bucket/daily/");
    let (run, _) = run_json(
        &sb,
        &[
            "-m",
            &prefix,
            "-s",
            "replica-bucket",
            "-t",
            "dst-bucket",
            "--min-size",
            "15",
        ],
    );
    run.assert_ok("commander run -m prefix");
    let batches = read_back(&sb, 1).await;
    // Newest manifest (both files), minus keys under 15 bytes.
    let want: Vec<String> = keys
        .into_iter()
        .filter(|k| k != "photos/a b.jpg" && k != "trailing/")
        .collect();
    assert_exactly(&batches, &want);
    assert!(batches
        .iter()
        .all(|(_, _, b)| b.source == "s3://replica-bucket"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_md5_fails_naming_the_file_and_sends_nothing() {
    let (inv, newest, _) = inventory_in_s3(Some("0123456789abcdef0123456789abcdef")).await;
    let sb = sandbox(1);
    let run = sb.commander(&[
        "run",
        "-m",
        &format!("s3://{inv}/{newest}"),
        "-t",
        "dst-bucket",
    ]);
    assert!(!run.status.success(), "{}", run.stdout);
    assert!(
        run.stderr
            .contains(&format!("s3://{inv}/src-bucket/daily/data/6f5c-one.csv.gz")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("MD5"), "{}", run.stderr);
    assert!(
        drain(&sb.queue(1)).await.is_empty(),
        "keys were sent before the checksum failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_manifests_fail_naming_the_input() {
    let inv = testsupport::bucket("cmd-invbad").await;
    let sb = sandbox(1);
    let fails = |args: &[&str], want: &[&str]| {
        let run = sb.commander(args);
        assert!(!run.status.success(), "{args:?} succeeded");
        for w in want {
            assert!(
                run.stderr.contains(w),
                "{args:?}: `{w}` not in\n{}",
                run.stderr
            );
        }
    };
    // Missing manifest.
    let missing = format!("s3://{inv}/nope/manifest.json");
    fails(
        &["run", "-m", &missing, "-t", "dst-bucket"],
        &[missing.as_str()],
    );
    // Malformed JSON.
    testsupport::put(&inv, "bad/manifest.json", b"{\"sourceBucket\": ".to_vec()).await;
    let bad = format!("s3://{inv}/bad/manifest.json");
    fails(
        &["run", "-m", &bad, "-t", "dst-bucket"],
        &[bad.as_str(), "manifest"],
    );
    // ORC and Parquet are named.
    testsupport::put(
        &inv,
        "orc/manifest.json",
        manifest(&[], None, "ORC").into_bytes(),
    )
    .await;
    let orc = format!("s3://{inv}/orc/manifest.json");
    fails(
        &["run", "-m", &orc, "-t", "dst-bucket"],
        &[orc.as_str(), "ORC"],
    );
    // A row with a wrong column count: file and line.
    let data = gz(&format!(
        "{}\"src-bucket\",\"short\"\n",
        row("ok", "", true, false, "1", "e")
    ));
    testsupport::put(&inv, "cols/data/x.csv.gz", data.clone()).await;
    testsupport::put(
        &inv,
        "cols/manifest.json",
        manifest(&[("cols/data/x.csv.gz", &data)], None, "CSV").into_bytes(),
    )
    .await;
    fails(
        &[
            "run",
            "-m",
            &format!("s3://{inv}/cols/manifest.json"),
            "-t",
            "dst-bucket",
        ],
        &[&format!("s3://{inv}/cols/data/x.csv.gz:2"), "columns"],
    );
    // A prefix without any manifest.
    fails(
        &[
            "run",
            "-m",
            &format!("s3://{inv}/empty/"),
            "-t",
            "dst-bucket",
        ],
        &["manifest.json"],
    );
    // Owner filters need ListObjectsV2.
    fails(
        &[
            "run",
            "-m",
            &format!("s3://{inv}/cols/manifest.json"),
            "-t",
            "dst-bucket",
            "--owner",
            "x",
        ],
        &["--owner"],
    );
    assert!(drain(&sb.queue(1)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_local_inventory_copy_works() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two, keys) = data_files();
    let k1 = "src-bucket/daily/data/one.csv.gz";
    let k2 = "src-bucket/daily/data/two.csv.gz";
    std::fs::create_dir_all(dir.path().join("src-bucket/daily/data")).unwrap();
    std::fs::create_dir_all(dir.path().join("src-bucket/daily/2024-03-05T01-00Z")).unwrap();
    std::fs::write(dir.path().join(k1), &one).unwrap();
    std::fs::write(dir.path().join(k2), &two).unwrap();
    std::fs::write(
        dir.path()
            .join("src-bucket/daily/2024-03-05T01-00Z/manifest.json"),
        manifest(&[(k1, &one), (k2, &two)], None, "CSV"),
    )
    .unwrap();
    let sb = sandbox(1);
    let (run, _) = run_json(
        &sb,
        &["-m", &dir.path().display().to_string(), "-t", "dst-bucket"],
    );
    run.assert_ok("commander run -m <dir>");
    assert_exactly(&read_back(&sb, 1).await, &keys);
}
