//! S3 Batch Operations CSV manifests as a source of keys: lines
//! `bucket,key[,version_id]`, keys URL-encoded with RFC 3986 percent-encoding
//! (`%20` is a space; a `+` stays a `+`, unlike inventory's form encoding).
//! Blank lines are skipped; a row with another column count, a bad escape, an
//! invalid bucket name, or (when `-s` is given) another bucket is an error
//! naming the file and line. One manifest may name several buckets: each key
//! carries its own source.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::inventory::finish;
use super::parallel::SourceEnd;
use super::{BlockingRead, Candidate, Found, ListStats, Row, RowTracker, Selector};
use crate::error::{Error, ErrorKind, Result};
use crate::location::Location;
use crate::message::KeyItem;
use crate::store::ObjectStore;

/// Called for every selected key with its row and source (`s3://bucket`); an error stops the read.
pub type RowEmit = Arc<dyn Fn(Row, &Arc<str>, KeyItem) -> Result<()> + Send + Sync>;

/// What [`read_rows`] calls for each selected key: line, source, key.
pub type LineEmit<'a> = dyn FnMut(u64, &Arc<str>, KeyItem) -> Result<()> + 'a;

/// Read manifest rows, calling `emit` for each selected key (with its line)
/// in file order. `name` names the file in errors (with `:line`).
/// `only_bucket`: rows must name this bucket. Returns the rows read;
/// `rows_read` (if given) counts them as they are read, for progress.
pub fn read_rows<R: Read>(
    reader: R,
    name: &str,
    only_bucket: Option<&str>,
    selector: &Selector,
    rows_read: Option<&AtomicU64>,
    emit: &mut LineEmit<'_>,
) -> Result<u64> {
    // Line by line (fields are URL-encoded, so a row never spans lines): exact
    // line numbers in errors, blank lines included.
    let mut input = BufReader::with_capacity(256 * 1024, reader);
    let mut buf = Vec::new();
    let mut sources: HashMap<Vec<u8>, Arc<str>> = HashMap::new();
    let mut rows = 0u64;
    let mut line = 0u64;
    loop {
        buf.clear();
        let n = input.read_until(b'\n', &mut buf).map_err(|e| {
            Error::input(
                format!("{name}:{}", line + 1),
                format!("cannot read the CSV manifest: {e}"),
            )
        })?;
        if n == 0 {
            break;
        }
        line += 1;
        let at = || format!("{name}:{line}");
        let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let text = if line == 1 {
            text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text)
        } else {
            text
        };
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        rows += 1;
        if let Some(r) = rows_read {
            r.fetch_add(1, Ordering::Relaxed);
        }
        let rec = split_fields(text).ok_or_else(|| Error::input(at(), "unbalanced quotes"))?;
        if rec.len() != 2 && rec.len() != 3 {
            return Err(Error::input(
                at(),
                format!(
                    "row has {} columns; a CSV manifest row is bucket,key[,version_id]",
                    rec.len()
                ),
            ));
        }
        let source = match sources.get(rec[0].as_ref()) {
            Some(s) => s.clone(),
            None => {
                let bucket = std::str::from_utf8(&rec[0])
                    .map_err(|_| Error::input(at(), "bucket is not UTF-8"))?
                    .trim();
                if bucket.starts_with("s3://") || bucket.contains('/') {
                    return Err(Error::input(
                        at(),
                        format!("`{bucket}` is not a bucket name"),
                    ));
                }
                let loc = Location::parse(bucket, &at())?;
                if let Some(only) = only_bucket {
                    if bucket != only {
                        return Err(Error::input(
                            at(),
                            format!("row names bucket `{bucket}`, but the source is `{only}` (-s)"),
                        ));
                    }
                }
                let s: Arc<str> = Arc::from(loc.container().to_string());
                sources.insert(rec[0].to_vec(), s.clone());
                s
            }
        };
        let key = super::inventory::decode_percent(rec[1].as_ref()).ok_or_else(|| {
            Error::input(
                at(),
                format!(
                    "key `{}` is not valid percent-encoded UTF-8",
                    String::from_utf8_lossy(rec[1].as_ref())
                ),
            )
        })?;
        if key.is_empty() {
            return Err(Error::input(at(), "empty key"));
        }
        if key.len() > super::MAX_KEY_BYTES {
            return Err(Error::input(
                at(),
                format!("key of {} bytes is over S3's 1,024-byte limit", key.len()),
            ));
        }
        let c = Candidate {
            key: &key,
            ..Candidate::default()
        };
        let Some(mut item) = selector.item(&c) else {
            continue;
        };
        if rec.len() == 3 && !rec[2].is_empty() {
            let v = std::str::from_utf8(&rec[2])
                .map_err(|_| Error::input(at(), "version id is not UTF-8"))?;
            item.version_id = Some(v.to_string());
        }
        emit(line, &source, item)?;
    }
    Ok(rows)
}

