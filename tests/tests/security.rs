//! Security checks, end to end:
//! - secrets (secret keys and session tokens of every AWS section, from the
//!   environment, `config.yml` and `.env`) never appear in stdout, stderr, the
//!   log file (trace level, JSON), completion reports, queue or DLQ messages,
//!   or `commander config` / `--print-config` output;
//! - TLS certificates are verified for every https endpoint (S3 clients of
//!   the three sections, the SQS client, and the real binaries), and nothing
//!   in the workspace turns verification off;
//! - the local-directory target never writes outside its root: `..` keys and
//!   target keys, a symlinked directory pointing outside, a symlink as the
//!   final component; the keys are parked in the DLQ and reported with reasons.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::types::StorageClass;
use common::config::{AwsSection, Config, Secret};
use common::message::{encode, Batch, KeyItem, MESSAGE_VERSION};
use testsupport::runs::{drain, run_bin, send_raw, Run, Sandbox};
use testsupport::{bucket, put, s3};

/// Flags every run of this file gets: the most verbose, machine-readable logs.
const TRACE: [&str; 4] = ["--log-level", "trace", "--log-format", "json"];

/// A unique, unguessable secret value; `label` says where it was set.
fn secret(label: &str) -> String {
    format!("{label}{}", uuid::Uuid::new_v4().simple())
}

/// Every file under `dir` as text (gzip files decompressed), by path.
fn files_as_text(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let raw = std::fs::read(&path).unwrap_or_default();
                let mut text = Vec::new();
                let data = if flate2::read::MultiGzDecoder::new(raw.as_slice())
                    .read_to_end(&mut text)
                    .is_ok()
                {
                    text
                } else {
                    raw
                };
                out.insert(path, String::from_utf8_lossy(&data).into_owned());
            }
        }
    }
    out
}

/// Run a binary with this sandbox's environment plus `extra`.
fn run_with(sb: &Sandbox, bin: &str, args: &[&str], extra: &[(&str, &str)]) -> Run {
    let mut env = sb.env.clone();
    for (k, v) in extra {
        env.retain(|(n, _)| n != k);
        env.push((k.to_string(), v.to_string()));
    }
    run_bin(bin, args, &env, sb.dir.path(), Duration::from_secs(300))
}

fn with_trace<'a>(args: &[&'a str]) -> Vec<&'a str> {
    args.iter().copied().chain(TRACE).collect()
}

