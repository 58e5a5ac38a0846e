//! The fault proxy itself: each fault reaches the SDK as the error it imitates,
//! and failed SendMessageBatch entries are really not delivered.
//! `CorruptPart` is shown here on moto, which stores a damaged part as sent
//! (it checks no digest): LocalStack's refusal is in tests/tests/checksums.rs.

use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use testsupport::faultproxy::{Fault, FaultConfig, FaultProxy};

fn s3_via(url: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "t"))
        .endpoint_url(url)
        .force_path_style(true)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

fn only(kind: Fault) -> FaultConfig {
    FaultConfig {
        s3_rate: 1.0,
        sqs_rate: 1.0,
        kinds: vec![kind],
        ..Default::default()
    }
}

#[tokio::test]
async fn s3_faults_reach_the_client() {
    let bucket = testsupport::bucket("fp").await;
    testsupport::put(&bucket, "k", vec![7u8; 4096]).await;
    let proxy = FaultProxy::start(&testsupport::endpoint(), FaultConfig::default(), 1).await;
    let s3 = s3_via(&proxy.url());

    // No faults: transparent.
    let got = s3
        .get_object()
        .bucket(&bucket)
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().len(), 4096);

    proxy.set_config(only(Fault::SlowDown));
    let e = s3
        .head_object()
        .bucket(&bucket)
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(503));

    proxy.set_config(only(Fault::InternalError));
    let e = s3
        .get_object()
        .bucket(&bucket)
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(500));

    proxy.set_config(only(Fault::Reset));
    let e = s3
        .get_object()
        .bucket(&bucket)
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert!(e.raw_response().is_none(), "a reset has no response: {e:?}");

    proxy.set_config(only(Fault::Truncate));
    // Small bodies are cut before the headers leave; larger ones mid-body: either
    // way the client must never see a complete object.
    match s3.get_object().bucket(&bucket).key("k").send().await {
        Err(e) => assert!(e.raw_response().is_none(), "{e:?}"),
        Ok(got) => assert!(
            got.body.collect().await.is_err(),
            "a truncated body must not read as complete"
        ),
    }

    proxy.set_config(only(Fault::ErrorBody200));
    let e = s3
        .copy_object()
        .bucket(&bucket)
        .key("k2")
        .copy_source(format!("{bucket}/k"))
        .send()
        .await;
    assert!(
        e.is_err(),
        "200 with an error body must be an error for CopyObject"
    );
    proxy.set_config(FaultConfig::default());
    assert!(
        s3.head_object()
            .bucket(&bucket)
            .key("k2")
            .send()
            .await
            .is_err(),
        "the faulted copy was not forwarded"
    );

    let stats = proxy.stats();
    assert_eq!(stats.total_faults(), 5);
}

#[tokio::test]
async fn storm_throttles_everything_then_recovers() {
    let bucket = testsupport::bucket("fp").await;
    let proxy = FaultProxy::start(&testsupport::endpoint(), FaultConfig::default(), 2).await;
    let s3 = s3_via(&proxy.url());
    proxy.set_config(FaultConfig {
        storm_until: Some(Instant::now() + Duration::from_secs(60)),
        ..Default::default()
    });
    assert!(s3.list_objects_v2().bucket(&bucket).send().await.is_err());
    proxy.set_config(FaultConfig {
        storm_until: Some(Instant::now()),
        ..Default::default()
    });
    assert!(s3.list_objects_v2().bucket(&bucket).send().await.is_ok());
}

#[tokio::test]
async fn failed_batch_entries_are_not_delivered() {
    let proxy = FaultProxy::start(&testsupport::endpoint(), only(Fault::BatchEntries), 3).await;
    let direct = testsupport::sqs();
    let name = testsupport::unique("fpq");
    let url = direct
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing", "testing", None, None, "t",
        ))
        .endpoint_url(proxy.url())
        .build();
    let via = aws_sdk_sqs::Client::from_conf(conf);
    let mut req = via.send_message_batch().queue_url(&url);
    for i in 0..10 {
        req = req.entries(
            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(format!("m{i}"))
                .build()
                .unwrap(),
        );
    }
    let out = req.send().await.unwrap();
    let failed = out.failed().len();
    assert!(failed >= 1, "the proxy fails at least one entry");
    assert_eq!(out.successful().len() + failed, 10);
    let mut delivered = 0;
    for _ in 0..5 {
        let r = direct
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        delivered += r.messages().len();
    }
    assert_eq!(delivered, 10 - failed);
}

/// `CorruptPart` with `max_faults: 1`: the first UploadPart's body reaches
/// the server with one byte flipped (same length), the next one intact.
#[tokio::test]
async fn corrupt_part_flips_one_byte_of_the_first_parts_only() {
    let bucket = testsupport::bucket("fp-corrupt").await;
    let faults = FaultConfig {
        max_faults: Some(1),
        ..only(Fault::CorruptPart)
    };
    let proxy = FaultProxy::start(&testsupport::endpoint(), faults, 4).await;
    let s3 = s3_via(&proxy.url());
    let body: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let tail = vec![9u8; 1000];
    let up = s3
        .create_multipart_upload()
        .bucket(&bucket)
        .key("k")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let mut parts = Vec::new();
    for (n, b) in [(1, &body), (2, &tail)] {
        let p = s3
            .upload_part()
            .bucket(&bucket)
            .key("k")
            .upload_id(id)
            .part_number(n)
            .body(b.clone().into())
            .send()
            .await
            .unwrap();
        parts.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(n)
                .e_tag(p.e_tag().unwrap())
                .build(),
        );
    }
    s3.complete_multipart_upload()
        .bucket(&bucket)
        .key("k")
        .upload_id(id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let got = testsupport::s3()
        .get_object()
        .bucket(&bucket)
        .key("k")
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let mut want = body.clone();
    want[body.len() / 2] ^= 0x01;
    want.extend_from_slice(&tail);
    assert_eq!(got.len(), want.len());
    assert!(
        got.as_ref() == want.as_slice(),
        "one byte of part 1 flipped"
    );
    let stats = proxy.stats();
    assert_eq!(stats.total_faults(), 1, "{stats:?}");
    // moto accepts the damaged part (it checks no digest).
    assert_eq!(stats.corrupted, [(200, String::new())]);
}

/// `hidden_buckets`: HEAD of an object there is 404; HeadBucket, GET and
/// other buckets' objects are untouched.
#[tokio::test]
async fn hidden_buckets_hide_objects_from_head_only() {
    let hidden = testsupport::bucket("fp-hidden").await;
    let seen = testsupport::bucket("fp-seen").await;
    testsupport::put(&hidden, "k", b"here".to_vec()).await;
    testsupport::put(&seen, "k", b"here".to_vec()).await;
    let faults = FaultConfig {
        hidden_buckets: vec![hidden.clone()],
        ..FaultConfig::default()
    };
    let proxy = FaultProxy::start(&testsupport::endpoint(), faults, 5).await;
    let s3 = s3_via(&proxy.url());
    let e = s3
        .head_object()
        .bucket(&hidden)
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert!(
        e.as_service_error().is_some_and(|s| s.is_not_found()),
        "{e:?}"
    );
    s3.head_bucket().bucket(&hidden).send().await.unwrap();
    s3.head_object()
        .bucket(&seen)
        .key("k")
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object()
        .bucket(&hidden)
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        b"here"
    );
    let stats = proxy.stats();
    assert_eq!(stats.total_faults(), 1, "{stats:?}");
}
