//! The embedded queue backend: one SQLite file (WAL mode) holding every work
//! queue and the DLQ, with SQS semantics — visibility timeout, receive count,
//! redrive to the DLQ, delete by receipt handle, visibility changes, retention
//! and approximate depths.
//!
//! Several processes on one host may share the file: every state change is one
//! SQLite transaction (a receive is a single `BEGIN IMMEDIATE` transaction, so
//! two consumers never get the same visible message), and nothing is held in
//! memory between calls, so a crashed process loses nothing — a message it
//! received and never deleted reappears after its visibility timeout.
//! The file must live on a local file system (SQLite's WAL needs shared memory).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use super::{
    valid_sqs_char, Depths, Ensured, Outgoing, QueueService, QueueSpec, Received, WorkQueue,
    MAX_BATCH_ENTRIES, MAX_MESSAGE_BYTES, MAX_TOTAL_VISIBILITY, STALE_RECEIPT_CLASS,
    VISIBILITY_LIMIT_CLASS,
};
use crate::error::{Error, ErrorKind, Result};

/// Schema version stored in `PRAGMA user_version`; a file made by a newer
/// version is refused rather than misread. Version 2 added `received_at`
/// (the total-visibility cap); a version-1 file is upgraded in place on open.
const SCHEMA_VERSION: i64 = 2;

/// How long a writer waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause between two looks at an empty queue during a long poll.
const POLL_INTERVAL: Duration = Duration::from_millis(150);

/// SQS's limits, enforced here too so both backends accept the same specs.
const MAX_VISIBILITY: Duration = Duration::from_secs(43_200);
const MAX_WAIT: Duration = Duration::from_secs(20);
const MIN_RETENTION: Duration = Duration::from_secs(60);
const MAX_RETENTION: Duration = Duration::from_secs(1_209_600);
const MAX_RECEIVE_COUNT: u32 = 1000;

/// Idle connections kept per service (one per concurrently running call).
const POOL_SIZE: usize = 8;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queues (
    name               TEXT PRIMARY KEY,
    visibility_timeout INTEGER NOT NULL,  -- ms
    wait_time          INTEGER NOT NULL,  -- ms
    retention          INTEGER NOT NULL,  -- ms
    dlq                TEXT,              -- dead-letter queue name, NULL = no redrive
    max_receive_count  INTEGER,
    created_at         INTEGER NOT NULL   -- unix ms
);
CREATE TABLE IF NOT EXISTS messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id    TEXT NOT NULL,
    queue         TEXT NOT NULL,
    body          TEXT NOT NULL,
    attributes    TEXT NOT NULL,          -- JSON object of string attributes
    sent_at       INTEGER NOT NULL,       -- unix ms, kept when moved to the DLQ (retention)
    visible_at    INTEGER NOT NULL,       -- unix ms; > now = in flight
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT,                   -- receipt handle of the latest receive
    received_at   INTEGER                 -- unix ms of the latest receive (visibility cap)
);
CREATE INDEX IF NOT EXISTS messages_by_visibility ON messages (queue, visible_at, id);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_receipt ON messages (receipt);
";

/// The time source of the embedded queue: wall-clock milliseconds plus an
/// offset that only tests move ([`Clock::advance`]), so visibility and
/// retention can be exercised without sleeping. Clones share the offset.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// Wall-clock time; what production uses.
    pub fn system() -> Self {
        Clock::default()
    }

    /// Move this clock (and its clones) forward. For tests: every service
    /// sharing the file must share the clock, or they disagree on time.
    pub fn advance(&self, by: Duration) {
        self.offset_ms.fetch_add(ms(by), Ordering::SeqCst);
    }

    /// Current time in unix milliseconds.
    fn now_ms(&self) -> i64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        wall + self.offset_ms.load(Ordering::SeqCst)
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// State shared by a service and the queues it opened.
struct Shared {
    path: PathBuf,
    pool: Mutex<Vec<Connection>>,
    clock: Clock,
    /// Cap on a message's visibility from its receive, in ms (SQS's 12 hours
    /// unless a test scales it down with [`LocalService::with_visibility_limit`]).
    visibility_limit_ms: AtomicI64,
}

impl Shared {
    fn subject(&self) -> String {
        self.path.display().to_string()
    }

    fn sql(&self, e: rusqlite::Error) -> Error {
        sql_error(&self.path, e)
    }

    fn take(&self) -> Result<Connection> {
        if let Some(c) = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(c);
        }
        connect(&self.path)
    }

    fn give(&self, conn: Connection) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_SIZE {
            pool.push(conn);
        }
    }

    /// Run blocking SQLite work off the async runtime with a pooled connection
    /// and the current time.
    async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Shared, &mut Connection, i64) -> Result<T> + Send + 'static,
    {
        let shared = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut conn = shared.take()?;
            let now = shared.clock.now_ms();
            let out = f(&shared, &mut conn, now);
            // A failed transaction was rolled back when it was dropped: the
            // connection is still good.
            shared.give(conn);
            out
        })
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::Permanent,
                "TaskFailed",
                self.subject(),
                format!("embedded queue task failed: {e}"),
            )
        })?
    }
}

