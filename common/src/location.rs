//! Where objects live. `-s`/`-t` and manifest paths accept a bucket name,
//! `s3://bucket[/prefix]`, or a local directory (`file:///abs/path`, or a path
//! starting with `/`, `./` or `../`).

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// A bucket (with an optional key prefix) or a local directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// An S3 bucket; `prefix` is empty or a key prefix (kept exactly as given).
    S3 { bucket: String, prefix: String },
    /// A local directory; keys are paths relative to `root`, `/`-separated.
    Dir { root: PathBuf },
}

impl Location {
    /// Parse a user-supplied location; `what` names the flag or field for errors.
    pub fn parse(input: &str, what: &str) -> Result<Self> {
        let s = input.trim();
        if s.is_empty() {
            return Err(Error::input(what, "empty location"));
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = match rest.split_once('/') {
                Some((b, p)) => (b, p),
                None => (rest, ""),
            };
            validate_bucket(bucket, what)?;
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        if let Some(rest) = s.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(Error::input(
                    what,
                    format!("`{s}`: file:// locations need an absolute path (file:///dir)"),
                ));
            }
            return Ok(Location::Dir {
                root: PathBuf::from(rest),
            });
        }
        if s.starts_with('/')
            || s.starts_with("./")
            || s.starts_with("../")
            || s == "."
            || s == ".."
        {
            let path = PathBuf::from(s);
            let root = if path.is_absolute() {
                path
            } else {
                std::env::current_dir()
                    .map_err(|e| Error::input(what, format!("cannot resolve `{s}`: {e}")))?
                    .join(path)
            };
            return Ok(Location::Dir { root });
        }
        if s.contains("://") {
            return Err(Error::input(
                what,
                format!("`{s}`: unsupported scheme (use a bucket name, s3://bucket/prefix, file:///dir or ./dir)"),
            ));
        }
        validate_bucket(s, what)?;
        Ok(Location::S3 {
            bucket: s.to_string(),
            prefix: String::new(),
        })
    }

    /// The bucket name, if this is S3.
    pub fn bucket(&self) -> Option<&str> {
        match self {
            Location::S3 { bucket, .. } => Some(bucket),
            Location::Dir { .. } => None,
        }
    }

    /// The key prefix (empty for directories: their prefix is part of the root).
    pub fn prefix(&self) -> &str {
        match self {
            Location::S3 { prefix, .. } => prefix,
            Location::Dir { .. } => "",
        }
    }

    /// This location without its prefix: what goes in a message's source/target.
    pub fn container(&self) -> Location {
        match self {
            Location::S3 { bucket, .. } => Location::S3 {
                bucket: bucket.clone(),
                prefix: String::new(),
            },
            d => d.clone(),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Location::Dir { root } => write!(f, "file://{}", root.display()),
        }
    }
}

fn validate_bucket(bucket: &str, what: &str) -> Result<()> {
    let ok_chars = bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_'));
    if bucket.len() < 3 || bucket.len() > 255 || !ok_chars {
        return Err(Error::input(
            what,
            format!("`{bucket}` is not a valid bucket name (3-255 of a-z, 0-9, '.', '-', '_')"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            Location::parse("my-bucket", "-s").unwrap(),
            Location::S3 {
                bucket: "my-bucket".into(),
                prefix: "".into()
            }
        );
        assert_eq!(
            Location::parse("s3://b-1/a/b/", "-s").unwrap(),
            Location::S3 {
                bucket: "b-1".into(),
                prefix: "a/b/".into()
            }
        );
        assert_eq!(
            Location::parse("file:///tmp/x", "-t").unwrap(),
            Location::Dir {
                root: "/tmp/x".into()
            }
        );
        assert_eq!(
            Location::parse("/data", "-t").unwrap(),
            Location::Dir {
                root: "/data".into()
            }
        );
        assert!(
            matches!(Location::parse("./rel", "-t").unwrap(), Location::Dir { root } if root.is_absolute())
        );
        assert_eq!(
            Location::parse("s3://b-1/p", "-s").unwrap().to_string(),
            "s3://b-1/p"
        );
    }

    #[test]
    fn rejects_bad_input_naming_the_flag() {
        for bad in ["", "Bad_Bucket", "http://x/y", "file://relative", "ab"] {
            let e = Location::parse(bad, "--source-bucket").unwrap_err();
            assert!(e.to_string().contains("--source-bucket"), "{e}");
        }
    }
}
