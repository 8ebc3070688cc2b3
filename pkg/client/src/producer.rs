//! The batching producer: many callers' events gathered by one background
//! task into `PublishBatch` calls, each caller answered with its own result.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chronos_proto::v1::event_service_client::EventServiceClient;
use chronos_proto::v1::PublishBatchRequest;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::event::{Event, EventBuilder, Published};
use crate::{Client, Error};

/// How a [`Producer`] batches.
#[derive(Debug, Clone)]
pub struct ProducerOptions {
    /// How long the first event of a batch waits for company before the batch
    /// is sent.
    pub linger: Duration,
    /// A batch is sent as soon as it has this many events (the server's
    /// `limits.max_batch_events` is 10 000 by default).
    pub max_batch_events: usize,
    /// Batches in flight at once; the next waits for one to finish.
    pub max_inflight_batches: usize,
    /// Events queued for the background task before `publish` waits for room.
    pub queue_capacity: usize,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        ProducerOptions {
            linger: Duration::from_millis(5),
            max_batch_events: 1000,
            max_inflight_batches: 4,
            queue_capacity: 10_000,
        }
    }
}

type Reply = oneshot::Sender<Result<Published, Error>>;

enum Command {
    Publish(Event, Reply),
    /// Send what is queued now and answer once every batch so far is answered.
    Flush(oneshot::Sender<()>),
}

/// Publishes events in batches: concurrent [`publish`](Producer::publish)
/// calls (from clones of one producer, or tasks sharing a reference) are
/// gathered by a background task into one `PublishBatch` RPC per
/// `max_batch_events` events or per `linger`, whichever comes first, and each
/// caller gets its own event's result — including its own `InvalidArgument`
/// (named `event.<field>`, as for a single publish) without failing the others.
///
/// Batches are retried like any idempotent call (see [`Client`]). Dropping the
/// last handle lets the task send what is queued and stop; [`close`](Producer::close)
/// does that and waits for it.
///
/// ```no_run
/// # async fn demo(client: chronos_client::Client) -> Result<(), chronos_client::Error> {
/// use chronos_client::ProducerOptions;
/// use std::time::Duration;
///
/// let producer = client.producer(ProducerOptions {
///     linger: Duration::from_millis(10),
///     max_batch_events: 500,
///     ..Default::default()
/// });
/// let tasks: Vec<_> = (0..100)
///     .map(|i| {
///         let p = producer.clone();
///         tokio::spawn(async move {
///             p.publish_after("reminders", format!("r-{i}"), "ping", Duration::from_secs(30))
///                 .await
///         })
///     })
///     .collect();
/// for t in tasks {
///     let published = t.await.expect("task")?;
///     assert!(!published.duplicate);
/// }
/// producer.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Producer {
    tx: mpsc::Sender<Command>,
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A batching producer on this client's connection. Needs a Tokio runtime.
    pub fn producer(&self, options: ProducerOptions) -> Producer {
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        tokio::spawn(run(self.clone(), options, rx));
        Producer {
            tx,
            closed: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Producer {
    /// Queues `event` for the next batch and waits for its result.
    pub async fn publish(&self, event: impl Into<Event>) -> Result<Published, Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("producer closed"));
        }
        let event = event.into();
        self.ask(|reply| Command::Publish(event, reply)).await?
    }

    /// Publishes an event due at `at`.
    pub async fn publish_at(
        &self,
        topic: impl Into<String>,
        message_id: impl Into<String>,
        payload: impl Into<Bytes>,
        at: SystemTime,
    ) -> Result<Published, Error> {
        let event = EventBuilder::new(topic, message_id)
            .payload(payload)
            .due_at(at);
        self.publish(event).await
    }

    /// Publishes an event due `delay` from now (by this machine's clock).
    pub async fn publish_after(
        &self,
        topic: impl Into<String>,
        message_id: impl Into<String>,
        payload: impl Into<Bytes>,
        delay: Duration,
    ) -> Result<Published, Error> {
        self.publish_at(topic, message_id, payload, SystemTime::now() + delay)
            .await
    }

    /// Sends whatever is queued without waiting for `linger` and waits until
    /// every event queued before the call has its answer.
    pub async fn flush(&self) -> Result<(), Error> {
        self.ask(Command::Flush).await
    }

    /// Sends the background task a command carrying a reply channel and
    /// waits for the reply.
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(command(reply))
            .await
            .map_err(|_| Error::Closed("producer task ended"))?;
        answer
            .await
            .map_err(|_| Error::Closed("producer task ended"))
    }

    /// Refuses further publishes (on every clone) and flushes what is queued.
    pub async fn close(self) -> Result<(), Error> {
        self.closed.store(true, Ordering::Release);
        self.flush().await
    }
}

