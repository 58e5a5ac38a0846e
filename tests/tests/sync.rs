//! `commander run --sync` end to end, on moto, LocalStack and directories:
//! a first pass copies a corpus; the source then gets 10 new, 10 changed
//! (same size, other bytes) and 10 deleted keys. A `--sync` run sends exactly
//! the 20 new and changed keys (every message read back), `--delete` adds
//! exactly the 10 deletes, which executors carry out conditionally (a target
//! rewritten after the listing survives), and afterwards a check job finds
//! every source key identical and a last `--sync` finds nothing to do.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::message::{decode, Op};
use common::report::Outcome;
use serde_json::Value;
use testsupport::runs::{drain_on, report_rows, send_raw_on, Sandbox};
use testsupport::Server;

/// Source and target of one scenario: two buckets, or two directories.
enum Ends {
    S3 {
        server: Server,
        src: String,
        dst: String,
    },
    Dir {
        src: tempfile::TempDir,
        dst: tempfile::TempDir,
    },
}

impl Ends {
    async fn s3(server: Server) -> Ends {
        Ends::S3 {
            server,
            src: server.bucket("sync-src").await,
            dst: server.bucket("sync-dst").await,
        }
    }

    fn dirs() -> Ends {
        Ends::Dir {
            src: tempfile::tempdir().unwrap(),
            dst: tempfile::tempdir().unwrap(),
        }
    }

    fn args(&self) -> (String, String) {
        match self {
            Ends::S3 { src, dst, .. } => (format!("s3://{src}"), format!("s3://{dst}")),
            Ends::Dir { src, dst } => (
                src.path().display().to_string(),
                dst.path().display().to_string(),
            ),
        }
    }

    async fn put(&self, target: bool, key: &str, body: &[u8]) {
        match self {
            Ends::S3 { server, src, dst } => {
                server
                    .put(if target { dst } else { src }, key, body.to_vec())
                    .await
            }
            Ends::Dir { src, dst } => {
                let path = file(if target { dst.path() } else { src.path() }, key);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, body).unwrap();
            }
        }
    }

    async fn delete_source(&self, key: &str) {
        match self {
            Ends::S3 { server, src, .. } => {
                server
                    .s3()
                    .delete_object()
                    .bucket(src)
                    .key(key)
                    .send()
                    .await
                    .unwrap();
            }
            Ends::Dir { src, .. } => std::fs::remove_file(file(src.path(), key)).unwrap(),
        }
    }

    /// Every object of one side, key → bytes.
    async fn contents(&self, target: bool) -> BTreeMap<String, Vec<u8>> {
        match self {
            Ends::S3 { server, src, dst } => {
                let bucket = if target { dst } else { src };
                let mut out = BTreeMap::new();
                for k in server.keys(bucket).await {
                    let o = server
                        .s3()
                        .get_object()
                        .bucket(bucket)
                        .key(&k)
                        .send()
                        .await
                        .unwrap();
                    let body = o.body.collect().await.unwrap().into_bytes().to_vec();
                    out.insert(k, body);
                }
                out
            }
            Ends::Dir { src, dst } => {
                let root = if target { dst.path() } else { src.path() };
                let mut out = BTreeMap::new();
                walk(root, root, &mut out);
                out
            }
        }
    }
}

fn file(root: &Path, key: &str) -> PathBuf {
    root.join(key)
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            let key = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
            // The directory store's own bookkeeping (temporary files) is not an object.
            if !key.starts_with('.') && !key.contains("/.") {
                out.insert(key, std::fs::read(&p).unwrap());
            }
        }
    }
}

fn key(i: usize) -> String {
    format!("data/k{i:03}")
}

/// Distinct bytes of one length per (key, version).
fn body(i: usize, version: u8) -> Vec<u8> {
    format!("object {i:03} version {version} ")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(300)
        .collect()
}

/// Drain the work queue: every key sent, with its op.
async fn sent(sb: &Sandbox) -> (BTreeMap<String, Op>, Vec<String>) {
    let drained = drain_on(sb.server, &sb.queue(1)).await;
    let mut keys = BTreeMap::new();
    let mut bodies = Vec::new();
    for d in drained {
        let batch = decode(&d.body).expect("a message the executor reads");
        for k in batch.keys {
            assert!(
                keys.insert(k.key.clone(), k.op).is_none(),
                "{} sent twice",
                k.key
            );
        }
        bodies.push(d.body);
    }
    (keys, bodies)
}

fn json(run: &testsupport::runs::Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

fn files(v: &Value, path: &[&str]) -> u64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x["files"]
        .as_u64()
        .unwrap_or_else(|| panic!("{path:?} in {v:#}"))
}

