//! Which listed keys are sent: prefix, resume point, include/exclude globs,
//! size and date windows, owner. Pure rules plus per-filter skip counters, so
//! the commander's summary can say how many keys each filter dropped.
//!
//! Decisions (documented in docs/commander.md):
//! - globs match the **full key**; `*` and `?` also match `/` (globset with
//!   `literal_separator(false)`), `**` works too; a key is kept when it matches
//!   any `--include` (or none is given) and no `--exclude`;
//! - `--min-size`/`--max-size` are inclusive; sizes accept `K`, `M`, `G`, `T`
//!   suffixes (1024-based, `KiB`/`KB` spellings too);
//! - the date window is [`DateWindow`] (shared with the executor):
//!   `--modified-since T` keeps `last_modified >= T`, `--not-modified-since T`
//!   keeps `last_modified < T`; `T` is parsed by [`parse_time`];
//! - `--owner X` keeps objects whose owner id or display name is `X`;
//!   `--no-owner X` keeps the others (objects without owner information too).

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Serialize;

use crate::error::{Error, Result};
pub use crate::window::parse_time;
use crate::window::{DateWindow, Outside};

/// The owner rule of the seed's `--owner` / `--no-owner`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerRule {
    /// Keep objects whose owner id or display name equals this.
    Is(String),
    /// Keep objects whose owner id and display name differ from this.
    IsNot(String),
}

/// The user's filter flags, as given (validated by [`KeyFilter::new`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterSpec {
    /// Keep only keys starting with this (listing asks S3 for it; manifests are filtered).
    pub prefix: String,
    /// Keep only keys strictly greater than this (`--start-after`, the resume point).
    pub start_after: Option<String>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub min_size: Option<u64>,
    pub max_size: Option<u64>,
    /// `--modified-since` / `--not-modified-since`.
    pub window: DateWindow,
    pub owner: Option<OwnerRule>,
}

/// What a source knows about one key; `None` fields are unknown to it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Candidate<'a> {
    pub key: &'a str,
    pub size: Option<u64>,
    pub last_modified: Option<DateTime<Utc>>,
    pub owner_id: Option<&'a str>,
    pub owner_name: Option<&'a str>,
}

/// Why a key was not sent; each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    Prefix,
    StartAfter,
    Include,
    Exclude,
    MinSize,
    MaxSize,
    ModifiedSince,
    NotModifiedSince,
    Owner,
    /// Inventory row that is a delete marker.
    DeleteMarker,
    /// Inventory row of a non-current version.
    NotLatest,
    /// The rewritten target key would exceed S3's 1,024-byte limit.
    TargetKeyTooLong,
}

/// Keys skipped per reason. Shared by every lister thread (atomics), read at the end.
#[derive(Debug, Default)]
pub struct SkipCounts {
    counts: [AtomicU64; 12],
}

