//! `commander run --sync --target-manifest-path`: the target side of the
//! diff read from the target's S3 Inventory instead of a listing.
//!
//! Inventories are not sorted (not across data files, and not promised
//! within one), and a parallel listing hands ranges on in no global order,
//! but the merge join needs both sides in key order. So both sides go
//! through an external sort ([`Sorter`]): at most `limit` records in
//! memory; each full chunk is sorted and spilled to an anonymous temporary
//! file (JSON lines), and [`Sorter::finish`] merges the runs (k-way, one
//! buffered record per run) into one stream in key order, each key once.
//! Memory: `limit` records plus one per run, whatever the bucket size.
//!
//! A key read twice (overlapping data files) keeps the newest record by
//! last-modified time; a record with a time beats one without, and on a tie
//! the one read last wins.
//!
//! The two sorted streams are merge-joined ([`join_sorted`], the semantics
//! of [`super::diff::join`]) and every key is judged by the paired walk's own
//! [`super::pair::judge`], so the classification is one piece of code.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::io::{BufRead, BufReader, BufWriter, Seek, Write};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::diff::{Joined, Tally};
use super::inventory::{Emit, Inventory};
use super::pair::{judge, PairWalk};
use super::parallel::{list_parallel, SourceEnd, Walk};
use super::{FilterSpec, Found, KeyFilter, KeyMap, Selector};
use crate::error::{Error, ErrorKind, Result};
use crate::message::KeyItem;
use crate::store::{Listed, ObjectStore};

/// Records kept in memory per chunk before a spill: about 200 bytes each,
/// so some 40 MB per side.
pub const CHUNK: usize = 200_000;

/// One object as the sort keeps it (what the diff and the message need).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rec {
    #[serde(rename = "k")]
    pub key: String,
    #[serde(rename = "s")]
    pub size: u64,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<DateTime<Utc>>,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub checksum_algorithm: Option<String>,
    /// An inventory source's version (sent as the message's `version_id`).
    #[serde(rename = "v", default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

impl Rec {
    /// What a source read of a key: its item (size required by the plan).
    fn from_item(key: String, i: KeyItem) -> Self {
        Rec {
            key,
            size: i.size.unwrap_or(0),
            etag: i.etag,
            last_modified: i.last_modified,
            storage_class: i.storage_class,
            checksum_algorithm: i.checksum_algorithm,
            version_id: i.version_id,
        }
    }

    fn into_listed(self) -> Listed {
        Listed {
            key: self.key,
            size: self.size,
            etag: self.etag,
            last_modified: self.last_modified,
            storage_class: self.storage_class,
            checksum_algorithm: self.checksum_algorithm,
            ..Listed::default()
        }
    }
}

/// Of two records of one key, `later` having been read after `earlier`.
fn newer(earlier: Rec, later: Rec) -> Rec {
    match earlier.last_modified > later.last_modified {
        true => earlier,
        false => later,
    }
}

/// An external sort of [`Rec`]s by key (see the module doc).
#[derive(Debug)]
pub struct Sorter {
    limit: usize,
    chunk: Vec<Rec>,
    runs: Vec<std::fs::File>,
}

impl Sorter {
    /// A sorter keeping at most `limit` records in memory (at least 1).
    pub fn new(limit: usize) -> Self {
        Sorter {
            limit: limit.max(1),
            chunk: Vec::new(),
            runs: Vec::new(),
        }
    }

    /// Add a record; a full chunk is sorted and spilled.
    pub fn push(&mut self, r: Rec) -> Result<()> {
        self.chunk.push(r);
        if self.chunk.len() >= self.limit {
            self.spill()?;
        }
        Ok(())
    }

    /// Chunks spilled so far.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// The chunk sorted by key, each key once.
    fn sorted_chunk(&mut self) -> Vec<Rec> {
        let mut chunk = std::mem::take(&mut self.chunk);
        // Stable: records of one key stay in the order they were read.
        chunk.sort_by(|a, b| a.key.cmp(&b.key));
        let mut out: Vec<Rec> = Vec::with_capacity(chunk.len());
        for r in chunk {
            match out.last_mut() {
                Some(last) if last.key == r.key => {
                    let earlier = std::mem::take(last);
                    *last = newer(earlier, r);
                }
                _ => out.push(r),
            }
        }
        out
    }

