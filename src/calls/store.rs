//! The durable call log: the only module that names sled.
//!
//! Two parts, in the data directory:
//! - `journal/`: every change, appended and made durable with `fdatasync` before a writer is
//!   answered (see [`super::journal`] for why). This is what an acknowledgement rests on.
//! - `calls.sled`: the index the box reads from, built from the journal. Layout (one tree):
//!   `c/<CallSid>` → the call's record as JSON; `t/<first_seen µs, big-endian>/<CallSid>` →
//!   empty, the time index for listing; `d/<key>` → a document kept beside the calls (the
//!   outgoing texts and opt-outs of [`crate::texts`]) as JSON.
//!
//! Writes to one call are serialised by a striped lock; under it a change is appended to the
//! journal's pending buffer and applied to sled, so the journal holds each call's changes in
//! the order they were applied. Durability is group commit: a writer hands a oneshot to the
//! flusher thread, which writes everything pending with one `write` + `fdatasync` and answers
//! every waiter it covered. sled is never flushed on the request path (its own background
//! flush runs); a clean stop flushes and fsyncs it and leaves `calls.sled.clean` with a
//! checksum of its contents. At start the index is trusted only when that marker matches what
//! sled reads back; otherwise (a crash, a power cut, a damaged file) it is rebuilt from the
//! journal. sled's own `flush_async` deadlocks with many concurrent callers (sled issue #1308;
//! shared/reference/sled.md), so it is never used.
//!
//! A failed write (the disk is full, an I/O error) leaves sled holding changes the journal may
//! not have, and sled keeps the first I/O error for good (measured with sled 0.34.7 on a full
//! tmpfs). So after a failure the store drops the index at once, answers every use with
//! [`StoreError::Unavailable`], and rebuilds it from the journal at the next use once there is
//! some free space (at most once per [`REOPEN_INTERVAL`]). Each rebuild starts a new
//! *generation*: a write whose flush had not completed before the failure is refused, so a
//! write lost with the failure is never acknowledged.
//!
//! Damage found at start (a bad block, a flipped byte, a truncated file) is repaired from what
//! is intact when that loses nothing (a damaged index is rebuilt from the journal; a damaged
//! journal is rewritten from an index that is verified intact). When something could not be
//! recovered the store says so: [`Store::fault`] names the file (health is `degraded`, the fault
//! LED lights), an error is logged, and a line is added to `store-damage.txt`.

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::event::CallEvent;
use super::journal::{self, Entry, Segment};
use super::record::{Applied, CallRecord};

const RECORD_PREFIX: &[u8] = b"c/";
const TIME_PREFIX: &[u8] = b"t/";
const DOC_PREFIX: &[u8] = b"d/";
/// Lock stripes for per-call read-modify-write; a power of two well above the core count.
const STRIPES: usize = 64;
/// Least time between two attempts to rebuild the index after a write failed: a disk that
/// stays full must not have it rebuilt for every request.
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(1);
/// How long [`Store::open`] waits for a lock that is about to be let go of.
const LOCK_WAIT: Duration = Duration::from_secs(1);
/// Free space below which a rebuild is not tried: it would fail, or succeed only to fail again
/// at the next write.
const REOPEN_MIN_FREE: u64 = 1024 * 1024;
/// The journal is compacted once it is this much larger than the live records it describes
/// (plus one segment), so old calls pruned by retention leave the disk too.
const COMPACT_RATIO: u64 = 2;

const SLED_DIR: &str = "calls.sled";
const JOURNAL_DIR: &str = "journal";
const CLEAN_MARKER: &str = "calls.sled.clean";
const LOCK_FILE: &str = "store.lock";
const DAMAGE_LOG: &str = "store-damage.txt";

/// A call-log failure. Any of these means the event is *not* known to be on disk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process (usually the running service) holds the store.
    #[error("the call log at {0} is in use by another process (is the service running?)")]
    Locked(PathBuf),
    /// The store could not be opened.
    #[error("cannot open the call log at {path}: {why}")]
    Open {
        /// The directory or file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// Reading or writing the index failed (disk full, I/O error).
    #[error("call log I/O failed: {0}")]
    Io(#[from] sled::Error),
    /// Writing the journal failed; the write may be lost.
    #[error("call log journal write failed: {0}")]
    Flush(Arc<std::io::Error>),
    /// A stored record does not decode; the store is intact but the record is not readable.
    #[error("call record {key} is unreadable: {source}")]
    Corrupt {
        /// The key.
        key: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The flusher thread has stopped (the store is shutting down).
    #[error("call log is shutting down")]
    Closed,
    /// The store was rebuilt after a write failure before this write was on disk; the write
    /// may have been lost with the failure.
    #[error("call log was rebuilt after a write failure; this write is not known to be on disk")]
    Reopened,
    /// A write failed earlier and the store could not be rebuilt yet (the disk is still
    /// full?); it is retried at most every [`REOPEN_INTERVAL`].
    #[error("call log unavailable until it can be reopened: {0}")]
    Unavailable(String),
}

/// The outcome of [`Store::record`].
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The call's record after the event.
    pub record: CallRecord,
    /// Whether the event was new or a retry.
    pub applied: Applied,
}

/// Why a flush request failed (the flusher thread's side of [`StoreError`]).
#[derive(Debug, Clone)]
enum FlushFailure {
    Io(Arc<std::io::Error>),
    Reopened,
    Unavailable(String),
}

impl From<FlushFailure> for StoreError {
    fn from(f: FlushFailure) -> Self {
        match f {
            FlushFailure::Io(e) => StoreError::Flush(e),
            FlushFailure::Reopened => StoreError::Reopened,
            FlushFailure::Unavailable(why) => StoreError::Unavailable(why),
        }
    }
}

/// A writer waiting for the disk: how far into the journal its change ends, the generation it
/// was written in, and where to answer.
struct FlushRequest {
    generation: u64,
    lsn: u64,
    reply: oneshot::Sender<Result<(), FlushFailure>>,
}

/// The call log. Cheap to clone; all clones share one index, one journal and one flusher.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    stripes: [Mutex<()>; STRIPES],
    hasher: RandomState,
    flush_tx: Mutex<Option<mpsc::Sender<FlushRequest>>>,
    flusher: Mutex<Option<thread::JoinHandle<()>>>,
    /// Held for the store's life: one process at a time owns the data directory.
    _lock: fs::File,
}

