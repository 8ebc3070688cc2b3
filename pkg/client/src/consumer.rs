//! A consumer-group member on the bidirectional `Consume` stream: deliveries
//! out as a `Stream`, acks and nacks in-band and batched, credit, reconnects.
//!
//! One background task owns the gRPC stream. It forwards deliveries to the
//! [`Consumer`] through a channel, gathers settlements (acks, nacks) from the
//! consumer and its [`Acker`]s into `AckRequest`s, and when the stream breaks
//! with `UNAVAILABLE` or a transport error it subscribes again with backoff.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use chronos_proto::v1::event_service_client::EventServiceClient;
use chronos_proto::v1::{
    consume_request, consume_response, AckItem, AckRequest, ConsumeRequest, ConsumeResponse,
    StartPosition, SubscribeRequest,
};
use futures::Stream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::event::{from_ms, to_ms, Event};
use crate::retry::{Budget, RetryPolicy};
use crate::{Client, Error};

/// Where a new group starts reading; ignored when the group already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// Events that come due from the moment the group is created.
    #[default]
    Latest,
    /// Every retained event.
    Earliest,
    /// Events due at or after this time.
    At(SystemTime),
}

/// What a [`Consumer`] subscribes to and how it acks.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// The consumer group: every group of a topic gets every event; the
    /// members of one group share them.
    pub group: String,
    pub topic: String,
    /// Most unacked deliveries this member holds (0 = the server's default).
    pub max_inflight: u32,
    pub start: Start,
    /// One partition, or `None` for all.
    pub partition: Option<u32>,
    /// Settlements are sent when this many are pending (or half of
    /// `max_inflight`, if less: a member holding its whole window gets
    /// nothing more until its settlements arrive)...
    pub ack_batch: usize,
    /// ...or this long after the first of them, whichever comes first.
    pub ack_linger: Duration,
    /// Bounds for subscribing again after the stream broke (reset after each
    /// successful subscribe). When spent, the stream yields the error and ends.
    pub reconnect: RetryPolicy,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            group: String::new(),
            topic: String::new(),
            max_inflight: 0,
            start: Start::Latest,
            partition: None,
            ack_batch: 64,
            ack_linger: Duration::from_millis(5),
            reconnect: RetryPolicy {
                max_attempts: 100,
                max_elapsed: Duration::from_secs(120),
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
            },
        }
    }
}

/// One delivery of an event to this member.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Opaque; what [`Consumer::ack`] sends back.
    pub id: String,
    pub event: Event,
    pub partition: u32,
    pub offset: u64,
    /// When the event became due, ms since the Unix epoch.
    pub due_ts: i64,
    /// 1 on the first delivery, then 2, 3, ... on redeliveries.
    pub attempt: u32,
}

impl Delivery {
    /// [`Delivery::due_ts`] as a `SystemTime`.
    pub fn due_time(&self) -> SystemTime {
        from_ms(self.due_ts)
    }
}

impl From<chronos_proto::v1::Delivery> for Delivery {
    fn from(d: chronos_proto::v1::Delivery) -> Self {
        Delivery {
            id: d.delivery_id,
            event: d.event.unwrap_or_default(),
            partition: d.partition,
            offset: d.offset,
            due_ts: d.due_ts,
            attempt: d.attempt,
        }
    }
}

enum Control {
    Settle(AckItem),
    Grant(u32),
    /// Send pending settlements; answer once the server has answered them all.
    Flush(oneshot::Sender<Result<(), Error>>),
}

/// A handle that settles deliveries of one [`Consumer`] from any task.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Acker {
    tx: mpsc::Sender<Control>,
}

impl Acker {
    /// Acknowledges `delivery`: the event will not be delivered to this group
    /// again, and the server returns one credit. Sent in a batch shortly after.
    pub async fn ack(&self, delivery: &Delivery) -> Result<(), Error> {
        self.settle(delivery, false, None).await
    }

    /// Gives `delivery` back: it is redelivered (with `attempt` + 1) after
    /// `delay`, or after the server's backoff when `None`. Returns one credit.
    pub async fn nack(&self, delivery: &Delivery, delay: Option<Duration>) -> Result<(), Error> {
        self.settle(delivery, true, delay).await
    }

