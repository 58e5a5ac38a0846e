//! The Amazon SQS backend of [`WorkQueue`]: the only place that sees SQS SDK
//! types. SDK errors are mapped here, once, to an [`ErrorKind`]: throttling,
//! 5xx, timeouts and connection failures are `Retryable`; a missing queue is
//! `Input` (run `commander init`); access problems are `AccessDenied`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;

use super::{
    Depths, Ensured, MoveTask, Outgoing, QueueService, QueueSpec, Received, WorkQueue,
    STALE_RECEIPT_CLASS, VISIBILITY_LIMIT_CLASS,
};
use crate::error::{Error, ErrorKind, Result};

/// How often a running message move task is polled.
const MOVE_TASK_POLL: Duration = Duration::from_secs(2);

/// Longest long poll SQS allows.
const MAX_WAIT_SECS: u64 = 20;

/// The SQS queue service of one client (one account, region and endpoint).
#[derive(Debug, Clone)]
pub struct SqsService {
    client: Client,
}

impl SqsService {
    /// Wrap a configured client (see `common::clients`); tests hand in theirs.
    pub fn new(client: Client) -> Self {
        SqsService { client }
    }
}

/// One SQS queue, addressed by its URL.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    name: String,
    url: String,
}

impl SqsQueue {
    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// Codes meaning "the queue does not exist" (JSON and query-compatible forms).
fn is_missing_queue(code: &str) -> bool {
    matches!(
        code,
        "QueueDoesNotExist" | "AWS.SimpleQueueService.NonExistentQueue" | "NonExistentQueue"
    )
}

fn is_queue_exists(code: &str) -> bool {
    matches!(code, "QueueAlreadyExists" | "QueueNameExists")
}

fn is_invalid_receipt(code: &str) -> bool {
    matches!(code, "ReceiptHandleIsInvalid" | "InvalidReceiptHandle")
}

/// Whether a ChangeMessageVisibility error is SQS refusing to extend past the
/// 12-hour total ("Total VisibilityTimeout for the message is beyond the
/// limit [43200 seconds]"): SQS gives it no code of its own, only
/// `InvalidParameterValue` and that text.
fn is_visibility_limit(code: &str, message: &str) -> bool {
    code.rsplit('.').next() == Some("InvalidParameterValue")
        && message.contains("Total VisibilityTimeout")
}

/// What to do with an SQS service error, from its code and HTTP status.
fn error_kind(code: &str, status: Option<u16>) -> ErrorKind {
    let short = code.rsplit('.').next().unwrap_or(code);
    match short {
        "ThrottlingException"
        | "Throttling"
        | "RequestThrottled"
        | "KmsThrottled"
        | "ServiceUnavailable"
        | "InternalError"
        | "InternalFailure"
        | "RequestTimeout"
        | "RequestTimeoutException"
        | "SlowDown"
        | "QueueDeletedRecently" => {
            return ErrorKind::Retryable;
        }
        _ => {}
    }
    if is_missing_queue(code) {
        return ErrorKind::Input;
    }
    match short {
        "AccessDenied"
        | "AccessDeniedException"
        | "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "SignatureDoesNotMatch"
        | "ExpiredToken"
        | "InvalidSecurity"
        | "KmsAccessDenied" => return ErrorKind::AccessDenied,
        _ => {}
    }
    match status {
        Some(s) if s >= 500 || s == 429 => ErrorKind::Retryable,
        Some(403) => ErrorKind::AccessDenied,
        _ => ErrorKind::Permanent,
    }
}

/// The service code of an SDK error, or `""` when there is none (transport errors).
fn code_of<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> String {
    err.code().unwrap_or_default().to_string()
}

/// Map any SQS SDK error to our error, naming the queue.
fn sdk_error<E>(
    err: SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
    queue: &str,
    op: &str,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let transport = crate::clients::transport_failure(&err);
    let (kind, class) = match transport {
        Some(t) => (t.kind(), t.class().to_string()),
        None => {
            let code = code_of(&err);
            let status = err.raw_response().map(|r| r.status().as_u16());
            let class = if code.is_empty() {
                crate::error::http_class(status)
            } else {
                code.clone()
            };
            (error_kind(&code, status), class)
        }
    };
    let detail = match (transport, err.message()) {
        (Some(t), _) => crate::clients::transport_message(&err, t),
        (None, Some(m)) => m.to_string(),
        (None, None) => class.clone(),
    };
    let message = if kind == ErrorKind::Input && is_missing_queue(&class) {
        format!("queue {queue} does not exist: run `commander init` first")
    } else {
        format!("SQS {op} failed: {detail}")
    };
    Error::new(kind, class, queue, message).with_stated_source(err)
}

/// Attributes we manage, in the order `Ensured::Updated` lists them.
const MANAGED: [QueueAttributeName; 4] = [
    QueueAttributeName::VisibilityTimeout,
    QueueAttributeName::ReceiveMessageWaitTimeSeconds,
    QueueAttributeName::MessageRetentionPeriod,
    QueueAttributeName::RedrivePolicy,
];

/// A redrive policy as SQS returns it (`maxReceiveCount` as a number or a string).
fn parse_redrive(s: &str) -> Option<(String, u64)> {
    let v: serde_json::Value = serde_json::from_str(s).ok()?;
    let arn = v.get("deadLetterTargetArn")?.as_str()?.to_string();
    let max = v.get("maxReceiveCount")?;
    let max = max.as_u64().or_else(|| max.as_str()?.trim().parse().ok())?;
    Some((arn, max))
}

/// Whether the attribute as it is (`have`) already matches what we want.
fn same_attribute(name: &QueueAttributeName, want: &str, have: Option<&str>) -> bool {
    let have = have.unwrap_or("");
    if *name == QueueAttributeName::RedrivePolicy {
        return match (want.is_empty(), have.is_empty()) {
            (true, true) => true,
            (false, false) => parse_redrive(want) == parse_redrive(have),
            _ => false,
        };
    }
    want.trim() == have.trim()
}

fn secs(d: Duration) -> String {
    d.as_secs().to_string()
}

/// The per-entry outcome of a SendMessageBatch whose entries had ids "0".."n-1".
fn batch_results(
    queue: &str,
    n: usize,
    successful: impl IntoIterator<Item = String>,
    failed: &[BatchResultErrorEntry],
) -> Vec<Result<()>> {
    let mut out: Vec<Option<Result<()>>> = (0..n).map(|_| None).collect();
    for id in successful {
        if let Some(slot) = id.parse::<usize>().ok().and_then(|i| out.get_mut(i)) {
            *slot = Some(Ok(()));
        }
    }
    for f in failed {
        if let Some(slot) = f.id().parse::<usize>().ok().and_then(|i| out.get_mut(i)) {
            let kind = if f.sender_fault() {
                ErrorKind::Permanent
            } else {
                ErrorKind::Retryable
            };
            let msg = f.message().unwrap_or("message rejected");
            *slot = Some(Err(Error::new(
                kind,
                f.code(),
                queue,
                format!("SQS rejected the message: {msg}"),
            )));
        }
    }
    out.into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(Error::new(
                    ErrorKind::Retryable,
                    "MissingBatchResult",
                    queue,
                    "SQS reported neither success nor failure for this message",
                ))
            })
        })
        .collect()
}

