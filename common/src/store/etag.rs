//! S3 ETags computed from content, for stores that keep none (directories):
//! a plain MD5 ETag, or the multipart ETag `md5(concat(part md5s))-N` for a
//! given part layout. Check mode and verification use these to compare a
//! directory file with an S3 object that was uploaded in parts.

use futures::StreamExt;
use md5::{Digest, Md5};

use super::ObjectStore;
use crate::error::{Error, ErrorKind, Result};

/// The quoted ETag of a single-part object: `"<hex md5>"`, as S3 returns it.
pub fn md5_etag(digest: &[u8; 16]) -> String {
    format!("\"{}\"", hex::encode(digest))
}

/// The quoted ETag of a multipart object from its parts' MD5 digests:
/// `"<hex md5(concat(digests))>-N"`. Matches S3 for any N ≥ 1.
pub fn multipart_etag(part_digests: &[[u8; 16]]) -> String {
    let mut h = Md5::new();
    for d in part_digests {
        h.update(d);
    }
    let d: [u8; 16] = h.finalize().into();
    format!("\"{}-{}\"", hex::encode(d), part_digests.len())
}

/// Whether two ETags denote the same content, ignoring surrounding quotes
/// (some servers and listings drop them) and hex case.
pub fn etag_eq(a: &str, b: &str) -> bool {
    a.trim_matches('"')
        .eq_ignore_ascii_case(b.trim_matches('"'))
}

/// Incremental hasher that splits a byte stream into a given part layout.
/// Feed bytes with [`LayoutHasher::update`], then [`LayoutHasher::finish`];
/// a stream longer or shorter than the layout is an error (the object changed
/// or the layout is wrong), never a silently different ETag.
#[derive(Debug, Clone)]
pub struct LayoutHasher {
    sizes: Vec<u64>,
    multipart: bool,
    part: usize,
    left: u64,
    current: Md5,
    whole: Md5,
    digests: Vec<[u8; 16]>,
    total: u64,
}

impl LayoutHasher {
    /// A hasher for `part_sizes`. `multipart = false` with zero or one part
    /// gives a plain MD5 ETag; otherwise the `-N` form (N = number of sizes).
    pub fn new(part_sizes: &[u64], multipart: bool) -> Self {
        let multipart = multipart || part_sizes.len() > 1;
        LayoutHasher {
            sizes: part_sizes.to_vec(),
            multipart,
            part: 0,
            left: part_sizes.first().copied().unwrap_or(0),
            current: Md5::new(),
            whole: Md5::new(),
            digests: Vec::new(),
            total: 0,
        }
    }

    /// Add the next bytes of the object.
    pub fn update(&mut self, mut data: &[u8]) -> Result<()> {
        self.total += data.len() as u64;
        if !self.multipart {
            self.whole.update(data);
            return Ok(());
        }
        while !data.is_empty() {
            if self.part >= self.sizes.len() {
                return Err(layout_error(format!(
                    "the object is longer than its {} parts ({} bytes)",
                    self.sizes.len(),
                    self.sizes.iter().sum::<u64>()
                )));
            }
            let take = (self.left.min(data.len() as u64)) as usize;
            self.current.update(&data[..take]);
            self.left -= take as u64;
            data = &data[take..];
            if self.left == 0 {
                self.close_part();
            }
        }
        Ok(())
    }

    fn close_part(&mut self) {
        let d: [u8; 16] = std::mem::replace(&mut self.current, Md5::new())
            .finalize()
            .into();
        self.digests.push(d);
        self.part += 1;
        self.left = self.sizes.get(self.part).copied().unwrap_or(0);
    }

