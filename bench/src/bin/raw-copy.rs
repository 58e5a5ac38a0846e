//! The ceiling peer: list a bucket and CopyObject every key into another with
//! N requests in flight, nothing else (no queue, no checks). Prints objects/s.

use std::time::Instant;

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
    source: String,
    #[arg(long)]
    target: String,
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let s3 = s3mig_bench::s3_client(&a.endpoint, &a.access_key, &a.secret_key);
    let start = Instant::now();
    let mut keys = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(&a.source)
        .into_paginator()
        .send();
    while let Some(page) = pages.try_next().await? {
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
    }
    let n = keys.len();
    stream::iter(keys)
        .map(|k| {
            let s3 = s3.clone();
            let (src, dst) = (a.source.clone(), a.target.clone());
            async move {
                s3.copy_object()
                    .bucket(dst)
                    .key(&k)
                    .copy_source(format!("{src}/{k}"))
                    .send()
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(a.concurrency)
        .try_collect::<()>()
        .await?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "raw-copy: {n} objects in {secs:.2} s = {:.0} objects/s",
        n as f64 / secs
    );
    Ok(())
}
