//! Mode `e2e`: publish-to-delivery latency with consumers connected.
//!
//! Events are published with `schedule_ts` = the wall clock at the moment they
//! are built, `--batch` per PublishBatch, paced open-loop at `--rate` events/s
//! (batch k goes out k × batch / rate after the start). The latency reported
//! is receive time − `schedule_ts`: durable append, firing and delivery. As
//! `schedule_ts` has millisecond resolution it reads up to 1 ms high; use
//! `--batch 1` for latency, larger batches for load.
//!
//! Fails like `schedule`: an event missing from a group, or one delivered early.

use std::time::Duration;

use anyhow::ensure;
use tokio::time::Instant;

use crate::report::Report;
use crate::stats::Pacer;
use crate::workload::{Due, Plan, Session, WorkloadArgs};

#[derive(clap::Args, Clone)]
pub struct E2eArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Events published per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
}

/// Runs the `e2e` mode, prints its report, and fails if an event is missing or
/// one came early.
pub async fn run(args: E2eArgs) -> anyhow::Result<()> {
    let w = &args.workload;
    w.validate()?;
    let pacer = Pacer::new(args.rate / w.batch as f64);
    ensure!(pacer.is_some(), "--rate must be positive");
    let started = Instant::now();
    let timeout = w.timeout.unwrap_or_else(|| {
        Duration::from_secs_f64(w.events as f64 / args.rate) + Duration::from_secs(30)
    });
    let deadline = started + timeout;
    let session = Session::start(w, Plan::new(w, Due::Now))?;
    let members = session.subscribe(w).await?;
    let publish = session.publish(w, deadline, pacer).await?;
    let timed_out = crate::workload::wait(&session.tracker, deadline).await;
    let plan = session.plan.clone();
    let outcome = session.finish(members).await?;
    let latency = crate::stats::LatencySummary::of(&outcome.total.lateness_us);
    let report = Report {
        due: format!("due on publish, {:.0}/s", args.rate),
        lateness_label: "publish to delivery ms",
        extra: vec![("publish_to_delivery_ms", latency.to_json())],
        ..Report::new("e2e", w, plan.topic.clone(), publish, outcome, timed_out)
    };
    report.finish(w.json)
}
