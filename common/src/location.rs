//! Where objects live. `-s`/`-t` and manifest paths accept a bucket name,
//! `s3://bucket[/prefix]`, or a local directory (`file:///abs/path`, or a path
//! starting with `/`, `./` or `../`).

use std::fmt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

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

/// Which endpoints a queue message may name as its source (or target): what
/// `migration.allowed_sources` / `migration.allowed_targets` allow. Anyone who
/// can send to a work queue chooses a message's endpoints, so an executor
/// opens only what its operator allowed; anything else is a bad message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPolicy {
    entries: Vec<Allowed>,
}

/// One entry of an [`EndpointPolicy`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    /// `s3://*`: every bucket.
    AnyBucket,
    /// `s3://bucket`.
    Bucket(String),
    /// `file://*`: every directory.
    AnyDir,
    /// `file:///root` (or `/root`): the root and every directory below it.
    Dir(PathBuf),
}

impl EndpointPolicy {
    /// Every bucket, no directory: the default with the SQS backend.
    pub fn s3_only() -> Self {
        EndpointPolicy {
            entries: vec![Allowed::AnyBucket],
        }
    }

    /// Every bucket and every directory: the default with the embedded queue
    /// (a one-host run: whoever can write its queue file can read the host anyway).
    pub fn anything() -> Self {
        EndpointPolicy {
            entries: vec![Allowed::AnyBucket, Allowed::AnyDir],
        }
    }

    /// Parse a comma-separated list of `s3://*`, `s3://bucket`, `file://*`,
    /// `file:///root` or `/root`; `what` names the key or flag in errors.
    pub fn parse(input: &str, what: &str) -> Result<Self> {
        let mut entries = Vec::new();
        for raw in input.split(',') {
            let s = raw.trim();
            if s.is_empty() {
                continue;
            }
            let entry = if s == "s3://*" {
                Allowed::AnyBucket
            } else if s == "file://*" {
                Allowed::AnyDir
            } else {
                match Location::parse(s, what)? {
                    Location::S3 { bucket, prefix } if prefix.is_empty() => Allowed::Bucket(bucket),
                    Location::S3 { .. } => {
                        return Err(Error::input(
                            what,
                            format!(
                                "`{s}`: an allowed bucket is s3://bucket or s3://* (no key prefix)"
                            ),
                        ))
                    }
                    Location::Dir { root } => {
                        if !root.is_absolute() || has_parent_dir(&root) {
                            return Err(Error::input(
                                what,
                                format!(
                                    "`{s}`: an allowed directory is an absolute path without `..`"
                                ),
                            ));
                        }
                        Allowed::Dir(root)
                    }
                }
            };
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err(Error::input(
                what,
                "no endpoint listed (expected s3://*, s3://bucket, file://* or file:///dir, comma-separated)",
            ));
        }
        Ok(EndpointPolicy { entries })
    }

    /// The policy as config text (comma-separated), the form [`parse`](Self::parse) reads.
    pub fn to_config_text(&self) -> String {
        let parts: Vec<String> = self
            .entries
            .iter()
            .map(|e| match e {
                Allowed::AnyBucket => "s3://*".to_string(),
                Allowed::Bucket(b) => format!("s3://{b}"),
                Allowed::AnyDir => "file://*".to_string(),
                Allowed::Dir(root) => format!("file://{}", root.display()),
            })
            .collect();
        parts.join(",")
    }

    /// `loc` if the policy allows it, with a directory resolved to its real
    /// path (symlinks followed, so the caller opens exactly what was checked);
    /// else an `Invalid` error of class `EndpointNotAllowed` naming `loc`.
    /// `what` says which end (`source`/`target`) and `key` the config key.
    pub fn admit(&self, loc: &Location, what: &str, key: &str) -> Result<Location> {
        let refuse = |why: &str| {
            Error::new(
                ErrorKind::Invalid,
                "EndpointNotAllowed",
                loc.to_string(),
                format!(
                    "the message's {what} {loc} is not allowed{why} ({key} is {})",
                    self.to_config_text()
                ),
            )
        };
        match loc {
            Location::S3 { bucket, .. } => {
                let ok = self.entries.iter().any(|e| match e {
                    Allowed::AnyBucket => true,
                    Allowed::Bucket(b) => b == bucket,
                    _ => false,
                });
                if ok {
                    Ok(loc.clone())
                } else {
                    Err(refuse(""))
                }
            }
            Location::Dir { root } => {
                if !self
                    .entries
                    .iter()
                    .any(|e| matches!(e, Allowed::AnyDir | Allowed::Dir(_)))
                {
                    return Err(refuse(""));
                }
                if has_parent_dir(root) {
                    return Err(refuse(": a directory named with `..` is never accepted"));
                }
                let real = real_path(root);
                let ok = self.entries.iter().any(|e| match e {
                    Allowed::AnyDir => true,
                    Allowed::Dir(allowed) => real.starts_with(real_path(allowed)),
                    _ => false,
                });
                if ok {
                    Ok(Location::Dir { root: real })
                } else {
                    Err(refuse(""))
                }
            }
        }
    }
}

