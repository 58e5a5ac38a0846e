//! The local-directory backend of [`ObjectStore`]: keys are `/`-separated paths
//! under a root. Guarantees: nothing is ever written outside the root (keys with
//! `..`, `//` or a leading `/` are refused, symbolic links are never followed),
//! writes are atomic (temp file in the target directory, fsync, rename), and a
//! listing walks the tree in key byte order holding at most one sorted
//! directory per level in memory.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::etag::{etag_eq, md5_etag, multipart_etag};
use super::{
    length_mismatch, ByteStream, Capabilities, CompletedPart, DeleteIf, Deletion, Finish, ListPage,
    ListRequest, Listed, ObjectAttrs, ObjectInfo, ObjectStore, PutOptions, WriteChecksum, Written,
};
use crate::checksum::Checksum;
use crate::error::{Error, ErrorKind, Result};

/// Marker in the names of our whole-object temp files: `.<name>.s3mig-tmp-<uuid>`.
pub const TMP_MARK: &str = ".s3mig-tmp-";
/// Marker in the names of multipart part files: `.<name>.s3mig-part-<upload id>-<n>`.
pub const PART_MARK: &str = ".s3mig-part-";
/// User-metadata name carrying a file's modification time (unix seconds, with
/// an optional fraction), so Directory → S3 → Directory keeps mtimes.
pub const MTIME_META: &str = "mtime";
/// Start of a file's fingerprint token (`fp:<size>-<mtime ns>-<dev>-<inode>`),
/// which [`DirStore::head`] reports as the `version_id` (a file has no ETag at
/// HEAD) and [`DirStore::get`] accepts as `if_match`: the read then fails with
/// `PreconditionFailed` if the file is not that version when it is opened or
/// when its last byte has been read, so a copy in parts is never a mix.
pub const FINGERPRINT_PREFIX: &str = "fp:";

/// Whether `token` is a directory fingerprint (see [`FINGERPRINT_PREFIX`]).
pub fn is_fingerprint(token: &str) -> bool {
    token.starts_with(FINGERPRINT_PREFIX)
}

/// The fingerprint of a file's metadata: size, modification time in
/// nanoseconds and, on unix, device and inode (a replaced file is another inode).
pub fn fingerprint(meta: &Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    #[cfg(unix)]
    let (dev, ino) = {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    };
    #[cfg(not(unix))]
    let (dev, ino) = (0u64, 0u64);
    format!("{FINGERPRINT_PREFIX}{}-{mtime}-{dev}-{ino}", meta.len())
}

/// `PreconditionFailed` unless `meta` has the fingerprint `want`.
fn check_fingerprint(meta: &Metadata, want: &str, subject: &str, when: &str) -> Result<()> {
    let have = fingerprint(meta);
    if have == want {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::PreconditionFailed,
        "PreconditionFailed",
        subject,
        format!("the file changed {when} (size, mtime or inode: {have} is not {want})"),
    ))
}

/// Longest file or directory name most filesystems accept (NAME_MAX).
pub const NAME_MAX: usize = 255;

const CHUNK: usize = 1 << 20;
/// Bytes of the final name kept in temp-file names, so they stay under NAME_MAX.
const TMP_NAME_KEEP: usize = 100;
/// Listing walkers kept between pages (keyed by continuation token).
const WALKER_CACHE: usize = 16;
const EMPTY_MD5: [u8; 16] = [
    0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04, 0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8, 0x42, 0x7e,
];

/// A local directory used as a source or a target of a migration.
pub struct DirStore {
    root: PathBuf,
    walkers: Mutex<VecDeque<(WalkerKey, Walker)>>,
}

impl std::fmt::Debug for DirStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirStore")
            .field("root", &self.root)
            .finish()
    }
}

impl DirStore {
    /// Same as [`DirStore::create`]: a target root is created when missing.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        Self::create(root)
    }

    /// Open `root` as a target, creating it (and its parents) when missing.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| {
            Error::input(
                root.display().to_string(),
                format!("cannot create the target directory: {e}"),
            )
        })?;
        Self::open_existing(root)
    }

    /// Open an existing directory (a source); an error names the path when it
    /// is missing or not a directory.
    pub fn open_existing(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let shown = root.display().to_string();
        let meta = fs::metadata(&root).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::input(&shown, "directory does not exist")
            } else {
                Error::input(&shown, format!("cannot open the directory: {e}"))
            }
        })?;
        if !meta.is_dir() {
            return Err(Error::input(&shown, "not a directory"));
        }
        let root = root
            .canonicalize()
            .map_err(|e| Error::input(&shown, format!("cannot resolve the directory: {e}")))?;
        Ok(DirStore {
            root,
            walkers: Mutex::new(VecDeque::new()),
        })
    }

    /// The canonical root (symbolic links in the given path resolved once, here).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn subject(&self, key: &str) -> String {
        format!("file://{}/{}", self.root.display(), key)
    }

    fn map(&self, key: &str) -> Result<PathBuf> {
        key_to_relpath(key).map_err(|e| e.with_subject(self.subject(key)))
    }

    fn cached_walker(&self, key: &WalkerKey) -> Option<Walker> {
        let mut cache = self.walkers.lock().unwrap_or_else(|p| p.into_inner());
        let pos = cache.iter().position(|(k, _)| k == key)?;
        cache.remove(pos).map(|(_, w)| w)
    }

    fn keep_walker(&self, key: WalkerKey, walker: Walker) {
        let mut cache = self.walkers.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= WALKER_CACHE {
            cache.pop_front();
        }
        cache.push_back((key, walker));
    }
}

