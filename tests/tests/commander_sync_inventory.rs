//! `commander run --sync --target-manifest-path`: the target side of the
//! diff comes from the target's S3 Inventory (a local manifest with two
//! unsorted gzip CSV data files), not from a listing. The target bucket is
//! left empty on purpose: every "unchanged", "changed" and "target-only"
//! below can only come from the inventory. Sources: a moto bucket (-s) and
//! an inventory of it (-m).

mod commander_support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use commander_support::*;
use common::message::Op;
use md5::{Digest, Md5};

const SCHEMA: &str =
    "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag";

fn row(key: &str, latest: bool, marker: bool, size: usize, etag: &str) -> String {
    format!(
        "\"b\",\"{}\",\"\",\"{latest}\",\"{marker}\",\"{size}\",\"2020-01-01T00:00:00.000Z\",\"{etag}\"\n",
        key.replace(' ', "+")
    )
}

fn gz(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

fn md5_hex(b: &[u8]) -> String {
    hex::encode(Md5::digest(b))
}

/// A local inventory: the data files (each a list of rows) and a manifest
/// with their sizes and MD5s; returns the manifest's path.
fn write_inventory(dir: &Path, bucket: &str, files: &[Vec<String>]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let mut entries = Vec::new();
    for (i, rows) in files.iter().enumerate() {
        let data = gz(&rows.concat());
        let name = format!("part-{i}.csv.gz");
        std::fs::write(dir.join(&name), &data).unwrap();
        entries.push(serde_json::json!({
            "key": format!("{bucket}/inv/data/{name}"),
            "size": data.len(),
            "MD5checksum": md5_hex(&data),
        }));
    }
    let m = serde_json::json!({
        "sourceBucket": bucket,
        "destinationBucket": "arn:aws:s3:::inventories",
        "version": "2016-11-30",
        "fileFormat": "CSV",
        "fileSchema": SCHEMA,
        "files": entries,
    });
    let path = dir.join("manifest.json");
    std::fs::write(&path, m.to_string()).unwrap();
    path.display().to_string()
}

/// The source objects (key, body).
fn source_objects() -> Vec<(String, Vec<u8>)> {
    [
        ("same/1", "one"),
        ("same/2 x", "two"),
        ("same/3", "three"),
        ("chg/size", "grown body"),
        ("chg/etag", "same size A"),
        ("new/1", "n1"),
        ("new/2", "n2"),
    ]
    .iter()
    .map(|(k, b)| (k.to_string(), b.as_bytes().to_vec()))
    .collect()
}

/// The target's inventory: target keys under `copy/`, in no key order,
/// split over two files; plus rows the diff must ignore.
fn target_rows() -> Vec<Vec<String>> {
    let same = |k: &str, body: &str| {
        row(
            &format!("copy/{k}"),
            true,
            false,
            body.len(),
            &md5_hex(body.as_bytes()),
        )
    };
    vec![
        vec![
            same("same/3", "three"),
            row("copy/gone/1", true, false, 4, "dead"),
            same("same/1", "one"),
            row("elsewhere/not-ours", true, false, 1, "ee"),
            row("copy/chg/size", true, false, 3, "aa"),
        ],
        vec![
            row("copy/chg/etag", true, false, "same size A".len(), "bb"),
            // An old version and a delete marker: not objects of the target.
            row("copy/gone/old", false, false, 9, "cc"),
            row("copy/gone/marker", true, true, 0, ""),
            same("same/2 x", "two"),
        ],
    ]
}

fn ops(
    batches: &[(usize, usize, common::message::Batch)],
) -> BTreeMap<String, (Op, Option<String>)> {
    batches
        .iter()
        .flat_map(|(_, _, b)| b.keys.iter())
        .map(|k| (k.key.clone(), (k.op, k.target_key.clone())))
        .collect()
}

fn assert_tally(summary: &serde_json::Value) {
    let sync = &summary["sync"];
    let files = |v: &serde_json::Value| v["files"].as_u64().unwrap_or(0);
    assert_eq!(files(&sync["new"]), 2, "{sync}");
    assert_eq!(files(&sync["changed"]["size"]), 1, "{sync}");
    assert_eq!(files(&sync["changed"]["etag"]), 1, "{sync}");
    assert_eq!(files(&sync["unchanged"]), 3, "{sync}");
    assert_eq!(files(&sync["target_only"]), 1, "{sync}");
    assert_eq!(files(&sync["deletes"]), 1, "{sync}");
    assert_eq!(sync["compared"], 8, "{sync}");
    assert_eq!(
        sync["target_listed"], 6,
        "rows under the target prefix: {sync}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_target_inventory_replaces_the_target_listing() {
    let src = testsupport::bucket("cmd-sinv-src").await;
    let tgt = testsupport::bucket("cmd-sinv-tgt").await;
    for (k, b) in source_objects() {
        testsupport::put(&src, &k, b).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = write_inventory(&dir.path().join("target"), &tgt, &target_rows());
    let sb = sandbox(1);
    let target = format!("s3://{tgt}/copy/");
    let base = [
        "-s",
        &src,
        "-t",
        &target,
        "--sync",
        "--delete",
        "--target-manifest-path",
        &m,
    ];

    let mut dry = base.to_vec();
    dry.push("--dry-run");
    let (run, summary) = run_json(&sb, &dry);
    run.assert_ok("dry run");
    assert_tally(&summary);
    assert!(
        read_back(&sb, 1).await.is_empty(),
        "a dry run sends nothing"
    );

    let (run, summary) = run_json(&sb, &base);
    run.assert_ok("sync run");
    assert_tally(&summary);
    let got = ops(&read_back(&sb, 1).await);
    let t = |k: &str| Some(format!("copy/{k}"));
    let want: BTreeMap<String, (Op, Option<String>)> = [
        ("new/1", Op::Copy),
        ("new/2", Op::Copy),
        ("chg/size", Op::Copy),
        ("chg/etag", Op::Update),
        ("gone/1", Op::Delete),
    ]
    .into_iter()
    .map(|(k, op)| (k.to_string(), (op, t(k))))
    .collect();
    assert_eq!(got, want);

    // The same source as an inventory (-m): the same diff.
    let rows: Vec<String> = source_objects()
        .iter()
        .rev()
        .map(|(k, b)| row(k, true, false, b.len(), &md5_hex(b)))
        .collect();
    let sm = write_inventory(&dir.path().join("source"), &src, &[rows]);
    let mut from_inventory = vec!["-m", &sm];
    from_inventory.extend_from_slice(&base);
    let (run, summary) = run_json(&sb, &from_inventory);
    run.assert_ok("sync run from an inventory");
    assert_tally(&summary);
    assert_eq!(ops(&read_back(&sb, 1).await), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_target_inventories_and_combinations_fail_naming_the_input() {
    let src = testsupport::bucket("cmd-sinv-bad").await;
    let tgt = testsupport::bucket("cmd-sinv-badt").await;
    let dir = tempfile::tempdir().unwrap();
    let m = write_inventory(&dir.path().join("t"), &src, &target_rows());
    let sb = sandbox(1);
    // -m with --sync needs the target's inventory too.
    let (run, _) = run_json(&sb, &["-m", &m, "-t", &tgt, "--sync", "--dry-run"]);
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("--target-manifest-path"),
        "{}",
        run.stderr
    );
    // The flag needs --sync.
    let (run, _) = run_json(&sb, &["-s", &src, "-t", &tgt, "--target-manifest-path", &m]);
    assert!(!run.status.success());
    assert!(run.stderr.contains("--sync"), "{}", run.stderr);
    // A corrupt data file: named, and nothing sent.
    std::fs::write(dir.path().join("t/part-1.csv.gz"), b"garbage").unwrap();
    let (run, _) = run_json(
        &sb,
        &[
            "-s",
            &src,
            "-t",
            &tgt,
            "--sync",
            "--target-manifest-path",
            &m,
        ],
    );
    assert!(!run.status.success());
    assert!(run.stderr.contains("part-1.csv.gz"), "{}", run.stderr);
    assert!(read_back(&sb, 1).await.is_empty());
}
