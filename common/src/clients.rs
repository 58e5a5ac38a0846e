//! S3 and SQS clients for a config section (`aws.inventory`, `aws.copy`,
//! `aws.copy_source`), built on aws-config's default chain: whatever a section
//! leaves unset (profile, region, credentials, endpoint) comes from the
//! standard `AWS_*` variables, `~/.aws` files, or container/instance metadata.
//!
//! Every client gets adaptive retries (`max_attempts` per section), connect and
//! read timeouts, and — for S3 — path-style addressing whenever a custom
//! endpoint is in play and request checksums only `when_required`, so
//! S3-compatible stores that reject the SDK's default CRC headers still work.

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_sdk_s3::config::RequestChecksumCalculation;

use crate::config::{AwsSection, Config};
use crate::error::Transport;

/// Region used when neither the section, the environment nor the profile names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Shared SDK settings of one section: profile, region (default
/// [`DEFAULT_REGION`]), static credentials (with session token) when both keys
/// are set, adaptive retry with the section's `max_attempts`, and its connect
/// and read timeouts. The section's `endpoint_url` is NOT applied here (it is
/// an S3 endpoint; see [`s3_client`]); `AWS_ENDPOINT_URL*` still are.
pub async fn sdk_config(section: &AwsSection) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::adaptive().with_max_attempts(section.max_attempts.max(1)))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(section.connect_timeout)
                .read_timeout(section.read_timeout)
                .build(),
        );
    if let Some(profile) = &section.profile_name {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &section.region_name {
        loader = loader.region(Region::new(region.clone()));
    }
    if let (Some(key), Some(secret)) = (&section.aws_access_key_id, &section.aws_secret_access_key)
    {
        loader = loader.credentials_provider(Credentials::new(
            key,
            secret.expose(),
            section
                .aws_session_token
                .as_ref()
                .map(|t| t.expose().to_string()),
            None,
            "s3mig-config",
        ));
    }
    let conf = loader.load().await;
    let conf = if conf.region().is_none() {
        conf.into_builder()
            .region(Region::from_static(DEFAULT_REGION))
            .build()
    } else {
        conf
    };
    tracing::debug!(
        profile = section.profile_name.as_deref().unwrap_or("-"),
        region = conf.region().map(|r| r.as_ref()).unwrap_or("-"),
        static_keys = section.aws_access_key_id.is_some(),
        max_attempts = section.max_attempts,
        "AWS SDK configuration loaded"
    );
    conf
}

/// An S3 client for `section`: its endpoint, path-style addressing (the
/// section's `force_path_style`, else on whenever a custom endpoint is set —
/// in the section, `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`) and its request
/// checksum mode.
pub async fn s3_client(section: &AwsSection) -> aws_sdk_s3::Client {
    let sdk = sdk_config(section).await;
    let env_s3_endpoint = std::env::var("AWS_ENDPOINT_URL_S3").is_ok_and(|v| !v.trim().is_empty());
    aws_sdk_s3::Client::from_conf(s3_config(section, &sdk, env_s3_endpoint))
}

/// The S3 client configuration [`s3_client`] uses; `env_s3_endpoint` says
/// whether `AWS_ENDPOINT_URL_S3` is set (passed in so this stays pure).
pub fn s3_config(
    section: &AwsSection,
    sdk: &SdkConfig,
    env_s3_endpoint: bool,
) -> aws_sdk_s3::Config {
    let mut builder = aws_sdk_s3::config::Builder::from(sdk);
    if let Some(url) = &section.endpoint_url {
        builder = builder.endpoint_url(url);
    }
    let custom_endpoint =
        section.endpoint_url.is_some() || sdk.endpoint_url().is_some() || env_s3_endpoint;
    let path_style = use_path_style(section.force_path_style, custom_endpoint);
    tracing::debug!(
        endpoint = section.endpoint_url.as_deref().or(sdk.endpoint_url()).unwrap_or("-"),
        path_style,
        checksums = %section.request_checksum_calculation,
        "S3 client"
    );
    let reach = Reach::default();
    builder
        .force_path_style(path_style)
        .request_checksum_calculation(checksum_mode(&section.request_checksum_calculation))
        .interceptor(reach.clone())
        .retry_classifier(reach)
        .build()
}