impl SqsService {
    async fn queue_url(&self, name: &str) -> Result<String> {
        let out = self
            .client
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| sdk_error(e, name, "GetQueueUrl"))?;
        out.queue_url().map(str::to_string).ok_or_else(|| {
            Error::new(
                ErrorKind::Retryable,
                "MissingQueueUrl",
                name,
                "SQS returned no queue URL",
            )
        })
    }

    async fn attributes(
        &self,
        name: &str,
        url: &str,
    ) -> Result<HashMap<QueueAttributeName, String>> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(|e| sdk_error(e, name, "GetQueueAttributes"))?;
        Ok(out.attributes().cloned().unwrap_or_default())
    }

    /// The queue's ARN (what message move tasks name queues by).
    async fn arn(&self, name: &str) -> Result<String> {
        let url = self.queue_url(name).await?;
        self.attributes(name, &url)
            .await?
            .remove(&QueueAttributeName::QueueArn)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Permanent,
                    "MissingQueueArn",
                    name,
                    "SQS returned no QueueArn attribute",
                )
            })
    }

    /// The latest state of the move task from `source_arn` into `task`;
    /// `false` when it could not be read (the task keeps running).
    async fn poll_move(&self, source_arn: &str, task: &mut MoveTask) -> bool {
        let listed = match self
            .client
            .list_message_move_tasks()
            .source_arn(source_arn)
            .max_results(1)
            .send()
            .await
        {
            Ok(l) => l,
            Err(e) => {
                let e = sdk_error(e, &task.destination, "ListMessageMoveTasks");
                tracing::warn!(error = %e, "cannot follow the move task; it keeps running");
                return false;
            }
        };
        if let Some(entry) = listed.results().first() {
            task.status = entry.status().unwrap_or("UNKNOWN").to_string();
            task.moved = entry.approximate_number_of_messages_moved();
            task.to_move = entry.approximate_number_of_messages_to_move();
            task.failure_reason = entry.failure_reason().map(str::to_string);
        }
        true
    }

    /// The attributes `spec` asks for, with the DLQ's ARN resolved.
    async fn wanted(&self, spec: &QueueSpec) -> Result<Vec<(QueueAttributeName, String)>> {
        let redrive = match &spec.redrive {
            None => String::new(),
            Some(r) => {
                let url = self.queue_url(&r.dead_letter_queue).await.map_err(|e| {
                    if e.kind == ErrorKind::Input {
                        Error::input(
                            &spec.name,
                            format!(
                                "dead-letter queue {} does not exist: create it before the queues that use it",
                                r.dead_letter_queue
                            ),
                        )
                    } else {
                        e
                    }
                })?;
                let attrs = self.attributes(&r.dead_letter_queue, &url).await?;
                let arn = attrs.get(&QueueAttributeName::QueueArn).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Retryable,
                        "MissingQueueArn",
                        &r.dead_letter_queue,
                        "SQS returned no QueueArn",
                    )
                })?;
                serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": r.max_receive_count})
                    .to_string()
            }
        };
        Ok(vec![
            (
                QueueAttributeName::VisibilityTimeout,
                secs(spec.visibility_timeout),
            ),
            (
                QueueAttributeName::ReceiveMessageWaitTimeSeconds,
                secs(spec.receive_wait_time),
            ),
            (
                QueueAttributeName::MessageRetentionPeriod,
                secs(spec.retention),
            ),
            (QueueAttributeName::RedrivePolicy, redrive),
        ])
    }

    /// Bring an existing queue's attributes to `want`.
    async fn update(&self, name: &str, want: &[(QueueAttributeName, String)]) -> Result<Ensured> {
        let url = self.queue_url(name).await?;
        let have = self.attributes(name, &url).await?;
        let changed: Vec<&(QueueAttributeName, String)> = want
            .iter()
            .filter(|(k, v)| !same_attribute(k, v, have.get(k).map(String::as_str)))
            .collect();
        if changed.is_empty() {
            return Ok(Ensured::Unchanged);
        }
        let set: HashMap<QueueAttributeName, String> = changed
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.client
            .set_queue_attributes()
            .queue_url(&url)
            .set_attributes(Some(set))
            .send()
            .await
            .map_err(|e| sdk_error(e, name, "SetQueueAttributes"))?;
        let names = MANAGED
            .iter()
            .filter(|m| changed.iter().any(|(k, _)| k == *m))
            .map(|m| m.as_str().to_string())
            .collect();
        Ok(Ensured::Updated(names))
    }
}

