//! The batching producer: many callers' events (and cancels) gathered by
//! one background task into `PublishBatch` (and `CancelBatch`) calls, each
//! caller answered with its own result.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chronos_proto::v1::event_service_client::EventServiceClient;
use chronos_proto::v1::{CancelRequest, CancelStatus, PublishBatchRequest};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
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
type CancelReply = oneshot::Sender<Result<(), Error>>;

enum Command {
    Publish(Event, Reply),
    Cancel(CancelRequest, CancelReply),
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

    /// Stops a pending event from firing, batched with other callers' cancels
    /// into one `CancelBatch` (as publishes are); answered as
    /// [`Client::cancel`] is: `NotFound` if unknown, `FailedPrecondition` if
    /// it already fired, `Ok` if cancelled now or before. Sent after every
    /// publish answered before it was queued.
    pub async fn cancel(
        &self,
        topic: impl Into<String>,
        message_id: impl Into<String>,
        key: impl Into<String>,
    ) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("producer closed"));
        }
        let req = CancelRequest {
            topic: topic.into(),
            message_id: message_id.into(),
            key: key.into(),
        };
        self.ask(|reply| Command::Cancel(req, reply)).await?
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

/// What one linger gathered: publishes and cancels, each sent as its own batch.
#[derive(Default)]
struct Gathered {
    publishes: Vec<(Event, Reply)>,
    cancels: Vec<(CancelRequest, CancelReply)>,
    flush: Option<oneshot::Sender<()>>,
}

impl Gathered {
    /// Takes `cmd`; false once the task's queue is closed.
    fn take(&mut self, cmd: Option<Command>) -> bool {
        match cmd {
            Some(Command::Publish(event, reply)) => self.publishes.push((event, reply)),
            Some(Command::Cancel(req, reply)) => self.cancels.push((req, reply)),
            Some(Command::Flush(done)) => self.flush = Some(done),
            None => return false,
        }
        true
    }

    fn len(&self) -> usize {
        self.publishes.len().max(self.cancels.len())
    }
}

/// The background task: gathers commands into batches and keeps up to
/// `max_inflight_batches` of them in flight. Ends when every handle is gone
/// and everything queued has been answered.
async fn run(client: Client, options: ProducerOptions, mut rx: mpsc::Receiver<Command>) {
    let max_batch = options.max_batch_events.max(1);
    let max_inflight = options.max_inflight_batches.max(1);
    let mut inflight: FuturesUnordered<BoxFuture<'static, ()>> = FuturesUnordered::new();
    loop {
        let first = tokio::select! {
            cmd = rx.recv() => cmd,
            Some(()) = inflight.next(), if !inflight.is_empty() => continue,
        };
        let mut gathered = Gathered::default();
        if !gathered.take(first) {
            break;
        }
        let deadline = Instant::now() + options.linger;
        while gathered.flush.is_none() && gathered.len() < max_batch {
            tokio::select! {
                cmd = rx.recv() => if !gathered.take(cmd) { break },
                () = tokio::time::sleep_until(deadline) => break,
                Some(()) = inflight.next(), if !inflight.is_empty() => {}
            }
        }
        let Gathered {
            publishes,
            cancels,
            flush,
        } = gathered;
        let publishes =
            (!publishes.is_empty()).then(|| send_batch(client.clone(), publishes).boxed());
        let cancels = (!cancels.is_empty()).then(|| send_cancels(client.clone(), cancels).boxed());
        for batch in publishes.into_iter().chain(cancels) {
            while inflight.len() >= max_inflight {
                inflight.next().await;
            }
            inflight.push(batch);
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

/// Cancels one batch and answers each caller as a single cancel would have
/// been answered. An `InvalidArgument` naming `cancels[i]` fails that caller
/// alone and the rest go again.
async fn send_cancels(client: Client, batch: Vec<(CancelRequest, CancelReply)>) {
    let (mut cancels, mut replies): (Vec<CancelRequest>, Vec<CancelReply>) =
        batch.into_iter().unzip();
    // Each round removes one cancel, so this ends.
    while !cancels.is_empty() {
        match client.cancel_batch(cancels.clone()).await {
            Ok(results) if results.len() == replies.len() => {
                for ((reply, r), c) in replies.into_iter().zip(results).zip(cancels) {
                    let _ = reply.send(cancel_answer(&c, r.status(), r.offset));
                }
                return;
            }
            Ok(results) => {
                let why = format!(
                    "CancelBatch of {} cancels answered {} results",
                    replies.len(),
                    results.len()
                );
                for reply in replies {
                    let _ = reply.send(Err(Error::Protocol(why.clone())));
                }
                return;
            }
            Err(Error::InvalidArgument { message, field }) => {
                let blamed = field
                    .as_deref()
                    .and_then(|f| blamed(f, "cancels", cancels.len()));
                let Some((i, rest)) = blamed else {
                    let e = Error::InvalidArgument { message, field };
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                    return;
                };
                cancels.remove(i);
                let message = match message.split_once(": ") {
                    Some((_, why)) => format!("{rest}: {why}"),
                    None => format!("{rest}: {message}"),
                };
                let _ = replies.remove(i).send(Err(Error::InvalidArgument {
                    message,
                    field: Some(rest.to_string()),
                }));
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

/// A batch's cancel result as `Cancel` answers it.
fn cancel_answer(c: &CancelRequest, status: CancelStatus, offset: u64) -> Result<(), Error> {
    let (topic, id) = (&c.topic, &c.message_id);
    match status {
        CancelStatus::Cancelled | CancelStatus::AlreadyCancelled => Ok(()),
        CancelStatus::NotFound => Err(Error::NotFound {
            message: format!(
                "no event {id:?} on topic {topic:?} (within the dedup window); \
                 if it was published with a key, pass that key"
            ),
        }),
        CancelStatus::AlreadyFired => Err(Error::FailedPrecondition {
            message: format!("event {id:?} on topic {topic:?} (offset {offset}) already fired"),
        }),
    }
}

/// The field `events[3].topic` → (3, `topic`), if 3 < `len`.
fn blamed_event(field: &str, len: usize) -> Option<(usize, &str)> {
    blamed(field, "events", len)
}

/// The field `<list>[3].topic` → (3, `topic`), if 3 < `len`.
fn blamed<'a>(field: &'a str, list: &str, len: usize) -> Option<(usize, &'a str)> {
    let rest = field.strip_prefix(list)?.strip_prefix('[')?;
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
        assert_eq!(blamed("cancels[1].topic", "cancels", 2), Some((1, "topic")));
        assert_eq!(blamed("cancels[1].topic", "events", 2), None);
    }
}
