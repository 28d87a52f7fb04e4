//! The call log's journal: an append-only, checksummed record of every change, and the source
//! of truth for what was acknowledged.
//!
//! Why a journal under sled: sled 0.34 makes a flush "durable" with `sync_file_range`, which
//! writes the data pages but not the file's size or extents, so a power cut can take back
//! events that were flushed and acknowledged (measured: whole storms of acknowledged events
//! gone, and once a database that panics at every open). Appends followed by `fdatasync` do
//! survive the same cut. So every change is appended here first, and sled is the index built
//! from the journal: it is caught up at start and rebuilt from scratch when it cannot be
//! trusted.
//!
//! Layout: `journal/<seq, 16 hex digits>.cbj`, one *segment* per file, read in order of `seq`.
//! A segment is a run of frames `magic (4) | length (4) | crc32 of length and payload (4) |
//! payload (JSON of an [`Entry`])`. A segment that is finished ends with a [`Entry::Seal`]
//! that counts its frames, so a segment that lost its end (a truncated file) is told from one
//! that was merely the last one written before a crash. The magic lets a reader find the next
//! good frame after a damaged one, so one bad block costs only the frames inside it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::event::CallEvent;
use super::record::CallRecord;

/// Marks the start of a frame ("CBJ1").
const MAGIC: u32 = 0x314A_4243;
const HEADER: usize = 12;
/// Largest payload a frame may carry: a call's record with a full timeline and long details is
/// far below this; anything larger is damage, not data.
pub(super) const MAX_PAYLOAD: usize = 8 * 1024 * 1024;
/// A segment is sealed and a new one started past this size, so compaction and damage stay
/// local to a few megabytes.
pub(super) const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
const SUFFIX: &str = "cbj";

/// One change to the call log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Entry {
    /// An event, applied to its call's record by the record's own rules (idempotent).
    Event(Box<CallEvent>),
    /// A call's whole record, replacing what was there (media sessions, compaction).
    Put(Box<CallRecord>),
    /// A document kept beside the calls (an outgoing text, an opt-out), written whole; `None`
    /// removes it.
    Doc {
        /// Its key, e.g. `msg/textback:CA…`.
        key: String,
        /// Its contents.
        value: Option<serde_json::Value>,
    },
    /// A call removed by retention.
    Remove {
        /// The call.
        call_sid: String,
    },
    /// The end of a finished segment: how many frames came before it.
    Seal {
        /// Frames in the segment before this one.
        frames: u64,
    },
}

/// Encodes `entry` as one frame.
pub(super) fn frame(entry: &Entry) -> Vec<u8> {
    // Entries are plain data (strings, numbers, timestamps): serialising cannot fail.
    let payload = serde_json::to_vec(entry).unwrap_or_default();
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len.to_le_bytes());
    crc.update(&payload);
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The payload of a well-formed frame at `pos`, and where the next frame starts.
fn frame_at(bytes: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(pos..pos + HEADER)?;
    let word = |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    if word(0) != MAGIC {
        return None;
    }
    let len = word(4) as usize;
    if len > MAX_PAYLOAD {
        return None;
    }
    let payload = bytes.get(pos + HEADER..pos + HEADER + len)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[4..8]);
    crc.update(payload);
    (crc.finalize() == word(8)).then_some((payload, pos + HEADER + len))
}

/// A segment's name for `seq`.
pub(super) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.{SUFFIX}"))
}

/// The segments in `dir`, in order. Leftovers of an interrupted compaction (`.tmp`) are removed.
pub(super) fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.ends_with(".tmp") {
            log::info!("removing {} left by an interrupted compaction", path.display());
            fs::remove_file(&path)?;
            continue;
        }
        let Some(stem) = name.strip_suffix(&format!(".{SUFFIX}")) else { continue };
        if let Ok(seq) = u64::from_str_radix(stem, 16) {
            out.push((seq, path));
        }
    }
    out.sort();
    Ok(out)
}

/// What reading one segment found.
#[derive(Debug, Default)]
pub(super) struct SegmentScan {
    /// The entries that could be read, in order.
    pub entries: Vec<Entry>,
    /// Frames read before the seal (entries, readable or not).
    pub frames: u64,
    /// Whether the segment ends with its seal (and the seal's count matched).
    pub sealed: bool,
    /// Where the last good frame ends: the length to cut a torn tail back to.
    pub good_len: u64,
    /// Damage in the middle of the segment: frames that cannot be read, with good ones after.
    pub damage: Vec<String>,
    /// Bytes after the last good frame that are neither frames nor zeros (a torn write, or a
    /// damaged end).
    pub torn_tail: Option<u64>,
}

