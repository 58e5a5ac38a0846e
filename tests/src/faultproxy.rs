//! A fault-injecting HTTP proxy for tests: sits on a loopback port in front of
//! the test server and, at configurable rates, answers `503 SlowDown`, `500
//! InternalError`, resets connections, delays responses, truncates response
//! bodies, returns S3's "200 OK with an error body" on CopyObject /
//! UploadPartCopy / CompleteMultipartUpload, and fails some entries of an SQS
//! SendMessageBatch (those entries are really not sent); it also loses or
//! mangles the answers of writes it did forward, damages part copies and
//! uploaded parts, answers `301` for buckets configured to live in another
//! region, and hides the objects of chosen buckets from HEAD. Binaries and clients
//! run through it with their normal configuration (just another endpoint URL).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::{Rng, SeedableRng};

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// 503 SlowDown (S3) / 503 throttling (SQS).
    SlowDown,
    /// 500 InternalError.
    InternalError,
    /// Close the connection without an answer.
    Reset,
    /// Forward after a delay.
    Delay,
    /// Forward, but cut the response body in half (the length header still promises all of it).
    Truncate,
    /// S3's "200 OK with an error body" on copies and multipart completion (not forwarded).
    ErrorBody200,
    /// Fail some entries of an SQS SendMessageBatch (those are not forwarded).
    BatchEntries,
    /// Forward the request, then close the connection without the answer: the
    /// write happened, the client cannot know (final writes only).
    LostReply,
    /// Forward the request, then answer its 200 with an XML root the SDK cannot
    /// parse (`…Response` for `…Result`, as one moto release does on
    /// CompleteMultipartUpload): the write happened (CopyObject and
    /// CompleteMultipartUpload only).
    MangledReply,
    /// Shift UploadPartCopy's source range of part 1 by one byte (same length):
    /// the server really stores damaged bytes with the planned part sizes.
    ShiftRange,
    /// Flip one byte in the middle of an UploadPart body (same length), as if
    /// the bytes were damaged between read and write; the server's answer is
    /// kept in [`Stats::corrupted`].
    CorruptPart,
}

/// Final writes: a request that, once forwarded, has made the object.
const FINAL_WRITES: [&str; 3] = ["PutObject", "CopyObject", "CompleteMultipartUpload"];

/// Which requests are faulted and how.
#[derive(Debug, Clone)]
pub struct FaultConfig {
    /// Probability of a fault on an S3 request.
    pub s3_rate: f64,
    /// Probability of a fault on an SQS request.
    pub sqs_rate: f64,
    /// Faults to choose from (uniformly, among those that apply to the request).
    pub kinds: Vec<Fault>,
    /// Until this instant every request gets a SlowDown (a throttling storm).
    pub storm_until: Option<Instant>,
    /// Delay used by [`Fault::Delay`].
    pub delay: Duration,
    /// Only these SQS operations (e.g. `SendMessageBatch`); empty = all.
    pub sqs_ops: Vec<String>,
    /// Only these S3 operations (e.g. `CompleteMultipartUpload`); empty = all.
    pub s3_ops: Vec<String>,
    /// Buckets that "live" in another region: a request for one of them whose
    /// SigV4 credential scope names another region gets S3's `301
    /// PermanentRedirect` with `x-amz-bucket-region` (never forwarded), as AWS
    /// answers a request sent to the wrong region.
    pub bucket_regions: BTreeMap<String, String>,
    /// Buckets whose objects HEAD does not see: HeadObject of a key in one
    /// answers `404` (never forwarded; HeadBucket and every other request
    /// go through), as if the object appeared just after a client looked.
    pub hidden_buckets: Vec<String>,
    /// At most this many faults in all (`None`: no limit), e.g. to damage
    /// only the first part sent and let its retry through.
    pub max_faults: Option<u64>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            s3_rate: 0.0,
            sqs_rate: 0.0,
            kinds: Vec::new(),
            storm_until: None,
            delay: Duration::from_millis(300),
            sqs_ops: Vec::new(),
            s3_ops: Vec::new(),
            bucket_regions: BTreeMap::new(),
            hidden_buckets: Vec::new(),
            max_faults: None,
        }
    }
}

/// Counts of what the proxy did, per operation and fault.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub requests: u64,
    pub faulted: BTreeMap<(String, String), u64>,
    /// The server's answer to each [`Fault::CorruptPart`] request: status
    /// and the error `<Code>` of its body (empty when none).
    pub corrupted: Vec<(u16, String)>,
}

