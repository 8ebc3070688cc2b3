//! The connection: which endpoint the client talks to, and the retry loop
//! every call goes through (backoff, next endpoint, leader redirect).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chronos_proto::v1::admin_service_client::AdminServiceClient;
use chronos_proto::v1::event_service_client::EventServiceClient;
use chronos_proto::v1::{
    CancelBatchRequest, CancelRequest, CancelResult, ClusterStatusRequest, DescribeEventRequest,
    DescribeEventResponse, PublishRequest,
};
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::credentials::{Bearer, Conn, Tls};
use crate::event::{Event, Published};
use crate::retry::{Budget, RetryPolicy};
use crate::Error;

/// How a [`Client`] connects and retries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Bounds for retrying idempotent calls that failed with `Unavailable` or a
    /// transport error.
    pub retry: RetryPolicy,
    /// How long one TCP/HTTP2 connect may take.
    pub connect_timeout: Duration,
    /// How long one attempt of a unary call (or the opening of a stream) may
    /// take before it counts as failed (`DeadlineExceeded`, retried like
    /// `Unavailable`).
    pub request_timeout: Duration,
    /// TLS to the server; `host:port` addresses then mean `https://`.
    pub tls: Option<Tls>,
    /// Bearer token sent with every call.
    pub token: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(30),
            tls: None,
            token: None,
        }
    }
}

/// A connection to a Chronos cluster through its public gRPC API.
///
/// Cheap to clone (clones share the connection). Every idempotent call is
/// retried on `Unavailable`, a transport error or a timeout, with backoff, on the next
/// endpoint — or on the node the server named as leader (metadata
/// `chronos-leader`, resolved to an address with `ClusterStatus`) — within
/// [`ClientOptions::retry`]. Publishing is idempotent because the server
/// deduplicates by `(topic, message_id)`: a retried publish that had in fact
/// been stored answers with the original's partition and offset and
/// `duplicate: true`.
///
/// ```no_run
/// # async fn demo() -> Result<(), chronos_client::Error> {
/// use chronos_client::{Client, EventBuilder};
/// use std::time::Duration;
///
/// let client = Client::connect(["http://127.0.0.1:9000"]).await?;
/// let event = EventBuilder::new("orders", "order-42")
///     .payload("hello")
///     .key("customer-7")
///     .due_in(Duration::from_secs(60))
///     .build();
/// let published = client.publish(event).await?;
/// println!("partition {} offset {}", published.partition, published.offset);
/// client.cancel("orders", "order-42", "customer-7").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    options: ClientOptions,
    bearer: Bearer,
    current: Mutex<Current>,
}