/// Map a key to a path relative to the root, or say why it cannot be a file.
/// Refused (ErrorKind::Invalid, class `UnmappableKey`): empty, NUL, a leading
/// `/`, `//`, a trailing `/` (only an empty "directory marker" may end with `/`;
/// [`ObjectStore::put`] handles those before calling this), `.`/`..`
/// components, components over 255 bytes, and names of our own temp files.
pub fn key_to_relpath(key: &str) -> Result<PathBuf> {
    let bad = |reason: &str| {
        Error::new(
            ErrorKind::Invalid,
            "UnmappableKey",
            key,
            format!("key cannot be a file: {reason}"),
        )
    };
    if key.is_empty() {
        return Err(bad("empty key"));
    }
    if key.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if key.starts_with('/') {
        return Err(bad("starts with `/`"));
    }
    if key.contains("//") {
        return Err(bad("contains `//` (an empty path component)"));
    }
    if key.ends_with('/') {
        return Err(bad(
            "ends with `/` and has content (only an empty directory marker may end with `/`)",
        ));
    }
    let mut path = PathBuf::new();
    for comp in key.split('/') {
        match comp {
            "." | ".." => return Err(bad(&format!("has a `{comp}` path component"))),
            c if c.len() > NAME_MAX => {
                return Err(bad(&format!(
                "a path component is {} bytes, over the filesystem's {NAME_MAX}-byte name limit",
                c.len()
            )))
            }
            c if is_internal_name(c) => {
                return Err(bad(
                    "a path component looks like one of our temporary files",
                ))
            }
            c => path.push(c),
        }
    }
    // Belt and braces: the result must be plain relative components only.
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(bad("not a plain relative path"));
    }
    Ok(path)
}

/// Whether a directory entry is one of our temp/part files (skipped by listings).
pub fn is_internal_name(name: &str) -> bool {
    name.starts_with('.') && (name.contains(TMP_MARK) || name.contains(PART_MARK))
}

fn truncated(name: &str) -> &str {
    if name.len() <= TMP_NAME_KEEP {
        return name;
    }
    let mut end = TMP_NAME_KEEP;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

fn temp_name(final_name: &str) -> String {
    format!(
        ".{}{TMP_MARK}{}",
        truncated(final_name),
        uuid::Uuid::new_v4().simple()
    )
}

fn part_prefix(final_name: &str, upload_id: &str) -> String {
    format!(".{}{PART_MARK}{upload_id}-", truncated(final_name))
}

fn valid_upload_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn io_error(e: io::Error, subject: &str, what: &str) -> Error {
    use io::ErrorKind as K;
    let (kind, class) = match e.kind() {
        K::NotFound => (ErrorKind::NotFound, "NotFound"),
        K::PermissionDenied => (ErrorKind::AccessDenied, "AccessDenied"),
        K::InvalidFilename => (ErrorKind::Invalid, "UnmappableKey"),
        K::NotADirectory | K::IsADirectory | K::DirectoryNotEmpty => {
            (ErrorKind::Invalid, "KeyConflict")
        }
        K::StorageFull | K::QuotaExceeded => (ErrorKind::Permanent, "StorageFull"),
        K::ReadOnlyFilesystem => (ErrorKind::Permanent, "ReadOnlyFilesystem"),
        K::Interrupted | K::TimedOut | K::WouldBlock | K::ResourceBusy => {
            (ErrorKind::Retryable, "Io")
        }
        _ => (ErrorKind::Permanent, "Io"),
    };
    Error::new(kind, class, subject, format!("{what}: {e}")).with_source(e)
}

fn conflict(subject: &str, message: String) -> Error {
    Error::new(ErrorKind::Invalid, "KeyConflict", subject, message)
}

fn symlink_refused(subject: &str, rel: &Path) -> Error {
    Error::new(
        ErrorKind::Invalid,
        "Symlink",
        subject,
        format!(
            "`{}` is a symbolic link: the directory store never follows links, so nothing is read or written outside its root",
            rel.display()
        ),
    )
}

/// Make sure every directory of `rel`'s parent exists under `root` as a real
/// directory (creating missing ones), refusing symlinks and files in the way.
/// With `include_last`, `rel` itself is made a directory too (directory markers).
fn prepare_dirs(root: &Path, rel: &Path, include_last: bool, subject: &str) -> Result<PathBuf> {
    let comps: Vec<_> = rel.components().collect();
    let n = if include_last {
        comps.len()
    } else {
        comps.len().saturating_sub(1)
    };
    let mut abs = root.to_path_buf();
    let mut sofar = PathBuf::new();
    for c in &comps[..n] {
        abs.push(c);
        sofar.push(c);
        loop {
            match fs::symlink_metadata(&abs) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(symlink_refused(subject, &sofar))
                }
                Ok(m) if m.is_dir() => break,
                Ok(_) => {
                    return Err(conflict(
                        subject,
                        format!(
                            "`{}` is a file, so it cannot also be a directory",
                            sofar.display()
                        ),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&abs) {
                    Ok(()) => break,
                    // Somebody else created it meanwhile: look again.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => {
                        return Err(io_error(
                            e,
                            subject,
                            &format!("cannot create directory `{}`", sofar.display()),
                        ))
                    }
                },
                Err(e) => {
                    return Err(io_error(
                        e,
                        subject,
                        &format!("cannot inspect `{}`", sofar.display()),
                    ))
                }
            }
        }
    }
    Ok(abs)
}

/// Check that the final name may be replaced by a file (absent or a file).
fn check_final(path: &Path, rel: &Path, subject: &str) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(symlink_refused(subject, rel)),
        Ok(m) if m.is_dir() => Err(conflict(
            subject,
            format!(
                "`{}` is a directory, so it cannot also be a file",
                rel.display()
            ),
        )),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(e, subject, "cannot inspect the target")),
    }
}

/// Metadata of `root/rel` without following links anywhere on the way:
/// `Ok(None)` when it (or a parent) is missing or a parent is a file.
fn lookup(root: &Path, rel: &Path, subject: &str) -> Result<Option<Metadata>> {
    let mut abs = root.to_path_buf();
    let mut sofar = PathBuf::new();
    let comps: Vec<_> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        abs.push(c);
        sofar.push(c);
        match fs::symlink_metadata(&abs) {
            Ok(m) if m.file_type().is_symlink() => return Err(symlink_refused(subject, &sofar)),
            Ok(m) if i + 1 == comps.len() => return Ok(Some(m)),
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(None),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(io_error(e, subject, "cannot inspect the path")),
        }
    }
    Ok(None)
}

fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), error = %e, "directory fsync not possible");
    }
}

/// Parse `mtime` user metadata: unix seconds with an optional fraction.
pub fn parse_mtime(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: u64 = secs.parse().ok()?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Format a modification time as `mtime` user metadata (see [`parse_mtime`]).
pub fn format_mtime(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        let frac = format!("{:09}", d.subsec_nanos());
        format!("{}.{}", d.as_secs(), frac.trim_end_matches('0'))
    }
}

fn wanted_mtime(opts: &PutOptions) -> Option<SystemTime> {
    opts.attrs
        .metadata
        .get(MTIME_META)
        .and_then(|s| parse_mtime(s))
}

/// Write `fill`'s output to a temp file next to `final_path`, fsync, set the
/// mtime, rename over the final name. The temp file is removed on any failure.
fn write_atomically(
    parent: &Path,
    final_path: &Path,
    mtime: Option<SystemTime>,
    subject: &str,
    fill: impl FnOnce(&mut File) -> Result<()>,
) -> Result<()> {
    let name = final_path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("object");
    let tmp = parent.join(temp_name(name));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io_error(e, subject, "cannot create a temp file"))?;
        fill(&mut f)?;
        if let Some(t) = mtime {
            f.set_modified(t)
                .map_err(|e| io_error(e, subject, "cannot set the modification time"))?;
        }
        f.sync_all()
            .map_err(|e| io_error(e, subject, "cannot flush the file"))?;
        drop(f);
        fs::rename(&tmp, final_path).map_err(|e| io_error(e, subject, "cannot rename into place"))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    } else {
        sync_dir(parent);
        remove_leftovers(parent, name);
    }
    result
}

fn to_chrono(t: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(t)
}

async fn blocking<T: Send + 'static>(
    subject: String,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Error::new(
            ErrorKind::Retryable,
            "TaskFailed",
            subject,
            format!("filesystem task failed: {e}"),
        )
    })?
}

/// The body's MD5; with `want`, a body with another MD5 is refused as S3
/// refuses a Content-MD5 the body does not have (`BadDigest`, retryable).
/// A directory keeps no checksums, but it checks one it is given (as S3
/// does) so damaged bytes are refused here too.
fn checked_checksum(body: &[u8], want: Option<&Checksum>, subject: &str) -> Result<()> {
    let Some(want) = want else { return Ok(()) };
    let got = crate::checksum::digest(want.algorithm, body).base64();
    if got == want.value {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Retryable,
        "BadDigest",
        subject,
        format!(
            "the body's {} is {got}, not the {} given",
            want.algorithm, want.value
        ),
    ))
}

/// `--no-overwrite` on a directory: refuse when the file exists (checked
/// just before the rename, so a writer racing in between can still win).
fn refuse_existing(path: &Path, if_none_match: bool, subject: &str) -> Result<()> {
    if if_none_match && path.exists() {
        return Err(Error::new(
            ErrorKind::PreconditionFailed,
            super::TARGET_EXISTS,
            subject,
            "a file already exists under the key and --no-overwrite is set",
        ));
    }
    Ok(())
}

fn checked_md5(body: &[u8], want: Option<&[u8; 16]>, subject: &str) -> Result<[u8; 16]> {
    let digest: [u8; 16] = Md5::digest(body).into();
    match want {
        Some(want) if *want != digest => Err(Error::new(
            ErrorKind::Retryable,
            "BadDigest",
            subject,
            "the body's MD5 is not the Content-MD5 given",
        )),
        _ => Ok(digest),
    }
}

/// A directory's write answer: the ETag S3 would give the bytes; no checksum kept.
fn answer(etag: String) -> Written {
    Written {
        etag,
        checksum: None,
    }
}