impl Stats {
    /// Total faults injected.
    pub fn total_faults(&self) -> u64 {
        self.faulted.values().sum()
    }
}

struct State {
    config: FaultConfig,
    stats: Stats,
    rng: rand::rngs::StdRng,
}

/// A running proxy; dropping it stops accepting connections.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type ProxyBody = BoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

impl FaultProxy {
    /// Start a proxy to `upstream` (e.g. `http://127.0.0.1:5000`) with a seeded RNG.
    pub async fn start(upstream: &str, config: FaultConfig, seed: u64) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(Mutex::new(State {
            config,
            stats: Stats::default(),
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }));
        let upstream: Arc<str> = upstream.trim_end_matches('/').into();
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build_http();
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (st, client, upstream) = (st.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(req, st.clone(), client.clone(), upstream.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FaultProxy { addr, state, task }
    }

    /// The proxy's URL, to use as an endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Change the fault configuration while running.
    pub fn set_config(&self, config: FaultConfig) {
        self.state.lock().unwrap().config = config;
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.state.lock().unwrap().stats.clone()
    }
}

/// The operation a request is, as far as the fault rules care.
fn classify(req: &Request<Incoming>) -> (bool, String) {
    if let Some(t) = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
    {
        return (true, t.rsplit('.').next().unwrap_or(t).to_string());
    }
    let q = req.uri().query().unwrap_or("");
    let has = |p: &str| {
        q.split('&')
            .any(|kv| kv == p || kv.starts_with(&format!("{p}=")))
    };
    let copy = req.headers().contains_key("x-amz-copy-source");
    let op = match *req.method() {
        hyper::Method::PUT if copy && has("partNumber") => "UploadPartCopy",
        hyper::Method::PUT if copy => "CopyObject",
        hyper::Method::PUT if has("partNumber") => "UploadPart",
        hyper::Method::PUT if has("tagging") => "PutObjectTagging",
        hyper::Method::PUT => "PutObject",
        hyper::Method::POST if has("uploadId") => "CompleteMultipartUpload",
        hyper::Method::POST if has("uploads") => "CreateMultipartUpload",
        hyper::Method::POST if has("Action") || q.is_empty() && req.uri().path() == "/" => {
            "SqsQuery"
        }
        hyper::Method::GET if has("tagging") => "GetObjectTagging",
        hyper::Method::GET if has("list-type") || req.uri().path().matches('/').count() <= 1 => {
            "List"
        }
        hyper::Method::GET => "GetObject",
        hyper::Method::HEAD => "HeadObject",
        hyper::Method::DELETE => "Delete",
        _ => "Other",
    };
    (op == "SqsQuery", op.to_string())
}

fn s3_error(status: StatusCode, code: &str) -> Response<ProxyBody> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the fault proxy</Message><RequestId>fault</RequestId></Error>"
    );
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(full(body))
        .unwrap()
}