impl SkipCounts {
    /// Count one skipped key.
    pub fn add(&self, why: Skip) {
        self.counts[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// How many keys were skipped for this reason so far.
    pub fn get(&self, why: Skip) -> u64 {
        self.counts[why as usize].load(Ordering::Relaxed)
    }

    /// A copy of the counters, for the summary (only non-zero ones are printed).
    pub fn snapshot(&self) -> SkipSummary {
        SkipSummary {
            prefix: self.get(Skip::Prefix),
            start_after: self.get(Skip::StartAfter),
            include: self.get(Skip::Include),
            exclude: self.get(Skip::Exclude),
            min_size: self.get(Skip::MinSize),
            max_size: self.get(Skip::MaxSize),
            modified_since: self.get(Skip::ModifiedSince),
            not_modified_since: self.get(Skip::NotModifiedSince),
            owner: self.get(Skip::Owner),
            delete_marker: self.get(Skip::DeleteMarker),
            not_latest: self.get(Skip::NotLatest),
            target_key_too_long: self.get(Skip::TargetKeyTooLong),
        }
    }
}

/// Skipped keys per filter, as the summary (and `--json`) shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SkipSummary {
    pub prefix: u64,
    pub start_after: u64,
    pub include: u64,
    pub exclude: u64,
    pub min_size: u64,
    pub max_size: u64,
    pub modified_since: u64,
    pub not_modified_since: u64,
    pub owner: u64,
    pub delete_marker: u64,
    pub not_latest: u64,
    pub target_key_too_long: u64,
}

impl SkipSummary {
    /// `(flag or reason, count)` for every non-zero counter, in a fixed order.
    pub fn nonzero(&self) -> Vec<(&'static str, u64)> {
        [
            ("--prefix", self.prefix),
            ("--start-after", self.start_after),
            ("--include", self.include),
            ("--exclude", self.exclude),
            ("--min-size", self.min_size),
            ("--max-size", self.max_size),
            ("--modified-since", self.modified_since),
            ("--not-modified-since", self.not_modified_since),
            ("--owner/--no-owner", self.owner),
            ("delete marker", self.delete_marker),
            ("not latest version", self.not_latest),
            ("target key over 1,024 bytes", self.target_key_too_long),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    }

    /// Total of all counters.
    pub fn total(&self) -> u64 {
        self.nonzero().iter().map(|(_, n)| n).sum()
    }
}

/// Compiled filter rules. Cheap to check; shared read-only by all listers.
#[derive(Debug, Clone)]
pub struct KeyFilter {
    spec: FilterSpec,
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl KeyFilter {
    /// Compile the rules; a bad glob or an empty size window is an error naming the flag.
    pub fn new(spec: FilterSpec) -> Result<Self> {
        let include = compile(&spec.include, "--include")?;
        let exclude = compile(&spec.exclude, "--exclude")?;
        if let (Some(lo), Some(hi)) = (spec.min_size, spec.max_size) {
            if lo > hi {
                return Err(Error::input(
                    "--min-size",
                    format!(
                        "--min-size {lo} is larger than --max-size {hi}: nothing would be sent"
                    ),
                ));
            }
        }
        DateWindow::new(spec.window.since, spec.window.until)?;
        Ok(KeyFilter {
            spec,
            include,
            exclude,
        })
    }

    /// The rules as given.
    pub fn spec(&self) -> &FilterSpec {
        &self.spec
    }

    /// Whether an owner rule is set (then listings must fetch owners).
    pub fn needs_owner(&self) -> bool {
        self.spec.owner.is_some()
    }

    /// Refuse filters a source cannot apply (it does not know sizes, dates or
    /// owners), so a filter is never silently ignored. `source` names the source.
    pub fn require(&self, source: &str, sizes: bool, dates: bool, owners: bool) -> Result<()> {
        let s = &self.spec;
        let missing = [
            ("--min-size", s.min_size.is_some() && !sizes, "object sizes"),
            ("--max-size", s.max_size.is_some() && !sizes, "object sizes"),
            (
                "--modified-since",
                s.window.since.is_some() && !dates,
                "last-modified dates",
            ),
            (
                "--not-modified-since",
                s.window.until.is_some() && !dates,
                "last-modified dates",
            ),
            (
                if matches!(s.owner, Some(OwnerRule::IsNot(_))) {
                    "--no-owner"
                } else {
                    "--owner"
                },
                s.owner.is_some() && !owners,
                "object owners",
            ),
        ];
        for (flag, bad, what) in missing {
            if bad {
                return Err(Error::input(
                    flag,
                    format!("{flag} needs {what}, which {source} does not provide"),
                ));
            }
        }
        Ok(())
    }

    /// `None` when the key passes every rule, else the first rule it fails.
    /// Unknown facts (a `None` size or date) pass: see [`KeyFilter::require`].
    pub fn check(&self, c: &Candidate<'_>) -> Option<Skip> {
        let s = &self.spec;
        if !c.key.starts_with(s.prefix.as_str()) {
            return Some(Skip::Prefix);
        }
        if let Some(after) = &s.start_after {
            if c.key <= after.as_str() {
                return Some(Skip::StartAfter);
            }
        }
        if let Some(set) = &self.include {
            if !set.is_match(c.key) {
                return Some(Skip::Include);
            }
        }
        if let Some(set) = &self.exclude {
            if set.is_match(c.key) {
                return Some(Skip::Exclude);
            }
        }
        if let Some(size) = c.size {
            if s.min_size.is_some_and(|m| size < m) {
                return Some(Skip::MinSize);
            }
            if s.max_size.is_some_and(|m| size > m) {
                return Some(Skip::MaxSize);
            }
        }
        if let Some(lm) = c.last_modified {
            match s.window.check(lm) {
                Some(Outside::Before) => return Some(Skip::ModifiedSince),
                Some(Outside::After) => return Some(Skip::NotModifiedSince),
                None => {}
            }
        }
        if let Some(rule) = &s.owner {
            let matches = |x: &str| c.owner_id == Some(x) || c.owner_name == Some(x);
            let keep = match rule {
                OwnerRule::Is(x) => matches(x),
                OwnerRule::IsNot(x) => !matches(x),
            };
            if !keep {
                return Some(Skip::Owner);
            }
        }
        None
    }

    /// [`KeyFilter::check`] that counts a skip; `true` when the key is kept.
    pub fn admit(&self, c: &Candidate<'_>, counts: &SkipCounts) -> bool {
        match self.check(c) {
            None => true,
            Some(why) => {
                counts.add(why);
                false
            }
        }
    }
}

fn compile(patterns: &[String], flag: &str) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        let glob = GlobBuilder::new(p)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map_err(|e| Error::input(flag, format!("bad glob `{p}`: {e}")))?;
        set.add(glob);
    }
    set.build()
        .map(Some)
        .map_err(|e| Error::input(flag, format!("bad globs: {e}")))
}

/// Parse a size flag: bytes, or a number with `K`, `M`, `G`, `T` (1024-based;
/// `KB`/`KiB` spellings accepted, case-insensitive). Errors name `flag`.
pub fn parse_size(input: &str, flag: &str) -> Result<u64> {
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let bad = || {
        Error::input(
            flag,
            format!("`{input}` is not a size (bytes, or a number with K, M, G or T: 1K = 1024)"),
        )
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(spec: FilterSpec) -> KeyFilter {
        KeyFilter::new(spec).unwrap()
    }

    fn key(k: &str) -> Candidate<'_> {
        Candidate {
            key: k,
            ..Candidate::default()
        }
    }

    #[test]
    fn globs_match_the_full_key_across_slashes() {
        let f = filter(FilterSpec {
            include: vec!["*.jpg".into(), "docs/**".into()],
            exclude: vec!["*/tmp/*".into()],
            ..FilterSpec::default()
        });
        assert_eq!(f.check(&key("a/b/c.jpg")), None);
        assert_eq!(f.check(&key("docs/x/y.txt")), None);
        assert_eq!(f.check(&key("a/b/c.png")), Some(Skip::Include));
        assert_eq!(f.check(&key("a/tmp/c.jpg")), Some(Skip::Exclude));
        let e = KeyFilter::new(FilterSpec {
            include: vec!["a[".into()],
            ..FilterSpec::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("--include"), "{e}");
    }

    #[test]
    fn size_and_date_windows_are_inclusive_then_exclusive() {
        let t0 = parse_time("2024-01-01", "--modified-since").unwrap();
        let t1 = parse_time("2024-02-01T00:00:00+00:00", "--not-modified-since").unwrap();
        let f = filter(FilterSpec {
            min_size: Some(10),
            max_size: Some(20),
            window: DateWindow::new(Some(t0), Some(t1)).unwrap(),
            ..FilterSpec::default()
        });
        let c = |size, lm| Candidate {
            key: "k",
            size: Some(size),
            last_modified: Some(lm),
            ..Candidate::default()
        };
        assert_eq!(f.check(&c(10, t0)), None);
        assert_eq!(f.check(&c(20, t0)), None);
        assert_eq!(f.check(&c(9, t0)), Some(Skip::MinSize));
        assert_eq!(f.check(&c(21, t0)), Some(Skip::MaxSize));
        assert_eq!(f.check(&c(15, t1)), Some(Skip::NotModifiedSince));
        assert_eq!(
            f.check(&c(15, t0 - chrono::Duration::seconds(1))),
            Some(Skip::ModifiedSince)
        );
        // Unknown facts pass (sources that lack them are refused by `require`).
        assert_eq!(f.check(&key("k")), None);
        let e = f.require("a CSV manifest", false, true, true).unwrap_err();
        assert!(
            e.to_string().contains("--min-size") && e.to_string().contains("CSV manifest"),
            "{e}"
        );
    }

    #[test]
    fn owner_rules_follow_the_seed() {
        let is = filter(FilterSpec {
            owner: Some(OwnerRule::Is("alice".into())),
            ..FilterSpec::default()
        });
        let not = filter(FilterSpec {
            owner: Some(OwnerRule::IsNot("alice".into())),
            ..FilterSpec::default()
        });
        let by = |id| Candidate {
            key: "k",
            owner_id: Some(id),
            owner_name: Some("Alice Doe"),
            ..Candidate::default()
        };
        assert_eq!(is.check(&by("alice")), None);
        assert_eq!(is.check(&by("bob")), Some(Skip::Owner));
        assert_eq!(not.check(&by("alice")), Some(Skip::Owner));
        assert_eq!(not.check(&by("bob")), None);
        assert_eq!(not.check(&key("k")), None);
        assert_eq!(is.check(&key("k")), Some(Skip::Owner));
        assert!(is.needs_owner());
    }

    #[test]
    fn prefix_and_start_after_are_counted() {
        let f = filter(FilterSpec {
            prefix: "a/".into(),
            start_after: Some("a/m".into()),
            ..FilterSpec::default()
        });
        let counts = SkipCounts::default();
        let kept: Vec<_> = ["a/a", "a/m", "a/n", "b/z", "a/m0"]
            .into_iter()
            .filter(|k| f.admit(&key(k), &counts))
            .collect();
        assert_eq!(kept, ["a/n", "a/m0"]);
        let s = counts.snapshot();
        assert_eq!((s.prefix, s.start_after), (1, 2));
        assert_eq!(s.nonzero(), vec![("--prefix", 1), ("--start-after", 2)]);
        assert_eq!(s.total(), 3);
    }

    #[test]
    fn parses_sizes_and_dates_or_names_the_flag() {
        assert_eq!(parse_size("123", "--min-size").unwrap(), 123);
        assert_eq!(parse_size("4K", "--min-size").unwrap(), 4096);
        assert_eq!(parse_size("2MiB", "--min-size").unwrap(), 2 << 20);
        assert_eq!(parse_size("1g", "--min-size").unwrap(), 1 << 30);
        for bad in ["", "x", "1Q", "-1", "99999999999999999999T"] {
            let e = parse_size(bad, "--max-size").unwrap_err();
            assert!(e.to_string().contains("--max-size"), "{bad}: {e}");
        }
        assert_eq!(
            parse_time("2024-05-01T12:00:00+02:00", "--modified-since")
                .unwrap()
                .to_rfc3339(),
            "2024-05-01T10:00:00+00:00"
        );
        let e = parse_time("yesterday", "--not-modified-since").unwrap_err();
        assert!(e.to_string().contains("--not-modified-since"), "{e}");
        let e = KeyFilter::new(FilterSpec {
            min_size: Some(5),
            max_size: Some(4),
            ..FilterSpec::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("--min-size"), "{e}");
    }
}