// ---------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_output_logs_reports_messages_or_config() {
    let src = bucket("sec-src").await;
    let dst = bucket("sec-dst").await;
    for k in ["a.txt", "b/c.txt"] {
        put(&src, k, format!("body of {k}")).await;
    }
    // An archived object: reading it fails with the SDK's error, which is parked
    // in the DLQ and reported (error texts are where a leak would hide).
    s3().put_object()
        .bucket(&src)
        .key("cold.txt")
        .storage_class(StorageClass::Glacier)
        .body(b"archived".to_vec().into())
        .send()
        .await
        .expect("put archived object");
    // The CSV manifest is read with the `aws.inventory` credentials.
    put(
        &src,
        "manifests/keys.csv",
        format!("{src},a.txt\n{src},b/c.txt\n{src},cold.txt\n"),
    )
    .await;

    let mut sb = Sandbox::new("sec", 1);
    let secrets: BTreeMap<&str, String> = [
        ("AWS_SECRET_ACCESS_KEY", secret("SecretDefaultChain")),
        ("AWS_SESSION_TOKEN", secret("TokenDefaultChain")),
        ("COPY_AWS_SECRET_ACCESS_KEY", secret("SecretCopyEnv")),
        ("COPY_AWS_SESSION_TOKEN", secret("TokenCopyEnv")),
        (
            "aws.inventory.aws_secret_access_key",
            secret("SecretInventoryYml"),
        ),
        (
            "aws.inventory.aws_session_token",
            secret("TokenInventoryYml"),
        ),
        (
            "COPY_SOURCE_AWS_SECRET_ACCESS_KEY",
            secret("SecretCopySourceDotenv"),
        ),
        (
            "COPY_SOURCE_AWS_SESSION_TOKEN",
            secret("TokenCopySourceDotenv"),
        ),
    ]
    .into_iter()
    .collect();
    for name in [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "COPY_AWS_SECRET_ACCESS_KEY",
        "COPY_AWS_SESSION_TOKEN",
    ] {
        sb.set(name, &secrets[name]);
    }
    sb.set("COPY_AWS_ACCESS_KEY_ID", "AKIACOPYTEST");
    let reports = tempfile::tempdir().expect("reports dir");
    sb.set("REPORT_LOCATION", &reports.path().display().to_string());
    sb.set("REPORT_FLUSH_SECONDS", "1");
    std::fs::write(
        sb.dir.path().join("config.yml"),
        format!(
            "aws:\n  inventory:\n    aws_access_key_id: AKIAINVENTORYTEST\n    aws_secret_access_key: \"{}\"\n    aws_session_token: \"{}\"\n",
            secrets["aws.inventory.aws_secret_access_key"], secrets["aws.inventory.aws_session_token"]
        ),
    )
    .expect("write config.yml");
    std::fs::write(
        sb.dir.path().join(".env"),
        format!(
            "COPY_SOURCE_AWS_ACCESS_KEY_ID=AKIACOPYSOURCETEST\nCOPY_SOURCE_AWS_SECRET_ACCESS_KEY={}\nCOPY_SOURCE_AWS_SESSION_TOKEN={}\n",
            secrets["COPY_SOURCE_AWS_SECRET_ACCESS_KEY"], secrets["COPY_SOURCE_AWS_SESSION_TOKEN"]
        ),
    )
    .expect("write .env");
    let log_dir = tempfile::tempdir().expect("log dir");
    let log_file = log_dir.path().join("executor.log");
    let log_file_s = log_file.display().to_string();
    let manifest = format!("s3://{src}/manifests/keys.csv");

    let mut seen: Vec<(String, String)> = Vec::new();
    fn keep(seen: &mut Vec<(String, String)>, what: &str, run: &Run) {
        seen.push((format!("{what}: stdout"), run.stdout.clone()));
        seen.push((format!("{what}: stderr"), run.stderr.clone()));
    }

    let run = sb.commander(&with_trace(&["init"]));
    run.assert_ok("commander init");
    keep(&mut seen, "commander init", &run);
    let run = sb.commander(&with_trace(&[
        "run",
        "--csv-manifest",
        &manifest,
        "-t",
        &dst,
    ]));
    run.assert_ok("commander run");
    keep(&mut seen, "commander run", &run);

    // The work messages as sent (read, then put back for the executor).
    let work = drain(&sb.queue(1)).await;
    assert!(!work.is_empty(), "the commander sent nothing");
    for m in &work {
        seen.push((
            "work queue message".into(),
            format!("{} {:?}", m.body, m.attributes),
        ));
    }
    let bodies: Vec<&str> = work.iter().map(|m| m.body.as_str()).collect();
    send_raw(&sb.queue(1), &bodies).await;
    let job_id = common::message::decode(&work[0].body)
        .expect("a message")
        .job_id;

    // downup reads with `aws.copy_source` (.env) and writes with `aws.copy` (env).
    let run = run_with(
        &sb,
        "executor",
        &with_trace(&["--mode", "downup", "--until-empty"]),
        &[("MIGRATION_LOG_FILE", &log_file_s)],
    );
    run.assert_finished("executor");
    keep(&mut seen, "executor", &run);
    assert_eq!(
        testsupport::keys(&dst).await.len(),
        2,
        "a.txt and b/c.txt copied"
    );

    for (what, args) in [
        ("commander config", vec!["config"]),
        (
            "commander --print-config",
            vec![
                "run",
                "--print-config",
                "--csv-manifest",
                &manifest,
                "-t",
                &dst,
            ],
        ),
        ("commander dlq", vec!["dlq", "--json"]),
        (
            "commander report",
            vec!["report", "--json", "--job-id", &job_id],
        ),
        (
            "commander status",
            vec!["status", "--json", "--job-id", &job_id],
        ),
    ] {
        let run = sb.commander(&with_trace(&args));
        run.assert_ok(what);
        keep(&mut seen, what, &run);
    }
    let run = sb.executor(&with_trace(&["--print-config"]));
    run.assert_ok("executor --print-config");
    keep(&mut seen, "executor --print-config", &run);
    let config_out = &seen
        .iter()
        .find(|(w, _)| w == "commander config: stdout")
        .expect("config output")
        .1;
    // Six of the secrets are config keys (secret key and token of three sections).
    let redacted = config_out
        .lines()
        .map(str::trim_start)
        .filter(|l| {
            l.starts_with("aws_secret_access_key: \"***\"")
                || l.starts_with("aws_session_token: \"***\"")
        })
        .count();
    assert_eq!(redacted, 6, "every secret is shown redacted: {config_out}");

    let dead = drain(&sb.dead()).await;
    assert!(
        dead.iter().any(|m| m.body.contains("cold.txt")),
        "the archived key is parked: {dead:?}"
    );
    for m in &dead {
        seen.push((
            "DLQ message".into(),
            format!("{} {:?}", m.body, m.attributes),
        ));
    }

    let log = std::fs::read_to_string(&log_file).expect("executor log file");
    assert!(
        log.contains("\"level\":\"TRACE\""),
        "trace lines in the log file"
    );
    assert!(
        log.contains("x-amz-security-token"),
        "the SDK logged request headers at trace level (the premise of this test)"
    );
    seen.push(("executor log file".into(), log));
    let report_files = files_as_text(reports.path());
    assert!(
        report_files
            .values()
            .any(|t| t.contains("cold.txt") && t.contains("failed")),
        "reports name the failed key: {report_files:?}"
    );
    for (path, text) in report_files {
        seen.push((format!("report {}", path.display()), text));
    }
    // Whatever the binaries left in their working directory (config.yml and
    // .env hold the secrets on purpose).
    for (path, text) in files_as_text(sb.dir.path()) {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name != "config.yml" && name != ".env" {
            seen.push((format!("working dir {}", path.display()), text));
        }
    }

    let mut leaks = Vec::new();
    for (name, value) in &secrets {
        for (what, text) in &seen {
            if text.contains(value.as_str()) {
                leaks.push(format!("{name} leaked in {what}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

// A throwaway test CA and a server certificate it signed for 127.0.0.1
// (valid from 2000 to 2126). The CA is trusted by nobody but the control client
// below; the key protects nothing.
const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBfDCCASKgAwIBAgICEAAwCgYIKoZIzj0EAwIwJDEiMCAGA1UEAwwZczNtaWcg
dGVzdCBDQSAodW50cnVzdGVkKTAgFw0wMDAxMDEwMDAwMDBaGA8yMTI2MDEwMTAw
MDAwMFowJDEiMCAGA1UEAwwZczNtaWcgdGVzdCBDQSAodW50cnVzdGVkKTBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABD/Z/mFC9ZVHYn9pNcmgeiWIjFs50A6oogG9
SSJxriEkwNmq+bK0S01eUPvzjdGeC//z2IU+FspxhhL9YPmSds6jQjBAMA8GA1Ud
EwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgEGMB0GA1UdDgQWBBQPdhvLKyT2STJs
mrTByRIjwlDdUzAKBggqhkjOPQQDAgNIADBFAiEAzFtpOGTClQ8NENcR6RyJAM1Y
fZp/T2iOTQ8FQQ3CitYCIFKhgWLFFSBRcCFpeVrXW4D6bnD71SNVT9LAknruQyq7
-----END CERTIFICATE-----
";
const TEST_SERVER_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBvTCCAWOgAwIBAgICEAEwCgYIKoZIzj0EAwIwJDEiMCAGA1UEAwwZczNtaWcg
dGVzdCBDQSAodW50cnVzdGVkKTAgFw0wMDAxMDEwMDAwMDBaGA8yMTI2MDEwMTAw
MDAwMFowFDESMBAGA1UEAwwJMTI3LjAuMC4xMFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAEaNW/wpW1BNK18+NvGXy8EXER3VfWK1W/4xr0RY+UHArjJuvIhBphYe4q
2ZtU8Lx0ZATyfOqut3kNLmlk37je4aOBkjCBjzAMBgNVHRMBAf8EAjAAMA4GA1Ud
DwEB/wQEAwIHgDATBgNVHSUEDDAKBggrBgEFBQcDATAaBgNVHREEEzARhwR/AAAB
gglsb2NhbGhvc3QwHQYDVR0OBBYEFDQHdvOx4fpHs369Tlo1baPAVAtSMB8GA1Ud
IwQYMBaAFA92G8srJPZJMmyatMHJEiPCUN1TMAoGCCqGSM49BAMCA0gAMEUCIEYd
cayMCUMu9wmssKiln4rz+ipUWDJfUrJrihbw5JVRAiEA3AkJa+aq+aaTNwYcF24a
l3qyppq5+WW4nzpCSIfEgUM=
-----END CERTIFICATE-----
";
const TEST_SERVER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgjvfV5qued30hzxIn
EQmphtFu6sIopda3lCCEhcAmnROhRANCAARo1b/ClbUE0rXz428ZfLwRcRHdV9Yr
Vb/jGvRFj5QcCuMm68iEGmFh7irZm1TwvHRkBPJ86q63eQ0uaWTfuN7h
-----END PRIVATE KEY-----
";

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS server on 127.0.0.1 with the test certificate: counts completed
/// handshakes (answering each with an empty HTTP 500) and keeps the errors
/// of failed ones.
struct TlsServer {
    port: u16,
    completed: Arc<AtomicUsize>,
    failed: Arc<Mutex<Vec<String>>>,
}

async fn tls_server() -> TlsServer {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(TEST_SERVER_PEM.as_bytes())
            .collect::<Result<_, _>>()
            .expect("test certificate");
    let key = PrivateKeyDer::from_pem_slice(TEST_SERVER_KEY.as_bytes()).expect("test key");
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let completed = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let (c, f) = (completed.clone(), failed.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, c, f) = (acceptor.clone(), c.clone(), f.clone());
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                match acceptor.accept(tcp).await {
                    Ok(mut tls) => {
                        c.fetch_add(1, Ordering::SeqCst);
                        let mut buf = [0u8; 4096];
                        let _ = tls.read(&mut buf).await;
                        let _ = tls
                            .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                        let _ = tls.shutdown().await;
                    }
                    Err(e) => f.lock().expect("lock").push(e.to_string()),
                }
            });
        }
    });
    TlsServer {
        port,
        completed,
        failed,
    }
}

