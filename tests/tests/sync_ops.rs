//! Issue #15, the executor's side of `commander run --sync`: hand-made
//! messages with `update` and `delete` items (the listing facts taken from
//! real listings, as the commander takes them) worked by the real `executor`
//! binary on moto, on LocalStack and between directories:
//! - update: an identical target is `skipped-identical` (with its proof), a
//!   different one `copied`, a different one with `keep_newer_target`
//!   `target-newer` and left as it is;
//! - delete: a target-only object still as listed is `deleted`; one
//!   rewritten after the listing is `kept` and keeps its new bytes; one whose
//!   source came back is `kept`; one already gone is `deleted` ("already
//!   absent"); a neighbour outside the message is never touched;
//! - the delete is the store's own condition on moto (`If-Match`); LocalStack
//!   2026.3.0 answers 501 and a directory has none, so there each delete is
//!   compared just before and the log says so;
//! - check mode: a delete item whose target is gone is `verified`, one whose
//!   target is still there is a `Mismatch`.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use common::message::{encode, Batch, KeyItem, Op, MESSAGE_VERSION};
use common::report::{Outcome, ReportLocation, ReportRow};
use common::store::dir::DirStore;
use common::store::s3::S3Store;
use common::store::{Deletion, ObjectStore, PutOptions};
use testsupport::runs::{queue_url_on, Run, Sandbox};
use testsupport::stores::{listed_facts, read};
use testsupport::Server;

/// One end of the scenario: a store, and the location messages name it by.
struct End {
    store: Arc<dyn ObjectStore>,
    location: String,
}

impl End {
    async fn s3(server: Server, prefix: &str) -> End {
        let bucket = server.bucket(prefix).await;
        End {
            store: Arc::new(S3Store::new(server.s3(), &bucket)),
            location: format!("s3://{bucket}"),
        }
    }

    fn dir(path: &std::path::Path) -> End {
        End {
            store: Arc::new(DirStore::create(path).unwrap()),
            location: format!("file://{}", path.canonicalize().unwrap().display()),
        }
    }

    async fn put(&self, key: &str, body: &[u8]) {
        self.store
            .put(key, Bytes::copy_from_slice(body), &PutOptions::default())
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }

    /// The object's bytes, or `None` when it does not exist.
    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.store.head(key).await.unwrap()?;
        Some(read(self.store.as_ref(), key, None).await)
    }

    /// A message item with `key`'s listing facts on this end.
    async fn item(&self, key: &str, op: Op) -> KeyItem {
        let facts = listed_facts(self.store.as_ref(), key)
            .await
            .unwrap_or_else(|| panic!("{key} is listed"));
        KeyItem {
            key: key.to_string(),
            size: Some(facts.size),
            etag: facts.etag,
            last_modified: facts.last_modified,
            op,
            ..KeyItem::default()
        }
    }
}

/// A sandbox on `server` whose executor writes reports under its directory.
fn sandbox(server: Server, prefix: &str) -> Sandbox {
    let mut sb = Sandbox::on(server, prefix, 1);
    let reports = sb.dir.path().join("reports");
    sb.set("REPORT_LOCATION", &reports.display().to_string());
    sb.init();
    sb
}

async fn send(sb: &Sandbox, batch: &Batch) {
    let url = queue_url_on(sb.server, &sb.queue(1)).await;
    sb.server
        .sqs()
        .send_message()
        .queue_url(&url)
        .message_body(encode(batch))
        .send()
        .await
        .unwrap_or_else(|e| panic!("send: {e:?}"));
}

/// The latest report row of each source key of `job`.
async fn rows(sb: &Sandbox, job: &str) -> BTreeMap<String, ReportRow> {
    let store = Arc::new(DirStore::new(sb.dir.path().join("reports")).unwrap());
    let loc = ReportLocation::new(store, "");
    let mut out: BTreeMap<String, ReportRow> = BTreeMap::new();
    loc.for_each_row(job, |row| {
        if out
            .get(&row.source_key)
            .is_none_or(|old| old.finished_at <= row.finished_at)
        {
            out.insert(row.source_key.clone(), row);
        }
    })
    .await
    .unwrap_or_else(|e| panic!("reports of {job}: {e}"));
    out
}

fn outcomes(rows: &BTreeMap<String, ReportRow>) -> BTreeMap<&str, Outcome> {
    rows.iter().map(|(k, r)| (k.as_str(), r.outcome)).collect()
}

/// What the log must say about deletes the store could not make conditional.
#[derive(Debug, Clone, Copy)]
enum Fallback {
    /// `If-Match` on DeleteObject: no note.
    None,
    /// An endpoint without it (501): compared by HEAD.
    Head,
    /// A directory: size and mtime compared.
    Dir,
}

