//! S3's additional checksums: the algorithms, the two checksum types, and the
//! arithmetic that lets a copy carry them. Pure: no I/O.
//!
//! - A **full-object** checksum (CRC64NVME always; CRC32/CRC32C when the
//!   writer asked for `FULL_OBJECT`; any algorithm on a single-part object)
//!   depends on the bytes only, not on the part layout: a copy written with
//!   other part sizes can still be proven equal to its source. For CRCs it is
//!   computed part by part in parallel and [`combine`]d.
//! - A **composite** checksum (`value-N`: SHA1/SHA256 always, CRC32/CRC32C by
//!   default on multipart) is the checksum of the parts' checksums, like a
//!   multipart ETag: equal only when the layouts are equal.
//!
//! Values are base64 of the big-endian digest, as S3 sends them.

use base64::Engine as _;
use sha1::Digest as _;

use crate::error::{Error, ErrorKind, Result};

/// An S3 checksum algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Crc64Nvme,
    Crc32,
    Crc32c,
    Sha1,
    Sha256,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] = [
        Algorithm::Crc64Nvme,
        Algorithm::Crc32,
        Algorithm::Crc32c,
        Algorithm::Sha1,
        Algorithm::Sha256,
    ];

    /// S3's name (`CRC64NVME`, `CRC32C`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Crc64Nvme => "CRC64NVME",
            Algorithm::Crc32 => "CRC32",
            Algorithm::Crc32c => "CRC32C",
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
        }
    }

    /// From S3's name or the lower-case form users type (`crc64nvme`).
    pub fn parse(name: &str) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(name))
    }

    /// CRCs can be combined part by part into a full-object value; SHAs cannot.
    pub fn is_crc(self) -> bool {
        matches!(
            self,
            Algorithm::Crc64Nvme | Algorithm::Crc32 | Algorithm::Crc32c
        )
    }

    /// The types S3 accepts for a multipart upload of this algorithm.
    pub fn allows(self, kind: ChecksumType) -> bool {
        !matches!(
            (self, kind),
            (Algorithm::Crc64Nvme, ChecksumType::Composite)
                | (
                    Algorithm::Sha1 | Algorithm::Sha256,
                    ChecksumType::FullObject
                )
        )
    }

    fn crc(self) -> Option<crc_fast::CrcAlgorithm> {
        match self {
            Algorithm::Crc64Nvme => Some(crc_fast::CrcAlgorithm::Crc64Nvme),
            Algorithm::Crc32 => Some(crc_fast::CrcAlgorithm::Crc32IsoHdlc),
            Algorithm::Crc32c => Some(crc_fast::CrcAlgorithm::Crc32Iscsi),
            Algorithm::Sha1 | Algorithm::Sha256 => None,
        }
    }

    /// Bytes of one digest.
    fn width(self) -> usize {
        match self {
            Algorithm::Crc64Nvme => 8,
            Algorithm::Crc32 | Algorithm::Crc32c => 4,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a checksum covers the object's bytes or its parts' checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumType {
    FullObject,
    Composite,
}

impl ChecksumType {
    /// S3's name (`FULL_OBJECT`, `COMPOSITE`).
    pub fn as_str(self) -> &'static str {
        match self {
            ChecksumType::FullObject => "FULL_OBJECT",
            ChecksumType::Composite => "COMPOSITE",
        }
    }

    pub fn parse(name: &str) -> Option<ChecksumType> {
        match name {
            "FULL_OBJECT" => Some(ChecksumType::FullObject),
            "COMPOSITE" => Some(ChecksumType::Composite),
            _ => None,
        }
    }
}

/// An object's checksum as S3 reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checksum {
    pub algorithm: Algorithm,
    pub kind: ChecksumType,
    /// Base64 of the digest; a composite value ends with `-N` (its part count).
    pub value: String,
}

impl Checksum {
    pub fn full(algorithm: Algorithm, value: impl Into<String>) -> Checksum {
        Checksum {
            algorithm,
            kind: ChecksumType::FullObject,
            value: value.into(),
        }
    }

    /// The value without a composite `-N` suffix.
    pub fn digest_part(&self) -> &str {
        match self.value.rsplit_once('-') {
            Some((v, n)) if n.parse::<u32>().is_ok() => v,
            _ => &self.value,
        }
    }

    /// The part count of a composite value (`…-3` → 3).
    pub fn parts(&self) -> Option<u32> {
        let (_, n) = self.value.rsplit_once('-')?;
        n.parse().ok()
    }

    /// Whether two checksums prove the same bytes: same algorithm and value,
    /// and either both full-object, or both composite of the same part count
    /// (the layouts are then taken as equal, as copies reproduce them).
    /// `None` when they cannot be compared (other algorithm or type).
    pub fn proves_equal(&self, other: &Checksum) -> Option<bool> {
        if self.algorithm != other.algorithm || self.kind != other.kind {
            return None;
        }
        if self.kind == ChecksumType::Composite && self.parts() != other.parts() {
            return None;
        }
        Some(self.digest_part() == other.digest_part())
    }

