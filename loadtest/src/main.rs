//! `chronos-loadtest`: drives a running Chronos node and reports throughput and
//! latency: a progress line on stderr while it runs (on a terminal), then a
//! table, or one JSON object with `--json`.
//!
//! - `publish` ([`publish`]): publish load, closed loop or open loop (`--rate`),
//!   latency per RPC.
//! - `schedule` ([`schedule`], alias `scheduled`): fire lateness with consumers
//!   connected, early deliveries, duplicates and missing events.
//! - `deliver` ([`deliver`]): how fast a fired backlog drains to consumers.
//! - `e2e` ([`e2e`]): publish-to-delivery latency of events due at once.
//! - `capacity` ([`capacity`]): memory for N pending events, restart-to-ready.
//!
//! The delivery modes share [`workload`]; the arithmetic is in [`stats`].

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod capacity;
mod consumer;
mod deliver;
mod e2e;
mod progress;
mod publish;
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().mode {
        Mode::Publish(args) => publish::run(args).await,
        Mode::Schedule(args) => schedule::run(args).await,
        Mode::Deliver(args) => deliver::run(args).await,
        Mode::E2e(args) => e2e::run(args).await,
        Mode::Capacity(args) => capacity::run(args).await,
    }
}
