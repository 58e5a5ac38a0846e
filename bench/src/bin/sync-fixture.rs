//! Fixture for the sync benchmark (bench/sync.sh): a source and a target
//! directory of N keys each, as after a first pass whose source then changed,
//! with known counts of every class a `--sync` diff reports.
//!
//! Layout: `<dir>/src` and `<dir>/tgt`, keys `dDDDD/fIIIIIIII.dat`, 1,000
//! per directory. In every 100 keys: slot 0 is new (source only) and has a
//! target-only twin `dDDDD/fIIIIIIII.old` (so both sides hold N keys), slot 1
//! changed with the same size (new content), slot 2 changed size (one byte
//! more on the source), the other 97 unchanged. Files are sparse (sizes up
//! to 4 KiB without data blocks, so 2 × 1,000,000 files fit any disk); the
//! same-size changes carry real bytes. Modification times are distinct per
//! key; a target keeps its source's time (as a copy that preserves mtimes
//! does: ours and rclone's), and a changed source is 30 days newer than its
//! target, so nothing is ever "target newer".
//!
//! `<dir>/expected.json` is written last: the counts and bytes per class.
//! A directory that has it with the same N is reused as is.

use std::fs::{self, File, FileTimes};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Fixture directory (holds src/, tgt/, expected.json).
    #[arg(long)]
    dir: PathBuf,
    /// Keys on each side.
    #[arg(long)]
    keys: u64,
    /// Writer threads.
    #[arg(long, default_value_t = 4)]
    threads: u64,
}

const PER_DIR: u64 = 1000;
const SLOTS: u64 = 100;
/// Layout version: bump when the fixture changes so old ones are rebuilt.
const VERSION: u32 = 1;
/// 2026-01-01T00:00:00Z: the first pass's modification times start here.
const T0: u64 = 1_767_225_600;
/// How much newer a changed source is than its target.
const LATER: Duration = Duration::from_secs(30 * 86_400);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    New,
    SameSize,
    Size,
    Unchanged,
}

fn class(i: u64) -> Class {
    match i % SLOTS {
        0 => Class::New,
        1 => Class::SameSize,
        2 => Class::Size,
        _ => Class::Unchanged,
    }
}

/// A key's size on the target (and source, unless its size changed): 1..4096.
fn size(i: u64) -> u64 {
    1 + (i.wrapping_mul(2_654_435_761) >> 7) % 4095
}

fn mtime(i: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0) + Duration::from_millis(i)
}

fn key(i: u64, ext: &str) -> String {
    format!("d{:04}/f{i:08}.{ext}", i / PER_DIR)
}

/// Files and bytes of one class.
#[derive(Default, Clone, Copy)]
struct Count {
    files: u64,
    bytes: u64,
}

impl Count {
    fn add(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
    }
}

#[derive(Default)]
struct Expected {
    new: Count,
    same_size: Count,
    size: Count,
    unchanged: Count,
    target_only: Count,
    source: Count,
    target: Count,
}

fn expected(n: u64) -> Expected {
    let mut e = Expected::default();
    for i in 0..n {
        let s = size(i);
        match class(i) {
            Class::New => {
                e.new.add(s);
                e.target_only.add(s);
            }
            Class::SameSize => e.same_size.add(s),
            Class::Size => e.size.add(s + 1),
            Class::Unchanged => e.unchanged.add(s),
        }
        e.source
            .add(if class(i) == Class::Size { s + 1 } else { s });
        e.target.add(s);
    }
    e
}

fn json(n: u64, e: &Expected) -> String {
    let c = |c: Count| format!("{{\"files\": {}, \"bytes\": {}}}", c.files, c.bytes);
    format!(
        "{{\"version\": {VERSION}, \"keys\": {n}, \"new\": {}, \"changed_same_size\": {}, \
         \"changed_size\": {}, \"unchanged\": {}, \"target_only\": {}, \"source\": {}, \
         \"target\": {}}}\n",
        c(e.new),
        c(e.same_size),
        c(e.size),
        c(e.unchanged),
        c(e.target_only),
        c(e.source),
        c(e.target),
    )
}

/// Create `root/key` with `len` bytes (sparse unless `content`) and `mtime`.
fn write(
    root: &Path,
    key: &str,
    len: u64,
    content: Option<&[u8]>,
    mtime: SystemTime,
) -> anyhow::Result<()> {
    let path = root.join(key);
    let mut f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    if let Some(b) = content {
        f.write_all(b)?;
    }
    f.set_len(len)?;
    f.set_times(FileTimes::new().set_modified(mtime))?;
    Ok(())
}

/// Write directory `d` of both sides.
fn write_dir(src: &Path, tgt: &Path, d: u64, n: u64) -> anyhow::Result<()> {
    let name = format!("d{d:04}");
    fs::create_dir_all(src.join(&name))?;
    fs::create_dir_all(tgt.join(&name))?;
    for i in d * PER_DIR..((d + 1) * PER_DIR).min(n) {
        let (s, t) = (size(i), mtime(i));
        match class(i) {
            Class::New => {
                write(src, &key(i, "dat"), s, None, t)?;
                write(tgt, &key(i, "old"), s, None, t)?;
            }
            Class::SameSize => {
                let body = format!("changed {i}\n");
                let body = &body.as_bytes()[..body.len().min(s as usize)];
                write(src, &key(i, "dat"), s, Some(body), t + LATER)?;
                write(tgt, &key(i, "dat"), s, None, t)?;
            }
            Class::Size => {
                write(src, &key(i, "dat"), s + 1, None, t + LATER)?;
                write(tgt, &key(i, "dat"), s, None, t)?;
            }
            Class::Unchanged => {
                write(src, &key(i, "dat"), s, None, t)?;
                write(tgt, &key(i, "dat"), s, None, t)?;
            }
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let n = a.keys;
    if n == 0 {
        bail!("--keys must be at least 1");
    }
    let e = expected(n);
    let want = json(n, &e);
    let marker = a.dir.join("expected.json");
    if fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str()) {
        eprintln!("fixture {} ({n} keys) already there", a.dir.display());
        return Ok(());
    }
    let (src, tgt) = (a.dir.join("src"), a.dir.join("tgt"));
    for d in [&src, &tgt] {
        if d.exists() {
            fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
    }
    let started = Instant::now();
    let dirs = n.div_ceil(PER_DIR);
    let threads = a.threads.max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (src, tgt) = (&src, &tgt);
                scope.spawn(move || -> anyhow::Result<()> {
                    for d in (t..dirs).step_by(threads as usize) {
                        write_dir(src, tgt, d, n)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("writer thread panicked"))
    })?;
    fs::write(&marker, &want).with_context(|| format!("writing {}", marker.display()))?;
    eprintln!(
        "fixture {} ({n} keys a side) written in {:.1} s",
        a.dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