/// What the flusher thread shares with the writers.
struct Shared {
    /// `None` from a write failure until a rebuild succeeds. Nobody keeps a clone of the `Db`
    /// outside this lock, so the write lock alone lets the failed index go.
    db: RwLock<Option<sled::Db>>,
    /// Set when a write failed; cleared by a successful rebuild.
    broken: AtomicBool,
    /// Why the store is broken, and when it may next be rebuilt.
    fault: Mutex<Fault>,
    /// What start-up found damaged and could not recover; kept for health.
    damage: Mutex<Vec<String>>,
    /// Changes appended but not yet written.
    pending: Mutex<Pending>,
    /// The segment being written, owned by whoever holds this lock (the flusher, compaction).
    writer: Mutex<Writer>,
    dir: PathBuf,
}

#[derive(Default)]
struct Fault {
    reason: Option<String>,
    /// The failed index has been dropped (`db` is `None`).
    retired: bool,
    next_reopen: Option<Instant>,
}

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    frames: u64,
    /// The journal position (bytes since the store opened) at the end of `buf`.
    end: u64,
    /// Bumped (with the writer's lock held too) whenever the index is dropped or rebuilt
    /// after a failure: what was pending in an older generation is never acknowledged.
    generation: u64,
}

struct Writer {
    segment: Option<Segment>,
    /// Everything up to this journal position is on disk.
    durable: u64,
}

/// A read lock on the open index.
struct DbGuard<'a> {
    guard: RwLockReadGuard<'a, Option<sled::Db>>,
}

impl std::ops::Deref for DbGuard<'_> {
    type Target = sled::Db;
    fn deref(&self) -> &sled::Db {
        // Only made by `Store::db`, which checked that the database is open.
        self.guard.as_ref().unwrap_or_else(|| unreachable!("a DbGuard is only made around an open database"))
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.inner.shared.dir).finish_non_exhaustive()
    }
}

/// What a clean stop leaves beside the index, so the next start can trust it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct CleanMarker {
    /// Every journal segment below this one is fully in the index.
    next_seq: u64,
    /// Checksum of the index's contents.
    digest: IndexDigest,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, Clone, Copy)]
struct IndexDigest {
    keys: u64,
    bytes: u64,
    crc: u32,
}