    fn spill(&mut self) -> Result<()> {
        let chunk = self.sorted_chunk();
        let file = tempfile::tempfile().map_err(|e| spool_error(&e))?;
        let mut w = BufWriter::new(file);
        for r in &chunk {
            let line = serde_json::to_string(r).expect("a record serializes");
            writeln!(w, "{line}").map_err(|e| spool_error(&e))?;
        }
        let mut file = w.into_inner().map_err(|e| spool_error(e.error()))?;
        file.rewind().map_err(|e| spool_error(&e))?;
        self.runs.push(file);
        Ok(())
    }

    /// Every record pushed, in key order, each key once.
    pub fn finish(mut self) -> Result<Sorted> {
        if self.runs.is_empty() {
            let chunk = self.sorted_chunk();
            return Ok(Sorted::Memory(chunk.into_iter()));
        }
        if !self.chunk.is_empty() {
            self.spill()?;
        }
        let mut merge = Merge {
            runs: self.runs.into_iter().map(BufReader::new).collect(),
            heap: BinaryHeap::new(),
            failed: false,
        };
        for run in 0..merge.runs.len() {
            merge.refill(run)?;
        }
        Ok(Sorted::Merge(merge))
    }
}

/// The sorted stream of a [`Sorter`].
pub enum Sorted {
    /// Nothing was spilled: the one chunk, sorted.
    Memory(std::vec::IntoIter<Rec>),
    /// A k-way merge of the spilled runs.
    Merge(Merge),
}

impl Iterator for Sorted {
    type Item = Result<Rec>;

    fn next(&mut self) -> Option<Result<Rec>> {
        match self {
            Sorted::Memory(it) => it.next().map(Ok),
            Sorted::Merge(m) => m.next(),
        }
    }
}

/// The head record of a run, ordered so the heap pops the smallest key,
/// and of equal keys the earliest run (read first) first.
struct Head {
    rec: Rec,
    run: usize,
}

impl PartialEq for Head {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Head {
    fn cmp(&self, o: &Self) -> Ordering {
        (o.rec.key.as_str(), o.run).cmp(&(self.rec.key.as_str(), self.run))
    }
}

/// A k-way merge of sorted runs: one buffered record per run.
pub struct Merge {
    runs: Vec<BufReader<std::fs::File>>,
    heap: BinaryHeap<Head>,
    failed: bool,
}

impl Merge {
    /// Read run `run`'s next record into the heap (none at its end).
    fn refill(&mut self, run: usize) -> Result<()> {
        let mut line = String::new();
        let n = self.runs[run]
            .read_line(&mut line)
            .map_err(|e| spool_error(&e))?;
        if n == 0 {
            return Ok(());
        }
        let rec: Rec =
            serde_json::from_str(&line).map_err(|e| spool_error(&std::io::Error::other(e)))?;
        self.heap.push(Head { rec, run });
        Ok(())
    }

    fn step(&mut self) -> Result<Option<Rec>> {
        let Some(first) = self.heap.pop() else {
            return Ok(None);
        };
        self.refill(first.run)?;
        let mut best = first.rec;
        while self.heap.peek().is_some_and(|h| h.rec.key == best.key) {
            let h = self.heap.pop().expect("peeked");
            self.refill(h.run)?;
            best = newer(best, h.rec);
        }
        Ok(Some(best))
    }
}

impl Iterator for Merge {
    type Item = Result<Rec>;

