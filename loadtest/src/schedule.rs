//! Mode `schedule` (alias `scheduled`): fire lateness with consumers connected.
//!
//! 1. Every member of every group opens its `Consume` stream and subscribes
//!    (start = latest: the groups exist before anything is published, and the
//!    first event is due `--lead` later).
//! 2. `--events` events are published with `PublishBatch`, due uniformly at
//!    `--rate` per second from start + lead (or all at that instant, `--burst`):
//!    as fast as they go, or with `--paced` at `--rate` too, so that
//!    publishing runs while events fire (each is published about `--lead`
//!    before it is due).
//! 3. The run waits until each group has received each message id at least once,
//!    every member's stream has ended, or `--timeout` passes; then members flush
//!    their acks and stop.
//!
//! The run fails (non-zero exit) when an event is missing from a group or any
//! delivery arrived before its `schedule_ts`.

use std::time::Duration;

use anyhow::ensure;
use tokio::time::Instant;

use crate::report::{now_us, Report};
use crate::stats::Pacer;
use crate::workload::{Due, Plan, Session, WorkloadArgs};

#[derive(clap::Args, Clone)]
pub struct ScheduleArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Due times per second: event i is due at start + lead + i / rate.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// The first due time is this long after the start, so publishing gets ahead of firing.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub lead: Duration,
    /// Every event due at the same instant, start + lead.
    #[arg(long)]
    pub burst: bool,
    /// Publish at `--rate` as well (in batches of `--batch`), not all at once.
    #[arg(long, conflicts_with = "burst")]
    pub paced: bool,
    /// Due times out of publish order: each event's due time moves within
    /// windows of this long (with `--paced`, at most half of `--lead`), as
    /// events of users who schedule for many different moments.
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "burst")]
    pub shuffle: Option<Duration>,
}

/// Runs the `schedule` mode, prints its report, and fails if an event is
/// missing or one came early.
pub async fn run(args: ScheduleArgs) -> anyhow::Result<()> {
    let w = &args.workload;
    w.validate()?;
    ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be positive"
    );
    let started = Instant::now();
    let timeout = w.timeout.unwrap_or_else(|| {
        args.lead + Duration::from_secs_f64(w.events as f64 / args.rate) + Duration::from_secs(30)
    });
    let deadline = started + timeout;
    // The lead covers subscribing as well as publishing.
    let first_ms = now_us() / 1000 + args.lead.as_millis() as i64;
    let shuffle = args.shuffle.unwrap_or_default();
    if args.paced {
        // A paced event is published about --lead before its in-order slot:
        // moving it by at most half the lead keeps it published ahead.
        ensure!(
            shuffle <= args.lead / 2,
            "--shuffle must be at most half of --lead with --paced"
        );
    }
    let due = if args.burst {
        Due::At { ms: first_ms }
    } else {
        Due::Spread {
            first_ms,
            rate: args.rate,
            shuffle: (shuffle.as_secs_f64() * args.rate) as u64,
        }
    };
    let plan = Plan::new(w, due);
    let session = Session::start(w, plan)?;
    let members = session.subscribe(w).await?;
    if now_us() / 1000 > first_ms {
        crate::progress::notice("subscribing took longer than --lead; events are due already");
    }
    let pacer = if args.paced {
        Pacer::new(args.rate / w.batch as f64)
    } else {
        None
    };
    let publish = session.publish(w, deadline, pacer).await?;
    let timed_out = crate::workload::wait(&session.tracker, deadline).await;
    let plan = session.plan.clone();
    let outcome = session.finish(members).await?;
    let report = Report {
        due: if args.burst {
            "burst".to_string()
        } else if let Some(window) = args.shuffle.filter(|w| !w.is_zero()) {
            format!(
                "due at {:.0}/s, out of order within {window:?}{}",
                args.rate,
                if args.paced {
                    ", published at that rate too"
                } else {
                    ""
                }
            )
        } else if args.paced {
            format!("due at {:.0}/s, published at that rate too", args.rate)
        } else {
            format!("due at {:.0}/s", args.rate)
        },
        first_due_us: first_ms * 1000,
        // The last slot's due time, whichever event took it.
        drain_from_us: Some(if args.burst {
            first_ms * 1000
        } else {
            first_ms * 1000 + ((w.events - 1) as f64 * 1e6 / args.rate) as i64
        }),
        drain_has_rate: args.burst,
        ..Report::new(
            "schedule",
            w,
            plan.topic.clone(),
            publish,
            outcome,
            timed_out,
        )
    };
    report.finish(w.json)
}
