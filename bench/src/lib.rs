//! Shared bits of the benchmark helpers: an S3 client for a local endpoint.

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

/// An S3 client for `endpoint` with static keys and path-style addressing,
/// the way every peer in the benchmark is configured.
pub fn s3_client(endpoint: &str, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            access_key, secret_key, None, None, "bench",
        ))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}