/// Whether a path names a parent directory (`..`) anywhere.
fn has_parent_dir(p: &Path) -> bool {
    p.components().any(|c| matches!(c, Component::ParentDir))
}

/// `p` with symlinks resolved: the real path of its longest existing
/// ancestor, plus the part that does not exist yet (a target to be created).
fn real_path(p: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut cur = p.to_path_buf();
    loop {
        if let Ok(real) = std::fs::canonicalize(&cur) {
            let mut out = real;
            for c in missing.iter().rev() {
                out.push(c);
            }
            return out;
        }
        match (cur.file_name().map(|n| n.to_os_string()), cur.parent()) {
            (Some(name), Some(parent)) => {
                missing.push(name);
                cur = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
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
    fn endpoint_policies_allow_only_what_they_list() {
        let top = tempfile::tempdir().unwrap();
        let top = top.path().canonicalize().unwrap();
        let root = top.join("data");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(top.join("other")).unwrap();
        std::os::unix::fs::symlink(top.join("other"), root.join("out")).unwrap();
        let key = "migration.allowed_sources";
        let p = EndpointPolicy::parse(&format!("s3://only-this, file://{}", root.display()), key)
            .unwrap();
        let loc = |s: &str| Location::parse(s, "-s").unwrap();
        let dir = |p: &Path| Location::Dir {
            root: p.to_path_buf(),
        };
        assert!(p.admit(&loc("s3://only-this"), "source", key).is_ok());
        assert_eq!(
            p.admit(&dir(&root.join("sub")), "source", key).unwrap(),
            dir(&root.join("sub"))
        );
        // Not created yet (a target): resolved through its existing parent.
        assert!(p
            .admit(&dir(&root.join("new/deeper")), "target", key)
            .is_ok());
        for bad in [
            loc("s3://another"),
            dir(Path::new("/etc")),
            dir(&top.join("other")),
            dir(&root.join("../other")),
            dir(&root.join("sub/../../other")),
            dir(&root.join("out")),
            dir(&root.join("out/x")),
            dir(&top.join("data-sibling")),
        ] {
            let e = p.admit(&bad, "source", key).unwrap_err();
            assert_eq!(
                (e.kind, e.class.as_str()),
                (ErrorKind::Invalid, "EndpointNotAllowed")
            );
            assert!(
                e.message.contains(&bad.to_string()) && e.message.contains(key),
                "{e}"
            );
        }
        let s3 = EndpointPolicy::s3_only();
        assert!(s3.admit(&loc("s3://any-bucket"), "source", key).is_ok());
        assert!(s3.admit(&dir(&root), "source", key).is_err());
        let all = EndpointPolicy::anything();
        assert!(all.admit(&dir(&root), "source", key).is_ok());
        assert!(all
            .admit(&dir(&root.join("../other")), "source", key)
            .is_err());
        assert_eq!(
            EndpointPolicy::parse(" s3://* ,file://*", key).unwrap(),
            all
        );
        for bad in [
            "",
            " , ",
            "s3://b-1/prefix",
            "file://rel",
            "ftp://x",
            "/a/../b",
        ] {
            let e = EndpointPolicy::parse(bad, key).unwrap_err();
            assert!(e.to_string().contains(key), "{bad}: {e}");
        }
        let text = p.to_config_text();
        assert_eq!(EndpointPolicy::parse(&text, key).unwrap(), p);
    }

    #[test]
    fn rejects_bad_input_naming_the_flag() {
        for bad in ["", "Bad_Bucket", "http://x/y", "file://relative", "ab"] {
            let e = Location::parse(bad, "--source-bucket").unwrap_err();
            assert!(e.to_string().contains("--source-bucket"), "{e}");
        }
    }
}