impl Store {
    /// Opens (or creates) the call log in `dir`: recovers from any crash or power cut, repairs
    /// what damage it can, and reports what it cannot.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|e| open_error(dir, e))?;
        let lock = lock_dir(dir)?;
        let journal_dir = dir.join(JOURNAL_DIR);
        let new_journal = !journal_dir.exists();
        fs::create_dir_all(&journal_dir).map_err(|e| open_error(&journal_dir, e))?;
        if new_journal {
            journal::sync_dir(dir).map_err(|e| open_error(dir, e))?;
        }
        let recovered = recover(dir, new_journal)?;
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(recovered.db)),
            broken: AtomicBool::new(false),
            fault: Mutex::new(Fault::default()),
            damage: Mutex::new(recovered.damage),
            pending: Mutex::new(Pending::default()),
            writer: Mutex::new(Writer { segment: Some(recovered.segment), durable: 0 }),
            dir: dir.to_owned(),
        });
        let (tx, rx) = mpsc::channel::<FlushRequest>();
        let flush_shared = shared.clone();
        let flusher = thread::Builder::new()
            .name("callbox-flush".into())
            .spawn(move || group_commit(&flush_shared, rx))
            .map_err(|e| open_error(dir, e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                stripes: std::array::from_fn(|_| Mutex::new(())),
                hasher: RandomState::default(),
                flush_tx: Mutex::new(Some(tx)),
                flusher: Mutex::new(Some(flusher)),
                _lock: lock,
            }),
        })
    }

    /// Records `event` and returns once it is on disk. A retried event changes nothing (but
    /// still waits for the disk, so its first delivery's answer is never ahead of the data).
    pub async fn record(&self, event: CallEvent) -> Result<Recorded, StoreError> {
        match self.record_if(event, true).await? {
            Some(recorded) => Ok(recorded),
            None => unreachable!("a new call is created"),
        }
    }

    /// Records `event` on a call already in the log (the owner's steps: they must not bring a
    /// pruned call back as a stub); `Ok(None)` when the call is unknown.
    pub async fn record_existing(&self, event: CallEvent) -> Result<Option<Recorded>, StoreError> {
        self.record_if(event, false).await
    }

    async fn record_if(&self, event: CallEvent, create: bool) -> Result<Option<Recorded>, StoreError> {
        let (recorded, (generation, lsn)) = {
            let _stripe = self.stripe(&event.call_sid);
            let db = self.db()?;
            let existing = get_in(&db, &event.call_sid)?;
            if existing.is_none() && !create {
                return Ok(None);
            }
            let old_first_seen = existing.as_ref().map(|r| r.first_seen);
            let (record, applied) = with_event(existing, &event);
            let position = if applied == Applied::Duplicate {
                // Answered only once everything before it is on disk: its first delivery may
                // still be in the flusher's hands.
                self.appended()
            } else {
                let position = self.append(&Entry::Event(Box::new(event)));
                self.put_in(&db, &record, old_first_seen)?;
                position
            };
            (Recorded { record, applied }, position)
        };
        self.flush_to(generation, lsn).await?;
        Ok(Some(recorded))
    }

    /// Applies `change` to an existing call (media sessions add their details) and returns
    /// once it is on disk. `Ok(None)` when the call is unknown.
    pub async fn update(
        &self,
        call_sid: &str,
        change: impl FnOnce(&mut CallRecord),
    ) -> Result<Option<CallRecord>, StoreError> {
        let (record, generation, lsn) = {
            let _stripe = self.stripe(call_sid);
            let db = self.db()?;
            let Some(mut record) = get_in(&db, call_sid)? else { return Ok(None) };
            let old_first_seen = record.first_seen;
            change(&mut record);
            record.refresh_outcome();
            let (generation, lsn) = self.append(&Entry::Put(Box::new(record.clone())));
            self.put_in(&db, &record, Some(old_first_seen))?;
            (record, generation, lsn)
        };
        self.flush_to(generation, lsn).await?;
        Ok(Some(record))
    }

    /// The document at `key`, if there is one.
    pub fn doc<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let db = self.db()?;
        get_doc(&db, key)
    }

    /// Every document whose key starts with `prefix`, in key order. One that does not decode
    /// is skipped with a warning: one bad entry must not hide the rest.
    pub fn docs<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(String, T)>, StoreError> {
        let db = self.db()?;
        let mut out = Vec::new();
        for item in db.scan_prefix(doc_key(prefix)) {
            let (key, value) = item?;
            let key = String::from_utf8_lossy(&key[DOC_PREFIX.len()..]).into_owned();
            match serde_json::from_slice(&value) {
                Ok(doc) => out.push((key, doc)),
                Err(e) => log::warn!("document {key} in the call log is unreadable, skipped: {e}"),
            }
        }
        Ok(out)
    }

    /// Applies `change` to the document at `key` (`None` when there is none; setting `None`
    /// removes it) and returns once that is on disk, with what is stored now. Nothing is
    /// written when `change` leaves it as it was.
    pub async fn update_doc<T, F>(&self, key: &str, change: F) -> Result<Option<T>, StoreError>
    where
        T: Serialize + DeserializeOwned + PartialEq + Clone,
        F: FnOnce(&mut Option<T>),
    {
        let (doc, position) = {
            let _stripe = self.stripe(key);
            let db = self.db()?;
            let before: Option<T> = get_doc(&db, key)?;
            let mut doc = before.clone();
            change(&mut doc);
            if doc == before {
                (doc, self.appended())
            } else {
                let value = match &doc {
                    Some(d) => Some(
                        serde_json::to_value(d)
                            .map_err(|source| StoreError::Corrupt { key: key.to_owned(), source })?,
                    ),
                    None => None,
                };
                let entry = Entry::Doc { key: key.to_owned(), value };
                let position = self.append(&entry);
                apply_doc(&db, &entry).map_err(|e| self.inner.shared.failed(&e.to_string(), e))?;
                (doc, position)
            }
        };
        self.flush_to(position.0, position.1).await?;
        Ok(doc)
    }

    /// Writes `record` and its time index into the index. The time index goes first and a
    /// stale one is removed last, so a crash in between leaves at worst an index entry that
    /// readers skip (see `indexed_record`), never a record the listing misses. Plain inserts,
    /// not a sled::Batch: sled 0.34 rolls its IO buffer twice for every batch.
    fn put_in(&self, db: &sled::Db, record: &CallRecord, old_first_seen: Option<Timestamp>) -> Result<(), StoreError> {
        put_record(db, record, old_first_seen).map_err(|e| self.inner.shared.failed(&e.to_string(), e))
    }

    /// Appends `entry` to the journal's pending buffer; returns the generation it went into
    /// and its end position, read together so a rebuild cannot come between them.
    fn append(&self, entry: &Entry) -> (u64, u64) {
        let frame = journal::frame(entry);
        let mut pending = crate::sync::lock(&self.inner.shared.pending);
        pending.buf.extend_from_slice(&frame);
        pending.frames += 1;
        pending.end += frame.len() as u64;
        (pending.generation, pending.end)
    }

    /// The generation and journal position after everything appended so far.
    fn appended(&self) -> (u64, u64) {
        let pending = crate::sync::lock(&self.inner.shared.pending);
        (pending.generation, pending.end)
    }

    /// Waits until everything written so far is on disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        drop(self.db()?);
        let (generation, lsn) = self.appended();
        self.flush_to(generation, lsn).await
    }

    /// Waits until the journal is on disk up to `lsn`, in `generation`.
    async fn flush_to(&self, generation: u64, lsn: u64) -> Result<(), StoreError> {
        let (reply, done) = oneshot::channel();
        {
            let tx = crate::sync::lock(&self.inner.flush_tx);
            let request = FlushRequest { generation, lsn, reply };
            tx.as_ref().ok_or(StoreError::Closed)?.send(request).map_err(|_| StoreError::Closed)?;
        }
        Ok(done.await.map_err(|_| StoreError::Closed)??)
    }

    /// Why the call log is not healthy: writes failing (until it was rebuilt), or damage found
    /// at start that could not be repaired.
    pub fn fault(&self) -> Option<String> {
        let shared = &self.inner.shared;
        if shared.broken.load(Ordering::Acquire)
            && let Some(reason) = crate::sync::lock(&shared.fault).reason.clone()
        {
            return Some(reason);
        }
        let damage = crate::sync::lock(&shared.damage);
        (!damage.is_empty()).then(|| damage.join("; "))
    }

    /// The open index, rebuilt first when a write failed and a rebuild is due.
    fn db(&self) -> Result<DbGuard<'_>, StoreError> {
        let shared = &self.inner.shared;
        if shared.broken.load(Ordering::Acquire) {
            self.recover_after_failure();
        }
        let guard = crate::sync::read(&shared.db);
        if guard.is_none() {
            let why = crate::sync::lock(&shared.fault).reason.clone();
            return Err(StoreError::Unavailable(why.unwrap_or_else(|| "not open".into())));
        }
        Ok(DbGuard { guard })
    }

    /// One call's record.
    pub fn get(&self, call_sid: &str) -> Result<Option<CallRecord>, StoreError> {
        let db = self.db()?;
        get_in(&db, call_sid)
    }

    /// Up to `limit` calls, newest first, strictly older than the call `before` when given.
    pub fn list(&self, limit: usize, before: Option<&str>) -> Result<Vec<CallRecord>, StoreError> {
        self.search(Timestamp::MIN, Timestamp::MAX, before, limit, |_| true)
    }

    /// Up to `limit` calls first seen in `[from, to)` that `keep` accepts, newest first,
    /// strictly older than the call `before` when given (the page before is its last call).
    pub fn search(
        &self,
        from: Timestamp,
        to: Timestamp,
        before: Option<&str>,
        limit: usize,
        keep: impl Fn(&CallRecord) -> bool,
    ) -> Result<Vec<CallRecord>, StoreError> {
        // One read lock for the whole listing: taking it again while a rebuild waits would deadlock.
        let db = self.db()?;
        let mut upper = time_prefix(to);
        if let Some(sid) = before {
            match get_in(&db, sid)? {
                Some(r) => upper = upper.min(time_key(r.first_seen, sid)),
                None => return Ok(Vec::new()),
            }
        }
        let lower = time_prefix(from);
        let mut out = Vec::with_capacity(limit.min(1024));
        if upper <= lower {
            return Ok(out);
        }
        for item in db.range(lower..upper).rev() {
            if out.len() >= limit {
                break;
            }
            let (key, _) = item?;
            if let Some(record) = indexed_record(&db, &key)?
                && keep(&record)
            {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Calls first seen in `[from, to)`, oldest first.
    pub fn between(&self, from: Timestamp, to: Timestamp) -> Result<Vec<CallRecord>, StoreError> {
        let db = self.db()?;
        let mut out = Vec::new();
        for item in db.range(time_prefix(from)..time_prefix(to)) {
            let (key, _) = item?;
            if let Some(record) = indexed_record(&db, &key)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Number of calls in the log (0 while the store is unavailable).
    pub fn count(&self) -> usize {
        self.db().map(|db| db.scan_prefix(RECORD_PREFIX).count()).unwrap_or(0)
    }

    /// Removes calls first seen before `older_than`, then the oldest beyond `max_calls`
    /// (0 = no limit), and makes that durable; then compacts the journal when what it holds
    /// is mostly gone, so retention frees the disk. Returns how many calls were removed.
    pub async fn prune(&self, older_than: Option<Timestamp>, max_calls: u64) -> Result<usize, StoreError> {
        let mut victims = Vec::new();
        let total = self.count() as u64;
        let excess = if max_calls == 0 { 0 } else { total.saturating_sub(max_calls) };
        {
            let db = self.db()?;
            for (i, item) in db.scan_prefix(TIME_PREFIX).enumerate() {
                let (key, _) = item?;
                // A key sorts below the bare prefix of `cut` exactly when its time is earlier.
                let too_old = older_than.is_some_and(|cut| key.as_ref() < time_prefix(cut).as_slice());
                if (i as u64) < excess || too_old {
                    victims.push(key);
                } else {
                    break;
                }
            }
        }
        let mut last = None;
        for key in &victims {
            let sid = sid_of_time_key(key);
            let _stripe = self.stripe(&sid);
            let db = self.db()?;
            let position = self.append(&Entry::Remove { call_sid: sid.clone() });
            let removed = db.remove(key.as_ref()).and_then(|_| db.remove(record_key(&sid)));
            removed.map_err(|e| self.inner.shared.failed(&e.to_string(), e))?;
            last = Some(position);
        }
        if let Some((generation, lsn)) = last {
            self.flush_to(generation, lsn).await?;
        }
        if self.journal_outgrew_records()? {
            let store = self.clone();
            tokio::task::spawn_blocking(move || store.compact())
                .await
                .map_err(|e| StoreError::Unavailable(format!("compaction stopped: {e}")))??;
        }
        Ok(victims.len())
    }

    /// True when the journal is more than [`COMPACT_RATIO`] times the records it describes.
    fn journal_outgrew_records(&self) -> Result<bool, StoreError> {
        let live: u64 = {
            let db = self.db()?;
            let bytes =
                |prefix| db.scan_prefix(prefix).values().filter_map(Result::ok).map(|v| v.len() as u64).sum::<u64>();
            bytes(RECORD_PREFIX) + bytes(DOC_PREFIX)
        };
        let journal = journal_bytes(&self.inner.shared.dir.join(JOURNAL_DIR));
        Ok(journal > COMPACT_RATIO * live + journal::SEGMENT_BYTES)
    }

    /// Rewrites the journal as one snapshot of the index plus what comes after it, and removes
    /// the segments the snapshot replaces. Safe while writers run: the segment boundary is
    /// taken with every stripe held (no change is half-applied), and each record is read under
    /// its stripe; a change made after the boundary is in a later segment, and replaying it on
    /// the snapshot changes nothing twice (events are idempotent, puts and removes absolute).
    pub fn compact(&self) -> Result<(), StoreError> {
        let shared = &self.inner.shared;
        let journal_dir = shared.dir.join(JOURNAL_DIR);
        let io = |e: std::io::Error| StoreError::Flush(Arc::new(e));
        let snapshot_seq = {
            let _all: Vec<MutexGuard<'_, ()>> =
                self.inner.stripes.iter().map(|stripe| crate::sync::lock(stripe)).collect();
            let mut writer = crate::sync::lock(&shared.writer);
            sync_pending(shared, &mut writer)?;
            let Some(segment) = writer.segment.as_mut() else {
                return Err(StoreError::Unavailable("the journal is not open".into()));
            };
            segment.seal().map_err(io)?;
            let snapshot_seq = segment.seq + 1;
            writer.segment = Some(Segment::create(&journal_dir, snapshot_seq + 1).map_err(io)?);
            snapshot_seq
        };
        let (keys, doc_keys) = {
            let db = self.db()?;
            (keys_under(&db, RECORD_PREFIX), keys_under(&db, DOC_PREFIX))
        };
        let records = keys.into_iter().filter_map(|sid| {
            let _stripe = self.stripe(&sid);
            let db = self.db().ok()?;
            get_in(&db, &sid).ok().flatten().map(|r| Entry::Put(Box::new(r)))
        });
        let docs = doc_keys.into_iter().filter_map(|key| {
            let _stripe = self.stripe(&key);
            let db = self.db().ok()?;
            let value = get_doc::<serde_json::Value>(&db, &key).ok().flatten()?;
            Some(Entry::Doc { key, value: Some(value) })
        });
        let records = records.chain(docs);
        let bytes = journal::write_segment(&journal_dir, snapshot_seq, records).map_err(io)?;
        let mut removed = 0;
        for (seq, path) in journal::list_segments(&journal_dir).map_err(io)? {
            if seq < snapshot_seq {
                fs::remove_file(&path).map_err(io)?;
                removed += 1;
            }
        }
        journal::sync_dir(&journal_dir).map_err(io)?;
        log::info!("call log journal compacted: {removed} segments replaced by a {bytes}-byte snapshot");
        Ok(())
    }

    /// Bytes the store takes on disk: the index and the journal.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        let index = self.db()?.size_on_disk()?;
        Ok(index + journal_bytes(&self.inner.shared.dir.join(JOURNAL_DIR)))
    }

    /// Writes everything pending, seals the journal, flushes and fsyncs the index and leaves
    /// the marker that lets the next start trust it. Later writes fail with
    /// [`StoreError::Closed`].
    pub fn close(&self) -> Result<(), StoreError> {
        let tx = crate::sync::lock(&self.inner.flush_tx).take();
        drop(tx);
        if let Some(handle) = crate::sync::lock(&self.inner.flusher).take() {
            let _ = handle.join();
        }
        let shared = &self.inner.shared;
        let db = crate::sync::read(&shared.db);
        let Some(db) = db.as_ref() else {
            return Err(StoreError::Unavailable("the call log could not be reopened".into()));
        };
        let mut writer = crate::sync::lock(&shared.writer);
        sync_pending(shared, &mut writer)?;
        let Some(segment) = writer.segment.as_mut() else {
            return Err(StoreError::Unavailable("the journal is not open".into()));
        };
        segment.seal().map_err(|e| StoreError::Flush(Arc::new(e)))?;
        let next_seq = segment.seq + 1;
        // Nothing goes after the seal: a write racing with the stop is refused, not appended.
        writer.segment = None;
        db.flush()?;
        leave_clean_marker(&shared.dir, db, next_seq)
            .map_err(|why| StoreError::Open { path: shared.dir.join(CLEAN_MARKER), why })?;
        Ok(())
    }

    fn stripe(&self, call_sid: &str) -> MutexGuard<'_, ()> {
        let mut h = self.inner.hasher.build_hasher();
        h.write(call_sid.as_bytes());
        crate::sync::lock(&self.inner.stripes[(h.finish() as usize) % STRIPES])
    }

    /// After a failure: drops the failed index at once, then rebuilds it from the journal
    /// unless the last attempt was too recent or the disk is still (nearly) full.
    fn recover_after_failure(&self) {
        let shared = &self.inner.shared;
        let now = Instant::now();
        {
            let fault = crate::sync::lock(&shared.fault);
            if fault.retired && fault.next_reopen.is_some_and(|t| now < t) {
                return; // nothing to do before the next attempt: spare the write lock
            }
        }
        // Lock order everywhere: index, writer, pending, fault.
        let mut slot = crate::sync::write(&shared.db);
        let mut writer = crate::sync::lock(&shared.writer);
        let mut fault = crate::sync::lock(&shared.fault);
        if !shared.broken.load(Ordering::Acquire) {
            return; // another caller rebuilt it meanwhile
        }
        if !fault.retired {
            // A failed sled database is not safe even to read: measured, a read that meets a
            // node due for a split retries the split forever (100% CPU, never returns). And it
            // may hold changes whose journal write failed.
            drop(slot.take());
            writer.segment = None;
            let mut pending = crate::sync::lock(&shared.pending);
            pending.generation += 1;
            pending.buf.clear();
            pending.frames = 0;
            writer.durable = pending.end;
            fault.retired = true;
        }
        if fault.next_reopen.is_some_and(|t| now < t) {
            return;
        }
        fault.next_reopen = Some(now + REOPEN_INTERVAL);
        if let Ok(stat) = rustix::fs::statvfs(&shared.dir)
            && stat.f_bavail.saturating_mul(stat.f_frsize) < REOPEN_MIN_FREE
        {
            return;
        }
        match recover(&shared.dir, false) {
            Ok(recovered) => {
                *slot = Some(recovered.db);
                writer.segment = Some(recovered.segment);
                crate::sync::lock(&shared.pending).generation += 1;
                shared.broken.store(false, Ordering::Release);
                fault.retired = false;
                fault.reason = None;
                crate::sync::lock(&shared.damage).extend(recovered.damage);
                log::info!("call log rebuilt in {}; writes are accepted again", shared.dir.display());
            }
            Err(e) => {
                log::warn!("call log cannot be rebuilt yet: {e}");
                fault.reason = Some(e.to_string());
            }
        }
    }
}

impl Shared {
    /// Notes a failed write: the store must be rebuilt before it takes writes again.
    fn failed<E: Into<StoreError>>(&self, why: &str, e: E) -> StoreError {
        let mut fault = crate::sync::lock(&self.fault);
        if !self.broken.swap(true, Ordering::AcqRel) {
            log::error!("call log write failed ({why}); writes are refused until it is rebuilt");
        }
        fault.reason = Some(why.to_owned());
        e.into()
    }
}

/// The store at `path` could not be opened (or brought into agreement), and why.
fn open_error(path: &Path, why: impl std::fmt::Display) -> StoreError {
    StoreError::Open { path: path.to_owned(), why: why.to_string() }
}

/// Takes the data directory's lock file, waiting briefly for a process of ours that is just
/// letting go of it.
fn lock_dir(dir: &Path) -> Result<fs::File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| open_error(&path, e))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(StoreError::Locked(dir.to_owned())),
            Err(e) => return Err(open_error(&path, e)),
        }
    }
}

