//! Mode `recurring`: many recurring schedules on one node.
//!
//! 1. Creates `--schedules` schedules (`CreateSchedule`, `--concurrency` at a
//!    time), each every `--period`, their first occurrences spread evenly over
//!    one period from `--lead` after the start: N / period occurrences come
//!    due each second, and they do while the rest are being created. With
//!    `--aligned`, all on one phase: N occurrences due at one instant.
//! 2. Consumes the topic as one group for `--measure` after the last create,
//!    and reports the lateness of occurrences due in that window (receive −
//!    nominal time), how many came of those expected, duplicates and early ones.
//!
//! With `--server-pid`, the server's resident memory before and after the
//! creates (per schedule). Fails if any occurrence came early or twice.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context};
use chronos_client::proto::schedule::Recurrence;
use chronos_client::proto::Schedule;
use chronos_client::{Client, ConsumerOptions, Start};
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::report::now_us;

#[derive(clap::Args, Clone)]
pub struct RecurringArgs {
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    pub addr: String,
    #[arg(long, default_value_t = 100_000)]
    pub schedules: u64,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub period: Duration,
    /// The first occurrences start this long after the run starts.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub lead: Duration,
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Members of the consuming group.
    #[arg(long, default_value_t = 4)]
    pub consumers: usize,
    /// How long to consume after the last create.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub measure: Duration,
    #[arg(long, default_value_t = 256)]
    pub payload: usize,
    /// Every schedule on the same phase (as cron's `0 * * * * *` puts them):
    /// all N occurrences come due at one instant each period.
    #[arg(long)]
    pub aligned: bool,
    #[arg(long)]
    pub server_pid: Option<u32>,
    #[arg(long)]
    pub json: bool,
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}

