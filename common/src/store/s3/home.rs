//! Where a bucket lives, learned once per store by HeadBucket: whether it
//! exists, and which region answers for it.
//!
//! Why: the Rust SDK does not follow S3's 301 redirects, so a request signed
//! for the wrong region fails (on AWS, every source-side request of a
//! cross-region copy would); and a HEAD 404 has no body, so only a bucket
//! shown to exist turns a 404 into "the key is missing".
//!
//! Rules (decided here, once):
//! - 200 (or 403: the bucket exists, we may not list it; 501: the store has
//!   no HeadBucket) → the configured client is used as it is;
//! - a refusal (301, 307 or 400) naming another region in
//!   `x-amz-bucket-region` → a client for that region; only a refusal switches
//!   regions, so S3-compatible stores whose region header means something
//!   else keep working;
//! - 404 → `NoSuchBucket` (kind NotFound), remembered for
//!   [`MISSING_TTL`] so a missing bucket costs one HeadBucket per key at most
//!   every few seconds, and a bucket created meanwhile is seen soon.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::Region;
use aws_sdk_s3::error::SdkError;

use super::map_sdk_error;
use crate::error::{Error, ErrorKind, Result};

/// Class of the error for a bucket that does not exist.
pub use crate::error::class::NO_SUCH_BUCKET;

/// How long a missing bucket is remembered before it is asked about again.
pub const MISSING_TTL: Duration = Duration::from_secs(30);

/// The response header that names a bucket's region (on 200, 301, 400 and 403).
const REGION_HEADER: &str = "x-amz-bucket-region";

/// One bucket's home: the configured client, and the one its requests use.
#[derive(Debug)]
pub struct BucketHome {
    configured: aws_sdk_s3::Client,
    bucket: String,
    resolved: tokio::sync::OnceCell<aws_sdk_s3::Client>,
    missing_at: Mutex<Option<Instant>>,
}

/// What one HeadBucket showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The bucket exists and the asking client's region works.
    Here,
    /// The bucket exists in this other region.
    Elsewhere(String),
    /// The bucket does not exist.
    Missing,
}

impl BucketHome {
    pub fn new(configured: aws_sdk_s3::Client, bucket: &str) -> Self {
        BucketHome {
            configured,
            bucket: bucket.to_string(),
            resolved: tokio::sync::OnceCell::new(),
            missing_at: Mutex::new(None),
        }
    }

    /// The client for the bucket's region (one HeadBucket the first time).
    pub async fn client(&self) -> Result<&aws_sdk_s3::Client> {
        if let Some(c) = self.resolved.get() {
            return Ok(c);
        }
        if self.recently_missing() {
            return Err(self.missing());
        }
        self.resolved
            .get_or_try_init(|| async {
                match probe(&self.configured, &self.bucket).await? {
                    Probe::Here => Ok(self.configured.clone()),
                    Probe::Elsewhere(region) => {
                        tracing::info!(bucket = %self.bucket, %region, "bucket lives in another region: using it");
                        Ok(in_region(&self.configured, &region))
                    }
                    Probe::Missing => {
                        *self.missing_at.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(Instant::now());
                        Err(self.missing())
                    }
                }
            })
            .await
    }

    /// Show that the bucket still exists (a fresh HeadBucket, not the cached
    /// answer): the evidence that a HEAD 404 means a missing key.
    pub async fn confirm_exists(&self) -> Result<()> {
        let client = self.client().await?;
        match probe(client, &self.bucket).await? {
            Probe::Missing => Err(self.missing()),
            Probe::Here | Probe::Elsewhere(_) => Ok(()),
        }
    }

    fn recently_missing(&self) -> bool {
        self.missing_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < MISSING_TTL)
    }

    fn missing(&self) -> Error {
        Error::new(
            ErrorKind::NotFound,
            NO_SUCH_BUCKET,
            format!("s3://{}", self.bucket),
            "the bucket does not exist (HeadBucket answered 404)",
        )
    }
}

