//! Open the store behind a [`Location`]: S3 (through a section's
//! [`S3Connector`]) or a local directory (created when it is a target).

use std::sync::Arc;

use super::dir::DirStore;
use super::s3::S3Store;
use super::ObjectStore;
use crate::clients::S3Connector;
use crate::error::{Error, Result};
use crate::location::Location;

/// The store for `loc`. An S3 location gets `s3`'s client (built on first
/// use); a directory needs none. `create`: a missing directory is created
/// (targets); otherwise it must exist (sources), and the error names it. The
/// location's prefix is not part of the store: keys are always full keys.
pub async fn open_store(
    loc: &Location,
    s3: &S3Connector,
    create: bool,
) -> Result<Arc<dyn ObjectStore>> {
    match loc {
        Location::S3 { bucket, .. } => {
            Ok(Arc::new(S3Store::new(s3.client().await, bucket.clone())))
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
        // Never used for a directory: no AWS configuration is loaded.
        let s3 = S3Connector::new(&crate::config::AwsSection::default());
        let err = open_store(&loc, &s3, false).await.unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let store = open_store(&loc, &s3, true).await.unwrap();
        assert!(missing.is_dir());
        assert!(store.describe().starts_with("file://"));
        assert!(!store.capabilities().server_side_copy);
        assert!(store.copy_source_name().is_none());
    }
}
