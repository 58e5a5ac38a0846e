//! From `run` flags to a validated plan: which source (parallel listing, S3
//! Inventory, CSV manifest), which prefix and target prefix, which filters.
//! Everything that can be checked before sending is checked here, and each
//! error names the flag or file at fault.

use std::path::Path;
use std::sync::Arc;

use common::clients::S3Connector;
use common::config::Config;
use common::listing::csv_manifest::CsvManifest;
use common::listing::diff::Rule;
use common::listing::filter::parse_size;
use common::listing::inventory::Inventory;
use common::listing::pair::PrefixMap;
use common::listing::parallel::ListOptions;
use common::listing::{FilterSpec, KeyFilter, KeyMap, OwnerRule, Row, Selector};
use common::location::Location;
use common::store::open::open_store;
use common::store::ObjectStore;
use common::window::DateWindow;
use common::{Error, Result};

use crate::cli::RunArgs;

/// The source of keys.
#[derive(Debug, Clone)]
pub enum SourceKind {
    /// Parallel ListObjectsV2 (or directory walk).
    List {
        store: Arc<dyn ObjectStore>,
        opts: ListOptions,
        source: Arc<str>,
    },
    /// An S3 Inventory; every key comes from `source`.
    Inventory {
        inventory: Box<Inventory>,
        source: Arc<str>,
    },
    /// A CSV manifest; rows name their buckets (`only_bucket` when `-s` is given).
    Csv {
        manifest: CsvManifest,
        only_bucket: Option<String>,
    },
}

impl SourceKind {
    /// `list`, `inventory` or `csv-manifest`, for the summary.
    pub fn name(&self) -> &'static str {
        match self {
            SourceKind::List { .. } => "list",
            SourceKind::Inventory { .. } => "inventory",
            SourceKind::Csv { .. } => "csv-manifest",
        }
    }
}

/// A checked plan for `run`.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kind: SourceKind,
    pub selector: Arc<Selector>,
    /// What is enumerated, for people (`s3://bucket/prefix`, manifest path).
    pub describe: String,
    /// Message `target`: the target location without prefix.
    pub target: String,
    /// The full target, for people and the job record: `target` plus the
    /// target prefix (`s3://dst/new-prefix/`, `file:///dst/old/`).
    pub target_full: String,
    /// The source prefix (`-p`) that `target_prefix` replaces in target keys.
    pub prefix: String,
    /// The target key prefix (`None`: target keys are the source keys).
    pub target_prefix: Option<String>,
    /// `--sync`: the target is listed beside the source.
    pub sync: Option<SyncPlan>,
}

/// What `--sync` needs besides the source listing.
#[derive(Debug, Clone)]
pub struct SyncPlan {
    /// The target, listed with the source's ranges.
    pub target: Arc<dyn ObjectStore>,
    pub map: PrefixMap,
    pub rule: Rule,
    /// `--delete`: target-only keys are sent as deletes.
    pub delete: bool,
    /// `--max-delete`.
    pub max_delete: Option<u64>,
    /// `--target-manifest-path`: the target side read from this inventory
    /// (sorted on disk) instead of listed.
    pub target_inventory: Option<Box<Inventory>>,
}

