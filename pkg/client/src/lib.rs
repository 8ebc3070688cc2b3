//! The Rust client of Chronos, over its public gRPC API (`chronos.v1`).
//!
//! Owns the client side only: connecting and failing over between endpoints
//! ([`Client`]), batching publishes ([`Producer`]), consuming as a member of
//! a consumer group ([`Consumer`]), replay as a stream ([`Replay`]), admin
//! helpers and a typed [`Error`]. It talks to the server only through the
//! generated stubs of `chronos-proto`; it knows nothing of partitions'
//! internals, and validation stays the server's (its messages name the field).
//!
//! ```no_run
//! use chronos_client::{Client, ConsumerOptions, ProducerOptions, Start};
//! use futures::StreamExt;
//! use std::time::Duration;
//!
//! # async fn demo() -> Result<(), chronos_client::Error> {
//! let client = Client::connect(["http://127.0.0.1:9000"]).await?;
//! let producer = client.producer(ProducerOptions::default());
//! producer
//!     .publish_after("orders", "order-42", "hello", Duration::from_secs(2))
//!     .await?;
//!
//! let mut consumer = client
//!     .consumer(ConsumerOptions {
//!         group: "billing".into(),
//!         topic: "orders".into(),
//!         start: Start::Earliest,
//!         ..Default::default()
//!     })
//!     .await?;
//! if let Some(delivery) = consumer.next().await {
//!     let delivery = delivery?;
//!     consumer.ack(&delivery).await?;
//! }
//! consumer.close().await?;
//! # Ok(()) }
//! ```
//!
//! Guarantees are the server's: a publish is answered once durable; each group
//! gets each event at least once, never before its due time.

mod admin;
mod client;
mod consumer;
mod credentials;
mod error;
mod event;
mod fetch;
mod producer;
mod replay;
mod retry;
mod schedules;

pub use client::{Client, ClientOptions};
pub use consumer::{Acker, Consumer, ConsumerOptions, Delivery, Start};
pub use credentials::{Bearer, Conn, Tls};
pub use error::{Error, LEADER_HINT};
pub use event::{from_ms, to_ms, Event, EventBuilder, Published};
pub use producer::{Producer, ProducerOptions};
pub use replay::{Replay, Replayed};
pub use retry::RetryPolicy;

/// The API's own messages, for admin answers and anything the helpers do not cover.
pub use chronos_proto::v1 as proto;
