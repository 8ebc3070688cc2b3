//! The peer the `redis-*` modes measure Chronos against: a Redis sorted-set delay
//! queue of the kind Sidekiq and BullMQ use.
//!
//! - Producers `ZADD <queue>:delayed <due_ms> <member>`; the member is the whole
//!   job, `<message id>|<due ms>|<payload>` (Sidekiq stores its job JSON the same way).
//! - One poller runs [`MOVE_DUE_LUA`]: due members (score ≤ now) leave the sorted
//!   set and are pushed onto `<queue>:ready`, atomically, at most `limit` a call.
//!   It then sleeps until the next due time (capped by its poll interval).
//! - Consumers `BLMOVE ready processing` and ack with `LREM processing`.
//!
//! What this module does not do: retries of unacked jobs (a reaper of
//! `processing`), fan-out to several groups. Neither is exercised by the runs.

use std::time::Duration;

use anyhow::{bail, Context};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::sync::watch;

use crate::consumer::{Receipt, Tracker};
use crate::report::{now_us, Counters};

/// Moves due members of the delayed set (KEYS[1]) to the ready list (KEYS[2]).
/// ARGV[1] = now in ms, ARGV[2] = most members to move. Returns
/// `{moved, next due ms or -1}`; one script, so no member is moved twice or lost.
pub const MOVE_DUE_LUA: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
  redis.call('LPUSH', KEYS[2], unpack(due))
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local next_due = -1
if #head > 0 then next_due = tonumber(head[2]) end
return {#due, next_due}
";

/// Longest a consumer blocks in BLMOVE before it checks for the stop signal.
const CONSUME_BLOCK_S: f64 = 0.05;

/// The three keys of one queue.
#[derive(Clone)]
pub struct Keys {
    pub delayed: String,
    pub ready: String,
    pub processing: String,
}

impl Keys {
    pub fn new(queue: &str) -> Self {
        Keys {
            delayed: format!("{queue}:delayed"),
            ready: format!("{queue}:ready"),
            processing: format!("{queue}:processing"),
        }
    }
}

/// A connection of its own (blocking commands hold it), with no response timeout:
/// an `appendfsync always` Redis under load may take longer than the client's
/// default 500 ms, and a timed-out pipeline would count as lost.
pub async fn connect(addr: &str) -> anyhow::Result<MultiplexedConnection> {
    let client = redis::Client::open(addr).with_context(|| format!("redis address {addr}"))?;
    let config = AsyncConnectionConfig::new().set_response_timeout(None);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// The job as stored: `<id>|<due_ms>|<payload>`.
pub fn member(id: &str, due_ms: i64, payload: &str) -> String {
    format!("{id}|{due_ms}|{payload}")
}

/// The message id and due time of a stored job.
pub fn parse_member(member: &str) -> Option<(&str, i64)> {
    let mut parts = member.splitn(3, '|');
    let id = parts.next()?;
    let due_ms = parts.next()?.parse().ok()?;
    Some((id, due_ms))
}

/// One call of [`MOVE_DUE_LUA`]: (moved, next due ms if any remain).
pub async fn move_due(
    con: &mut MultiplexedConnection,
    script: &redis::Script,
    keys: &Keys,
    now_ms: i64,
    limit: usize,
) -> anyhow::Result<(u64, Option<i64>)> {
    let (moved, next_due): (u64, i64) = script
        .key(&keys.delayed)
        .key(&keys.ready)
        .arg(now_ms)
        .arg(limit)
        .invoke_async(con)
        .await?;
    Ok((moved, (next_due >= 0).then_some(next_due)))
}

/// Moves due jobs until `stop` flips: at once again after a full call, else
/// sleeping until the next due time, at most `poll_interval`.
pub async fn poller(
    addr: String,
    keys: Keys,
    limit: usize,
    poll_interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<u64> {
    let mut con = connect(&addr).await?;
    let script = redis::Script::new(MOVE_DUE_LUA);
    let mut total = 0u64;
    while !*stop.borrow() {
        let now = now_us();
        let (moved, next_due) = move_due(&mut con, &script, &keys, now / 1000, limit).await?;
        total += moved;
        if moved as usize >= limit {
            continue;
        }
        // Wake at the next due ms (+1 ms: `now / 1000` floors), never later than the interval.
        let until_next_us = next_due.map_or(i64::MAX, |due| (due + 1) * 1000 - now_us());
        let pause =
            Duration::from_micros(until_next_us.clamp(0, poll_interval.as_micros() as i64) as u64);
        if pause.is_zero() {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
    Ok(total)
}

/// Records one job a consumer received at `received_us` into `counters`.
pub fn note_receipt(counters: &mut Counters, tracker: &Tracker, member: &str, received_us: i64) {
    counters.deliveries += 1;
    let Some((id, due_ms)) = parse_member(member) else {
        counters.malformed += 1;
        return;
    };
    let Some(index) = tracker.index_of(id) else {
        counters.foreign += 1;
        return;
    };
    let lateness_us = received_us - due_ms * 1000;
    if lateness_us < 0 {
        counters.note_early(-lateness_us, "redis", id);
    }
    match tracker.mark(0, index) {
        Receipt::First { .. } => counters.note_first(received_us, lateness_us),
        Receipt::Repeat => counters.duplicates += 1,
    }
}

/// A consumer: BLMOVE one job into `processing` (then up to `fetch` − 1 more
/// with LMOVE in the same pipeline), record them, and ack them with LREMs
/// pipelined in front of the next fetch. Returns what it saw at the stop.
pub async fn consumer(
    addr: String,
    keys: Keys,
    fetch: usize,
    tracker: std::sync::Arc<Tracker>,
    stop: watch::Receiver<bool>,
) -> Counters {
    let mut counters = Counters::new();
    if let Err(error) = consume(&addr, &keys, fetch.max(1), &tracker, &stop, &mut counters).await {
        counters.note_error(format!("redis consumer: {error:#}"));
    }
    counters
}

async fn consume(
    addr: &str,
    keys: &Keys,
    fetch: usize,
    tracker: &Tracker,
    stop: &watch::Receiver<bool>,
    counters: &mut Counters,
) -> anyhow::Result<()> {
    let mut con = connect(addr).await?;
    let mut to_ack: Vec<String> = Vec::with_capacity(fetch);
    loop {
        let stopping = *stop.borrow();
        if stopping && to_ack.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for job in &to_ack {
            pipe.cmd("LREM").arg(&keys.processing).arg(1).arg(job);
        }
        if !stopping {
            let (from, to) = (&keys.ready, &keys.processing);
            pipe.cmd("BLMOVE")
                .arg(from)
                .arg(to)
                .arg("RIGHT")
                .arg("LEFT")
                .arg(CONSUME_BLOCK_S);
            for _ in 1..fetch {
                pipe.cmd("LMOVE").arg(from).arg(to).arg("RIGHT").arg("LEFT");
            }
        }
        let sent_us = now_us();
        let replies: Vec<redis::Value> = pipe.query_async(&mut con).await?;
        let mut replies = replies.into_iter();
        for _ in to_ack.drain(..) {
            let removed: i64 = redis::from_redis_value(replies.next().context("no LREM reply")?)?;
            counters.acks_sent += 1;
            match removed {
                1 => counters.acked += 1,
                _ => counters.ack_unknown += 1,
            }
            counters.last_first_ack_us = sent_us;
        }
        let received_us = now_us();
        for reply in replies {
            if reply != redis::Value::Nil {
                let job: String = redis::from_redis_value(reply)?;
                note_receipt(counters, tracker, &job, received_us);
                to_ack.push(job);
            }
        }
    }
}

/// Removes a queue's keys (UNLINK: freed in the background).
pub async fn drop_queue(con: &mut MultiplexedConnection, keys: &Keys) -> anyhow::Result<()> {
    let _: i64 = redis::cmd("UNLINK")
        .arg(&keys.delayed)
        .arg(&keys.ready)
        .arg(&keys.processing)
        .query_async(con)
        .await?;
    Ok(())
}

/// Checks that `addr` answers PING; a clear error before any load starts.
pub async fn ping(addr: &str) -> anyhow::Result<()> {
    let mut con = connect(addr).await?;
    let pong: String = redis::cmd("PING").query_async(&mut con).await?;
    if pong != "PONG" {
        bail!("{addr} answered PING with {pong:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    #[test]
    fn member_round_trips_and_payload_may_hold_the_separator() {
        let job = member("lt-x-7", 1_700_000_000_123, "a|b");
        assert_eq!(parse_member(&job), Some(("lt-x-7", 1_700_000_000_123)));
        assert_eq!(parse_member("no-separator"), None);
        assert_eq!(parse_member("id|not-a-number|p"), None);
    }

    #[test]
    fn receipts_count_lateness_early_duplicates_foreign_and_malformed() {
        let tracker = Tracker::new("run-".to_string(), 3, 1);
        let mut counters = Counters::new();
        let due_ms = 1_000_000;
        note_receipt(
            &mut counters,
            &tracker,
            &member("run-0", due_ms, "p"),
            due_ms * 1000 + 2500,
        );
        note_receipt(
            &mut counters,
            &tracker,
            &member("run-1", due_ms, "p"),
            due_ms * 1000 - 700,
        );
        note_receipt(
            &mut counters,
            &tracker,
            &member("run-0", due_ms, "p"),
            due_ms * 1000 + 9000,
        );
        note_receipt(
            &mut counters,
            &tracker,
            &member("other-0", due_ms, "p"),
            due_ms * 1000,
        );
        note_receipt(&mut counters, &tracker, "garbage", due_ms * 1000);
        assert_eq!(counters.deliveries, 5);
        assert_eq!((counters.unique, counters.duplicates), (2, 1));
        assert_eq!((counters.early, counters.early_worst_us), (1, 700));
        assert_eq!((counters.foreign, counters.malformed), (1, 1));
        // The early receipt is recorded as 0 lateness; the on-time one as 2.5 ms.
        assert_eq!(counters.lateness_us.len(), 2);
        assert!(counters
            .lateness_us
            .equivalent(counters.lateness_us.max(), 2500));
        assert_eq!(counters.lateness_us.min(), 0);
        assert_eq!(tracker.unique(0), 2);
    }

    /// A redis-server of the test's own on a unix socket, killed on drop.
    struct TestRedis {
        child: Child,
        addr: String,
        _dir: tempfile::TempDir,
    }

    impl Drop for TestRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Starts one when `redis-server` is on PATH; `None` (the test then says it
    /// was skipped) otherwise: `loadtest/peers/redis.sh install` provides it.
    async fn test_redis() -> Option<TestRedis> {
        let dir = tempfile::tempdir().ok()?;
        let socket = dir.path().join("redis.sock");
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--unixsocket",
            ])
            .arg(&socket)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn();
        let Ok(child) = child else {
            eprintln!("SKIPPED: redis-server is not on PATH (loadtest/peers/redis.sh install)");
            return None;
        };
        let redis = TestRedis {
            child,
            addr: format!("redis+unix://{}", socket.display()),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while ping(&redis.addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "test redis-server did not answer in 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(redis)
    }

    #[tokio::test]
    async fn lua_mover_moves_exactly_the_due_jobs_in_due_order() -> anyhow::Result<()> {
        let Some(redis) = test_redis().await else {
            return Ok(());
        };
        let mut con = connect(&redis.addr).await?;
        let (keys, script) = (Keys::new("t"), redis::Script::new(MOVE_DUE_LUA));
        for (id, due_ms) in [("c", 3000), ("a", 1000), ("b", 2000)] {
            let _: i64 = redis::cmd("ZADD")
                .arg(&keys.delayed)
                .arg(due_ms)
                .arg(member(id, due_ms, ""))
                .query_async(&mut con)
                .await?;
        }
        assert_eq!(
            move_due(&mut con, &script, &keys, 999, 10).await?,
            (0, Some(1000))
        );
        assert_eq!(
            move_due(&mut con, &script, &keys, 2000, 10).await?,
            (2, Some(3000))
        );
        // LPUSH in due order, consumers pop from the right: oldest first.
        let ready: Vec<String> = redis::cmd("LRANGE")
            .arg(&keys.ready)
            .arg(0)
            .arg(-1)
            .query_async(&mut con)
            .await?;
        assert_eq!(ready, vec![member("b", 2000, ""), member("a", 1000, "")]);
        assert_eq!(
            move_due(&mut con, &script, &keys, 2000, 10).await?,
            (0, Some(3000))
        );
        assert_eq!(
            move_due(&mut con, &script, &keys, 9000, 10).await?,
            (1, None)
        );
        // The limit bounds one call; the next due time then is already past.
        for i in 0..5 {
            let _: i64 = redis::cmd("ZADD")
                .arg(&keys.delayed)
                .arg(4000 + i)
                .arg(member(&format!("l{i}"), 4000 + i, ""))
                .query_async(&mut con)
                .await?;
        }
        assert_eq!(
            move_due(&mut con, &script, &keys, 9000, 2).await?,
            (2, Some(4002))
        );
        let total: (i64, i64) = redis::pipe()
            .zcard(&keys.delayed)
            .llen(&keys.ready)
            .query_async(&mut con)
            .await?;
        assert_eq!(total, (3, 5), "nothing lost or doubled");
        Ok(())
    }

    #[tokio::test]
    async fn poller_and_consumers_deliver_every_job_once_never_early_and_ack_it(
    ) -> anyhow::Result<()> {
        let Some(redis) = test_redis().await else {
            return Ok(());
        };
        let mut con = connect(&redis.addr).await?;
        let keys = Keys::new("e2e");
        let events = 300u64;
        let tracker = Arc::new(Tracker::new("e2e-".to_string(), events, 1));
        let first_due_ms = now_us() / 1000 + 200;
        let mut pipe = redis::pipe();
        for i in 0..events {
            let due_ms = first_due_ms + (i as i64 % 100);
            pipe.zadd(
                &keys.delayed,
                member(&format!("e2e-{i}"), due_ms, "x"),
                due_ms,
            )
            .ignore();
        }
        let () = pipe.query_async(&mut con).await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let poller = tokio::spawn(poller(
            redis.addr.clone(),
            keys.clone(),
            50,
            Duration::from_millis(5),
            stop_rx.clone(),
        ));
        let consumers: Vec<_> = [1, 7]
            .into_iter()
            .map(|fetch| {
                tokio::spawn(consumer(
                    redis.addr.clone(),
                    keys.clone(),
                    fetch,
                    tracker.clone(),
                    stop_rx.clone(),
                ))
            })
            .collect();
        tokio::time::timeout(Duration::from_secs(10), async {
            while !tracker.complete() {
                tracker.changed().await
            }
        })
        .await?;
        stop_tx.send(true)?;
        assert_eq!(poller.await??, events);
        let mut total = Counters::new();
        for consumer in consumers {
            total.merge(&consumer.await?);
        }
        assert!(total.errors.is_empty(), "{:?}", total.errors);
        assert_eq!(
            (total.unique, total.duplicates, total.early),
            (events, 0, 0)
        );
        assert_eq!((total.acks_sent, total.acked), (events, events));
        let left: (i64, i64, i64) = redis::pipe()
            .zcard(&keys.delayed)
            .llen(&keys.ready)
            .llen(&keys.processing)
            .query_async(&mut con)
            .await?;
        assert_eq!(left, (0, 0, 0));
        Ok(())
    }
}