/// Map a SQLite error: a lock held longer than the busy timeout is worth a
/// retry, anything else (corrupt file, disk full, permissions) is not.
fn sql_error(path: &Path, e: rusqlite::Error) -> Error {
    let busy = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    let (kind, class) = if busy {
        (ErrorKind::Retryable, "SqliteBusy")
    } else {
        (ErrorKind::Permanent, "Sqlite")
    };
    Error::new(
        kind,
        class,
        path.display().to_string(),
        format!("embedded queue: {e}"),
    )
    .with_source(e)
}

fn connect(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| sql_error(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .and_then(|_| conn.pragma_update(None, "synchronous", "FULL"))
        .map_err(|e| sql_error(path, e))?;
    Ok(conn)
}

/// The embedded queue service over one SQLite file.
pub struct LocalService {
    shared: Arc<Shared>,
}

impl fmt::Debug for LocalService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalService")
            .field("path", &self.shared.path)
            .finish()
    }
}

impl LocalService {
    /// Open (creating if needed) the queue file at `path`: parent directories,
    /// schema and WAL mode. Safe to call from several processes at once.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_clock(path, Clock::system())
    }

    /// [`LocalService::open`] with an explicit time source (tests).
    pub fn open_with_clock(path: impl AsRef<Path>, clock: Clock) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                Error::new(
                    ErrorKind::Input,
                    "QueueFile",
                    parent.display().to_string(),
                    format!("cannot create the directory of the embedded queue file: {e}"),
                )
                .with_source(e)
            })?;
        }
        let mut conn = connect(&path)?;
        let sql = |e| sql_error(&path, e);
        // WAL is a property of the file: set once, seen by every later connection.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(sql)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::new(
                ErrorKind::Input,
                "QueueFile",
                path.display().to_string(),
                format!("the embedded queue needs WAL mode but SQLite chose {mode:?} (is the file on a network file system?)"),
            ));
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql)?;
        if version > SCHEMA_VERSION {
            return Err(Error::new(
                ErrorKind::Input,
                "QueueFile",
                path.display().to_string(),
                format!("queue file has schema version {version}, newer than this program's {SCHEMA_VERSION}: upgrade the program"),
            ));
        }
        if version == 1 {
            tx.execute_batch("ALTER TABLE messages ADD COLUMN received_at INTEGER")
                .map_err(sql)?;
        }
        tx.execute_batch(SCHEMA).map_err(sql)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
        let shared = Shared {
            path,
            pool: Mutex::new(vec![conn]),
            clock,
            visibility_limit_ms: AtomicI64::new(ms(MAX_TOTAL_VISIBILITY)),
        };
        Ok(LocalService {
            shared: Arc::new(shared),
        })
    }

    /// Scale the total-visibility cap ([`MAX_TOTAL_VISIBILITY`] by default)
    /// down, so a test can reach it. Applies to this service and its queues.
    pub fn with_visibility_limit(self, limit: Duration) -> Self {
        self.shared
            .visibility_limit_ms
            .store(ms(limit), Ordering::SeqCst);
        self
    }

    /// The queue file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

/// A queue's row.
#[derive(Debug, Clone, PartialEq, Eq)]
struct QueueRow {
    visibility_ms: i64,
    wait_ms: i64,
    retention_ms: i64,
    dlq: Option<String>,
    max_receive_count: Option<i64>,
}

impl QueueRow {
    fn from_spec(spec: &QueueSpec) -> Self {
        QueueRow {
            visibility_ms: ms(spec.visibility_timeout),
            wait_ms: ms(spec.receive_wait_time),
            retention_ms: ms(spec.retention),
            dlq: spec.redrive.as_ref().map(|r| r.dead_letter_queue.clone()),
            max_receive_count: spec
                .redrive
                .as_ref()
                .map(|r| i64::from(r.max_receive_count)),
        }
    }

    /// SQS names of the attributes that differ from `other`.
    fn changes(&self, other: &QueueRow) -> Vec<String> {
        let mut out = Vec::new();
        if self.visibility_ms != other.visibility_ms {
            out.push("VisibilityTimeout".to_string());
        }
        if self.wait_ms != other.wait_ms {
            out.push("ReceiveMessageWaitTimeSeconds".to_string());
        }
        if self.retention_ms != other.retention_ms {
            out.push("MessageRetentionPeriod".to_string());
        }
        if self.dlq != other.dlq || self.max_receive_count != other.max_receive_count {
            out.push("RedrivePolicy".to_string());
        }
        out
    }
}

fn load_queue(conn: &Connection, name: &str) -> rusqlite::Result<Option<QueueRow>> {
    conn.query_row(
        "SELECT visibility_timeout, wait_time, retention, dlq, max_receive_count
         FROM queues WHERE name = ?1",
        [name],
        |r| {
            Ok(QueueRow {
                visibility_ms: r.get(0)?,
                wait_ms: r.get(1)?,
                retention_ms: r.get(2)?,
                dlq: r.get(3)?,
                max_receive_count: r.get(4)?,
            })
        },
    )
    .optional()
}

fn missing_queue(shared: &Shared, name: &str) -> Error {
    Error::new(
        ErrorKind::Input,
        "QueueDoesNotExist",
        name,
        format!(
            "queue {name} does not exist in {}: run `commander init` first",
            shared.path.display()
        ),
    )
}