/// `--sync`: open the target for listing, or its inventory
/// (`--target-manifest-path`, required with an inventory source). Both
/// sides must give sizes: the diff compares them.
async fn sync_plan(
    cfg: &Config,
    args: &RunArgs,
    ends: &Ends,
    kind: &SourceKind,
    filter: &KeyFilter,
) -> Result<Option<SyncPlan>> {
    if !args.sync {
        return Ok(None);
    }
    if let SourceKind::Inventory { inventory, .. } = kind {
        if args.target_manifest_path.is_none() {
            return Err(Error::input(
                "--sync",
                "with an inventory source (-m) the target side must be an inventory too: give --target-manifest-path",
            ));
        }
        no_sizes(inventory)?;
    }
    let target_inventory = match &args.target_manifest_path {
        None => None,
        Some(m) => {
            let inv = open_inventory(cfg, m, "--target-manifest-path").await?;
            no_sizes(&inv)?;
            if inv.schema.etag.is_none() {
                tracing::warn!(manifest = %inv.manifest_name, "the target inventory has no ETag column: same-size keys are judged by time (see docs/sync.md)");
            }
            let what = format!("the target inventory {}", inv.manifest_name);
            filter.require(&what, true, inv.schema.last_modified.is_some(), false)?;
            Some(Box::new(inv))
        }
    };
    if args.delete {
        // An inventory source without -s names its bucket in the manifest.
        let from_manifest = match (&ends.source, kind) {
            (None, SourceKind::Inventory { source, .. }) => {
                Some(Location::parse(source, "--manifest-path")?)
            }
            _ => None,
        };
        ends.refuse_delete_over_source(from_manifest.as_ref())?;
    }
    // A directory target that does not exist yet is created, as a run
    // without --sync does (the first pass of a cutover may be a --sync run).
    let target = open_store(&ends.target, &S3Connector::new(&cfg.aws.copy), true).await?;
    Ok(Some(SyncPlan {
        target,
        map: PrefixMap::new(&ends.prefix, ends.target_prefix.as_deref()),
        rule: Rule {
            compare: args.compare.unwrap_or_default(),
            overwrite_newer: args.overwrite_newer,
        },
        delete: args.delete,
        max_delete: args.max_delete,
        target_inventory,
    }))
}

/// An inventory without a Size column cannot be diffed.
fn no_sizes(inv: &Inventory) -> Result<()> {
    match inv.schema.size {
        Some(_) => Ok(()),
        None => Err(Error::input(
            &inv.manifest_name,
            "the inventory has no Size column, which --sync compares (add Size to the inventory's fields)",
        )),
    }
}

/// Resolve a prefix given both in a location and by a flag: they must agree.
fn agree(in_location: &str, flag: Option<&str>, flag_name: &str, loc_flag: &str) -> Result<String> {
    match flag {
        Some(f) if !in_location.is_empty() && f != in_location => Err(Error::input(
            flag_name,
            format!("{flag_name} `{f}` differs from the prefix `{in_location}` given in {loc_flag}: give it once"),
        )),
        Some(f) => Ok(f.to_string()),
        None => Ok(in_location.to_string()),
    }
}

/// The filter flags as a spec (sizes and dates parsed; errors name the flag).
pub fn filter_spec(args: &RunArgs, prefix: &str) -> Result<FilterSpec> {
    Ok(FilterSpec {
        prefix: prefix.to_string(),
        start_after: args.start_after.clone().filter(|s| !s.is_empty()),
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        min_size: args
            .min_size
            .as_deref()
            .map(|s| parse_size(s, "--min-size"))
            .transpose()?,
        max_size: args
            .max_size
            .as_deref()
            .map(|s| parse_size(s, "--max-size"))
            .transpose()?,
        window: DateWindow::parse(
            args.modified_since.as_deref(),
            args.not_modified_since.as_deref(),
        )?,
        owner: match (&args.owner, &args.no_owner) {
            (Some(o), _) => Some(OwnerRule::Is(o.clone())),
            (None, Some(o)) => Some(OwnerRule::IsNot(o.clone())),
            (None, None) => None,
        },
    })
}

