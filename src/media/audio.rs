//! Audio for media streams: G.711 μ-law, greetings (any WAV, resampled to 8 kHz mono), the
//! built-in prompt tone, and voicemail recordings written as they arrive.
//!
//! The μ-law codec is the ITU-T G.711 companding law (no maintained crate offers it without
//! pulling in a codec framework or C code); it is tested against the G.711 table below.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read as _};
use std::path::{Path, PathBuf};

use rubato::audioadapter_buffers::direct::SequentialSliceOfVecs;
use rubato::{Fft, FixedSync, Resampler as _};

use crate::calls::RecordingInfo;
use crate::twilio::media::FRAME_SAMPLES;

/// The stream's sample rate.
pub const SAMPLE_RATE: u32 = 8000;
/// μ-law silence.
pub const MULAW_SILENCE: u8 = 0xFF;
/// Folder under `storage.dir` holding recordings.
pub const RECORDINGS_DIR: &str = "recordings";
/// Suffix of a recording still being written (or cut off by a crash).
const PARTIAL_SUFFIX: &str = ".partial";
/// How often, in samples, the WAV header is brought up to date while recording (1 s), so a
/// crash loses at most that much even before the recovery pass.
const CHECKPOINT_SAMPLES: u64 = SAMPLE_RATE as u64;
/// Size of the header hound writes for 16-bit mono PCM: RIFF + fmt (16) + data chunk header.
const PCM_HEADER_BYTES: u64 = 44;
/// Free space a recording leaves to the call log: a voicemail is refused rather than let it
/// take the space call records need (a record is a few KiB; sled grows in 512 KiB segments).
pub const CALL_LOG_RESERVE_BYTES: u64 = 4 * 1024 * 1024;

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

/// Encodes one 16-bit linear sample as G.711 μ-law.
pub fn mulaw_encode(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign: u8 = if s < 0 { 0x80 } else { 0 };
    if s < 0 {
        s = -s;
    }
    s = s.min(CLIP) + BIAS;
    // Segment = position of the highest set bit above bit 7 (0..=7).
    let segment = (31 - (s as u32).leading_zeros()).saturating_sub(7).min(7) as u8;
    let mantissa = ((s >> (segment + 3)) & 0x0F) as u8;
    !(sign | (segment << 4) | mantissa)
}

/// Decodes one G.711 μ-law byte to a 16-bit linear sample.
pub fn mulaw_decode(byte: u8) -> i16 {
    let b = !byte;
    let segment = (b >> 4) & 0x07;
    let mantissa = i32::from(b & 0x0F);
    let magnitude = (((mantissa << 3) + BIAS) << segment) - BIAS;
    // At most (15*8 + 132) << 7 - 132 = 32124: always fits.
    let magnitude = magnitude as i16;
    if b & 0x80 != 0 { -magnitude } else { magnitude }
}

/// Decodes μ-law bytes, appending the samples to `out`.
pub fn decode_into(mulaw: &[u8], out: &mut Vec<i16>) {
    out.extend(mulaw.iter().map(|b| mulaw_decode(*b)));
}

/// Why a greeting could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GreetingError {
    /// The file is missing, unreadable or not a WAV file hound can read.
    #[error("cannot read greeting {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: hound::Error,
    },
    /// The file has no samples, or a layout that cannot be resampled.
    #[error("greeting {path} cannot be used: {problem}")]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// Loads a WAV greeting of any rate and channel count as 8 kHz mono μ-law, padded with