impl TlsServer {
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Wait (bounded) until the server has completed `n` handshakes; the count.
    async fn wait_completed(&self, n: usize) -> usize {
        for _ in 0..200 {
            if self.completed.load(Ordering::SeqCst) >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.completed.load(Ordering::SeqCst)
    }

    /// Wait (bounded) until the server has seen `n` failed handshakes.
    async fn wait_failed(&self, n: usize) -> Vec<String> {
        for _ in 0..200 {
            let f = self.failed.lock().expect("lock").clone();
            if f.len() >= n {
                return f;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.failed.lock().expect("lock").clone()
    }
}

fn section(url: &str) -> AwsSection {
    AwsSection {
        region_name: Some("us-east-1".into()),
        aws_access_key_id: Some("AKIATLSTEST".into()),
        aws_secret_access_key: Some(Secret::new("tls-test-secret")),
        endpoint_url: Some(url.to_string()),
        max_attempts: 1,
        connect_timeout: Duration::from_secs(10),
        read_timeout: Duration::from_secs(10),
        ..AwsSection::default()
    }
}

fn is_certificate_error(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("certificate") || t.contains("unknownissuer") || t.contains("unknown issuer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_https_endpoint_verifies_the_certificate() {
    let server = tls_server().await;
    let url = server.url();

    // Control: a client that trusts the test CA completes a handshake, so the
    // server works and the failures below come from certificate checks.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(TEST_CA_PEM.as_bytes()).expect("test CA"))
        .expect("add test CA");
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .expect("a client trusting the test CA completes the handshake");
    assert_eq!(server.wait_completed(1).await, 1);

    // The S3 clients of the three sections and the SQS client, as the binaries build them.
    let mut errors = Vec::new();
    let sec = section(&url);
    for name in ["inventory", "copy", "copy_source"] {
        let client = common::clients::s3_client(&sec).await;
        let err = client
            .list_buckets()
            .send()
            .await
            .expect_err("untrusted certificate accepted");
        errors.push((
            format!("S3 client ({name})"),
            DisplayErrorContext(&err).to_string(),
        ));
    }
    let mut cfg = Config::default();
    cfg.aws.copy = section("https://127.0.0.1:9");
    cfg.sqs.endpoint_url = Some(url.clone());
    let err = common::clients::sqs_client(&cfg)
        .await
        .list_queues()
        .send()
        .await
        .expect_err("untrusted certificate accepted");
    errors.push(("SQS client".into(), DisplayErrorContext(&err).to_string()));
    for (what, text) in &errors {
        assert!(
            is_certificate_error(text),
            "{what}: not a certificate error: {text}"
        );
    }
    let refused = server.wait_failed(errors.len()).await;
    assert!(refused.len() >= errors.len(), "{refused:?}");

    // The real binaries, pointed at the server through AWS_ENDPOINT_URL.
    let dir = tempfile::tempdir().expect("dir");
    let env: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", url.as_str()),
        ("COPY_MAX_ATTEMPTS", "1"),
        ("QUEUE_BACKEND", "sqs"),
        ("QUEUE_NUM", "1"),
        ("QUEUE_NAME_PATTERN", "tls-check-{}"),
        ("DEAD_QUEUE_NAME", "tls-check-dead"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let path = dir.path().to_path_buf();
    let run = tokio::task::spawn_blocking(move || {
        run_bin(
            "commander",
            &["init"],
            &env,
            &path,
            Duration::from_secs(120),
        )
    })
    .await
    .expect("commander init");
    assert!(
        !run.status.success(),
        "commander init succeeded against an untrusted certificate"
    );
    assert!(
        is_certificate_error(&run.stderr),
        "commander init: {}",
        run.stderr
    );

    assert_eq!(
        server.completed.load(Ordering::SeqCst),
        1,
        "only the control client may complete a handshake: no request reached the server"
    );
}

/// Nothing in the workspace disables certificate verification or pulls in an
/// alternative TLS stack whose defaults we have not checked.
#[test]
fn no_source_disables_certificate_verification() {
    let root = testsupport::workspace_root();
    // Split so this file does not match itself.
    let patterns: Vec<String> = [
        ("danger_accept", "_invalid"),
        ("accept_invalid", "_certs"),
        ("accept_invalid", "_hostnames"),
        ("dangerous", "()"),
        ("ServerCert", "Verifier"),
        ("NoCertificate", "Verification"),
        ("insecure_skip", "_verify"),
        ("SSL_VERIFY", "_NONE"),
        ("no-verify", "-ssl"),
        ("verify_ssl", ": false"),
    ]
    .iter()
    .map(|(a, b)| format!("{a}{b}").to_ascii_lowercase())
    .collect();
    let mut hits = Vec::new();
    let mut scanned = 0;
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "node_modules" {
                    stack.push(path);
                }
                continue;
            }
            let wanted = ["rs", "toml", "sh", "yml", "yaml", "json", "env"]
                .iter()
                .any(|ext| name.ends_with(&format!(".{ext}")))
                || name == "Dockerfile";
            if !meta.is_file() || !wanted {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .unwrap_or_default()
                .to_ascii_lowercase();
            scanned += 1;
            for p in &patterns {
                if text.contains(p.as_str()) {
                    hits.push(format!("{}: {p}", path.display()));
                }
            }
        }
    }
    assert!(
        scanned > 50,
        "scanned only {scanned} files under {}",
        root.display()
    );
    assert!(
        hits.is_empty(),
        "certificate verification disabled:\n{}",
        hits.join("\n")
    );
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).expect("Cargo.lock");
    for stack in ["name = \"native-tls\"", "name = \"openssl\""] {
        assert!(
            !lock.contains(stack),
            "{stack} is in the dependency tree: check its verification defaults"
        );
    }
}

// ---------------------------------------------------------------------------
// Directory target
// ---------------------------------------------------------------------------

/// Paths and contents under `top`, except the subtree `skip` (the target root).
fn snapshot(top: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = e.path();
            if path == skip {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            let what = if meta.file_type().is_symlink() {
                format!(
                    "link -> {}",
                    std::fs::read_link(&path).expect("link").display()
                )
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else {
                format!("file {:?}", std::fs::read(&path).expect("read"))
            };
            out.insert(path, what);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_target_never_writes_outside_its_root() {
    use std::os::unix::fs::symlink;

    let src = bucket("sec-dir").await;
    let hostile_keys = [
        "../evil1",
        "a/../../evil2",
        "../../../evil3",
        "link/pwned.txt",
        "flink",
        "real/deeper/pwned.txt",
    ];
    for k in ["ok.txt"].iter().chain(&hostile_keys) {
        put(&src, k, format!("written by key {k}")).await;
    }
    let listed = testsupport::keys(&src).await;
    for k in &hostile_keys {
        assert!(
            listed.iter().any(|l| l == k),
            "{k} is stored as is: {listed:?}"
        );
    }

    // top/outside holds what must stay untouched; the root is three levels down
    // so that every `..` walk above it still lands inside `top`.
    let top = tempfile::tempdir().expect("top");
    let top = top
        .path()
        .canonicalize()
        .expect("canonical")
        .join("sandbox");
    let root = top.join("t1/t2/root");
    std::fs::create_dir_all(&root).expect("root");
    std::fs::create_dir_all(top.join("outside")).expect("outside");
    std::fs::write(top.join("outside/secret.txt"), "original").expect("secret");
    symlink(top.join("outside"), root.join("link")).expect("dir link");
    symlink(top.join("outside/secret.txt"), root.join("flink")).expect("file link");
    std::fs::create_dir(root.join("real")).expect("real");
    symlink(top.join("outside"), root.join("real/deeper")).expect("nested link");
    let before = snapshot(&top, &root);

    let mut sb = Sandbox::new("sec-dir", 1);
    let reports = tempfile::tempdir().expect("reports");
    sb.set("REPORT_LOCATION", &reports.path().display().to_string());
    sb.set("REPORT_FLUSH_SECONDS", "1");
    sb.init();
    let root_s = root.display().to_string();
    // With the SQS backend a message may name a directory only when allowed.
    sb.set(
        "MIGRATION_ALLOWED_TARGETS",
        &format!("s3://*,file://{root_s}"),
    );
    sb.commander(&["run", "-s", &src, "-t", &root_s])
        .assert_ok("commander run");
    // Target keys that climb out, for a source key that is fine.
    let crafted_targets = [
        "../evil4",
        "x/../../../../evil5",
        "/abs-evil6",
        "link/pwned2.txt",
    ];
    let batch = Batch {
        v: MESSAGE_VERSION,
        job_id: "sec-dir-crafted".into(),
        source: format!("s3://{src}"),
        target: format!("file://{root_s}"),
        keys: crafted_targets
            .iter()
            .map(|t| KeyItem {
                key: "ok.txt".into(),
                target_key: Some(t.to_string()),
                ..KeyItem::default()
            })
            .collect(),
    };
    send_raw(&sb.queue(1), &[&encode(&batch)]).await;

    for mode in ["copy", "downup"] {
        sb.executor(&["--mode", mode, "--until-empty"])
            .assert_finished(mode);
        assert_eq!(
            snapshot(&top, &root),
            before,
            "{mode}: something was written outside the root"
        );
        assert_eq!(
            std::fs::read_to_string(top.join("outside/secret.txt")).expect("secret"),
            "original"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("ok.txt")).expect("ok.txt"),
            "written by key ok.txt"
        );
        let parked = drain(&sb.dead()).await;
        let mut reasons = BTreeMap::new();
        for m in &parked {
            let b = common::message::decode(&m.body).expect("DLQ holds messages");
            for k in b.keys {
                let f = k.failure.clone().expect("parked keys carry their failure");
                assert!(!f.message.is_empty());
                reasons.insert(k.target_key().to_string(), f.class);
            }
        }
        let want: Vec<&str> = hostile_keys
            .iter()
            .chain(&crafted_targets)
            .copied()
            .collect();
        for t in &want {
            let class = reasons
                .get(*t)
                .unwrap_or_else(|| panic!("{mode}: {t} not parked: {reasons:?}"));
            assert!(
                class == "UnmappableKey" || class == "Symlink",
                "{mode}: {t}: {class}"
            );
        }
        if mode == "copy" {
            // Replay the parked keys in downup mode: refused again, the same way.
            let bodies: Vec<&str> = parked.iter().map(|m| m.body.as_str()).collect();
            send_raw(&sb.queue(1), &bodies).await;
        }
    }
    let rows: Vec<String> = files_as_text(reports.path()).into_values().collect();
    for t in hostile_keys.iter().chain(&crafted_targets) {
        assert!(
            rows.iter()
                .flat_map(|r| r.lines())
                .any(|l| l.contains(t) && l.contains("failed")),
            "{t} is reported as failed"
        );
    }
}
