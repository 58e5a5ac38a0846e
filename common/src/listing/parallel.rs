//! Parallel ListObjectsV2 (or directory) walk over any [`ObjectStore`].
//!
//! The plan, and why every key is enumerated exactly once:
//! 1. The walk is a set of *ranges*: a prefix `P`, a listing style, and key bounds
//!    `(after, until]` (exclusive lower bound = `StartAfter`, inclusive upper
//!    bound, both optional). A range lists the keys `k` with `P ≤ k`,
//!    `k` starts with `P`, `after < k ≤ until`. Ranges never overlap.
//! 2. The first `--list-depth` levels are listed with delimiter `/`
//!    ([`ListStyle::Delimited`]). S3 puts each key under `P` either in `Contents`
//!    (no `/` after `P`: emitted by this range, including the key equal to `P`)
//!    or in exactly one common prefix `C` (which becomes its own range with
//!    prefix `C`). Key sets of distinct common prefixes are disjoint.
//!    Below the depth, a common prefix is listed flat ([`ListStyle::Flat`]).
//! 3. A flat range that has read `split_after_pages` pages and stopped at key
//!    `K` splits what remains, `(K, until]`, at guessed strings
//!    `K < s1 < … < sm < until`: it continues itself as `(K, s1]` (keeping its
//!    continuation token) and spawns `(s1, s2]`, …, `(sm, until]`. These
//!    intervals partition `(K, until]`, whatever the guesses are — guesses only
//!    affect speed ([`split_points`]).
//! 4. A delimited range that has read `split_after_pages` pages and whose page
//!    ended on a key `K` (not on a common prefix) hands the rest over to a flat
//!    range `(K, ∞)` under the same prefix: every key under `P` greater than
//!    `K` was not yet covered (a common prefix listed before `K` sorts, with all
//!    its keys, below `K`, because `K` does not start with it).
//! 5. With `--start-after S` the walk starts as one flat range `(S, ∞)`.
//!
//! Memory: a range is a few strings; ranges wait on a LIFO stack (depth first),
//! splits stop when `max_pending` ranges wait, and keys leave through a bounded
//! channel — nothing grows with the bucket's size except the stack under a
//! pathologically wide tree (at most one page of common prefixes per level per
//! running range).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Candidate, Found, ListStats, ResumeAfter, Selector};
use crate::error::{Error, ErrorKind, Result};
use crate::store::{ListPage, ListRequest, Listed, ObjectStore};

/// Tuning of the walk; `Default` suits S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOptions {
    /// Where the walk starts (listing `Prefix`).
    pub prefix: String,
    /// Resume point: only keys after this (then the walk starts flat).
    pub start_after: Option<String>,
    /// Levels listed with delimiter `/` (0: flat from the start).
    pub depth: u32,
    /// List requests in flight.
    pub concurrency: usize,
    /// `MaxKeys` per request (`None`: the server's default, 1,000 on S3).
    pub page_size: Option<i32>,
    /// A range splits (or a delimited level hands over) after this many pages.
    pub split_after_pages: u32,
    /// Pieces per split.
    pub fanout: usize,
    /// No new splits while this many ranges wait.
    pub max_pending: usize,
    /// Ask for owners (only when an owner filter is set: it costs S3 time).
    pub fetch_owner: bool,
}

impl Default for ListOptions {
    fn default() -> Self {
        ListOptions {
            prefix: String::new(),
            start_after: None,
            depth: 3,
            concurrency: 16,
            page_size: None,
            split_after_pages: 2,
            fanout: 16,
            max_pending: 4096,
            fetch_owner: false,
        }
    }
}

/// How a range is listed: with or without the `/` delimiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListStyle {
    /// With delimiter `/`; `level` counts from 1 at the walk's prefix.
    Delimited { level: u32 },
    /// Without delimiter, bounded by `(after, until]`.
    Flat,
}