/// Check the flags and open the source. Reads manifests (not data files).
pub async fn plan(cfg: &Config, args: &RunArgs) -> Result<Plan> {
    let ends = Ends::parse(args)?;
    let filter = KeyFilter::new(filter_spec(args, &ends.prefix)?)?;
    if args.batch_num == Some(0) {
        return Err(Error::input("--batch-num", "must be at least 1"));
    }
    let resume_from = args
        .resume_from
        .as_deref()
        .map(|r| Row::parse(r, "--resume-from"))
        .transpose()?;
    let kind = if let Some(m) = &args.manifest_path {
        inventory_source(cfg, m, ends.source.as_ref(), &filter, resume_from).await?
    } else if let Some(c) = &args.csv_manifest {
        csv_source(cfg, c, ends.source.as_ref(), &filter, resume_from).await?
    } else {
        listing_source(cfg, args, &ends, &filter, resume_from).await?
    };
    let describe = match &kind {
        SourceKind::List { source, .. } => format!(
            "{source}{}{}",
            if ends.prefix.is_empty() { "" } else { "/" },
            ends.prefix
        ),
        SourceKind::Inventory { inventory, .. } => inventory.manifest_name.clone(),
        SourceKind::Csv { manifest, .. } => manifest.name.clone(),
    };
    let target_container = ends.target.container().to_string();
    ends.refuse_copy_onto_itself(&kind, &target_container)?;
    let target_full = match ends.target_prefix.as_deref() {
        Some(p) if !p.is_empty() => {
            format!("{}/{p}", target_container.trim_end_matches('/'))
        }
        _ => target_container.clone(),
    };
    let sync = sync_plan(cfg, args, &ends, &kind, &filter).await?;
    let (prefix, target_prefix) = (ends.prefix.clone(), ends.target_prefix.clone());
    let selector = Selector::new(filter, KeyMap::new(ends.prefix, ends.target_prefix));
    Ok(Plan {
        kind,
        selector: Arc::new(selector),
        describe,
        target: target_container,
        target_full,
        prefix,
        target_prefix,
        sync,
    })
}

/// Source and target as the flags give them, with the prefixes agreed
/// between `-s s3://b/p` and `--prefix` (and likewise for the target).
struct Ends {
    source: Option<Location>,
    target: Location,
    prefix: String,
    target_prefix: Option<String>,
}

impl Ends {
    fn parse(args: &RunArgs) -> Result<Ends> {
        let target_arg = args.target_bucket.as_deref().ok_or_else(|| {
            Error::input(
                "--target-bucket",
                "a target is required (-t BUCKET|s3://BUCKET/PREFIX|DIR)",
            )
        })?;
        let target = Location::parse(target_arg, "--target-bucket")?;
        let source = args
            .source_bucket
            .as_deref()
            .map(|s| Location::parse(s, "--source-bucket"))
            .transpose()?;
        let prefix = agree(
            source.as_ref().map_or("", |l| l.prefix()),
            args.prefix.as_deref(),
            "--prefix",
            "--source-bucket",
        )?;
        let target_prefix = if args.target_prefix.is_some() || !target.prefix().is_empty() {
            Some(agree(
                target.prefix(),
                args.target_prefix.as_deref(),
                "--target-prefix",
                "--target-bucket",
            )?)
        } else {
            None
        };
        Ok(Ends {
            source,
            target,
            prefix,
            target_prefix,
        })
    }

    /// `--delete` with target keys that are also source keys (one bucket or
    /// directory tree, one prefix inside the other): source objects would
    /// look target-only under their rewritten names and be deleted.
    fn refuse_delete_over_source(&self, manifest_source: Option<&Location>) -> Result<()> {
        let Some(source) = self.source.as_ref().or(manifest_source) else {
            return Ok(());
        };
        let tp = self.target_prefix.as_deref().unwrap_or(&self.prefix);
        let (s, t) = (span(source, &self.prefix), span(&self.target, tp));
        if s.starts_with(&t) || t.starts_with(&s) {
            return Err(Error::input(
                "--delete",
                format!("the target {t} and the source {s} share keys: deleting target-only keys would delete source objects; use a target outside the source"),
            ));
        }
        Ok(())
    }