/// Split one CSV line into fields: `"…"` quoting with `""` for a quote.
/// `None` when a quote is not closed or is followed by something else than `,`.
fn split_fields(line: &[u8]) -> Option<Vec<Cow<'_, [u8]>>> {
    let mut fields = Vec::with_capacity(3);
    let mut i = 0;
    loop {
        if line.get(i) == Some(&b'"') {
            let mut value = Vec::new();
            i += 1;
            loop {
                match line.get(i)? {
                    b'"' if line.get(i + 1) == Some(&b'"') => {
                        value.push(b'"');
                        i += 2;
                    }
                    b'"' => {
                        i += 1;
                        break;
                    }
                    b => {
                        value.push(*b);
                        i += 1;
                    }
                }
            }
            fields.push(Cow::Owned(value));
            match line.get(i) {
                None => return Some(fields),
                Some(b',') => i += 1,
                Some(_) => return None,
            }
        } else {
            let end = line[i..]
                .iter()
                .position(|b| *b == b',')
                .map_or(line.len(), |p| i + p);
            fields.push(Cow::Borrowed(&line[i..end]));
            if end == line.len() {
                return Some(fields);
            }
            i = end + 1;
        }
    }
}

/// Where the manifest is.
#[derive(Debug, Clone)]
enum Place {
    S3 {
        store: Arc<dyn ObjectStore>,
        key: String,
    },
    Local(PathBuf),
}

/// A CSV manifest, local or in S3.
#[derive(Debug, Clone)]
pub struct CsvManifest {
    /// `s3://bucket/key` or the path, for messages.
    pub name: String,
    /// `--resume-from` (file 1): lines before this one are not sent.
    pub resume_from: Option<Row>,
    place: Place,
}

