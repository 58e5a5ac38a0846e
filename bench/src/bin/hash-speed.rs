//! Raw hashing speed on one thread: each S3 checksum algorithm (through
//! `common::checksum::digest`, the code downup streams through) and MD5 (which
//! downup computes on every byte as well), over one buffer in memory. Shows
//! where the CPU of a downup with checksums goes. Prints GB/s (10^9 bytes/s).
//! Run through bench/checksum.sh (release build), never by `cargo test`.

use std::time::Instant;

use clap::Parser;
use common::checksum::{digest, Algorithm};
use md5::Digest as _;

#[derive(Parser)]
struct Args {
    /// Buffer size in MiB.
    #[arg(long, default_value_t = 256)]
    mib: usize,
    /// Timed passes per algorithm (the best is printed).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn main() {
    let a = Args::parse();
    // Not constant bytes: an xorshift fill, so no hasher meets a trivial input.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let buf: Vec<u8> = (0..a.mib * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    // `None` is MD5.
    let rows = Algorithm::ALL.into_iter().map(Some).chain([None]);
    println!("{:<20} {:>8}", "algorithm", "GB/s");
    for alg in rows {
        let name = alg.map_or("MD5 (every downup)", Algorithm::as_str);
        let mut best = f64::MAX;
        for _ in 0..a.rounds.max(1) {
            let t = Instant::now();
            let data = std::hint::black_box(&buf[..]);
            let len = match alg {
                Some(alg) => digest(alg, data).base64().len(),
                None => md5::Md5::digest(data).len(),
            };
            std::hint::black_box(len);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("{name:<20} {:>8.2}", buf.len() as f64 / best / 1e9);
    }
}