/// The open index and journal after start-up (or a rebuild), and what could not be recovered.
struct Recovered {
    db: sled::Db,
    segment: Segment,
    damage: Vec<String>,
}

/// Brings the index and the journal of `dir` into agreement: trusts the index when the clean
/// marker vouches for it (or, for a store written before the journal existed, when it opens),
/// rebuilds it from the journal otherwise; checks every journal segment; repairs or reports
/// damage; and starts a new segment.
fn recover(dir: &Path, new_journal: bool) -> Result<Recovered, StoreError> {
    let journal_dir = dir.join(JOURNAL_DIR);
    let sled_path = dir.join(SLED_DIR);
    let marker = take_clean_marker(dir);
    let segments = journal::list_segments(&journal_dir).map_err(|e| open_error(&journal_dir, e))?;
    // A store from before the journal: its index is all there is, so it is kept as it opens.
    let migrating = new_journal && segments.is_empty() && sled_path.exists();

    let index = judge_index(&sled_path, marker.as_ref(), migrating, !segments.is_empty());
    let mut damage = index.damage;
    let from_seq = match (&marker, index.trusted) {
        (_, false) => 0,
        (Some(m), true) => m.next_seq,
        (None, true) => u64::MAX, // migrating: the index is everything
    };
    let db = match (index.db, index.trusted) {
        (Some(db), true) => db,
        (untrusted, _) => {
            drop(untrusted);
            empty_index(&sled_path)?
        }
    };

    let replay = replay_journal(&db, &segments, from_seq, marker.is_some())?;
    let journal_damage: Vec<String> = replay.damage;
    let mut next_seq = segments.last().map_or(1, |(seq, _)| seq + 1);
    if migrating || (!journal_damage.is_empty() && index.trusted) {
        // Everything is in the index: write the journal anew from it (for an old store, its
        // first journal; for a damaged journal, a whole one), keeping damaged files aside.
        for what in &journal_damage {
            log::warn!("{what}; repaired from the call index, nothing lost");
        }
        set_aside(&segments, &replay.damaged_files);
        rewrite_journal(&db, &journal_dir, next_seq, &segments)?;
        next_seq += 1;
    } else if !journal_damage.is_empty() {
        for what in &journal_damage {
            log::error!("{what}; the calls in it that could not be read are lost");
        }
        note_damage(dir, &journal_damage);
        damage.extend(journal_damage);
    }
    db.flush()?;
    let segment = Segment::create(&journal_dir, next_seq).map_err(|e| open_error(&journal_dir, e))?;
    Ok(Recovered { db, segment, damage })
}

