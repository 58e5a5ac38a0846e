//! The checksum a copy carries to its target, and the proof a finished
//! write rests on (docs/proof.md).
//!
//! The target gets the source's algorithm; its type follows the write: one
//! request → full-object; parts → the source's type when the algorithm allows
//! it (a full-object CRC stays full-object over any part layout, which is
//! what lets a copy with other part sizes still be proven equal). A source
//! without a checksum gets `--checksum-algorithm` (full-object when the
//! algorithm allows), so a later check needs no bytes read.

use crate::checksum::{self, Algorithm, Checksum, ChecksumType, Digest};
use crate::error::{Error, ErrorKind, Result};
use crate::report::Proof;
use crate::store::{CompletedPart, ObjectInfo, WriteChecksum, Written};

use super::{BAD_DIGEST, INTEGRITY_MISMATCH};

/// The checksum one write gives its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Carry {
    pub algorithm: Algorithm,
    pub kind: ChecksumType,
    /// The source's checksum the target must end with: same algorithm and
    /// type (and, composite, the same part count). `None` when the target's
    /// cannot be compared with the source's (or the source has none).
    pub expect: Option<Checksum>,
}

impl Carry {
    /// What a write of `src` in `parts` parts (`None`: one request) carries;
    /// `exact`: the parts reproduce the source's layout. `asked`: the
    /// algorithm for a source without a checksum (`None`: carry nothing).
    pub fn plan(
        src: &ObjectInfo,
        parts: Option<usize>,
        exact: bool,
        asked: Option<Algorithm>,
    ) -> Option<Carry> {
        let (algorithm, source_kind) = match &src.checksum {
            Some(c) => (c.algorithm, Some(c.kind)),
            None => (asked?, None),
        };
        let kind = match parts {
            None => ChecksumType::FullObject,
            Some(_) => match source_kind {
                Some(k) if algorithm.allows(k) => k,
                _ if algorithm.allows(ChecksumType::FullObject) => ChecksumType::FullObject,
                _ => ChecksumType::Composite,
            },
        };
        let expect = src.checksum.clone().filter(|c| {
            c.kind == kind
                && match kind {
                    ChecksumType::FullObject => true,
                    ChecksumType::Composite => {
                        exact && parts.is_some_and(|n| c.parts() == Some(n as u32))
                    }
                }
        });
        Some(Carry {
            algorithm,
            kind,
            expect,
        })
    }

    /// What CreateMultipartUpload (or a streamed PutObject) is asked for.
    pub fn compute(&self) -> WriteChecksum {
        WriteChecksum::Compute(self.algorithm, self.kind)
    }

    /// The bytes read must be the source's: a whole-object digest against
    /// the source's full-object value. A mismatch is damage on the way from
    /// the source (retried), never written.
    pub fn check_read(&self, got: &Digest, subject: &str) -> Result<()> {
        let Some(want) = self.expect.as_ref() else {
            return Ok(());
        };
        if want.kind == ChecksumType::FullObject && got.base64() != want.value {
            return Err(Error::new(
                ErrorKind::Retryable,
                BAD_DIGEST,
                subject,
                format!(
                    "the bytes read have {} {}, not the source's {}",
                    self.algorithm,
                    got.base64(),
                    want.value
                ),
            ));
        }
        Ok(())
    }

    /// The checksum the completed upload of `parts` will have, from the
    /// parts' own values (`ranges`: their byte ranges); `None` when a part
    /// came back without one (a store that keeps none).
    pub fn of_parts(&self, parts: &[CompletedPart], ranges: &[(u64, u64)]) -> Option<Checksum> {
        let digests: Option<Vec<Digest>> = parts
            .iter()
            .zip(ranges)
            .map(|(p, (a, b))| {
                let c = p
                    .checksum
                    .as_ref()
                    .filter(|c| c.algorithm == self.algorithm)?;
                Digest::parse(self.algorithm, &c.value, b - a + 1).ok()
            })
            .collect();
        checksum::of_parts(self.kind, &digests?)
    }

