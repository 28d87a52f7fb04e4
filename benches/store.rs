//! The call log alone: durable incoming-call events per second with many concurrent writers
//! (group commit), without HTTP, to tell the store's share of the webhook figures.
//!
//!   cargo bench --bench store -- [WRITERS] [SECONDS] [WORKER_THREADS]

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use callbox::calls::{CallEvent, CallStatus, EventSource, Store};

fn event(sid: String) -> CallEvent {
    CallEvent {
        call_sid: sid,
        source: EventSource::IncomingCall,
        status: Some(CallStatus::Ringing),
        sequence: None,
        twilio_timestamp: None,
        received_at: jiff::Timestamp::now(),
        from: Some("+15035550123".into()),
        to: Some("+15035550100".into()),
        direction: Some("inbound".into()),
        duration_secs: None,
        dedupe_key: "incoming".into(),
        details: Default::default(),
    }
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench").map(|a| a.parse::<usize>().unwrap());
    let writers = args.next().unwrap_or(50);
    let seconds = args.next().unwrap_or(5) as u64;
    let threads = args.next().unwrap_or(1);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().unwrap();
    let mut latencies: Vec<Duration> = rt.block_on(async {
        let until = Instant::now() + Duration::from_secs(seconds);
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    for i in 0.. {
                        if Instant::now() >= until {
                            break;
                        }
                        let start = Instant::now();
                        store.record(event(format!("CA{w:04}{i:028}"))).await.unwrap();
                        lat.push(start.elapsed());
                    }
                    lat
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    latencies.sort();
    let n = latencies.len();
    let pct = |p: f64| latencies[((n as f64 * p) as usize).min(n - 1)].as_secs_f64() * 1e3;
    println!("command: cargo bench --bench store -- {writers} {seconds} {threads}");
    println!(
        "durable incoming-call events: {n} in {seconds} s = {:.0}/s; record() p50 {:.3} ms, p99 {:.3} ms",
        n as f64 / seconds as f64,
        pct(0.5),
        pct(0.99)
    );
    assert_eq!(store.count(), n, "every acknowledged event is a call in the log");
}