/// The index as found at start-up, and whether it can be used as it is.
struct IndexVerdict {
    db: Option<sled::Db>,
    trusted: bool,
    damage: Vec<String>,
}

/// Opens the index at `sled_path` and decides whether to trust it: only when the clean marker's
/// digest matches it, or when it is a store from before the journal (`migrating`).
fn judge_index(sled_path: &Path, marker: Option<&CleanMarker>, migrating: bool, has_journal: bool) -> IndexVerdict {
    let untrusted = |db| IndexVerdict { db, trusted: false, damage: Vec::new() };
    match open_index(sled_path) {
        Ok(db) if migrating => IndexVerdict { db: Some(db), trusted: true, damage: Vec::new() },
        Ok(db) => match marker {
            Some(m) => match digest(&db) {
                Ok(d) if d == m.digest => IndexVerdict { db: Some(db), trusted: true, damage: Vec::new() },
                Ok(d) => {
                    log::warn!(
                        "call index {} does not match what was written at the last stop ({} keys, expected {}); rebuilding it from the journal",
                        sled_path.display(),
                        d.keys,
                        m.digest.keys
                    );
                    untrusted(Some(db))
                }
                Err(why) => {
                    log::warn!("call index {} is damaged ({why}); rebuilding it from the journal", sled_path.display());
                    untrusted(Some(db))
                }
            },
            None => {
                if has_journal {
                    log::info!("the box did not stop cleanly; rebuilding the call index from the journal");
                }
                untrusted(Some(db))
            }
        },
        Err(why) if migrating => {
            let what =
                format!("{} (the call log written before the journal) cannot be read: {why}", sled_path.display());
            log::error!("{what}; starting with an empty call log");
            IndexVerdict { db: None, trusted: false, damage: vec![what] }
        }
        Err(why) => {
            log::warn!("call index {} cannot be opened ({why}); rebuilding it from the journal", sled_path.display());
            untrusted(None)
        }
    }
}

