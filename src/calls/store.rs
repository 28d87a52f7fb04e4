//! The durable call log: the only module that names sled.
//!
//! Layout (one sled tree):
//! - `c/<CallSid>` → the call's record as JSON;
//! - `t/<first_seen µs, big-endian>/<CallSid>` → empty; the time index for listing.
//!
//! A record and its index entry change in one atomic batch. Writers to the same call are
//! serialised by a striped lock (the read-modify-write takes microseconds and never spans an
//! await). Durability is group commit: a writer hands a oneshot to the flusher thread, which
//! takes every waiter queued, calls `flush()` once (an fsync), and answers them all. sled's
//! own `flush_async` deadlocks with many concurrent callers (sled issue #1308; measured in
//! shared/reference/sled.md), so it is never used.
//!
//! A failed write (the disk is full, an I/O error) poisons a sled database for good: sled keeps
//! the first I/O error and returns it from every later write and flush, even once space is
//! back (measured with sled 0.34.7 on a full tmpfs: `Io(StorageFull)`, no panic). Reads on it
//! are not safe either (see `Shared::recover`). So after a write fails the store drops the
//! database at once, answers every use with [`StoreError::Unavailable`], and reopens it at the
//! next use once there is some free space (at most once per [`REOPEN_INTERVAL`]); everything
//! flushed before the failure is intact. Each reopen starts a new *generation*: a write whose
//! database was dropped before its flush is refused, so a write lost with the old database is
//! never acknowledged.

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::oneshot;

use super::event::CallEvent;
use super::record::{Applied, CallRecord};

const RECORD_PREFIX: &[u8] = b"c/";
const TIME_PREFIX: &[u8] = b"t/";
/// Lock stripes for per-call read-modify-write; a power of two well above the core count.
const STRIPES: usize = 64;
/// Least time between two attempts to reopen the database after a write failed: a disk that
/// stays full must not have it reopened for every request.
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(1);
/// How long [`Store::open`] waits for a lock that sled has not yet let go of.
const LOCK_WAIT: Duration = Duration::from_secs(1);
/// Free space below which a reopen is not tried: it would fail (sled writes on open), or
/// succeed only to fail again at the next write. Two sled segments.
const REOPEN_MIN_FREE: u64 = 1024 * 1024;

/// A call-log failure. Any of these means the event is *not* known to be on disk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process (usually the running service) holds the store.
    #[error("the call log at {0} is in use by another process (is the service running?)")]
    Locked(PathBuf),
    /// The store could not be opened.
    #[error("cannot open the call log at {path}: {source}")]
    Open {
        /// The directory.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// Reading or writing failed (disk full, I/O error).
    #[error("call log I/O failed: {0}")]
    Io(#[from] sled::Error),
    /// Flushing to disk failed; the write may be lost.
    #[error("call log flush failed: {0}")]
    Flush(Arc<sled::Error>),
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
    /// The database was reopened after a write failure before this write was flushed; the
    /// write may have been lost with the old database.
    #[error("call log was reopened after a write failure; this write is not known to be on disk")]
    Reopened,
    /// A write failed earlier and the database could not be reopened yet (the disk is still
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
    Sled(Arc<sled::Error>),
    Reopened,
    Unavailable(String),
}

impl From<FlushFailure> for StoreError {
    fn from(f: FlushFailure) -> Self {
        match f {
            FlushFailure::Sled(e) => StoreError::Flush(e),
            FlushFailure::Reopened => StoreError::Reopened,
            FlushFailure::Unavailable(why) => StoreError::Unavailable(why),
        }
    }
}

/// A writer waiting for the disk: the generation its write went into, and where to answer.
struct FlushRequest {
    generation: u64,
    reply: oneshot::Sender<Result<(), FlushFailure>>,
}

/// The call log. Cheap to clone; all clones share one database and one flusher.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    stripes: [Mutex<()>; STRIPES],
    hasher: std::collections::hash_map::RandomState,
    flush_tx: Mutex<Option<mpsc::Sender<FlushRequest>>>,
    flusher: Mutex<Option<thread::JoinHandle<()>>>,
}

/// What the flusher thread shares with the writers.
struct Shared {
    /// `None` from a write failure until a reopen succeeds. Nobody keeps a clone of the `Db`
    /// outside this lock, so the write lock alone lets the failed database go (and its file
    /// lock) before a reopen.
    db: RwLock<Option<sled::Db>>,
    /// Bumped (under the write lock) whenever `db` is replaced.
    generation: AtomicU64,
    /// Set when a write failed; cleared by a successful reopen.
    broken: AtomicBool,
    /// Why the store is broken, and when it may next be reopened.
    fault: Mutex<Fault>,
    path: PathBuf,
}

