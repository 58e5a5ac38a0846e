//! The optional AbortIncompleteMultipartUpload rule on the target bucket
//! (template parameter `AbortIncompleteUploadDays`). The custom resource's
//! inline Lambda code is taken from the template, exactly as CloudFormation
//! would deploy it, and run with the project's Python and boto3 against moto
//! (LocalStack for the bucket-wide setting moto does not keep). Only
//! `cfnresponse`, Lambda's helper module for inline code (not an AWS API), is
//! replaced: by a stand-in that records the one answer CloudFormation would get.

use std::path::PathBuf;
use std::process::Command;

use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
    LifecycleExpiration, LifecycleRule, LifecycleRuleAndOperator, LifecycleRuleFilter,
    NoncurrentVersionExpiration, Tag, Transition, TransitionDefaultMinimumObjectSize,
    TransitionStorageClass,
};
use serde_json::{json, Value};
use testsupport::{workspace_root, Server};

const FUNCTION: &str = "AbortIncompleteUploadsFunction";
const CUSTOM: &str = "AbortIncompleteUploadsRule";
const ROLE: &str = "AbortIncompleteUploadsRole";
/// The rule id the template gives a stack named `s3mig`.
const RULE_ID: &str = "s3-migration-abort-incomplete-s3mig";
/// Inline Lambda code (`Code.ZipFile`) may have at most this many characters.
const ZIPFILE_LIMIT: usize = 4096;

fn template() -> Value {
    let path = workspace_root().join("cloudformation/s3-migration.yaml");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("{} does not parse as YAML: {e}", path.display()))
}

fn resource(tpl: &Value, id: &str) -> Value {
    let r = tpl["Resources"][id].clone();
    assert!(!r.is_null(), "the template has no resource {id}");
    r
}

// ---------------------------------------------------------------- the Lambda, run locally

/// Records every `cfnresponse.send` as one JSON line in `$CFNRESPONSE_RECORD`,
/// with the signature of Lambda's module.
const CFNRESPONSE_STAND_IN: &str = r#"import json, os
SUCCESS = "SUCCESS"
FAILED = "FAILED"


def send(event, context, responseStatus, responseData, physicalResourceId=None, noEcho=False, reason=None):
    body = {"Status": responseStatus, "Reason": reason,
            "PhysicalResourceId": physicalResourceId or context.log_stream_name,
            "RequestId": event["RequestId"], "Data": responseData}
    with open(os.environ["CFNRESPONSE_RECORD"], "a") as f:
        f.write(json.dumps(body) + "\n")
"#;

/// Calls `index.handler` the way Lambda does: one event, a context object.
const DRIVER: &str = r#"import json, sys
import index


class Context:
    log_stream_name = "2026/12/01/[$LATEST]0123456789abcdef"


index.handler(json.loads(sys.argv[1]), Context())
"#;

/// The log stream name the driver's context carries: cfnresponse's physical
/// id when the handler gives none.
const LOG_STREAM: &str = "2026/12/01/[$LATEST]0123456789abcdef";

/// What CloudFormation would receive for one request.
#[derive(Debug)]
struct Answer {
    status: String,
    physical_id: String,
    reason: String,
}

/// The template's inline handler in a temporary directory, beside the
/// cfnresponse stand-in, pointed at one test server.
struct Lambda {
    dir: tempfile::TempDir,
    server: Server,
}