impl CsvManifest {
    /// A local manifest file.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        CsvManifest {
            name: path.display().to_string(),
            resume_from: None,
            place: Place::Local(path),
        }
    }

    /// A manifest object; `store` reads `bucket` with the inventory credentials.
    pub fn s3(store: Arc<dyn ObjectStore>, bucket: &str, key: &str) -> Self {
        CsvManifest {
            name: format!("s3://{bucket}/{key}"),
            resume_from: None,
            place: Place::S3 {
                store,
                key: key.to_string(),
            },
        }
    }

    async fn open(&self) -> Result<Box<dyn Read + Send>> {
        match &self.place {
            Place::Local(p) => {
                let f = std::fs::File::open(p).map_err(|e| {
                    Error::input(&self.name, format!("cannot open the CSV manifest: {e}"))
                })?;
                Ok(Box::new(f))
            }
            Place::S3 { store, key } => {
                let stream = store.get(key, None, None).await.map_err(|e| {
                    let msg = if e.kind == ErrorKind::NotFound {
                        "CSV manifest not found".to_string()
                    } else {
                        format!("cannot read the CSV manifest: {}", e.message)
                    };
                    Error::new(e.kind, e.class.clone(), &self.name, msg).with_source(e)
                })?;
                Ok(Box::new(BlockingRead::new(stream)))
            }
        }
    }

    /// Read every row (on a blocking thread), calling `emit` for each selected
    /// key; returns the rows read. Used for the counting pre-pass and for sending.
    pub async fn for_each(
        &self,
        only_bucket: Option<String>,
        selector: Arc<Selector>,
        stats: Option<Arc<ListStats>>,
        emit: RowEmit,
    ) -> Result<u64> {
        let reader = self.open().await?;
        let name = self.name.clone();
        // A CSV manifest is one file: a resume point in a later one sends nothing.
        let first_line = match self.resume_from {
            Some(r) if r.file > 1 => u64::MAX,
            Some(r) => r.line,
            None => 1,
        };
        tokio::task::spawn_blocking(move || {
            let seen = stats.as_ref().map(|s| &s.seen);
            let rows = read_rows(
                reader,
                &name,
                only_bucket.as_deref(),
                &selector,
                seen,
                &mut |line, s, item| {
                    if line < first_line {
                        return Ok(());
                    }
                    emit(Row { file: 1, line }, s, item)
                },
            )?;
            if let Some(st) = &stats {
                st.pages.fetch_add(1, Ordering::Relaxed);
            }
            Ok(rows)
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Permanent, "Panic", &self.name, e.to_string()))?
    }

    /// Send every selected key into `tx`. The resume point is the row after
    /// the last one handed on (rows need not be in key order nor name one bucket).
    pub async fn send(
        &self,
        only_bucket: Option<String>,
        selector: Arc<Selector>,
        stats: Arc<ListStats>,
        tx: mpsc::Sender<Found>,
        cancel: CancellationToken,
    ) -> SourceEnd {
        let tracker = Arc::new(std::sync::Mutex::new(RowTracker::new(self.resume_from)));
        let t2 = tracker.clone();
        let emit: RowEmit = Arc::new(move |row: Row, source: &Arc<str>, item: KeyItem| {
            if cancel.is_cancelled() {
                return Err(Error::new(
                    ErrorKind::Permanent,
                    "Stopped",
                    "",
                    "the pipeline stopped",
                ));
            }
            let found = Found {
                source: source.clone(),
                item,
                row: Some(row),
            };
            tx.blocking_send(found).map_err(|_| {
                Error::new(ErrorKind::Permanent, "Stopped", "", "the pipeline stopped")
            })?;
            t2.lock().expect("tracker lock").handed_on(row);
            Ok(())
        });
        let result = self
            .for_each(only_bucket, selector, Some(stats), emit)
            .await;
        let next = tracker.lock().expect("tracker lock").next();
        finish(result.map(|_| ()), next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::{FilterSpec, KeyFilter, KeyMap};

    fn run(text: &str, only: Option<&str>, spec: FilterSpec) -> Result<Vec<(String, KeyItem)>> {
        let sel = Selector::new(KeyFilter::new(spec).unwrap(), KeyMap::default());
        let mut out = Vec::new();
        read_rows(
            text.as_bytes(),
            "/m.csv",
            only,
            &sel,
            None,
            &mut |_, s, i| {
                out.push((s.to_string(), i));
                Ok(())
            },
        )?;
        Ok(out)
    }

    #[test]
    fn reads_rows_of_several_buckets_with_rfc3986_keys() {
        let text = "\u{FEFF}src-a,a%20b+c%2Bd,\r\nsrc-a,\"dir/%C3%BC\",v7\n\nsrc-b,plain";
        let rows = run(text, None, FilterSpec::default()).unwrap();
        let got: Vec<_> = rows
            .iter()
            .map(|(s, i)| (s.as_str(), i.key.as_str(), i.version_id.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("s3://src-a", "a b+c+d", None),
                ("s3://src-a", "dir/ü", Some("v7")),
                ("s3://src-b", "plain", None)
            ]
        );
    }

    #[test]
    fn filters_apply_and_bad_rows_name_the_line() {
        let rows = run(
            "b-1,x/1\nb-1,y/2\n",
            None,
            FilterSpec {
                prefix: "y/".into(),
                ..FilterSpec::default()
            },
        )
        .unwrap();
        assert_eq!(rows.len(), 1);
        for (text, only, line, why) in [
            ("b-1,k\nb-1\n", None, ":2", "1 columns"),
            ("b-1,k\n\nb-1,k\nb-1\n", None, ":4", "1 columns"),
            ("b-1,k\nb-1,k,v,extra\n", None, ":2", "4 columns"),
            ("b-1,k\nother,k\n", Some("b-1"), ":2", "other"),
            ("b-1,bad%zz%FF\n", None, ":1", "percent-encoded"),
            ("Bad Bucket,k\n", None, ":1", "bucket"),
        ] {
            let e = run(text, only, FilterSpec::default()).unwrap_err();
            let s = e.to_string();
            assert!(
                s.contains(&format!("/m.csv{line}")) && s.contains(why),
                "{text}: {s}"
            );
        }
    }

    #[test]
    fn splits_quoted_fields() {
        let f = |s: &str| {
            split_fields(s.as_bytes()).map(|v| {
                v.iter()
                    .map(|x| String::from_utf8_lossy(x).into_owned())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(f("a,b").unwrap(), ["a", "b"]);
        assert_eq!(f("a,\"b,\"\"c\"\"\",").unwrap(), ["a", "b,\"c\"", ""]);
        assert_eq!(f("\"\"").unwrap(), [""]);
        assert!(f("\"open").is_none());
        assert!(f("\"a\"x,b").is_none());
    }
}
