//! The paired walk of `commander run --sync`: the source and the target are
//! listed with the same ranges (the parallel walk's prefixes, delimited
//! levels and `StartAfter` splits, planned by [`super::parallel::plan_step`]
//! on the *merged* pages), and each range's two listings are merge-joined in
//! key order.
//!
//! Why every key is classified exactly once: a [`PairRange`] keeps one
//! cursor per side (continuation token plus the part of the last page not
//! yet merged). A step fetches a page for each side whose buffer is empty,
//! then merges every buffered item up to the *bound*: the smaller of the two
//! sides' last buffered items, ignoring a side that has no more pages. Items
//! up to the bound are complete on both sides (each listing is sorted), so
//! the join of those items is exact; the rest waits for the next step. The
//! merged items form one page for the planner, so both sides see the same
//! range partition; when the planner shrinks a range (a split), buffered
//! items beyond its new upper bound are dropped, because the spawned ranges
//! list them again on both sides. Memory: at most one page per side per range
//! in flight, whatever the size of the buckets.

use std::collections::VecDeque;
use std::io::{BufRead, BufWriter, Seek, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::diff::{classify, join, Class, Count, Joined, Rule, Tally};
use super::parallel::{
    drive, listing_failed, plan_step, root, ListOptions, Range, Resumable, Walk,
};
use super::{Candidate, Found, ResumeAfter, SourceEnd};
use crate::error::{Error, ErrorKind, Result};
use crate::message::{KeyItem, Op};
use crate::store::{ListPage, ListRequest, Listed, ObjectStore};

/// Source keys and target keys: the target has `target` where the source has
/// `source` (the `-p` prefix and `--target-prefix`; the same when keys are
/// not rewritten). Replacing a common prefix keeps the key order, so both
/// listings merge in one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixMap {
    source: String,
    target: String,
}

/// Where a source-space lower bound falls in the target's key space.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bound {
    /// Below every key under the prefix: no bound.
    Below,
    /// This target key.
    At(String),
    /// Above every key under the prefix: nothing to list.
    Above,
}

impl PrefixMap {
    /// `target_prefix: None`: target keys are the source keys.
    pub fn new(source_prefix: &str, target_prefix: Option<&str>) -> Self {
        PrefixMap {
            source: source_prefix.to_string(),
            target: target_prefix.unwrap_or(source_prefix).to_string(),
        }
    }

    /// The target's name for a source prefix or key under the walk's prefix.
    fn to_target(&self, s: &str) -> String {
        let rest = s.strip_prefix(self.source.as_str()).unwrap_or(s);
        format!("{}{rest}", self.target)
    }

    /// The source's name for a target key or prefix (`None`: outside the
    /// target prefix, which a listing under it never returns).
    pub(crate) fn to_source(&self, t: &str) -> Option<String> {
        t.strip_prefix(self.target.as_str())
            .map(|rest| format!("{}{rest}", self.source))
    }

    /// A source-space `StartAfter` as a target-space one.
    fn bound(&self, s: &str) -> Bound {
        match s.strip_prefix(self.source.as_str()) {
            Some(rest) => Bound::At(format!("{}{rest}", self.target)),
            // A string that does not start with the prefix sorts below or
            // above every string that does.
            None if s < self.source.as_str() => Bound::Below,
            None => Bound::Above,
        }
    }
}

/// One side's listing of a range: where it continues, and the part of the
/// last page not merged yet (keys and prefixes in source key space).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cursor {
    token: Option<String>,
    started: bool,
    done: bool,
    objects: VecDeque<Listed>,
    prefixes: VecDeque<String>,
}

