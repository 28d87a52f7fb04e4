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

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use jiff::Timestamp;
use tokio::sync::oneshot;

use super::event::CallEvent;
use super::record::{Applied, CallRecord};

const RECORD_PREFIX: &[u8] = b"c/";
const TIME_PREFIX: &[u8] = b"t/";
/// Lock stripes for per-call read-modify-write; a power of two well above the core count.
const STRIPES: usize = 64;

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
}

/// The outcome of [`Store::record`].
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The call's record after the event.
    pub record: CallRecord,
    /// Whether the event was new or a retry.
    pub applied: Applied,
}

type FlushReply = oneshot::Sender<Result<(), Arc<sled::Error>>>;

/// The call log. Cheap to clone; all clones share one database and one flusher.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    path: PathBuf,
    stripes: [Mutex<()>; STRIPES],
    hasher: std::collections::hash_map::RandomState,
    flush_tx: Mutex<Option<mpsc::Sender<FlushReply>>>,
    flusher: Mutex<Option<thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the call log in `dir`, recovering from any crash on the way.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("calls.sled");
        let db = sled::Config::new().path(&path).mode(sled::Mode::LowSpace).open().map_err(|source| {
            if source.to_string().contains("could not acquire lock") {
                StoreError::Locked(path.clone())
            } else {
                StoreError::Open { path: path.clone(), source }
            }
        })?;
        let (tx, rx) = mpsc::channel::<FlushReply>();
        let flush_db = db.clone();
        let flusher = thread::Builder::new()
            .name("callbox-flush".into())
            .spawn(move || group_commit(flush_db, rx))
            .map_err(|e| StoreError::Io(sled::Error::Io(e)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                path,
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
        let recorded = self.modify(&call_sid, move |existing| {
            Some(match existing {
                Some(mut record) => {
                    let applied = record.apply(event);
                    (record, applied)
                }
                None => (CallRecord::new(&event), Applied::Added),
            })
        })?;
        self.flush().await?;
        recorded.ok_or(StoreError::Closed)
    }

    /// Applies `change` to an existing call (media sessions add their details) and returns
    /// once it is on disk. `Ok(None)` when the call is unknown.
    pub async fn update(
        &self,
        call_sid: &str,
        change: impl FnOnce(&mut CallRecord),
    ) -> Result<Option<CallRecord>, StoreError> {
        let recorded = self.modify(call_sid, |existing| {
            let mut record = existing?;
            change(&mut record);
            Some((record, Applied::Added))
        })?;
        if recorded.is_some() {
            self.flush().await?;
        }
        Ok(recorded.map(|r| r.record))
    }

    fn modify(
        &self,
        call_sid: &str,
        change: impl FnOnce(Option<CallRecord>) -> Option<(CallRecord, Applied)>,
    ) -> Result<Option<Recorded>, StoreError> {
        let _guard = self.stripe(call_sid).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = self.get(call_sid)?;
        let old_first_seen = before.as_ref().map(|r| r.first_seen);
        let Some((record, applied)) = change(before) else {
            return Ok(None);
        };
        if applied == Applied::Duplicate {
            return Ok(Some(Recorded { record, applied }));
        }
        let mut batch = sled::Batch::default();
        batch.insert(record_key(call_sid), encode(&record));
        if old_first_seen != Some(record.first_seen) {
            if let Some(old) = old_first_seen {
                batch.remove(time_key(old, call_sid));
            }
            batch.insert(time_key(record.first_seen, call_sid), &[] as &[u8]);
        }
        self.inner.db.apply_batch(batch)?;
        Ok(Some(Recorded { record, applied }))
    }

    /// Waits until everything written so far is on disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (reply, done) = oneshot::channel();
        {
            let tx = self.inner.flush_tx.lock().unwrap_or_else(|p| p.into_inner());
            tx.as_ref().ok_or(StoreError::Closed)?.send(reply).map_err(|_| StoreError::Closed)?;
        }
        done.await.map_err(|_| StoreError::Closed)?.map_err(StoreError::Flush)
    }

    /// One call's record.
    pub fn get(&self, call_sid: &str) -> Result<Option<CallRecord>, StoreError> {
        match self.inner.db.get(record_key(call_sid))? {
            Some(bytes) => decode(call_sid, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Up to `limit` calls, newest first, strictly older than the call `before` when given.
    pub fn list(&self, limit: usize, before: Option<&str>) -> Result<Vec<CallRecord>, StoreError> {
        let upper = match before {
            Some(sid) => match self.get(sid)? {
                Some(r) => time_key(r.first_seen, sid),
                None => return Ok(Vec::new()),
            },
            None => prefix_end(TIME_PREFIX),
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for item in self.inner.db.range(TIME_PREFIX.to_vec()..upper).rev() {
            if out.len() >= limit {
                break;
            }
            let (key, _) = item?;
            let sid = sid_of_time_key(&key);
            if let Some(record) = self.get(&sid)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Calls first seen in `[from, to)`, oldest first.
    pub fn between(&self, from: Timestamp, to: Timestamp) -> Result<Vec<CallRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.db.range(time_prefix(from)..time_prefix(to)) {
            let (key, _) = item?;
            if let Some(record) = self.get(&sid_of_time_key(&key))? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Number of calls in the log.
    pub fn count(&self) -> usize {
        self.inner.db.scan_prefix(TIME_PREFIX).count()
    }

    /// Removes calls first seen before `older_than`, then the oldest beyond `max_calls`
    /// (0 = no limit), and makes that durable. Returns how many were removed.
    pub async fn prune(&self, older_than: Option<Timestamp>, max_calls: u64) -> Result<usize, StoreError> {
        let mut victims = Vec::new();
        let total = self.count() as u64;
        let excess = if max_calls == 0 { 0 } else { total.saturating_sub(max_calls) };
        for (i, item) in self.inner.db.scan_prefix(TIME_PREFIX).enumerate() {
            let (key, _) = item?;
            // A key sorts below the bare prefix of `cut` exactly when its time is earlier.
            let too_old = older_than.is_some_and(|cut| key.as_ref() < time_prefix(cut).as_slice());
            if (i as u64) < excess || too_old {
                victims.push(key);
            } else {
                break;
            }
        }
        for key in &victims {
            let sid = sid_of_time_key(key);
            let _guard = self.stripe(&sid).lock().unwrap_or_else(|p| p.into_inner());
            let mut batch = sled::Batch::default();
            batch.remove(key.as_ref());
            batch.remove(record_key(&sid));
            self.inner.db.apply_batch(batch)?;
        }
        if !victims.is_empty() {
            self.flush().await?;
        }
        Ok(victims.len())
    }

    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.inner.db.size_on_disk()?)
    }

    /// Flushes and stops the flusher thread; later writes fail with [`StoreError::Closed`].
    pub fn close(&self) -> Result<(), StoreError> {
        let tx = self.inner.flush_tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(tx);
        if let Some(handle) = self.inner.flusher.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = handle.join();
        }
        self.inner.db.flush()?;
        Ok(())
    }

    fn stripe(&self, call_sid: &str) -> &Mutex<()> {
        let mut h = self.inner.hasher.build_hasher();
        h.write(call_sid.as_bytes());
        &self.inner.stripes[(h.finish() as usize) % STRIPES]
    }
}

/// The flusher thread: one `flush()` answers every writer that was waiting when it began.
fn group_commit(db: sled::Db, rx: mpsc::Receiver<FlushReply>) {
    while let Ok(first) = rx.recv() {
        let mut waiters = vec![first];
        waiters.extend(rx.try_iter());
        let result = db.flush().map(|_| ()).map_err(Arc::new);
        if let Err(e) = &result {
            log::error!("call log flush failed: {e}");
        }
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
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
        if let Err(e) = self.db.flush() {
            log::error!("final call log flush failed: {e}");
        }
    }
}