/// Replaces whatever is at `sled_path` with a new, empty index.
fn empty_index(sled_path: &Path) -> Result<sled::Db, StoreError> {
    if sled_path.exists() {
        fs::remove_dir_all(sled_path).map_err(|e| open_error(sled_path, e))?;
    }
    open_index(sled_path).map_err(|why| open_error(sled_path, why))
}

/// Writes every record of the index as segment `seq`, then removes the old `segments`.
fn rewrite_journal(db: &sled::Db, journal_dir: &Path, seq: u64, segments: &[(u64, PathBuf)]) -> Result<(), StoreError> {
    let records = db
        .scan_prefix(RECORD_PREFIX)
        .values()
        .filter_map(Result::ok)
        .filter_map(|v| serde_json::from_slice::<CallRecord>(&v).ok().map(|r| Entry::Put(Box::new(r))));
    let docs = db.scan_prefix(DOC_PREFIX).filter_map(Result::ok).filter_map(|(k, v)| {
        let value = serde_json::from_slice::<serde_json::Value>(&v).ok()?;
        Some(Entry::Doc { key: String::from_utf8_lossy(&k[DOC_PREFIX.len()..]).into_owned(), value: Some(value) })
    });
    journal::write_segment(journal_dir, seq, records.chain(docs)).map_err(|e| open_error(journal_dir, e))?;
    for (_, path) in segments {
        if path.exists() {
            fs::remove_file(path).map_err(|e| open_error(path, e))?;
        }
    }
    journal::sync_dir(journal_dir).map_err(|e| open_error(journal_dir, e))
}

/// What replaying the journal found.
struct Replay {
    damage: Vec<String>,
    /// Segments with damage, by sequence number.
    damaged_files: Vec<u64>,
}

/// Checks every segment and applies those from `from_seq` on to `db`. The last segment of a
/// box that crashed may end in a write cut short: that is cut off and sealed (it was never
/// acknowledged). Any other segment must end with its seal, and none may have bad frames.
fn replay_journal(
    db: &sled::Db,
    segments: &[(u64, PathBuf)],
    from_seq: u64,
    stopped_cleanly: bool,
) -> Result<Replay, StoreError> {
    let mut out = Replay { damage: Vec::new(), damaged_files: Vec::new() };
    let mut applied = 0u64;
    for (i, (seq, path)) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let scan = journal::scan_segment(path, *seq >= from_seq).map_err(|e| open_error(path, e))?;
        let mut problems = scan.damage.clone();
        let crashed_tail = last && !stopped_cleanly;
        match scan.torn_tail {
            Some(n) if crashed_tail => {
                log::info!("{}: dropped {n} bytes of a write cut short by a crash or power cut", path.display())
            }
            Some(n) => problems.push(format!("{n} bytes unreadable at its end")),
            None => {}
        }
        if !scan.sealed && !crashed_tail && problems.is_empty() {
            problems.push("its end is missing (truncated?)".into());
        }
        if crashed_tail && !scan.sealed && scan.frames > 0 {
            seal_after_crash(path, scan.good_len, scan.frames).map_err(|e| open_error(path, e))?;
        }
        if !problems.is_empty() {
            out.damage.push(format!("journal segment {} is damaged: {}", path.display(), problems.join(", ")));
            out.damaged_files.push(*seq);
        } else if scan.frames == 0 {
            // A start that wrote nothing (a CLI that only read, a crash right after start)
            // leaves an empty segment: nothing to keep.
            fs::remove_file(path).map_err(|e| open_error(path, e))?;
            continue;
        }
        for entry in scan.entries {
            apply_entry(db, entry)?;
            applied += 1;
        }
    }
    if applied > 0 {
        log::info!("call index caught up with {applied} journal entries");
    }
    Ok(out)
}

/// Cuts a crashed segment back to its last whole frame and seals it, so that once later
/// segments exist it reads as finished.
fn seal_after_crash(path: &Path, good_len: u64, frames: u64) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(good_len)?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(good_len))?;
    file.write_all(&journal::frame(&Entry::Seal { frames }))?;
    file.sync_all()
}

/// Keeps copies of damaged segments (`*.damaged`) for whoever looks into it; best effort.
fn set_aside(segments: &[(u64, PathBuf)], damaged: &[u64]) {
    for (seq, path) in segments.iter().filter(|(seq, _)| damaged.contains(seq)) {
        let aside = path.with_extension("damaged");
        if let Err(e) = fs::copy(path, &aside) {
            log::warn!("could not keep a copy of damaged journal segment {seq:016x}: {e}");
        }
    }
}

/// Appends what was lost to `store-damage.txt`, which outlives restarts (best effort).
fn note_damage(dir: &Path, what: &[String]) {
    let path = dir.join(DAMAGE_LOG);
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new().create(true).append(true).open(&path)?;
        for line in what {
            writeln!(f, "{} {line}", Timestamp::now())?;
        }
        f.sync_all()
    };
    if let Err(e) = write() {
        log::warn!("could not write {}: {e}", path.display());
    }
}

/// A call's record after `event`: the existing record by its own rules, or a new one. The one
/// rule for both the live store and a replay of the journal, so both build the same record.
fn with_event(existing: Option<CallRecord>, event: &CallEvent) -> (CallRecord, Applied) {
    match existing {
        Some(mut record) => {
            let applied = record.apply(event.clone());
            (record, applied)
        }
        None => (CallRecord::new(event), Applied::Added),
    }
}