/// silence to whole 20 ms frames.
pub fn load_greeting(path: &Path) -> Result<Vec<u8>, GreetingError> {
    let read_err = |source| GreetingError::Read { path: path.to_owned(), source };
    let unusable = |problem: String| GreetingError::Unusable { path: path.to_owned(), problem };
    let mut reader = hound::WavReader::open(path).map_err(read_err)?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>().map_err(read_err)?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader.samples::<i32>().map(|s| s.map(|v| v as f32 * scale)).collect::<Result<_, _>>().map_err(read_err)?
        }
    };
    // Down-mix to mono by averaging the channels.
    let mono: Vec<f32> =
        interleaved.chunks_exact(channels).map(|frame| frame.iter().sum::<f32>() / channels as f32).collect();
    if mono.is_empty() {
        return Err(unusable("it has no samples".into()));
    }
    let resampled =
        if spec.sample_rate == SAMPLE_RATE { mono } else { resample(&mono, spec.sample_rate).map_err(unusable)? };
    let mut out: Vec<u8> =
        resampled.iter().map(|s| mulaw_encode((s.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16)).collect();
    pad_to_frames(&mut out);
    Ok(out)
}

fn resample(mono: &[f32], rate: u32) -> Result<Vec<f32>, String> {
    let mut resampler = Fft::<f32>::new(rate as usize, SAMPLE_RATE as usize, 1024, 1, FixedSync::Input)
        .map_err(|e| format!("cannot resample from {rate} Hz: {e}"))?;
    let input = [mono.to_vec()];
    let adapter = SequentialSliceOfVecs::new(&input, 1, mono.len()).map_err(|e| e.to_string())?;
    let out = resampler.process_all(&adapter, mono.len(), None).map_err(|e| format!("resampling failed: {e}"))?;
    Ok(out.take_data())
}

/// The built-in prompt: a short two-tone chime and a beep, so a caller knows to speak.
pub fn prompt_tone() -> Vec<u8> {
    let mut out = Vec::new();
    for (freq, ms) in [(660.0f32, 160u32), (0.0, 60), (880.0, 160), (0.0, 120), (1000.0, 100)] {
        let n = (SAMPLE_RATE * ms / 1000) as usize;
        out.extend((0..n).map(|i| {
            let t = i as f32 / SAMPLE_RATE as f32;
            mulaw_encode((0.3 * (2.0 * std::f32::consts::PI * freq * t).sin() * f32::from(i16::MAX)) as i16)
        }));
    }
    pad_to_frames(&mut out);
    out
}

fn pad_to_frames(mulaw: &mut Vec<u8>) {
    let rem = mulaw.len() % FRAME_SAMPLES;
    if rem != 0 {
        mulaw.resize(mulaw.len() + FRAME_SAMPLES - rem, MULAW_SILENCE);
    }
}

/// A voicemail being written: 16-bit PCM WAV at 8 kHz, written as frames arrive under a
/// `.partial` name and renamed when finished.
pub struct Recording {
    writer: hound::WavWriter<BufWriter<File>>,
    partial: PathBuf,
    path: PathBuf,
    relative: String,
    samples: u64,
    since_checkpoint: u64,
    voiced: u64,
}

/// Mean absolute level (of 32768) above which 20 ms of a recording count as someone speaking:
/// about -36 dBFS. A phone line's hiss sits near -55 dBFS, speech near -25.
pub const VOICE_LEVEL: u32 = 520;

/// How many of `samples` are in 20 ms frames loud enough to be a voice ([`VOICE_LEVEL`]).
pub fn voiced_samples(samples: &[i16]) -> u64 {
    samples
        .chunks(FRAME_SAMPLES)
        .filter(|frame| {
            let sum: u64 = frame.iter().map(|s| u64::from(s.unsigned_abs())).sum();
            sum > u64::from(VOICE_LEVEL) * frame.len() as u64
        })
        .map(|frame| frame.len() as u64)
        .sum()
}

fn samples_ms(samples: u64) -> u64 {
    samples * 1000 / u64::from(SAMPLE_RATE)
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording").field("path", &self.path).field("samples", &self.samples).finish()
    }
}

fn wav_spec() -> hound::WavSpec {
    hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    }
}

/// Keeps only characters safe in a file name (SIDs are `CA…`/`MZ…` hex, but they arrive over
/// the network).
fn file_safe(s: &str) -> String {
    s.chars().filter(char::is_ascii_alphanumeric).take(64).collect()
}