#[async_trait]
impl ObjectStore for DirStore {
    fn capabilities(&self) -> Capabilities {
        // Bytes and mtime only; no server-side copy; uploads in progress are
        // files that `commander cleanup` removes by age, not listed uploads.
        Capabilities::default()
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn confirm_exists(&self) -> Result<()> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || match fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(Error::input(root.display().to_string(), "not a directory")),
            Err(e) => Err(Error::input(
                root.display().to_string(),
                format!("cannot open the directory: {e}"),
            )),
        })
        .await
        .map_err(|e| Error::input(self.describe(), format!("cannot check the directory: {e}")))?
    }

    async fn list_page(&self, req: &ListRequest) -> Result<ListPage> {
        let delimiter = req.delimiter.clone().filter(|d| !d.is_empty());
        let max = req.max_keys.unwrap_or(1000).max(1) as usize;
        let cache_key = req.continuation.as_ref().map(|t| WalkerKey {
            prefix: req.prefix.clone(),
            delimiter: delimiter.clone(),
            token: t.clone(),
        });
        let walker = cache_key
            .as_ref()
            .and_then(|k| self.cached_walker(k))
            .unwrap_or_else(|| {
                let after = req.continuation.clone().or_else(|| req.start_after.clone());
                Walker::new(req.prefix.clone(), delimiter.clone(), after)
            });
        let root = self.root.clone();
        let subject = self.subject(&req.prefix);
        let (page, walker) = blocking(subject.clone(), move || {
            let mut walker = walker;
            let mut page = ListPage::default();
            let mut last = None;
            let mut count = 0;
            while count < max {
                match walker.next_item(&root, &subject)? {
                    None => break,
                    Some(Item::Object(o)) => {
                        last = Some(o.key.clone());
                        page.objects.push(o);
                    }
                    Some(Item::Prefix(p)) => {
                        last = Some(p.clone());
                        page.prefixes.push(p);
                    }
                }
                count += 1;
            }
            if count == max {
                if let Some(item) = walker.next_item(&root, &subject)? {
                    walker.pending = Some(item);
                    page.next = last;
                }
            }
            Ok((page, walker))
        })
        .await?;
        if let Some(token) = &page.next {
            self.keep_walker(
                WalkerKey {
                    prefix: req.prefix.clone(),
                    delimiter,
                    token: token.clone(),
                },
                walker,
            );
        }
        Ok(page)
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let rel = match self.map(key) {
            Ok(rel) => rel,
            // A key that cannot be a file cannot exist here.
            Err(e) if e.class == "UnmappableKey" => return Ok(None),
            Err(e) => return Err(e),
        };
        let root = self.root.clone();
        let subject = self.subject(key);
        let meta = blocking(subject.clone(), move || lookup(&root, &rel, &subject)).await?;
        let Some(meta) = meta.filter(|m| m.is_file()) else {
            return Ok(None);
        };
        let mtime = meta.modified().ok();
        let mut metadata = BTreeMap::new();
        if let Some(t) = mtime {
            metadata.insert(MTIME_META.to_string(), format_mtime(t));
        }
        Ok(Some(ObjectInfo {
            key: key.to_string(),
            size: meta.len(),
            etag: None,
            version_id: Some(fingerprint(&meta)),
            last_modified: mtime.map(to_chrono),
            attrs: ObjectAttrs {
                content_type: mime_guess::from_path(key).first_raw().map(str::to_string),
                metadata,
                ..ObjectAttrs::default()
            },
            ..ObjectInfo::default()
        }))
    }

    async fn part_size(&self, key: &str, part: u32) -> Result<u64> {
        let subject = self.subject(key);
        let info = self
            .head(key)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "NotFound", &subject, "no such file"))?;
        if part == 1 {
            Ok(info.size)
        } else {
            Err(Error::new(
                ErrorKind::Invalid,
                "InvalidPartNumber",
                subject,
                format!("a file has a single part; part {part} does not exist"),
            ))
        }
    }

    async fn get(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
        if_match: Option<&str>,
    ) -> Result<ByteStream> {
        let rel = self.map(key)?;
        let root = self.root.clone();
        let subject = self.subject(key);
        let if_match = if_match.map(str::to_string);
        let pinned = if_match.clone().filter(|t| is_fingerprint(t));
        let (rel2, root2) = (rel.clone(), self.root.clone());
        let (file, start, len) = blocking(subject.clone(), move || {
            let not_found =
                || Error::new(ErrorKind::NotFound, "NoSuchKey", &subject, "no such file");
            let meta = lookup(&root, &rel, &subject)?.ok_or_else(not_found)?;
            if !meta.is_file() {
                return Err(not_found());
            }
            let mut f =
                File::open(root.join(&rel)).map_err(|e| io_error(e, &subject, "cannot open"))?;
            let opened = f
                .metadata()
                .map_err(|e| io_error(e, &subject, "cannot stat"))?;
            let size = opened.len();
            if let Some(want) = if_match.as_deref().filter(|t| is_fingerprint(t)) {
                check_fingerprint(&opened, want, &subject, "before it was read")?;
            } else if let Some(want) = if_match {
                // Hash through the same open file that is then streamed: a
                // concurrent atomic replace cannot mix two versions.
                let mut h = Md5::new();
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let n = f
                        .read(&mut buf)
                        .map_err(|e| io_error(e, &subject, "cannot read"))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                let have = md5_etag(&h.finalize().into());
                if !etag_eq(&have, &want) {
                    return Err(Error::new(
                        ErrorKind::PreconditionFailed,
                        "PreconditionFailed",
                        &subject,
                        format!("the file's ETag {have} is not {want}"),
                    ));
                }
            }
            let (start, len) = match range {
                None => (0, size),
                Some((a, b)) if a < size && a <= b => (a, b.min(size - 1) - a + 1),
                Some((a, b)) => {
                    return Err(Error::new(
                        ErrorKind::Invalid,
                        "InvalidRange",
                        &subject,
                        format!("range {a}-{b} is outside the file's {size} bytes"),
                    ))
                }
            };
            f.seek(SeekFrom::Start(start))
                .map_err(|e| io_error(e, &subject, "cannot seek"))?;
            Ok((f, start, len))
        })
        .await?;
        tracing::trace!(key, start, len, "reading file");
        let subject = self.subject(key);
        // A second handle on the same open file, to stat it after the last byte.
        let after = match &pinned {
            Some(_) => Some(
                file.try_clone()
                    .map_err(|e| io_error(e, &subject, "cannot open"))?,
            ),
            None => None,
        };
        let reader = tokio::fs::File::from_std(file).take(len);
        let subject2 = subject.clone();
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, CHUNK)
            .map(move |r| r.map_err(|e| io_error(e, &subject2, "cannot read")));
        let (Some(want), Some(after)) = (pinned, after) else {
            return Ok(Box::pin(stream));
        };
        // Once everything was read: the open file (written in place?) and the
        // path (replaced?) must both still be the pinned version.
        let tail = futures::stream::once(async move {
            blocking(subject.clone(), move || {
                let when = "while it was read";
                let meta = after
                    .metadata()
                    .map_err(|e| io_error(e, &subject, "cannot stat"))?;
                check_fingerprint(&meta, &want, &subject, when)?;
                match lookup(&root2, &rel2, &subject)? {
                    Some(now) => check_fingerprint(&now, &want, &subject, when),
                    None => Err(Error::new(
                        ErrorKind::PreconditionFailed,
                        "PreconditionFailed",
                        &subject,
                        "the file was removed while it was read",
                    )),
                }
            })
            .await
        })
        .filter_map(|r| async move { r.err().map(Err) });
        Ok(Box::pin(stream.chain(tail)))
    }

    async fn put(&self, key: &str, body: Bytes, opts: &PutOptions) -> Result<Written> {
        let subject = self.subject(key);
        let root = self.root.clone();
        let mtime = wanted_mtime(opts);
        // An empty key ending in `/` is a "directory marker": make the directory.
        if body.is_empty() && key.len() > 1 && key.ends_with('/') && !key.contains("//") {
            let rel = self.map(&key[..key.len() - 1])?;
            blocking(subject.clone(), move || {
                prepare_dirs(&root, &rel, true, &subject).map(|_| ())
            })
            .await?;
            return Ok(answer(md5_etag(&EMPTY_MD5)));
        }
        let rel = self.map(key)?;
        let digest = checked_md5(&body, opts.content_md5.as_ref(), &subject)?;
        let value = match &opts.checksum {
            Some(WriteChecksum::Value(c)) => Some(c),
            _ => None,
        };
        checked_checksum(&body, value, &subject)?;
        let if_none_match = opts.if_none_match;
        blocking(subject.clone(), move || {
            let parent = prepare_dirs(&root, &rel, false, &subject)?;
            let final_path = root.join(&rel);
            check_final(&final_path, &rel, &subject)?;
            refuse_existing(&final_path, if_none_match, &subject)?;
            write_atomically(&parent, &final_path, mtime, &subject, |f| {
                f.write_all(&body)
                    .map_err(|e| io_error(e, &subject, "cannot write"))
            })?;
            Ok(answer(md5_etag(&digest)))
        })
        .await
    }

    async fn put_stream(
        &self,
        key: &str,
        body: ByteStream,
        len: u64,
        opts: &PutOptions,
    ) -> Result<Written> {
        let subject = self.subject(key);
        let mut body = body;
        if len == 0 {
            // Nothing to stream (and a key ending in `/` is a directory marker): as put.
            while let Some(chunk) = body.next().await {
                if !chunk?.is_empty() {
                    return Err(length_mismatch(&subject, len, "more"));
                }
            }
            return self.put(key, Bytes::new(), opts).await;
        }
        let rel = self.map(key)?;
        let root = self.root.clone();
        let mtime = wanted_mtime(opts);
        let subj = subject.clone();
        let (parent, final_path, tmp, file) = blocking(subject.clone(), move || {
            let parent = prepare_dirs(&root, &rel, false, &subj)?;
            let final_path = root.join(&rel);
            check_final(&final_path, &rel, &subj)?;
            let tmp = parent.join(temp_name(file_name(&rel)));
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| io_error(e, &subj, "cannot create a temp file"))?;
            Ok((parent, final_path, tmp, f))
        })
        .await?;
        // Removes the temp file on failure and on cancellation.
        let guard = TempFile(Some(tmp.clone()));
        let mut out = tokio::fs::File::from_std(file);
        let mut hash = Md5::new();
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            written += chunk.len() as u64;
            if written > len {
                return Err(length_mismatch(&subject, len, "more"));
            }
            hash.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|e| io_error(e, &subject, "cannot write"))?;
        }
        if written < len {
            return Err(length_mismatch(&subject, len, "fewer"));
        }
        out.flush()
            .await
            .map_err(|e| io_error(e, &subject, "cannot write"))?;
        let file = out.into_std().await;
        let subj = subject.clone();
        let if_none_match = opts.if_none_match;
        blocking(subject, move || {
            let subject = subj;
            refuse_existing(&final_path, if_none_match, &subject)?;
            if let Some(t) = mtime {
                file.set_modified(t)
                    .map_err(|e| io_error(e, &subject, "cannot set the modification time"))?;
            }
            file.sync_all()
                .map_err(|e| io_error(e, &subject, "cannot flush the file"))?;
            drop(file);
            fs::rename(&tmp, &final_path)
                .map_err(|e| io_error(e, &subject, "cannot rename into place"))?;
            sync_dir(&parent);
            if let Some(name) = final_path.file_name().and_then(|n| n.to_str()) {
                remove_leftovers(&parent, name);
            }
            Ok(())
        })
        .await?;
        guard.disarm();
        Ok(answer(md5_etag(&hash.finalize().into())))
    }

    async fn create_multipart(&self, key: &str, opts: &PutOptions) -> Result<String> {
        let subject = self.subject(key);
        let rel = self.map(key)?;
        let root = self.root.clone();
        let mtime = opts
            .attrs
            .metadata
            .get(MTIME_META)
            .cloned()
            .unwrap_or_default();
        blocking(subject.clone(), move || {
            let parent = prepare_dirs(&root, &rel, false, &subject)?;
            check_final(&root.join(&rel), &rel, &subject)?;
            let id = uuid::Uuid::new_v4().simple().to_string();
            let name = file_name(&rel);
            // The "meta" file marks the upload as open and keeps the mtime for complete.
            let meta = parent.join(format!("{}meta", part_prefix(name, &id)));
            fs::write(&meta, mtime.as_bytes())
                .map_err(|e| io_error(e, &subject, "cannot start the upload"))?;
            Ok(id)
        })
        .await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
        content_md5: Option<&[u8; 16]>,
        checksum: Option<&Checksum>,
    ) -> Result<CompletedPart> {
        let subject = self.subject(key);
        let rel = self.map(key)?;
        let root = self.root.clone();
        let id = upload_id.to_string();
        let digest = checked_md5(&body, content_md5, &subject)?;
        checked_checksum(&body, checksum, &subject)?;
        blocking(subject.clone(), move || {
            let (parent, prefix) = open_upload(&root, &rel, &id, &subject)?;
            if !(1..=10_000).contains(&number) {
                return Err(Error::new(
                    ErrorKind::Invalid,
                    "InvalidPartNumber",
                    &subject,
                    format!("part number {number} is not in 1..=10000"),
                ));
            }
            let part = parent.join(format!("{prefix}{number}"));
            let tmp = parent.join(format!(
                "{prefix}{number}.{}",
                uuid::Uuid::new_v4().simple()
            ));
            let res = (|| {
                let mut f = File::create(&tmp)?;
                f.write_all(&body)?;
                f.sync_all()?;
                fs::rename(&tmp, &part)
            })();
            if let Err(e) = res {
                let _ = fs::remove_file(&tmp);
                return Err(io_error(
                    e,
                    &subject,
                    &format!("cannot write part {number}"),
                ));
            }
            Ok(CompletedPart {
                number,
                etag: md5_etag(&digest),
                checksum: None,
            })
        })
        .await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        finish: &Finish,
    ) -> Result<Written> {
        let subject = self.subject(key);
        let rel = self.map(key)?;
        let root = self.root.clone();
        let id = upload_id.to_string();
        let parts = parts.to_vec();
        let if_none_match = finish.if_none_match;
        blocking(subject.clone(), move || {
            let (parent, prefix) = open_upload(&root, &rel, &id, &subject)?;
            if parts.is_empty() || parts.windows(2).any(|w| w[0].number >= w[1].number) {
                return Err(Error::new(
                    ErrorKind::Invalid,
                    "InvalidPartOrder",
                    &subject,
                    "parts must be listed once each, in ascending order",
                ));
            }
            let mtime = fs::read_to_string(parent.join(format!("{prefix}meta")))
                .ok()
                .and_then(|s| parse_mtime(&s));
            let final_path = root.join(&rel);
            check_final(&final_path, &rel, &subject)?;
            refuse_existing(&final_path, if_none_match, &subject)?;
            let mut digests = Vec::with_capacity(parts.len());
            write_atomically(&parent, &final_path, mtime, &subject, |out| {
                let mut buf = vec![0u8; CHUNK];
                for p in &parts {
                    let path = parent.join(format!("{prefix}{}", p.number));
                    let mut f = File::open(&path).map_err(|e| {
                        Error::new(
                            ErrorKind::Invalid,
                            "InvalidPart",
                            &subject,
                            format!("part {} was not uploaded: {e}", p.number),
                        )
                    })?;
                    let mut h = Md5::new();
                    loop {
                        let n = f
                            .read(&mut buf)
                            .map_err(|e| io_error(e, &subject, "cannot read a part"))?;
                        if n == 0 {
                            break;
                        }
                        h.update(&buf[..n]);
                        out.write_all(&buf[..n])
                            .map_err(|e| io_error(e, &subject, "cannot write"))?;
                    }
                    let d: [u8; 16] = h.finalize().into();
                    if !etag_eq(&md5_etag(&d), &p.etag) {
                        return Err(Error::new(
                            ErrorKind::Invalid,
                            "InvalidPart",
                            &subject,
                            format!(
                                "part {} has ETag {}, not {}",
                                p.number,
                                md5_etag(&d),
                                p.etag
                            ),
                        ));
                    }
                    digests.push(d);
                }
                Ok(())
            })?;
            remove_upload_files(&parent, &prefix);
            Ok(answer(multipart_etag(&digests)))
        })
        .await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        let subject = self.subject(key);
        if !valid_upload_id(upload_id) {
            return Ok(());
        }
        let rel = self.map(key)?;
        let root = self.root.clone();
        let id = upload_id.to_string();
        blocking(subject.clone(), move || {
            let parent_rel = rel.parent().unwrap_or(Path::new(""));
            let parent = if parent_rel.as_os_str().is_empty() {
                root.clone()
            } else {
                match lookup(&root, parent_rel, &subject)? {
                    Some(m) if m.is_dir() => root.join(parent_rel),
                    _ => return Ok(()),
                }
            };
            remove_upload_files(&parent, &part_prefix(file_name(&rel), &id));
            Ok(())
        })
        .await
    }

    /// Remove the file if its size and modification time (to the
    /// nanosecond) are still the listed ones. A filesystem has no
    /// conditional unlink: the check is made just before the removal, so a
    /// write renamed into place between the two is lost (`conditional:
    /// false`; the window is one `lstat` long). Directories left empty stay
    /// (the store never removes directories; listings do not show them).
    async fn delete_if(&self, key: &str, cond: &DeleteIf) -> Result<Deletion> {
        let rel = match self.map(key) {
            Ok(rel) => rel,
            Err(e) if e.class == "UnmappableKey" => return Ok(Deletion::Gone),
            Err(e) => return Err(e),
        };
        let root = self.root.clone();
        let subject = self.subject(key);
        let cond = cond.clone();
        blocking(subject.clone(), move || {
            let Some(meta) = lookup(&root, &rel, &subject)?.filter(|m| m.is_file()) else {
                return Ok(Deletion::Gone);
            };
            let mtime = meta.modified().ok().map(to_chrono);
            if let Some(what) = cond.differences(meta.len(), None, mtime, false) {
                return Ok(Deletion::Changed(what));
            }
            match fs::remove_file(root.join(&rel)) {
                Ok(()) => {
                    if let Some(parent) = root.join(&rel).parent() {
                        sync_dir(parent);
                    }
                    Ok(Deletion::Deleted { conditional: false })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Deletion::Gone),
                Err(e) => Err(io_error(e, &subject, "cannot remove the file")),
            }
        })
        .await
    }

    async fn get_tags(&self, _key: &str) -> Result<Option<Vec<(String, String)>>> {
        Ok(None)
    }

    async fn put_tags(&self, _key: &str, _tags: &[(String, String)]) -> Result<()> {
        Ok(())
    }
}

