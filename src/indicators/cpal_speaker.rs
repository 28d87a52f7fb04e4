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
    let mut stream = match open_stream(tones, control, &failed) {
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
        match quit.recv_timeout(CHECK_INTERVAL) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if failed.swap(false, Ordering::AcqRel) && stream.take().is_some() {
            log::warn!("audio output lost; trying to reopen it every {REOPEN_INTERVAL:?}");
            next_try = Instant::now() + REOPEN_INTERVAL;
        }
        if stream.is_none() && Instant::now() >= next_try {
            match open_stream(tones, control, &failed) {
                Ok((s, device)) => {
                    log::info!("audio output {device} reopened");
                    stream = Some(s);
                }
                Err(e) => {
                    log::debug!("audio output still unavailable: {e}");
                    next_try = Instant::now() + REOPEN_INTERVAL;
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