#[async_trait]
impl QueueService for SqsService {
    async fn ensure(&self, spec: &QueueSpec) -> Result<Ensured> {
        let want = self.wanted(spec).await?;
        match self.queue_url(&spec.name).await {
            Ok(_) => return self.update(&spec.name, &want).await,
            Err(e) if e.kind == ErrorKind::Input => {}
            Err(e) => return Err(e),
        }
        let create: HashMap<QueueAttributeName, String> = want
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .cloned()
            .collect();
        let created = self
            .client
            .create_queue()
            .queue_name(&spec.name)
            .set_attributes(Some(create))
            .send()
            .await;
        match created {
            Ok(_) => Ok(Ensured::Created),
            // Somebody else created it between our two calls.
            Err(e) if is_queue_exists(&code_of(&e)) => self.update(&spec.name, &want).await,
            Err(e) => Err(sdk_error(e, &spec.name, "CreateQueue")),
        }
    }

    async fn open(&self, name: &str) -> Result<Arc<dyn WorkQueue>> {
        let url = self.queue_url(name).await?;
        Ok(Arc::new(SqsQueue {
            client: self.client.clone(),
            name: name.to_string(),
            url,
        }))
    }

    async fn move_all(
        &self,
        from: &str,
        to: &str,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<MoveTask> {
        let source = self.arn(from).await?;
        let destination = self.arn(to).await?;
        // One attempt: a service without the operation must not cost a retry series.
        let no_retry = aws_sdk_sqs::config::Builder::default()
            .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled());
        let started = self
            .client
            .start_message_move_task()
            .source_arn(&source)
            .destination_arn(&destination)
            .customize()
            .config_override(no_retry)
            .send()
            .await
            .map_err(|e| sdk_error(e, from, "StartMessageMoveTask"))?;
        let mut task = MoveTask {
            task_handle: started.task_handle.unwrap_or_default(),
            destination: to.to_string(),
            status: "RUNNING".into(),
            ..Default::default()
        };
        tracing::info!(task_handle = %task.task_handle, "StartMessageMoveTask started");
        loop {
            tokio::select! {
                _ = tokio::time::sleep(MOVE_TASK_POLL) => {}
                _ = stop.cancelled() => return Ok(task),
            }
            if !self.poll_move(&source, &mut task).await
                || (task.status != "RUNNING" && task.status != "CANCELLING")
            {
                return Ok(task);
            }
        }
    }
}