impl Cursor {
    fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.prefixes.is_empty()
    }

    /// Nothing buffered and more to list.
    fn needs_page(&self) -> bool {
        !self.done && self.is_empty()
    }

    /// The greatest buffered item.
    fn last(&self) -> Option<&str> {
        let k = self.objects.back().map(|o| o.key.as_str());
        let p = self.prefixes.back().map(String::as_str);
        k.max(p)
    }

    fn absorb(&mut self, objects: Vec<Listed>, prefixes: Vec<String>, next: Option<String>) {
        self.objects.extend(objects);
        self.prefixes.extend(prefixes);
        self.done = next.is_none();
        self.token = next;
        self.started = true;
    }

    /// Take every buffered item up to `bound` (all when `None`).
    fn take_through(&mut self, bound: Option<&str>) -> (Vec<Listed>, Vec<String>) {
        let n = match bound {
            None => self.objects.len(),
            Some(b) => self.objects.partition_point(|o| o.key.as_str() <= b),
        };
        let m = match bound {
            None => self.prefixes.len(),
            Some(b) => self.prefixes.partition_point(|p| p.as_str() <= b),
        };
        (
            self.objects.drain(..n).collect(),
            self.prefixes.drain(..m).collect(),
        )
    }

    /// The range now ends at `until`: what lies beyond is another range's.
    fn trim_after(&mut self, until: &str) {
        let n = self.objects.partition_point(|o| o.key.as_str() <= until);
        let m = self.prefixes.partition_point(|p| p.as_str() <= until);
        if n < self.objects.len() || m < self.prefixes.len() {
            self.objects.truncate(n);
            self.prefixes.truncate(m);
            self.done = true;
            self.token = None;
        }
    }
}

/// A range listed on both sides.
#[derive(Debug, Clone, PartialEq)]
pub struct PairRange {
    pub range: Range,
    pub source: Cursor,
    pub target: Cursor,
}

impl PairRange {
    /// A range neither side has listed yet.
    pub fn fresh(range: Range) -> Self {
        PairRange {
            range,
            source: Cursor::default(),
            target: Cursor::default(),
        }
    }
}

impl Resumable for PairRange {
    fn after(&self) -> ResumeAfter {
        self.range.after.clone()
    }
}

/// What one merge of a paired range yields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairStep {
    /// Keys of this range, joined, in order.
    pub emit: Vec<Joined>,
    pub spawn: Vec<PairRange>,
    pub next: Option<PairRange>,
}

/// Pure merge of what both cursors buffered (see the module doc). A side
/// that needs a page first makes this a no-op that returns the range as is.
pub fn plan_pair(mut pr: PairRange, opts: &ListOptions, may_split: bool) -> PairStep {
    if pr.source.needs_page() || pr.target.needs_page() {
        return PairStep {
            next: Some(pr),
            ..PairStep::default()
        };
    }
    let bound: Option<String> = [&pr.source, &pr.target]
        .into_iter()
        .filter(|c| !c.done)
        .filter_map(|c| c.last())
        .min()
        .map(str::to_string);
    let (so, sp) = pr.source.take_through(bound.as_deref());
    let (to, tp) = pr.target.take_through(bound.as_deref());
    let mut joined = join(so, to);
    let mut prefixes = sp;
    prefixes.extend(tp);
    prefixes.sort();
    prefixes.dedup();
    let more = !(pr.source.done && pr.target.done && pr.source.is_empty() && pr.target.is_empty());
    let page = ListPage {
        objects: joined
            .iter()
            .map(|j| Listed {
                key: j.key.clone(),
                ..Listed::default()
            })
            .collect(),
        prefixes,
        next: more.then(|| "paired".to_string()),
    };
    let mut range = pr.range;
    range.token = None;
    let step = plan_step(range, page, opts, may_split);
    joined.truncate(step.emit.len());
    let (mut source, mut target) = (pr.source, pr.target);
    let next = step.next.map(|mut r| {
        r.token = None;
        if let Some(u) = &r.until {
            source.trim_after(u);
            target.trim_after(u);
        }
        PairRange {
            range: r,
            source,
            target,
        }
    });
    PairStep {
        emit: joined,
        spawn: step.spawn.into_iter().map(PairRange::fresh).collect(),
        next,
    }
}

/// The first range of a paired walk.
pub fn pair_root(opts: &ListOptions) -> PairRange {
    PairRange::fresh(root(opts))
}

/// Target-only keys held back until the whole diff is done (a delete is
/// never sent from a partial listing, and `--max-delete` must see them all):
/// JSON lines in an anonymous temporary file, so memory stays flat.
#[derive(Debug)]
pub struct DeleteSpool {
    inner: Mutex<(BufWriter<std::fs::File>, Count)>,
}

impl DeleteSpool {
    /// A new spool in the system's temporary directory.
    pub fn new() -> Result<Self> {
        let file = tempfile::tempfile().map_err(|e| spool_error(&e))?;
        Ok(DeleteSpool {
            inner: Mutex::new((BufWriter::new(file), Count::default())),
        })
    }