impl Lambda {
    fn new(server: Server) -> Lambda {
        let tpl = template();
        let code = resource(&tpl, FUNCTION)["Properties"]["Code"]["ZipFile"]
            .as_str()
            .expect("the function's code is inline (Code.ZipFile)")
            .to_string();
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, text) in [
            ("index.py", code.as_str()),
            ("cfnresponse.py", CFNRESPONSE_STAND_IN),
            ("driver.py", DRIVER),
        ] {
            std::fs::write(dir.path().join(name), text).expect("write handler files");
        }
        Lambda { dir, server }
    }

    fn python() -> PathBuf {
        let py = workspace_root().join(".venv/bin/python");
        assert!(
            py.exists(),
            "{} is missing: run the tests with scripts/test, which installs it (with boto3)",
            py.display()
        );
        py
    }

    /// One request; `old_id` is the physical id of the resource being updated
    /// or deleted. Exactly one answer must come back (none would hang the stack).
    fn invoke(&self, kind: &str, props: &Value, old_id: Option<&str>) -> Answer {
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut event = json!({
            "RequestType": kind,
            "ResponseURL": "https://cloudformation-response.invalid/",
            "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/s3mig/0000",
            "RequestId": request_id,
            "ResourceType": "Custom::AbortIncompleteUploads",
            "LogicalResourceId": CUSTOM,
            "ResourceProperties": props,
        });
        if let Some(id) = old_id {
            event["PhysicalResourceId"] = json!(id);
        }
        let record = self.dir.path().join(format!("answer-{request_id}.jsonl"));
        let out = Command::new(Self::python())
            .current_dir(self.dir.path())
            .arg(self.dir.path().join("driver.py"))
            .arg(event.to_string())
            .env_remove("AWS_PROFILE")
            .envs(self.server.server_env())
            .env("AWS_DEFAULT_REGION", testsupport::REGION)
            .env("CFNRESPONSE_RECORD", &record)
            .output()
            .expect("run the handler with .venv/bin/python");
        let log = format!(
            "stdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "the handler raised:\n{log}");
        let text = std::fs::read_to_string(&record).unwrap_or_default();
        let answers: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("answer JSON"))
            .collect();
        assert_eq!(
            answers.len(),
            1,
            "{kind}: CloudFormation must get exactly one answer, got {answers:?}\n{log}"
        );
        let a = &answers[0];
        assert_eq!(a["RequestId"], json!(request_id));
        Answer {
            status: a["Status"].as_str().expect("Status").to_string(),
            physical_id: a["PhysicalResourceId"]
                .as_str()
                .expect("PhysicalResourceId")
                .to_string(),
            reason: a["Reason"].as_str().unwrap_or("").to_string(),
        }
    }

    /// Invoke and require SUCCESS; returns the physical id.
    fn ok(&self, kind: &str, props: &Value, old_id: Option<&str>) -> String {
        let a = self.invoke(kind, props, old_id);
        assert_eq!(a.status, "SUCCESS", "{kind} {props}: {a:?}");
        a.physical_id
    }
}

/// The properties the template passes (CloudFormation sends them as strings).
fn props(bucket: &str, prefix: &str, days: &str) -> Value {
    json!({
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:s3mig-AbortIncompleteUploadsFunction",
        "Bucket": bucket,
        "Prefix": prefix,
        "RuleId": RULE_ID,
        "Days": days,
    })
}

// ---------------------------------------------------------------- the bucket's lifecycle

struct Lifecycle {
    rules: Vec<LifecycleRule>,
    min_size: Option<TransitionDefaultMinimumObjectSize>,
}

/// The bucket's lifecycle configuration; None = it has none.
async fn lifecycle(server: Server, bucket: &str) -> Option<Lifecycle> {
    match server
        .s3()
        .get_bucket_lifecycle_configuration()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(out) => Some(Lifecycle {
            rules: out.rules().to_vec(),
            min_size: out.transition_default_minimum_object_size().cloned(),
        }),
        Err(e) => {
            let code = e.as_service_error().and_then(|s| s.meta().code());
            assert_eq!(
                code,
                Some("NoSuchLifecycleConfiguration"),
                "get lifecycle of {bucket}: {e:?}"
            );
            None
        }
    }
}

async fn set_lifecycle(
    server: Server,
    bucket: &str,
    rules: Vec<LifecycleRule>,
    min_size: Option<TransitionDefaultMinimumObjectSize>,
) {
    let conf = BucketLifecycleConfiguration::builder()
        .set_rules(Some(rules))
        .build()
        .expect("lifecycle configuration");
    server
        .s3()
        .put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(conf)
        .set_transition_default_minimum_object_size(min_size)
        .send()
        .await
        .unwrap_or_else(|e| panic!("put lifecycle of {bucket}: {e:?}"));
}