/// Applies one journal entry to the index, as the live store did when it was written.
fn apply_entry(db: &sled::Db, entry: Entry) -> Result<(), StoreError> {
    match entry {
        Entry::Event(event) => {
            let existing = get_in(db, &event.call_sid)?;
            let old_first_seen = existing.as_ref().map(|r| r.first_seen);
            let (record, applied) = with_event(existing, &event);
            if applied != Applied::Duplicate {
                put_record(db, &record, old_first_seen)?;
            }
        }
        Entry::Put(record) => {
            let old = get_in(db, &record.call_sid)?.map(|r| r.first_seen);
            put_record(db, &record, old)?;
        }
        Entry::Remove { call_sid } => {
            if let Some(old) = get_in(db, &call_sid)? {
                db.remove(time_key(old.first_seen, &call_sid))?;
                db.remove(record_key(&call_sid))?;
            }
        }
        entry @ Entry::Doc { .. } => apply_doc(db, &entry)?,
        Entry::Seal { .. } => {}
    }
    Ok(())
}

/// The keys under `prefix`, without it.
fn keys_under(db: &sled::Db, prefix: &[u8]) -> Vec<String> {
    db.scan_prefix(prefix)
        .keys()
        .filter_map(Result::ok)
        .map(|k| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
        .collect()
}

fn doc_key(key: &str) -> Vec<u8> {
    [DOC_PREFIX, key.as_bytes()].concat()
}

fn get_doc<T: DeserializeOwned>(db: &sled::Db, key: &str) -> Result<Option<T>, StoreError> {
    match db.get(doc_key(key))? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Corrupt { key: key.to_owned(), source }),
        None => Ok(None),
    }
}

/// Writes (or removes) a document as its journal entry says.
fn apply_doc(db: &sled::Db, entry: &Entry) -> Result<(), sled::Error> {
    if let Entry::Doc { key, value } = entry {
        match value {
            Some(v) => {
                db.insert(doc_key(key), serde_json::to_vec(v).unwrap_or_default())?;
            }
            None => {
                db.remove(doc_key(key))?;
            }
        }
    }
    Ok(())
}

fn put_record(db: &sled::Db, record: &CallRecord, old_first_seen: Option<Timestamp>) -> Result<(), sled::Error> {
    let sid = &record.call_sid;
    let moved = old_first_seen != Some(record.first_seen);
    if moved {
        db.insert(time_key(record.first_seen, sid), &[] as &[u8])?;
    }
    db.insert(record_key(sid), encode(record))?;
    if moved && let Some(old) = old_first_seen {
        db.remove(time_key(old, sid))?;
    }
    Ok(())
}

/// Opens the sled index. sled 0.34 can panic on a damaged file (measured: "tried to serialize
/// Uninitialized" at every start), so a panic is turned into an error the caller can act on.
fn open_index(path: &Path) -> Result<sled::Db, String> {
    // The store's own lock file keeps other processes out, so a sled lock held here is this
    // process's: sled lets go of it only once its IO threads finished the last writes of an
    // index just closed (a restart in a test, a rebuild). Wait briefly for that.
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let opened = catch_unwind(|| sled::Config::new().path(path).mode(sled::Mode::LowSpace).open());
        match opened {
            Ok(Ok(db)) => return Ok(db),
            Ok(Err(e)) if e.to_string().contains("could not acquire lock") && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10))
            }
            Ok(Err(e)) => return Err(e.to_string()),
            Err(panic) => return Err(format!("sled panicked opening it: {}", panic_text(&panic))),
        }
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// A checksum of every key and value in the index, in key order.
fn digest(db: &sled::Db) -> Result<IndexDigest, String> {
    let scanned = catch_unwind(AssertUnwindSafe(|| {
        let mut crc = crc32fast::Hasher::new();
        let (mut keys, mut bytes) = (0u64, 0u64);
        for item in db.iter() {
            let (k, v) = item.map_err(|e| e.to_string())?;
            crc.update(&(k.len() as u64).to_le_bytes());
            crc.update(&k);
            crc.update(&(v.len() as u64).to_le_bytes());
            crc.update(&v);
            keys += 1;
            bytes += (k.len() + v.len()) as u64;
        }
        Ok(IndexDigest { keys, bytes, crc: crc.finalize() })
    }));
    scanned.unwrap_or_else(|panic| Err(format!("sled panicked reading it: {}", panic_text(&panic))))
}

/// Reads and removes the clean marker: once the box runs, the index moves on from it.
fn take_clean_marker(dir: &Path) -> Option<CleanMarker> {
    let path = dir.join(CLEAN_MARKER);
    let bytes = fs::read(&path).ok()?;
    let _ = fs::remove_file(&path).and_then(|()| journal::sync_dir(dir));
    match serde_json::from_slice(&bytes) {
        Ok(m) => Some(m),
        Err(e) => {
            log::warn!("{} is unreadable ({e}); the call index will be rebuilt", path.display());
            None
        }
    }
}

/// After a clean stop: makes the index's files durable (sled's flush alone does not make
/// their size and extents durable), then leaves the marker with its checksum.
fn leave_clean_marker(dir: &Path, db: &sled::Db, next_seq: u64) -> Result<(), String> {
    let sled_path = dir.join(SLED_DIR);
    fsync_tree(&sled_path).map_err(|e| format!("fsync of {}: {e}", sled_path.display()))?;
    let marker = CleanMarker { next_seq, digest: digest(db)? };
    let path = dir.join(CLEAN_MARKER);
    let tmp = path.with_extension("tmp");
    let json = serde_json::to_vec(&marker).map_err(|e| e.to_string())?;
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        journal::sync_dir(dir)
    };
    write().map_err(|e| format!("{}: {e}", path.display()))
}

fn fsync_tree(path: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fsync_tree(&entry.path())?;
        } else {
            fs::File::open(entry.path())?.sync_all()?;
        }
    }
    journal::sync_dir(path)
}

