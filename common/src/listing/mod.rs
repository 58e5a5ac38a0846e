//! Sources of keys for the commander: a parallel ListObjectsV2 walk
//! ([`parallel`]), S3 Inventory manifests ([`inventory`]) and S3 Batch
//! Operations CSV manifests ([`csv_manifest`]). Each source applies the
//! [`filter::KeyFilter`] and the [`KeyMap`] while it reads, and pushes
//! [`Found`] items into a bounded channel: memory is bounded by that channel,
//! never by the size of the source. Batching lives in [`crate::message::BatchBuilder`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use crate::message::KeyItem;
use crate::store::ByteStream;

pub mod csv_manifest;
pub mod diff;
pub mod filter;
pub mod inventory;
pub mod pair;
pub mod parallel;
pub mod sorted;

pub use parallel::SourceEnd;

pub use filter::{Candidate, FilterSpec, KeyFilter, OwnerRule, Skip, SkipCounts, SkipSummary};

/// S3's key length limit (bytes), which target keys must respect too.
pub const MAX_KEY_BYTES: usize = 1024;

/// One key to send, and the source (`s3://bucket` / `file:///dir`, no prefix)
/// it comes from: a CSV manifest may name several buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub source: Arc<str>,
    pub item: KeyItem,
    /// The manifest row it was read from (`None` for listings, whose resume
    /// point is a key: they are read in key order).
    pub row: Option<Row>,
}

/// A manifest row: data file number (1-based, in manifest order; 1 for a CSV
/// manifest) and line (1-based). Resume points of manifests are rows, not
/// keys, so they hold whatever the order of rows and files: resuming from a
/// row re-reads every row at or after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Row {
    pub file: u32,
    pub line: u64,
}

impl Row {
    /// The first row of the first file.
    pub const FIRST: Row = Row { file: 1, line: 1 };

    /// The next line of the same file (past its end: the next file's start).
    pub fn next(self) -> Row {
        Row {
            file: self.file,
            line: self.line + 1,
        }
    }

    /// Parse `FILE:LINE` (both 1-based), as `--resume-from` takes it; errors name `flag`.
    pub fn parse(input: &str, flag: &str) -> crate::Result<Row> {
        let bad = || {
            crate::Error::input(
                flag,
                format!("`{input}` is not a manifest row: expected FILE:LINE (data file number and line, both from 1), as a failed run prints it"),
            )
        };
        let (f, l) = input.trim().split_once(':').ok_or_else(bad)?;
        let file: u32 = f.trim().parse().map_err(|_| bad())?;
        let line: u64 = l.trim().parse().map_err(|_| bad())?;
        if file == 0 || line == 0 {
            return Err(bad());
        }
        Ok(Row { file, line })
    }
}

impl std::fmt::Display for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Tracks the last manifest row handed on, for the resume point of a stopped read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowTracker {
    start: Row,
    last: Option<Row>,
}

impl RowTracker {
    /// A read that started at `start` (the `--resume-from` row, else the first).
    pub(crate) fn new(start: Option<Row>) -> Self {
        RowTracker {
            start: start.unwrap_or(Row::FIRST),
            last: None,
        }
    }

    /// `row` was handed on (rows come in read order).
    pub(crate) fn handed_on(&mut self, row: Row) {
        self.last = Some(row);
    }

    /// Every row not handed on is at or after this one.
    pub(crate) fn next(&self) -> Row {
        self.last.map_or(self.start, Row::next)
    }
}

/// `--target-prefix`: the source prefix (`-p`) is replaced by the target prefix
/// in the target key; a key outside the source prefix keeps its whole name
/// after the target prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyMap {
    source_prefix: String,
    target_prefix: Option<String>,
}

impl KeyMap {
    /// `target_prefix: None` keeps keys unchanged.
    pub fn new(source_prefix: impl Into<String>, target_prefix: Option<String>) -> Self {
        KeyMap {
            source_prefix: source_prefix.into(),
            target_prefix,
        }
    }

    /// The target key when it differs from `key`.
    pub fn target_key(&self, key: &str) -> Option<String> {
        let tp = self.target_prefix.as_deref()?;
        let rest = key.strip_prefix(self.source_prefix.as_str()).unwrap_or(key);
        let mut t = String::with_capacity(tp.len() + rest.len());
        t.push_str(tp);
        t.push_str(rest);
        (t != key).then_some(t)
    }
}

/// Filter + key mapping + skip counters: turns what a source knows about a key
/// into the [`KeyItem`] to send, or counts why it is skipped.
#[derive(Debug)]
pub struct Selector {
    pub filter: KeyFilter,
    pub map: KeyMap,
    pub counts: Arc<SkipCounts>,
}

impl Selector {
    /// A selector with fresh counters.
    pub fn new(filter: KeyFilter, map: KeyMap) -> Self {
        Selector {
            filter,
            map,
            counts: Arc::new(SkipCounts::default()),
        }
    }

    /// The same rules with separate counters (for a counting pre-pass).
    pub fn with_fresh_counts(&self) -> Self {
        Selector {
            filter: self.filter.clone(),
            map: self.map.clone(),
            counts: Arc::new(SkipCounts::default()),
        }
    }

    /// The item to send (key, target key, size, last-modified filled in), or
    /// `None` when a filter drops the key (counted).
    pub fn item(&self, c: &Candidate<'_>) -> Option<KeyItem> {
        if !self.filter.admit(c, &self.counts) {
            return None;
        }
        let target_key = self.map.target_key(c.key);
        if let Some(t) = &target_key {
            if t.len() > MAX_KEY_BYTES {
                tracing::warn!(
                    key = c.key,
                    target_bytes = t.len(),
                    "target key over 1,024 bytes: skipped"
                );
                self.counts.add(Skip::TargetKeyTooLong);
                return None;
            }
        }
        Some(KeyItem {
            key: c.key.to_string(),
            target_key,
            size: c.size,
            last_modified: c.last_modified,
            ..KeyItem::default()
        })
    }
}