/// Which transport failure an SDK error is, if it is one (S3 and SQS share
/// the SDK's error type, so both adapters name these failures alike).
pub(crate) fn transport_failure<E, R>(
    err: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> Option<Transport> {
    use aws_smithy_runtime_api::client::result::SdkError;
    match err {
        SdkError::TimeoutError(_) => Some(Transport::Timeout),
        SdkError::DispatchFailure(d) if d.is_timeout() => Some(Transport::Timeout),
        SdkError::DispatchFailure(_) => Some(Transport::Dispatch),
        SdkError::ResponseError(_) => Some(Transport::Response),
        SdkError::ConstructionFailure(_) => Some(Transport::Construction),
        _ => None,
    }
}

/// Path-style addressing: the explicit setting, else on with a custom endpoint
/// (S3-compatible stores and test servers rarely resolve bucket subdomains).
pub fn use_path_style(force_path_style: Option<bool>, custom_endpoint: bool) -> bool {
    force_path_style.unwrap_or(custom_endpoint)
}

/// `when_supported` → the SDK's default (always send a checksum);
/// anything else → only when the operation requires one.
pub fn checksum_mode(name: &str) -> RequestChecksumCalculation {
    match name {
        "when_supported" => RequestChecksumCalculation::WhenSupported,
        _ => RequestChecksumCalculation::WhenRequired,
    }
}

/// The S3 client of one config section, built on first use (so a run between
/// directories never loads AWS configuration: no region or IMDS lookups) and
/// shared by every store opened with it. Callers hold this, never an SDK client.
#[derive(Debug)]
pub struct S3Connector {
    section: AwsSection,
    client: tokio::sync::OnceCell<aws_sdk_s3::Client>,
}

impl S3Connector {
    /// A connector for `section` (`aws.copy`, `aws.copy_source`, `aws.inventory`).
    pub fn new(section: &AwsSection) -> Self {
        S3Connector {
            section: section.clone(),
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// The section's client ([`s3_client`]), built once.
    pub(crate) async fn client(&self) -> aws_sdk_s3::Client {
        self.client
            .get_or_init(|| s3_client(&self.section))
            .await
            .clone()
    }
}

/// An SQS client: the `aws.copy` section's credentials, region, profile,
/// retries and timeouts, with `sqs.endpoint_url` when set (else the SDK's
/// `AWS_ENDPOINT_URL_SQS` / `AWS_ENDPOINT_URL` / AWS).
pub async fn sqs_client(cfg: &Config) -> aws_sdk_sqs::Client {
    let sdk = sdk_config(&cfg.aws.copy).await;
    let mut builder = aws_sdk_sqs::config::Builder::from(&sdk);
    if let Some(url) = &cfg.sqs.endpoint_url {
        builder = builder.endpoint_url(url);
    }
    tracing::debug!(
        endpoint = cfg
            .sqs
            .endpoint_url
            .as_deref()
            .or(sdk.endpoint_url())
            .unwrap_or("-"),
        "SQS client"
    );
    let reach = Reach::default();
    builder = builder.interceptor(reach.clone()).retry_classifier(reach);
    aws_sdk_sqs::Client::from_conf(builder.build())
}

/// Filter directives that keep the SDK's own log lines (IMDS and
/// credential-chain warnings, `Debug` dumps of its errors) to errors; see
/// `logging`.
pub const QUIET_SDK_LOGS: &str = "aws_config=error,aws_smithy_runtime=error,aws_runtime=error";

/// Connection refused, DNS and TLS failures get at most this many attempts in
/// all, per client, until its endpoint has answered once: a wrong endpoint
/// fails the first call of a run in seconds instead of after `max_attempts`
/// backoffs (about a minute). Once anything has answered, a failure gets the
/// section's full `max_attempts` again (a restart of the server, not a typo).
pub const UNREACHED_ATTEMPTS: u32 = 3;

/// Why a request got no answer, and from where: what [`Reach`] puts in place
/// of the HTTP connector's own error, so messages say `cannot reach
/// http://127.0.0.1:1 (connection refused)` and never carry the SDK's `Debug`
/// dump (logged at DEBUG instead).
#[derive(Debug)]
pub struct Unreachable {
    /// `scheme://host[:port]` the request was sent to.
    pub endpoint: String,
    /// A few words: `connection refused`, `DNS lookup failed for foo.example`.
    pub reason: String,
    /// Refused, DNS or TLS: retrying is pointless until the endpoint answers.
    early: bool,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.reason.starts_with("read ") {
            true => write!(f, "no answer from {} ({})", self.endpoint, self.reason),
            false => write!(f, "cannot reach {} ({})", self.endpoint, self.reason),
        }
    }
}

impl std::error::Error for Unreachable {}

/// A transport failure in words: the [`Unreachable`] that [`Reach`] left in
/// the error (endpoint and reason), else a plain phrase for its kind.
pub(crate) fn transport_message<E, R>(
    err: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
    transport: Transport,
) -> String
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    // The SDK's own layers say only which layer failed; skip them.
    const GENERIC: [&str; 9] = [
        "dispatch failure",
        "io error",
        "other",
        "timeout",
        "user error",
        "response error",
        "construction failure",
        "failed to construct request",
        "service error",
    ];
    let mut specific = None;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(c) = cause {
        if let Some(u) = c.downcast_ref::<Unreachable>() {
            return u.to_string();
        }
        let text = c.to_string();
        if specific.is_none() && !GENERIC.contains(&text.as_str()) {
            specific = Some(strip_os_error(&text));
        }
        cause = c.source();
    }
    let what = match transport {
        Transport::Timeout => "request timed out",
        Transport::Dispatch => "request could not be sent",
        Transport::Response => "the response could not be read",
        Transport::Construction => "the request could not be built",
    };
    match specific {
        Some(s) => format!("{what}: {s}"),
        None => what.to_string(),
    }
}

/// The reason in a connector error's chain, and whether it is an "early"
/// failure (refused, DNS, TLS). `host`: what a DNS failure names.
fn failure_reason(err: &(dyn std::error::Error + 'static), host: &str) -> (String, bool) {
    let mut texts = Vec::new();
    let mut cause = Some(err);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            let known = match io.kind() {
                K::ConnectionRefused => Some(("connection refused", true)),
                K::ConnectionReset => Some(("connection reset", false)),
                K::ConnectionAborted => Some(("connection aborted", false)),
                K::TimedOut => Some(("timed out", false)),
                _ => None,
            };
            if let Some((why, early)) = known {
                return (why.to_string(), early);
            }
        }
        texts.push(c.to_string());
        cause = c.source();
    }
    if texts.iter().any(|t| t.starts_with("dns error")) {
        return (format!("DNS lookup failed for {host}"), true);
    }
    // The SDK's "HTTP connect timeout occurred after 10s".
    if let Some((what, after)) = texts
        .iter()
        .find_map(|t| t.split_once(" timeout occurred after "))
    {
        let what = what.trim_start_matches("HTTP ").to_lowercase();
        return (format!("{what} timed out after {after}"), false);
    }
    let innermost = texts.last().map(|t| strip_os_error(t)).unwrap_or_default();
    let tls = texts.iter().any(|t| {
        let t = t.to_lowercase();
        t.contains("certificate") || t.contains("tls") || t.contains("handshake")
    });
    match tls {
        true => (format!("TLS failed: {innermost}"), true),
        false => (innermost.to_string(), false),
    }
}