    /// The ETag, once every byte was fed.
    pub fn finish(mut self) -> Result<String> {
        if !self.multipart {
            let d: [u8; 16] = self.whole.finalize().into();
            return Ok(md5_etag(&d));
        }
        // Zero-sized parts in the layout (never produced by S3) close immediately.
        while self.part < self.sizes.len() && self.left == 0 {
            self.close_part();
        }
        if self.part < self.sizes.len() {
            return Err(layout_error(format!(
                "the object ({} bytes) is shorter than its {} parts ({} bytes)",
                self.total,
                self.sizes.len(),
                self.sizes.iter().sum::<u64>()
            )));
        }
        Ok(multipart_etag(&self.digests))
    }
}

fn layout_error(message: String) -> Error {
    Error::new(ErrorKind::Invalid, "LayoutMismatch", "", message)
}

/// The ETag `key` would have on S3 if uploaded with `part_sizes`: a plain MD5
/// ETag for an empty or one-part layout, else the `-N` multipart ETag. Streams
/// the object through [`ObjectStore::get`], so memory stays constant.
pub async fn compute_etag(
    store: &dyn ObjectStore,
    key: &str,
    part_sizes: &[u64],
) -> Result<String> {
    hash_with(store, key, LayoutHasher::new(part_sizes, false)).await
}

/// Like [`compute_etag`] but always the multipart form, for a source whose
/// ETag is `-1` (a multipart upload of a single part).
pub async fn compute_multipart_etag(
    store: &dyn ObjectStore,
    key: &str,
    part_sizes: &[u64],
) -> Result<String> {
    hash_with(store, key, LayoutHasher::new(part_sizes, true)).await
}

async fn hash_with(store: &dyn ObjectStore, key: &str, mut hasher: LayoutHasher) -> Result<String> {
    let subject = format!("{}/{}", store.describe(), key);
    let mut body = store.get(key, None, None).await?;
    while let Some(chunk) = body.next().await {
        hasher
            .update(&chunk?)
            .map_err(|e| e.with_subject(subject.clone()))?;
    }
    hasher.finish().map_err(|e| e.with_subject(subject))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md5(data: &[u8]) -> [u8; 16] {
        Md5::digest(data).into()
    }

    #[test]
    fn plain_etag_is_the_md5() {
        let mut h = LayoutHasher::new(&[], false);
        h.update(b"hello ").unwrap();
        h.update(b"world").unwrap();
        assert_eq!(h.finish().unwrap(), "\"5eb63bbbe01eeed093cb22bb8f5acdc3\"");
        let h = LayoutHasher::new(&[0], false);
        assert_eq!(h.finish().unwrap(), "\"d41d8cd98f00b204e9800998ecf8427e\"");
    }

    #[test]
    fn multipart_etag_splits_on_the_layout_whatever_the_chunking() {
        let data: Vec<u8> = (0..100u8).collect();
        let want = multipart_etag(&[md5(&data[..40]), md5(&data[40..80]), md5(&data[80..])]);
        assert!(want.ends_with("-3\""));
        for chunk in [1, 7, 40, 100] {
            let mut h = LayoutHasher::new(&[40, 40, 20], false);
            for c in data.chunks(chunk) {
                h.update(c).unwrap();
            }
            assert_eq!(h.finish().unwrap(), want, "chunk {chunk}");
        }
    }

    #[test]
    fn single_part_multipart_form() {
        let mut h = LayoutHasher::new(&[3], true);
        h.update(b"abc").unwrap();
        assert_eq!(h.finish().unwrap(), multipart_etag(&[md5(b"abc")]));
    }

    #[test]
    fn layout_mismatch_is_an_error() {
        let mut h = LayoutHasher::new(&[2, 2], false);
        assert_eq!(h.update(b"abcde").unwrap_err().class, "LayoutMismatch");
        let mut h = LayoutHasher::new(&[2, 2], false);
        h.update(b"abc").unwrap();
        assert_eq!(h.finish().unwrap_err().class, "LayoutMismatch");
    }

    #[test]
    fn etag_eq_ignores_quotes_and_case() {
        assert!(etag_eq("\"ABC-2\"", "abc-2"));
        assert!(!etag_eq("\"abc\"", "abd"));
    }
}