fn require_queue(shared: &Shared, conn: &Connection, name: &str) -> Result<QueueRow> {
    load_queue(conn, name)
        .map_err(|e| shared.sql(e))?
        .ok_or_else(|| missing_queue(shared, name))
}

/// SQS's queue-name rule: 1–80 of `[A-Za-z0-9_-]`.
fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 80
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::input(
            name,
            "queue names are 1 to 80 characters of letters, digits, '-' and '_'",
        ))
    }
}

/// The limits SQS puts on a queue's attributes.
fn validate_spec(spec: &QueueSpec) -> Result<()> {
    validate_name(&spec.name)?;
    let bad = |what: &str, range: &str| {
        Err(Error::input(
            &spec.name,
            format!("{what} must be {range} (as in SQS)"),
        ))
    };
    if spec.visibility_timeout > MAX_VISIBILITY {
        return bad("the visibility timeout", "at most 12 hours");
    }
    if spec.receive_wait_time > MAX_WAIT {
        return bad("the receive wait time", "at most 20 seconds");
    }
    if spec.retention < MIN_RETENTION || spec.retention > MAX_RETENTION {
        return bad(
            "the message retention period",
            "between 60 seconds and 14 days",
        );
    }
    if let Some(r) = &spec.redrive {
        validate_name(&r.dead_letter_queue)?;
        if r.max_receive_count == 0 || r.max_receive_count > MAX_RECEIVE_COUNT {
            return bad("maxReceiveCount", "between 1 and 1000");
        }
        if r.dead_letter_queue == spec.name {
            return bad(
                "the dead-letter queue",
                "another queue than the queue itself",
            );
        }
    }
    Ok(())
}

/// What SQS would reject in one batch entry.
fn validate_message(queue: &str, m: &Outgoing) -> Result<()> {
    let reject =
        |class: &str, msg: String| Err(Error::new(ErrorKind::Permanent, class, queue, msg));
    if m.body.is_empty() {
        return reject(
            "MissingParameter",
            "a message body must not be empty".into(),
        );
    }
    let size = m.size();
    if size > MAX_MESSAGE_BYTES {
        return reject(
            "MessageTooLong",
            format!("message of {size} bytes is over the {MAX_MESSAGE_BYTES}-byte limit"),
        );
    }
    let all_text = std::iter::once(&m.body)
        .chain(m.attributes.keys())
        .chain(m.attributes.values());
    if all_text.flat_map(|s| s.chars()).any(|c| !valid_sqs_char(c)) {
        return reject(
            "InvalidMessageContents",
            "message contains characters SQS does not allow (control characters other than tab, LF, CR)".into(),
        );
    }
    Ok(())
}

#[async_trait]
impl QueueService for LocalService {
    async fn ensure(&self, spec: &QueueSpec) -> Result<Ensured> {
        validate_spec(spec)?;
        let spec = spec.clone();
        self.shared
            .run(move |shared, conn, now| {
                let sql = |e| shared.sql(e);
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sql)?;
                if let Some(r) = &spec.redrive {
                    if load_queue(&tx, &r.dead_letter_queue).map_err(sql)?.is_none() {
                        return Err(Error::input(
                            &spec.name,
                            format!(
                                "dead-letter queue {} does not exist: create it before the queues that use it",
                                r.dead_letter_queue
                            ),
                        ));
                    }
                }
                let want = QueueRow::from_spec(&spec);
                let outcome = match load_queue(&tx, &spec.name).map_err(sql)? {
                    None => {
                        tx.execute(
                            "INSERT INTO queues (name, visibility_timeout, wait_time, retention, dlq, max_receive_count, created_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                            rusqlite::params![spec.name, want.visibility_ms, want.wait_ms, want.retention_ms, want.dlq, want.max_receive_count, now],
                        )
                        .map_err(sql)?;
                        Ensured::Created
                    }
                    Some(have) if have == want => Ensured::Unchanged,
                    Some(have) => {
                        tx.execute(
                            "UPDATE queues SET visibility_timeout = ?2, wait_time = ?3, retention = ?4, dlq = ?5, max_receive_count = ?6
                             WHERE name = ?1",
                            rusqlite::params![spec.name, want.visibility_ms, want.wait_ms, want.retention_ms, want.dlq, want.max_receive_count],
                        )
                        .map_err(sql)?;
                        Ensured::Updated(want.changes(&have))
                    }
                };
                tx.commit().map_err(sql)?;
                Ok(outcome)
            })
            .await
    }

    async fn open(&self, name: &str) -> Result<Arc<dyn WorkQueue>> {
        let owned = name.to_string();
        self.shared
            .run(move |shared, conn, _| require_queue(shared, conn, &owned).map(|_| ()))
            .await?;
        Ok(Arc::new(LocalQueue {
            name: name.to_string(),
            shared: Arc::clone(&self.shared),
        }))
    }
}

/// One queue of the embedded service.
pub struct LocalQueue {
    name: String,
    shared: Arc<Shared>,
}

impl fmt::Debug for LocalQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalQueue")
            .field("name", &self.name)
            .field("path", &self.shared.path)
            .finish()
    }
}