    async fn settle(
        &self,
        delivery: &Delivery,
        nack: bool,
        delay: Option<Duration>,
    ) -> Result<(), Error> {
        let item = AckItem {
            delivery_id: delivery.id.clone(),
            nack,
            nack_delay_ms: delay.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        self.send(Control::Settle(item)).await
    }

    /// Lets the server send `n` deliveries beyond `max_inflight` (credit is
    /// otherwise returned by acks and nacks alone).
    pub async fn grant(&self, n: u32) -> Result<(), Error> {
        self.send(Control::Grant(n)).await
    }

    /// Sends pending settlements now and waits until the server has recorded
    /// them durably. Fails if the stream broke first: those deliveries may
    /// then come again (at-least-once).
    pub async fn flush(&self) -> Result<(), Error> {
        let (done, answer) = oneshot::channel();
        self.send(Control::Flush(done)).await?;
        answer
            .await
            .map_err(|_| Error::Closed("consumer task ended"))?
    }

    async fn send(&self, c: Control) -> Result<(), Error> {
        self.tx
            .send(c)
            .await
            .map_err(|_| Error::Closed("consumer task ended"))
    }
}

/// A member of a consumer group: a `Stream` of [`Delivery`]s.
///
/// **Credit.** The server sends at most `max_inflight` deliveries this member
/// has not settled, and gets one credit back per ack or nack — so a consumer
/// that acks what it has processed needs nothing else for flow control.
/// [`grant`](Acker::grant) adds credit beyond the window.
///
/// **At-least-once.** An event leaves the group's in-flight set only when its
/// ack is durable on the server. Unsettled deliveries are redelivered when the
/// ack timeout passes, when this member goes away, or after a reconnect: if
/// the stream breaks with `UNAVAILABLE` or a transport error the consumer
/// subscribes again with backoff ([`ConsumerOptions::reconnect`]), and the
/// server redelivers what it held. Processing must tolerate duplicates
/// (`attempt` > 1 is a hint, not a guarantee).
///
/// [`close`](Consumer::close) sends pending settlements, waits until they are
/// durable and leaves the group. Dropping the consumer leaves too, after
/// sending what is pending (without waiting); while an [`Acker`] clone lives,
/// the member stays until the next delivery finds the consumer gone.
///
/// ```no_run
/// # async fn demo(client: chronos_client::Client) -> Result<(), chronos_client::Error> {
/// use chronos_client::{ConsumerOptions, Start};
/// use futures::StreamExt;
///
/// let mut consumer = client
///     .consumer(ConsumerOptions {
///         group: "billing".into(),
///         topic: "orders".into(),
///         max_inflight: 32,
///         start: Start::Earliest,
///         ..Default::default()
///     })
///     .await?;
/// while let Some(delivery) = consumer.next().await {
///     let delivery = delivery?;
///     println!("{} (attempt {})", delivery.event.message_id, delivery.attempt);
///     consumer.ack(&delivery).await?;
/// }
/// # Ok(()) }
/// ```
pub struct Consumer {
    deliveries: mpsc::Receiver<Result<Delivery, Error>>,
    acker: Acker,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").finish_non_exhaustive()
    }
}

impl Client {
    /// Joins `options.group` on the `Consume` stream; returns once subscribed
    /// (or with the server's refusal, e.g. `InvalidArgument` naming
    /// `subscribe.topic`). Needs a Tokio runtime.
    pub async fn consumer(&self, options: ConsumerOptions) -> Result<Consumer, Error> {
        let (ctl_tx, ctl_rx) = mpsc::channel(1024);
        let capacity = options.max_inflight.max(1) as usize + 256;
        let (out_tx, out_rx) = mpsc::channel(capacity);
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = Task {
            client: self.clone(),
            subscribe: subscribe_request(&options),
            options,
            ctl: ctl_rx,
            out: out_tx,
            pending: Vec::new(),
        };
        tokio::spawn(task.run(ready_tx));
        ready_rx
            .await
            .map_err(|_| Error::Closed("consumer task ended"))??;
        Ok(Consumer {
            deliveries: out_rx,
            acker: Acker { tx: ctl_tx },
        })
    }
}

impl Consumer {
    /// See [`Acker::ack`].
    pub async fn ack(&self, delivery: &Delivery) -> Result<(), Error> {
        self.acker.ack(delivery).await
    }

    /// See [`Acker::nack`].
    pub async fn nack(&self, delivery: &Delivery, delay: Option<Duration>) -> Result<(), Error> {
        self.acker.nack(delivery, delay).await
    }

    /// See [`Acker::grant`].
    pub async fn grant(&self, n: u32) -> Result<(), Error> {
        self.acker.grant(n).await
    }

    /// See [`Acker::flush`].
    pub async fn flush(&self) -> Result<(), Error> {
        self.acker.flush().await
    }

    /// A handle to settle deliveries from other tasks.
    pub fn acker(&self) -> Acker {
        self.acker.clone()
    }

    /// Flushes pending settlements, then leaves the group.
    pub async fn close(self) -> Result<(), Error> {
        self.acker.flush().await
    }
}

impl Stream for Consumer {
    type Item = Result<Delivery, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.deliveries.poll_recv(cx)
    }
}