async fn scenario(ends: Ends, sb: Sandbox) {
    sb.init();
    let reports = sb.dir.path().join("reports");
    let (src, dst) = ends.args();
    for i in 0..40 {
        ends.put(false, &key(i), &body(i, 1)).await;
    }
    // 1. The first pass copies the corpus.
    sb.commander(&["run", "-s", &src, "-t", &dst, "--job-id", "pass-1"])
        .assert_ok("first pass");
    sb.executor(&["--until-empty"])
        .assert_ok("first pass executor");
    assert_eq!(ends.contents(true).await, ends.contents(false).await);

    // 2. The source changes: 10 new, 10 changed (same size), 10 deleted.
    // Directory mtimes have one-second granularity on some filesystems: the
    // changed sources must be newer than their copies.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for i in 100..110 {
        ends.put(false, &key(i), &body(i, 1)).await;
    }
    for i in 0..10 {
        ends.put(false, &key(i), &body(i, 2)).await;
    }
    for i in 30..40 {
        ends.delete_source(&key(i)).await;
    }
    let new: BTreeSet<String> = (100..110).map(key).collect();
    let changed: BTreeSet<String> = (0..10).map(key).collect();
    let gone: BTreeSet<String> = (30..40).map(key).collect();

    // 3. --sync sends exactly the new and changed keys.
    let run = sb.commander(&["run", "-s", &src, "-t", &dst, "--sync", "--json"]);
    run.assert_ok("--sync");
    let summary = json(&run);
    let (keys, _) = sent(&sb).await;
    let want: BTreeSet<String> = new.union(&changed).cloned().collect();
    assert_eq!(keys.keys().cloned().collect::<BTreeSet<_>>(), want);
    for k in &new {
        assert_eq!(keys[k], Op::Copy, "{k}: new keys are plain copies");
    }
    for k in &changed {
        // Same size: the listing cannot show them different without ETags
        // (directories) or decides by ETag (S3): either way not unchanged.
        assert_ne!(keys[k], Op::Delete, "{k}");
    }
    assert_eq!(files(&summary, &["sync", "new"]), 10, "{summary:#}");
    assert_eq!(files(&summary, &["sync", "unchanged"]), 20, "{summary:#}");
    assert_eq!(files(&summary, &["sync", "target_only"]), 10, "{summary:#}");
    assert_eq!(files(&summary, &["sync", "deletes"]), 0, "{summary:#}");
    assert_eq!(summary["objects"], 20, "{summary:#}");

    // 4. --max-delete below the count: no delete is sent, and the run says so.
    let run = sb.commander(&[
        "run",
        "-s",
        &src,
        "-t",
        &dst,
        "--sync",
        "--delete",
        "--max-delete",
        "9",
    ]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("--max-delete 9"), "{}", run.stderr);
    let (keys, _) = sent(&sb).await;
    assert!(keys.values().all(|op| *op != Op::Delete), "{keys:?}");

    // 5. --delete adds exactly the 10 deletes.
    let run = sb.commander(&[
        "run", "-s", &src, "-t", &dst, "--sync", "--delete", "--job-id", "pass-2",
    ]);
    run.assert_ok("--sync --delete");
    let (keys, bodies) = sent(&sb).await;
    let deletes: BTreeSet<String> = keys
        .iter()
        .filter(|(_, op)| **op == Op::Delete)
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(deletes, gone);
    assert_eq!(keys.len(), 30);

    // A target-only object rewritten after the listing must survive its delete.
    let rewritten = key(39);
    ends.put(
        true,
        &rewritten,
        b"written by an application after the listing",
    )
    .await;
    let bodies: Vec<&str> = bodies.iter().map(String::as_str).collect();
    send_raw_on(sb.server, &sb.queue(1), &bodies).await;
    sb.executor(&["--until-empty"]).assert_ok("pass-2 executor");
    let rows = report_rows(&reports, "pass-2").await;
    for k in &gone {
        let want = if *k == rewritten {
            Outcome::Kept
        } else {
            Outcome::Deleted
        };
        assert_eq!(rows[k].outcome, want, "{k}: {:?}", rows[k]);
    }
    for k in &want {
        assert_eq!(rows[k].outcome, Outcome::Copied, "{k}: {:?}", rows[k]);
    }

    // 6. Source and target now hold the same objects (plus the kept one).
    let mut target = ends.contents(true).await;
    assert_eq!(
        target.remove(&rewritten).as_deref(),
        Some(&b"written by an application after the listing"[..])
    );
    assert_eq!(target, ends.contents(false).await);
    sb.commander(&["run", "-s", &src, "-t", &dst, "--job-id", "check"])
        .assert_ok("check job");
    sb.executor(&["--mode", "check", "--until-empty"])
        .assert_ok("check mode finds every key identical");
    let rows = report_rows(&reports, "check").await;
    assert_eq!(rows.len(), 40);
    assert!(
        rows.values().all(|r| r.outcome == Outcome::Verified),
        "{rows:?}"
    );

    // 7. Nothing is left to do but the kept object.
    let run = sb.commander(&[
        "run",
        "-s",
        &src,
        "-t",
        &dst,
        "--sync",
        "--dry-run",
        "--json",
    ]);
    run.assert_ok("last --sync");
    let last = json(&run);
    assert_eq!(last["objects"], 0, "{last:#}");
    assert_eq!(files(&last, &["sync", "target_only"]), 1, "{last:#}");
}

fn sandbox(server: Server) -> Sandbox {
    let mut sb = Sandbox::on(server, "sync", 1);
    let reports = sb.dir.path().join("reports");
    sb.set("REPORT_LOCATION", &reports.display().to_string());
    sb
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_and_mirror_deletes_on_moto() {
    scenario(Ends::s3(Server::Moto).await, sandbox(Server::Moto)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_and_mirror_deletes_on_localstack() {
    let Some(server) = Server::localstack() else {
        return;
    };
    scenario(Ends::s3(server).await, sandbox(server)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_and_mirror_deletes_between_directories() {
    scenario(Ends::dirs(), sandbox(Server::Moto)).await;
}