/// The background task: gathers commands into batches and keeps up to
/// `max_inflight_batches` of them in flight. Ends when every handle is gone
/// and everything queued has been answered.
async fn run(client: Client, options: ProducerOptions, mut rx: mpsc::Receiver<Command>) {
    let max_batch = options.max_batch_events.max(1);
    let max_inflight = options.max_inflight_batches.max(1);
    let mut inflight = FuturesUnordered::new();
    loop {
        let first = tokio::select! {
            cmd = rx.recv() => cmd,
            Some(()) = inflight.next(), if !inflight.is_empty() => continue,
        };
        let Some(first) = first else { break };
        let mut batch = Vec::new();
        let mut flush = None;
        match first {
            Command::Publish(event, reply) => batch.push((event, reply)),
            Command::Flush(done) => flush = Some(done),
        }
        let deadline = Instant::now() + options.linger;
        while flush.is_none() && batch.len() < max_batch {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Command::Publish(event, reply)) => batch.push((event, reply)),
                    Some(Command::Flush(done)) => flush = Some(done),
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => break,
                Some(()) = inflight.next(), if !inflight.is_empty() => {}
            }
        }
        if !batch.is_empty() {
            while inflight.len() >= max_inflight {
                inflight.next().await;
            }
            inflight.push(send_batch(client.clone(), batch));
        }
        if let Some(done) = flush {
            while inflight.next().await.is_some() {}
            let _ = done.send(());
        }
    }
    while inflight.next().await.is_some() {}
}

/// Publishes one batch and answers each caller. An `InvalidArgument` naming
/// `events[i]` fails that caller alone and the rest go again; one about the
/// whole batch (e.g. its total size) sends each event on its own.
async fn send_batch(client: Client, batch: Vec<(Event, Reply)>) {
    let (mut events, mut replies): (Vec<Event>, Vec<Reply>) = batch.into_iter().unzip();
    // Each round removes one event, so this ends.
    while !events.is_empty() {
        let req = PublishBatchRequest {
            events: events.clone(),
        };
        let result = client
            .call(true, |ch| {
                let req = req.clone();
                async move { EventServiceClient::new(ch).publish_batch(req).await }
            })
            .await;
        match result {
            Ok(resp) if resp.results.len() == replies.len() => {
                for (reply, r) in replies.into_iter().zip(resp.results) {
                    let _ = reply.send(Ok(Published::from(r)));
                }
                return;
            }
            Ok(resp) => {
                let why = format!(
                    "PublishBatch of {} events answered {} results",
                    replies.len(),
                    resp.results.len()
                );
                for reply in replies {
                    let _ = reply.send(Err(Error::Protocol(why.clone())));
                }
                return;
            }
            Err(Error::InvalidArgument { message, field }) => {
                match field.as_deref().and_then(|f| blamed_event(f, events.len())) {
                    Some((i, rest)) => {
                        events.remove(i);
                        // As a single publish of the event would have answered.
                        let message = match message.split_once(": ") {
                            Some((_, why)) => format!("event.{rest}: {why}"),
                            None => format!("event.{rest}: {message}"),
                        };
                        let _ = replies.remove(i).send(Err(Error::InvalidArgument {
                            message,
                            field: Some(format!("event.{rest}")),
                        }));
                    }
                    None => {
                        let one_by_one = events.into_iter().zip(replies).map(|(event, reply)| {
                            let client = client.clone();
                            async move {
                                let _ = reply.send(client.publish(event).await);
                            }
                        });
                        futures::future::join_all(one_by_one).await;
                        return;
                    }
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
                return;
            }
        }
    }
}

/// The field `events[3].topic` → (3, `topic`), if 3 < `len`.
fn blamed_event(field: &str, len: usize) -> Option<(usize, &str)> {
    let rest = field.strip_prefix("events[")?;
    let (index, rest) = rest.split_once("].")?;
    let index: usize = index.parse().ok()?;
    (index < len).then_some((index, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_errors_name_the_event() {
        assert_eq!(blamed_event("events[3].topic", 5), Some((3, "topic")));
        assert_eq!(blamed_event("events[7].topic", 5), None);
        assert_eq!(blamed_event("events", 5), None);
    }
}
