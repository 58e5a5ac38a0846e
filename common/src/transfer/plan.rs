//! Pure planning of one object's transfer: one buffered request, one streamed
//! request or parts, which byte ranges, how many parts in flight, and whether
//! a key is inside the `--modified-since` / `--not-modified-since` window. No
//! I/O; table-tested.

/// S3's largest single-request object (CopyObject and PutObject): 5 GiB.
pub const MAX_SINGLE: u64 = 5 * 1024 * 1024 * 1024;
/// S3's largest number of parts in one multipart upload.
pub const MAX_PARTS: u64 = 10_000;

/// How one object is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// One request (CopyObject, or GET into one buffer + PutObject): a plain
    /// source ETag is kept.
    Single,
    /// One PutObject of known length whose body streams from the source's GET
    /// (streaming, objects larger than one buffer and at most 5 GiB): a plain
    /// source ETag is kept; memory is the chunks in flight, not the object.
    Stream,
    /// A multipart upload with these inclusive byte ranges, part 1 first.
    Parts(Vec<(u64, u64)>),
}

/// A plan and what the user should know about it (e.g. why the target ETag
/// will differ from the source's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub plan: Plan,
    /// Whether the target ETag is expected to equal the source ETag.
    pub exact: bool,
    pub note: Option<String>,
}

/// The limits a plan obeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Objects above this size are written in parts.
    pub multipart_threshold: u64,
    /// Size of the parts made for a single-part source that must be split.
    pub part_size: u64,
    /// Streaming (downup): objects up to this size are read into one buffer
    /// and sent with one PutObject (which the SDK can retry); larger ones
    /// written in one request are streamed ([`Plan::Stream`]). `None`:
    /// server-side copy, nothing is buffered.
    pub buffer_limit: Option<u64>,
}

/// What is known about the source's part layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceLayout<'a> {
    /// A single-part object (plain ETag, or a directory file).
    Single,
    /// A multipart object (`…-N` ETag) whose part sizes were read.
    Parts(&'a [u64]),
    /// A multipart object of `N` parts whose sizes could not be learnt.
    UnknownParts(u32),
}

/// Decide how to write an object of `size` bytes. A multipart source with a
/// known, valid layout is reproduced part for part (so the target ETag equals
/// the source ETag); anything else is one request when it is below the
/// multipart threshold (AWS CLI's rule: at or above it means parts) and at most
/// 5 GiB (streamed when it is larger than one buffer,
/// so a single-part source keeps its plain ETag whatever the memory budget),
/// else parts of `part_size` (grown so that there are at most 10,000 parts).
pub fn plan(size: u64, layout: SourceLayout<'_>, limits: &Limits) -> Planned {
    if let SourceLayout::Parts(sizes) = layout {
        if valid_layout(size, sizes) {
            return Planned {
                plan: Plan::Parts(ranges(sizes)),
                exact: true,
                note: None,
            };
        }
    }
    let fits = size == 0 || (size < limits.multipart_threshold && size <= MAX_SINGLE);
    let planned = match (fits, limits.buffer_limit) {
        (true, Some(buffer)) if size > buffer => Plan::Stream,
        (true, _) => Plan::Single,
        (false, _) => Plan::Parts(split(size, limits.part_size)),
    };
    let count = |p: &Plan| match p {
        Plan::Single | Plan::Stream => "a single-part".to_string(),
        Plan::Parts(r) => format!("a {}-part", r.len()),
    };
    let (exact, note) = match layout {
        SourceLayout::Single => match &planned {
            Plan::Single | Plan::Stream => (true, None),
            Plan::Parts(r) => {
                let why = if size > MAX_SINGLE {
                    "above S3's 5 GiB limit for one request".to_string()
                } else {
                    format!(
                        "at or above the multipart threshold ({} bytes)",
                        limits.multipart_threshold
                    )
                };
                (
                    false,
                    Some(format!(
                        "single-part source of {size} bytes is {why}: written in {} parts, target ETag is -{} (not the source's MD5)",
                        r.len(),
                        r.len()
                    )),
                )
            }
        },
        SourceLayout::Parts(sizes) => (
            false,
            Some(format!(
                "layout not reproducible ({} part sizes do not add up to {size} bytes): written as {} object, ETag differs",
                sizes.len(),
                count(&planned)
            )),
        ),
        SourceLayout::UnknownParts(n) => (
            false,
            Some(format!(
                "layout not reproducible (sizes of the source's {n} parts unknown): written as {} object, ETag differs",
                count(&planned)
            )),
        ),
    };
    Planned {
        plan: planned,
        exact,
        note,
    }
}