/// Reads every frame of a segment, skipping over damage to the next good frame.
pub(super) fn scan_segment(path: &Path, decode: bool) -> io::Result<SegmentScan> {
    let bytes = fs::read(path)?;
    let mut scan = SegmentScan::default();
    let mut frames = 0u64;
    let mut pos = 0usize;
    while pos < bytes.len() {
        if bytes[pos..].iter().all(|b| *b == 0) {
            break; // zeros past the end of what was written
        }
        scan.frames = frames;
        match frame_at(&bytes, pos) {
            Some((payload, next)) => {
                pos = next;
                scan.good_len = next as u64;
                match serde_json::from_slice::<Entry>(payload) {
                    Ok(Entry::Seal { frames: n }) => {
                        scan.sealed = n == frames;
                        if !scan.sealed {
                            scan.damage.push(format!("its seal counts {n} frames but {frames} were read"));
                        }
                    }
                    Ok(entry) => {
                        frames += 1;
                        scan.sealed = false;
                        if decode {
                            scan.entries.push(entry);
                        }
                    }
                    Err(e) => {
                        // The checksum held, so this is an entry of a newer version, not damage
                        // of the disk; it is still an event this version cannot restore.
                        frames += 1;
                        scan.damage.push(format!("an entry at offset {} is unreadable: {e}", next - payload.len()));
                    }
                }
            }
            None => match (pos + 1..bytes.len().saturating_sub(HEADER)).find(|p| frame_at(&bytes, *p).is_some()) {
                Some(resync) => {
                    scan.damage.push(format!("{} bytes unreadable at offset {pos}", resync - pos));
                    pos = resync;
                }
                None => {
                    scan.torn_tail = Some((bytes.len() - pos) as u64);
                    break;
                }
            },
        }
    }
    scan.frames = frames;
    Ok(scan)
}

/// The segment being appended to.
#[derive(Debug)]
pub(super) struct Segment {
    /// Its sequence number.
    pub seq: u64,
    file: File,
    /// Bytes written (and, after `sync`, on disk).
    pub len: u64,
    /// Frames written, for the seal.
    pub frames: u64,
}

impl Segment {
    /// Creates segment `seq` in `dir`, durably (the directory entry too).
    pub(super) fn create(dir: &Path, seq: u64) -> io::Result<Self> {
        let path = segment_path(dir, seq);
        let file = OpenOptions::new().create_new(true).write(true).open(&path)?;
        sync_dir(dir)?;
        Ok(Self { seq, file, len: 0, frames: 0 })
    }

    /// Appends `bytes` (whole frames, `frames` of them) and waits until they are on disk.
    /// On failure the segment is cut back to what was on disk before, as far as it can be.
    pub(super) fn append_durably(&mut self, bytes: &[u8], frames: u64) -> io::Result<()> {
        let result = self.file.write_all(bytes).and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += bytes.len() as u64;
                self.frames += frames;
                Ok(())
            }
            Err(e) => {
                // Best effort: a half-written frame at the end would otherwise be read as a
                // torn tail in the middle of the journal once later segments exist.
                let _ = self.file.set_len(self.len).and_then(|()| self.file.sync_data());
                Err(e)
            }
        }
    }

    /// Ends the segment with its seal, durably.
    pub(super) fn seal(&mut self) -> io::Result<()> {
        let seal = frame(&Entry::Seal { frames: self.frames });
        self.append_durably(&seal, 0)
    }
}

/// Makes a directory's entries (a file created, renamed or removed in it) durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes a whole segment `seq` from `entries` atomically: to a temporary file, synced, then
/// renamed into place and the directory synced. Used by compaction.
pub(super) fn write_segment(dir: &Path, seq: u64, entries: impl Iterator<Item = Entry>) -> io::Result<u64> {
    let final_path = segment_path(dir, seq);
    let tmp = final_path.with_extension("tmp");
    let mut out = io::BufWriter::new(File::create(&tmp)?);
    let mut frames = 0u64;
    let mut bytes = 0u64;
    for entry in entries {
        let f = frame(&entry);
        bytes += f.len() as u64;
        out.write_all(&f)?;
        frames += 1;
    }
    out.write_all(&frame(&Entry::Seal { frames }))?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, &final_path)?;
    sync_dir(dir)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::event::test_event;
    use crate::calls::{CallStatus, EventSource};

    fn write(dir: &Path, n: usize, seal: bool) -> PathBuf {
        let mut seg = Segment::create(dir, 1).unwrap();
        for i in 0..n {
            let e = test_event(&format!("CA{i}"), EventSource::IncomingCall, Some(CallStatus::Ringing), &[]);
            seg.append_durably(&frame(&Entry::Event(Box::new(e))), 1).unwrap();
        }
        if seal {
            seg.seal().unwrap();
        }
        segment_path(dir, 1)
    }

    #[test]
    fn a_sealed_segment_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), 5, true);
        let scan = scan_segment(&path, true).unwrap();
        assert_eq!(scan.entries.len(), 5);
        assert!(scan.sealed && scan.damage.is_empty() && scan.torn_tail.is_none());
    }

    #[test]
    fn a_flipped_byte_costs_one_entry_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), 5, true);
        let mut bytes = fs::read(&path).unwrap();
        let third = bytes.len() / 2;
        bytes[third] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let scan = scan_segment(&path, true).unwrap();
        assert_eq!(scan.entries.len(), 4);
        assert_eq!(scan.damage.len(), 2, "{:?}", scan.damage); // the bad frame, then the seal's count
    }

    #[test]
    fn a_torn_tail_is_told_from_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), 5, false);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 7).unwrap();
        let scan = scan_segment(&path, true).unwrap();
        assert_eq!(scan.entries.len(), 4);
        assert!(scan.damage.is_empty() && !scan.sealed);
        assert!(scan.torn_tail.is_some());
    }
}