/// The whole scenario between `src` and `dst`, executors talking to `sb`.
async fn scenario(sb: &Sandbox, src: &End, dst: &End, fallback: Fallback) {
    src.put("u/same", b"same bytes").await;
    dst.put("u/same", b"same bytes").await;
    src.put("u/diff", b"source v2").await;
    dst.put("u/diff", b"target v1").await;
    src.put("u/newer", b"source v2!").await;
    dst.put("u/newer", b"target v9, edited").await;
    for key in ["d/gone", "d/rewritten", "d/back", "d/absent", "d/gone0"] {
        dst.put(key, format!("listed {key}").as_bytes()).await;
    }
    let mut keys = vec![
        src.item("u/same", Op::Update).await,
        src.item("u/diff", Op::Update).await,
        KeyItem {
            keep_newer_target: true,
            ..src.item("u/newer", Op::Update).await
        },
    ];
    for key in ["d/gone", "d/rewritten", "d/back", "d/absent"] {
        keys.push(dst.item(key, Op::Delete).await);
    }
    // After the "listing": a target rewritten, a source back, a target gone.
    std::thread::sleep(std::time::Duration::from_millis(20));
    dst.put("d/rewritten", b"rewritten after the listing").await;
    src.put("d/back", b"back again").await;
    let absent = keys.iter().find(|k| k.key == "d/absent").unwrap();
    let facts = common::store::DeleteIf {
        etag: absent.etag.clone(),
        size: absent.size.unwrap(),
        last_modified: absent.last_modified,
    };
    assert!(matches!(
        dst.store.delete_if("d/absent", &facts).await.unwrap(),
        Deletion::Deleted { .. }
    ));

    let job = "sync-ops";
    let batch = Batch {
        v: MESSAGE_VERSION,
        job_id: job.into(),
        source: src.location.clone(),
        target: dst.location.clone(),
        keys: keys.clone(),
    };
    send(sb, &batch).await;
    let run = sb.executor(&["--mode", "copy", "--until-empty"]);
    run.assert_ok("executor");
    let got = rows(sb, job).await;
    let want = BTreeMap::from([
        ("u/same", Outcome::SkippedIdentical),
        ("u/diff", Outcome::Copied),
        ("u/newer", Outcome::TargetNewer),
        ("d/gone", Outcome::Deleted),
        ("d/rewritten", Outcome::Kept),
        ("d/back", Outcome::Kept),
        ("d/absent", Outcome::Deleted),
    ]);
    assert_eq!(outcomes(&got), want, "{run:?}");
    assert!(got["u/same"].proof.is_some(), "skipped-identical is proven");
    for key in ["d/gone", "d/rewritten", "d/back"] {
        let row = &got[key];
        assert_eq!(row.proof, None, "{key}: a delete proves no content");
        assert_eq!(
            row.size,
            Some(format!("listed {key}").len() as u64),
            "{key}"
        );
    }

    assert_eq!(dst.get("u/same").await.unwrap(), b"same bytes");
    assert_eq!(dst.get("u/diff").await.unwrap(), b"source v2");
    assert_eq!(dst.get("u/newer").await.unwrap(), b"target v9, edited");
    assert_eq!(dst.get("d/gone").await, None);
    assert_eq!(dst.get("d/absent").await, None);
    assert_eq!(
        dst.get("d/rewritten").await.unwrap(),
        b"rewritten after the listing"
    );
    assert_eq!(dst.get("d/back").await.unwrap(), b"listed d/back");
    assert_eq!(dst.get("d/gone0").await.unwrap(), b"listed d/gone0");

    let log = &run.stderr;
    for note in [
        "the source has the key again",
        "the target changed since it was listed",
        "already absent",
        "the target is newer than the source and differs",
    ] {
        assert!(log.contains(note), "the log says `{note}`:\n{log}");
    }
    let head = "the endpoint has no conditional delete: checked by HEAD just before";
    let dir = "a directory has no conditional delete";
    match fallback {
        Fallback::None => assert!(!log.contains(head) && !log.contains(dir), "{log}"),
        Fallback::Head => assert!(log.contains(head), "{log}"),
        Fallback::Dir => assert!(log.contains(dir), "{log}"),
    }
    assert!(run.stdout.contains("deleted 2"), "{}", run.stdout);

    check_mode(sb, src, dst, &keys).await;
}

/// Check mode with the delete items again: a target deleted is `verified`;
/// one still there while the source lacks the key is a `Mismatch`.
async fn check_mode(sb: &Sandbox, src: &End, dst: &End, keys: &[KeyItem]) {
    let job = "sync-ops-check";
    let pick = |k: &str| keys.iter().find(|i| i.key == k).unwrap().clone();
    let batch = Batch {
        v: MESSAGE_VERSION,
        job_id: job.into(),
        source: src.location.clone(),
        target: dst.location.clone(),
        keys: vec![pick("d/gone"), pick("d/rewritten")],
    };
    send(sb, &batch).await;
    let run: Run = sb.executor(&["--mode", "check", "--until-empty"]);
    assert_eq!(run.status.code(), Some(5), "a mismatch parked: {run:?}");
    let got = rows(sb, job).await;
    assert_eq!(got["d/gone"].outcome, Outcome::Verified, "{run:?}");
    let row = &got["d/rewritten"];
    assert_eq!(row.outcome, Outcome::Failed);
    assert_eq!(row.error_class.as_deref(), Some("Mismatch"));
    assert!(
        row.error_message
            .as_deref()
            .unwrap_or_default()
            .contains("the target has a key the source lacks"),
        "{row:?}"
    );
    assert!(
        dst.get("d/rewritten").await.is_some(),
        "check deletes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_and_delete_items_on_moto() {
    let sb = sandbox(Server::Moto, "sync-moto");
    let src = End::s3(Server::Moto, "sync-src").await;
    let dst = End::s3(Server::Moto, "sync-dst").await;
    scenario(&sb, &src, &dst, Fallback::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_and_delete_items_on_localstack_compare_by_head() {
    let Some(ls) = Server::localstack() else {
        return;
    };
    let sb = sandbox(ls, "sync-ls");
    let src = End::s3(ls, "sync-src").await;
    let dst = End::s3(ls, "sync-dst").await;
    scenario(&sb, &src, &dst, Fallback::Head).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_and_delete_items_between_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sb = sandbox(Server::Moto, "sync-dir");
    let src = End::dir(&tmp.path().join("src"));
    let dst = End::dir(&tmp.path().join("dst"));
    sb.set("MIGRATION_ALLOWED_SOURCES", &src.location);
    sb.set("MIGRATION_ALLOWED_TARGETS", &dst.location);
    scenario(&sb, &src, &dst, Fallback::Dir).await;
}
