//! S3 and SQS clients built from a loaded `Config` (custom endpoint, static
//! keys, region from config) used against the moto test server: bucket
//! create, put/get (path-style by default: the endpoint is an IP address
//! with no bucket subdomains), the checksum setting, queue create, send/receive.

use std::collections::BTreeMap;

use aws_sdk_s3::types::ChecksumMode;
use common::clients::{s3_client, sqs_client};
use common::config::{Config, LoadInputs};
use testsupport::{endpoint, unique, ACCESS_KEY, REGION, SECRET_KEY};

/// A config whose every section and SQS point at the test server, set the way
/// users do it: through the environment names of the key table.
fn server_config(extra: &[(&str, &str)]) -> Config {
    let ep = endpoint();
    let mut env = BTreeMap::new();
    for section in ["INVENTORY", "COPY", "COPY_SOURCE"] {
        env.insert(format!("{section}_ENDPOINT_URL"), ep.clone());
        env.insert(
            format!("{section}_AWS_ACCESS_KEY_ID"),
            ACCESS_KEY.to_string(),
        );
        env.insert(
            format!("{section}_AWS_SECRET_ACCESS_KEY"),
            SECRET_KEY.to_string(),
        );
        env.insert(format!("{section}_REGION_NAME"), REGION.to_string());
    }
    env.insert("SQS_ENDPOINT_URL".to_string(), ep);
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    Config::load_from(&LoadInputs {
        env,
        ..LoadInputs::default()
    })
    .expect("config")
}

#[tokio::test]
async fn s3_client_from_config_creates_a_bucket_and_puts_and_gets_an_object() {
    let cfg = server_config(&[]);
    assert_eq!(
        cfg.aws.copy.force_path_style, None,
        "path style comes from the endpoint"
    );
    let s3 = s3_client(&cfg.aws.copy).await;
    let bucket = unique("cfg-clients");
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");
    s3.put_object()
        .bucket(&bucket)
        .key("dir/hello.txt")
        .body(b"hello from config".to_vec().into())
        .send()
        .await
        .expect("put");
    // A client of another section reads what this one wrote.
    let inventory = s3_client(&cfg.aws.inventory).await;
    let got = inventory
        .get_object()
        .bucket(&bucket)
        .key("dir/hello.txt")
        .send()
        .await
        .expect("get");
    let body = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(&body[..], b"hello from config");
    // And the test harness's own client sees the object in the same bucket.
    assert_eq!(
        testsupport::keys(&bucket).await,
        vec!["dir/hello.txt".to_string()]
    );
}

#[tokio::test]
async fn request_checksums_follow_the_configured_mode() {
    let required = s3_client(&server_config(&[]).aws.copy).await;
    let supported = s3_client(
        &server_config(&[("COPY_REQUEST_CHECKSUM_CALCULATION", "when_supported")])
            .aws
            .copy,
    )
    .await;
    let bucket = unique("cfg-checksum");
    required
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    for (client, key) in [(&required, "required"), (&supported, "supported")] {
        client
            .put_object()
            .bucket(&bucket)
            .key(key)
            .body(b"checksum me".to_vec().into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
    }
    let head = |key: &'static str| {
        let c = required.clone();
        let b = bucket.clone();
        async move {
            c.head_object()
                .bucket(b)
                .key(key)
                .checksum_mode(ChecksumMode::Enabled)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        head("required").await.checksum_crc32(),
        None,
        "when_required sends no checksum for PutObject"
    );
    assert!(
        head("supported").await.checksum_crc32().is_some(),
        "when_supported sends the SDK's default CRC32"
    );
}

#[tokio::test]
async fn sqs_client_from_config_creates_a_queue_and_sends_and_receives() {
    let cfg = server_config(&[]);
    assert_eq!(cfg.sqs.endpoint_url, Some(endpoint()));
    let sqs = sqs_client(&cfg).await;
    let name = unique("cfg-queue");
    let url = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .expect("create queue")
        .queue_url
        .unwrap();
    sqs.send_message()
        .queue_url(&url)
        .message_body("{\"keys\":[\"a\"]}")
        .send()
        .await
        .expect("send");
    let got = sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive");
    let msgs = got.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].body(), Some("{\"keys\":[\"a\"]}"));
    // The harness's own client sees the queue under the same name.
    let listed = testsupport::sqs()
        .get_queue_url()
        .queue_name(&name)
        .send()
        .await
        .expect("queue visible to the harness");
    assert_eq!(listed.queue_url(), Some(url.as_str()));
}
