//! Corpus generator: creates a bucket and N objects of a given size, many at a time.

use aws_sdk_s3::config::RequestChecksumCalculation;
use clap::Parser;
use futures::{stream, StreamExt, TryStreamExt};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    endpoint: String,
    #[arg(long, default_value = "AK")]
    access_key: String,
    #[arg(long, default_value = "SK")]
    secret_key: String,
    #[arg(long)]
    bucket: String,
    /// Create these buckets too (empty), e.g. the targets.
    #[arg(long)]
    also_create: Vec<String>,
    #[arg(long, default_value_t = 5000)]
    count: usize,
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Key prefix; keys are `<prefix>dir-<i % 50>/obj-<i>`.
    #[arg(long, default_value = "")]
    prefix: String,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Write objects with no additional checksum (the SDK otherwise adds a
    /// CRC32, which s3s-fs keeps and a copy would carry).
    #[arg(long)]
    no_checksum: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mut s3 = s3mig_bench::s3_client(&a.endpoint, &a.access_key, &a.secret_key);
    if a.no_checksum {
        let conf = s3
            .config()
            .to_builder()
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build();
        s3 = aws_sdk_s3::Client::from_conf(conf);
    }
    for b in std::iter::once(&a.bucket).chain(a.also_create.iter()) {
        // Already existing is fine.
        let _ = s3.create_bucket().bucket(b).send().await;
    }
    let body = bytes::Bytes::from(vec![b'x'; a.size]);
    stream::iter(0..a.count)
        .map(|i| {
            let (s3, body) = (s3.clone(), body.clone());
            let key = format!("{}dir-{:02}/obj-{i:07}", a.prefix, i % 50);
            let bucket = a.bucket.clone();
            async move {
                s3.put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(body.into())
                    .send()
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(a.concurrency)
        .try_collect::<()>()
        .await?;
    println!(
        "put-objects: {} objects of {} bytes in {}",
        a.count, a.size, a.bucket
    );
    Ok(())
}
