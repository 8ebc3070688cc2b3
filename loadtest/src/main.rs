//! `chronos-loadtest`: drives a running Chronos node and reports throughput and
//! latency.
//!
//! - `publish` ([`publish`]): closed-loop publish load, latency per RPC.
//! - `scheduled` ([`scheduled`]): end to end through the delivery engine. Consumer
//!   groups subscribe, events are published due at a chosen rate (or all at one
//!   instant), and every delivery's lateness against its `schedule_ts` is measured
//!   until each group has seen each event.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod consumer;
mod publish;
mod report;
mod rss;
mod scheduled;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "chronos-loadtest", about = "Load generator for Chronos")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Publish throughput and ack latency.
    Publish(publish::PublishArgs),
    /// End-to-end delivery: lateness, fan-out, duplicates and missing events.
    Scheduled(scheduled::ScheduledArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().mode {
        Mode::Publish(args) => publish::run(args).await,
        Mode::Scheduled(args) => scheduled::run(args).await,
    }
}