/// Rules an operator already had: other filters, transitions, expirations.
fn existing_rules() -> Vec<LifecycleRule> {
    let archive = LifecycleRule::builder()
        .id("archive-logs")
        .filter(LifecycleRuleFilter::builder().prefix("logs/").build())
        .status(ExpirationStatus::Enabled)
        .transitions(
            Transition::builder()
                .days(30)
                .storage_class(TransitionStorageClass::StandardIa)
                .build(),
        )
        .expiration(LifecycleExpiration::builder().days(365).build())
        .build()
        .expect("rule");
    let tmp = LifecycleRule::builder()
        .id("tmp-tagged")
        .filter(
            LifecycleRuleFilter::builder()
                .and(
                    LifecycleRuleAndOperator::builder()
                        .prefix("tmp/")
                        .tags(
                            Tag::builder()
                                .key("scratch")
                                .value("yes")
                                .build()
                                .expect("tag"),
                        )
                        .build(),
                )
                .build(),
        )
        .status(ExpirationStatus::Enabled)
        .expiration(LifecycleExpiration::builder().days(2).build())
        .build()
        .expect("rule");
    let old_versions = LifecycleRule::builder()
        .id("old-versions")
        .filter(LifecycleRuleFilter::builder().prefix("").build())
        .status(ExpirationStatus::Disabled)
        .noncurrent_version_expiration(
            NoncurrentVersionExpiration::builder()
                .noncurrent_days(90)
                .build(),
        )
        .build()
        .expect("rule");
    vec![archive, tmp, old_versions]
}

/// The bucket's rules; it must have a lifecycle configuration.
async fn rules(server: Server, bucket: &str) -> Vec<LifecycleRule> {
    lifecycle(server, bucket)
        .await
        .unwrap_or_else(|| panic!("{bucket} has no lifecycle configuration"))
        .rules
}

/// A new bucket holding [`existing_rules`], its rules as the server returns
/// them, and the handler pointed at the server.
async fn bucket_with_rules(server: Server, name: &str) -> (String, Vec<LifecycleRule>, Lambda) {
    let bucket = server.bucket(name).await;
    set_lifecycle(server, &bucket, existing_rules(), None).await;
    let before = rules(server, &bucket).await;
    assert_eq!(before.len(), 3, "fixture: {before:?}");
    (bucket, before, Lambda::new(server))
}

fn ours(rules: &[LifecycleRule]) -> Vec<&LifecycleRule> {
    rules.iter().filter(|r| r.id() == Some(RULE_ID)).collect()
}

fn others(rules: &[LifecycleRule]) -> Vec<LifecycleRule> {
    rules
        .iter()
        .filter(|r| r.id() != Some(RULE_ID))
        .cloned()
        .collect()
}

/// Our rule exists exactly once, enabled, on `prefix`, aborting after `days`.
fn assert_our_rule(rules: &[LifecycleRule], prefix: &str, days: i32) {
    let found = ours(rules);
    assert_eq!(found.len(), 1, "our rule once in {rules:?}");
    let r = found[0];
    assert_eq!(r.status(), &ExpirationStatus::Enabled, "{r:?}");
    assert_eq!(
        r.filter().and_then(|f| f.prefix()).unwrap_or(""),
        prefix,
        "{r:?}"
    );
    assert_eq!(
        r.abort_incomplete_multipart_upload()
            .and_then(AbortIncompleteMultipartUpload::days_after_initiation),
        Some(days),
        "{r:?}"
    );
    assert!(
        r.expiration().is_none() && r.transitions().is_empty(),
        "{r:?}"
    );
}

// ---------------------------------------------------------------- tests