#[async_trait]
impl WorkQueue for SqsQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send_batch(&self, messages: &[Outgoing]) -> Result<Vec<Result<()>>> {
        super::check_batch_len(&self.name, messages.len())?;
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let entries = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let attrs = m
                    .attributes
                    .iter()
                    .map(|(k, v)| {
                        MessageAttributeValue::builder()
                            .data_type("String")
                            .string_value(v)
                            .build()
                            .map(|a| (k.clone(), a))
                    })
                    .collect::<std::result::Result<HashMap<_, _>, _>>()?;
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&m.body)
                    .set_message_attributes((!attrs.is_empty()).then_some(attrs))
                    .build()
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Invalid,
                    "BuildError",
                    &self.name,
                    format!("cannot build the batch: {e}"),
                )
                .with_source(e)
            })?;
        let out = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| sdk_error(e, &self.name, "SendMessageBatch"))?;
        let ok = out.successful().iter().map(|s| s.id().to_string());
        let results = batch_results(&self.name, messages.len(), ok, out.failed());
        Ok(results)
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<Vec<Received>> {
        super::check_receive_max(&self.name, max)?;
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max as i32)
            .wait_time_seconds(wait.as_secs().min(MAX_WAIT_SECS) as i32)
            .set_visibility_timeout(visibility.map(|v| v.as_secs().min(i32::MAX as u64) as i32))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| sdk_error(e, &self.name, "ReceiveMessage"))?;
        let mut got = Vec::with_capacity(out.messages().len());
        for m in out.messages() {
            let Some(receipt) = m.receipt_handle() else {
                tracing::warn!(queue = %self.name, "received a message without a receipt handle; skipped");
                continue;
            };
            let receive_count = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            let attributes: BTreeMap<String, String> = m
                .message_attributes()
                .map(|attrs| {
                    attrs
                        .iter()
                        .filter_map(|(k, v)| v.string_value().map(|s| (k.clone(), s.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            got.push(Received {
                message_id: m.message_id().unwrap_or_default().to_string(),
                receipt: receipt.to_string(),
                body: m.body().unwrap_or_default().to_string(),
                attributes,
                receive_count,
            });
        }
        Ok(got)
    }

    async fn delete(&self, receipt: &str) -> Result<()> {
        match self
            .client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // SQS accepts the receipt of a message already deleted; a refused
            // one means the message is still there (received again, or moved
            // to the DLQ): not deleted, so never reported as done.
            Err(e) if is_invalid_receipt(&code_of(&e)) => {
                let mut err = sdk_error(e, &self.name, "DeleteMessage");
                err.kind = ErrorKind::Invalid;
                err.class = STALE_RECEIPT_CLASS.to_string();
                Err(err)
            }
            Err(e) => Err(sdk_error(e, &self.name, "DeleteMessage")),
        }
    }

    async fn set_visibility(&self, receipt: &str, timeout: Duration) -> Result<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(timeout.as_secs().min(i32::MAX as u64) as i32)
            .send()
            .await
            .map_err(|e| {
                let code = code_of(&e);
                let limit = is_visibility_limit(&code, e.message().unwrap_or_default());
                let mut err = sdk_error(e, &self.name, "ChangeMessageVisibility");
                if limit {
                    err.kind = ErrorKind::Invalid;
                    err.class = VISIBILITY_LIMIT_CLASS.to_string();
                } else if is_invalid_receipt(&code) || code.ends_with("MessageNotInflight") {
                    err.kind = ErrorKind::Invalid;
                    err.class = STALE_RECEIPT_CLASS.to_string();
                }
                err
            })?;
        Ok(())
    }

    async fn depths(&self) -> Result<Depths> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| sdk_error(e, &self.name, "GetQueueAttributes"))?;
        let attrs = out.attributes();
        let get = |k: QueueAttributeName| {
            attrs
                .and_then(|a| a.get(&k))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(Depths {
            visible: get(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_service_codes() {
        assert_eq!(
            error_kind("ThrottlingException", Some(400)),
            ErrorKind::Retryable
        );
        assert_eq!(
            error_kind("AWS.SimpleQueueService.RequestThrottled", Some(403)),
            ErrorKind::Retryable
        );
        assert_eq!(error_kind("QueueDoesNotExist", Some(400)), ErrorKind::Input);
        assert_eq!(
            error_kind("AWS.SimpleQueueService.NonExistentQueue", Some(400)),
            ErrorKind::Input
        );
        assert_eq!(
            error_kind("AccessDenied", Some(403)),
            ErrorKind::AccessDenied
        );
        assert_eq!(
            error_kind("InvalidClientTokenId", Some(403)),
            ErrorKind::AccessDenied
        );
        assert_eq!(error_kind("Whatever", Some(503)), ErrorKind::Retryable);
        assert_eq!(error_kind("", Some(429)), ErrorKind::Retryable);
        assert_eq!(
            error_kind("InvalidParameterValue", Some(400)),
            ErrorKind::Permanent
        );
    }

    #[test]
    fn the_total_visibility_refusal_is_told_apart() {
        let text = "Value 43201 for parameter VisibilityTimeout is invalid. Reason: Total VisibilityTimeout for the message is beyond the limit [43200 seconds]";
        assert!(is_visibility_limit("InvalidParameterValue", text));
        assert!(is_visibility_limit(
            "AWS.SimpleQueueService.InvalidParameterValue",
            text
        ));
        assert!(!is_visibility_limit(
            "InvalidParameterValue",
            "Value -1 for parameter VisibilityTimeout is invalid"
        ));
        assert!(!is_visibility_limit("ReceiptHandleIsInvalid", text));
    }

    #[test]
    fn batch_results_map_back_to_positions() {
        let failed = [
            BatchResultErrorEntry::builder()
                .id("1")
                .sender_fault(true)
                .code("InvalidParameterValue")
                .message("bad")
                .build()
                .unwrap(),
            BatchResultErrorEntry::builder()
                .id("3")
                .sender_fault(false)
                .code("InternalError")
                .build()
                .unwrap(),
        ];
        let r = batch_results("q", 5, ["0".to_string(), "2".to_string()], &failed);
        assert_eq!(r.len(), 5);
        assert!(r[0].is_ok() && r[2].is_ok());
        let e1 = r[1].as_ref().unwrap_err();
        assert_eq!(
            (e1.kind, e1.class.as_str()),
            (ErrorKind::Permanent, "InvalidParameterValue")
        );
        assert_eq!(r[3].as_ref().unwrap_err().kind, ErrorKind::Retryable);
        // An entry SQS said nothing about is retried, never assumed sent.
        assert_eq!(r[4].as_ref().unwrap_err().class, "MissingBatchResult");
    }

    #[test]
    fn redrive_policies_compare_by_value() {
        let a = r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:1:dead","maxReceiveCount":3}"#;
        let b = r#"{"maxReceiveCount":"3","deadLetterTargetArn":"arn:aws:sqs:us-east-1:1:dead"}"#;
        let c = r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:1:dead","maxReceiveCount":4}"#;
        let rp = QueueAttributeName::RedrivePolicy;
        assert!(same_attribute(&rp, a, Some(b)));
        assert!(!same_attribute(&rp, a, Some(c)));
        assert!(!same_attribute(&rp, a, None));
        assert!(!same_attribute(&rp, "", Some(a)));
        assert!(same_attribute(&rp, "", None));
        assert!(same_attribute(
            &QueueAttributeName::VisibilityTimeout,
            "30",
            Some("30")
        ));
        assert!(!same_attribute(
            &QueueAttributeName::VisibilityTimeout,
            "30",
            Some("31")
        ));
    }
}