    /// `CRC64NVME FULL_OBJECT Ab12…=`, for messages.
    pub fn describe(&self) -> String {
        format!("{} {} {}", self.algorithm, self.kind.as_str(), self.value)
    }
}

/// A computed digest of some bytes (a part, or the whole object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub algorithm: Algorithm,
    /// The digest, big-endian.
    pub bytes: Vec<u8>,
    /// How many bytes it covers (needed to combine CRCs).
    pub len: u64,
}

impl Digest {
    /// Base64, as S3 sends checksums.
    pub fn base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.bytes)
    }

    /// As a full-object [`Checksum`].
    pub fn full(&self) -> Checksum {
        Checksum::full(self.algorithm, self.base64())
    }

    /// A digest S3 reported (base64) for `len` bytes.
    pub fn parse(algorithm: Algorithm, value: &str, len: u64) -> Result<Digest> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()
            .filter(|b| b.len() == algorithm.width())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Permanent,
                    "InvalidChecksum",
                    algorithm.as_str(),
                    format!("`{value}` is not a base64 {algorithm} checksum"),
                )
            })?;
        Ok(Digest {
            algorithm,
            bytes,
            len,
        })
    }

    fn crc_value(&self) -> u64 {
        self.bytes
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | *b as u64)
    }

    fn from_crc(algorithm: Algorithm, crc: u64, len: u64) -> Digest {
        let bytes = crc.to_be_bytes()[8 - algorithm.width()..].to_vec();
        Digest {
            algorithm,
            bytes,
            len,
        }
    }
}

/// A checksum computed as bytes stream past.
pub struct Hasher {
    algorithm: Algorithm,
    len: u64,
    state: State,
}

enum State {
    Crc(crc_fast::Digest),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("algorithm", &self.algorithm)
            .field("len", &self.len)
            .finish()
    }
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        let state = match algorithm.crc() {
            Some(crc) => State::Crc(crc_fast::Digest::new(crc)),
            None if algorithm == Algorithm::Sha1 => State::Sha1(sha1::Sha1::new()),
            None => State::Sha256(sha2::Sha256::new()),
        };
        Hasher {
            algorithm,
            len: 0,
            state,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.len += data.len() as u64;
        match &mut self.state {
            State::Crc(d) => d.update(data),
            State::Sha1(d) => d.update(data),
            State::Sha256(d) => d.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        match self.state {
            State::Crc(d) => Digest::from_crc(self.algorithm, d.finalize(), self.len),
            State::Sha1(d) => Digest {
                algorithm: self.algorithm,
                bytes: d.finalize().to_vec(),
                len: self.len,
            },
            State::Sha256(d) => Digest {
                algorithm: self.algorithm,
                bytes: d.finalize().to_vec(),
                len: self.len,
            },
        }
    }
}

/// The digest of `data` in one call.
pub fn digest(algorithm: Algorithm, data: &[u8]) -> Digest {
    let mut h = Hasher::new(algorithm);
    h.update(data);
    h.finish()
}

/// The full-object CRC of consecutive parts, from their own CRCs and lengths
/// (no byte read twice). `None` for SHA algorithms (not combinable) or mixed
/// algorithms.
pub fn combine(parts: &[Digest]) -> Option<Digest> {
    let first = parts.first()?;
    let algorithm = first.algorithm;
    let crc = algorithm.crc()?;
    let mut acc = first.crc_value();
    let mut len = first.len;
    for p in &parts[1..] {
        if p.algorithm != algorithm {
            return None;
        }
        acc = crc_fast::checksum_combine(crc, acc, p.crc_value(), p.len);
        len += p.len;
    }
    Some(Digest::from_crc(algorithm, acc, len))
}

/// The composite checksum of parts (`base64(H(d1‖d2‖…))-N`), as S3 computes
/// it on CompleteMultipartUpload of a `COMPOSITE` upload.
pub fn composite(parts: &[Digest]) -> Option<Checksum> {
    let algorithm = parts.first()?.algorithm;
    let mut h = Hasher::new(algorithm);
    for p in parts {
        if p.algorithm != algorithm {
            return None;
        }
        h.update(&p.bytes);
    }
    Some(Checksum {
        algorithm,
        kind: ChecksumType::Composite,
        value: format!("{}-{}", h.finish().base64(), parts.len()),
    })
}

/// The checksum S3 ends with for an upload of these parts, by type.
pub fn of_parts(kind: ChecksumType, parts: &[Digest]) -> Option<Checksum> {
    match kind {
        ChecksumType::FullObject => combine(parts).map(|d| d.full()),
        ChecksumType::Composite => composite(parts),
    }
}

#[cfg(test)]
mod tests {
    //! Expected values were computed by a strict S3 server (LocalStack, which
    //! validates them as AWS does) for the same bytes.
    use super::*;

    const MIB: usize = 1024 * 1024;

    fn three_parts() -> Vec<Vec<u8>> {
        vec![vec![b'a'; 5 * MIB], vec![b'b'; 5 * MIB], vec![b'c'; 1024]]
    }

