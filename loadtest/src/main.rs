//! `chronos-loadtest`: drives a running Chronos node and reports throughput and
//! latency: a progress line on stderr while it runs (on a terminal), then a
//! table, or one JSON object with `--json`.
//!
//! - `publish` ([`publish`]): publish load, closed loop or open loop (`--rate`),
//!   optionally cancelling each event right after its publish (`--cancel`),
//!   latency per RPC.
//! - `schedule` ([`schedule`], alias `scheduled`): fire lateness with consumers
//!   connected, early deliveries, duplicates and missing events.
//! - `deliver` ([`deliver`]): how fast a fired backlog drains to consumers.
//! - `e2e` ([`e2e`]): publish-to-delivery latency of events due at once.
//! - `capacity` ([`capacity`]): memory for N pending events, restart-to-ready.
//! - `recurring` ([`recurring`]): N recurring schedules: create time, RAM,
//!   occurrence lateness.
//!
//! The delivery modes share [`workload`]; the arithmetic is in [`stats`].
//! - `redis-publish`, `redis-schedule` ([`redis_publish`], [`redis_schedule`]): the
//!   publish and schedule workloads against a Redis sorted-set delay queue
//!   ([`redis_queue`]), the peer `loadtest/peers/compare.sh` sets beside Chronos.
//! - `plot` ([`plot`]): PNG charts of saved `--json` summaries
//!   (`loadtest/plots.sh` runs the series behind `docs/img/`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod capacity;
mod consumer;
mod deliver;
mod e2e;
mod plot;
mod progress;
mod publish;
mod recurring;
mod redis_publish;
mod redis_queue;
mod redis_schedule;
mod report;
mod rss;
mod schedule;
mod stats;
mod workload;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "chronos-loadtest", about = "Load generator for Chronos")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Publish throughput and ack latency, closed or open loop.
    Publish(publish::PublishArgs),
    /// Fire lateness: events due over a window, consumers connected.
    #[command(alias = "scheduled")]
    Schedule(schedule::ScheduleArgs),
    /// Backlog drain rate with batched acks.
    Deliver(deliver::DeliverArgs),
    /// Publish-to-delivery latency of events due when published.
    E2e(e2e::E2eArgs),
    /// Server memory for N pending events, and restart-to-ready time.
    Capacity(capacity::CapacityArgs),
    /// Many recurring schedules: time to create them, RAM, occurrence lateness.
    Recurring(recurring::RecurringArgs),
    /// `publish` against a Redis sorted-set delay queue (pipelined ZADDs).
    RedisPublish(redis_publish::RedisPublishArgs),
    /// `schedule` against a Redis sorted-set delay queue: Lua mover, BLMOVE consumers.
    RedisSchedule(redis_schedule::RedisScheduleArgs),
    /// PNG charts of saved `--json` summaries: lateness, throughput vs batch, latency vs load.
    Plot(plot::PlotArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // As the server: mimalloc's huge pages stall threads (the consumers'
    // lateness would include them). A kernel without the switch measures
    // as it is.
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("chronos-loadtest: transparent huge pages stay on ({e})");
    }
    match Cli::parse().mode {
        Mode::Publish(args) => publish::run(args).await,
        Mode::Schedule(args) => schedule::run(args).await,
        Mode::Deliver(args) => deliver::run(args).await,
        Mode::E2e(args) => e2e::run(args).await,
        Mode::Capacity(args) => capacity::run(args).await,
        Mode::Recurring(args) => recurring::run(args).await,
        Mode::RedisPublish(args) => redis_publish::run(args).await,
        Mode::RedisSchedule(args) => redis_schedule::run(args).await,
        Mode::Plot(args) => plot::run(args),
    }
}