/// Whether `sizes` can be reproduced for an object of `size` bytes: 1 to
/// 10,000 non-empty parts adding up to the size.
pub fn valid_layout(size: u64, sizes: &[u64]) -> bool {
    !sizes.is_empty()
        && sizes.len() as u64 <= MAX_PARTS
        && sizes.iter().all(|s| *s > 0)
        && sizes.iter().sum::<u64>() == size
}

/// Inclusive byte ranges of consecutive parts of the given sizes.
pub fn ranges(sizes: &[u64]) -> Vec<(u64, u64)> {
    let mut start = 0;
    sizes
        .iter()
        .map(|s| {
            let r = (start, start + s - 1);
            start += s;
            r
        })
        .collect()
}

/// Split `size` bytes (> 0) into parts of `part_size`, the part size grown so
/// that there are at most 10,000 parts; the last part takes the rest.
pub fn split(size: u64, part_size: u64) -> Vec<(u64, u64)> {
    let ps = part_size.max(1).max(size.div_ceil(MAX_PARTS));
    let mut out = Vec::with_capacity(size.div_ceil(ps) as usize);
    let mut start = 0;
    while start < size {
        let end = (start + ps).min(size);
        out.push((start, end - 1));
        start = end;
    }
    out
}

/// The part sizes of an `n`-part object from the sizes of its first and last
/// parts, assuming (as every S3 client does) that all parts but the last have
/// the same size. `None` when that does not add up to `size`: then every part
/// must be asked for.
pub fn infer_layout(size: u64, n: u32, first: u64, last: u64) -> Option<Vec<u64>> {
    let n = u64::from(n);
    if n == 0 || n > MAX_PARTS {
        return None;
    }
    if n == 1 {
        return (first == size && size > 0).then(|| vec![size]);
    }
    let ok = first > 0
        && last > 0
        && last <= first
        && first.checked_mul(n - 1).and_then(|b| b.checked_add(last)) == Some(size);
    ok.then(|| {
        let mut v = vec![first; (n - 1) as usize];
        v.push(last);
        v
    })
}