/// One receive attempt in one `BEGIN IMMEDIATE` transaction: drop expired
/// messages, move over-received ones to the DLQ, take up to `max` visible ones.
fn receive_once(
    shared: &Shared,
    conn: &mut Connection,
    now: i64,
    queue: &str,
    max: usize,
    visibility: Option<Duration>,
) -> Result<Vec<Received>> {
    let sql = |e| shared.sql(e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql)?;
    let q = require_queue(shared, &tx, queue)?;
    let expired = tx
        .execute(
            "DELETE FROM messages WHERE queue = ?1 AND sent_at < ?2",
            rusqlite::params![queue, now.saturating_sub(q.retention_ms)],
        )
        .map_err(sql)?;
    if expired > 0 {
        tracing::info!(queue, expired, "dropped messages past the retention period");
    }
    // A redrive whose DLQ is gone would orphan messages: treat it as none.
    let redrive = match (&q.dlq, q.max_receive_count) {
        (Some(dlq), Some(max_rc)) if load_queue(&tx, dlq).map_err(sql)?.is_some() => {
            Some((dlq.clone(), max_rc))
        }
        (Some(dlq), _) => {
            tracing::warn!(queue, dlq, "dead-letter queue is missing; not redriving");
            None
        }
        _ => None,
    };
    let visible_until = now.saturating_add(visibility.map(ms).unwrap_or(q.visibility_ms));
    let mut out = Vec::new();
    let mut taken = HashSet::new();
    // Keyset scan in delivery order (visible_at, id); rows we take get a new
    // visible_at and may show up again later in the scan (visibility 0): skip them.
    let mut after: (i64, i64) = (i64::MIN, i64::MIN);
    'scan: loop {
        let rows = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT id, visible_at, message_id, body, attributes, receive_count FROM messages
                     WHERE queue = ?1 AND visible_at <= ?2 AND (visible_at, id) > (?3, ?4)
                     ORDER BY visible_at, id LIMIT ?5",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map(
                    rusqlite::params![queue, now, after.0, after.1, MAX_BATCH_ENTRIES as i64],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                            r.get::<_, i64>(5)?,
                        ))
                    },
                )
                .map_err(sql)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql)?
        };
        if rows.is_empty() {
            break;
        }
        for (id, visible_at, message_id, body, attributes, count) in rows {
            after = (visible_at, id);
            if taken.contains(&id) {
                continue;
            }
            if let Some((dlq, max_rc)) = &redrive {
                if count >= *max_rc {
                    // SQS moves it on the receive after the last allowed one.
                    tx.execute(
                        "UPDATE messages SET queue = ?2, receive_count = 0, receipt = NULL, visible_at = ?3 WHERE id = ?1",
                        rusqlite::params![id, dlq, now],
                    )
                    .map_err(sql)?;
                    tracing::info!(
                        queue,
                        dlq,
                        message_id,
                        receives = count,
                        "moved message to the dead-letter queue"
                    );
                    continue;
                }
            }
            // The row id in the receipt lets a later delete tell "already
            // deleted" from "received again since" (see `delete`).
            let receipt = format!("{id}-{}", uuid::Uuid::new_v4().simple());
            tx.execute(
                "UPDATE messages SET receive_count = receive_count + 1, receipt = ?2, visible_at = ?3, received_at = ?4 WHERE id = ?1",
                rusqlite::params![id, receipt, visible_until, now],
            )
            .map_err(sql)?;
            let attributes: BTreeMap<String, String> =
                serde_json::from_str(&attributes).unwrap_or_else(|e| {
                    tracing::warn!(queue, message_id, error = %e, "unreadable message attributes; dropping them");
                    BTreeMap::new()
                });
            taken.insert(id);
            out.push(Received {
                message_id,
                receipt,
                body,
                attributes,
                receive_count: u32::try_from(count + 1).unwrap_or(u32::MAX),
            });
            if out.len() >= max {
                break 'scan;
            }
        }
    }
    tx.commit().map_err(sql)?;
    Ok(out)
}

/// A cheap read (no write lock) telling whether a receive could find anything.
fn anything_visible(shared: &Shared, conn: &Connection, now: i64, queue: &str) -> Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE queue = ?1 AND visible_at <= ?2)",
        rusqlite::params![queue, now],
        |r| r.get(0),
    )
    .map_err(|e| shared.sql(e))
}