    /// Before completing: the parts must add up to the source's checksum.
    pub fn check_parts(&self, computed: &Checksum, subject: &str) -> Result<()> {
        match self
            .expect
            .as_ref()
            .map(|want| (want, want.proves_equal(computed)))
        {
            Some((want, Some(false))) => Err(Error::new(
                ErrorKind::Retryable,
                BAD_DIGEST,
                subject,
                format!(
                    "the parts add up to {}, not the source's {}",
                    computed.describe(),
                    want.value
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// What shows a written target equal to its source, strongest first: the
/// target's checksum equal to the source's; else `etag` when the caller saw
/// ETag evidence (equal ETags over an equal layout, or the MD5 of the bytes
/// read equal to the source's ETag and accepted by the target); else `none`.
/// A target whose checksum differs from the source's fails
/// (`IntegrityMismatch`, retried): the copy is not the source.
pub(super) fn proof(
    carry: Option<&Carry>,
    written: &Written,
    etag_evidence: bool,
    subject: &str,
) -> Result<Proof> {
    let want = carry.and_then(|c| c.expect.as_ref());
    if let (Some(want), Some(got)) = (want, written.checksum.as_ref()) {
        match want.proves_equal(got) {
            Some(true) => return Ok(Proof::Checksum(want.algorithm)),
            Some(false) => {
                return Err(Error::new(
                    ErrorKind::Retryable,
                    INTEGRITY_MISMATCH,
                    subject,
                    format!(
                        "the target's checksum {} is not the source's {}",
                        got.describe(),
                        want.describe()
                    ),
                ))
            }
            None => {}
        }
    }
    Ok(if etag_evidence {
        Proof::Etag
    } else {
        Proof::None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(c: Option<Checksum>) -> ObjectInfo {
        ObjectInfo {
            checksum: c,
            ..ObjectInfo::default()
        }
    }

    fn comp(a: Algorithm, v: &str) -> Checksum {
        Checksum {
            algorithm: a,
            kind: ChecksumType::Composite,
            value: v.into(),
        }
    }

    #[test]
    fn the_target_gets_the_sources_algorithm_and_a_type_the_write_allows() {
        let crc64 = Checksum::full(Algorithm::Crc64Nvme, "AAAAAAAAAAA=");
        // Full-object CRC: kept over any layout, expected equal.
        for parts in [None, Some(3), Some(7)] {
            let c = Carry::plan(&src(Some(crc64.clone())), parts, false, None).unwrap();
            assert_eq!(c.kind, ChecksumType::FullObject);
            assert_eq!(c.expect, Some(crc64.clone()), "{parts:?}");
        }
        // Composite CRC32 over 3 parts: equal only over the same 3 parts.
        let c32 = comp(Algorithm::Crc32, "vtTj6A==-3");
        let exact = Carry::plan(&src(Some(c32.clone())), Some(3), true, None).unwrap();
        assert_eq!(
            (exact.kind, exact.expect),
            (ChecksumType::Composite, Some(c32.clone()))
        );
        let other = Carry::plan(&src(Some(c32.clone())), Some(4), false, None).unwrap();
        assert_eq!((other.kind, other.expect), (ChecksumType::Composite, None));
        let single = Carry::plan(&src(Some(c32)), None, false, None).unwrap();
        assert_eq!(
            (single.kind, single.expect),
            (ChecksumType::FullObject, None)
        );
        // A single-part SHA256 written in parts: SHA is composite only.
        let sha = Checksum::full(Algorithm::Sha256, "x");
        let parts = Carry::plan(&src(Some(sha.clone())), Some(2), false, None).unwrap();
        assert_eq!((parts.kind, parts.expect), (ChecksumType::Composite, None));
        let one = Carry::plan(&src(Some(sha.clone())), None, true, None).unwrap();
        assert_eq!(one.expect, Some(sha));
        // No source checksum: the asked algorithm, full-object when allowed; or nothing.
        let asked = Carry::plan(&src(None), Some(2), false, Some(Algorithm::Crc32c)).unwrap();
        assert_eq!(
            (asked.algorithm, asked.kind, asked.expect),
            (Algorithm::Crc32c, ChecksumType::FullObject, None)
        );
        let sha_parts = Carry::plan(&src(None), Some(2), false, Some(Algorithm::Sha256)).unwrap();
        assert_eq!(sha_parts.kind, ChecksumType::Composite);
        assert_eq!(Carry::plan(&src(None), None, true, None), None);
    }

    #[test]
    fn parts_add_up_and_a_wrong_sum_is_refused() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let whole = checksum::digest(Algorithm::Crc64Nvme, &data).full();
        let carry = Carry::plan(&src(Some(whole.clone())), Some(2), false, None).unwrap();
        let ranges = [(0u64, 599u64), (600, 999)];
        let parts: Vec<CompletedPart> = ranges
            .iter()
            .enumerate()
            .map(|(i, (a, b))| CompletedPart {
                number: i as i32 + 1,
                etag: String::new(),
                checksum: Some(
                    checksum::digest(Algorithm::Crc64Nvme, &data[*a as usize..=*b as usize]).full(),
                ),
            })
            .collect();
        let sum = carry.of_parts(&parts, &ranges).unwrap();
        assert_eq!(sum, whole);
        carry.check_parts(&sum, "s3://t/k").unwrap();
        let wrong = Checksum::full(Algorithm::Crc64Nvme, "AAAAAAAAAAA=");
        let err = carry.check_parts(&wrong, "s3://t/k").unwrap_err();
        assert_eq!(err.class, BAD_DIGEST);
        assert!(err.kind.is_retryable());
        let mut missing = parts.clone();
        missing[1].checksum = None;
        assert_eq!(carry.of_parts(&missing, &ranges), None);
    }

    #[test]
    fn the_proof_is_the_strongest_evidence_and_a_different_checksum_fails() {
        let want = Checksum::full(Algorithm::Crc64Nvme, "AAAAAAAAAAA=");
        let carry = Carry::plan(&src(Some(want.clone())), None, true, None).unwrap();
        let written = |c: Option<Checksum>| Written {
            etag: "\"e\"".into(),
            checksum: c,
        };
        let proof = |c, e| super::proof(Some(&carry), &written(c), e, "s3://t/k");
        assert_eq!(
            proof(Some(want.clone()), false).unwrap(),
            Proof::Checksum(Algorithm::Crc64Nvme)
        );
        assert_eq!(proof(None, true).unwrap(), Proof::Etag);
        assert_eq!(proof(None, false).unwrap(), Proof::None);
        let other = Checksum::full(Algorithm::Crc64Nvme, "AAAAAAAAAAE=");
        assert_eq!(
            proof(Some(other), true).unwrap_err().class,
            INTEGRITY_MISMATCH
        );
        let sha = Checksum::full(Algorithm::Sha256, "x");
        assert_eq!(
            proof(Some(sha), true).unwrap(),
            Proof::Etag,
            "not comparable"
        );
    }
}