    /// A listing or inventory whose keys would land on themselves is refused.
    fn refuse_copy_onto_itself(&self, kind: &SourceKind, target: &str) -> Result<()> {
        if let SourceKind::List { source, .. } | SourceKind::Inventory { source, .. } = kind {
            let rewrites = self
                .target_prefix
                .as_deref()
                .is_some_and(|t| t != self.prefix);
            if **source == *target && !rewrites {
                return Err(Error::input(
                    "--target-bucket",
                    format!("source and target are both {target} and keys are not rewritten: objects would be copied onto themselves (use --target-prefix)"),
                ));
            }
        }
        Ok(())
    }
}

/// Where a location's keys under `prefix` live, as a string that starts with
/// another's exactly when its keys are among the other's.
fn span(loc: &Location, prefix: &str) -> String {
    match loc {
        Location::S3 { bucket, .. } => format!("s3://{bucket}/{prefix}"),
        Location::Dir { root } => {
            let real = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
            let real = real.display().to_string();
            format!("file://{}/{prefix}", real.trim_end_matches('/'))
        }
    }
}

/// `-m/--manifest-path`: an S3 Inventory manifest, local or `s3://`.
async fn inventory_source(
    cfg: &Config,
    m: &str,
    source_loc: Option<&Location>,
    filter: &KeyFilter,
    resume_from: Option<Row>,
) -> Result<SourceKind> {
    let mut inventory = open_inventory(cfg, m, "--manifest-path").await?;
    if let Some(r) = resume_from {
        let files = inventory.manifest.files.len();
        if r.file as usize > files {
            return Err(Error::input(
                "--resume-from",
                format!("row {r}: the inventory has {files} data files"),
            ));
        }
    }
    inventory.resume_from = resume_from;
    let s = &inventory.schema;
    let what = format!("the inventory {}", inventory.manifest_name);
    filter.require(&what, s.size.is_some(), s.last_modified.is_some(), false)?;
    let source = match source_loc {
        Some(l) => l.container().to_string(),
        None => Location::parse(&inventory.manifest.source_bucket, &inventory.manifest_name)?
            .container()
            .to_string(),
    };
    Ok(SourceKind::Inventory {
        inventory: Box::new(inventory),
        source: Arc::from(source),
    })
}

/// Open an S3 Inventory manifest given by `flag`: `s3://` or local.
async fn open_inventory(cfg: &Config, m: &str, flag: &str) -> Result<Inventory> {
    if m.starts_with("s3://") {
        let loc = Location::parse(m, flag)?;
        let store = open_store(&loc, &S3Connector::new(&cfg.aws.inventory), false).await?;
        let bucket = loc.bucket().unwrap_or_default().to_string();
        return Inventory::open_s3(store, &bucket, loc.prefix()).await;
    }
    let path = Path::new(m);
    if !path.exists() {
        return Err(Error::input(m, format!("manifest not found ({flag})")));
    }
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || Inventory::open_local(&path))
        .await
        .map_err(|e| Error::input(m, e.to_string()))?
}

/// `--csv-manifest`: a CSV of bucket,key rows, local or `s3://`.
async fn csv_source(
    cfg: &Config,
    c: &str,
    source_loc: Option<&Location>,
    filter: &KeyFilter,
    resume_from: Option<Row>,
) -> Result<SourceKind> {
    filter.require("a CSV manifest", false, false, false)?;
    let mut manifest = if c.starts_with("s3://") {
        let loc = Location::parse(c, "--csv-manifest")?;
        if loc.prefix().is_empty() || loc.prefix().ends_with('/') {
            return Err(Error::input(
                "--csv-manifest",
                format!("`{c}` names no object (s3://bucket/key)"),
            ));
        }
        let store = open_store(&loc, &S3Connector::new(&cfg.aws.inventory), false).await?;
        CsvManifest::s3(store, loc.bucket().unwrap_or_default(), loc.prefix())
    } else {
        if !Path::new(c).is_file() {
            return Err(Error::input(c, "CSV manifest not found (--csv-manifest)"));
        }
        CsvManifest::local(c)
    };
    if let Some(r) = resume_from.filter(|r| r.file != 1) {
        return Err(Error::input(
            "--resume-from",
            format!("row {r}: a CSV manifest is one file, its rows are 1:LINE"),
        ));
    }
    manifest.resume_from = resume_from;
    let only_bucket = match source_loc {
        None => None,
        Some(Location::S3 { bucket, .. }) => Some(bucket.clone()),
        Some(Location::Dir { .. }) => {
            return Err(Error::input(
                "--source-bucket",
                "a CSV manifest names buckets: -s must be a bucket (or left out)",
            ))
        }
    };
    Ok(SourceKind::Csv {
        manifest,
        only_bucket,
    })
}

