//! Compare a source object with its copy into a [`Verdict`] — pure functions,
//! no I/O. The async parts of verification (HEADs, computed ETags for
//! directory ends, `--deep` content comparison) live in [`crate::transfer`].
//!
//! What is compared: size, content (by the strongest evidence both ends
//! have: equal S3 checksums of one algorithm and type — full-object, or
//! composite over the same part count — then ETags when both are MD5s over
//! the same layout; see docs/proof.md), content headers (type, encoding,
//! disposition, language, cache-control, expires, website redirect), user
//! metadata and, when both sides have them, tags.

use crate::report::Proof;
use crate::store::{ObjectAttrs, ObjectInfo};

/// Result of comparing a source with its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Same size, same content (by ETag or checksum), same headers, metadata and tags.
    Identical,
    /// Content, headers and metadata are identical; only the tags differ
    /// (fixable with PutObjectTagging alone).
    TagsDiffer,
    /// The target does not exist.
    Missing,
    /// The target differs; each reason names the field and both values,
    /// e.g. `size 10 != 12`.
    Differs(Vec<String>),
    /// Size, headers and metadata match but the content could not be compared
    /// from metadata (ETags not comparable and no common checksum): the reason
    /// says why. Needs `--deep` (a content comparison) to decide.
    Unknown(String),
}

/// The ETag without its quotes (listings, inventories and HEAD disagree on quoting).
pub fn etag_bare(etag: &str) -> &str {
    etag.trim().trim_matches('"')
}

/// The number of parts encoded in a multipart ETag (`"…-N"`), `None` for a plain one.
pub fn etag_parts(etag: &str) -> Option<u32> {
    let bare = etag_bare(etag);
    let (_, n) = bare.rsplit_once('-')?;
    n.parse().ok().filter(|n| *n > 0)
}

/// Whether an ETag is not an MD5 of the content because of the encryption
/// (SSE-KMS / DSSE-KMS; SSE-C is reported as `sse` too by stores that see it).
fn etag_is_opaque(info: &ObjectInfo) -> bool {
    info.sse
        .as_deref()
        .map(|s| s.starts_with("aws:kms") || s.eq_ignore_ascii_case("sse-c"))
        .unwrap_or(false)
}

/// Why two ETags cannot be compared, or `None` when they can: both present,
/// neither opaque (SSE-KMS), and both plain MD5s or both multipart with the
/// same number of parts (layouts assumed equal, which copies reproduce).
pub fn etags_incomparable(src: &ObjectInfo, dst: &ObjectInfo) -> Option<String> {
    let (Some(a), Some(b)) = (src.etag.as_deref(), dst.etag.as_deref()) else {
        return Some("an ETag is unknown".to_string());
    };
    if etag_is_opaque(src) || etag_is_opaque(dst) {
        return Some("ETags of SSE-KMS objects are not MD5s".to_string());
    }
    match (etag_parts(a), etag_parts(b)) {
        (None, None) => None,
        (Some(x), Some(y)) if x == y => None,
        (x, y) => Some(format!(
            "different part layouts ({} vs {})",
            layout_name(x),
            layout_name(y)
        )),
    }
}

fn layout_name(parts: Option<u32>) -> String {
    match parts {
        None => "single-part".to_string(),
        Some(n) => format!("{n} parts"),
    }
}

/// What the metadata of both ends says of their content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Shown equal, by this proof.
    Equal(Proof),
    /// Shown different (the reason names both values).
    Differs(String),
    /// Not comparable from metadata (the reason says why).
    Unknown(String),
}

/// Compare the content by the strongest evidence both ends have: a
/// comparable checksum first (it holds across part layouts and under
/// SSE-KMS), then the ETags.
pub fn compare_content(src: &ObjectInfo, dst: &ObjectInfo) -> Content {
    if let (Some(a), Some(b)) = (&src.checksum, &dst.checksum) {
        match a.proves_equal(b) {
            Some(true) => return Content::Equal(Proof::Checksum(a.algorithm)),
            Some(false) => {
                return Content::Differs(format!(
                    "checksum {} {} != {}",
                    a.algorithm, a.value, b.value
                ))
            }
            None => {}
        }
    }
    match etags_incomparable(src, dst) {
        None => {
            let (a, b) = (
                src.etag.as_deref().unwrap_or(""),
                dst.etag.as_deref().unwrap_or(""),
            );
            if etag_bare(a).eq_ignore_ascii_case(etag_bare(b)) {
                Content::Equal(Proof::Etag)
            } else {
                Content::Differs(format!("etag {} != {}", etag_bare(a), etag_bare(b)))
            }
        }
        Some(why) => Content::Unknown(format!("{why}, and no common checksum")),
    }
}

