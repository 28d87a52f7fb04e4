//! Real audio: `callbox selftest` plays its tones through cpal into ALSA's `file` plugin
//! (an ALSA config given to the child process through `ALSA_CONFIG_PATH`, paced in real time
//! by `pv`), and the captured PCM is checked for the tones' frequencies (Goertzel) and
//! cadence. With no usable device, the same command warns and uses the simulated speaker.
//!
//! Needs `libasound2-dev` (to build), `pv` (pacing) and the stock `/usr/share/alsa/alsa.conf`;
//! the capture test is ignored by a plain `cargo test` for that, and `.ci/run` runs it.
//! Runs as a child process because ALSA reads its configuration once per process.

#![allow(clippy::unwrap_used)]
#![cfg(feature = "speaker")]

#[path = "common/needs.rs"]
mod needs;

use std::path::Path;
use std::process::{Command, Output};

use needs::{Need, require};

const ALSA_CONF: Need = Need::File("/usr/share/alsa/alsa.conf", "libasound2-data");

/// Capture format the ALSA config asks `plug` to convert to.
const RATE: usize = 48_000;
const CHANNELS: usize = 2;
/// Analysis window: 10 ms.
const WINDOW: usize = RATE / 100;
/// Cadence slack: a window either side, plus the 5 ms fade.
const CADENCE_TOLERANCE_MS: i64 = 25;

fn config_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("callbox.toml");
    let data = dir.join("data");
    std::fs::write(
        &path,
        format!(
            r#"public_url = "https://shop.example.com"
[twilio]
auth_token = "7d793037a0760186574b0282f2f435e7"
[admin]
token = "test-admin-token-0123456789"
[storage]
dir = "{}"
[indicators]
ready = {{ pins = [17], pattern = "solid" }}
incoming = {{ pins = [27], pattern = "blink", period_ms = 200 }}
active = {{ pins = [22], pattern = "solid", many_pattern = "double-blink", period_ms = 200 }}
message_waiting = {{ pins = [23], pattern = "blink", period_ms = 200 }}
fault = {{ pins = [24], pattern = "double-blink", period_ms = 200 }}
[indicators.tone]
frequencies = [440, 480]
cadence_ms = [400, 300, 400, 300]
volume = 0.5
[[indicators.line_tones]]
to = "+15035550101"
name = "parts"
frequencies = [620]
cadence_ms = [250, 250, 250, 750]
volume = 0.5
"#,
            data.display()
        ),
    )
    .unwrap();
    path
}