/// `-s`: a parallel listing of a bucket or directory.
async fn listing_source(
    cfg: &Config,
    args: &RunArgs,
    ends: &Ends,
    filter: &KeyFilter,
    resume_from: Option<Row>,
) -> Result<SourceKind> {
    if resume_from.is_some() {
        return Err(Error::input(
            "--resume-from",
            "rows are for -m/--manifest-path and --csv-manifest; a listing resumes with --start-after",
        ));
    }
    let Some(src) = &ends.source else {
        return Err(Error::input(
            "--source-bucket",
            "a source is required: -s BUCKET (ListObjectsV2), -m MANIFEST (S3 Inventory) or --csv-manifest PATH",
        ));
    };
    if let Location::Dir { .. } = src {
        filter.require(&format!("the directory {src}"), true, true, false)?;
    }
    let store = open_store(src, &S3Connector::new(&cfg.aws.copy), false).await?;
    let opts = ListOptions {
        prefix: ends.prefix.clone(),
        start_after: filter.spec().start_after.clone(),
        depth: args.list_depth,
        concurrency: args.list_concurrency.max(1),
        page_size: args.list_page_size,
        split_after_pages: args.split_after_pages.max(1),
        fanout: args.split_fanout.max(1),
        fetch_owner: filter.needs_owner(),
        ..ListOptions::default()
    };
    Ok(SourceKind::List {
        store,
        opts,
        source: Arc::from(src.container().to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut RunArgs)) -> RunArgs {
        let mut a = RunArgs {
            target_bucket: Some("dst".into()),
            list_concurrency: 4,
            list_depth: 2,
            send_concurrency: 2,
            split_after_pages: 2,
            split_fanout: 4,
            ..RunArgs::default()
        };
        f(&mut a);
        a
    }

    async fn plan_err(a: RunArgs) -> String {
        plan(&Config::default(), &a).await.unwrap_err().to_string()
    }

    #[tokio::test]
    async fn flags_are_checked_before_anything_is_read() {
        let e = plan_err(args(|a| a.target_bucket = None)).await;
        assert!(e.contains("--target-bucket"), "{e}");
        let e = plan_err(args(|_| {})).await;
        assert!(e.contains("--source-bucket"), "{e}");
        let e = plan_err(args(|a| {
            a.source_bucket = Some("s3://src/a/".into());
            a.prefix = Some("b/".into());
        }))
        .await;
        assert!(e.contains("--prefix"), "{e}");
        let e = plan_err(args(|a| {
            a.source_bucket = Some("src".into());
            a.min_size = Some("lots".into());
        }))
        .await;
        assert!(e.contains("--min-size"), "{e}");
        let e = plan_err(args(|a| {
            a.manifest_path = Some("/nonexistent/manifest.json".into());
        }))
        .await;
        assert!(e.contains("/nonexistent/manifest.json"), "{e}");
        let e = plan_err(args(|a| {
            a.csv_manifest = Some("/nonexistent.csv".into());
        }))
        .await;
        assert!(e.contains("/nonexistent.csv"), "{e}");
        let e = plan_err(args(|a| {
            a.csv_manifest = Some("/nonexistent.csv".into());
            a.min_size = Some("1".into());
        }))
        .await;
        assert!(
            e.contains("--min-size") && e.contains("CSV manifest"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn directories_plan_a_listing_with_prefixes() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let a = args(|a| {
            a.source_bucket = Some(src.path().display().to_string());
            a.target_bucket = Some(format!("{}", dst.path().display()));
            a.prefix = Some("logs/".into());
            a.target_prefix = Some("old/".into());
        });
        let p = plan(&Config::default(), &a).await.unwrap();
        assert_eq!(p.kind.name(), "list");
        assert_eq!(
            p.selector.map.target_key("logs/x").as_deref(),
            Some("old/x")
        );
        let root = dst.path().display().to_string();
        assert_eq!(p.target, format!("file://{root}"));
        assert_eq!(p.target_full, format!("file://{root}/old/"), "prefix shown");
        let SourceKind::List { opts, .. } = &p.kind else {
            panic!()
        };
        assert_eq!(
            (opts.prefix.as_str(), opts.depth, opts.fetch_owner),
            ("logs/", 2, false)
        );

        let same = args(|a| {
            a.source_bucket = Some(src.path().display().to_string());
            a.target_bucket = Some(src.path().display().to_string());
        });
        let e = plan(&Config::default(), &same)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("onto themselves"), "{e}");
    }

    #[tokio::test]
    async fn a_sync_run_may_start_on_a_target_directory_not_there_yet() {
        let src = tempfile::tempdir().unwrap();
        let top = tempfile::tempdir().unwrap();
        let dst = top.path().join("new");
        let a = args(|a| {
            a.source_bucket = Some(src.path().display().to_string());
            a.target_bucket = Some(dst.display().to_string());
            a.sync = true;
        });
        let p = plan(&Config::default(), &a).await.unwrap();
        assert!(p.sync.is_some());
    }

    #[tokio::test]
    async fn delete_is_refused_where_target_keys_are_source_keys() {
        let top = tempfile::tempdir().unwrap();
        let sub = top.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let dir = |p: &std::path::Path| Some(p.display().to_string());
        let sync = |a: &mut RunArgs, delete| {
            a.sync = true;
            a.delete = delete;
        };
        // Source inside the target: source files are target-only keys there.
        let cases = [
            (dir(&sub), dir(top.path()), None, None),
            (dir(top.path()), dir(&sub), None, None),
            (dir(top.path()), dir(top.path()), Some("sub/"), Some("")),
            (
                Some("s3://bkt".into()),
                Some("s3://bkt".into()),
                Some("d/"),
                Some(""),
            ),
            (
                Some("s3://bkt".into()),
                Some("s3://bkt/d/x/".into()),
                Some("d/"),
                None,
            ),
        ];
        for (s, t, p, tp) in cases {
            let a = args(|a| {
                (a.source_bucket, a.target_bucket) = (s.clone(), t.clone());
                a.prefix = p.map(str::to_string);
                a.target_prefix = tp.map(str::to_string);
                sync(a, true);
            });
            let e = plan_err(a).await;
            assert!(
                e.contains("--delete") && e.contains("share keys"),
                "{s:?} {t:?}: {e}"
            );
        }
        // An inventory source names its bucket in the manifest.
        let ends = Ends::parse(&args(|a| {
            a.target_bucket = Some("s3://bkt/d/".into());
        }))
        .unwrap();
        let manifest_bucket = Location::parse("s3://bkt", "--manifest-path").unwrap();
        let e = ends
            .refuse_delete_over_source(Some(&manifest_bucket))
            .unwrap_err();
        assert!(e.to_string().contains("share keys"), "{e}");
        // Side by side, or without --delete: accepted.
        let a = args(|a| {
            a.source_bucket = Some("s3://bkt/d/".into());
            a.target_bucket = Some("s3://bkt/e/".into());
            sync(a, true);
        });
        let ends = Ends::parse(&a).unwrap();
        ends.refuse_delete_over_source(None).unwrap();
        let a = args(|a| {
            (a.source_bucket, a.target_bucket) = (dir(&sub), dir(top.path()));
            sync(a, false);
        });
        plan(&Config::default(), &a).await.unwrap();
    }
}