fn sqs_error(status: StatusCode, code: &str) -> Response<ProxyBody> {
    let body = format!("{{\"__type\":\"{code}\",\"message\":\"injected by the fault proxy\"}}");
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amzn-query-error", format!("{code};Receiver"))
        .body(full(body))
        .unwrap()
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    upstream: Arc<str>,
) -> Result<Response<ProxyBody>, std::io::Error> {
    let (is_sqs, op) = classify(&req);
    let fault = {
        let mut st = state.lock().unwrap();
        st.stats.requests += 1;
        let cfg = st.config.clone();
        if let Some(home) = (!is_sqs).then(|| wrong_region(&req, &cfg)).flatten() {
            *st.stats
                .faulted
                .entry((op.clone(), "Redirect301".to_string()))
                .or_default() += 1;
            return Ok(redirect(&req, &home));
        }
        if op == "HeadObject" && hidden(&req, &cfg) {
            *st.stats
                .faulted
                .entry((op.clone(), "Hidden404".to_string()))
                .or_default() += 1;
            return Ok(Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(full(Bytes::new()))
                .unwrap());
        }
        let storm = cfg.storm_until.is_some_and(|t| Instant::now() < t);
        let fault = if storm {
            Some(Fault::SlowDown)
        } else {
            let rate = if is_sqs { cfg.sqs_rate } else { cfg.s3_rate };
            let op_ok = if is_sqs {
                cfg.sqs_ops.is_empty() || cfg.sqs_ops.contains(&op)
            } else {
                cfg.s3_ops.is_empty() || cfg.s3_ops.contains(&op)
            };
            let applicable: Vec<Fault> = cfg
                .kinds
                .iter()
                .copied()
                .filter(|k| match k {
                    Fault::ErrorBody200 => {
                        matches!(
                            op.as_str(),
                            "CopyObject" | "UploadPartCopy" | "CompleteMultipartUpload"
                        )
                    }
                    Fault::BatchEntries => op == "SendMessageBatch",
                    Fault::LostReply => FINAL_WRITES.contains(&op.as_str()),
                    Fault::MangledReply => {
                        matches!(op.as_str(), "CopyObject" | "CompleteMultipartUpload")
                    }
                    Fault::ShiftRange => op == "UploadPartCopy" && part_number(&req) == Some(1),
                    Fault::CorruptPart => op == "UploadPart",
                    Fault::Truncate => !is_sqs && op == "GetObject",
                    _ => true,
                })
                .collect();
            let room = cfg
                .max_faults
                .is_none_or(|max| st.stats.total_faults() < max);
            if op_ok && room && !applicable.is_empty() && st.rng.random_bool(rate.clamp(0.0, 1.0)) {
                Some(applicable[st.rng.random_range(0..applicable.len())])
            } else {
                None
            }
        };
        if let Some(f) = fault {
            *st.stats
                .faulted
                .entry((op.clone(), format!("{f:?}")))
                .or_default() += 1;
        }
        fault
    };
    let delay = state.lock().unwrap().config.delay;
    match fault {
        Some(Fault::SlowDown) if is_sqs => {
            return Ok(sqs_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
            ))
        }
        Some(Fault::SlowDown) => return Ok(s3_error(StatusCode::SERVICE_UNAVAILABLE, "SlowDown")),
        Some(Fault::InternalError) if is_sqs => {
            return Ok(sqs_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
            ))
        }
        Some(Fault::InternalError) => {
            return Ok(s3_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError"))
        }
        Some(Fault::Reset) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected reset",
            ))
        }
        Some(Fault::ErrorBody200) => return Ok(s3_error(StatusCode::OK, "InternalError")),
        Some(Fault::Delay) => tokio::time::sleep(delay).await,
        _ => {}
    }

    let (parts, body) = req.into_parts();
    let mut body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let mut failed_entries: Vec<String> = Vec::new();
    if fault == Some(Fault::BatchEntries) {
        if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&body) {
            if let Some(entries) = v.get_mut("Entries").and_then(|e| e.as_array_mut()) {
                let n = entries.len();
                let fail = {
                    let mut st = state.lock().unwrap();
                    let k = st.rng.random_range(1..=n.max(1));
                    let mut idx: Vec<usize> = (0..n).collect();
                    for i in 0..n {
                        let j = st.rng.random_range(i..n);
                        idx.swap(i, j);
                    }
                    idx.truncate(k);
                    idx
                };
                let mut keep = Vec::new();
                for (i, e) in entries.drain(..).enumerate() {
                    if fail.contains(&i) {
                        failed_entries.push(
                            e.get("Id")
                                .and_then(|x| x.as_str())
                                .unwrap_or("")
                                .to_string(),
                        );
                    } else {
                        keep.push(e);
                    }
                }
                *entries = keep;
                body = Bytes::from(serde_json::to_vec(&v).unwrap());
            }
        }
    }

    let failed_json = |ids: &[String]| -> Vec<serde_json::Value> {
        ids.iter()
            .map(|id| serde_json::json!({"Id": id, "SenderFault": false, "Code": "InternalError", "Message": "injected by the fault proxy"}))
            .collect()
    };
    if fault == Some(Fault::BatchEntries) && body_entries_empty(&body) {
        let v = serde_json::json!({"Successful": [], "Failed": failed_json(&failed_entries)});
        return Ok(Response::builder()
            .status(200)
            .header("content-type", "application/x-amz-json-1.0")
            .body(full(serde_json::to_vec(&v).unwrap()))
            .unwrap());
    }

    if fault == Some(Fault::CorruptPart) && !body.is_empty() {
        let mut damaged = body.to_vec();
        damaged[body.len() / 2] ^= 0x01;
        body = Bytes::from(damaged);
    }

    let uri = format!(
        "{upstream}{}",
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut up = Request::builder().method(parts.method.clone()).uri(uri);
    for (k, v) in parts.headers.iter() {
        if k == "content-length" {
            continue;
        }
        if k == "x-amz-copy-source-range" && fault == Some(Fault::ShiftRange) {
            let shifted = v.to_str().ok().and_then(shift_range).unwrap_or_default();
            up = up.header(k, shifted);
            continue;
        }
        up = up.header(k, v);
    }
    up = up.header("content-length", body.len());
    let up = up.body(Full::new(body)).map_err(std::io::Error::other)?;
    let resp = client.request(up).await.map_err(std::io::Error::other)?;
    let (mut rparts, rbody) = resp.into_parts();
    let rbytes = rbody
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();

    if !failed_entries.is_empty() {
        if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&rbytes) {
            let failed = v
                .as_object_mut()
                .map(|o| o.entry("Failed").or_insert_with(|| serde_json::json!([])));
            if let Some(serde_json::Value::Array(a)) = failed {
                a.extend(failed_json(&failed_entries));
            }
            let out = serde_json::to_vec(&v).unwrap();
            rparts.headers.insert("content-length", out.len().into());
            return Ok(Response::from_parts(rparts, full(out)));
        }
    }
    if fault == Some(Fault::CorruptPart) {
        let text = String::from_utf8_lossy(&rbytes);
        let code = text
            .split_once("<Code>")
            .and_then(|(_, rest)| rest.split_once("</Code>"))
            .map(|(code, _)| code.to_string())
            .unwrap_or_default();
        let answer = (rparts.status.as_u16(), code);
        state.lock().unwrap().stats.corrupted.push(answer);
    }
    if fault == Some(Fault::LostReply) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected reset after the request was forwarded",
        ));
    }
    if fault == Some(Fault::MangledReply) && rparts.status == StatusCode::OK {
        let text = String::from_utf8_lossy(&rbytes)
            .replace(
                "CompleteMultipartUploadResult",
                "CompleteMultipartUploadResponse",
            )
            .replace("CopyObjectResult", "CopyObjectResponse");
        rparts.headers.insert("content-length", text.len().into());
        return Ok(Response::from_parts(rparts, full(text)));
    }
    if fault == Some(Fault::Truncate) && rbytes.len() > 1 {
        let half = rbytes.slice(..rbytes.len() / 2);
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(half)),
            Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "injected truncation",
            )),
        ];
        let body = StreamBody::new(futures::stream::iter(frames)).boxed();
        return Ok(Response::from_parts(rparts, body));
    }
    Ok(Response::from_parts(rparts, full(rbytes)))
}

