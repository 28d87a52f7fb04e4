//! The real speaker through cpal (ALSA on Linux); the only module that names cpal.
//!
//! A cpal stream is not `Send`, so one dedicated thread opens it, owns it and reopens it when
//! the device goes away; the handle talks to that thread through a bounded channel and to the
//! audio callback through [`ToneControl`]'s atomics. The output stays open while idle and
//! plays silence, so a ring starts without reopening the device.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, SampleFormat, SizedSample};

use super::speaker::{Speaker, SpeakerError};
use super::tone::{Synth, ToneControl, ToneSpec};

/// How long opening the device at start-up may take before the box gives up on it.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the audio thread checks for a lost device.
const CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// How often a lost device is tried again.
const REOPEN_INTERVAL: Duration = Duration::from_secs(5);

/// The speaker handle; the stream lives on the audio thread.
struct CpalSpeaker {
    control: Arc<ToneControl>,
    quit: SyncSender<()>,
    thread: Option<JoinHandle<()>>,
}

/// Opens the default output device on a new audio thread.
pub(super) fn open(tones: &[ToneSpec]) -> Result<Box<dyn Speaker>, SpeakerError> {
    let control = Arc::new(ToneControl::default());
    let (quit, quit_rx) = mpsc::sync_channel(1);
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let tones = tones.to_vec();
    let thread_control = control.clone();
    let thread = std::thread::Builder::new()
        .name("callbox-audio".into())
        .spawn(move || audio_thread(&tones, &thread_control, &quit_rx, &ready_tx))
        .map_err(|e| SpeakerError::Thread(e.to_string()))?;
    match ready_rx.recv_timeout(OPEN_TIMEOUT) {
        Ok(Ok(device)) => {
            log::info!("ring tone on audio output {device}");
            Ok(Box::new(CpalSpeaker { control, quit, thread: Some(thread) }))
        }
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(SpeakerError::Thread(format!("audio device did not open within {OPEN_TIMEOUT:?}"))),
    }
}

impl Speaker for CpalSpeaker {
    fn play(&mut self, index: usize) {
        self.control.play(index);
    }
    fn play_once(&mut self, index: usize) {
        self.control.play_once(index);
    }
    fn stop(&mut self) {
        self.control.stop();
    }
    fn backend(&self) -> &'static str {
        "cpal"
    }
}