fn subscribe_request(o: &ConsumerOptions) -> ConsumeRequest {
    let (start, start_ts) = match o.start {
        Start::Latest => (StartPosition::Latest, 0),
        Start::Earliest => (StartPosition::Earliest, 0),
        Start::At(t) => (StartPosition::Timestamp, to_ms(t)),
    };
    ConsumeRequest {
        kind: Some(consume_request::Kind::Subscribe(SubscribeRequest {
            consumer_group: o.group.clone(),
            topic: o.topic.clone(),
            partition_id: o.partition.map(|p| i32::try_from(p).unwrap_or(i32::MAX)),
            max_inflight: o.max_inflight,
            start: start as i32,
            start_ts,
            // Settled in-band: nothing is left to ack once it is gone.
            keep_unacked: false,
            max_deliveries: 0,
            max_wait_ms: 0,
        })),
    }
}

/// Pending settlements that are sent at once: `ack_batch`, but at most half
/// the window, so a member with a small `max_inflight` (1 for one event at a
/// time) is not left without credit for the linger.
fn ack_threshold(o: &ConsumerOptions) -> usize {
    let batch = o.ack_batch.max(1);
    match o.max_inflight {
        0 => batch, // the server's default window, unknown here
        window => batch.min((window as usize / 2).max(1)),
    }
}

/// How a session (one `Consume` stream) ended.
enum End {
    /// Every handle is gone: stop.
    Closed,
    /// The stream failed.
    Broken(Error),
}

struct Task {
    client: Client,
    options: ConsumerOptions,
    subscribe: ConsumeRequest,
    ctl: mpsc::Receiver<Control>,
    out: mpsc::Sender<Result<Delivery, Error>>,
    /// Settlements not yet sent; kept across reconnects (an ack of any
    /// attempt of an in-flight event counts).
    pending: Vec<AckItem>,
}