/// The channel calls use now; `generation` changes each time it is replaced,
/// so concurrent failures of one channel move the client on only once.
#[derive(Clone)]
struct Current {
    generation: u64,
    index: usize,
    channel: Conn,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.endpoints)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the first reachable of `addrs` (`http://host:port`, or
    /// `host:port`), tried in order. The others are fallbacks for retries.
    pub async fn connect<I, S>(addrs: I) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::connect_with(addrs, ClientOptions::default()).await
    }

    /// [`Client::connect`] with explicit options.
    pub async fn connect_with<I, S>(addrs: I, options: ClientOptions) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let secure = options.tls.is_some();
        let endpoints: Vec<String> = addrs
            .into_iter()
            .map(|a| normalize(a.as_ref(), secure))
            .collect();
        let bearer = Bearer::new(options.token.as_deref())?;
        if endpoints.is_empty() {
            return Err(Error::InvalidEndpoint {
                addr: String::new(),
                message: "no endpoint given".into(),
            });
        }
        let mut last = None;
        for (index, addr) in endpoints.iter().enumerate() {
            let endpoint = endpoint(addr, &options)?;
            match endpoint.connect().await {
                Ok(channel) => {
                    let current = Current {
                        generation: 0,
                        index,
                        channel: Conn::new(channel, bearer.clone()),
                    };
                    return Ok(Client {
                        inner: Arc::new(Inner {
                            endpoints,
                            options,
                            bearer,
                            current: Mutex::new(current),
                        }),
                    });
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "connect failed; trying the next endpoint");
                    last = Some(Error::from(e));
                }
            }
        }
        Err(last.unwrap_or(Error::Closed("no endpoint")))
    }

    /// The endpoints this client was given, normalised to `http://host:port`.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        self.inner.options.retry
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.options.request_timeout
    }

    /// The channel to use now and its generation.
    pub(crate) fn channel(&self) -> (u64, Conn) {
        let cur = self.current();
        (cur.generation, cur.channel)
    }

    fn current(&self) -> Current {
        match self.inner.current.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, generation: u64, index: usize, channel: Channel) {
        let channel = Conn::new(channel, self.inner.bearer.clone());
        let mut cur = match self.inner.current.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if cur.generation == generation {
            *cur = Current {
                generation: generation + 1,
                index,
                channel,
            };
        }
    }

    /// After `err` on the channel of `generation`: move to the node the
    /// server named as leader, else to the next endpoint (lazily connected,
    /// so an unreachable one fails the next attempt, which moves on again).
    pub(crate) async fn fail_over(&self, generation: u64, err: &Error) {
        let cur = self.current();
        if cur.generation != generation {
            return; // another caller already moved on
        }
        if let Some(leader) = err.leader_hint() {
            if let Some(addr) = self.leader_addr(cur.channel.clone(), leader).await {
                if let Ok(ep) = endpoint(&addr, &self.inner.options) {
                    tracing::debug!(leader, %addr, "redirecting to the leader");
                    self.replace(generation, cur.index, ep.connect_lazy());
                    return;
                }
            }
        }
        let index = (cur.index + 1) % self.inner.endpoints.len();
        let addr = &self.inner.endpoints[index];
        if let Ok(ep) = endpoint(addr, &self.inner.options) {
            tracing::debug!(%addr, error = %err, "moving to the next endpoint");
            self.replace(generation, index, ep.connect_lazy());
        }
    }

    /// The API address of node `leader`, from `ClusterStatus`.
    async fn leader_addr(&self, channel: Conn, leader: u64) -> Option<String> {
        let status = AdminServiceClient::new(channel)
            .cluster_status(ClusterStatusRequest {})
            .await
            .ok()?
            .into_inner();
        let node = status.nodes.into_iter().find(|n| n.id == leader)?;
        let secure = self.inner.options.tls.is_some();
        (!node.api_addr.is_empty()).then(|| normalize(&node.api_addr, secure))
    }

    /// Runs `call` on the current channel; when `idempotent`, retries
    /// retryable failures within the retry policy, failing over between tries.
    pub(crate) async fn call<T, F, Fut>(&self, idempotent: bool, mut call: F) -> Result<T, Error>
    where
        F: FnMut(Conn) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut budget = Budget::new(self.retry_policy());
        loop {
            let (generation, channel) = self.channel();
            let timeout = self.request_timeout();
            let err = match tokio::time::timeout(timeout, call(channel)).await {
                Ok(Ok(resp)) => return Ok(resp.into_inner()),
                Ok(Err(status)) => Error::from(status),
                Err(_) => Error::DeadlineExceeded {
                    message: format!("no answer within {timeout:?}"),
                },
            };
            if !idempotent || !err.is_retryable() {
                return Err(err);
            }
            let Some(wait) = budget.next_wait() else {
                tracing::debug!(attempts = budget.attempts(), error = %err, "giving up");
                return Err(err);
            };
            self.fail_over(generation, &err).await;
            tokio::time::sleep(wait).await;
        }
    }

    /// Publishes one event and waits until it is durable.
    ///
    /// For many events from many tasks, a [`Producer`](crate::Producer)
    /// batches them into far fewer RPCs.
    pub async fn publish(&self, event: Event) -> Result<Published, Error> {
        self.publish_request(event, false).await
    }

    /// Publishes `event`, moving an already pending event with the same
    /// `(topic, message_id)` to the new due time instead of deduplicating.
    pub async fn reschedule(&self, event: Event) -> Result<Published, Error> {
        self.publish_request(event, true).await
    }

    async fn publish_request(&self, event: Event, reschedule: bool) -> Result<Published, Error> {
        let req = PublishRequest {
            event: Some(event),
            reschedule,
        };
        let resp = self
            .call(true, |ch| {
                let req = req.clone();
                async move { EventServiceClient::new(ch).publish(req).await }
            })
            .await?;
        Ok(Published::from(resp))
    }

    /// Stops a pending event from firing. `key` is the routing key it was
    /// published with (`""` if none). `NotFound` if unknown,
    /// `FailedPrecondition` if it already fired; cancelling twice is fine.
    pub async fn cancel(&self, topic: &str, message_id: &str, key: &str) -> Result<(), Error> {
        let req = CancelRequest {
            topic: topic.into(),
            message_id: message_id.into(),
            key: key.into(),
        };
        self.call(true, |ch| {
            let req = req.clone();
            async move { EventServiceClient::new(ch).cancel(req).await }
        })
        .await?;
        Ok(())
    }

    /// Stops many pending events from firing, in one call: one result per
    /// cancel in order, each with its [`CancelStatus`](crate::proto::CancelStatus)
    /// (an unknown or fired event is a result here, not an error). Each
    /// partition's share is decided at once; retried within the policy
    /// (a retry finds the ones already done `ALREADY_CANCELLED`).
    pub async fn cancel_batch(
        &self,
        cancels: Vec<CancelRequest>,
    ) -> Result<Vec<CancelResult>, Error> {
        let req = CancelBatchRequest { cancels };
        let resp = self
            .call(true, |ch| {
                let req = req.clone();
                async move { EventServiceClient::new(ch).cancel_batch(req).await }
            })
            .await?;
        Ok(resp.results)
    }

    /// Where one event stands: pending, fired or cancelled, and once fired
    /// where each consumer group of its topic is with it (waiting, in
    /// flight, acked, dead...). `key` as for [`Client::cancel`]. `NotFound`
    /// if unknown or past the dedup window.
    pub async fn describe(
        &self,
        topic: &str,
        message_id: &str,
        key: &str,
    ) -> Result<DescribeEventResponse, Error> {
        let req = DescribeEventRequest {
            topic: topic.into(),
            message_id: message_id.into(),
            key: key.into(),
        };
        let resp = self
            .call(true, |ch| {
                let req = req.clone();
                async move { EventServiceClient::new(ch).describe_event(req).await }
            })
            .await?;
        Ok(resp)
    }
}