#[test]
fn template_wires_the_custom_resource_to_the_tested_code() {
    let tpl = template();
    let param = &tpl["Parameters"]["AbortIncompleteUploadDays"];
    assert_eq!(param["Default"], json!(0), "off unless asked for");
    assert_eq!(param["MaxValue"], json!(365));
    for id in [FUNCTION, CUSTOM, ROLE, "AbortIncompleteUploadsLogGroup"] {
        assert_eq!(
            resource(&tpl, id)["Condition"],
            json!("CreateAbortIncompleteRule"),
            "{id} exists only when the rule is asked for"
        );
    }
    assert_eq!(
        tpl["Conditions"]["CreateAbortIncompleteRule"],
        json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "AbortIncompleteUploadDays"}, "0"]}]})
    );

    let function = resource(&tpl, FUNCTION)["Properties"].clone();
    assert_eq!(function["Handler"], json!("index.handler"));
    assert!(
        function["Runtime"]
            .as_str()
            .is_some_and(|r| r.starts_with("python3.")),
        "{function}"
    );
    let code = function["Code"]["ZipFile"].as_str().expect("inline code");
    assert!(
        code.len() <= ZIPFILE_LIMIT,
        "inline code has {} characters; CloudFormation accepts {ZIPFILE_LIMIT}",
        code.len()
    );

    // The properties the tests send are the ones the template sends.
    let custom = resource(&tpl, CUSTOM)["Properties"].clone();
    let mut sent: Vec<&String> = custom.as_object().expect("properties").keys().collect();
    let sample = props("b", "", "1");
    let mut tested: Vec<&String> = sample.as_object().expect("props").keys().collect();
    sent.sort();
    tested.sort();
    assert_eq!(sent, tested);
    assert_eq!(
        custom["RuleId"],
        json!({"Fn::Sub": "s3-migration-abort-incomplete-${AWS::StackName}"})
    );
    // The rule covers the key range the executors write: the same expression
    // as their write grant's KeyPrefix.
    let executor = resource(&tpl, "ExecutorTaskRole");
    let write = executor["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        .as_array()
        .expect("statements")
        .iter()
        .find(|s| s["Sid"] == "WriteTargetObjects")
        .expect("WriteTargetObjects")
        .clone();
    assert_eq!(
        custom["Prefix"],
        write["Resource"]["Fn::Sub"][1]["KeyPrefix"]
    );

    // Least privilege: the lifecycle of the target bucket, nothing else in S3.
    let role = resource(&tpl, ROLE);
    assert!(role["Properties"].get("ManagedPolicyArns").is_none());
    let statements = role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        .as_array()
        .expect("statements")
        .clone();
    let s3: Vec<&Value> = statements
        .iter()
        .filter(|s| s["Action"].to_string().contains("s3:"))
        .collect();
    assert_eq!(s3.len(), 1, "{statements:?}");
    assert_eq!(
        s3[0]["Action"],
        json!([
            "s3:GetLifecycleConfiguration",
            "s3:PutLifecycleConfiguration"
        ])
    );
    assert_eq!(
        s3[0]["Resource"],
        json!({"Fn::Sub": "arn:${AWS::Partition}:s3:::${TargetBucket}"})
    );
}

#[tokio::test]
async fn create_on_a_bucket_without_lifecycle_adds_our_rule_and_delete_leaves_none() {
    let server = Server::Moto;
    let bucket = server.bucket("lc-none").await;
    let lambda = Lambda::new(server);
    assert!(lifecycle(server, &bucket).await.is_none());

    let p = props(&bucket, "copy/", "7");
    let id = lambda.ok("Create", &p, None);
    let after = lifecycle(server, &bucket).await.expect("a configuration");
    assert_eq!(after.rules.len(), 1, "{:?}", after.rules);
    assert_our_rule(&after.rules, "copy/", 7);

    lambda.ok("Delete", &p, Some(&id));
    assert!(
        lifecycle(server, &bucket).await.is_none(),
        "our rule was the only one: no configuration is left"
    );
}

#[tokio::test]
async fn create_update_and_delete_keep_every_other_rule() {
    let server = Server::Moto;
    let (bucket, before, lambda) = bucket_with_rules(server, "lc-merge").await;

    // Whole bucket (no prefixes configured).
    let p = props(&bucket, "", "7");
    let id = lambda.ok("Create", &p, None);
    let created = rules(server, &bucket).await;
    assert_eq!(others(&created), before, "create changed other rules");
    assert_our_rule(&created, "", 7);

    // A new day count: the same rule (same physical id), changed in place.
    let p3 = props(&bucket, "", "3");
    let id3 = lambda.ok("Update", &p3, Some(&id));
    assert_eq!(id3, id, "days alone do not replace the resource");
    let updated = rules(server, &bucket).await;
    assert_eq!(updated.len(), 4, "{updated:?}");
    assert_eq!(others(&updated), before, "update changed other rules");
    assert_our_rule(&updated, "", 3);

    lambda.ok("Delete", &p3, Some(&id3));
    let deleted = rules(server, &bucket).await;
    assert_eq!(deleted, before, "delete must leave exactly the other rules");
}