/// The region a request for a bucket of `bucket_regions` should have been
/// signed for, when it was signed for another (path-style: the first path
/// segment is the bucket; the region is the third field of the SigV4
/// `Credential=AK/DATE/REGION/s3/aws4_request`).
fn wrong_region(req: &Request<Incoming>, cfg: &FaultConfig) -> Option<String> {
    let bucket = req.uri().path().trim_start_matches('/').split('/').next()?;
    let home = cfg.bucket_regions.get(bucket)?;
    let auth = req.headers().get("authorization")?.to_str().ok()?;
    let scope = auth.split("Credential=").nth(1)?;
    let signed = scope.split('/').nth(2)?;
    (signed != home).then(|| home.clone())
}

/// A HEAD of an object (path-style `/bucket/key`) in one of `hidden_buckets`.
fn hidden(req: &Request<Incoming>, cfg: &FaultConfig) -> bool {
    let path = req.uri().path().trim_start_matches('/');
    match path.split_once('/') {
        Some((bucket, key)) => !key.is_empty() && cfg.hidden_buckets.iter().any(|b| b == bucket),
        None => false,
    }
}

/// S3's answer to a request sent to the wrong region.
fn redirect(req: &Request<Incoming>, home: &str) -> Response<ProxyBody> {
    let body = if req.method() == hyper::Method::HEAD {
        String::new()
    } else {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint.</Message><Endpoint>s3.{home}.amazonaws.com</Endpoint><RequestId>fault</RequestId></Error>"
        )
    };
    Response::builder()
        .status(StatusCode::MOVED_PERMANENTLY)
        .header("content-type", "application/xml")
        .header("x-amz-bucket-region", home)
        .body(full(body))
        .unwrap()
}

/// `partNumber` of the request's query, if any.
fn part_number(req: &Request<Incoming>) -> Option<u32> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("partNumber="))?
        .parse()
        .ok()
}

/// `bytes=A-B` → `bytes=A+1-B+1`.
fn shift_range(v: &str) -> Option<String> {
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    Some(format!("bytes={}-{}", a + 1, b + 1))
}

fn body_entries_empty(body: &Bytes) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("Entries")
                .and_then(|e| e.as_array())
                .map(|a| a.is_empty())
        })
        .unwrap_or(false)
}
