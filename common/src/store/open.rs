//! Open the store behind a [`Location`]: S3 (with a configured client) or a
//! local directory (created when it is a target).

use std::sync::Arc;

use super::dir::DirStore;
use super::s3::S3Store;
use super::ObjectStore;
use crate::error::{Error, Result};
use crate::location::Location;

/// The store for `loc`. S3 needs `client` (an input error names the bucket when
/// it is missing); a directory needs none. `create`: a missing directory is
/// created (targets); otherwise it must exist (sources), and the error names it.
/// The location's prefix is not part of the store: keys are always full keys.
pub async fn open_store(
    loc: &Location,
    client: Option<aws_sdk_s3::Client>,
    create: bool,
) -> Result<Arc<dyn ObjectStore>> {
    match loc {
        Location::S3 { bucket, .. } => {
            let client = client.ok_or_else(|| {
                Error::input(
                    loc.to_string(),
                    "an S3 location needs an S3 client (no client was configured for it)",
                )
            })?;
            Ok(Arc::new(S3Store::new(client, bucket.clone())))
        }
        Location::Dir { root } => {
            let root = root.clone();
            let store = tokio::task::spawn_blocking(move || {
                if create {
                    DirStore::create(root)
                } else {
                    DirStore::open_existing(root)
                }
            })
            .await
            .map_err(|e| {
                Error::input(loc.to_string(), format!("cannot open the directory: {e}"))
            })??;
            Ok(Arc::new(store))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_directories_and_names_missing_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        let loc = Location::Dir {
            root: missing.clone(),
        };
        let err = open_store(&loc, None, false).await.unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let store = open_store(&loc, None, true).await.unwrap();
        assert!(missing.is_dir());
        assert!(store.describe().starts_with("file://"));
        assert!(store.as_s3().is_none());
        let s3 = Location::S3 {
            bucket: "b-1".into(),
            prefix: String::new(),
        };
        let err = open_store(&s3, None, false).await.unwrap_err();
        assert!(err.to_string().contains("s3://b-1"), "{err}");
    }
}