    #[test]
    fn single_values_match_s3() {
        assert_eq!(
            digest(Algorithm::Crc64Nvme, b"hello").base64(),
            "M3eFcAZSQlc="
        );
        assert_eq!(
            digest(Algorithm::Sha256, b"hello").base64(),
            "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ="
        );
        // The standard check values ("123456789") of the CRCs.
        let check = |a| digest(a, b"123456789").bytes;
        assert_eq!(check(Algorithm::Crc32), 0xcbf43926u32.to_be_bytes());
        assert_eq!(check(Algorithm::Crc32c), 0xe3069283u32.to_be_bytes());
        assert_eq!(
            check(Algorithm::Crc64Nvme),
            0xae8b14860a799888u64.to_be_bytes()
        );
        assert_eq!(
            hex::encode(digest(Algorithm::Sha1, b"abc").bytes),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[test]
    fn parts_make_the_values_s3_makes() {
        let parts = three_parts();
        let crc32: Vec<Digest> = parts.iter().map(|p| digest(Algorithm::Crc32, p)).collect();
        let b64: Vec<String> = crc32.iter().map(Digest::base64).collect();
        assert_eq!(b64, ["r/zBbw==", "yG5QvA==", "VjqB3w=="]);
        assert_eq!(composite(&crc32).unwrap().value, "vtTj6A==-3");
        // CopyObject of that object: one full-object CRC32 of all the bytes.
        assert_eq!(combine(&crc32).unwrap().base64(), "gqrbFQ==");
        let all: Vec<u8> = parts.concat();
        assert_eq!(digest(Algorithm::Crc32, &all).base64(), "gqrbFQ==");
        // An upload with no checksum asked for: S3's full-object CRC64NVME.
        let crc64: Vec<Digest> = parts
            .iter()
            .map(|p| digest(Algorithm::Crc64Nvme, p))
            .collect();
        assert_eq!(combine(&crc64).unwrap().base64(), "sxJ8dL44dl0=");
        assert_eq!(
            of_parts(ChecksumType::FullObject, &crc64).unwrap(),
            digest(Algorithm::Crc64Nvme, &all).full()
        );
    }

    #[test]
    fn combining_any_split_gives_the_whole_objects_crc() {
        let data: Vec<u8> = (0..100_003u32).map(|i| (i * 7 % 251) as u8).collect();
        for alg in [Algorithm::Crc64Nvme, Algorithm::Crc32, Algorithm::Crc32c] {
            let whole = digest(alg, &data);
            for sizes in [
                vec![100_003],
                vec![1, 100_002],
                vec![40_000, 40_000, 20_003],
            ] {
                let mut at = 0;
                let parts: Vec<Digest> = sizes
                    .iter()
                    .map(|n| {
                        let d = digest(alg, &data[at..at + n]);
                        at += n;
                        d
                    })
                    .collect();
                assert_eq!(combine(&parts).unwrap(), whole, "{alg} {sizes:?}");
            }
        }
        assert_eq!(combine(&[digest(Algorithm::Sha256, b"x")]), None);
    }

    #[test]
    fn proofs_need_the_same_algorithm_type_and_layout() {
        let full = |a, v: &str| Checksum::full(a, v);
        let comp = |v: &str| Checksum {
            algorithm: Algorithm::Crc32,
            kind: ChecksumType::Composite,
            value: v.into(),
        };
        let a = full(Algorithm::Crc64Nvme, "AAAAAAAAAAA=");
        assert_eq!(a.proves_equal(&a.clone()), Some(true));
        assert_eq!(
            a.proves_equal(&full(Algorithm::Crc64Nvme, "AAAAAAAAAAE=")),
            Some(false)
        );
        assert_eq!(a.proves_equal(&full(Algorithm::Crc32, "AAAAAA==")), None);
        assert_eq!(comp("x-3").proves_equal(&comp("x-3")), Some(true));
        assert_eq!(comp("x-3").proves_equal(&comp("y-3")), Some(false));
        assert_eq!(comp("x-3").proves_equal(&comp("x-2")), None, "other layout");
        assert_eq!(
            comp("x-3").proves_equal(&full(Algorithm::Crc32, "x")),
            None,
            "other type"
        );
        assert_eq!(comp("vtTj6A==-3").parts(), Some(3));
        assert_eq!(comp("vtTj6A==-3").digest_part(), "vtTj6A==");
    }

    #[test]
    fn names_and_parsing() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::parse(a.as_str()), Some(a));
            assert_eq!(Algorithm::parse(&a.as_str().to_lowercase()), Some(a));
            let d = digest(a, b"x");
            assert_eq!(Digest::parse(a, &d.base64(), 1).unwrap(), d);
        }
        assert!(Digest::parse(Algorithm::Crc32, "AAAAAAAAAAA=", 1).is_err());
        assert!(!Algorithm::Crc64Nvme.allows(ChecksumType::Composite));
        assert!(!Algorithm::Sha256.allows(ChecksumType::FullObject));
        assert!(Algorithm::Crc32c.allows(ChecksumType::FullObject));
    }
}