/// A part of the walk: keys under `prefix` in `(after, until]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub prefix: String,
    pub style: ListStyle,
    /// Exclusive lower bound; advanced to the last item handed on, so it is
    /// also where this range would resume.
    pub after: Option<String>,
    /// Inclusive upper bound (flat ranges only).
    pub until: Option<String>,
    /// Continuation token of the next page.
    pub token: Option<String>,
    /// Pages read since the range started or last split.
    pub pages: u32,
    /// First key this range read (guides split guesses).
    pub first: Option<String>,
}

impl Range {
    fn new(prefix: String, style: ListStyle, after: Option<String>, until: Option<String>) -> Self {
        Range {
            prefix,
            style,
            after,
            until,
            token: None,
            pages: 0,
            first: None,
        }
    }
}

/// The range the walk starts with.
pub fn root(opts: &ListOptions) -> Range {
    let style = if opts.start_after.is_some() || opts.depth == 0 {
        ListStyle::Flat
    } else {
        ListStyle::Delimited { level: 1 }
    };
    Range::new(opts.prefix.clone(), style, opts.start_after.clone(), None)
}

/// The ListObjectsV2 request for a range's next page.
pub fn request(r: &Range, opts: &ListOptions) -> ListRequest {
    ListRequest {
        prefix: r.prefix.clone(),
        delimiter: matches!(r.style, ListStyle::Delimited { .. }).then(|| "/".to_string()),
        start_after: if r.token.is_none() {
            r.after.clone()
        } else {
            None
        },
        continuation: r.token.clone(),
        max_keys: opts.page_size,
        fetch_owner: opts.fetch_owner,
    }
}

/// What one page of a range yields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// Keys of this range found on the page, in order.
    pub emit: Vec<Listed>,
    /// New ranges (common prefixes, split pieces, hand-over).
    pub spawn: Vec<Range>,
    /// This range's continuation, if it has more.
    pub next: Option<Range>,
}

/// Pure planning of one page: which keys belong to the range, which ranges
/// to add, how the range continues. `may_split` is false when too many ranges wait.
pub fn plan_step(r: Range, page: ListPage, opts: &ListOptions, may_split: bool) -> Step {
    match r.style {
        ListStyle::Flat => plan_flat(r, page, opts, may_split),
        ListStyle::Delimited { level } => plan_delimited(r, level, page, opts, may_split),
    }
}

fn plan_flat(r: Range, page: ListPage, opts: &ListOptions, may_split: bool) -> Step {
    let mut emit = page.objects;
    let mut done = page.next.is_none();
    if let Some(until) = &r.until {
        if let Some(pos) = emit.iter().position(|o| o.key > *until) {
            emit.truncate(pos);
            done = true;
        }
    }
    let last = emit
        .last()
        .map(|o| o.key.clone())
        .or_else(|| r.after.clone());
    if done || (last.is_some() && last == r.until) {
        return Step {
            emit,
            spawn: Vec::new(),
            next: None,
        };
    }
    let first = r
        .first
        .clone()
        .or_else(|| emit.first().map(|o| o.key.clone()));
    let mut next = Range {
        after: last.clone(),
        token: page.next,
        pages: r.pages + 1,
        first,
        ..r
    };
    let mut spawn = Vec::new();
    if may_split && next.pages >= opts.split_after_pages {
        if let Some(last) = &last {
            let first = next.first.as_deref().unwrap_or(last);
            let points = split_points(
                &next.prefix,
                first,
                last,
                next.until.as_deref(),
                opts.fanout,
            );
            if !points.is_empty() {
                for (i, lo) in points.iter().enumerate() {
                    let hi = points.get(i + 1).cloned().or_else(|| next.until.clone());
                    spawn.push(Range::new(
                        next.prefix.clone(),
                        ListStyle::Flat,
                        Some(lo.clone()),
                        hi,
                    ));
                }
                next.until = Some(points[0].clone());
                next.pages = 0;
                next.first = Some(last.clone());
            }
        }
    }
    Step {
        emit,
        spawn,
        next: Some(next),
    }
}

