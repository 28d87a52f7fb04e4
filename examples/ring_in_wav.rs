//! Checks that a WAV recording holds a ring tone with the given frequencies and cadence: the
//! SD image's boot test records the guest's USB sound card with qemu's `wav` audio backend
//! and runs this on the file.
//!
//!   cargo run --example ring_in_wav -- FILE --frequencies 620,940 --cadence 400,200
//!
//! Prints each burst's length, the gap after it and its strongest frequencies, then `ok` and
//! exits 0 when at least two bursts match the cadence (within --tolerance-ms) and every burst
//! has exactly the given frequencies as its strongest; exits 1 otherwise.

use std::process::ExitCode;

use callbox::indicators::tone::{bursts, dominant};

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ring_in_wav: {e}");
            ExitCode::from(2)
        }
    }
}

fn list<T: std::str::FromStr>(value: Option<String>, what: &str) -> Result<Vec<T>, String> {
    let value = value.ok_or_else(|| format!("{what} needs a comma-separated list"))?;
    value.split(',').map(|v| v.trim().parse().map_err(|_| format!("{what}: {v:?} is not a number"))).collect()
}

fn run() -> Result<bool, String> {
    let mut args = std::env::args().skip(1);
    let (mut file, mut freqs, mut cadence, mut tolerance) = (None, Vec::new(), Vec::new(), 60i64);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--frequencies" => freqs = list::<f64>(args.next(), "--frequencies")?,
            "--cadence" => cadence = list::<i64>(args.next(), "--cadence")?,
            "--tolerance-ms" => {
                tolerance = args.next().and_then(|v| v.parse().ok()).ok_or("--tolerance-ms needs a number")?;
            }
            _ if file.is_none() => file = Some(arg),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let file = file.ok_or("usage: ring_in_wav FILE --frequencies F1,F2 --cadence ON,OFF")?;
    if freqs.is_empty() || cadence.len() != 2 {
        return Err("give --frequencies and --cadence ON_MS,OFF_MS".into());
    }
    let mut reader = hound::WavReader::open(&file).map_err(|e| format!("{file}: {e}"))?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        return Err(format!("{file}: want 16-bit PCM, got {spec:?}"));
    }
    let channels = usize::from(spec.channels.max(1));
    let rate = f64::from(spec.sample_rate);
    let all: Vec<i16> = reader.samples::<i16>().collect::<Result<_, _>>().map_err(|e| format!("{file}: {e}"))?;
    let left: Vec<f32> = all.iter().step_by(channels).map(|s| f32::from(*s) / 32768.0).collect();
    let ms = |samples: usize| (samples as f64 * 1000.0 / rate).round() as i64;
    let runs = bursts(&left, (rate / 100.0) as usize, 0.02);
    println!(
        "{file}: {:.1} s at {} Hz, {} channel(s), {} burst(s)",
        left.len() as f64 / rate,
        spec.sample_rate,
        channels,
        runs.len()
    );
    let mut want: Vec<f64> = freqs.clone();
    want.sort_by(f64::total_cmp);
    let (mut on_ok, mut off_ok, mut freq_ok) = (0, 0, true);
    for (i, (start, len)) in runs.iter().enumerate() {
        let middle = &left[start + len / 4..start + 3 * len / 4];
        let peaks = dominant(middle, rate, want.len());
        let mut got: Vec<f64> = peaks.iter().take(want.len()).map(|p| p.0).collect();
        got.sort_by(f64::total_cmp);
        let gap = runs.get(i + 1).map(|(next, _)| ms(next - (start + len)));
        println!(
            "  burst {i}: at {} ms, {} ms on, then {} off; peaks {got:?} Hz",
            ms(*start),
            ms(*len),
            gap.map_or("-".into(), |g| format!("{g} ms"))
        );
        // The last burst may be cut short by the ring's end; every one must have the tone.
        if ms(*len) >= 60 {
            freq_ok &= got == want;
        }
        on_ok += usize::from((ms(*len) - cadence[0]).abs() <= tolerance);
        off_ok += usize::from(gap.is_some_and(|g| (g - cadence[1]).abs() <= tolerance));
    }
    let good = freq_ok && on_ok >= 2 && off_ok >= 1;
    println!(
        "{}: frequencies {want:?} {}; {on_ok} burst(s) of {} ms and {off_ok} gap(s) of {} ms (±{tolerance} ms)",
        if good { "ok" } else { "FAIL" },
        if freq_ok { "in every burst" } else { "NOT in every burst" },
        cadence[0],
        cadence[1]
    );
    Ok(good)
}
