//! `chronos-loadtest`: drives a running Chronos node and reports throughput and
//! latency.
//!
//! - `publish` ([`publish`]): closed-loop publish load, latency per RPC.
//! - `scheduled` ([`scheduled`]): end to end through the delivery engine. Consumer
//!   groups subscribe, events are published due at a chosen rate (or all at one
//!   instant), and every delivery's lateness against its `schedule_ts` is measured
//!   until each group has seen each event.
//! - `redis-publish`, `redis-schedule` ([`redis_publish`], [`redis_schedule`]): the
//!   same two workloads against a Redis sorted-set delay queue ([`redis_queue`]),
//!   the peer `loadtest/peers/compare.sh` sets beside Chronos.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod consumer;
mod publish;
mod redis_publish;
mod redis_queue;
mod redis_schedule;
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
    /// `publish` against a Redis sorted-set delay queue (pipelined ZADDs).
    RedisPublish(redis_publish::RedisPublishArgs),
    /// `scheduled` against a Redis sorted-set delay queue: Lua mover, BLMOVE consumers.
    RedisSchedule(redis_schedule::RedisScheduleArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().mode {
        Mode::Publish(args) => publish::run(args).await,
        Mode::Scheduled(args) => scheduled::run(args).await,
        Mode::RedisPublish(args) => redis_publish::run(args).await,
        Mode::RedisSchedule(args) => redis_schedule::run(args).await,
    }
}