impl Drop for CpalSpeaker {
    fn drop(&mut self) {
        self.control.stop();
        let _ = self.quit.try_send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn audio_thread(
    tones: &[ToneSpec],
    control: &Arc<ToneControl>,
    quit: &mpsc::Receiver<()>,
    ready: &SyncSender<Result<String, SpeakerError>>,
) {
    let failed = Arc::new(AtomicBool::new(false));
    let flag = failed.clone();
    let timing = Timing { check: CHECK_INTERVAL, reopen: REOPEN_INTERVAL };
    supervise(|| open_stream(tones, control, &flag), &failed, quit, ready, timing);
}

/// How often the supervisor looks at the device, and retries a lost one.
#[derive(Debug, Clone, Copy)]
struct Timing {
    check: Duration,
    reopen: Duration,
}

/// Keeps a stream open until told to quit: reports the first open through `ready` (and
/// gives up if it fails), then reopens the stream whenever `failed` is raised, retrying
/// until the device is back.
fn supervise<S>(
    mut open: impl FnMut() -> Result<(S, String), SpeakerError>,
    failed: &AtomicBool,
    quit: &mpsc::Receiver<()>,
    ready: &SyncSender<Result<String, SpeakerError>>,
    timing: Timing,
) {
    let mut stream = match open() {
        Ok((stream, device)) => {
            let _ = ready.send(Ok(device));
            Some(stream)
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut next_try = Instant::now();
    loop {
        match quit.recv_timeout(timing.check) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if failed.swap(false, Ordering::AcqRel) && stream.take().is_some() {
            log::warn!("audio output lost; trying to reopen it every {:?}", timing.reopen);
            next_try = Instant::now();
        }
        if stream.is_none() && Instant::now() >= next_try {
            match open() {
                Ok((s, device)) => {
                    log::info!("audio output {device} reopened");
                    stream = Some(s);
                }
                Err(e) => {
                    log::debug!("audio output still unavailable: {e}");
                    next_try = Instant::now() + timing.reopen;
                }
            }
        }
    }
}

fn open_stream(
    tones: &[ToneSpec],
    control: &Arc<ToneControl>,
    failed: &Arc<AtomicBool>,
) -> Result<(cpal::Stream, String), SpeakerError> {
    let host = cpal::default_host();
    let device = host.default_output_device().ok_or(SpeakerError::NoDevice)?;
    let name = device.id().map(|id| id.to_string()).unwrap_or_else(|_| "default".into());
    let open_error = |e: cpal::Error| SpeakerError::Open { device: name.clone(), source: Box::new(e) };
    let supported = device.default_output_config().map_err(open_error)?;
    let format = supported.sample_format();
    let config: cpal::StreamConfig = supported.config();
    let synth = Synth::new(tones, config.sample_rate, control.clone());
    let stream = match format {
        SampleFormat::F32 => build::<f32>(&device, &config, synth, failed),
        SampleFormat::F64 => build::<f64>(&device, &config, synth, failed),
        SampleFormat::I16 => build::<i16>(&device, &config, synth, failed),
        SampleFormat::I32 => build::<i32>(&device, &config, synth, failed),
        SampleFormat::U16 => build::<u16>(&device, &config, synth, failed),
        SampleFormat::I8 => build::<i8>(&device, &config, synth, failed),
        SampleFormat::U8 => build::<u8>(&device, &config, synth, failed),
        other => return Err(SpeakerError::Format { device: name, format: other.to_string() }),
    }
    .map_err(open_error)?;
    stream.play().map_err(open_error)?;
    Ok((stream, name))
}

fn build<T>(
    device: &cpal::Device,
    config: &cpal::StreamConfig,
    mut synth: Synth,
    failed: &Arc<AtomicBool>,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + FromSample<f32>,
{
    let channels = usize::from(config.channels).max(1);
    let failed = failed.clone();
    device.build_output_stream(
        *config,
        move |data: &mut [T], _: &cpal::OutputCallbackInfo| {
            synth.sync();
            for frame in data.chunks_mut(channels) {
                let value = T::from_sample(synth.next_sample());
                frame.fill(value);
            }
        },
        move |err: cpal::Error| {
            // An xrun is a glitch, not a lost device; everything else gets the stream rebuilt.
            if err.kind() != cpal::ErrorKind::Xrun {
                failed.store(true, Ordering::Release);
            }
        },
        None,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A device that cannot be unplugged here: the supervisor is driven with a fake opener.
    #[test]
    fn a_lost_device_is_reopened_once_it_comes_back() {
        let failed = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(AtomicUsize::new(0));
        let counter = attempts.clone();
        // Opens, then (after the loss) fails twice, then opens again.
        let open = move || match counter.fetch_add(1, Ordering::SeqCst) {
            1 | 2 => Err(SpeakerError::NoDevice),
            _ => Ok(((), "fake".to_owned())),
        };
        let (quit_tx, quit_rx) = mpsc::sync_channel(1);
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let flag = failed.clone();
        let timing = Timing { check: Duration::from_millis(5), reopen: Duration::from_millis(5) };
        let thread = std::thread::spawn(move || supervise(open, &flag, &quit_rx, &ready_tx, timing));
        assert_eq!(ready_rx.recv().unwrap().unwrap(), "fake");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "an open stream is left alone");

        failed.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while attempts.load(Ordering::SeqCst) < 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(attempts.load(Ordering::SeqCst), 4, "two failed tries, then reopened and kept");
        quit_tx.send(()).unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn a_device_that_does_not_open_is_reported_and_the_thread_ends() {
        let failed = AtomicBool::new(false);
        let (_quit_tx, quit_rx) = mpsc::sync_channel(1);
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let timing = Timing { check: Duration::from_millis(5), reopen: Duration::from_millis(5) };
        supervise(|| Err::<((), String), _>(SpeakerError::NoDevice), &failed, &quit_rx, &ready_tx, timing);
        assert!(matches!(ready_rx.recv().unwrap(), Err(SpeakerError::NoDevice)));
    }
}