/// Reasons the content headers and user metadata differ (empty when equal).
pub fn attrs_differences(src: &ObjectAttrs, dst: &ObjectAttrs) -> Vec<String> {
    let mut out = Vec::new();
    let fields: [(&str, &Option<String>, &Option<String>); 7] = [
        ("content-type", &src.content_type, &dst.content_type),
        (
            "content-encoding",
            &src.content_encoding,
            &dst.content_encoding,
        ),
        (
            "content-disposition",
            &src.content_disposition,
            &dst.content_disposition,
        ),
        (
            "content-language",
            &src.content_language,
            &dst.content_language,
        ),
        ("cache-control", &src.cache_control, &dst.cache_control),
        ("expires", &src.expires, &dst.expires),
        (
            "website-redirect-location",
            &src.website_redirect,
            &dst.website_redirect,
        ),
    ];
    for (name, a, b) in fields {
        if a != b {
            out.push(format!(
                "{name} {} != {}",
                show(a.as_deref()),
                show(b.as_deref())
            ));
        }
    }
    if src.metadata != dst.metadata {
        for (k, v) in &src.metadata {
            match dst.metadata.get(k) {
                None => out.push(format!("metadata {k} missing on target")),
                Some(w) if w != v => out.push(format!("metadata {k} {v:?} != {w:?}")),
                Some(_) => {}
            }
        }
        for k in dst
            .metadata
            .keys()
            .filter(|k| !src.metadata.contains_key(*k))
        {
            out.push(format!("metadata {k} only on target"));
        }
    }
    out
}

fn show(v: Option<&str>) -> String {
    match v {
        Some(s) => format!("{s:?}"),
        None => "(none)".to_string(),
    }
}

/// Tag sets are equal regardless of order.
pub fn tags_equal(a: &[(String, String)], b: &[(String, String)]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a == b
}