    fn next(&mut self) -> Option<Result<Rec>> {
        if self.failed {
            return None;
        }
        let r = self.step();
        self.failed = r.is_err();
        r.transpose()
    }
}

fn spool_error(e: &std::io::Error) -> Error {
    Error::new(
        ErrorKind::Permanent,
        "SpoolFailed",
        "the sort spool (a temporary file)",
        format!("cannot sort the keys for the diff: {e}"),
    )
}

/// Merge-join two key-sorted streams (each key once per side), calling
/// `each` with what each side has of every key, in key order: the
/// streaming form of [`super::diff::join`]. Stops at the first error.
pub fn join_sorted(
    mut source: impl Iterator<Item = Result<Rec>>,
    mut target: impl Iterator<Item = Result<Rec>>,
    mut each: impl FnMut(Option<Rec>, Option<Rec>) -> Result<()>,
) -> Result<()> {
    let mut a = source.next().transpose()?;
    let mut b = target.next().transpose()?;
    loop {
        let order = match (&a, &b) {
            (None, None) => return Ok(()),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => x.key.cmp(&y.key),
        };
        match order {
            Ordering::Less => {
                each(a.take(), None)?;
                a = source.next().transpose()?;
            }
            Ordering::Greater => {
                each(None, b.take())?;
                b = target.next().transpose()?;
            }
            Ordering::Equal => {
                each(a.take(), b.take())?;
                a = source.next().transpose()?;
                b = target.next().transpose()?;
            }
        }
    }
}

/// Where the source side of a sorted diff comes from.
#[derive(Debug)]
pub enum SourceSide {
    /// A parallel listing of this store (the walk's options).
    List(Arc<dyn ObjectStore>),
    /// The source's S3 Inventory (`-m`).
    Inventory(Box<Inventory>),
}

/// A selector that admits every key and keeps its name (the real filters
/// are applied by the judgment), counting skips into `counts`.
fn pass_through(counts: Arc<super::SkipCounts>) -> Result<Arc<Selector>> {
    let mut s = Selector::new(KeyFilter::new(FilterSpec::default())?, KeyMap::default());
    s.counts = counts;
    Ok(Arc::new(s))
}

fn stopped() -> Error {
    Error::new(ErrorKind::Permanent, "Stopped", "", "the diff stopped")
}

fn panicked(e: tokio::task::JoinError) -> Error {
    Error::new(
        ErrorKind::Permanent,
        "Panic",
        "the sorted diff",
        e.to_string(),
    )
}

/// Diff the source (a listing or an inventory) against the target's
/// inventory: sort both sides, join them, judge every key as the paired
/// walk does (`pair.target` is not listed), send new and changed keys into
/// `tx`, spool target-only ones as deletes. A stopped diff resumes from the
/// beginning (it sends in key order only once both sides are read).
pub async fn diff_sorted(
    side: SourceSide,
    pair: PairWalk,
    target: Box<Inventory>,
    tx: mpsc::Sender<Found>,
    cancel: CancellationToken,
) -> SourceEnd {
    diff_sorted_with(side, pair, target, tx, cancel, CHUNK).await
}

/// [`diff_sorted`] with a chunk size (tests force spills with small ones).
pub async fn diff_sorted_with(
    side: SourceSide,
    pair: PairWalk,
    target: Box<Inventory>,
    tx: mpsc::Sender<Found>,
    cancel: CancellationToken,
    limit: usize,
) -> SourceEnd {
    let result = async {
        let (s, t) = futures::join!(
            sort_source(side, &pair, limit, &cancel),
            sort_target(&target, &pair, limit, &cancel),
        );
        let (s, t) = (s?, t?);
        let (pair, cancel) = (pair.clone(), cancel.clone());
        tokio::task::spawn_blocking(move || join_and_judge(s, t, &pair, &tx, &cancel))
            .await
            .map_err(panicked)?
    }
    .await;
    match result {
        Ok(()) => SourceEnd::default(),
        Err(e) => SourceEnd {
            error: (e.class != "Stopped").then_some(e),
            unfinished: Some(None),
            next_row: None,
        },
    }
}

/// Join the sorted sides and judge each key (on a blocking thread).
fn join_and_judge(
    source: Sorter,
    target: Sorter,
    pair: &PairWalk,
    tx: &mpsc::Sender<Found>,
    cancel: &CancellationToken,
) -> Result<()> {
    let mut tally = Tally::default();
    let mut joined = 0u64;
    let flush = |t: &mut Tally| {
        pair.tally
            .lock()
            .expect("tally lock")
            .merge(&std::mem::take(t))
    };
    let result = join_sorted(source.finish()?, target.finish()?, |s, t| {
        if cancel.is_cancelled() {
            return Err(stopped());
        }
        let version_id = s.as_ref().and_then(|s| s.version_id.clone());
        let key = s.as_ref().or(t.as_ref()).map(|r| r.key.clone());
        let j = Joined {
            key: key.unwrap_or_default(),
            source: s.map(Rec::into_listed),
            target: t.map(Rec::into_listed),
        };
        let found = judge(pair, j, &mut tally)?;
        joined += 1;
        if joined.is_multiple_of(4096) {
            flush(&mut tally);
        }
        let Some(mut found) = found else {
            return Ok(());
        };
        found.item.version_id = version_id;
        tx.blocking_send(found).map_err(|_| stopped())
    });
    flush(&mut tally);
    result
}

/// Read the source side into a sorter.
async fn sort_source(
    side: SourceSide,
    pair: &PairWalk,
    limit: usize,
    cancel: &CancellationToken,
) -> Result<Sorter> {
    let counts = pair.walk.selector.counts.clone();
    match side {
        SourceSide::Inventory(inv) => {
            let sorter = Arc::new(Mutex::new(Sorter::new(limit)));
            let emit = sorting_emit(sorter.clone(), cancel.clone(), Arc::new(|k, _| Some(k)));
            let stats = Some(pair.walk.stats.clone());
            inv.for_each(pass_through(counts)?, stats, emit).await?;
            into_sorter(sorter)
        }
        SourceSide::List(store) => {
            let (tx, mut rx) = mpsc::channel::<Found>(1024);
            let walk = Walk {
                opts: pair.walk.opts.clone(),
                selector: pass_through(counts)?,
                source: pair.walk.source.clone(),
                stats: pair.walk.stats.clone(),
            };
            let sort = tokio::task::spawn_blocking(move || {
                let mut sorter = Sorter::new(limit);
                while let Some(f) = rx.blocking_recv() {
                    sorter.push(Rec::from_item(f.item.key.clone(), f.item))?;
                }
                Ok::<_, Error>(sorter)
            });
            let end = list_parallel(store, walk, tx, cancel.clone()).await;
            let sorter = sort.await.map_err(panicked)??;
            match end {
                SourceEnd { error: Some(e), .. } => Err(e),
                SourceEnd {
                    unfinished: Some(_),
                    ..
                } => Err(stopped()),
                _ => Ok(sorter),
            }
        }
    }
}

/// Read the target's inventory into a sorter, keys in source key space
/// (keys outside the target prefix are not this run's: dropped).
async fn sort_target(
    target: &Inventory,
    pair: &PairWalk,
    limit: usize,
    cancel: &CancellationToken,
) -> Result<Sorter> {
    let sorter = Arc::new(Mutex::new(Sorter::new(limit)));
    let (map, tally) = (pair.map.clone(), pair.tally.clone());
    let rename = Arc::new(move |k: String, _: &KeyItem| {
        let k = map.to_source(&k)?;
        tally.lock().expect("tally lock").target_listed += 1;
        Some(k)
    });
    let emit = sorting_emit(sorter.clone(), cancel.clone(), rename);
    let counts = Arc::new(super::SkipCounts::default());
    target.for_each(pass_through(counts)?, None, emit).await?;
    into_sorter(sorter)
}

type Rename = Arc<dyn Fn(String, &KeyItem) -> Option<String> + Send + Sync>;

/// An inventory [`Emit`] that pushes each row (key renamed, or dropped
/// when `rename` says `None`) into `sorter`.
fn sorting_emit(sorter: Arc<Mutex<Sorter>>, cancel: CancellationToken, rename: Rename) -> Emit {
    Arc::new(move |_, item: KeyItem| {
        if cancel.is_cancelled() {
            return Err(stopped());
        }
        let Some(key) = rename(item.key.clone(), &item) else {
            return Ok(());
        };
        sorter
            .lock()
            .expect("sorter lock")
            .push(Rec::from_item(key, item))
    })
}

fn into_sorter(s: Arc<Mutex<Sorter>>) -> Result<Sorter> {
    let s = Arc::try_unwrap(s).map_err(|_| stopped())?;
    Ok(s.into_inner().expect("sorter lock"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::diff::join;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn rec(key: &str, size: u64, minute: Option<u32>) -> Rec {
        Rec {
            key: key.into(),
            size,
            last_modified: minute.map(|m| Utc.with_ymd_and_hms(2026, 1, 1, 0, m, 0).unwrap()),
            ..Rec::default()
        }
    }

    fn sort_all(recs: &[Rec], limit: usize) -> (Vec<Rec>, usize) {
        let mut s = Sorter::new(limit);
        for r in recs {
            s.push(r.clone()).unwrap();
        }
        let runs = s.runs();
        (s.finish().unwrap().map(|r| r.unwrap()).collect(), runs)
    }

    /// The reference: for each key, the record with the greatest
    /// (last-modified, position read).
    fn model(recs: &[Rec]) -> Vec<Rec> {
        let mut m: BTreeMap<String, (Option<DateTime<Utc>>, usize)> = BTreeMap::new();
        for (i, r) in recs.iter().enumerate() {
            let best = m.entry(r.key.clone()).or_insert((r.last_modified, i));
            *best = (*best).max((r.last_modified, i));
        }
        m.into_values().map(|(_, i)| recs[i].clone()).collect()
    }

    fn recs() -> impl Strategy<Value = Vec<Rec>> {
        // Few distinct keys and sizes make duplicates likely; the size tells
        // which of a key's records survived.
        proptest::collection::vec(
            ("[ab/é.z]{1,4}", 0u64..1000, proptest::option::of(0u32..3)),
            0..300,
        )
        .prop_map(|v| v.into_iter().map(|(k, s, m)| rec(&k, s, m)).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn the_external_sort_is_sorted_once_per_key_and_loses_nothing(
            input in recs(),
            limit in 1usize..40,
        ) {
            let (got, runs) = sort_all(&input, limit);
            prop_assert!(got.windows(2).all(|w| w[0].key < w[1].key), "sorted, each key once");
            prop_assert_eq!(&got, &model(&input));
            prop_assert_eq!(runs, input.len() / limit);
        }

        #[test]
        fn the_streaming_join_is_the_join(
            a in recs(),
            b in recs(),
            limit in 1usize..40,
        ) {
            let (a, _) = sort_all(&a, limit);
            let (b, _) = sort_all(&b, limit);
            let mut got = Vec::new();
            join_sorted(a.clone().into_iter().map(Ok), b.clone().into_iter().map(Ok), |s, t| {
                got.push((s, t));
                Ok(())
            }).unwrap();
            let want: Vec<(Option<Rec>, Option<Rec>)> = join(
                a.into_iter().map(Rec::into_listed).collect(),
                b.into_iter().map(Rec::into_listed).collect(),
            )
            .into_iter()
            .map(|j| (j.source.map(|l| l.key), j.target.map(|l| l.key)))
            .map(|(s, t)| (s.map(|k| rec(&k, 0, None)), t.map(|k| rec(&k, 0, None))))
            .collect();
            let keys = |v: &[(Option<Rec>, Option<Rec>)]| -> Vec<(Option<String>, Option<String>)> {
                v.iter().map(|(s, t)| (s.as_ref().map(|r| r.key.clone()), t.as_ref().map(|r| r.key.clone()))).collect()
            };
            prop_assert_eq!(keys(&got), keys(&want));
        }
    }

    #[test]
    fn duplicates_keep_the_newest_across_runs() {
        let input = [
            rec("k", 1, Some(2)),
            rec("a", 0, None),
            rec("k", 4, Some(2)),
            rec("k", 2, Some(1)),
            rec("k", 3, None),
        ];
        // One record per run: every duplicate meets in the merge.
        let (got, runs) = sort_all(&input, 1);
        assert_eq!(runs, 5);
        assert_eq!(got, [rec("a", 0, None), rec("k", 4, Some(2))]);
        let (mem, runs) = sort_all(&input, 100);
        assert_eq!((mem, runs), (got, 0), "in memory the same");
    }

    /// A local inventory of `rows` (`key,size`), one data file per slice.
    fn inventory(dir: &std::path::Path, files: &[&[(&str, u64)]]) -> Inventory {
        use md5::{Digest, Md5};
        let mut entries = Vec::new();
        for (i, rows) in files.iter().enumerate() {
            let text: String = rows
                .iter()
                .map(|(k, size)| format!("\"t\",\"{k}\",\"{size}\",\"2020-01-01T00:00:00Z\"\n"))
                .collect();
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(text.as_bytes()).unwrap();
            let data = e.finish().unwrap();
            let name = format!("{i}.csv.gz");
            std::fs::write(dir.join(&name), &data).unwrap();
            entries.push(serde_json::json!({
                "key": name, "size": data.len(), "MD5checksum": hex::encode(Md5::digest(&data)),
            }));
        }
        let m = serde_json::json!({
            "sourceBucket": "t", "fileFormat": "CSV",
            "fileSchema": "Bucket, Key, Size, LastModifiedDate", "files": entries,
        });
        std::fs::write(dir.join("manifest.json"), m.to_string()).unwrap();
        Inventory::open_local(&dir.join("manifest.json")).unwrap()
    }

    /// A directory source against a target inventory, with chunks of two
    /// records so both sides spill: what is sent, spooled and counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_listing_diffs_against_an_unsorted_inventory_through_spills() {
        use crate::listing::diff::{Compare, Count, Rule};
        use crate::listing::pair::{DeleteSpool, PrefixMap};
        use crate::listing::parallel::ListOptions;
        use crate::store::dir::DirStore;
        let src = tempfile::tempdir().unwrap();
        for (k, body) in [
            ("a", "1"),
            ("b", "22"),
            ("c", "333"),
            ("d/e", "4"),
            ("f", "55"),
        ] {
            let p = src.path().join(k);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        let inv_dir = tempfile::tempdir().unwrap();
        let target = inventory(
            inv_dir.path(),
            &[
                &[("t/z", 9), ("t/c", 3), ("x/out", 1)],
                &[("t/b", 5), ("t/a", 1), ("t/z", 9)],
            ],
        );
        let store: Arc<dyn ObjectStore> = Arc::new(DirStore::new(src.path()).unwrap());
        let filter = KeyFilter::new(FilterSpec::default()).unwrap();
        let spool = Arc::new(DeleteSpool::new().unwrap());
        let pair = PairWalk {
            walk: Walk {
                opts: ListOptions::default(),
                selector: Arc::new(Selector::new(filter, KeyMap::new("", Some("t/".into())))),
                source: Arc::from("file:///src"),
                stats: Arc::default(),
            },
            target: store.clone(),
            map: PrefixMap::new("", Some("t/")),
            rule: Rule {
                compare: Compare::Size,
                overwrite_newer: false,
            },
            tally: Arc::default(),
            deletes: Some(spool.clone()),
        };
        let (tx, mut rx) = mpsc::channel(100);
        let tally = pair.tally.clone();
        let end = diff_sorted_with(
            SourceSide::List(store),
            pair,
            Box::new(target),
            tx,
            CancellationToken::new(),
            2,
        )
        .await;
        assert!(end.error.is_none() && end.unfinished.is_none(), "{end:?}");
        let mut sent = Vec::new();
        while let Some(f) = rx.recv().await {
            sent.push((f.item.key, f.item.target_key.unwrap_or_default()));
        }
        let want = [("b", "t/b"), ("d/e", "t/d/e"), ("f", "t/f")];
        assert_eq!(
            sent,
            want.map(|(k, t)| (k.to_string(), t.to_string())),
            "in key order"
        );
        let t = tally.lock().unwrap().clone();
        assert_eq!((t.compared, t.target_listed), (6, 5), "{t:?}");
        assert_eq!(t.unchanged, Count { files: 2, bytes: 4 });
        assert_eq!(t.new, Count { files: 2, bytes: 3 });
        assert_eq!(t.changed["size"], Count { files: 1, bytes: 2 });
        assert_eq!(t.target_only, Count { files: 1, bytes: 9 });
        let spool = Arc::try_unwrap(spool).unwrap();
        let deletes: Vec<_> = spool.into_items().unwrap().map(|i| i.unwrap()).collect();
        assert_eq!(deletes.len(), 1);
        assert_eq!(
            (deletes[0].key.as_str(), deletes[0].target_key.as_deref()),
            ("z", Some("t/z"))
        );
    }

    #[test]
    fn a_record_round_trips_through_a_spill() {
        let r = Rec {
            key: "a\nb \"q\" ü".into(),
            size: 7,
            etag: Some("\"e\"".into()),
            last_modified: Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()),
            storage_class: Some("GLACIER".into()),
            checksum_algorithm: Some("CRC32".into()),
            version_id: Some("v1".into()),
        };
        let (got, runs) = sort_all(&[r.clone(), rec("a", 1, None)], 1);
        assert_eq!(runs, 2);
        assert_eq!(got, [rec("a", 1, None), r]);
    }
}
