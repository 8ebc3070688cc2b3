//! Replay: stored events as an async stream, by offset, publish time or due time.

use std::ops::Range;
use std::time::SystemTime;

use chronos_proto::v1::event_service_client::EventServiceClient;
use chronos_proto::v1::{replay_request, OffsetRange, ReplayEvent, ReplayRequest, TimeRange};
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::event::{to_ms, Event};
use crate::{Client, Error};

/// What to replay: a range (offsets, publish times or due times) and filters.
///
/// ```
/// use chronos_client::Replay;
/// use std::time::{Duration, SystemTime};
///
/// let hour_ago = SystemTime::now() - Duration::from_secs(3600);
/// let q = Replay::published(hour_ago, None).topic("orders").key("customer-7");
/// let q2 = Replay::offsets(0..100).partition(2);
/// # let _ = (q, q2);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Replay {
    req: ReplayRequest,
}

impl Replay {
    /// Offsets `[start, end)` of each partition (`end` 0 = up to the current end).
    /// Without a topic, events of every topic.
    pub fn offsets(range: Range<u64>) -> Self {
        Self::with(replay_request::Range::Offsets(OffsetRange {
            from: range.start,
            to: range.end,
        }))
    }

    /// Events published in `[from, to)`; `to` `None` = no end.
    pub fn published(from: SystemTime, to: Option<SystemTime>) -> Self {
        Self::with(replay_request::Range::PublishTime(time_range(from, to)))
    }

    /// Events due in `[from, to)`; `to` `None` = no end. Reads
    /// every retained log record (due times are not in log order).
    pub fn due(from: SystemTime, to: Option<SystemTime>) -> Self {
        Self::with(replay_request::Range::DueTime(time_range(from, to)))
    }

    fn with(range: replay_request::Range) -> Self {
        Replay {
            req: ReplayRequest {
                range: Some(range),
                ..ReplayRequest::default()
            },
        }
    }

    /// Only events of this topic.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.req.topic = topic.into();
        self
    }

    /// Only this partition.
    pub fn partition(mut self, partition: u32) -> Self {
        self.req.partition_id = Some(i32::try_from(partition).unwrap_or(i32::MAX));
        self
    }

    /// Only events published with this routing key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.req.key = key.into();
        self
    }
}

fn time_range(from: SystemTime, to: Option<SystemTime>) -> TimeRange {
    TimeRange {
        from_ts: to_ms(from),
        to_ts: to.map_or(0, to_ms),
    }
}

/// One stored event, as replay finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    pub event: Event,
    pub partition: u32,
    pub offset: u64,
    /// When the server accepted it, ms since the Unix epoch.
    pub publish_ts: i64,
    /// When it became (or becomes) due, ms since the Unix epoch.
    pub due_ts: i64,
}

impl From<ReplayEvent> for Replayed {
    fn from(r: ReplayEvent) -> Self {
        Replayed {
            event: r.event.unwrap_or_default(),
            partition: r.partition,
            offset: r.offset,
            publish_ts: r.publish_ts,
            due_ts: r.due_ts,
        }
    }
}

impl Client {
    /// Streams stored events, never materialised in memory. Opening the
    /// stream is retried like any idempotent call; an error mid-stream is
    /// yielded once and ends it (resume from the last offset seen).
    ///
    /// ```no_run
    /// # async fn demo(client: chronos_client::Client) -> Result<(), chronos_client::Error> {
    /// use chronos_client::Replay;
    /// use futures::StreamExt;
    ///
    /// let mut events = client.replay(Replay::offsets(0..0).topic("orders")).await?;
    /// while let Some(r) = events.next().await {
    ///     let r = r?;
    ///     println!("{}:{} {}", r.partition, r.offset, r.event.message_id);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn replay(
        &self,
        query: Replay,
    ) -> Result<BoxStream<'static, Result<Replayed, Error>>, Error> {
        let req = query.req;
        let stream = self
            .call(true, |ch| {
                let req = req.clone();
                async move { EventServiceClient::new(ch).replay(req).await }
            })
            .await?;
        let events = futures::stream::unfold(Some(stream), |state| async move {
            let mut stream = state?;
            match stream.message().await {
                Ok(Some(ev)) => Some((Ok(Replayed::from(ev)), Some(stream))),
                Ok(None) => None,
                Err(status) => Some((Err(Error::from(status)), None)),
            }
        });
        Ok(events.boxed())
    }
}
