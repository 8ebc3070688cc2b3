//! `chronos schedules create|update|list|get|pause|resume|delete|trigger`.

use chronos_proto::v1::schedule::Recurrence;
use chronos_proto::v1::{
    CreateScheduleRequest, DeleteScheduleRequest, GetScheduleRequest, ListSchedulesRequest,
    MissedRuns, PauseScheduleRequest, ResumeScheduleRequest, Schedule, ScheduleInfo, ScheduleTimes,
    TriggerScheduleRequest, UpdateScheduleRequest,
};
use clap::Subcommand;
use serde_json::json;

use super::output::{payload_text, print_json};
use super::{events_client, fmt_time, parse_duration, parse_time, Conn, Failure, Result};

#[derive(Subcommand)]
pub enum SchedulesCommand {
    /// Create a recurring schedule: each occurrence becomes one event of the topic.
    Create(SpecArgs),
    /// Replace a schedule's content; its next occurrence is computed afresh.
    Update(SpecArgs),
    /// List schedules (of one topic with --topic).
    List {
        #[arg(long)]
        topic: Option<String>,
    },
    /// A schedule and its next occurrences.
    Get {
        schedule_id: String,
        /// How many next occurrences to show.
        #[arg(long, default_value_t = 5)]
        upcoming: u32,
    },
    /// Stop firing until resumed (occurrences meanwhile are skipped).
    Pause { schedule_id: String },
    /// Fire again from the next occurrence.
    Resume { schedule_id: String },
    /// Delete a schedule; it never fires again.
    Delete { schedule_id: String },
    /// Publish one extra occurrence now.
    Trigger { schedule_id: String },
}

#[derive(clap::Args, Debug)]
pub struct SpecArgs {
    pub schedule_id: String,
    pub topic: String,
    /// The payload of every occurrence (else empty).
    pub payload: Option<String>,
    /// Cron with seconds (`sec min hour dom month dow`), five fields, or @daily etc.
    #[arg(long, group = "rule")]
    pub cron: Option<String>,
    /// A fixed interval, e.g. 30s, 5m, 1h (at least 1s).
    #[arg(long, group = "rule")]
    pub every: Option<String>,
    /// Comma-separated times (RFC 3339 or ms since the epoch).
    #[arg(long, group = "rule")]
    pub at: Option<String>,
    /// IANA time zone for --cron, e.g. Europe/Berlin (default UTC).
    #[arg(long, default_value = "")]
    pub time_zone: String,
    #[arg(long)]
    pub start: Option<String>,
    #[arg(long)]
    pub end: Option<String>,
    /// Spread each occurrence up to this much after its time, e.g. 10s.
    #[arg(long)]
    pub jitter: Option<String>,
    /// skip, fire-once or catch-up: what to do with occurrences missed while down.
    #[arg(long, default_value = "skip")]
    pub missed: String,
    /// For --missed catch-up: at most this many missed occurrences fire.
    #[arg(long, default_value_t = 0)]
    pub catch_up_limit: u32,
    #[arg(long)]
    pub key: Option<String>,
    /// A header `name=value`; repeat for more.
    #[arg(long = "header")]
    pub headers: Vec<String>,
}

fn spec(a: SpecArgs) -> Result<Schedule> {
    let recurrence = match (a.cron, a.every, a.at) {
        (Some(c), _, _) => Recurrence::Cron(c),
        (_, Some(e), _) => Recurrence::EveryMs(
            parse_duration("--every", &e)?
                .as_millis()
                .min(i64::MAX as u128) as i64,
        ),
        (_, _, Some(list)) => Recurrence::Times(ScheduleTimes {
            times_ts: list
                .split(',')
                .map(|t| parse_time("--at", t.trim()))
                .collect::<Result<_>>()?,
        }),
        _ => return Err(Failure::Usage("give one of --cron, --every or --at".into())),
    };
    let missed = match a.missed.as_str() {
        "skip" => MissedRuns::Skip,
        "fire-once" => MissedRuns::FireOnce,
        "catch-up" => MissedRuns::CatchUp,
        other => {
            return Err(Failure::Usage(format!(
                "--missed {other:?}: give skip, fire-once or catch-up"
            )))
        }
    };
    let mut headers = std::collections::HashMap::new();
    for h in &a.headers {
        let (k, v) = h
            .split_once('=')
            .ok_or_else(|| Failure::Usage(format!("--header {h:?}: give name=value")))?;
        headers.insert(k.to_string(), v.to_string());
    }
    let time = |flag: &str, v: &Option<String>| v.as_deref().map_or(Ok(0), |t| parse_time(flag, t));
    Ok(Schedule {
        schedule_id: a.schedule_id,
        topic: a.topic,
        key: a.key.unwrap_or_default(),
        payload: a.payload.unwrap_or_default().into_bytes().into(),
        headers,
        recurrence: Some(recurrence),
        time_zone: a.time_zone,
        start_ts: time("--start", &a.start)?,
        end_ts: time("--end", &a.end)?,
        jitter_ms: match &a.jitter {
            Some(j) => parse_duration("--jitter", j)?.as_millis() as i64,
            None => 0,
        },
        missed_runs: missed as i32,
        catch_up_limit: a.catch_up_limit,
    })
}