/// Compare a source with its target; with `Identical` or `TagsDiffer`
/// comes the proof that showed the content equal. Tags are compared only
/// when both are given (`None`: the store has no tags, e.g. a directory).
/// Precedence: `Missing`, then `Differs` (every difference found, tags
/// excluded), then `Unknown` (content not comparable from metadata), then
/// `TagsDiffer`.
pub fn compare(
    src: &ObjectInfo,
    src_tags: Option<&[(String, String)]>,
    dst: Option<&ObjectInfo>,
    dst_tags: Option<&[(String, String)]>,
) -> (Verdict, Option<Proof>) {
    let Some(dst) = dst else {
        return (Verdict::Missing, None);
    };
    let mut reasons = Vec::new();
    if src.size != dst.size {
        reasons.push(format!("size {} != {}", src.size, dst.size));
    }
    let mut unknown = None;
    let mut proof = None;
    match compare_content(src, dst) {
        Content::Equal(p) => proof = Some(p),
        Content::Differs(reason) => reasons.push(reason),
        Content::Unknown(why) => unknown = Some(why),
    }
    reasons.extend(attrs_differences(&src.attrs, &dst.attrs));
    if !reasons.is_empty() {
        return (Verdict::Differs(reasons), None);
    }
    if let Some(why) = unknown {
        return (Verdict::Unknown(why), None);
    }
    match (src_tags, dst_tags) {
        (Some(a), Some(b)) if !tags_equal(a, b) => (Verdict::TagsDiffer, proof),
        _ => (Verdict::Identical, proof),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::{Algorithm, Checksum, ChecksumType};

    fn info(size: u64, etag: &str) -> ObjectInfo {
        ObjectInfo {
            key: "k".into(),
            size,
            etag: Some(format!("\"{etag}\"")),
            ..ObjectInfo::default()
        }
    }

    fn tags(t: &[(&str, &str)]) -> Vec<(String, String)> {
        t.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn etag_helpers() {
        assert_eq!(etag_bare("\"abc-3\""), "abc-3");
        assert_eq!(etag_parts("\"abc-3\""), Some(3));
        assert_eq!(etag_parts("abc"), None);
        assert_eq!(etag_parts("\"abc-x\""), None);
    }

    #[test]
    fn compare_table() {
        let md5 = "0123456789abcdef0123456789abcdef";
        let other = "ffffffffffffffffffffffffffffffff";
        let with_type = |mut i: ObjectInfo, t: &str| {
            i.attrs.content_type = Some(t.into());
            i
        };
        let with_meta = |mut i: ObjectInfo, k: &str, v: &str| {
            i.attrs.metadata.insert(k.into(), v.into());
            i
        };
        let kms = |mut i: ObjectInfo| {
            i.sse = Some("aws:kms".into());
            i
        };
        let crc = |mut i: ObjectInfo, v: &str| {
            i.checksum = Some(Checksum {
                algorithm: Algorithm::Crc32,
                kind: if v.contains('-') {
                    ChecksumType::Composite
                } else {
                    ChecksumType::FullObject
                },
                value: v.to_string(),
            });
            i
        };
        let t1 = tags(&[("a", "1"), ("b", "2")]);
        let t1_reordered = tags(&[("b", "2"), ("a", "1")]);
        let t2 = tags(&[("a", "1")]);
        type Case<'a> = (
            &'a str,
            ObjectInfo,
            Option<Vec<(String, String)>>,
            Option<ObjectInfo>,
            Option<Vec<(String, String)>>,
            Verdict,
        );
        let cases: Vec<Case> = vec![
            ("missing", info(1, md5), None, None, None, Verdict::Missing),
            (
                "identical plain",
                info(1, md5),
                None,
                Some(info(1, md5)),
                None,
                Verdict::Identical,
            ),
            (
                "unquoted listing etag equals quoted",
                info(1, md5),
                None,
                Some(ObjectInfo {
                    etag: Some(md5.into()),
                    ..info(1, md5)
                }),
                None,
                Verdict::Identical,
            ),
            (
                "identical multipart",
                info(9, "abc-3"),
                Some(t1.clone()),
                Some(info(9, "abc-3")),
                Some(t1_reordered.clone()),
                Verdict::Identical,
            ),
            (
                "size and etag differ",
                info(10, md5),
                None,
                Some(info(12, other)),
                None,
                Verdict::Differs(vec![
                    "size 10 != 12".into(),
                    format!("etag {md5} != {other}"),
                ]),
            ),
            (
                "same layout, other content",
                info(9, "abc-3"),
                None,
                Some(info(9, "abd-3")),
                None,
                Verdict::Differs(vec!["etag abc-3 != abd-3".into()]),
            ),
            (
                "content type differs",
                with_type(info(1, md5), "text/plain"),
                None,
                Some(with_type(info(1, md5), "text/html")),
                None,
                Verdict::Differs(vec!["content-type \"text/plain\" != \"text/html\"".into()]),
            ),
            (
                "metadata differs",
                with_meta(info(1, md5), "x", "1"),
                None,
                Some(with_meta(info(1, md5), "y", "1")),
                None,
                Verdict::Differs(vec![
                    "metadata x missing on target".into(),
                    "metadata y only on target".into(),
                ]),
            ),
            (
                "tags only",
                info(1, md5),
                Some(t1.clone()),
                Some(info(1, md5)),
                Some(t2.clone()),
                Verdict::TagsDiffer,
            ),
            (
                "tags ignored when a side has none",
                info(1, md5),
                Some(t1.clone()),
                Some(info(1, md5)),
                None,
                Verdict::Identical,
            ),
            (
                "differs wins over tags",
                info(1, md5),
                Some(t1.clone()),
                Some(info(2, md5)),
                Some(t2.clone()),
                Verdict::Differs(vec!["size 1 != 2".into()]),
            ),
            (
                "layouts differ, no checksum",
                info(9, "abc-3"),
                None,
                Some(info(9, md5)),
                None,
                Verdict::Unknown(
                    "different part layouts (3 parts vs single-part), and no common checksum"
                        .into(),
                ),
            ),
            (
                "kms, checksums equal",
                crc(kms(info(9, md5)), "AAAA"),
                None,
                Some(crc(info(9, other), "AAAA")),
                None,
                Verdict::Identical,
            ),
            (
                "kms, checksums differ",
                crc(kms(info(9, md5)), "AAAA"),
                None,
                Some(crc(info(9, md5), "BBBB")),
                None,
                Verdict::Differs(vec!["checksum CRC32 AAAA != BBBB".into()]),
            ),
            (
                "composite vs full-object checksum is not comparable",
                crc(info(9, "abc-3"), "AAAA-3"),
                None,
                Some(crc(info(9, md5), "AAAA")),
                None,
                Verdict::Unknown(
                    "different part layouts (3 parts vs single-part), and no common checksum"
                        .into(),
                ),
            ),
            (
                "directory end without etag",
                info(1, md5),
                None,
                Some(ObjectInfo {
                    etag: None,
                    ..info(1, md5)
                }),
                None,
                Verdict::Unknown("an ETag is unknown, and no common checksum".into()),
            ),
            (
                "unknown content but size differs",
                kms(info(1, md5)),
                None,
                Some(info(3, md5)),
                None,
                Verdict::Differs(vec!["size 1 != 3".into()]),
            ),
        ];
        for (name, src, st, dst, dt, want) in cases {
            let (got, proof) = compare(&src, st.as_deref(), dst.as_ref(), dt.as_deref());
            assert_eq!(got, want, "case {name}");
            let equal = matches!(got, Verdict::Identical | Verdict::TagsDiffer);
            assert_eq!(proof.is_some(), equal, "case {name}: {proof:?}");
        }
        // The proof names the evidence: a checksum wins over ETags.
        let md5 = "0123456789abcdef0123456789abcdef";
        let with_crc = |mut i: ObjectInfo| {
            i.checksum = Some(Checksum::full(Algorithm::Crc32, "AAAA"));
            i
        };
        for (src, dst, want) in [
            (info(1, md5), info(1, md5), Proof::Etag),
            (
                with_crc(info(1, md5)),
                with_crc(info(1, md5)),
                Proof::Checksum(Algorithm::Crc32),
            ),
            (
                with_crc(info(9, "abc-3")),
                with_crc(info(9, md5)),
                Proof::Checksum(Algorithm::Crc32),
            ),
        ] {
            assert_eq!(
                compare(&src, None, Some(&dst), None),
                (Verdict::Identical, Some(want))
            );
        }
    }
}
