//! Test support shared by every end-to-end test: the moto endpoint started by
//! `scripts/test`, SDK clients for it, uniquely named buckets and queues (so
//! tests run in parallel), and the path of the real binaries.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

/// Access key every test uses against moto (any key works there).
pub const ACCESS_KEY: &str = "testing";
/// Secret key every test uses against moto.
pub const SECRET_KEY: &str = "testing";
/// Region every test uses.
pub const REGION: &str = "us-east-1";

/// The moto server's URL, exported by `scripts/test` as `S3MIG_TEST_ENDPOINT`.
pub fn endpoint() -> String {
    std::env::var("S3MIG_TEST_ENDPOINT").unwrap_or_else(|_| {
        panic!("S3MIG_TEST_ENDPOINT is not set: run the tests with scripts/test, which starts the moto server")
    })
}

fn creds() -> Credentials {
    Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test")
}

/// An S3 client for the test server (path-style).
pub fn s3() -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(creds())
        .endpoint_url(endpoint())
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// An SQS client for the test server.
pub fn sqs() -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new(REGION))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "test",
        ))
        .endpoint_url(endpoint())
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

/// A name no other test uses: `prefix-<12 hex>`, valid for buckets and queues.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

/// Create a uniquely named bucket and return its name.
pub async fn bucket(prefix: &str) -> String {
    let name = unique(prefix);
    s3().create_bucket()
        .bucket(&name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
    name
}

/// Put an object with a body.
pub async fn put(bucket: &str, key: &str, body: impl Into<Vec<u8>>) {
    s3().put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into().into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {bucket}/{key}: {e:?}"));
}

/// Every key of a bucket (all pages).
pub async fn keys(bucket: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = s3()
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("list {bucket}: {e:?}"));
        out.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
        token = page.next_continuation_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    out
}

/// Path of a workspace binary (`commander`, `executor`), built once per test process.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let root = workspace_root();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args(["build", "--quiet", "-p", "commander", "-p", "executor"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build of the binaries failed");
    });
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    target.join("debug").join(name)
}

/// The workspace's top directory.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Environment for a child process that points every section at the test server.
pub fn server_env() -> Vec<(String, String)> {
    vec![
        ("AWS_ENDPOINT_URL".into(), endpoint()),
        ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
        ("AWS_REGION".into(), REGION.into()),
    ]
}

pub mod faultproxy;
pub mod queues;
pub mod runs;
pub mod scenario;
pub mod stores;