pub async fn run(args: RecurringArgs) -> anyhow::Result<()> {
    ensure!(args.schedules > 0, "--schedules must be positive");
    ensure!(
        args.period >= Duration::from_secs(1),
        "--period must be at least 1s"
    );
    let client = Client::connect([args.addr.clone()]).await?;
    let run_id = now_us();
    let topic = format!("recurring-{run_id}");
    let mut consumers = Vec::new();
    for _ in 0..args.consumers {
        consumers.push(
            client
                .consumer(ConsumerOptions {
                    group: "lt".into(),
                    topic: topic.clone(),
                    max_inflight: 5000,
                    start: Start::Latest,
                    ack_batch: 512,
                    ..Default::default()
                })
                .await?,
        );
    }
    // Members consume from the start (a member nobody reads from would stall
    // the shared connection); occurrences due in the window, set once the
    // creates are done, are the ones measured.
    let window = Arc::new((AtomicI64::new(i64::MAX), AtomicI64::new(i64::MAX)));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    // Each member notes (schedule, nominal time) of what it measured, and
    // duplicates are counted once at the end: a set shared by the members,
    // behind a lock and rehashed as it grows past a million entries, stalled
    // every member for tens of milliseconds, which showed up as lateness.
    let expected_per_member = (args.schedules as f64
        * (args.measure.as_secs_f64() / args.period.as_secs_f64() + 1.0)
        / args.consumers.max(1) as f64) as usize;
    let mut members = Vec::new();
    for mut consumer in consumers {
        let (window, mut stop) = (window.clone(), stop.clone());
        members.push(tokio::spawn(async move {
            let mut lateness = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
            let mut early = 0u64;
            let mut seen: Vec<(u64, i64)> = Vec::with_capacity(expected_per_member * 2);
            // A backlog keeps `next` ready: the stop is checked, not only awaited.
            while !*stop.borrow() {
                let d = tokio::select! {
                    d = consumer.next() => d,
                    _ = stop.changed() => break,
                };
                let Some(d) = d else { break };
                let d = d?;
                let received_us = now_us();
                consumer.ack(&d).await?;
                let nominal_ms = d
                    .event
                    .headers
                    .get("chronos-nominal-time")
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.timestamp_millis())
                    .context("an occurrence without chronos-nominal-time")?;
                if received_us < nominal_ms * 1000 {
                    early += 1;
                }
                let (from, to) = (
                    window.0.load(Ordering::Relaxed),
                    window.1.load(Ordering::Relaxed),
                );
                if !(from..to).contains(&nominal_ms) {
                    continue;
                }
                let schedule = d
                    .event
                    .message_id
                    .strip_prefix('s')
                    .and_then(|rest| rest.split_once('@'))
                    .and_then(|(i, _)| i.parse::<u64>().ok())
                    .with_context(|| {
                        format!("not an occurrence of this run: {}", d.event.message_id)
                    })?;
                seen.push((schedule, nominal_ms));
                lateness.saturating_record((received_us - nominal_ms * 1000).max(1) as u64);
            }
            consumer.flush().await.ok();
            anyhow::Ok((lateness, early, seen))
        }));
    }
    let rss_before = args.server_pid.map(rss_kib).transpose()?;
    let period_ms = args.period.as_millis() as i64;
    let first_ms = now_us() / 1000 + args.lead.as_millis() as i64;
    // Schedule i's first occurrence.
    let (n, aligned) = (args.schedules as i64, args.aligned);
    let start_of = move |i: i64| match aligned {
        true => first_ms,
        false => first_ms + i * period_ms / n,
    };
    let payload = vec![b'x'; args.payload];
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, next, topic, payload) =
            (client.clone(), next.clone(), topic.clone(), payload.clone());
        let n = args.schedules;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                let start_ts = start_of(i as i64);
                let schedule = Schedule {
                    schedule_id: format!("s{i}"),
                    topic: topic.clone(),
                    payload: payload.clone().into(),
                    recurrence: Some(Recurrence::EveryMs(period_ms)),
                    start_ts,
                    ..Default::default()
                };
                client.create_schedule(schedule).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let create_s = started.elapsed().as_secs_f64();
    let created_ms = now_us() / 1000;
    let rss_after = args.server_pid.map(rss_kib).transpose()?;
    crate::progress::notice(&format!(
        "created {} schedules in {create_s:.1} s; consuming for {:?}",
        args.schedules, args.measure
    ));
    let window_from = created_ms + 3_000;
    // Aligned, an instant's occurrences take seconds to deliver: the window
    // ends half a period before the consuming does.
    let margin = match args.aligned {
        true => (period_ms / 2).max(3_000),
        false => 3_000,
    };
    let window_to = created_ms + args.measure.as_millis() as i64 - margin;
    window.0.store(window_from, Ordering::Relaxed);
    window.1.store(window_to, Ordering::Relaxed);
    tokio::time::sleep(args.measure).await;
    let _ = stop_tx.send(true);

    let mut lateness = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut early = 0u64;
    let mut seen = Vec::new();
    for m in members {
        let (l, e, s) = m.await??;
        lateness.add(l)?;
        early += e;
        seen.extend(s);
    }
    seen.sort_unstable();
    let received = seen.len();
    seen.dedup();
    let duplicates = received - seen.len();
    let measured = seen.len();
    // Schedule i occurs at start_i + k * period, k >= 0.
    let expected: i64 = (0..args.schedules as i64)
        .map(|i| {
            let start = start_of(i);
            let ceil = |d: i64| (d.max(0) + period_ms - 1) / period_ms;
            let (first_k, end_k) = (ceil(window_from - start), ceil(window_to - start));
            end_k - first_k
        })
        .sum();
    let ms = |q: f64| lateness.value_at_quantile(q) as f64 / 1000.0;
    let per_schedule = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some((a.saturating_sub(b) * 1024) as f64 / args.schedules as f64),
        _ => None,
    };
    let summary = serde_json::json!({
        "mode": "recurring",
        "schedules": args.schedules,
        "period_s": args.period.as_secs_f64(),
        "payload_bytes": args.payload,
        "aligned": args.aligned,
        "create_s": create_s,
        "create_per_s": args.schedules as f64 / create_s,
        "rss_before_mib": rss_before.map(|k| k as f64 / 1024.0),
        "rss_after_mib": rss_after.map(|k| k as f64 / 1024.0),
        "rss_bytes_per_schedule": per_schedule,
        "occurrences_measured": measured,
        "occurrences_expected": expected,
        "lateness_ms": {"p50": ms(0.5), "p99": ms(0.99), "p999": ms(0.999), "max": lateness.max() as f64 / 1000.0},
        "early": early,
        "duplicates": duplicates,
    });
    if args.json {
        println!("{summary}");
    } else {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    ensure!(early == 0, "{early} occurrences came before their time");
    ensure!(duplicates == 0, "{duplicates} occurrences came twice");
    ensure!(
        measured as i64 == expected,
        "{} of {expected} occurrences due in the window came",
        measured
    );
    Ok(())
}