#[derive(Default)]
struct Fault {
    reason: Option<String>,
    /// The failed database has been dropped (`db` is `None`).
    retired: bool,
    next_reopen: Option<Instant>,
}

/// A read lock on the open database, with the generation it belongs to.
struct DbGuard<'a> {
    guard: RwLockReadGuard<'a, Option<sled::Db>>,
    generation: u64,
}

impl std::ops::Deref for DbGuard<'_> {
    type Target = sled::Db;
    fn deref(&self) -> &sled::Db {
        self.guard.as_ref().expect("a DbGuard is only made around an open database")
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.inner.shared.path).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the call log in `dir`, recovering from any crash on the way.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("calls.sled");
        // sled lets go of its file lock only once its IO threads have finished the last
        // writes of a database just closed in this process (a restart in a test, a CLI right
        // after the service's store): wait briefly for that rather than fail. Another process
        // holding the store still gets `Locked`, a moment later.
        let deadline = Instant::now() + LOCK_WAIT;
        let db = loop {
            match open_db(&path) {
                Err(StoreError::Locked(_)) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                result => break result?,
            }
        };
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(db)),
            generation: AtomicU64::new(0),
            broken: AtomicBool::new(false),
            fault: Mutex::new(Fault::default()),
            path,
        });
        let (tx, rx) = mpsc::channel::<FlushRequest>();
        let flush_shared = shared.clone();
        let flusher = thread::Builder::new()
            .name("callbox-flush".into())
            .spawn(move || group_commit(&flush_shared, rx))
            .map_err(|e| StoreError::Io(sled::Error::Io(e)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                stripes: std::array::from_fn(|_| Mutex::new(())),
                hasher: Default::default(),
                flush_tx: Mutex::new(Some(tx)),
                flusher: Mutex::new(Some(flusher)),
            }),
        })
    }

    /// Records `event` and returns once it is on disk. A retried event changes nothing (but
    /// still waits for the disk, so its first delivery's answer is never ahead of the data).
    pub async fn record(&self, event: CallEvent) -> Result<Recorded, StoreError> {
        let call_sid = event.call_sid.clone();
        let (recorded, generation) = self.modify(&call_sid, move |existing| {
            Some(match existing {
                Some(mut record) => {
                    let applied = record.apply(event);
                    (record, applied)
                }
                None => (CallRecord::new(&event), Applied::Added),
            })
        })?;
        self.flush_generation(generation).await?;
        recorded.ok_or(StoreError::Closed)
    }

    /// Applies `change` to an existing call (media sessions add their details) and returns
    /// once it is on disk. `Ok(None)` when the call is unknown.
    pub async fn update(
        &self,
        call_sid: &str,
        change: impl FnOnce(&mut CallRecord),
    ) -> Result<Option<CallRecord>, StoreError> {
        let (recorded, generation) = self.modify(call_sid, |existing| {
            let mut record = existing?;
            change(&mut record);
            Some((record, Applied::Added))
        })?;
        if recorded.is_some() {
            self.flush_generation(generation).await?;
        }
        Ok(recorded.map(|r| r.record))
    }

    fn modify(
        &self,
        call_sid: &str,
        change: impl FnOnce(Option<CallRecord>) -> Option<(CallRecord, Applied)>,
    ) -> Result<(Option<Recorded>, u64), StoreError> {
        let _guard = self.stripe(call_sid).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let db = self.db()?;
        let generation = db.generation;
        let before = get_in(&db, call_sid)?;
        let old_first_seen = before.as_ref().map(|r| r.first_seen);
        let Some((record, applied)) = change(before) else {
            return Ok((None, generation));
        };
        if applied == Applied::Duplicate {
            // Still flushed by the caller: the first delivery may not be on disk yet.
            return Ok((Some(Recorded { record, applied }), generation));
        }
        // Plain inserts, not a sled::Batch: sled 0.34 rolls its IO buffer twice for every batch
        // (pagecache `pin_log`), a write and a sync_file_range each, which defeats group commit
        // (strace under the store bench: two of each per event, against one per flush without).
        // The time index goes first and a stale one is removed last, so a crash in between
        // leaves at worst an index entry that readers skip (see `indexed_record`), never a
        // record the listing misses.
        let fail = |e| self.inner.shared.failed(e);
        let moved = old_first_seen != Some(record.first_seen);
        if moved {
            db.insert(time_key(record.first_seen, call_sid), &[] as &[u8]).map_err(fail)?;
        }
        db.insert(record_key(call_sid), encode(&record)).map_err(fail)?;
        if moved && let Some(old) = old_first_seen {
            db.remove(time_key(old, call_sid)).map_err(fail)?;
        }
        Ok((Some(Recorded { record, applied }), generation))
    }

    /// Waits until everything written so far is on disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let generation = self.db()?.generation;
        self.flush_generation(generation).await
    }

    /// Waits until everything written into `generation` of the database is on disk.
    async fn flush_generation(&self, generation: u64) -> Result<(), StoreError> {
        let (reply, done) = oneshot::channel();
        {
            let tx = self.inner.flush_tx.lock().unwrap_or_else(|p| p.into_inner());
            let request = FlushRequest { generation, reply };
            tx.as_ref().ok_or(StoreError::Closed)?.send(request).map_err(|_| StoreError::Closed)?;
        }
        Ok(done.await.map_err(|_| StoreError::Closed)??)
    }

    /// Why writes are failing, while they are (until the database was reopened).
    pub fn fault(&self) -> Option<String> {
        if !self.inner.shared.broken.load(Ordering::Acquire) {
            return None;
        }
        self.inner.shared.fault.lock().unwrap_or_else(|p| p.into_inner()).reason.clone()
    }

    /// The open database, reopened first when a write failed and a reopen is due.
    fn db(&self) -> Result<DbGuard<'_>, StoreError> {
        let shared = &self.inner.shared;
        if shared.broken.load(Ordering::Acquire) {
            shared.recover();
        }
        let guard = shared.db.read().unwrap_or_else(|p| p.into_inner());
        let generation = shared.generation.load(Ordering::Acquire);
        if guard.is_none() {
            let why = shared.fault.lock().unwrap_or_else(|p| p.into_inner()).reason.clone();
            return Err(StoreError::Unavailable(why.unwrap_or_else(|| "not open".into())));
        }
        Ok(DbGuard { guard, generation })
    }

    /// One call's record.
    pub fn get(&self, call_sid: &str) -> Result<Option<CallRecord>, StoreError> {
        let db = self.db()?;
        get_in(&db, call_sid)
    }

    /// Up to `limit` calls, newest first, strictly older than the call `before` when given.
    pub fn list(&self, limit: usize, before: Option<&str>) -> Result<Vec<CallRecord>, StoreError> {
        // One read lock for the whole listing: taking it again while a reopen waits would deadlock.
        let db = self.db()?;
        let upper = match before {
            Some(sid) => match get_in(&db, sid)? {
                Some(r) => time_key(r.first_seen, sid),
                None => return Ok(Vec::new()),
            },
            None => prefix_end(TIME_PREFIX),
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for item in db.range(TIME_PREFIX.to_vec()..upper).rev() {
            if out.len() >= limit {
                break;
            }
            let (key, _) = item?;
            if let Some(record) = indexed_record(&db, &key)? {
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
    /// (0 = no limit), and makes that durable. Returns how many were removed.
    pub async fn prune(&self, older_than: Option<Timestamp>, max_calls: u64) -> Result<usize, StoreError> {
        let mut victims = Vec::new();
        let total = self.count() as u64;
        let excess = if max_calls == 0 { 0 } else { total.saturating_sub(max_calls) };
        // The read lock must be released before the await below (its guard is not Send).
        let generation = {
            let db = self.db()?;
            let generation = db.generation;
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
            generation
        };
        for key in &victims {
            let sid = sid_of_time_key(key);
            let _guard = self.stripe(&sid).lock().unwrap_or_else(|p| p.into_inner());
            let db = self.db()?;
            if db.generation != generation {
                return Err(StoreError::Reopened);
            }
            let mut batch = sled::Batch::default();
            batch.remove(key.as_ref());
            batch.remove(record_key(&sid));
            db.apply_batch(batch).map_err(|e| self.inner.shared.failed(e))?;
        }
        if !victims.is_empty() {
            self.flush_generation(generation).await?;
        }
        Ok(victims.len())
    }

    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db()?.size_on_disk()?)
    }

    /// Flushes and stops the flusher thread; later writes fail with [`StoreError::Closed`].
    pub fn close(&self) -> Result<(), StoreError> {
        let tx = self.inner.flush_tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(tx);
        if let Some(handle) = self.inner.flusher.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = handle.join();
        }
        match &*self.inner.shared.db.read().unwrap_or_else(|p| p.into_inner()) {
            Some(db) => {
                db.flush()?;
                Ok(())
            }
            None => Err(StoreError::Unavailable("the call log could not be reopened".into())),
        }
    }

    fn stripe(&self, call_sid: &str) -> &Mutex<()> {
        let mut h = self.inner.hasher.build_hasher();
        h.write(call_sid.as_bytes());
        &self.inner.stripes[(h.finish() as usize) % STRIPES]
    }
}