#[tokio::test]
async fn a_moved_key_range_replaces_the_rule_and_the_old_delete_keeps_the_new_one() {
    let server = Server::Moto;
    let (bucket, before, lambda) = bucket_with_rules(server, "lc-move").await;
    let other = server.bucket("lc-move-to").await;

    let old = props(&bucket, "data/2024/", "7");
    let old_id = lambda.ok("Create", &old, None);

    // New prefix, same bucket: the rule id is the stack's, so the rule is
    // replaced in place; CloudFormation then deletes the old resource with
    // the old properties, which must not remove the new rule.
    let new = props(&bucket, "copy/", "7");
    let new_id = lambda.ok("Update", &new, Some(&old_id));
    assert_ne!(new_id, old_id, "a new prefix is a new physical id");
    lambda.ok("Delete", &old, Some(&old_id));
    let now = rules(server, &bucket).await;
    assert_eq!(others(&now), before);
    assert_our_rule(&now, "copy/", 7);

    // New bucket: the rule is created there and deleted from the old one.
    let moved = props(&other, "copy/", "7");
    let moved_id = lambda.ok("Update", &moved, Some(&new_id));
    assert_ne!(moved_id, new_id, "a new bucket is a new physical id");
    lambda.ok("Delete", &new, Some(&new_id));
    assert_our_rule(&rules(server, &other).await, "copy/", 7);
    let left = rules(server, &bucket).await;
    assert_eq!(left, before, "the old bucket has its own rules back");
}

#[tokio::test]
async fn failures_are_answered_failed_with_the_reason_and_undo_nothing() {
    let server = Server::Moto;
    let (bucket, before, lambda) = bucket_with_rules(server, "lc-fail").await;

    let missing = testsupport::unique("lc-missing");
    let a = lambda.invoke("Create", &props(&missing, "", "7"), None);
    assert_eq!(a.status, "FAILED", "{a:?}");
    assert!(a.reason.contains("NoSuchBucket"), "{a:?}");
    assert_eq!(
        a.physical_id, LOG_STREAM,
        "a failed create names no rule of ours"
    );

    for days in ["1.5", "-1", "366", "seven"] {
        let a = lambda.invoke("Create", &props(&bucket, "", days), None);
        assert_eq!(a.status, "FAILED", "Days={days}: {a:?}");
        assert!(
            a.reason.contains("AbortIncompleteUploadDays") && a.reason.contains(days),
            "the reason names the parameter and the value: {a:?}"
        );
        // CloudFormation's rollback deletes what the failed create answered.
        lambda.ok("Delete", &props(&bucket, "", days), Some(&a.physical_id));
    }
    assert_eq!(
        rules(server, &bucket).await,
        before,
        "failed requests and their rollbacks leave the bucket as it was"
    );

    // An update that fails keeps the resource's physical id.
    let id = lambda.ok("Create", &props(&bucket, "", "7"), None);
    let a = lambda.invoke("Update", &props(&bucket, "", "0"), Some(&id));
    assert_eq!(
        (a.status.as_str(), a.physical_id.as_str()),
        ("FAILED", id.as_str())
    );
    assert_our_rule(&rules(server, &bucket).await, "", 7);
}

#[tokio::test]
async fn bucket_wide_lifecycle_settings_are_kept() {
    // moto answers a fixed TransitionDefaultMinimumObjectSize; LocalStack keeps it.
    let Some(server) = Server::localstack() else {
        return;
    };
    let bucket = server.bucket("lc-top").await;
    let varies = TransitionDefaultMinimumObjectSize::VariesByStorageClass;
    set_lifecycle(server, &bucket, existing_rules(), Some(varies.clone())).await;
    let before = lifecycle(server, &bucket).await.expect("configuration");
    assert_eq!(before.min_size.as_ref(), Some(&varies), "fixture");
    let lambda = Lambda::new(server);

    let p = props(&bucket, "copy/", "7");
    let id = lambda.ok("Create", &p, None);
    let created = lifecycle(server, &bucket).await.expect("configuration");
    assert_eq!(created.min_size.as_ref(), Some(&varies), "create reset it");
    assert_eq!(others(&created.rules), before.rules);
    assert_our_rule(&created.rules, "copy/", 7);

    lambda.ok("Delete", &p, Some(&id));
    let deleted = lifecycle(server, &bucket).await.expect("configuration");
    assert_eq!(deleted.min_size.as_ref(), Some(&varies), "delete reset it");
    assert_eq!(deleted.rules, before.rules);
}