/// A streamed write's temp file, removed when dropped before [`TempFile::disarm`]
/// (a failed or cancelled [`ObjectStore::put_stream`] leaves nothing behind).
struct TempFile(Option<PathBuf>);

impl TempFile {
    /// The file was renamed into place: nothing to remove.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

fn file_name(rel: &Path) -> &str {
    rel.file_name().and_then(|n| n.to_str()).unwrap_or("object")
}

/// The parent directory and part-file prefix of an open upload, or NoSuchUpload.
fn open_upload(root: &Path, rel: &Path, id: &str, subject: &str) -> Result<(PathBuf, String)> {
    let no_such = || {
        Error::new(
            ErrorKind::NotFound,
            "NoSuchUpload",
            subject,
            format!("no multipart upload `{id}` in progress"),
        )
    };
    if !valid_upload_id(id) {
        return Err(no_such());
    }
    let parent = prepare_dirs(root, rel, false, subject)?;
    let prefix = part_prefix(file_name(rel), id);
    match fs::symlink_metadata(parent.join(format!("{prefix}meta"))) {
        Ok(m) if m.is_file() => Ok((parent, prefix)),
        _ => Err(no_such()),
    }
}

/// After a write of `final_name` succeeded, remove what earlier writers of the
/// same name left behind when they were killed (temp files, part files of
/// uploads that never completed): the object they were writing is now in place.
/// A writer of the same name still running at this moment (a duplicate delivery)
/// loses its temp files, fails and retries onto the same content; names longer
/// than the kept prefix share it, with the same harmless effect.
fn remove_leftovers(parent: &Path, final_name: &str) {
    let base = truncated(final_name);
    let tmp = format!(".{base}{TMP_MARK}");
    let part = format!(".{base}{PART_MARK}");
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(&tmp) || name.starts_with(&part) {
            let _ = fs::remove_file(e.path());
        }
    }
}

