//! Mode `deliver`: how fast a backlog drains to consumers with batched acks.
//!
//! 1. The groups are created by subscribing one member each, which then
//!    disconnect: from now on due events wait for the groups.
//! 2. `--events` events due now are published.
//! 3. The run polls `DescribeGroup` until every group's lag is `--events` (the
//!    server has fired them all and holds them for the group), within
//!    `--lag-timeout`.
//! 4. The members connect; the drain is timed from then to the ack of the last
//!    first receipt.
//!
//! Fails like `schedule`: an event missing from a group, or one delivered early.

use std::time::Duration;

use anyhow::{bail, Context};
use chronos_proto::v1::admin_service_client::AdminServiceClient;
use chronos_proto::v1::DescribeGroupRequest;
use serde_json::json;
use tokio::time::Instant;

use crate::report::{now_us, Report};
use crate::workload::{connect, Due, Plan, Session, WorkloadArgs};

/// How often the group's lag is polled while the backlog builds up.
const LAG_POLL: Duration = Duration::from_millis(20);

#[derive(clap::Args, Clone)]
pub struct DeliverArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// How long the server may take to report the whole backlog as lag.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub lag_timeout: Duration,
}

/// Runs the `deliver` mode, prints its report, and fails if an event is
/// missing, one came early, or the backlog never showed up as lag.
pub async fn run(args: DeliverArgs) -> anyhow::Result<()> {
    let w = &args.workload;
    w.validate()?;
    let started = Instant::now();
    let timeout = w
        .timeout
        .unwrap_or(args.lag_timeout + Duration::from_secs(60));
    let deadline = started + timeout;
    let due_ms = now_us() / 1000;
    let session = Session::start(w, Plan::new(w, Due::At { ms: due_ms }))?;
    session.create_groups(w).await?;
    let publish = session.publish(w, deadline, None).await?;
    let lag_wait = Instant::now();
    wait_for_lag(
        &args,
        &session,
        (started + timeout).min(lag_wait + args.lag_timeout),
    )
    .await?;
    let lag_seconds = lag_wait.elapsed().as_secs_f64();
    let drain_from_us = now_us();
    let members = session.subscribe(w).await?;
    let timed_out = crate::workload::wait(&session.tracker, deadline).await;
    let plan = session.plan.clone();
    let outcome = session.finish(members).await?;
    let report = Report {
        due: "backlog due now".to_string(),
        first_due_us: due_ms * 1000,
        drain_from_us: Some(drain_from_us),
        extra: vec![("lag_wait_seconds", json!(lag_seconds))],
        drain_has_rate: true,
        ..Report::new(
            "deliver",
            w,
            plan.topic.clone(),
            publish,
            outcome,
            timed_out,
        )
    };
    report.finish(w.json)
}

/// Polls `DescribeGroup` until every group reports the whole plan as lag.
async fn wait_for_lag(args: &DeliverArgs, session: &Session, until: Instant) -> anyhow::Result<()> {
    let w = &args.workload;
    let mut admin = AdminServiceClient::new(connect(w.node_addr(0)).await?);
    for group in &session.group_names {
        loop {
            let lag = admin
                .describe_group(DescribeGroupRequest {
                    consumer_group: group.clone(),
                    topic: session.plan.topic.clone(),
                })
                .await
                .with_context(|| format!("DescribeGroup {group}"))?
                .into_inner()
                .group
                .map_or(0, |g| g.lag);
            if lag >= w.events {
                break;
            }
            if Instant::now() >= until {
                bail!(
                    "group {group}: lag {lag} of {} events within the deadline",
                    w.events
                );
            }
            tokio::time::sleep(LAG_POLL).await;
        }
    }
    Ok(())
}
