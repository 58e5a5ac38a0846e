//! Shared pieces of the S3 migration system.
//!
//! Both binaries (`commander`, `executor`) are thin shells around these modules:
//!
//! | module     | role |
//! |------------|------|
//! | [`config`]   | defaults → `config.yml` → `.env` → environment → flags, into one validated [`config::Config`] |
//! | [`clients`]  | S3 and SQS clients for a config section (inventory, copy, copy_source) |
//! | [`error`]    | one error type whose [`error::ErrorKind`] says what to do: retry, skip, dead-letter, stop |
//! | [`exit`]     | the exit codes of both binaries, decided from the error that ended a command |
//! | [`location`] | where objects live: `s3://bucket/prefix` or a local directory |
//! | [`message`]  | the versioned queue message (and the legacy Python format) |
//! | [`queue`]    | the [`queue::WorkQueue`] trait; SQS and the embedded SQLite queue |
//! | [`store`]    | the [`store::ObjectStore`] trait; S3 and local directories |
//! | [`listing`]  | sources of keys (parallel ListObjectsV2, S3 Inventory, CSV manifest) and batching |
//! | [`transfer`] | plan and run one object's copy (server-side, part copy, streaming) |
//! | [`verify`]   | compare source and target metadata into a verdict |
//! | [`window`]   | the date window of `--modified-since` / `--not-modified-since`, for both binaries |
//! | [`report`]   | per-key outcome rows and their summaries |
//! | [`retry`]    | one retry policy for every retry loop: jittered backoff bounded by attempts and time |
//! | [`logging`]  | tracing setup shared by both binaries |

pub mod checksum;
pub mod clients;
pub mod config;
pub mod error;
pub mod exit;
pub mod listing;
pub mod location;
pub mod logging;
pub mod message;
pub mod queue;
pub mod report;
pub mod retry;
pub mod store;
pub mod transfer;
pub mod verify;
pub mod window;

pub use error::{Error, ErrorKind, Result};