fn plan_delimited(
    r: Range,
    level: u32,
    page: ListPage,
    opts: &ListOptions,
    may_split: bool,
) -> Step {
    let child_style = if level < opts.depth {
        ListStyle::Delimited { level: level + 1 }
    } else {
        ListStyle::Flat
    };
    let mut spawn: Vec<Range> = page
        .prefixes
        .iter()
        .map(|p| Range::new(p.clone(), child_style.clone(), None, None))
        .collect();
    let emit = page.objects;
    let Some(token) = page.next else {
        return Step {
            emit,
            spawn,
            next: None,
        };
    };
    let last_key = emit.last().map(|o| o.key.clone());
    let last_prefix = page.prefixes.last().cloned();
    let ends_on_key = match (&last_key, &last_prefix) {
        (Some(k), Some(p)) => k > p,
        (Some(_), None) => true,
        _ => false,
    };
    if may_split && ends_on_key && r.pages + 1 >= opts.split_after_pages {
        spawn.push(Range::new(
            r.prefix.clone(),
            ListStyle::Flat,
            last_key,
            None,
        ));
        return Step {
            emit,
            spawn,
            next: None,
        };
    }
    let last_item = std::cmp::max(last_key, last_prefix).or(r.after.clone());
    let next = Range {
        after: last_item,
        token: Some(token),
        pages: r.pages + 1,
        ..r
    };
    Step {
        emit,
        spawn,
        next: Some(next),
    }
}

/// Candidate characters for split points, in byte order. Keys using other
/// characters are still covered: they fall inside some piece.
const SPLIT_ALPHABET: &str = "-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";

/// Guess up to `fanout` split points for the rest of a range that has read
/// keys `first..=last`: strings `last[..i] + c` for the character position
/// `i` where keys seem to vary (after the common part of `first` and `last`,
/// and after the common part with `until`), with characters `c` above
/// `last`'s character there. Guarantees: strictly increasing, each `> last`,
/// each `< until`, each starts with `prefix` (given `last` does). Empty when
/// no such string is found (the range then just keeps paging).
pub fn split_points(
    prefix: &str,
    first: &str,
    last: &str,
    until: Option<&str>,
    fanout: usize,
) -> Vec<String> {
    if fanout == 0 {
        return Vec::new();
    }
    let mut start = common_prefix_len(first, last).max(prefix.len());
    if let Some(u) = until {
        let m = common_prefix_len(last, u);
        let after_m = last[m..].chars().next().map_or(m, |c| m + c.len_utf8());
        start = start.max(after_m);
    }
    let mut start = start.min(last.len());
    while !last.is_char_boundary(start) {
        start += 1;
    }
    let mut positions: Vec<usize> = last[start..]
        .char_indices()
        .map(|(i, _)| start + i)
        .collect();
    positions.push(last.len());
    for i in positions {
        let current = last[i..].chars().next();
        let candidates: Vec<char> = SPLIT_ALPHABET
            .chars()
            .filter(|c| current.is_none_or(|cur| *c > cur))
            .collect();
        let picked: Vec<char> = if candidates.len() <= fanout {
            candidates
        } else {
            (0..fanout)
                .map(|j| candidates[j * candidates.len() / fanout])
                .collect()
        };
        let points: Vec<String> = picked
            .into_iter()
            .map(|c| {
                let mut s = String::with_capacity(i + 1);
                s.push_str(&last[..i]);
                s.push(c);
                s
            })
            .filter(|s| until.is_none_or(|u| s.as_str() < u))
            .collect();
        if !points.is_empty() {
            return points;
        }
    }
    Vec::new()
}

/// Length in bytes of the longest common prefix that ends on a character boundary.
fn common_prefix_len(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or_else(|| a.len().min(b.len()), |((i, _), _)| i)
}

/// How a source ended.
#[derive(Debug, Default)]
pub struct SourceEnd {
    /// What stopped it early, if anything did (a cancel is not an error).
    pub error: Option<Error>,
    /// `None` when every key was handed on; otherwise where to resume
    /// (every key not handed on is greater than this).
    pub unfinished: Option<ResumeAfter>,
    /// Manifests, when stopped: every row not handed on is at or after this.
    pub next_row: Option<super::Row>,
}