fn rule_text(s: &Schedule) -> String {
    match &s.recurrence {
        Some(Recurrence::Cron(c)) => format!("cron {c:?}"),
        Some(Recurrence::EveryMs(ms)) => format!("every {ms} ms"),
        Some(Recurrence::Times(t)) => format!("{} times", t.times_ts.len()),
        None => "-".into(),
    }
}

fn show(info: &ScheduleInfo, json_out: bool) {
    let s = info.schedule.clone().unwrap_or_default();
    if json_out {
        print_json(&json!({
            "schedule_id": s.schedule_id,
            "topic": s.topic,
            "rule": rule_text(&s),
            "time_zone": s.time_zone,
            "paused": info.paused,
            "next_ts": info.next_ts,
            "upcoming_ts": info.upcoming_ts,
            "occurrences": info.occurrences,
            "last_ts": info.last_ts,
            "partition": info.partition,
        }));
        return;
    }
    let state = match (info.paused, info.next_ts) {
        (true, _) => "paused".to_string(),
        (false, 0) => "ended".to_string(),
        (false, next) => format!("next {}", fmt_time(next)),
    };
    println!(
        "{}  {}  {}{}  {}  occurrences {}  payload {}",
        s.schedule_id,
        s.topic,
        rule_text(&s),
        if s.time_zone.is_empty() {
            String::new()
        } else {
            format!(" ({})", s.time_zone)
        },
        state,
        info.occurrences,
        payload_text(&s.payload)
    );
    for t in &info.upcoming_ts {
        println!("  {}", fmt_time(*t));
    }
}

pub async fn schedules(conn: &Conn, cmd: SchedulesCommand) -> Result<()> {
    let mut c = events_client(conn).await?;
    match cmd {
        SchedulesCommand::Create(a) => {
            let r = c
                .create_schedule(CreateScheduleRequest {
                    schedule: Some(spec(a)?),
                })
                .await?
                .into_inner();
            if let Some(info) = &r.schedule {
                show(info, conn.json);
            }
        }
        SchedulesCommand::Update(a) => {
            let r = c
                .update_schedule(UpdateScheduleRequest {
                    schedule: Some(spec(a)?),
                })
                .await?
                .into_inner();
            if let Some(info) = &r.schedule {
                show(info, conn.json);
            }
        }
        SchedulesCommand::List { topic } => {
            let mut token = String::new();
            loop {
                let page = c
                    .list_schedules(ListSchedulesRequest {
                        topic: topic.clone().unwrap_or_default(),
                        page_token: token,
                        page_size: 0,
                    })
                    .await?
                    .into_inner();
                for info in &page.schedules {
                    show(info, conn.json);
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        SchedulesCommand::Get {
            schedule_id,
            upcoming,
        } => {
            let r = c
                .get_schedule(GetScheduleRequest {
                    schedule_id,
                    upcoming,
                })
                .await?
                .into_inner();
            if let Some(info) = &r.schedule {
                show(info, conn.json);
            }
        }
        SchedulesCommand::Pause { schedule_id } => {
            let r = c
                .pause_schedule(PauseScheduleRequest { schedule_id })
                .await?
                .into_inner();
            if let Some(info) = &r.schedule {
                show(info, conn.json);
            }
        }
        SchedulesCommand::Resume { schedule_id } => {
            let r = c
                .resume_schedule(ResumeScheduleRequest { schedule_id })
                .await?
                .into_inner();
            if let Some(info) = &r.schedule {
                show(info, conn.json);
            }
        }
        SchedulesCommand::Delete { schedule_id } => {
            c.delete_schedule(DeleteScheduleRequest {
                schedule_id: schedule_id.clone(),
            })
            .await?;
            if conn.json {
                print_json(&json!({ "deleted": schedule_id }));
            } else {
                println!("deleted {schedule_id}");
            }
        }
        SchedulesCommand::Trigger { schedule_id } => {
            let r = c
                .trigger_schedule(TriggerScheduleRequest { schedule_id })
                .await?
                .into_inner();
            if conn.json {
                print_json(&json!({
                    "message_id": r.message_id, "partition": r.partition, "offset": r.offset
                }));
            } else {
                println!(
                    "triggered {} (partition {}, offset {})",
                    r.message_id, r.partition, r.offset
                );
            }
        }
    }
    Ok(())
}