fn remove_upload_files(parent: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(prefix))
        {
            if let Err(err) = fs::remove_file(e.path()) {
                tracing::warn!(path = %e.path().display(), error = %err, "cannot remove an upload part");
            }
        }
    }
}

// ---------------------------------------------------------------- listing

#[derive(Debug, Clone, PartialEq, Eq)]
struct WalkerKey {
    prefix: String,
    delimiter: Option<String>,
    token: String,
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    is_dir: bool,
}

#[derive(Debug)]
struct Level {
    /// Key prefix of this directory: `""` for the root, else `a/b/`.
    key_prefix: String,
    entries: Vec<Entry>,
    next: usize,
}

#[derive(Debug)]
enum Item {
    Object(Listed),
    Prefix(String),
}

/// A depth-first walk in key byte order. Sorting each directory by name, with
/// `/` appended to directory names, makes the depth-first order the byte order
/// of the full keys (`a.txt` < `a/…` < `a0`). Memory: one sorted directory per level.
#[derive(Debug)]
struct Walker {
    prefix: String,
    delimiter: Option<String>,
    /// Only keys strictly after this (start_after or the continuation token).
    after: Option<String>,
    /// Keys under the last common prefix returned are skipped.
    skip: Option<String>,
    stack: Vec<Level>,
    started: bool,
    pending: Option<Item>,
}