#[async_trait]
impl WorkQueue for LocalQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send_batch(&self, messages: &[Outgoing]) -> Result<Vec<Result<()>>> {
        super::check_batch_len(&self.name, messages.len())?;
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let checked: Vec<Result<()>> = messages
            .iter()
            .map(|m| validate_message(&self.name, m))
            .collect();
        let valid: Vec<(String, String)> = messages
            .iter()
            .zip(&checked)
            .filter(|(_, c)| c.is_ok())
            .map(|(m, _)| {
                let attrs = serde_json::to_string(&m.attributes).unwrap_or_else(|_| "{}".into());
                (m.body.clone(), attrs)
            })
            .collect();
        let name = self.name.clone();
        self.shared
            .run(move |shared, conn, now| {
                let sql = |e| shared.sql(e);
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sql)?;
                require_queue(shared, &tx, &name)?;
                {
                    let mut stmt = tx
                        .prepare_cached(
                            "INSERT INTO messages (message_id, queue, body, attributes, sent_at, visible_at, receive_count)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?5, 0)",
                        )
                        .map_err(sql)?;
                    for (body, attrs) in &valid {
                        let id = uuid::Uuid::new_v4().to_string();
                        stmt.execute(rusqlite::params![id, name, body, attrs, now])
                            .map_err(sql)?;
                    }
                }
                tx.commit().map_err(sql)
            })
            .await?;
        Ok(checked)
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<Vec<Received>> {
        super::check_receive_max(&self.name, max)?;
        if let Some(v) = visibility.filter(|v| *v > MAX_VISIBILITY) {
            return Err(Error::new(
                ErrorKind::Invalid,
                "InvalidParameterValue",
                &self.name,
                format!("visibility timeout {v:?} is over the 12-hour limit"),
            ));
        }
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        let mut first = true;
        loop {
            let name = self.name.clone();
            let check_only = !first;
            let got = self
                .shared
                .run(move |shared, conn, now| {
                    if check_only && !anything_visible(shared, conn, now, &name)? {
                        return Ok(Vec::new());
                    }
                    receive_once(shared, conn, now, &name, max, visibility)
                })
                .await?;
            first = false;
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
        }
    }

    async fn delete(&self, receipt: &str) -> Result<()> {
        let (name, receipt) = (self.name.clone(), receipt.to_string());
        let (deleted, still_there) = self
            .shared
            .run(move |shared, conn, _| {
                let sql = |e| shared.sql(e);
                let deleted = conn
                    .execute(
                        "DELETE FROM messages WHERE queue = ?1 AND receipt = ?2",
                        [&name, &receipt],
                    )
                    .map_err(sql)?;
                if deleted > 0 {
                    return Ok((true, false));
                }
                // Receipts are `<row id>-<uuid>`: is the message still here
                // (received again, or moved to the DLQ) under another receipt?
                let Some(id) = receipt
                    .split_once('-')
                    .and_then(|(id, _)| id.parse::<i64>().ok())
                else {
                    return Ok((false, false));
                };
                let exists: bool = conn
                    .query_row(
                        "SELECT EXISTS (SELECT 1 FROM messages WHERE id = ?1)",
                        [id],
                        |r| r.get(0),
                    )
                    .map_err(sql)?;
                Ok((false, exists))
            })
            .await?;
        if still_there {
            return Err(Error::new(
                ErrorKind::Invalid,
                STALE_RECEIPT_CLASS,
                &self.name,
                "the receipt handle is stale: the message was received again or moved to the dead-letter queue, and was not deleted",
            ));
        }
        if !deleted {
            tracing::debug!(queue = %self.name, "delete of an already deleted message: nothing to do");
        }
        Ok(())
    }

    async fn set_visibility(&self, receipt: &str, timeout: Duration) -> Result<()> {
        if timeout > MAX_VISIBILITY {
            return Err(Error::new(
                ErrorKind::Invalid,
                "InvalidParameterValue",
                &self.name,
                format!("visibility timeout {timeout:?} is over the 12-hour limit"),
            ));
        }
        let (name, receipt) = (self.name.clone(), receipt.to_string());
        // Some(received_at) when the receipt is current; the cap is checked
        // in the same transaction as the change.
        let outcome = self
            .shared
            .run(move |shared, conn, now| {
                let sql = |e| shared.sql(e);
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sql)?;
                let received_at: Option<Option<i64>> = tx
                    .query_row(
                        "SELECT received_at FROM messages WHERE queue = ?1 AND receipt = ?2",
                        [&name, &receipt],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql)?;
                let Some(received_at) = received_at else {
                    return Ok(Err(STALE_RECEIPT_CLASS));
                };
                let until = now.saturating_add(ms(timeout));
                let limit = shared.visibility_limit_ms.load(Ordering::SeqCst);
                // Rows received before schema 2 have no receive time: uncapped.
                if let Some(at) = received_at {
                    if !timeout.is_zero() && until.saturating_sub(at) > limit {
                        return Ok(Err(VISIBILITY_LIMIT_CLASS));
                    }
                }
                tx.execute(
                    "UPDATE messages SET visible_at = ?3 WHERE queue = ?1 AND receipt = ?2",
                    rusqlite::params![name, receipt, until],
                )
                .map_err(sql)?;
                tx.commit().map_err(sql)?;
                Ok(Ok(()))
            })
            .await?;
        match outcome {
            Ok(()) => Ok(()),
            Err(class) if class == VISIBILITY_LIMIT_CLASS => Err(Error::new(
                ErrorKind::Invalid,
                VISIBILITY_LIMIT_CLASS,
                &self.name,
                format!(
                    "total visibility of the message would pass the {:?} limit from its receive: it will be redelivered",
                    Duration::from_millis(self.shared.visibility_limit_ms.load(Ordering::SeqCst).max(0) as u64)
                ),
            )),
            Err(_) => Err(Error::new(
                ErrorKind::Invalid,
                STALE_RECEIPT_CLASS,
                &self.name,
                "the receipt handle is unknown: the message was deleted or received again by another consumer",
            )),
        }
    }

    async fn depths(&self) -> Result<Depths> {
        let name = self.name.clone();
        self.shared
            .run(move |shared, conn, now| {
                let q = require_queue(shared, conn, &name)?;
                let (visible, in_flight): (i64, i64) = conn
                    .query_row(
                        "SELECT COALESCE(SUM(visible_at <= ?2), 0), COALESCE(SUM(visible_at > ?2), 0)
                         FROM messages WHERE queue = ?1 AND sent_at >= ?3",
                        rusqlite::params![name, now, now.saturating_sub(q.retention_ms)],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(|e| shared.sql(e))?;
                Ok(Depths {
                    visible: visible.max(0) as u64,
                    in_flight: in_flight.max(0) as u64,
                    delayed: 0,
                })
            })
            .await
    }

    /// From the first enqueue time of each message (kept across a move to the DLQ).
    async fn oldest_message_age(&self) -> Result<Option<Duration>> {
        let name = self.name.clone();
        self.shared
            .run(move |shared, conn, now| {
                let q = require_queue(shared, conn, &name)?;
                let oldest: Option<i64> = conn
                    .query_row(
                        "SELECT MIN(sent_at) FROM messages WHERE queue = ?1 AND sent_at >= ?2",
                        rusqlite::params![name, now.saturating_sub(q.retention_ms)],
                        |r| r.get(0),
                    )
                    .map_err(|e| shared.sql(e))?;
                Ok(oldest.map(|t| Duration::from_millis(now.saturating_sub(t).max(0) as u64)))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::dlq::REASON;
    use crate::queue::Redrive;

    const NOW: Duration = Duration::ZERO;

    fn spec(name: &str, visibility: u64, redrive: Option<(&str, u32)>) -> QueueSpec {
        QueueSpec {
            name: name.to_string(),
            visibility_timeout: Duration::from_secs(visibility),
            receive_wait_time: Duration::from_secs(20),
            retention: Duration::from_secs(3600),
            redrive: redrive.map(|(dlq, max)| Redrive {
                dead_letter_queue: dlq.to_string(),
                max_receive_count: max,
            }),
        }
    }

    fn service() -> (tempfile::TempDir, Clock, LocalService) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::system();
        let svc =
            LocalService::open_with_clock(dir.path().join("sub/q.sqlite"), clock.clone()).unwrap();
        (dir, clock, svc)
    }

    #[tokio::test]
    async fn unacknowledged_message_reappears_and_stale_receipts_do_nothing() {
        let (_dir, clock, svc) = service();
        svc.ensure(&spec("work", 30, None)).await.unwrap();
        let q = svc.open("work").await.unwrap();
        q.send_batch(&[Outgoing::body("m1")]).await.unwrap();

        let first = q.receive(10, NOW, None).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].receive_count, 1);
        assert!(
            q.receive(10, NOW, None).await.unwrap().is_empty(),
            "in flight"
        );
        assert_eq!(
            q.depths().await.unwrap(),
            Depths {
                visible: 0,
                in_flight: 1,
                delayed: 0
            }
        );

        clock.advance(Duration::from_secs(31));
        assert_eq!(q.depths().await.unwrap().visible, 1);
        let second = q.receive(10, NOW, None).await.unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].message_id, first[0].message_id);
        assert_eq!(second[0].receive_count, 2);
        assert_ne!(second[0].receipt, first[0].receipt);

        // The first consumer's receipt is stale: no delete (and it is told
        // so: the message is not done), no visibility change.
        let err = q.delete(&first[0].receipt).await.unwrap_err();
        assert_eq!(
            (err.kind, err.class.as_str()),
            (ErrorKind::Invalid, STALE_RECEIPT_CLASS)
        );
        assert_eq!(q.depths().await.unwrap().in_flight, 1);
        let err = q.set_visibility(&first[0].receipt, NOW).await.unwrap_err();
        assert_eq!(
            (err.kind, err.class.as_str()),
            (ErrorKind::Invalid, STALE_RECEIPT_CLASS)
        );

        q.delete(&second[0].receipt).await.unwrap();
        q.delete(&second[0].receipt).await.unwrap();
        // Once the message is gone, an old receipt is "already deleted".
        q.delete(&first[0].receipt).await.unwrap();
        assert!(q.depths().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn visibility_is_capped_from_the_receive_like_sqs() {
        let (_dir, clock, svc) = service();
        let svc = svc.with_visibility_limit(Duration::from_secs(60));
        svc.ensure(&spec("work", 30, None)).await.unwrap();
        let q = svc.open("work").await.unwrap();
        q.send_batch(&[Outgoing::body("long")]).await.unwrap();
        let got = q.receive(1, NOW, None).await.unwrap();
        let receipt = &got[0].receipt;
        q.set_visibility(receipt, Duration::from_secs(50))
            .await
            .unwrap();
        clock.advance(Duration::from_secs(20));
        q.set_visibility(receipt, Duration::from_secs(35))
            .await
            .unwrap();
        clock.advance(Duration::from_secs(20));
        let err = q
            .set_visibility(receipt, Duration::from_secs(30))
            .await
            .unwrap_err();
        assert_eq!(
            (err.kind, err.class.as_str()),
            (ErrorKind::Invalid, VISIBILITY_LIMIT_CLASS)
        );
        // The refused extension changed nothing: visible 55 s after the receive.
        clock.advance(Duration::from_secs(16));
        let again = q.receive(1, NOW, None).await.unwrap();
        assert_eq!(again.len(), 1, "redelivered at the cap");
        // A new receive starts a new allowance; returning is always allowed.
        q.set_visibility(&again[0].receipt, Duration::from_secs(59))
            .await
            .unwrap();
        q.set_visibility(&again[0].receipt, NOW).await.unwrap();
    }

    #[tokio::test]
    async fn the_oldest_message_age_counts_from_its_enqueue() {
        let (_dir, clock, svc) = service();
        svc.ensure(&spec("dead", 30, None)).await.unwrap();
        svc.ensure(&spec("work", 30, Some(("dead", 1))))
            .await
            .unwrap();
        let q = svc.open("work").await.unwrap();
        assert_eq!(q.oldest_message_age().await.unwrap(), None);
        q.send_batch(&[Outgoing::body("old")]).await.unwrap();
        clock.advance(Duration::from_secs(100));
        q.send_batch(&[Outgoing::body("new")]).await.unwrap();
        let age = q.oldest_message_age().await.unwrap().unwrap();
        assert!(
            age >= Duration::from_secs(100) && age < Duration::from_secs(160),
            "{age:?}"
        );
        // Being received does not make a message younger.
        let got = q.receive(10, NOW, None).await.unwrap();
        assert_eq!(got.len(), 2);
        assert!(q.oldest_message_age().await.unwrap().unwrap() >= Duration::from_secs(100));
    }

    #[tokio::test]
    async fn a_version_1_file_is_upgraded_and_its_messages_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&SCHEMA.replace(
                "    receipt       TEXT,                   -- receipt handle of the latest receive\n    received_at   INTEGER                 -- unix ms of the latest receive (visibility cap)\n",
                "    receipt       TEXT\n",
            ))
            .unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO queues VALUES ('work', 30000, 0, 3600000, NULL, NULL, 0)",
                [],
            )
            .unwrap();
            let now = Clock::system().now_ms();
            conn.execute(
                "INSERT INTO messages (message_id, queue, body, attributes, sent_at, visible_at, receive_count, receipt)
                 VALUES ('m1', 'work', 'kept', '{}', ?1, ?1, 0, NULL)",
                [now],
            )
            .unwrap();
            let cols: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM pragma_table_info('messages') WHERE name = 'received_at'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(cols, 0, "the fixture is a version-1 file");
        }
        let svc = LocalService::open(&path).unwrap();
        let q = svc.open("work").await.unwrap();
        let got = q.receive(1, NOW, None).await.unwrap();
        assert_eq!(got[0].body, "kept");
        q.set_visibility(&got[0].receipt, Duration::from_secs(60))
            .await
            .unwrap();
        q.delete(&got[0].receipt).await.unwrap();
        assert!(q.depths().await.unwrap().is_empty());
    }

    proptest::proptest! {
        /// Any reason text, made safe by `attribute_value`, is accepted in an
        /// attribute (the DLQ forward of a poison message cannot be refused).
        #[test]
        fn safe_attribute_values_pass_the_queue_checks(text in proptest::prelude::any::<String>()) {
            let mut m = Outgoing::body("poison");
            m.attributes.insert(REASON.into(), super::super::attribute_value(&text, 1024));
            proptest::prop_assert!(validate_message("dead", &m).is_ok());
        }
    }

    #[tokio::test]
    async fn moves_to_dlq_on_the_receive_after_max_and_keeps_the_message() {
        let (_dir, clock, svc) = service();
        svc.ensure(&spec("dead", 30, None)).await.unwrap();
        svc.ensure(&spec("work", 30, Some(("dead", 2))))
            .await
            .unwrap();
        let (q, dead) = (
            svc.open("work").await.unwrap(),
            svc.open("dead").await.unwrap(),
        );
        let mut m = Outgoing::body("poison");
        m.attributes.insert(REASON.into(), "x".into());
        q.send_batch(&[m, Outgoing::body("fine")]).await.unwrap();

        for round in 1..=2 {
            let got = q.receive(10, NOW, None).await.unwrap();
            assert_eq!(got.len(), 2, "round {round}");
            assert!(got.iter().all(|r| r.receive_count == round));
            let fine = got.iter().find(|r| r.body == "fine").unwrap();
            if round == 2 {
                q.delete(&fine.receipt).await.unwrap();
            }
            clock.advance(Duration::from_secs(31));
        }
        assert!(
            q.receive(10, NOW, None).await.unwrap().is_empty(),
            "third receive moves it"
        );
        assert!(q.depths().await.unwrap().is_empty());
        let got = dead.receive(10, NOW, None).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "poison");
        assert_eq!(got[0].attributes.get(REASON).map(String::as_str), Some("x"));
        assert_eq!(got[0].receive_count, 1);
    }

    #[tokio::test]
    async fn messages_past_retention_are_dropped() {
        let (_dir, clock, svc) = service();
        let mut s = spec("work", 30, None);
        s.retention = Duration::from_secs(60);
        svc.ensure(&s).await.unwrap();
        let q = svc.open("work").await.unwrap();
        q.send_batch(&[Outgoing::body("old")]).await.unwrap();
        clock.advance(Duration::from_secs(61));
        q.send_batch(&[Outgoing::body("new")]).await.unwrap();
        assert_eq!(q.depths().await.unwrap().visible, 1);
        let got = q.receive(10, NOW, None).await.unwrap();
        assert_eq!(
            got.iter().map(|r| r.body.as_str()).collect::<Vec<_>>(),
            ["new"]
        );
    }

    #[tokio::test]
    async fn zero_visibility_never_returns_a_message_twice_in_one_call() {
        let (_dir, _clock, svc) = service();
        svc.ensure(&spec("work", 30, None)).await.unwrap();
        let q = svc.open("work").await.unwrap();
        q.send_batch(&[Outgoing::body("a"), Outgoing::body("b")])
            .await
            .unwrap();
        let got = q.receive(10, NOW, Some(NOW)).await.unwrap();
        assert_eq!(got.len(), 2);
        let again = q.receive(10, NOW, None).await.unwrap();
        assert_eq!(again.len(), 2, "visibility 0: visible again at once");
        assert!(again.iter().all(|r| r.receive_count == 2));
    }

    #[tokio::test]
    async fn ensure_reports_what_it_did_and_checks_its_input() {
        let (_dir, _clock, svc) = service();
        assert_eq!(
            svc.ensure(&spec("dead", 30, None)).await.unwrap(),
            Ensured::Created
        );
        assert_eq!(
            svc.ensure(&spec("dead", 30, None)).await.unwrap(),
            Ensured::Unchanged
        );
        assert_eq!(
            svc.ensure(&spec("dead", 60, None)).await.unwrap(),
            Ensured::Updated(vec!["VisibilityTimeout".into()])
        );
        svc.ensure(&spec("work", 30, Some(("dead", 3))))
            .await
            .unwrap();
        assert_eq!(
            svc.ensure(&spec("work", 30, Some(("dead", 5))))
                .await
                .unwrap(),
            Ensured::Updated(vec!["RedrivePolicy".into()])
        );
        let err = svc
            .ensure(&spec("other", 30, Some(("nodlq", 3))))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Input);
        assert!(err.message.contains("nodlq"), "{err}");
        let err = svc.ensure(&spec("bad name!", 30, None)).await.unwrap_err();
        assert_eq!(
            (err.kind, err.subject.as_str()),
            (ErrorKind::Input, "bad name!")
        );
        let err = svc.ensure(&spec("w", 43_201, None)).await.unwrap_err();
        assert!(err.message.contains("visibility"), "{err}");
        let err = svc.open("missing").await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Input);
        assert!(err.to_string().contains("missing") && err.message.contains("commander init"));
    }

    #[tokio::test]
    async fn batch_entries_are_checked_one_by_one() {
        let (_dir, _clock, svc) = service();
        svc.ensure(&spec("work", 30, None)).await.unwrap();
        let q = svc.open("work").await.unwrap();
        let batch = [
            Outgoing::body("ok-1"),
            Outgoing::body(""),
            Outgoing::body("bell\u{7}"),
            Outgoing::body("x".repeat(MAX_MESSAGE_BYTES + 1)),
            Outgoing::body("ok-2\ttab\nline"),
        ];
        let r = q.send_batch(&batch).await.unwrap();
        let classes: Vec<&str> = r
            .iter()
            .map(|r| {
                r.as_ref()
                    .map(|_| "ok")
                    .unwrap_or_else(|e| e.class.as_str())
            })
            .collect();
        assert_eq!(
            classes,
            [
                "ok",
                "MissingParameter",
                "InvalidMessageContents",
                "MessageTooLong",
                "ok"
            ]
        );
        assert!(r.iter().flatten().count() == 2);
        assert!(r
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.kind == ErrorKind::Permanent));
        let got = q.receive(10, NOW, None).await.unwrap();
        let mut bodies: Vec<_> = got.iter().map(|r| r.body.as_str()).collect();
        bodies.sort();
        assert_eq!(bodies, ["ok-1", "ok-2\ttab\nline"]);
        let eleven = vec![Outgoing::body("m"); 11];
        assert_eq!(
            q.send_batch(&eleven).await.unwrap_err().kind,
            ErrorKind::Invalid
        );
        assert_eq!(
            q.receive(11, NOW, None).await.unwrap_err().kind,
            ErrorKind::Invalid
        );
    }

    #[tokio::test]
    async fn refuses_a_file_from_a_newer_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite");
        LocalService::open(&path).unwrap();
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = LocalService::open(&path).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Input);
        assert!(err.message.contains("99"), "{err}");
    }

    #[tokio::test]
    async fn long_poll_waits_for_a_message_sent_meanwhile() {
        let (_dir, _clock, svc) = service();
        svc.ensure(&spec("work", 30, None)).await.unwrap();
        let q = svc.open("work").await.unwrap();
        let sender = Arc::clone(&q);
        let poll = tokio::spawn(async move { q.receive(1, Duration::from_secs(20), None).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        sender.send_batch(&[Outgoing::body("late")]).await.unwrap();
        let got = poll.await.unwrap().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "late");
    }
}