    fn push(&self, item: &KeyItem) -> Result<()> {
        let mut g = self.inner.lock().expect("spool lock");
        let line = serde_json::to_string(item).expect("a KeyItem serializes");
        writeln!(g.0, "{line}").map_err(|e| spool_error(&e))?;
        g.1.add(item.size.unwrap_or(0));
        Ok(())
    }

    /// Deletes spooled so far.
    pub fn count(&self) -> Count {
        self.inner.lock().expect("spool lock").1
    }

    /// Read the deletes back, in the order they were found.
    pub fn into_items(self) -> Result<impl Iterator<Item = Result<KeyItem>>> {
        let (w, _) = self.inner.into_inner().expect("spool lock");
        let mut file = w.into_inner().map_err(|e| spool_error(e.error()))?;
        file.rewind().map_err(|e| spool_error(&e))?;
        Ok(std::io::BufReader::new(file).lines().map(|l| {
            let l = l.map_err(|e| spool_error(&e))?;
            serde_json::from_str(&l).map_err(|e| spool_error(&std::io::Error::other(e)))
        }))
    }
}

fn spool_error(e: &std::io::Error) -> Error {
    Error::new(
        ErrorKind::Permanent,
        "SpoolFailed",
        "the delete spool (a temporary file)",
        format!("cannot keep the target-only keys: {e}"),
    )
}

/// Everything a paired walk needs besides the source store (in `walk`).
#[derive(Debug, Clone)]
pub struct PairWalk {
    pub walk: Walk,
    pub target: Arc<dyn ObjectStore>,
    pub map: PrefixMap,
    pub rule: Rule,
    /// What the diff found so far (the progress line reads it).
    pub tally: Arc<Mutex<Tally>>,
    /// Where target-only keys go as deletes (`--delete`); `None`: kept.
    pub deletes: Option<Arc<DeleteSpool>>,
}

/// List source and target side by side, send new and changed keys into
/// `tx` (ops `copy` / `update`), spool target-only ones as deletes, and
/// tally everything. Stops like [`super::parallel::list_parallel`].
pub async fn list_pair(
    source: Arc<dyn ObjectStore>,
    pair: PairWalk,
    tx: mpsc::Sender<Found>,
    cancel: CancellationToken,
) -> SourceEnd {
    let opts = pair.walk.opts.clone();
    let root = pair_root(&opts);
    drive(root, &opts, cancel, move |pr, may_split| {
        let (source, pair, tx) = (source.clone(), pair.clone(), tx.clone());
        async move {
            let step = pair_step(source.as_ref(), &pair, pr, may_split).await?;
            emit(&pair, step.emit, &tx).await?;
            Ok((step.next, step.spawn))
        }
    })
    .await
}

/// Fetch what the range's cursors need, then merge.
async fn pair_step(
    source: &dyn ObjectStore,
    pair: &PairWalk,
    mut pr: PairRange,
    may_split: bool,
) -> Result<PairStep> {
    let opts = &pair.walk.opts;
    while pr.source.needs_page() || pr.target.needs_page() {
        let (s, t) = futures::join!(
            fetch_source(source, &pr.range, &pr.source, opts),
            fetch_target(pair, &pr.range, &pr.target, opts),
        );
        if let Some((objects, prefixes, next)) = s? {
            pair.walk
                .stats
                .seen
                .fetch_add(objects.len() as u64, Ordering::Relaxed);
            pair.walk.stats.pages.fetch_add(1, Ordering::Relaxed);
            pr.source.absorb(objects, prefixes, next);
        }
        match t? {
            Some((objects, prefixes, next)) => {
                pair.tally.lock().expect("tally lock").target_listed += objects.len() as u64;
                pr.target.absorb(objects, prefixes, next);
            }
            None if pr.target.needs_page() => pr.target.done = true,
            None => {}
        }
    }
    Ok(plan_pair(pr, opts, may_split))
}

type Fetched = Option<(Vec<Listed>, Vec<String>, Option<String>)>;