/// A copy of `client` whose requests are signed for and sent to `region`.
pub fn in_region(client: &aws_sdk_s3::Client, region: &str) -> aws_sdk_s3::Client {
    let conf = client
        .config()
        .to_builder()
        .region(Region::new(region.to_string()))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// One HeadBucket with `client`, read by the rules of this module.
pub async fn probe(client: &aws_sdk_s3::Client, bucket: &str) -> Result<Probe> {
    let asked = client.config().region().map(|r| r.as_ref().to_string());
    let err = match client.head_bucket().bucket(bucket).send().await {
        Ok(_) => return Ok(Probe::Here),
        Err(e) => e,
    };
    let (status, region) = match &err {
        SdkError::ServiceError(se) => (
            Some(se.raw().status().as_u16()),
            se.raw().headers().get(REGION_HEADER).map(str::to_string),
        ),
        _ => (None, None),
    };
    match read_probe(status, region.as_deref(), asked.as_deref()) {
        Some(p) => Ok(p),
        None => {
            let mut e = map_sdk_error(err, format!("s3://{bucket}"));
            if status == Some(301) {
                e.kind = ErrorKind::Input;
                e.message = format!(
                    "{}: the bucket is in another region and S3 did not say which; set region_name for it",
                    e.message
                );
            }
            Err(e)
        }
    }
}

/// The rules, pure: `None` = an error to report as it is.
pub fn read_probe(status: Option<u16>, region: Option<&str>, asked: Option<&str>) -> Option<Probe> {
    let elsewhere = region
        .filter(|r| !r.is_empty() && Some(*r) != asked)
        .map(|r| Probe::Elsewhere(r.to_string()));
    match status? {
        404 => Some(Probe::Missing),
        301 | 307 | 400 => elsewhere,
        403 => Some(elsewhere.unwrap_or(Probe::Here)),
        501 => Some(Probe::Here),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_rules() {
        let us = Some("us-east-1");
        assert_eq!(read_probe(Some(404), None, us), Some(Probe::Missing));
        assert_eq!(
            read_probe(Some(301), Some("eu-west-1"), us),
            Some(Probe::Elsewhere("eu-west-1".into()))
        );
        assert_eq!(
            read_probe(Some(400), Some("ap-south-1"), us),
            Some(Probe::Elsewhere("ap-south-1".into()))
        );
        // A refusal that names our own region, or none, is an error to report.
        assert_eq!(read_probe(Some(301), Some("us-east-1"), us), None);
        assert_eq!(read_probe(Some(301), None, us), None);
        assert_eq!(read_probe(Some(403), None, us), Some(Probe::Here));
        assert_eq!(
            read_probe(Some(403), Some("eu-west-1"), us),
            Some(Probe::Elsewhere("eu-west-1".into()))
        );
        assert_eq!(read_probe(Some(503), None, us), None);
        assert_eq!(read_probe(None, None, us), None);
    }

    fn client(endpoint: &str) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "a", "b", None, None, "test",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    #[test]
    fn a_regional_client_keeps_the_endpoint_and_changes_the_region() {
        let c = in_region(&client("http://127.0.0.1:9"), "eu-west-1");
        assert_eq!(c.config().region().map(|r| r.as_ref()), Some("eu-west-1"));
    }

    #[tokio::test]
    async fn a_missing_bucket_is_remembered_then_asked_again() {
        // Nothing listens on port 9: the probe fails with a transport error,
        // which is never cached.
        let home = BucketHome::new(client("http://127.0.0.1:9"), "b");
        let e = home.client().await.unwrap_err();
        assert!(e.kind.is_retryable(), "{e}");
        assert!(!home.recently_missing());
        *home.missing_at.lock().unwrap() = Some(Instant::now());
        let e = home.client().await.unwrap_err();
        assert_eq!(e.class, NO_SUCH_BUCKET);
        *home.missing_at.lock().unwrap() = Some(Instant::now() - MISSING_TTL);
        assert!(home.client().await.unwrap_err().kind.is_retryable());
    }
}