impl Shared {
    /// Notes a failed write or flush: the database must be reopened before it takes writes again.
    fn failed(&self, e: sled::Error) -> StoreError {
        let mut fault = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        if !self.broken.swap(true, Ordering::AcqRel) {
            log::error!("call log write failed ({e}); writes are refused until it is reopened");
        }
        fault.reason = Some(e.to_string());
        StoreError::Io(e)
    }

    /// After a failure: retires the failed database at once, then reopens it unless the last
    /// attempt was too recent or the disk is still (nearly) full.
    fn recover(&self) {
        let now = Instant::now();
        {
            let fault = self.fault.lock().unwrap_or_else(|p| p.into_inner());
            if fault.retired && fault.next_reopen.is_some_and(|t| now < t) {
                return; // nothing to do before the next attempt: spare the write lock
            }
        }
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        let mut fault = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        if !self.broken.load(Ordering::Acquire) {
            return; // another caller reopened it meanwhile
        }
        if !fault.retired {
            // A failed sled database is not safe even to read: measured, a read that meets a
            // node due for a split retries the split forever (100% CPU, never returns). And
            // every write into it that is not flushed yet is now refused (new generation).
            self.generation.fetch_add(1, Ordering::AcqRel);
            drop(slot.take());
            fault.retired = true;
        }
        if fault.next_reopen.is_some_and(|t| now < t) {
            return;
        }
        fault.next_reopen = Some(now + REOPEN_INTERVAL);
        if let Ok(stat) = rustix::fs::statvfs(&self.path)
            && stat.f_bavail.saturating_mul(stat.f_frsize) < REOPEN_MIN_FREE
        {
            return;
        }
        match open_db(&self.path) {
            Ok(db) => {
                *slot = Some(db);
                self.generation.fetch_add(1, Ordering::AcqRel);
                self.broken.store(false, Ordering::Release);
                fault.retired = false;
                fault.reason = None;
                log::info!("call log reopened at {}; writes are accepted again", self.path.display());
            }
            Err(e) => {
                log::warn!("call log cannot be reopened yet: {e}");
                fault.reason = Some(e.to_string());
            }
        }
    }
}

fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
    sled::Config::new().path(path).mode(sled::Mode::LowSpace).open().map_err(|source| {
        if source.to_string().contains("could not acquire lock") {
            StoreError::Locked(path.to_owned())
        } else {
            StoreError::Open { path: path.to_owned(), source }
        }
    })
}

fn get_in(db: &sled::Db, call_sid: &str) -> Result<Option<CallRecord>, StoreError> {
    match db.get(record_key(call_sid))? {
        Some(bytes) => decode(call_sid, &bytes).map(Some),
        None => Ok(None),
    }
}

/// The flusher thread: one `flush()` answers every writer that was waiting when it began.
fn group_commit(shared: &Shared, rx: mpsc::Receiver<FlushRequest>) {
    while let Ok(first) = rx.recv() {
        let mut waiters = vec![first];
        waiters.extend(rx.try_iter());
        let (result, generation) = {
            let db = shared.db.read().unwrap_or_else(|p| p.into_inner());
            // Read under the lock: a reopen cannot slip between the flush and the generation.
            let generation = shared.generation.load(Ordering::Acquire);
            let result = match db.as_ref() {
                Some(db) => db.flush().map(|_| ()).map_err(|e| FlushFailure::Sled(Arc::new(e))),
                None => Err(FlushFailure::Unavailable("the call log could not be reopened".into())),
            };
            if let Err(FlushFailure::Sled(e)) = &result {
                let _ = shared.failed(sled::Error::clone(e));
            }
            (result, generation)
        };
        if shared.broken.load(Ordering::Acquire) {
            // Retire the failed database now, before a reader can get stuck in it.
            shared.recover();
        }
        for w in waiters {
            let answer = if w.generation == generation { result.clone() } else { Err(FlushFailure::Reopened) };
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

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

fn encode(record: &CallRecord) -> Vec<u8> {
    // A record is plain data (strings, numbers, timestamps): serialising it cannot fail.
    serde_json::to_vec(record).expect("call records always serialise")
}

fn decode(call_sid: &str, bytes: &[u8]) -> Result<CallRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { key: call_sid.to_owned(), source })
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(db) = &*self.shared.db.read().unwrap_or_else(|p| p.into_inner())
            && let Err(e) = db.flush()
        {
            log::error!("final call log flush failed: {e}");
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
}