/// Refuses a recording (with an error that says why) unless the file system of `storage_dir`
/// has room for one of `max_secs` and still leaves [`CALL_LOG_RESERVE_BYTES`] to the call log.
pub fn ensure_room(storage_dir: &Path, max_secs: u32) -> io::Result<()> {
    let stat = rustix::fs::statvfs(storage_dir).map_err(io::Error::from)?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    let recording = PCM_HEADER_BYTES + u64::from(max_secs) * u64::from(SAMPLE_RATE) * 2;
    let needed = recording + CALL_LOG_RESERVE_BYTES;
    if free >= needed {
        return Ok(());
    }
    const KIB: u64 = 1024;
    Err(io::Error::new(
        io::ErrorKind::StorageFull,
        format!(
            "disk nearly full: {} KiB free in {}, a recording needs {} KiB and {} KiB are kept for the call log",
            free / KIB,
            storage_dir.display(),
            recording / KIB,
            CALL_LOG_RESERVE_BYTES / KIB
        ),
    ))
}

impl Recording {
    /// Starts `recordings/<call>-<stream>.wav` under `storage_dir`.
    pub fn create(storage_dir: &Path, call_sid: &str, stream_sid: &str) -> io::Result<Self> {
        let dir = storage_dir.join(RECORDINGS_DIR);
        fs::create_dir_all(&dir)?;
        let name = format!("{}-{}.wav", file_safe(call_sid), file_safe(stream_sid));
        let path = dir.join(&name);
        let partial = dir.join(format!("{name}{PARTIAL_SUFFIX}"));
        let writer = hound::WavWriter::create(&partial, wav_spec()).map_err(hound_io)?;
        Ok(Self {
            writer,
            partial,
            path,
            relative: format!("{RECORDINGS_DIR}/{name}"),
            samples: 0,
            since_checkpoint: 0,
            voiced: 0,
        })
    }

    /// Appends μ-law audio.
    pub fn write_mulaw(&mut self, mulaw: &[u8]) -> io::Result<()> {
        let pcm: Vec<i16> = mulaw.iter().map(|b| mulaw_decode(*b)).collect();
        self.voiced += voiced_samples(&pcm);
        let mut w = self.writer.get_i16_writer(mulaw.len() as u32);
        for sample in pcm {
            w.write_sample(sample);
        }
        w.flush().map_err(hound_io)?;
        self.samples += mulaw.len() as u64;
        self.since_checkpoint += mulaw.len() as u64;
        if self.since_checkpoint >= CHECKPOINT_SAMPLES {
            self.since_checkpoint = 0;
            self.writer.flush().map_err(hound_io)?;
        }
        Ok(())
    }

    /// Samples written so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The path relative to `storage.dir`.
    pub fn relative_path(&self) -> &str {
        &self.relative
    }

    /// Finalizes the header and gives the file its final name. A recording without audio is
    /// deleted and yields `None`.
    pub fn finish(self) -> io::Result<Option<RecordingInfo>> {
        let Self { writer, partial, path, relative, samples, voiced, .. } = self;
        writer.finalize().map_err(hound_io)?;
        if samples == 0 {
            fs::remove_file(&partial)?;
            return Ok(None);
        }
        // The call's end is acknowledged right after this returns: the file and its final name
        // must be on disk first, or a power cut leaves a record pointing at nothing.
        fs::File::open(&partial)?.sync_all()?;
        fs::rename(&partial, &path)?;
        sync_parent(&path)?;
        let bytes = fs::metadata(&path)?.len();
        Ok(Some(RecordingInfo {
            path: relative,
            duration_ms: samples_ms(samples),
            bytes,
            voiced_ms: Some(samples_ms(voiced)),
        }))
    }
}

/// Makes a file's directory entry durable (after a rename).
fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

fn hound_io(e: hound::Error) -> io::Error {
    match e {
        hound::Error::IoError(e) => e,
        other => io::Error::other(other),
    }
}