/// Everything a walk needs besides the store.
#[derive(Debug, Clone)]
pub struct Walk {
    pub opts: ListOptions,
    pub selector: Arc<Selector>,
    /// The message `source` of every key (`s3://bucket`).
    pub source: Arc<str>,
    pub stats: Arc<ListStats>,
}

/// Walk the store as planned above, pushing selected keys into `tx`, with at
/// most `opts.concurrency` requests in flight. Stops early on the first error
/// (after the store's own retries) or when `cancel` fires; the result then
/// says where to resume.
pub async fn list_parallel(
    store: Arc<dyn ObjectStore>,
    walk: Walk,
    tx: mpsc::Sender<Found>,
    cancel: CancellationToken,
) -> SourceEnd {
    let root = root(&walk.opts);
    let opts = walk.opts.clone();
    drive(root, &opts, cancel, move |range, may_split| {
        let (store, walk, tx) = (store.clone(), walk.clone(), tx.clone());
        async move {
            let step = run_step(store, walk, range, may_split, tx).await?;
            Ok((step.next, step.spawn))
        }
    })
    .await
}

/// A unit of a walk: a range, and where it would resume.
pub(crate) trait Resumable {
    /// Every key this unit has not handed on is greater than this.
    fn after(&self) -> ResumeAfter;
}

impl Resumable for Range {
    fn after(&self) -> ResumeAfter {
        self.after.clone()
    }
}

/// Run `step` over the units of a walk, depth first, at most
/// `opts.concurrency` at once; a step returns the unit's continuation and
/// the units it spawned. Stops at the first error or when `cancel` fires,
/// saying where to resume (the smallest position of any unit not finished).
pub(crate) async fn drive<T, F, Fut>(
    root: T,
    opts: &ListOptions,
    cancel: CancellationToken,
    step: F,
) -> SourceEnd
where
    T: Resumable,
    F: Fn(T, bool) -> Fut,
    Fut: std::future::Future<Output = Result<(Option<T>, Vec<T>)>>,
{
    let mut stack = vec![root];
    let mut running = FuturesUnordered::new();
    let mut positions: HashMap<u64, ResumeAfter> = HashMap::new();
    let mut next_id = 0u64;
    let concurrency = opts.concurrency.max(1);
    loop {
        while running.len() < concurrency {
            let Some(unit) = stack.pop() else { break };
            let may_split = stack.len() < opts.max_pending;
            let id = next_id;
            next_id += 1;
            positions.insert(id, unit.after());
            let fut = step(unit, may_split);
            running.push(async move { (id, fut.await) });
        }
        if running.is_empty() {
            return SourceEnd::default();
        }
        let done = tokio::select! {
            _ = cancel.cancelled() => None,
            d = running.next() => d,
        };
        let Some((id, result)) = done else {
            return stopped(None, &stack, &positions);
        };
        match result {
            Ok((next, spawn)) => {
                positions.remove(&id);
                if let Some(next) = next {
                    stack.push(next);
                }
                stack.extend(spawn.into_iter().rev());
            }
            Err(e) => return stopped(Some(e), &stack, &positions),
        }
    }
}

/// A failed listing request as the run reports it: the store and prefix,
/// and where in the prefix it was.
pub(crate) fn listing_failed(
    store: &dyn ObjectStore,
    prefix: &str,
    after: Option<&str>,
    e: Error,
) -> Error {
    let at = match after {
        Some(a) => format!(" after key `{a}`"),
        None => String::new(),
    };
    let subject = if prefix.is_empty() {
        store.describe()
    } else {
        format!("{}/{}", store.describe(), prefix)
    };
    // An endpoint that never answered is not about this prefix: its own
    // words (`cannot reach URL (reason)`) are the whole message.
    let message = match e.is_unreachable() {
        true => e.message.clone(),
        false => format!("listing prefix `{prefix}`{at} failed: {}", e.message),
    };
    Error::new(e.kind, e.class.clone(), subject, message).with_source(e)
}