/// Runs `callbox selftest` with `asoundrc` as its whole ALSA configuration.
fn selftest(dir: &Path, asoundrc: &str) -> Output {
    let alsa = dir.join("asound.conf");
    std::fs::write(&alsa, asoundrc).unwrap();
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_callbox"))
        .args(["selftest", "--config"])
        .arg(config_file(dir))
        .env("ALSA_CONFIG_PATH", &alsa)
        // No ~/.asoundrc or XDG config of the user may take `default` back.
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", &home)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "selftest failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn dominant(samples: &[f32], count: usize) -> Vec<(f64, f64)> {
    callbox::indicators::tone::dominant(samples, RATE as f64, count)
}

/// (start, length) of each run of sound, in samples of the left channel.
fn bursts(left: &[f32]) -> Vec<(usize, usize)> {
    callbox::indicators::tone::bursts(left, WINDOW, 0.05)
}

fn ms(samples: usize) -> i64 {
    (samples * 1000 / RATE) as i64
}

// Long on purpose: one capture, then each tone's checks on it.
#[test]
#[ignore = "needs pv and ALSA's alsa.conf"]
fn selftest_plays_each_tone_with_its_frequencies_and_cadence_into_alsa() {
    require(&[Need::Program("pv", "pv"), ALSA_CONF]);
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture.raw");
    let asoundrc = format!(
        r#"</usr/share/alsa/alsa.conf>
pcm.!default {{
    type plug
    slave {{ pcm "capture_tap"; format S16_LE; rate {RATE}; channels {CHANNELS} }}
}}
pcm.capture_tap {{
    type file
    slave.pcm "null"
    file "|exec pv -q -L {bytes_per_sec} -B 4096 > {capture}"
    format "raw"
}}
"#,
        bytes_per_sec = RATE * CHANNELS * 2,
        capture = capture.display()
    );
    let out = selftest(dir.path(), &asoundrc);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("ring tones (cpal)"), "the real backend played:\n{stdout}\n{stderr}");
    assert!(stdout.contains("selftest done"), "{stdout}");
    // Off a Pi, the LEDs are simulated, and one log line says why.
    assert_eq!(stderr.matches("GPIO unavailable").count(), 1, "{stderr}");
    assert!(stdout.contains("LEDs (simulated)") && stdout.contains("double-blink 200 ms"), "{stdout}");

    let raw = std::fs::read(&capture).unwrap();
    let left: Vec<f32> = raw
        .chunks_exact(2 * CHANNELS)
        .map(|frame| f32::from(i16::from_le_bytes([frame[0], frame[1]])) / 32768.0)
        .collect();
    let runs = bursts(&left);
    let lengths: Vec<i64> = runs.iter().map(|(_, len)| ms(*len)).collect();
    assert_eq!(runs.len(), 4, "two bursts per tone, got {lengths:?} ms in {} s of capture", ms(left.len()) / 1000);

    // Cadence: default 400 on / 300 off / 400 on; parts 250 on / 250 off / 250 on.
    let gap = |a: usize, b: usize| ms(runs[b].0 - (runs[a].0 + runs[a].1));
    for (i, expected) in [(0, 400), (1, 400), (2, 250), (3, 250)] {
        assert!((lengths[i] - expected).abs() <= CADENCE_TOLERANCE_MS, "burst {i}: {lengths:?}");
    }
    assert!((gap(0, 1) - 300).abs() <= CADENCE_TOLERANCE_MS, "default off time {} ms", gap(0, 1));
    assert!((gap(2, 3) - 250).abs() <= CADENCE_TOLERANCE_MS, "parts off time {} ms", gap(2, 3));
    assert!(gap(1, 2) >= 300, "silence between the tones: {} ms", gap(1, 2));

    eprintln!("bursts {lengths:?} ms, gaps {} / {} / {} ms", gap(0, 1), gap(1, 2), gap(2, 3));
    // Frequencies, in the steady middle of each burst.
    let middle = |(start, len): (usize, usize)| &left[start + len / 4..start + 3 * len / 4];
    for burst in &runs[..2] {
        let peaks = dominant(middle(*burst), 2);
        eprintln!("default tone peaks (Hz, power): {peaks:?}");
        let mut two: Vec<f64> = peaks[..2].iter().map(|p| p.0).collect();
        two.sort_by(f64::total_cmp);
        assert_eq!(two, [440.0, 480.0], "default tone peaks {peaks:?}");
        assert!(peaks[1].1 > 50.0 * peaks[2].1, "nothing else is loud: {peaks:?}");
    }
    for burst in &runs[2..] {
        let peaks = dominant(middle(*burst), 1);
        eprintln!("parts tone peaks (Hz, power): {peaks:?}");
        assert_eq!(peaks[0].0, 620.0, "parts tone peaks {peaks:?}");
        assert!(peaks[0].1 > 50.0 * peaks[1].1, "a single sine: {peaks:?}");
    }
}

#[test]
#[ignore = "needs ALSA's alsa.conf"]
fn selftest_without_an_output_device_warns_and_uses_the_simulated_speaker() {
    require(&[ALSA_CONF]);
    let dir = tempfile::tempdir().unwrap();
    // A machine whose default device is a sound card that does not exist.
    let asoundrc = "</usr/share/alsa/alsa.conf>\npcm.!default { type hw card 7 }\n";
    let out = selftest(dir.path(), asoundrc);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("ring tones (simulated)"), "{stdout}\n{stderr}");
    assert_eq!(stderr.matches("no audio output device").count(), 1, "{stderr}");
    assert!(stderr.contains("the ring tone is simulated"), "{stderr}");
    assert!(stdout.contains("selftest done"), "{stdout}");
}
