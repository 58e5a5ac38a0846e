//! Inventory parsing rate: builds an S3 Inventory gzip CSV data file in memory
//! (full `fileSchema`, quoted fields, form-encoded keys; compressed by the
//! system `gzip`) and times the commander's reader over it on one thread:
//! gunzip + MD5 + CSV + key decoding + filters + message items. Prints rows/s.
//! Run through bench/commander.sh (release build), never by `cargo test`.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use common::listing::inventory::{read_data_file, DataFile, Schema};
use common::listing::{FilterSpec, KeyFilter, KeyMap, Selector};

#[derive(Parser)]
struct Args {
    /// Rows in the generated data file.
    #[arg(long, default_value_t = 2_000_000)]
    rows: usize,
    /// Timed passes (the best and the median are printed).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

const SCHEMA: &str = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass, IsMultipartUploaded, ReplicationStatus, EncryptionStatus";

fn generate(rows: usize) -> anyhow::Result<Vec<u8>> {
    let mut gzip = Command::new("gzip")
        .args(["-1", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = gzip.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut stdin);
        for i in 0..rows {
            let key = if i % 20 == 0 {
                format!("photos/2024/{:02}/holiday+pic+{i:09}%2B1.jpg", i % 12 + 1)
            } else {
                format!(
                    "data/year=2024/month={:02}/part-{i:09}.snappy.parquet",
                    i % 12 + 1
                )
            };
            writeln!(
                out,
                "\"src-bucket\",\"{key}\",\"\",\"true\",\"false\",\"{}\",\"2024-{:02}-15T10:20:30.000Z\",\"{:032x}\",\"STANDARD\",\"false\",\"\",\"SSE-S3\"",
                1000 + i % 5000,
                i % 12 + 1,
                i as u128 * 0x9e37_79b9_7f4a_7c15,
            )?;
        }
        out.flush()
    });
    let mut gz = Vec::new();
    gzip.stdout.take().expect("piped").read_to_end(&mut gz)?;
    writer.join().expect("writer thread")?;
    anyhow::ensure!(gzip.wait()?.success(), "gzip failed");
    Ok(gz)
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    eprintln!("generating {} rows…", a.rows);
    let gz = generate(a.rows)?;
    let schema = Schema::parse(SCHEMA, "bench")?;
    let file = DataFile {
        key: "bench.csv.gz".into(),
        size: Some(gz.len() as u64),
        md5: None,
    };
    let selector = Arc::new(Selector::new(
        KeyFilter::new(FilterSpec::default())?,
        KeyMap::default(),
    ));
    let mut rates = Vec::new();
    for round in 1..=a.rounds {
        let mut items = 0u64;
        let mut key_bytes = 0u64;
        let start = Instant::now();
        let stats = read_data_file(
            &gz[..],
            "bench.csv.gz",
            &file,
            &schema,
            &selector,
            None,
            &mut |_, item| {
                items += 1;
                key_bytes += item.key.len() as u64;
                Ok(())
            },
        )?;
        let secs = start.elapsed().as_secs_f64();
        anyhow::ensure!(
            items == a.rows as u64 && stats.rows == a.rows as u64,
            "lost rows"
        );
        let rate = stats.rows as f64 / secs;
        eprintln!(
            "round {round}: {} rows in {secs:.2} s = {rate:.0} rows/s ({:.1} MB/s gzip in, {} key bytes)",
            stats.rows,
            gz.len() as f64 / secs / 1e6,
            key_bytes
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    let best = rates.last().copied().unwrap_or_default();
    let median = rates[rates.len() / 2];
    println!(
        "inventory parse: {} rows ({:.1} MB gzip), one thread: best {best:.0} rows/s, median {median:.0} rows/s",
        a.rows,
        gz.len() as f64 / 1e6
    );
    Ok(())
}
