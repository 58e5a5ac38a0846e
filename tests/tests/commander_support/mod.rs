//! Helpers shared by the `commander_*` end-to-end tests: upload many objects
//! concurrently, run the real binary with a JSON summary, and read every
//! message back from the work queues.

#![allow(dead_code)]

use std::collections::BTreeMap;

use common::message::{decode, Batch};
use futures::stream::{self, StreamExt};
use testsupport::runs::{drain, Run, Sandbox};

/// Upload `keys` (body = the key's bytes, or `body`) 32 at a time.
pub async fn put_many(bucket: &str, keys: &[String], body: Option<&[u8]>) {
    stream::iter(keys.iter().cloned())
        .map(|k| {
            let bytes = body
                .map(<[u8]>::to_vec)
                .unwrap_or_else(|| k.as_bytes().to_vec());
            async move { testsupport::put(bucket, &k, bytes).await }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

/// A sandbox with queues created.
pub fn sandbox(queues: usize) -> Sandbox {
    let sb = Sandbox::new("cmd", queues);
    sb.init();
    sb
}

/// Run `commander run <args> --json`; returns the run and its parsed summary.
pub fn run_json(sb: &Sandbox, args: &[&str]) -> (Run, serde_json::Value) {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.push("--json");
    let run = sb.commander(&all);
    let summary = serde_json::from_str(&run.stdout).unwrap_or(serde_json::Value::Null);
    (run, summary)
}

/// Every message of the work queues: (queue number, body length, batch).
pub async fn read_back(sb: &Sandbox, queues: usize) -> Vec<(usize, usize, Batch)> {
    let mut out = Vec::new();
    for n in 1..=queues {
        for m in drain(&sb.queue(n)).await {
            let batch = decode(&m.body).unwrap_or_else(|e| panic!("bad message {}: {e}", m.body));
            out.push((n, m.body.len(), batch));
        }
    }
    out
}

/// Source keys of the batches, with how often each arrived.
pub fn key_counts(batches: &[(usize, usize, Batch)]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (_, _, b) in batches {
        for k in &b.keys {
            *counts.entry(k.key.clone()).or_insert(0) += 1;
        }
    }
    counts
}

/// Assert every expected key arrived exactly once and nothing else did.
pub fn assert_exactly(batches: &[(usize, usize, Batch)], expected: &[String]) {
    let counts = key_counts(batches);
    let twice: Vec<_> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k)
        .collect();
    assert!(twice.is_empty(), "keys sent more than once: {twice:?}");
    let mut want: Vec<&String> = expected.iter().collect();
    want.sort();
    want.dedup();
    let got: Vec<&String> = counts.keys().collect();
    let missing: Vec<_> = want
        .iter()
        .filter(|k| !counts.contains_key(k.as_str()))
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|k| want.binary_search(k).is_err())
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
}

/// A summary counter.
pub fn num(summary: &serde_json::Value, field: &str) -> u64 {
    summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no `{field}` in {summary}"))
}