/// The request for a side's next page (`start_after`: the range's lower
/// bound in that side's key space, on the first page only).
fn side_request(
    r: &Range,
    prefix: String,
    c: &Cursor,
    start_after: Option<String>,
    opts: &ListOptions,
) -> ListRequest {
    let first = !c.started;
    ListRequest {
        prefix,
        delimiter: matches!(r.style, super::parallel::ListStyle::Delimited { .. })
            .then(|| "/".to_string()),
        start_after: if first { start_after } else { None },
        continuation: if first { None } else { c.token.clone() },
        max_keys: opts.page_size,
        fetch_owner: opts.fetch_owner,
    }
}

async fn fetch_source(
    store: &dyn ObjectStore,
    r: &Range,
    c: &Cursor,
    opts: &ListOptions,
) -> Result<Fetched> {
    if !c.needs_page() {
        return Ok(None);
    }
    let req = side_request(r, r.prefix.clone(), c, r.after.clone(), opts);
    let page = store
        .list_page(&req)
        .await
        .map_err(|e| listing_failed(store, &r.prefix, r.after.as_deref(), e))?;
    Ok(Some((page.objects, page.prefixes, page.next)))
}

/// `Ok(None)` with the cursor still needing a page: the range lies above
/// every target key under the prefix (nothing to list).
async fn fetch_target(
    pair: &PairWalk,
    r: &Range,
    c: &Cursor,
    opts: &ListOptions,
) -> Result<Fetched> {
    if !c.needs_page() {
        return Ok(None);
    }
    let map = &pair.map;
    let start_after = match r.after.as_deref().map(|a| map.bound(a)) {
        None | Some(Bound::Below) => None,
        Some(Bound::At(t)) => Some(t),
        Some(Bound::Above) => return Ok(None),
    };
    let prefix = map.to_target(&r.prefix);
    let req = side_request(r, prefix.clone(), c, start_after, opts);
    let store = pair.target.as_ref();
    let page = store
        .list_page(&req)
        .await
        .map_err(|e| listing_failed(store, &prefix, req.start_after.as_deref(), e))?;
    let objects = page
        .objects
        .into_iter()
        .filter_map(|mut o| {
            o.key = map.to_source(&o.key)?;
            Some(o)
        })
        .collect();
    let prefixes = page
        .prefixes
        .iter()
        .filter_map(|p| map.to_source(p))
        .collect();
    Ok(Some((objects, prefixes, page.next)))
}

/// Classify joined keys: send the new and changed, spool the target-only
/// ones as deletes, count everything.
async fn emit(pair: &PairWalk, joined: Vec<Joined>, tx: &mpsc::Sender<Found>) -> Result<()> {
    let mut tally = Tally::default();
    let mut out = Vec::new();
    for j in joined {
        let Some(found) = judge(pair, j, &mut tally)? else {
            continue;
        };
        out.push(found);
    }
    pair.tally.lock().expect("tally lock").merge(&tally);
    for found in out {
        if tx.send(found).await.is_err() {
            return Err(Error::new(
                ErrorKind::Permanent,
                "Stopped",
                pair.walk.source.to_string(),
                "the pipeline stopped while listing",
            ));
        }
    }
    Ok(())
}

/// One joined key: the item to send, if any (deletes go to the spool).
/// Shared with the sorted diff of [`super::sorted`] (which lists no target).
pub(crate) fn judge(pair: &PairWalk, j: Joined, tally: &mut Tally) -> Result<Option<Found>> {
    let selector = &pair.walk.selector;
    let class = classify(j.source.as_ref(), j.target.as_ref(), pair.rule);
    let Some(src) = j.source else {
        let t = j.target.expect("a joined key is on one side at least");
        // A target-only key is only this run's business if the filters
        // would admit it as a source key: an excluded key is never deleted.
        let scratch = super::SkipCounts::default();
        if !selector.filter.admit(&candidate(&j.key, &t), &scratch) {
            return Ok(None);
        }
        tally.count(class, t.size);
        if let Some(spool) = &pair.deletes {
            spool.push(&KeyItem {
                target_key: selector.map.target_key(&j.key),
                key: j.key,
                size: Some(t.size),
                etag: t.etag,
                last_modified: t.last_modified,
                op: Op::Delete,
                ..KeyItem::default()
            })?;
        }
        return Ok(None);
    };
    let Some(mut item) = selector.item(&candidate(&j.key, &src)) else {
        return Ok(None);
    };
    tally.count(class, src.size);
    match class {
        Class::New | Class::Changed(_) => {}
        Class::Compare {
            keep_newer_target, ..
        } => {
            item.op = Op::Update;
            item.keep_newer_target = keep_newer_target;
        }
        Class::Unchanged | Class::TargetNewer | Class::TargetOnly => return Ok(None),
    }
    item.etag = src.etag;
    item.storage_class = src.storage_class;
    item.checksum_algorithm = src.checksum_algorithm;
    Ok(Some(Found {
        source: pair.walk.source.clone(),
        item,
        row: None,
    }))
}

