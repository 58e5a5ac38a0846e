//! Per-key outcomes (what executors record, one row per key) and, later, the
//! completion-report writer and its summaries.

use serde::{Deserialize, Serialize};

/// What happened to one key. The names (kebab-case) are what reports and logs show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Written to the target (copy or downup).
    Copied,
    /// `--verify` found the target identical: nothing written.
    SkippedIdentical,
    /// `--verify` found only the tags different: PutObjectTagging alone.
    TagsUpdated,
    /// Outside the `--modified-since` / `--not-modified-since` window.
    SkippedFiltered,
    /// The source no longer exists (a warning, not a failure).
    SourceMissing,
    /// Check mode: target matches source.
    Verified,
    /// Parked in the DLQ with its error class and message.
    Failed,
}

impl Outcome {
    /// The report/log name, e.g. `skipped-identical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Copied => "copied",
            Outcome::SkippedIdentical => "skipped-identical",
            Outcome::TagsUpdated => "tags-updated",
            Outcome::SkippedFiltered => "skipped-filtered",
            Outcome::SourceMissing => "source-missing",
            Outcome::Verified => "verified",
            Outcome::Failed => "failed",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