impl Walker {
    fn new(prefix: String, delimiter: Option<String>, after: Option<String>) -> Self {
        Walker {
            prefix,
            delimiter,
            after,
            skip: None,
            stack: Vec::new(),
            started: false,
            pending: None,
        }
    }

    fn next_item(&mut self, root: &Path, subject: &str) -> Result<Option<Item>> {
        if let Some(item) = self.pending.take() {
            return Ok(Some(item));
        }
        if !self.started {
            self.started = true;
            let entries = read_level(root, subject)?;
            self.stack.push(Level {
                key_prefix: String::new(),
                entries,
                next: 0,
            });
        }
        loop {
            let Some(level) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(entry) = level.entries.get(level.next).cloned() else {
                self.stack.pop();
                continue;
            };
            level.next += 1;
            let mut path_key = format!("{}{}", level.key_prefix, entry.name);
            if entry.is_dir {
                path_key.push('/');
                if !(path_key.starts_with(&self.prefix) || self.prefix.starts_with(&path_key)) {
                    continue;
                }
                if self
                    .skip
                    .as_deref()
                    .is_some_and(|s| path_key.starts_with(s))
                {
                    continue;
                }
                if let Some(a) = &self.after {
                    // Every key under `path_key` sorts before `a`: nothing to see.
                    if !a.starts_with(&path_key) && a.as_str() > path_key.as_str() {
                        continue;
                    }
                }
                let entries = match read_level(&root.join(&path_key), subject) {
                    Ok(e) => e,
                    Err(e) if e.kind == ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                self.stack.push(Level {
                    key_prefix: path_key,
                    entries,
                    next: 0,
                });
                continue;
            }
            let key = path_key;
            if !key.starts_with(&self.prefix)
                || self.after.as_deref().is_some_and(|a| key.as_str() <= a)
                || self.skip.as_deref().is_some_and(|s| key.starts_with(s))
            {
                continue;
            }
            if let Some(d) = &self.delimiter {
                if let Some(i) = key[self.prefix.len()..].find(d.as_str()) {
                    let cp = key[..self.prefix.len() + i + d.len()].to_string();
                    self.skip = Some(cp.clone());
                    // Like S3, everything returned sorts after start_after/the
                    // token: resuming after a common prefix skips it.
                    if self.after.as_deref().is_some_and(|a| cp.as_str() <= a) {
                        continue;
                    }
                    return Ok(Some(Item::Prefix(cp)));
                }
            }
            let meta = match fs::symlink_metadata(root.join(&key)) {
                Ok(m) if m.is_file() => m,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(e, subject, &format!("cannot inspect `{key}`"))),
            };
            return Ok(Some(Item::Object(Listed {
                key,
                size: meta.len(),
                last_modified: meta.modified().ok().map(to_chrono),
                ..Listed::default()
            })));
        }
    }
}

/// One directory's listable entries, sorted so a depth-first walk is in key order.
/// Skipped: symbolic links, special files, non-UTF-8 names, our temp files.
fn read_level(dir: &Path, subject: &str) -> Result<Vec<Entry>> {
    let what = || format!("cannot list `{}`", dir.display());
    let mut out = Vec::new();
    for de in fs::read_dir(dir).map_err(|e| io_error(e, subject, &what()))? {
        let de = de.map_err(|e| io_error(e, subject, &what()))?;
        let ft = match de.file_type() {
            Ok(ft) => ft,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(e, subject, &what())),
        };
        if ft.is_symlink() {
            tracing::debug!(path = %de.path().display(), "skipping a symbolic link");
            continue;
        }
        if !ft.is_dir() && !ft.is_file() {
            continue;
        }
        let name = match de.file_name().into_string() {
            Ok(n) => n,
            Err(n) => {
                tracing::warn!(dir = %dir.display(), name = ?n, "skipping a name that is not UTF-8 (S3 keys are UTF-8)");
                continue;
            }
        };
        if is_internal_name(&name) {
            continue;
        }
        out.push(Entry {
            name,
            is_dir: ft.is_dir(),
        });
    }
    out.sort_by(|a, b| sort_bytes(a).cmp(sort_bytes(b)));
    Ok(out)
}