fn stopped<T: Resumable>(
    error: Option<Error>,
    stack: &[T],
    running: &HashMap<u64, ResumeAfter>,
) -> SourceEnd {
    let resume = stack
        .iter()
        .map(Resumable::after)
        .chain(running.values().cloned())
        .min()
        .flatten();
    SourceEnd {
        error,
        unfinished: Some(resume),
        next_row: None,
    }
}

async fn run_step(
    store: Arc<dyn ObjectStore>,
    walk: Walk,
    range: Range,
    may_split: bool,
    tx: mpsc::Sender<Found>,
) -> Result<Step> {
    let req = request(&range, &walk.opts);
    let page = store
        .list_page(&req)
        .await
        .map_err(|e| listing_failed(store.as_ref(), &range.prefix, range.after.as_deref(), e))?;
    walk.stats.pages.fetch_add(1, Ordering::Relaxed);
    walk.stats
        .seen
        .fetch_add(page.objects.len() as u64, Ordering::Relaxed);
    let (prefix, flat) = (range.prefix.clone(), range.style == ListStyle::Flat);
    let mut step = plan_step(range, page, &walk.opts, may_split);
    if !step.spawn.is_empty() {
        let what = if flat {
            "range split"
        } else {
            "delimited level fanned out"
        };
        tracing::debug!(prefix = %prefix, ranges = step.spawn.len(), "{what}");
    }
    for o in std::mem::take(&mut step.emit) {
        let c = Candidate {
            key: &o.key,
            size: Some(o.size),
            last_modified: o.last_modified,
            owner_id: o.owner_id.as_deref(),
            owner_name: o.owner_name.as_deref(),
        };
        let Some(mut item) = walk.selector.item(&c) else {
            continue;
        };
        item.etag = o.etag;
        item.storage_class = o.storage_class;
        item.checksum_algorithm = o.checksum_algorithm;
        let found = Found {
            source: walk.source.clone(),
            item,
            row: None,
        };
        if tx.send(found).await.is_err() {
            return Err(Error::new(
                ErrorKind::Permanent,
                "Stopped",
                walk.source.to_string(),
                "the pipeline stopped while listing",
            ));
        }
    }
    Ok(step)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn listed(k: &str) -> Listed {
        Listed {
            key: k.to_string(),
            size: 1,
            ..Listed::default()
        }
    }

    /// A reference model of ListObjectsV2 over a sorted key set (delimiter,
    /// StartAfter, continuation, MaxKeys), to drive the planner without a server.
    pub(crate) struct Model {
        pub(crate) keys: BTreeSet<String>,
        pub(crate) page: usize,
    }

    impl Model {
        pub(crate) fn list(&self, req: &ListRequest) -> ListPage {
            let start = req
                .continuation
                .clone()
                .or_else(|| req.start_after.clone())
                .unwrap_or_default();
            let mut objects = Vec::new();
            let mut prefixes: Vec<String> = Vec::new();
            let mut count = 0;
            let mut last_returned = None;
            let mut more = false;
            for k in self
                .keys
                .iter()
                .filter(|k| k.starts_with(&req.prefix) && k.as_str() > start.as_str())
            {
                let rest = &k[req.prefix.len()..];
                let item = match (&req.delimiter, rest.find('/')) {
                    (Some(_), Some(i)) => {
                        let cp = format!("{}{}", req.prefix, &rest[..=i]);
                        if prefixes.last() == Some(&cp) {
                            continue;
                        }
                        Err(cp)
                    }
                    _ => Ok(k.clone()),
                };
                if count == self.page {
                    more = true;
                    break;
                }
                count += 1;
                match item {
                    Ok(k) => {
                        last_returned = Some(k.clone());
                        objects.push(listed(&k));
                    }
                    Err(cp) => {
                        // A token after a common prefix resumes past all its keys.
                        last_returned = Some(format!("{cp}\u{10FFFF}"));
                        prefixes.push(cp);
                    }
                }
            }
            ListPage {
                objects,
                prefixes,
                next: if more { last_returned } else { None },
            }
        }

        /// Run the planner to completion (sequentially, LIFO) and return every emitted key.
        fn walk(&self, opts: &ListOptions) -> (Vec<String>, usize) {
            let mut stack = vec![root(opts)];
            let mut out = Vec::new();
            let mut requests = 0;
            while let Some(r) = stack.pop() {
                requests += 1;
                let page = self.list(&request(&r, opts));
                let may_split = stack.len() < opts.max_pending;
                let step = plan_step(r, page, opts, may_split);
                out.extend(step.emit.into_iter().map(|o| o.key));
                stack.extend(step.next);
                stack.extend(step.spawn.into_iter().rev());
            }
            (out, requests)
        }
    }

    fn tricky_keys() -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        for i in 0..300 {
            keys.insert(format!("flat/{i:05}.log"));
        }
        for a in 0..5 {
            for b in 0..5 {
                for c in 0..4 {
                    keys.insert(format!("n/{a}/{b}/{c}/leaf"));
                }
                keys.insert(format!("n/{a}/{b}"));
                keys.insert(format!("n/{a}/{b}/"));
            }
        }
        for k in [
            "a/",
            "a//b",
            "/lead",
            "sp ace",
            "plus+sign",
            "pct%41",
            "q?x",
            "h#x",
            "ü/ñ",
            "~tilde",
            "Z",
            "a/b/",
            "a/b/c/d/e/f",
            "n/",
            "n",
        ] {
            keys.insert(k.to_string());
        }
        keys.insert("L".repeat(1024));
        keys.insert(format!("deep/{}", "é".repeat(400)));
        keys
    }

    #[test]
    fn every_key_once_for_many_shapes() {
        let model_keys = tricky_keys();
        for page in [1, 2, 3, 7, 1000] {
            for depth in [0, 1, 2, 3, 5] {
                for split_after_pages in [1, 2, 100] {
                    for fanout in [1, 2, 16] {
                        let m = Model {
                            keys: model_keys.clone(),
                            page,
                        };
                        let opts = ListOptions {
                            depth,
                            split_after_pages,
                            fanout,
                            max_pending: 64,
                            ..ListOptions::default()
                        };
                        let (mut got, _) = m.walk(&opts);
                        got.sort();
                        let want: Vec<_> = model_keys.iter().cloned().collect();
                        assert_eq!(
                            got, want,
                            "page {page} depth {depth} split {split_after_pages} fanout {fanout}"
                        );
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(200))]
        #[test]
        fn random_key_sets_are_listed_exactly_once(
            keys in proptest::collection::btree_set("[ab/é~0-]{1,7}", 0..120),
            page in 1usize..6,
            depth in 0u32..4,
            split_after_pages in 1u32..3,
            fanout in 1usize..6,
            max_pending in 0usize..8,
            prefix in proptest::option::of("[ab/]{1,2}"),
        ) {
            let m = Model { keys: keys.clone(), page };
            let prefix = prefix.unwrap_or_default();
            let opts = ListOptions { prefix: prefix.clone(), depth, split_after_pages, fanout, max_pending, ..ListOptions::default() };
            let (mut got, _) = m.walk(&opts);
            got.sort();
            let want: Vec<String> = keys.into_iter().filter(|k| k.starts_with(&prefix)).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn prefix_and_start_after_restrict_the_walk() {
        let keys = tricky_keys();
        let m = Model {
            keys: keys.clone(),
            page: 4,
        };
        for (prefix, after) in [
            ("n/", None),
            ("n/1/", Some("n/1/2/")),
            ("", Some("n/3")),
            ("flat/", Some("flat/00150.log")),
        ] {
            let opts = ListOptions {
                prefix: prefix.to_string(),
                start_after: after.map(str::to_string),
                split_after_pages: 1,
                ..ListOptions::default()
            };
            let (mut got, _) = m.walk(&opts);
            got.sort();
            let want: Vec<_> = keys
                .iter()
                .filter(|k| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a))
                .cloned()
                .collect();
            assert_eq!(got, want, "{prefix} {after:?}");
        }
    }

    #[test]
    fn flat_prefixes_split_into_parallel_ranges() {
        let keys: BTreeSet<String> = (0..2000)
            .map(|i| format!("logs/2024-01-{:02}-{i:05}", i % 28 + 1))
            .collect();
        let m = Model { keys, page: 10 };
        let opts = ListOptions {
            depth: 0,
            split_after_pages: 2,
            ..ListOptions::default()
        };
        let r = root(&opts);
        let page = m.list(&request(&r, &opts));
        let step = plan_step(r, page, &opts, true);
        assert!(
            step.next.is_some() && step.spawn.is_empty(),
            "first page never splits"
        );
        let r = step.next.unwrap();
        let page = m.list(&request(&r, &opts));
        let step = plan_step(r, page, &opts, true);
        assert!(step.spawn.len() > 1, "second page splits: {:?}", step.spawn);
        let next = step.next.unwrap();
        assert_eq!(next.until.as_deref(), step.spawn[0].after.as_deref());
        for w in step.spawn.windows(2) {
            assert_eq!(w[0].until, w[1].after, "pieces are contiguous");
        }
        assert_eq!(step.spawn.last().unwrap().until, None);
        // And without permission to split, the range just continues.
        let step = plan_step(next.clone(), m.list(&request(&next, &opts)), &opts, false);
        assert!(step.spawn.is_empty());
    }

    #[test]
    fn delimited_levels_hand_over_flat_tails() {
        let keys: BTreeSet<String> = (0..50).map(|i| format!("k{i:03}")).collect();
        let m = Model { keys, page: 5 };
        let opts = ListOptions {
            depth: 2,
            split_after_pages: 2,
            ..ListOptions::default()
        };
        let r = root(&opts);
        let s1 = plan_step(r, m.list(&request(&root(&opts), &opts)), &opts, true);
        let r2 = s1.next.unwrap();
        let s2 = plan_step(r2.clone(), m.list(&request(&r2, &opts)), &opts, true);
        assert!(s2.next.is_none());
        assert_eq!(
            s2.spawn,
            vec![Range::new(
                String::new(),
                ListStyle::Flat,
                Some("k009".into()),
                None
            )]
        );
    }

    #[test]
    fn split_points_keep_their_promises() {
        let cases: Vec<(&str, &str, &str, Option<&str>)> = vec![
            (
                "logs/",
                "logs/2024-01-01-0001",
                "logs/2024-01-01-0731",
                None,
            ),
            ("logs/", "logs/a", "logs/a", None),
            ("", "a", "b", Some("b0")),
            ("", "x~~~", "x~~~", None),
            ("p/", "p/é1", "p/é9", Some("p/ê")),
            ("", "k0", "k5", Some("k6")),
            ("", "abc", "abd", Some("abd-")),
            ("", "a", "a", Some("a")),
        ];
        for (prefix, first, last, until) in cases {
            let pts = split_points(prefix, first, last, until, 16);
            for w in pts.windows(2) {
                assert!(w[0] < w[1], "{pts:?}");
            }
            for p in &pts {
                assert!(p.as_str() > last, "{p} > {last}");
                assert!(until.is_none_or(|u| p.as_str() < u), "{p} < {until:?}");
                assert!(p.starts_with(prefix));
            }
            assert!(pts.len() <= 16);
        }
        let pts = split_points(
            "logs/",
            "logs/2024-01-01-0001",
            "logs/2024-01-01-0731",
            None,
            4,
        );
        assert_eq!(pts[0], "logs/2024-01-01-08", "{pts:?}");
        assert!(split_points("", "a", "a", Some("a"), 16).is_empty());
    }

    #[test]
    fn common_prefix_respects_char_boundaries() {
        assert_eq!(common_prefix_len("éa", "éb"), 2);
        assert_eq!(common_prefix_len("é", "è"), 0);
        assert_eq!(common_prefix_len("ab", "abc"), 2);
    }
}
