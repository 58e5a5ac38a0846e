//! Test support shared by every end-to-end test: the moto and LocalStack
//! endpoints started by `scripts/test` ([`Server`]), SDK clients for them, uniquely named buckets and queues (so
//! tests run in parallel), and the path of the real binaries.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

/// Access key every test uses (any key works on moto and LocalStack).
pub const ACCESS_KEY: &str = "testing";
/// Secret key every test uses.
pub const SECRET_KEY: &str = "testing";
/// Region every test uses.
pub const REGION: &str = "us-east-1";

/// A test server started by `scripts/test`: moto (fast, the default for every
/// test) or LocalStack core (strict: for behaviour of AWS that moto lacks, such
/// as copy preconditions and archived objects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// moto, at `S3MIG_TEST_ENDPOINT`.
    Moto,
    /// LocalStack core, at `S3MIG_TEST_LOCALSTACK_ENDPOINT`.
    LocalStack,
}

impl Server {
    /// LocalStack, or None (after a loud SKIPPED line on stderr) when
    /// `S3MIG_NO_LOCALSTACK=1`. Without that, a missing endpoint panics: a
    /// machine without LocalStack fails its tests rather than skip them silently.
    pub fn localstack() -> Option<Server> {
        if std::env::var("S3MIG_NO_LOCALSTACK").as_deref() == Ok("1") {
            let test = std::thread::current()
                .name()
                .unwrap_or("a LocalStack test")
                .to_string();
            // Written to the real stderr: libtest captures eprintln! of passing tests.
            let line = format!(
                "!!! SKIPPED {test}: it needs LocalStack and S3MIG_NO_LOCALSTACK=1 is set\n"
            );
            std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes()).ok();
            return None;
        }
        let server = Server::LocalStack;
        server.endpoint();
        Some(server)
    }

    /// The server's URL, exported by `scripts/test`.
    pub fn endpoint(self) -> String {
        match self {
            Server::Moto => std::env::var("S3MIG_TEST_ENDPOINT").unwrap_or_else(|_| {
                panic!("S3MIG_TEST_ENDPOINT is not set: run the tests with scripts/test, which starts the moto server")
            }),
            Server::LocalStack => std::env::var("S3MIG_TEST_LOCALSTACK_ENDPOINT").unwrap_or_else(|_| {
                panic!(
                    "S3MIG_TEST_LOCALSTACK_ENDPOINT is not set: run the tests with scripts/test, which starts \
                     LocalStack (it needs Python >= 3.12: install python3.12 (apt) or pyenv 3.12), \
                     or set S3MIG_NO_LOCALSTACK=1 to skip the LocalStack tests"
                )
            }),
        }
    }

    /// An S3 client for this server (path-style).
    pub fn s3(self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(creds())
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// An SQS client for this server.
    pub fn sqs(self) -> aws_sdk_sqs::Client {
        let conf = aws_sdk_sqs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new(REGION))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                ACCESS_KEY, SECRET_KEY, None, None, "test",
            ))
            .endpoint_url(self.endpoint())
            .build();
        aws_sdk_sqs::Client::from_conf(conf)
    }

    /// Create a uniquely named bucket and return its name.
    pub async fn bucket(self, prefix: &str) -> String {
        let name = unique(prefix);
        self.s3()
            .create_bucket()
            .bucket(&name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket {name} on {self:?}: {e:?}"));
        name
    }

    /// Put an object with a body.
    pub async fn put(self, bucket: &str, key: &str, body: impl Into<Vec<u8>>) {
        self.s3()
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body.into().into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {bucket}/{key} on {self:?}: {e:?}"));
    }

    /// Every key of a bucket (all pages).
    pub async fn keys(self, bucket: &str) -> Vec<String> {
        let s3 = self.s3();
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = s3
                .list_objects_v2()
                .bucket(bucket)
                .set_continuation_token(token)
                .send()
                .await
                .unwrap_or_else(|e| panic!("list {bucket} on {self:?}: {e:?}"));
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

    /// Environment for a child process that points every section at this server.
    pub fn server_env(self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint()),
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ("AWS_REGION".into(), REGION.into()),
        ]
    }
}

/// The moto server's URL, exported by `scripts/test` as `S3MIG_TEST_ENDPOINT`.
pub fn endpoint() -> String {
    Server::Moto.endpoint()
}

fn creds() -> Credentials {
    Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test")
}

/// An S3 client for moto (path-style).
pub fn s3() -> aws_sdk_s3::Client {
    Server::Moto.s3()
}

/// An SQS client for moto.
pub fn sqs() -> aws_sdk_sqs::Client {
    Server::Moto.sqs()
}

/// A name no other test uses: `prefix-<12 hex>`, valid for buckets and queues.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

/// Create a uniquely named bucket on moto and return its name.
pub async fn bucket(prefix: &str) -> String {
    Server::Moto.bucket(prefix).await
}

/// Put an object with a body on moto.
pub async fn put(bucket: &str, key: &str, body: impl Into<Vec<u8>>) {
    Server::Moto.put(bucket, key, body).await
}

/// Every key of a moto bucket (all pages).
pub async fn keys(bucket: &str) -> Vec<String> {
    Server::Moto.keys(bucket).await
}

/// Path of a workspace binary (`commander`, `executor`), built once per test process.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let root = workspace_root();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut build = Command::new(cargo);
        build
            .current_dir(&root)
            .args(["build", "--quiet", "-p", "commander", "-p", "executor"]);
        // `cargo test` gives each test process the variables it sets for a
        // crate (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...). Build scripts that
        // watch them (ring's watches CARGO_MANIFEST_DIR) would see them change
        // and rebuild half the SDK in every test process: minutes each.
        for (k, _) in std::env::vars() {
            if is_crate_variable(&k) {
                build.env_remove(k);
            }
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build of the binaries failed");
    });
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    target.join("debug").join(name)
}

/// A variable cargo sets for the crate it builds or tests, not a setting of
/// cargo itself (those are `CARGO_HOME`, `CARGO_TARGET_DIR`, `CARGO_BUILD_*`, ...).
fn is_crate_variable(name: &str) -> bool {
    [
        "CARGO_MANIFEST_",
        "CARGO_PKG_",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// The workspace's top directory.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Environment for a child process that points every section at moto.
pub fn server_env() -> Vec<(String, String)> {
    Server::Moto.server_env()
}

pub mod faultproxy;
pub mod queues;
pub mod runs;
pub mod scenario;
pub mod stores;