/// A recording repaired by [`recover`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The file name (`<call>-<stream>.wav`).
    pub file_name: String,
    /// What the call record should say about it.
    pub info: RecordingInfo,
}

/// Finishes recordings cut off by a crash or power loss: every `.partial` file gets a header
/// that covers all the audio that reached the disk, and its final name.
pub fn recover(storage_dir: &Path) -> io::Result<Vec<Recovered>> {
    let dir = storage_dir.join(RECORDINGS_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut recovered = Vec::new();
    for entry in entries {
        let partial = entry?.path();
        let Some(name) = partial.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(final_name) = name.strip_suffix(PARTIAL_SUFFIX) else { continue };
        let final_name = final_name.to_owned();
        match repair(&partial, &dir.join(&final_name)) {
            Ok(Some(info)) => recovered.push(Recovered {
                info: RecordingInfo { path: format!("{RECORDINGS_DIR}/{final_name}"), ..info },
                file_name: final_name,
            }),
            Ok(None) => log::info!("removed empty partial recording {}", partial.display()),
            Err(e) => log::warn!("cannot recover partial recording {}: {e}; left as is", partial.display()),
        }
    }
    Ok(recovered)
}

fn repair(partial: &Path, path: &Path) -> io::Result<Option<RecordingInfo>> {
    let mut bytes = Vec::new();
    File::open(partial)?.read_to_end(&mut bytes)?;
    let header_ok = bytes.len() as u64 >= PCM_HEADER_BYTES
        && &bytes[0..4] == b"RIFF"
        && &bytes[8..12] == b"WAVE"
        && &bytes[36..40] == b"data";
    if !header_ok {
        if bytes.len() as u64 <= PCM_HEADER_BYTES {
            // Cut off before the header was complete: nothing to keep.
            fs::remove_file(partial)?;
            return Ok(None);
        }
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a WAV file written by callbox"));
    }
    let data = &bytes[PCM_HEADER_BYTES as usize..];
    // A sample torn in half by the crash is dropped.
    let data = &data[..data.len() & !1];
    if data.is_empty() {
        fs::remove_file(partial)?;
        return Ok(None);
    }
    let tmp = path.with_extension("wav.recovering");
    let mut writer = hound::WavWriter::create(&tmp, wav_spec()).map_err(hound_io)?;
    let pcm: Vec<i16> = data.chunks_exact(2).map(|pair| i16::from_le_bytes([pair[0], pair[1]])).collect();
    {
        let mut w = writer.get_i16_writer(pcm.len() as u32);
        for sample in &pcm {
            w.write_sample(*sample);
        }
        w.flush().map_err(hound_io)?;
    }
    writer.finalize().map_err(hound_io)?;
    fs::File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, path)?;
    fs::remove_file(partial)?;
    sync_parent(path)?;
    Ok(Some(RecordingInfo {
        path: String::new(),
        duration_ms: samples_ms(pcm.len() as u64),
        bytes: fs::metadata(path)?.len(),
        voiced_ms: Some(samples_ms(voiced_samples(&pcm))),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ITU-T G.711 Table 2a (μ-law): for each of the 8 segments, the decoder output of the
    /// segment's first code and the step between codes, in the table's 14-bit units.
    const ITU_SEGMENTS: [(i32, i32); 8] =
        [(0, 2), (33, 4), (99, 8), (231, 16), (495, 32), (1023, 64), (2079, 128), (4191, 256)];

    #[test]
    fn decoder_matches_the_itu_table() {
        for byte in 0..=255u8 {
            // On the wire every bit is inverted; bit 7 set (before inversion) means positive.
            let b = !byte;
            let (start, step) = ITU_SEGMENTS[usize::from((b >> 4) & 7)];
            let magnitude = start + step * i32::from(b & 0x0F);
            let expected = if b & 0x80 != 0 { -magnitude } else { magnitude };
            // Our decoder works in 16-bit units: the 14-bit table value times 4.
            assert_eq!(i32::from(mulaw_decode(byte)), expected * 4, "byte {byte:#04x}");
        }
        assert_eq!(mulaw_decode(0xFF), 0);
        assert_eq!(mulaw_decode(0x80), 32124);
        assert_eq!(mulaw_decode(0x00), -32124);
    }

    #[test]
    fn encoder_picks_the_nearest_table_value_and_round_trips() {
        for byte in 0..=255u8 {
            let back = mulaw_encode(mulaw_decode(byte));
            // 0x7F is "negative zero": it decodes to 0, which encodes as positive zero.
            let expected = if byte == 0x7F { 0xFF } else { byte };
            assert_eq!(back, expected, "byte {byte:#04x}");
        }
        for x in (i16::MIN..=i16::MAX).step_by(7) {
            let y = mulaw_decode(mulaw_encode(x));
            let (_, step) = ITU_SEGMENTS[usize::from(((!mulaw_encode(x)) >> 4) & 7)];
            let clipped = i32::from(x).clamp(-32124 - 512, 32124 + 512);
            assert!((clipped - i32::from(y)).abs() <= step * 4, "{x} -> {y}");
        }
    }

    #[test]
    fn recording_is_playable_and_partial_files_recover() {
        let dir = tempfile::tempdir().unwrap();
        let audio: Vec<u8> = (0..1600u32).map(|i| (i % 251) as u8).collect();
        let mut rec = Recording::create(dir.path(), "CA1", "MZ1").unwrap();
        rec.write_mulaw(&audio).unwrap();
        let info = rec.finish().unwrap().unwrap();
        assert_eq!(info.duration_ms, 200);
        let samples: Vec<i16> =
            hound::WavReader::open(dir.path().join(&info.path)).unwrap().samples::<i16>().map(Result::unwrap).collect();
        let expected: Vec<i16> = audio.iter().map(|b| mulaw_decode(*b)).collect();
        assert_eq!(samples, expected);

        // A crash: one second checkpointed, then more audio on disk that the header does not
        // cover yet (the process died between checkpoints), under the `.partial` name.
        let mut rec = Recording::create(dir.path(), "CA2", "MZ2").unwrap();
        for _ in 0..5 {
            rec.write_mulaw(&audio).unwrap();
        }
        std::mem::forget(rec);
        let partial = dir.path().join("recordings/CA2-MZ2.wav.partial");
        let mut f = std::fs::OpenOptions::new().append(true).open(&partial).unwrap();
        std::io::Write::write_all(&mut f, &[1u8; 801]).unwrap();
        drop(f);
        let recovered = recover(dir.path()).unwrap();
        assert_eq!(recovered.len(), 1);
        assert_eq!(recovered[0].file_name, "CA2-MZ2.wav");
        let reader = hound::WavReader::open(dir.path().join("recordings/CA2-MZ2.wav")).unwrap();
        assert_eq!(reader.len(), 8000 + 400);
        assert!(!partial.exists());
        assert!(recover(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn greetings_are_resampled_to_8khz_mono() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..44_100 {
            let v = ((2.0 * std::f32::consts::PI * 440.0 * i as f32 / 44_100.0).sin() * 10_000.0) as i16;
            w.write_sample(v).unwrap();
            w.write_sample(v).unwrap();
        }
        w.finalize().unwrap();
        let mulaw = load_greeting(&path).unwrap();
        assert_eq!(mulaw.len() % FRAME_SAMPLES, 0);
        assert!((7_900..=8_160).contains(&mulaw.len()), "{}", mulaw.len());
        // Still a 440 Hz tone of about the same level: count zero crossings in the middle.
        let pcm: Vec<i16> = mulaw[1000..5000].iter().map(|b| mulaw_decode(*b)).collect();
        let crossings = pcm.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        assert!((400..=480).contains(&crossings), "{crossings}");
        let peak = pcm.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((9_000..=11_000).contains(&peak), "{peak}");
        assert!(load_greeting(&dir.path().join("missing.wav")).is_err());
    }
}
