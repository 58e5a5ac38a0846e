//! Running the real `commander` and `executor` binaries against the test server:
//! a [`Sandbox`] gives each test its own queue names (so tests run in parallel), an
//! empty working directory (so no stray `config.yml` or `.env` is read) and the
//! environment pointing every client at moto; plus helpers to signal a running
//! executor and to drain a queue with the SQS client.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{bin, server_env, unique, Server};

/// A finished run: exit status and both streams as text.
#[derive(Debug)]
pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from_output(out: Output) -> Self {
        Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panic with both streams unless the run exited 0.
    pub fn assert_ok(&self, what: &str) -> &Self {
        assert!(
            self.status.success(),
            "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

impl Run {
    /// An executor `--until-empty` run that ended by itself: exit 0 when its
    /// summary line says `0 failed` and `0 bad`, else 5 (keys or messages
    /// parked: docs/operate.md#exit-codes). For runs whose failures are part
    /// of the test.
    pub fn assert_finished(&self, what: &str) -> &Self {
        let summary = self
            .stdout
            .lines()
            .rev()
            .find(|l| l.starts_with("executor: queues empty:"))
            .unwrap_or_else(|| {
                panic!(
                    "{what}: no `queues empty` summary:\n{}\n{}",
                    self.stdout, self.stderr
                )
            });
        let clean = summary.contains(", 0 failed,") && summary.contains(", 0 bad,");
        let want = if clean { 0 } else { 5 };
        assert_eq!(
            self.status.code(),
            Some(want),
            "{what}: exit code for `{summary}`\n--- stderr\n{}",
            self.stderr
        );
        self
    }
}

fn command(name: &str, args: &[&str], env: &[(String, String)], dir: &Path) -> Command {
    let mut cmd = Command::new(bin(name));
    cmd.args(args).current_dir(dir);
    // Keep the developer's settings out of the child.
    for var in [
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT_URL_SQS",
        "AWS_CA_BUNDLE",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in server_env().iter().chain(env) {
        cmd.env(k, v);
    }
    cmd
}

/// Run `name` (`commander` or `executor`) to completion with `env` on top of
/// [`server_env`], in `dir`; panics if it runs longer than `limit`.
pub fn run_bin(
    name: &str,
    args: &[&str],
    env: &[(String, String)],
    dir: &Path,
    limit: Duration,
) -> Run {
    let child = command(name, args, env, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    wait_with_limit(child, limit, name)
}

/// Target buckets that commander tests name without ever writing to them
/// (they read the messages back). `commander run` refuses a target bucket
/// that does not exist, so [`commander`] and [`Sandbox::commander`] make sure
/// these exist on their server first.
pub const PLACEHOLDER_TARGETS: [&str; 2] = ["dst-bucket", "target-bucket"];

/// Create the [`PLACEHOLDER_TARGETS`] on `server`, once per test process. On
/// a thread of its own, so it works from sync and async tests alike.
pub fn ensure_placeholder_targets(server: Server) {
    static DONE: std::sync::Mutex<Vec<Server>> = std::sync::Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    if done.contains(&server) {
        return;
    }
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            for b in PLACEHOLDER_TARGETS {
                if let Err(e) = server.s3().create_bucket().bucket(b).send().await {
                    let e = aws_sdk_s3::error::DisplayErrorContext(e).to_string();
                    assert!(
                        e.contains("BucketAlreadyOwnedByYou") || e.contains("BucketAlreadyExists"),
                        "create {b}: {e}"
                    );
                }
            }
        })
    })
    .join()
    .expect("creating the placeholder target buckets");
    done.push(server);
}

/// Run `commander` in the current directory (see [`run_bin`]); up to 5 minutes.
pub fn commander(args: &[&str], env: &[(String, String)]) -> Run {
    ensure_placeholder_targets(Server::Moto);
    run_bin(
        "commander",
        args,
        env,
        &std::env::temp_dir(),
        Duration::from_secs(300),
    )
}

/// Run `executor` (see [`run_bin`]); up to 5 minutes.
pub fn executor(args: &[&str], env: &[(String, String)]) -> Run {
    run_bin(
        "executor",
        args,
        env,
        &std::env::temp_dir(),
        Duration::from_secs(300),
    )
}

/// Start `executor` in the background (stdout/stderr captured); see [`sigterm`]
/// and [`wait_with_limit`].
pub fn spawn_executor(args: &[&str], env: &[(String, String)], dir: &Path) -> Child {
    command("executor", args, env, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn executor")
}

/// Send a signal (`TERM`, `INT`, `KILL`) to a child with the system's `kill`.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {} failed", child.id());
}

/// SIGTERM, as ECS sends when it stops a task.
pub fn sigterm(child: &Child) {
    signal(child, "TERM");
}

/// Wait for a child; kill it and panic (with its output) if it outlives `limit`.
pub fn wait_with_limit(mut child: Child, limit: Duration, what: &str) -> Run {
    let start = Instant::now();
    // Read both pipes on threads so a chatty child never blocks on a full pipe.
    let mut out = child.stdout.take().expect("stdout piped");
    let mut err = child.stderr.take().expect("stderr piped");
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut s).ok();
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut s).ok();
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
            panic!("{what} still running after {limit:?}; killed. stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run::from_output(Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

/// One test's queues and working directory: unique queue names, `queue_num` work
/// queues, short long-poll waits, and a scratch directory as the binaries' cwd.
pub struct Sandbox {
    /// Prefix of every queue name of this test.
    pub prefix: String,
    /// Environment given to both binaries (on top of [`server_env`]).
    pub env: Vec<(String, String)>,
    /// The binaries' working directory.
    pub dir: tempfile::TempDir,
    /// The server both binaries talk to.
    pub server: Server,
}

impl Sandbox {
    /// A sandbox with `queue_num` work queues named `<prefix>-<n>` and DLQ `<prefix>-dead`.
    pub fn new(prefix: &str, queue_num: usize) -> Self {
        let prefix = unique(prefix);
        let env = vec![
            ("QUEUE_NAME_PATTERN".to_string(), format!("{prefix}-{{}}")),
            ("QUEUE_NUM".to_string(), queue_num.to_string()),
            ("DEAD_QUEUE_NAME".to_string(), format!("{prefix}-dead")),
            ("SQS_RECEIVE_MESSAGE_WAIT_TIME".to_string(), "1".to_string()),
            ("QUEUE_BACKEND".to_string(), "sqs".to_string()),
            ("MIGRATION_LOG_LEVEL".to_string(), "info".to_string()),
        ];
        Sandbox {
            prefix,
            env,
            dir: tempfile::tempdir().expect("temp dir"),
            server: Server::Moto,
        }
    }

    /// Like [`Sandbox::new`], with both binaries talking to `server`.
    pub fn on(server: Server, prefix: &str, queue_num: usize) -> Self {
        let mut sb = Sandbox::new(prefix, queue_num);
        // Set after server_env (moto), so these win.
        for (k, v) in server.server_env() {
            sb.set(&k, &v);
        }
        sb.server = server;
        sb
    }

    /// Add or replace an environment variable for both binaries.
    pub fn set(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Name of work queue `n` (1-based).
    pub fn queue(&self, n: usize) -> String {
        format!("{}-{n}", self.prefix)
    }

    /// Name of the dead-letter queue.
    pub fn dead(&self) -> String {
        format!("{}-dead", self.prefix)
    }

    /// Run `commander` with this sandbox's environment.
    pub fn commander(&self, args: &[&str]) -> Run {
        ensure_placeholder_targets(self.server);
        run_bin(
            "commander",
            args,
            &self.env,
            self.dir.path(),
            Duration::from_secs(300),
        )
    }

    /// Run `executor` with this sandbox's environment.
    pub fn executor(&self, args: &[&str]) -> Run {
        run_bin(
            "executor",
            args,
            &self.env,
            self.dir.path(),
            Duration::from_secs(300),
        )
    }

    /// Start `executor` in the background with this sandbox's environment.
    pub fn spawn_executor(&self, args: &[&str]) -> Child {
        spawn_executor(args, &self.env, self.dir.path())
    }

    /// `commander init`, asserting success.
    pub fn init(&self) {
        self.commander(&["init"]).assert_ok("commander init");
    }
}

/// A message read back from a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drained {
    pub body: String,
    /// String message attributes.
    pub attributes: BTreeMap<String, String>,
}

/// URL of a queue by name (on moto).
pub async fn queue_url(name: &str) -> String {
    queue_url_on(Server::Moto, name).await
}

/// URL of a queue by name on `server`.
pub async fn queue_url_on(server: Server, name: &str) -> String {
    server
        .sqs()
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get_queue_url {name}: {e:?}"))
        .queue_url()
        .expect("queue url")
        .to_string()
}

/// Send raw bodies to a queue (one SendMessage each).
pub async fn send_raw(name: &str, bodies: &[&str]) {
    send_raw_on(Server::Moto, name, bodies).await
}

/// Receive and delete every message of a queue until two receives in a row return
/// nothing; returns bodies and attributes.
pub async fn drain(name: &str) -> Vec<Drained> {
    drain_on(Server::Moto, name).await
}

/// [`drain`] a queue on `server`.
pub async fn drain_on(server: Server, name: &str) -> Vec<Drained> {
    let sqs = || server.sqs();
    let url = queue_url_on(server, name).await;
    let mut out = Vec::new();
    let mut empty = 0;
    while empty < 2 {
        let got = sqs()
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap_or_else(|e| panic!("receive from {name}: {e:?}"));
        let msgs = got.messages();
        if msgs.is_empty() {
            empty += 1;
            continue;
        }
        empty = 0;
        for m in msgs {
            let attributes = m
                .message_attributes()
                .map(|a| {
                    a.iter()
                        .filter_map(|(k, v)| v.string_value().map(|s| (k.clone(), s.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            out.push(Drained {
                body: m.body().unwrap_or_default().to_string(),
                attributes,
            });
            sqs()
                .delete_message()
                .queue_url(&url)
                .receipt_handle(m.receipt_handle().expect("receipt"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("delete from {name}: {e:?}"));
        }
    }
    out
}

/// `(visible, in_flight)` of a queue, from its attributes.
pub async fn depths(name: &str) -> (u64, u64) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let url = queue_url(name).await;
    let attrs = Server::Moto
        .sqs()
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap_or_else(|e| panic!("attributes of {name}: {e:?}"));
    let get = |a: A| {
        attrs
            .attributes()
            .and_then(|m| m.get(&a))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (
        get(A::ApproximateNumberOfMessages),
        get(A::ApproximateNumberOfMessagesNotVisible),
    )
}

/// Send raw bodies to a queue on `server`.
pub async fn send_raw_on(server: Server, name: &str, bodies: &[&str]) {
    let url = queue_url_on(server, name).await;
    for b in bodies {
        server
            .sqs()
            .send_message()
            .queue_url(&url)
            .message_body(*b)
            .send()
            .await
            .unwrap_or_else(|e| panic!("send to {name}: {e:?}"));
    }
}

/// The latest report row of every source key of `job_id`, from reports
/// written under the directory `reports` (`REPORT_LOCATION`).
pub async fn report_rows(
    reports: &Path,
    job_id: &str,
) -> BTreeMap<String, common::report::ReportRow> {
    use std::sync::Arc;
    let store = Arc::new(common::store::dir::DirStore::new(reports).expect("report dir"));
    let loc = common::report::ReportLocation::new(store, "");
    let mut rows: BTreeMap<String, common::report::ReportRow> = BTreeMap::new();
    loc.for_each_row(job_id, |row| {
        let newer = rows
            .get(&row.source_key)
            .is_none_or(|old| old.finished_at <= row.finished_at);
        if newer {
            rows.insert(row.source_key.clone(), row);
        }
    })
    .await
    .unwrap_or_else(|e| panic!("read reports of {job_id}: {e}"));
    rows
}