fn sort_bytes(e: &Entry) -> impl Iterator<Item = u8> + '_ {
    let slash: &[u8] = if e.is_dir { b"/" } else { b"" };
    e.name.bytes().chain(slash.iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_mapping_table() {
        assert_eq!(
            key_to_relpath("a/b c/d.txt").unwrap(),
            PathBuf::from("a/b c/d.txt")
        );
        assert_eq!(key_to_relpath("été+%?#").unwrap(), PathBuf::from("été+%?#"));
        assert_eq!(
            key_to_relpath(".hidden/..x").unwrap(),
            PathBuf::from(".hidden/..x")
        );
        let long = "x".repeat(256);
        for (key, reason) in [
            ("", "empty"),
            ("/abs", "starts with `/`"),
            ("a//b", "`//`"),
            ("a/", "ends with `/`"),
            ("../x", "`..`"),
            ("a/../../x", "`..`"),
            ("./x", "`.`"),
            ("a/./x", "`.`"),
            ("a\0b", "NUL"),
            (long.as_str(), "255-byte"),
            ("d/.f.s3mig-tmp-123", "temporary"),
        ] {
            let e = key_to_relpath(key).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Invalid, "{key:?}");
            assert_eq!(e.class, "UnmappableKey", "{key:?}");
            assert!(e.message.contains(reason), "{key:?}: {}", e.message);
        }
        assert!(key_to_relpath(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn mtime_round_trips() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 120_000_000);
        assert_eq!(format_mtime(t), "1700000000.12");
        assert_eq!(parse_mtime("1700000000.12"), Some(t));
        assert_eq!(
            parse_mtime("1700000000"),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(parse_mtime("-1"), None);
        assert_eq!(parse_mtime("1.x"), None);
    }

    #[test]
    fn directory_entries_sort_in_key_order() {
        let mut v = [
            Entry {
                name: "a0".into(),
                is_dir: false,
            },
            Entry {
                name: "a".into(),
                is_dir: true,
            },
            Entry {
                name: "a.txt".into(),
                is_dir: false,
            },
            Entry {
                name: "a-b".into(),
                is_dir: true,
            },
        ];
        v.sort_by(|a, b| sort_bytes(a).cmp(sort_bytes(b)));
        let names: Vec<_> = v.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a-b", "a.txt", "a", "a0"]);
    }

    #[test]
    fn temp_names_stay_under_name_max() {
        let name = "é".repeat(127);
        assert!(temp_name(&name).len() <= NAME_MAX);
        assert!(is_internal_name(&temp_name(&name)));
        assert!(is_internal_name(&format!(
            "{}7",
            part_prefix(&name, &"0".repeat(32))
        )));
    }

    mod model {
        //! The directory listing against a reference model of S3's semantics.
        use super::super::*;
        use proptest::prelude::*;

        /// What S3 returns for the sorted `keys`: (is_prefix, key or common prefix).
        fn model(
            keys: &[String],
            prefix: &str,
            delim: Option<&str>,
            after: Option<&str>,
        ) -> Vec<(bool, String)> {
            let mut out: Vec<(bool, String)> = Vec::new();
            for k in keys.iter().filter(|k| k.starts_with(prefix)) {
                let item = match delim.and_then(|d| k[prefix.len()..].find(d).map(|i| (i, d))) {
                    Some((i, d)) => (true, k[..prefix.len() + i + d.len()].to_string()),
                    None => (false, k.clone()),
                };
                if after.is_some_and(|a| item.1.as_str() <= a) || out.last() == Some(&item) {
                    continue;
                }
                out.push(item);
            }
            out
        }

        fn key_strategy() -> impl Strategy<Value = Vec<String>> {
            let comp = prop::sample::select(vec!["a", "b", "a.b", "a-", "a0", "é", "a b", "+"]);
            let key = prop::collection::vec(comp, 1..4).prop_map(|c| c.join("/"));
            prop::collection::vec(key, 1..25).prop_map(|mut keys| {
                keys.sort();
                keys.dedup();
                // A key cannot be both a file and a directory.
                let all = keys.clone();
                keys.retain(|k| !all.iter().any(|o| o.starts_with(&format!("{k}/"))));
                keys
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]
            #[test]
            fn listing_matches_the_model(
                keys in key_strategy(),
                prefix in prop::sample::select(vec!["", "a", "a/", "a.b/", "b/a", "é"]),
                delim in prop::sample::select(vec![None, Some("/"), Some("b")]),
                after in prop::sample::select(vec![None, Some("a"), Some("a/"), Some("a/b"), Some("a0"), Some("b/")]),
                max in 1i32..5,
            ) {
                let tmp = tempfile::tempdir().unwrap();
                for k in &keys {
                    let p = tmp.path().join(k);
                    fs::create_dir_all(p.parent().unwrap()).unwrap();
                    fs::write(&p, k.as_bytes()).unwrap();
                }
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let got = rt.block_on(async {
                    let store = DirStore::open_existing(tmp.path()).unwrap();
                    let mut req = ListRequest {
                        prefix: prefix.to_string(),
                        delimiter: delim.map(str::to_string),
                        start_after: after.map(str::to_string),
                        max_keys: Some(max),
                        ..ListRequest::default()
                    };
                    let mut got = Vec::new();
                    for page_no in 0.. {
                        // Every other page from a fresh store: the token alone must resume.
                        let page = if page_no % 2 == 1 {
                            DirStore::open_existing(tmp.path()).unwrap().list_page(&req).await.unwrap()
                        } else {
                            store.list_page(&req).await.unwrap()
                        };
                        prop_assert!(page.objects.len() + page.prefixes.len() <= max as usize);
                        let mut items: Vec<(bool, String)> = page.objects.iter().map(|o| (false, o.key.clone()))
                            .chain(page.prefixes.iter().map(|p| (true, p.clone())))
                            .collect();
                        items.sort_by(|a, b| a.1.cmp(&b.1));
                        got.extend(items);
                        match page.next {
                            Some(t) => req.continuation = Some(t),
                            None => break,
                        }
                    }
                    Ok(got)
                })?;
                prop_assert_eq!(got, model(&keys, prefix, delim, after));
            }
        }
    }
}
