//! `commander run` filters against moto: prefix with target prefix,
//! include/exclude globs, size and date windows, owner rules. Each test checks
//! the keys that arrive and the per-filter skip counts of the summary.

mod commander_support;

use commander_support::*;

/// (key, size) of the test bucket.
const OBJECTS: [(&str, usize); 5] = [
    ("logs/a.txt", 10),
    ("logs/b.jpg", 1000),
    ("logs/tmp/c.jpg", 100),
    ("logs/deep/er/d.JPG", 300),
    ("data/e.jpg", 5000),
];

async fn bucket() -> String {
    let b = testsupport::bucket("cmd-filt").await;
    for (k, size) in OBJECTS {
        testsupport::put(&b, k, vec![b'x'; size]).await;
    }
    b
}

/// Run with extra flags; returns (keys → target keys, summary).
/// `source` is a bucket or an `s3://bucket/prefix` location.
async fn run_with(source: &str, extra: &[&str]) -> (Vec<(String, String)>, serde_json::Value) {
    let sb = sandbox(1);
    let mut args = vec!["-s", source, "-t", "dst-bucket"];
    args.extend_from_slice(extra);
    let (run, summary) = run_json(&sb, &args);
    run.assert_ok(&format!("run {extra:?}"));
    let mut keys: Vec<(String, String)> = read_back(&sb, 1)
        .await
        .into_iter()
        .flat_map(|(_, _, b)| {
            b.keys
                .into_iter()
                .map(|k| (k.key.clone(), k.target_key().to_string()))
        })
        .collect();
    keys.sort();
    (keys, summary)
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefix_target_prefix_and_globs() {
    let b = bucket().await;
    let (keys, summary) = run_with(
        &b,
        &[
            "-p",
            "logs/",
            "--target-prefix",
            "archive/",
            "--include",
            "*.jpg",
            "--include",
            "*.JPG",
            "--exclude",
            "*/tmp/*",
        ],
    )
    .await;
    assert_eq!(
        keys,
        pairs(&[
            ("logs/b.jpg", "archive/b.jpg"),
            ("logs/deep/er/d.JPG", "archive/deep/er/d.JPG")
        ])
    );
    assert_eq!(summary["skipped"]["include"], 1);
    assert_eq!(summary["skipped"]["exclude"], 1);

    // A prefix inside -s works the same; without a target prefix keys stay whole.
    let (keys, _) = run_with(&format!("s3://{b}/logs/deep/"), &[]).await;
    assert_eq!(keys, pairs(&[("logs/deep/er/d.JPG", "logs/deep/er/d.JPG")]));
    // ...and a prefix in -t is a target prefix.
    let sb = sandbox(1);
    let (run, _) = run_json(
        &sb,
        &[
            "-s",
            &format!("s3://{b}/data/"),
            "-t",
            "s3://dst-bucket/copy/",
        ],
    );
    run.assert_ok("run with prefixes in -s and -t");
    let got = read_back(&sb, 1).await;
    assert_eq!(got[0].2.keys[0].target_key(), "copy/e.jpg");
    assert_eq!(got[0].2.target, "s3://dst-bucket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn size_window_is_inclusive() {
    let b = bucket().await;
    let (keys, summary) = run_with(&b, &["--min-size", "100", "--max-size", "1000"]).await;
    let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["logs/b.jpg", "logs/deep/er/d.JPG", "logs/tmp/c.jpg"]
    );
    assert_eq!(summary["skipped"]["min_size"], 1);
    assert_eq!(summary["skipped"]["max_size"], 1);
    let (keys, _) = run_with(&b, &["--min-size", "4K"]).await;
    assert_eq!(keys, pairs(&[("data/e.jpg", "data/e.jpg")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn date_window_uses_last_modified() {
    let b = bucket().await;
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let (keys, summary) = run_with(&b, &["--modified-since", &tomorrow]).await;
    assert!(keys.is_empty(), "{keys:?}");
    assert_eq!(summary["skipped"]["modified_since"], OBJECTS.len());
    let (keys, _) = run_with(
        &b,
        &[
            "--modified-since",
            "2000-01-01",
            "--not-modified-since",
            &tomorrow,
        ],
    )
    .await;
    assert_eq!(keys.len(), OBJECTS.len());
    let (keys, summary) = run_with(&b, &["--not-modified-since", "2000-01-01T00:00:00Z"]).await;
    assert!(keys.is_empty());
    assert_eq!(summary["skipped"]["not_modified_since"], OBJECTS.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn owner_rules_keep_or_drop_by_owner() {
    let b = bucket().await;
    let listed = testsupport::s3()
        .list_objects_v2()
        .bucket(&b)
        .fetch_owner(true)
        .send()
        .await
        .unwrap();
    let owner = listed.contents()[0]
        .owner()
        .and_then(|o| o.id())
        .expect("moto returns owners")
        .to_string();
    let (keys, _) = run_with(&b, &["--owner", &owner]).await;
    assert_eq!(keys.len(), OBJECTS.len());
    let (keys, summary) = run_with(&b, &["--no-owner", &owner]).await;
    assert!(keys.is_empty());
    assert_eq!(summary["skipped"]["owner"], OBJECTS.len());
    let (keys, _) = run_with(&b, &["--owner", "someone-else"]).await;
    assert!(keys.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_filter_values_name_the_flag() {
    let sb = sandbox(1);
    for (flag, value) in [
        ("--min-size", "lots"),
        ("--modified-since", "last tuesday"),
        ("--include", "a[b"),
        ("--job-id", "a b"),
    ] {
        let run = sb.commander(&["run", "-s", "some-bucket", "-t", "dst-bucket", flag, value]);
        assert!(!run.status.success(), "{flag} {value} accepted");
        assert!(run.stderr.contains(flag), "{flag}: {}", run.stderr);
    }
}
