//! The date window of `--modified-since` / `--not-modified-since`: one type,
//! one parser and one boundary rule for the commander (which keys are sent)
//! and the executor (which keys are worked).
//!
//! Boundary rule: `since` is inclusive and `until` exclusive,
//! `since <= last_modified < until`, so consecutive windows
//! (`--not-modified-since T` then `--modified-since T`) neither overlap nor
//! leave a gap: an object modified exactly at `T` belongs to the second.

use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use crate::error::{Error, Result};

/// Flag that sets [`DateWindow::since`].
pub const SINCE_FLAG: &str = "--modified-since";
/// Flag that sets [`DateWindow::until`].
pub const UNTIL_FLAG: &str = "--not-modified-since";

/// `since <= last_modified < until`; an unset end is open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DateWindow {
    /// Keep objects modified at or after this instant (`--modified-since`).
    pub since: Option<DateTime<Utc>>,
    /// Keep objects modified strictly before this instant (`--not-modified-since`).
    pub until: Option<DateTime<Utc>>,
}

/// Which end of the window an instant falls outside of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outside {
    /// Before `since`.
    Before,
    /// At or after `until`.
    After,
}

impl DateWindow {
    /// A window; an empty one (`since >= until`) is an error naming both flags.
    pub fn new(since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> Result<Self> {
        if let (Some(a), Some(b)) = (since, until) {
            if a >= b {
                return Err(Error::input(
                    SINCE_FLAG,
                    format!("{SINCE_FLAG} {a} is not before {UNTIL_FLAG} {b}: no object can match"),
                ));
            }
        }
        Ok(DateWindow { since, until })
    }

    /// A window from the two flags' texts (see [`parse_time`]); errors name the flag.
    pub fn parse(since: Option<&str>, until: Option<&str>) -> Result<Self> {
        let since = since.map(|s| parse_time(s, SINCE_FLAG)).transpose()?;
        let until = until.map(|s| parse_time(s, UNTIL_FLAG)).transpose()?;
        DateWindow::new(since, until)
    }

    /// Whether either end is set.
    pub fn is_set(&self) -> bool {
        self.since.is_some() || self.until.is_some()
    }

    /// `None` when `t` is inside the window, else the end it misses.
    pub fn check(&self, t: DateTime<Utc>) -> Option<Outside> {
        if self.since.is_some_and(|s| t < s) {
            return Some(Outside::Before);
        }
        if self.until.is_some_and(|u| t >= u) {
            return Some(Outside::After);
        }
        None
    }

    /// Whether `t` is inside the window.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.check(t).is_none()
    }
}

impl fmt::Display for DateWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = |t: Option<DateTime<Utc>>| t.map_or("…".to_string(), |t| t.to_rfc3339());
        write!(f, "[{}, {})", end(self.since), end(self.until))
    }
}

/// The one time parser of both binaries: RFC 3339 (`2024-05-01T12:00:00Z`,
/// any offset, fractions), `YYYY-MM-DDTHH:MM:SS` or `YYYY-MM-DD HH:MM:SS`
/// (UTC), or a date `YYYY-MM-DD` (midnight UTC). Errors name `flag`.
pub fn parse_time(input: &str, flag: &str) -> Result<DateTime<Utc>> {
    parse_instant(input).map_err(|m| Error::input(flag, m))
}

/// [`parse_time`] with a plain message, for clap's `value_parser`.
pub fn parse_instant(input: &str) -> std::result::Result<DateTime<Utc>, String> {
    let t = input.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(dt.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        if let Some(dt) = d.and_hms_opt(0, 0, 0) {
            return Ok(dt.and_utc());
        }
    }
    Err(format!(
        "`{input}` is not a time: use RFC 3339 (2024-05-01T12:00:00Z), YYYY-MM-DD HH:MM:SS (UTC) or YYYY-MM-DD"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_instant(s).unwrap()
    }

    #[test]
    fn since_is_inclusive_and_until_exclusive() {
        let a = t("2024-05-01");
        let b = t("2024-06-01");
        let w = DateWindow::new(Some(a), Some(b)).unwrap();
        let sec = chrono::Duration::seconds(1);
        let ns = chrono::Duration::nanoseconds(1);
        for (at, want) in [
            (a - sec, Some(Outside::Before)),
            (a - ns, Some(Outside::Before)),
            (a, None),
            (a + ns, None),
            (b - ns, None),
            (b, Some(Outside::After)),
            (b + sec, Some(Outside::After)),
        ] {
            assert_eq!(w.check(at), want, "{at}");
            assert_eq!(w.contains(at), want.is_none(), "{at}");
        }
        // Consecutive windows: every instant is in exactly one of them.
        let first = DateWindow::new(None, Some(b)).unwrap();
        let second = DateWindow::new(Some(b), None).unwrap();
        for at in [b - sec, b - ns, b, b + ns] {
            assert!(first.contains(at) ^ second.contains(at), "{at}");
        }
        let open = DateWindow::default();
        assert!(!open.is_set() && open.contains(a));
    }

    #[test]
    fn empty_windows_are_refused_naming_the_flags() {
        let a = t("2024-05-01");
        for (since, until) in [(a, a), (a + chrono::Duration::seconds(1), a)] {
            let e = DateWindow::new(Some(since), Some(until)).unwrap_err();
            assert!(
                e.to_string().contains(SINCE_FLAG) && e.to_string().contains(UNTIL_FLAG),
                "{e}"
            );
        }
    }

    #[test]
    fn one_parser_accepts_every_documented_form() {
        for (input, want) in [
            ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00+00:00"),
            ("2024-05-01T12:00:00+02:00", "2024-05-01T10:00:00+00:00"),
            (
                "2024-05-01T12:00:00.5+00:00",
                "2024-05-01T12:00:00.500+00:00",
            ),
            ("2024-05-01T12:00:00", "2024-05-01T12:00:00+00:00"),
            ("2024-05-01 12:00:00", "2024-05-01T12:00:00+00:00"),
            (" 2024-05-01 ", "2024-05-01T00:00:00+00:00"),
        ] {
            assert_eq!(t(input).to_rfc3339(), want, "{input}");
        }
        for bad in ["05/01/2024", "yesterday", "2024-13-01", ""] {
            let e = parse_time(bad, UNTIL_FLAG).unwrap_err();
            assert!(e.to_string().contains(UNTIL_FLAG), "{bad}: {e}");
        }
        let w = DateWindow::parse(Some("2024-05-01"), Some("2024-05-02 00:00:00")).unwrap();
        assert_eq!(
            w.to_string(),
            "[2024-05-01T00:00:00+00:00, 2024-05-02T00:00:00+00:00)"
        );
        let e = DateWindow::parse(Some("soon"), None).unwrap_err();
        assert!(e.to_string().contains(SINCE_FLAG), "{e}");
    }
}