impl Task {
    async fn run(mut self, ready: oneshot::Sender<Result<(), Error>>) {
        let mut ready = Some(ready);
        let mut budget = Budget::new(self.options.reconnect);
        loop {
            let (generation, channel) = self.client.channel();
            let (req_tx, req_rx) = mpsc::channel(64);
            // Cannot fail: the receiver is right here.
            let _ = req_tx.send(self.subscribe.clone()).await;
            let timeout = self.client.request_timeout();
            let opened = tokio::time::timeout(
                timeout,
                EventServiceClient::new(channel).consume(ReceiverStream::new(req_rx)),
            )
            .await
            .unwrap_or_else(|_| {
                Err(tonic::Status::deadline_exceeded(format!(
                    "not subscribed within {timeout:?}"
                )))
            });
            let err = match opened {
                Ok(resp) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Ok(()));
                    }
                    budget = Budget::new(self.options.reconnect);
                    match self.session(req_tx, resp.into_inner()).await {
                        End::Closed => return,
                        End::Broken(e) => e,
                    }
                }
                Err(status) => Error::from(status),
            };
            let wait = if err.is_retryable() {
                budget.next_wait()
            } else {
                None
            };
            let Some(wait) = wait else {
                match ready.take() {
                    Some(r) => drop(r.send(Err(err))),
                    None => drop(self.out.send(Err(err)).await),
                }
                return;
            };
            tracing::debug!(error = %err, ?wait, group = %self.options.group, "consume stream broke; subscribing again");
            self.client.fail_over(generation, &err).await;
            tokio::time::sleep(wait).await;
            if self.out.is_closed() {
                return; // the consumer is gone: nobody to subscribe for
            }
        }
    }

    /// Runs one subscribed stream until it breaks or every handle is gone.
    async fn session(
        &mut self,
        req_tx: mpsc::Sender<ConsumeRequest>,
        mut inbound: Streaming<ConsumeResponse>,
    ) -> End {
        let mut acks = AckState::default();
        let mut flush_at: Option<Instant> = None;
        // Settlements left from a broken stream go out first.
        if let Err(e) = self.send_pending(&req_tx, &mut acks, false).await {
            return End::Broken(e);
        }
        loop {
            let end = tokio::select! {
                msg = inbound.message() => self.on_message(msg, &mut acks).await,
                ctl = self.ctl.recv() => match ctl {
                    Some(Control::Settle(item)) => {
                        self.pending.push(item);
                        if self.pending.len() >= ack_threshold(&self.options) {
                            flush_at = None;
                            self.send_pending(&req_tx, &mut acks, false).await.err().map(End::Broken)
                        } else {
                            flush_at.get_or_insert(Instant::now() + self.options.ack_linger);
                            None
                        }
                    }
                    Some(Control::Grant(n)) => {
                        let credit = ConsumeRequest { kind: Some(consume_request::Kind::Credit(n)) };
                        req_tx.send(credit).await.err().map(|_| End::Broken(stream_gone()))
                    }
                    Some(Control::Flush(done)) => {
                        flush_at = None;
                        let sent = self.send_pending(&req_tx, &mut acks, true).await;
                        acks.waiters.push((acks.sent, done));
                        acks.wake();
                        sent.err().map(End::Broken)
                    }
                    None => Some(End::Closed),
                },
                () = sleep_until(flush_at), if flush_at.is_some() => {
                    flush_at = None;
                    self.send_pending(&req_tx, &mut acks, false).await.err().map(End::Broken)
                }
            };
            match end {
                None => {}
                Some(End::Closed) => {
                    self.finish(&req_tx, &mut inbound, &mut acks).await;
                    return End::Closed;
                }
                Some(End::Broken(e)) => {
                    acks.fail(&e);
                    return End::Broken(e);
                }
            }
        }
    }

    /// One message from the server; `Some` ends the session.
    async fn on_message(
        &mut self,
        msg: Result<Option<ConsumeResponse>, tonic::Status>,
        acks: &mut AckState,
    ) -> Option<End> {
        match msg {
            Ok(Some(ConsumeResponse { kind })) => match kind {
                Some(consume_response::Kind::Delivery(d)) => {
                    // The consumer was dropped: leave (pending settlements go first;
                    // this delivery is redelivered to another member).
                    self.out.send(Ok(d.into())).await.err().map(|_| End::Closed)
                }
                Some(consume_response::Kind::Ack(a)) => {
                    if !a.unknown.is_empty() {
                        tracing::debug!(unknown = ?a.unknown, "settled deliveries that were not in flight");
                    }
                    acks.answered += 1;
                    acks.wake();
                    None
                }
                None => None,
            },
            Ok(None) => Some(End::Broken(Error::Unavailable {
                message: "the server ended the consume stream".into(),
                leader_hint: None,
            })),
            Err(status) => Some(End::Broken(Error::from(status))),
        }
    }

    /// Sends the pending settlements; `wait`: someone waits for their
    /// answer (a flush), so the server records them without lingering.
    async fn send_pending(
        &mut self,
        req_tx: &mpsc::Sender<ConsumeRequest>,
        acks: &mut AckState,
        wait: bool,
    ) -> Result<(), Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let req = ConsumeRequest {
            kind: Some(consume_request::Kind::Ack(AckRequest {
                consumer_group: self.options.group.clone(),
                items: self.pending.clone(),
                wait,
            })),
        };
        req_tx.send(req).await.map_err(|_| stream_gone())?;
        self.pending.clear();
        acks.sent += 1;
        Ok(())
    }

    /// The consumer or every handle is gone: send what is pending, wait
    /// (bounded) for the answers; the caller then ends the stream (the server
    /// detaches the member).
    async fn finish(
        &mut self,
        req_tx: &mpsc::Sender<ConsumeRequest>,
        inbound: &mut Streaming<ConsumeResponse>,
        acks: &mut AckState,
    ) {
        if self.send_pending(req_tx, acks, true).await.is_err() {
            return;
        }
        let until = Instant::now() + CLOSE_GRACE;
        while acks.answered < acks.sent {
            match tokio::time::timeout_at(until, inbound.message()).await {
                Ok(Ok(Some(ConsumeResponse {
                    kind: Some(consume_response::Kind::Ack(_)),
                }))) => acks.answered += 1,
                Ok(Ok(Some(_))) => {} // a delivery nobody will read: redelivered later
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break,
            }
        }
    }
}

/// How long a closing consumer waits for its last acks to be answered.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Ack requests sent and answered on one stream. The server answers each
/// `AckRequest` once, in completion order, so counts are all that match up.
#[derive(Default)]
struct AckState {
    sent: u64,
    answered: u64,
    /// Flushes waiting until `answered` reaches their mark.
    waiters: Vec<(u64, oneshot::Sender<Result<(), Error>>)>,
}

impl AckState {
    fn wake(&mut self) {
        debug_assert!(self.answered <= self.sent, "more ack answers than requests");
        let answered = self.answered;
        let (done, waiting) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|(mark, _)| *mark <= answered);
        self.waiters = waiting;
        for (_, w) in done {
            let _ = w.send(Ok(()));
        }
    }

    fn fail(&mut self, e: &Error) {
        for (_, w) in self.waiters.drain(..) {
            let _ = w.send(Err(e.clone()));
        }
    }
}

fn stream_gone() -> Error {
    Error::Transport {
        message: "the consume stream's request side closed".into(),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => futures::future::pending().await,
    }
}