/// `host:port` → `http://host:port` (`https://` with TLS); anything with a
/// scheme is kept.
fn normalize(addr: &str, secure: bool) -> String {
    let addr = addr.trim();
    if addr.contains("://") {
        addr.to_string()
    } else if secure {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    }
}

fn endpoint(addr: &str, options: &ClientOptions) -> Result<Endpoint, Error> {
    let ep = Endpoint::from_shared(addr.to_string()).map_err(|e| Error::InvalidEndpoint {
        addr: addr.to_string(),
        message: e.to_string(),
    })?;
    let ep = match &options.tls {
        None => ep,
        Some(tls) => ep
            .tls_config(tls.config())
            .map_err(|e| Error::InvalidOption {
                field: "tls".into(),
                message: e.to_string(),
            })?,
    };
    Ok(ep
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        // Notices a dead peer on an idle consume stream.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_a_scheme() {
        assert_eq!(normalize("127.0.0.1:9000", false), "http://127.0.0.1:9000");
        assert_eq!(normalize("127.0.0.1:9000", true), "https://127.0.0.1:9000");
        assert_eq!(normalize(" http://a:1 ", true), "http://a:1");
    }

    #[tokio::test]
    async fn no_endpoint_is_an_error() {
        let err = Client::connect(Vec::<String>::new()).await.unwrap_err();
        assert!(matches!(err, Error::InvalidEndpoint { .. }));
    }

    #[tokio::test]
    async fn unreachable_endpoints_are_a_transport_error() {
        // Port 1 on loopback: nothing listens there.
        let err = Client::connect(["127.0.0.1:1"]).await.unwrap_err();
        assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    }
}