/// `Network is unreachable (os error 101)` → `network is unreachable`.
fn strip_os_error(text: &str) -> String {
    let t = match text.rfind(" (os error ") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut chars = t.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `http://127.0.0.1:1/bucket?x` → `http://127.0.0.1:1`.
fn origin_of(uri: &str) -> String {
    match uri.find("://") {
        Some(i) => {
            let rest = &uri[i + 3..];
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            format!("{}{}", &uri[..i + 3], &rest[..end])
        }
        None => uri.to_string(),
    }
}

/// Per client: has its endpoint ever answered, and how many early failures
/// (refused, DNS, TLS) it has seen before that.
#[derive(Debug, Default)]
struct ReachState {
    answered: std::sync::atomic::AtomicBool,
    unreached_failures: std::sync::atomic::AtomicU32,
}

/// Every client's interceptor and retry classifier: names the endpoint and
/// the reason of a transport failure ([`Unreachable`]), says `retrying: …
/// (attempt N of M)` at WARN while the SDK retries one, and stops retrying
/// early failures after [`UNREACHED_ATTEMPTS`] while the endpoint has never
/// answered.
#[derive(Debug, Clone, Default)]
struct Reach(std::sync::Arc<ReachState>);

/// Where this operation's requests go (set before each transmit).
#[derive(Debug, Clone)]
struct Origin(String);

/// The last attempt's transport failure in words, and whether it is one that
/// [`UNREACHED_ATTEMPTS`] caps; `None` when it got an answer.
#[derive(Debug, Clone)]
struct LastFailure(Option<(String, bool)>);

mod reach_impl {
    use super::*;
    use aws_smithy_runtime_api::box_error::BoxError;
    use aws_smithy_runtime_api::client::interceptors::context::{
        BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextMut, InterceptorContext,
    };
    use aws_smithy_runtime_api::client::interceptors::Intercept;
    use aws_smithy_runtime_api::client::orchestrator::OrchestratorError;
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_runtime_api::client::retries::classifiers::{
        ClassifyRetry, RetryAction, RetryClassifierPriority,
    };
    use aws_smithy_runtime_api::client::retries::RequestAttempts;
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
    use std::sync::atomic::Ordering;

    impl Storable for Origin {
        type Storer = StoreReplace<Self>;
    }

    impl Storable for LastFailure {
        type Storer = StoreReplace<Self>;
    }

    impl Intercept for Reach {
        fn name(&self) -> &'static str {
            "s3mig-reach"
        }

        fn read_before_attempt(
            &self,
            _ctx: &BeforeTransmitInterceptorContextRef<'_>,
            _rc: &RuntimeComponents,
            cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let attempt = cfg.load::<RequestAttempts>().map_or(1, |a| a.attempts());
            if attempt > 1 {
                let max = cfg
                    .load::<aws_smithy_types::retry::RetryConfig>()
                    .map_or(attempt, |r| r.max_attempts());
                match cfg.load::<LastFailure>() {
                    Some(LastFailure(Some((why, early)))) => {
                        // Say the cap the classifier below will apply.
                        let max = match *early && !self.0.answered.load(Ordering::Relaxed) {
                            true => max.min(UNREACHED_ATTEMPTS),
                            false => max,
                        };
                        tracing::warn!("retrying: {why} (attempt {attempt} of {max})")
                    }
                    _ => tracing::debug!(attempt, max, "retrying"),
                }
            }
            Ok(())
        }

        fn read_before_transmit(
            &self,
            ctx: &BeforeTransmitInterceptorContextRef<'_>,
            _rc: &RuntimeComponents,
            cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let origin = origin_of(ctx.request().uri());
            cfg.interceptor_state().store_put(Origin(origin));
            Ok(())
        }

        fn modify_before_attempt_completion(
            &self,
            ctx: &mut FinalizerInterceptorContextMut<'_>,
            _rc: &RuntimeComponents,
            cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            if ctx.response().is_some() {
                self.0.answered.store(true, Ordering::Relaxed);
                cfg.interceptor_state().store_put(LastFailure(None));
                return Ok(());
            }
            let endpoint = cfg
                .load::<Origin>()
                .map_or_else(|| "the endpoint".to_string(), |o| o.0.clone());
            let Some(Err(err)) = ctx.output_or_error_mut() else {
                return Ok(());
            };
            let Some(conn) = err.as_connector_error() else {
                return Ok(());
            };
            let host = endpoint.split_once("://").map_or(&*endpoint, |(_, h)| h);
            let host = host.rsplit_once(':').map_or(host, |(h, _)| h).to_string();
            let (reason, early) = failure_reason(conn, &host);
            tracing::debug!(%endpoint, error = ?conn, "request got no answer");
            let source: BoxError = Box::new(Unreachable {
                endpoint: endpoint.clone(),
                reason: reason.clone(),
                early,
            });
            let replaced = if conn.is_timeout() {
                ConnectorError::timeout(source)
            } else if conn.is_io() {
                ConnectorError::io(source)
            } else if conn.is_user() {
                ConnectorError::user(source)
            } else {
                ConnectorError::other(source, conn.as_other())
            };
            *err = OrchestratorError::connector(replaced);
            let said = match reason.contains(&host) {
                true => format!("{reason} ({endpoint})"),
                false => format!("{reason} to {endpoint}"),
            };
            cfg.interceptor_state()
                .store_put(LastFailure(Some((said, early))));
            Ok(())
        }
    }

    impl ClassifyRetry for Reach {
        fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
            let unreachable = match ctx.output_or_error() {
                Some(Err(e)) => e
                    .as_connector_error()
                    .and_then(std::error::Error::source)
                    .and_then(|s| s.downcast_ref::<Unreachable>()),
                _ => None,
            };
            match unreachable {
                Some(u) if u.early && !self.0.answered.load(Ordering::Relaxed) => {
                    let n = self.0.unreached_failures.fetch_add(1, Ordering::Relaxed) + 1;
                    if n >= UNREACHED_ATTEMPTS {
                        return RetryAction::RetryForbidden;
                    }
                    RetryAction::NoActionIndicated
                }
                _ => RetryAction::NoActionIndicated,
            }
        }

        fn name(&self) -> &'static str {
            "s3mig-unreached"
        }

        fn priority(&self) -> RetryClassifierPriority {
            RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use std::time::Duration;

    #[test]
    fn path_style_follows_the_endpoint_unless_forced() {
        assert!(use_path_style(None, true));
        assert!(!use_path_style(None, false));
        assert!(!use_path_style(Some(false), true));
        assert!(use_path_style(Some(true), false));
    }

    #[test]
    fn checksum_mode_defaults_to_when_required() {
        assert_eq!(
            checksum_mode("when_supported"),
            RequestChecksumCalculation::WhenSupported
        );
        assert_eq!(
            checksum_mode("when_required"),
            RequestChecksumCalculation::WhenRequired
        );
    }

    #[tokio::test]
    async fn section_settings_reach_the_sdk_config() {
        let section = AwsSection {
            region_name: Some("eu-west-3".into()),
            aws_access_key_id: Some("AKIDEXAMPLE".into()),
            aws_secret_access_key: Some(Secret::new("very-secret")),
            aws_session_token: Some(Secret::new("token-value")),
            endpoint_url: Some("http://127.0.0.1:9".into()),
            max_attempts: 4,
            connect_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(7),
            ..AwsSection::default()
        };
        let sdk = sdk_config(&section).await;
        assert_eq!(sdk.region().map(|r| r.as_ref()), Some("eu-west-3"));
        let retry = sdk.retry_config().unwrap();
        assert_eq!(retry.max_attempts(), 4);
        assert_eq!(retry.mode(), aws_config::retry::RetryMode::Adaptive);
        let timeouts = sdk.timeout_config().unwrap();
        assert_eq!(timeouts.connect_timeout(), Some(Duration::from_secs(3)));
        assert_eq!(timeouts.read_timeout(), Some(Duration::from_secs(7)));
        use aws_credential_types::provider::ProvideCredentials;
        let creds = sdk
            .credentials_provider()
            .unwrap()
            .provide_credentials()
            .await
            .unwrap();
        assert_eq!(creds.access_key_id(), "AKIDEXAMPLE");
        assert_eq!(creds.secret_access_key(), "very-secret");
        assert_eq!(creds.session_token(), Some("token-value"));
        let s3 = s3_config(&section, &sdk, false);
        assert_eq!(
            s3.request_checksum_calculation(),
            Some(&RequestChecksumCalculation::WhenRequired)
        );
    }
}