/// A blocking [`std::io::Read`] over an async byte stream (an S3 GetObject
/// body), for parsers that run on a blocking thread: no temp file, memory is
/// one chunk. Must be created inside the runtime, used outside its workers.
pub struct BlockingRead {
    stream: ByteStream,
    buf: Bytes,
    handle: tokio::runtime::Handle,
    /// The stream ended: never poll it again (streams need not be fused).
    done: bool,
}

impl BlockingRead {
    /// Wrap a stream; captures the current runtime.
    pub fn new(stream: ByteStream) -> Self {
        BlockingRead {
            stream,
            buf: Bytes::new(),
            handle: tokio::runtime::Handle::current(),
            done: false,
        }
    }
}

impl std::io::Read for BlockingRead {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.handle.block_on(self.stream.next()) {
                None => {
                    self.done = true;
                    return Ok(0);
                }
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}

/// Progress of a source, shared with the progress line.
#[derive(Debug, Default)]
pub struct ListStats {
    /// Keys read from the source (before filters).
    pub seen: AtomicU64,
    /// Listing pages or manifest data files done.
    pub pages: AtomicU64,
}

impl ListStats {
    /// Keys read so far.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }
}

/// Where a stopped source can resume: every key not yet handed on is greater
/// than this. `None` means "from the beginning".
pub type ResumeAfter = Option<String>;

/// A `--start-after` value strictly below `key` (the key minus its last
/// character), so a resume includes `key` itself; `None` when that is empty.
pub fn resume_before(key: &str) -> ResumeAfter {
    let mut s = key.to_string();
    s.pop();
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_prefix_replaces_the_source_prefix() {
        let m = KeyMap::new("logs/", Some("archive/2024/".into()));
        assert_eq!(
            m.target_key("logs/a.gz").as_deref(),
            Some("archive/2024/a.gz")
        );
        assert_eq!(
            m.target_key("other/b").as_deref(),
            Some("archive/2024/other/b")
        );
        let m = KeyMap::new("", Some("new/".into()));
        assert_eq!(m.target_key("x").as_deref(), Some("new/x"));
        assert_eq!(KeyMap::new("a/", None).target_key("a/x"), None);
        assert_eq!(KeyMap::new("a/", Some("a/".into())).target_key("a/x"), None);
    }

    #[test]
    fn selector_builds_items_and_skips_long_targets() {
        let f = KeyFilter::new(FilterSpec::default()).unwrap();
        let s = Selector::new(f, KeyMap::new("", Some("p/".into())));
        let it = s
            .item(&Candidate {
                key: "k",
                size: Some(3),
                ..Candidate::default()
            })
            .unwrap();
        assert_eq!(
            (it.key.as_str(), it.target_key(), it.size),
            ("k", "p/k", Some(3))
        );
        let long = "x".repeat(MAX_KEY_BYTES);
        assert!(s
            .item(&Candidate {
                key: &long,
                ..Candidate::default()
            })
            .is_none());
        assert_eq!(s.counts.get(Skip::TargetKeyTooLong), 1);
        assert_eq!(s.with_fresh_counts().counts.get(Skip::TargetKeyTooLong), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn blocking_read_never_polls_an_ended_stream() {
        use std::io::Read;
        let chunks = vec![Ok(Bytes::from_static(b"ab")), Ok(Bytes::from_static(b"cd"))];
        // `unfold` panics when polled after its end, as the S3 body stream may.
        let stream = futures::stream::unfold(chunks.into_iter(), |mut it| async move {
            it.next().map(|c| (c, it))
        });
        let mut r = BlockingRead::new(Box::pin(stream));
        let out = tokio::task::spawn_blocking(move || {
            let mut s = Vec::new();
            r.read_to_end(&mut s).unwrap();
            let mut more = [0u8; 4];
            assert_eq!(r.read(&mut more).unwrap(), 0);
            s
        })
        .await
        .unwrap();
        assert_eq!(out, b"abcd");
    }

    #[test]
    fn rows_parse_print_and_order_by_file_then_line() {
        let r = Row::parse(" 2:17 ", "--resume-from").unwrap();
        assert_eq!((r.file, r.line), (2, 17));
        assert_eq!(r.to_string(), "2:17");
        assert!(Row { file: 1, line: 900 } < Row { file: 2, line: 1 });
        assert_eq!(r.next().to_string(), "2:18");
        for bad in ["", "3", "0:1", "1:0", "a:b", "1:2:3", "-1:4"] {
            let e = Row::parse(bad, "--resume-from").unwrap_err();
            assert!(e.to_string().contains("--resume-from"), "{bad}: {e}");
        }
        let mut t = RowTracker::new(None);
        assert_eq!(t.next(), Row::FIRST);
        t.handed_on(Row { file: 1, line: 4 });
        assert_eq!(t.next(), Row { file: 1, line: 5 });
        let t = RowTracker::new(Some(r));
        assert_eq!(
            t.next(),
            r,
            "nothing handed on: resume where this run started"
        );
    }

    #[test]
    fn resume_before_is_strictly_below() {
        assert_eq!(resume_before("abc").as_deref(), Some("ab"));
        assert_eq!(resume_before("a"), None);
        assert_eq!(resume_before("aé").as_deref(), Some("a"));
        assert!(resume_before("a/b").unwrap().as_str() < "a/b");
    }
}