fn journal_bytes(dir: &Path) -> u64 {
    journal::list_segments(dir)
        .map(|segs| segs.iter().filter_map(|(_, p)| fs::metadata(p).ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

fn get_in(db: &sled::Db, call_sid: &str) -> Result<Option<CallRecord>, StoreError> {
    match db.get(record_key(call_sid))? {
        Some(bytes) => decode(call_sid, &bytes).map(Some),
        None => Ok(None),
    }
}

/// Writes what is pending to the journal and waits for the disk. Returns the position that is
/// now durable. Called with the writer lock held.
fn sync_pending(shared: &Shared, writer: &mut Writer) -> Result<u64, StoreError> {
    let (buf, frames, end) = {
        let mut pending = crate::sync::lock(&shared.pending);
        (std::mem::take(&mut pending.buf), std::mem::take(&mut pending.frames), pending.end)
    };
    if buf.is_empty() {
        return Ok(writer.durable);
    }
    if writer.segment.is_none() {
        // Closed, or dropped after a failure: what is pending is never acknowledged.
        return Err(StoreError::Unavailable("the journal is not open".into()));
    }
    let Some(segment) = writer.segment.as_mut() else {
        return Err(StoreError::Unavailable("the journal is not open".into()));
    };
    if let Err(e) = segment.append_durably(&buf, frames) {
        let e = Arc::new(e);
        return Err(shared.failed(&format!("journal segment {:016x}: {e}", segment.seq), StoreError::Flush(e)));
    }
    writer.durable = end;
    if segment.len >= journal::SEGMENT_BYTES {
        let next = segment.seq + 1;
        let journal_dir = shared.dir.join(JOURNAL_DIR);
        let rotated = segment.seal().and_then(|()| Segment::create(&journal_dir, next));
        match rotated {
            Ok(new) => writer.segment = Some(new),
            Err(e) => {
                // What was written is durable; only the next write has nowhere to go.
                writer.segment = None;
                let _ = shared.failed(&format!("starting journal segment {next:016x}: {e}"), StoreError::Closed);
            }
        }
    }
    Ok(end)
}

/// The flusher thread: one `write` + `fdatasync` answers every writer that was waiting when it
/// began.
fn group_commit(shared: &Shared, rx: mpsc::Receiver<FlushRequest>) {
    while let Ok(first) = rx.recv() {
        let mut waiters = vec![first];
        waiters.extend(rx.try_iter());
        let (result, durable, generation) = {
            let mut writer = crate::sync::lock(&shared.writer);
            // Read under the writer's lock: a rebuild cannot slip between the write and the
            // generation.
            let generation = crate::sync::lock(&shared.pending).generation;
            let result = if shared.broken.load(Ordering::Acquire) {
                Err(FlushFailure::Unavailable(crate::sync::lock(&shared.fault).reason.clone().unwrap_or_default()))
            } else {
                sync_pending(shared, &mut writer).map(|_| ()).map_err(|e| match e {
                    StoreError::Flush(e) => FlushFailure::Io(e),
                    other => FlushFailure::Unavailable(other.to_string()),
                })
            };
            (result, writer.durable, generation)
        };
        for w in waiters {
            let answer = if w.generation != generation {
                Err(FlushFailure::Reopened)
            } else if w.lsn <= durable {
                Ok(())
            } else {
                result.clone().and(Err(FlushFailure::Reopened))
            };
            let _ = w.reply.send(answer);
        }
    }
}

/// The record a time-index entry points at, unless the entry is a leftover of a crash between
/// the index and the record write (no record, or the record moved to another first_seen).
fn indexed_record(db: &sled::Db, key: &[u8]) -> Result<Option<CallRecord>, StoreError> {
    let sid = sid_of_time_key(key);
    Ok(get_in(db, &sid)?.filter(|record| time_key(record.first_seen, &sid) == key))
}

fn record_key(call_sid: &str) -> Vec<u8> {
    [RECORD_PREFIX, call_sid.as_bytes()].concat()
}

fn time_prefix(t: Timestamp) -> Vec<u8> {
    let micros = u64::try_from(t.as_microsecond()).unwrap_or(0);
    [TIME_PREFIX, &micros.to_be_bytes()].concat()
}

fn time_key(t: Timestamp, call_sid: &str) -> Vec<u8> {
    [time_prefix(t).as_slice(), b"/", call_sid.as_bytes()].concat()
}

fn sid_of_time_key(key: &[u8]) -> String {
    String::from_utf8_lossy(key.get(TIME_PREFIX.len() + 9..).unwrap_or_default()).into_owned()
}

fn encode(record: &CallRecord) -> Vec<u8> {
    // A record is plain data (strings, numbers, timestamps): serialising it cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

fn decode(call_sid: &str, bytes: &[u8]) -> Result<CallRecord, StoreError> {
    let mut record: CallRecord =
        serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { key: call_sid.to_owned(), source })?;
    record.refresh_outcome();
    Ok(record)
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A store dropped without `close` (a test, a CLI that only read) still writes what is
        // pending; the index is rebuilt from the journal at the next start.
        let mut writer = crate::sync::lock(&self.shared.writer);
        if writer.segment.is_some()
            && let Err(e) = sync_pending(&self.shared, &mut writer)
        {
            log::error!("final call log write failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::event::test_event;
    use crate::calls::{CallStatus, EventSource};

    fn incoming(sid: &str) -> CallEvent {
        test_event(sid, EventSource::IncomingCall, Some(CallStatus::Ringing), &[])
    }

    #[tokio::test]
    async fn index_entries_left_by_a_crash_between_writes_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first_seen = store.record(incoming("CA1")).await.unwrap().record.first_seen;
        {
            let guard = store.inner.shared.db.read().unwrap();
            let db = guard.as_ref().unwrap();
            // The index of a call whose record never made it, and the old index of a call
            // whose first_seen moved (the removal never made it).
            db.insert(time_key(first_seen, "CA2"), &[] as &[u8]).unwrap();
            let earlier = first_seen.checked_sub(jiff::SignedDuration::from_secs(60)).unwrap();
            db.insert(time_key(earlier, "CA1"), &[] as &[u8]).unwrap();
        }
        let listed: Vec<String> = store.list(10, None).unwrap().into_iter().map(|r| r.call_sid).collect();
        assert_eq!(listed, ["CA1"]);
        let day = jiff::SignedDuration::from_hours(24);
        let range = store.between(first_seen.checked_sub(day).unwrap(), first_seen.checked_add(day).unwrap()).unwrap();
        assert_eq!(range.len(), 1);
        assert_eq!(store.count(), 1);
    }

    #[tokio::test]
    async fn an_index_lost_without_a_clean_stop_is_rebuilt_from_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            for i in 0..20 {
                store.record(incoming(&format!("CA{i}"))).await.unwrap();
            }
            // Dropped without `close`: no clean marker, as after a crash.
        }
        fs::remove_dir_all(dir.path().join(SLED_DIR)).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.count(), 20);
        assert!(store.fault().is_none());
    }

    #[tokio::test]
    async fn compaction_keeps_every_call_and_drops_old_segments() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..50 {
            store.record(incoming(&format!("CA{i}"))).await.unwrap();
        }
        store.compact().unwrap();
        store.record(incoming("CAafter")).await.unwrap();
        let segments = journal::list_segments(&dir.path().join(JOURNAL_DIR)).unwrap();
        assert_eq!(segments.len(), 2, "the snapshot and the segment written after it");
        store.close().unwrap();
        drop(store);
        fs::remove_dir_all(dir.path().join(SLED_DIR)).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.count(), 51);
    }
}