fn candidate<'a>(key: &'a str, o: &'a Listed) -> Candidate<'a> {
    Candidate {
        key,
        size: Some(o.size),
        last_modified: o.last_modified,
        owner_id: o.owner_id.as_deref(),
        owner_name: o.owner_name.as_deref(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::parallel::tests::Model;
    use crate::listing::parallel::ListStyle;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// Run the paired planner to completion over two model stores,
    /// sequentially (LIFO, as the walk does), returning every joined key.
    fn walk(
        source: &Model,
        target: &Model,
        map: &PrefixMap,
        opts: &ListOptions,
    ) -> Vec<(String, bool, bool)> {
        let mut stack = vec![pair_root(opts)];
        let mut out = Vec::new();
        let mut steps = 0;
        while let Some(mut pr) = stack.pop() {
            steps += 1;
            assert!(steps < 100_000, "the walk does not end");
            if pr.source.needs_page() {
                let req = side_request(
                    &pr.range,
                    pr.range.prefix.clone(),
                    &pr.source,
                    pr.range.after.clone(),
                    opts,
                );
                let p = source.list(&req);
                pr.source.absorb(p.objects, p.prefixes, p.next);
            }
            if pr.target.needs_page() {
                let sa = match pr.range.after.as_deref().map(|a| map.bound(a)) {
                    None | Some(Bound::Below) => Some(None),
                    Some(Bound::At(t)) => Some(Some(t)),
                    Some(Bound::Above) => None,
                };
                match sa {
                    None => pr.target.done = true,
                    Some(sa) => {
                        let req = side_request(
                            &pr.range,
                            map.to_target(&pr.range.prefix),
                            &pr.target,
                            sa,
                            opts,
                        );
                        let p = target.list(&req);
                        let objects = p
                            .objects
                            .into_iter()
                            .map(|mut o| {
                                o.key = map.to_source(&o.key).unwrap();
                                o
                            })
                            .collect();
                        let prefixes = p
                            .prefixes
                            .iter()
                            .map(|x| map.to_source(x).unwrap())
                            .collect();
                        pr.target.absorb(objects, prefixes, p.next);
                    }
                }
            }
            let may_split = stack.len() < opts.max_pending;
            let step = plan_pair(pr, opts, may_split);
            for j in step.emit {
                out.push((j.key, j.source.is_some(), j.target.is_some()));
            }
            if let Some(n) = step.next {
                stack.push(n);
            }
            stack.extend(step.spawn.into_iter().rev());
        }
        out
    }

    /// Every key of either side under the prefix, classified exactly once,
    /// with the right sides.
    fn check(
        source: &BTreeSet<String>,
        target_src_space: &BTreeSet<String>,
        map: &PrefixMap,
        opts: &ListOptions,
        page: usize,
    ) {
        let src = Model {
            keys: source.clone(),
            page,
        };
        let tgt = Model {
            keys: target_src_space.iter().map(|k| map.to_target(k)).collect(),
            page,
        };
        let got = walk(&src, &tgt, map, opts);
        let mut seen: BTreeMap<String, (bool, bool)> = BTreeMap::new();
        for (k, s, t) in got {
            assert!(
                seen.insert(k.clone(), (s, t)).is_none(),
                "{k} classified twice"
            );
        }
        let lo = opts.start_after.clone().unwrap_or_default();
        let expected: BTreeMap<String, (bool, bool)> = source
            .union(target_src_space)
            .filter(|k| k.starts_with(&opts.prefix) && k.as_str() > lo.as_str())
            .map(|k| {
                (
                    k.clone(),
                    (source.contains(k), target_src_space.contains(k)),
                )
            })
            .collect();
        assert_eq!(seen, expected);
    }

    fn keys() -> impl Strategy<Value = BTreeSet<String>> {
        // A small alphabet with `/` makes deep trees, shared prefixes and
        // keys equal to prefixes ("a/" and "a/b") likely.
        proptest::collection::btree_set("[ab/.z]{1,6}", 0..60)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn every_key_of_either_side_is_joined_exactly_once(
            shared in keys(),
            only_source in keys(),
            only_target in keys(),
            page in 1usize..5,
            depth in 0u32..4,
            split_after_pages in 1u32..3,
            fanout in 1usize..5,
            rewrite in 0usize..3,
            start_after in proptest::option::of("[ab/.z]{0,3}"),
        ) {
            // No rewrite; a prefix without `/` moved under another; a
            // prefix stripped (`--target-prefix ''`).
            let (prefix, target_prefix) = [("", None), ("a", Some("zz/")), ("a/", Some(""))][rewrite];
            let prefix = prefix.to_string();
            let map = PrefixMap::new(&prefix, target_prefix);
            let source: BTreeSet<String> = shared.union(&only_source).cloned().collect();
            // (A target key is never empty: the source key equal to a stripped
            // prefix has no target counterpart.)
            let target: BTreeSet<String> = shared
                .union(&only_target)
                .filter(|k| k.starts_with(&prefix) && !map.to_target(k).is_empty())
                .cloned()
                .collect();
            let opts = ListOptions {
                prefix,
                start_after: start_after.filter(|s| !s.is_empty()),
                depth,
                concurrency: 1,
                page_size: None,
                split_after_pages,
                fanout,
                max_pending: 64,
                fetch_owner: false,
            };
            check(&source, &target, &map, &opts, page);
        }
    }

    #[test]
    fn splits_and_hand_overs_happen_and_stay_exact() {
        // Many keys in one flat level: delimited hand-over, then flat splits.
        let source: BTreeSet<String> = (0..300).map(|i| format!("d/{i:04}")).collect();
        let target: BTreeSet<String> = (150..450).map(|i| format!("d/{i:04}")).collect();
        let opts = ListOptions {
            depth: 2,
            split_after_pages: 1,
            fanout: 4,
            ..ListOptions::default()
        };
        let map = PrefixMap::new("", None);
        check(&source, &target, &map, &opts, 7);
        // The planner did split: some range has an upper bound.
        let mut pr = pair_root(&opts);
        pr.range.style = ListStyle::Flat;
        pr.source.absorb(
            (0..7)
                .map(|i| Listed {
                    key: format!("d/{i:04}"),
                    ..Listed::default()
                })
                .collect(),
            vec![],
            Some("t".into()),
        );
        pr.target.absorb(vec![], vec![], Some("t".into()));
        pr.target.objects.push_back(Listed {
            key: "d/0100".into(),
            ..Listed::default()
        });
        let step = plan_pair(pr, &opts, true);
        assert_eq!(step.emit.len(), 7, "everything up to the source's last key");
        assert!(!step.spawn.is_empty(), "a flat range split");
        let next = step.next.unwrap();
        assert!(next.range.until.is_some());
        assert!(
            next.target.done && next.target.objects.is_empty(),
            "beyond the new bound: another range's"
        );
    }

    #[test]
    fn prefix_map_keeps_order_and_bounds() {
        let m = PrefixMap::new("src/", Some("dst/x/"));
        assert_eq!(m.to_target("src/a"), "dst/x/a");
        assert_eq!(m.to_source("dst/x/a").as_deref(), Some("src/a"));
        assert_eq!(m.to_source("other"), None);
        assert_eq!(m.bound("src/k"), Bound::At("dst/x/k".into()));
        assert_eq!(m.bound("r"), Bound::Below);
        assert_eq!(m.bound("src"), Bound::Below);
        assert_eq!(m.bound("sz"), Bound::Above);
    }

    #[test]
    fn the_delete_spool_gives_back_what_it_took() {
        let spool = DeleteSpool::new().unwrap();
        for i in 0..3 {
            spool
                .push(&KeyItem {
                    key: format!("k{i}"),
                    size: Some(i),
                    op: Op::Delete,
                    ..KeyItem::default()
                })
                .unwrap();
        }
        assert_eq!(spool.count(), Count { files: 3, bytes: 3 });
        let back: Vec<KeyItem> = spool.into_items().unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(
            back.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
            ["k0", "k1", "k2"]
        );
        assert!(back.iter().all(|k| k.op == Op::Delete));
    }
}