/// How many parts of at most `largest` bytes may be buffered at once within a
/// budget of `part_concurrency × part_size` bytes: at least 1 (a source part
/// larger than the budget is then the one buffered), at most `part_concurrency`.
pub fn parts_in_flight(part_concurrency: usize, part_size: u64, largest: u64) -> usize {
    let budget = (part_concurrency as u64).saturating_mul(part_size);
    let n = budget / largest.max(1);
    (n.min(part_concurrency as u64) as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn limits(threshold: u64, part: u64, buffer: Option<u64>) -> Limits {
        Limits {
            multipart_threshold: threshold,
            part_size: part,
            buffer_limit: buffer,
        }
    }

    #[test]
    fn plan_table() {
        let l = limits(8 * MIB, 5 * MIB, None);
        let layout = [5 * MIB, 5 * MIB, MIB];
        let cases: Vec<(&str, u64, SourceLayout, Limits, Plan, bool)> = vec![
            (
                "small single",
                10,
                SourceLayout::Single,
                l,
                Plan::Single,
                true,
            ),
            (
                "zero bytes",
                0,
                SourceLayout::Single,
                limits(0, 5, Some(0)),
                Plan::Single,
                true,
            ),
            (
                "one byte below the threshold: one request",
                8 * MIB - 1,
                SourceLayout::Single,
                l,
                Plan::Single,
                true,
            ),
            (
                "exactly the threshold: parts (size >= threshold, as the AWS CLI)",
                8 * MIB,
                SourceLayout::Single,
                l,
                Plan::Parts(vec![(0, 5 * MIB - 1), (5 * MIB, 8 * MIB - 1)]),
                false,
            ),
            (
                "above threshold",
                11 * MIB,
                SourceLayout::Single,
                l,
                Plan::Parts(vec![
                    (0, 5 * MIB - 1),
                    (5 * MIB, 10 * MIB - 1),
                    (10 * MIB, 11 * MIB - 1),
                ]),
                false,
            ),
            (
                "multipart source reproduced even below the threshold",
                11 * MIB,
                SourceLayout::Parts(&layout),
                limits(100 * MIB, 64 * MIB, None),
                Plan::Parts(ranges(&layout)),
                true,
            ),
            (
                "bad layout falls back",
                12 * MIB,
                SourceLayout::Parts(&layout),
                l,
                Plan::Parts(split(12 * MIB, 5 * MIB)),
                false,
            ),
            (
                "unknown layout below threshold",
                7 * MIB,
                SourceLayout::UnknownParts(2),
                l,
                Plan::Single,
                false,
            ),
            (
                "streaming: one buffer",
                5 * MIB,
                SourceLayout::Single,
                limits(8 * MIB, 5 * MIB, Some(5 * MIB)),
                Plan::Single,
                true,
            ),
            (
                "streaming: larger than one buffer is streamed, not split",
                6 * MIB,
                SourceLayout::Single,
                limits(8 * MIB, 5 * MIB, Some(5 * MIB)),
                Plan::Stream,
                true,
            ),
            (
                "streaming: up to 5 GiB below a high threshold",
                MAX_SINGLE,
                SourceLayout::Single,
                limits(u64::MAX, 64 * MIB, Some(64 * MIB)),
                Plan::Stream,
                true,
            ),
            (
                "streaming: above the threshold is split",
                12 * MIB,
                SourceLayout::Single,
                limits(8 * MIB, 5 * MIB, Some(5 * MIB)),
                Plan::Parts(split(12 * MIB, 5 * MIB)),
                false,
            ),
            (
                "streaming: unknown layout is streamed with a note",
                7 * MIB,
                SourceLayout::UnknownParts(2),
                limits(8 * MIB, 5 * MIB, Some(5 * MIB)),
                Plan::Stream,
                false,
            ),
        ];
        for (name, size, layout, l, want, exact) in cases {
            let got = plan(size, layout, &l);
            assert_eq!(got.plan, want, "{name}");
            assert_eq!(got.exact, exact, "{name}");
            assert_eq!(got.note.is_some(), !exact, "{name}: {:?}", got.note);
        }
    }

    #[test]
    fn above_five_gib_is_never_one_request() {
        let size = MAX_SINGLE + 1;
        for buffer in [None, Some(64 * MIB), Some(u64::MAX)] {
            let got = plan(
                size,
                SourceLayout::Single,
                &limits(u64::MAX, 64 * MIB, buffer),
            );
            assert!(
                matches!(got.plan, Plan::Parts(ref r) if r.len() == 81),
                "{buffer:?}: {got:?}"
            );
            assert!(!got.exact);
            let note = got.note.unwrap_or_default();
            assert!(
                note.contains("5 GiB") && note.contains("-81"),
                "{buffer:?}: {note}"
            );
        }
        // Exactly 5 GiB still fits one streamed request.
        let got = plan(
            MAX_SINGLE,
            SourceLayout::Single,
            &limits(u64::MAX, 64 * MIB, Some(64 * MIB)),
        );
        assert_eq!(got.plan, Plan::Stream);
        assert!(got.exact && got.note.is_none());
    }

    #[test]
    fn split_respects_the_part_limit_and_covers_every_byte() {
        let size = 100_000 * MIB + 7;
        let parts = split(size, 5 * MIB);
        assert!(parts.len() as u64 <= MAX_PARTS);
        assert_eq!(parts[0].0, 0);
        assert_eq!(parts.last().unwrap().1, size - 1);
        assert!(parts.windows(2).all(|w| w[0].1 + 1 == w[1].0));
        assert_eq!(split(10, 4), vec![(0, 3), (4, 7), (8, 9)]);
        assert_eq!(split(8, 4), vec![(0, 3), (4, 7)]);
    }

    #[test]
    fn infer_layout_table() {
        assert_eq!(infer_layout(11, 3, 5, 1), Some(vec![5, 5, 1]));
        assert_eq!(infer_layout(10, 2, 5, 5), Some(vec![5, 5]));
        assert_eq!(infer_layout(7, 1, 7, 7), Some(vec![7]));
        assert_eq!(infer_layout(12, 3, 5, 1), None, "does not add up");
        assert_eq!(infer_layout(11, 2, 5, 6), None, "last larger than first");
        assert_eq!(
            infer_layout(30, 3, 30, 30),
            None,
            "server ignored partNumber"
        );
        assert_eq!(infer_layout(0, 0, 0, 0), None);
    }

    #[test]
    fn parts_in_flight_stays_in_budget() {
        assert_eq!(parts_in_flight(4, 8 * MIB, 8 * MIB), 4);
        assert_eq!(parts_in_flight(4, 8 * MIB, 16 * MIB), 2);
        assert_eq!(parts_in_flight(4, 8 * MIB, 100 * MIB), 1);
        assert_eq!(parts_in_flight(4, 8 * MIB, 1), 4);
        assert_eq!(parts_in_flight(0, 8 * MIB, 1), 1);
    }
}
