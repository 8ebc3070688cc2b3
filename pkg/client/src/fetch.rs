//! Pulling instead of streaming: [`Client::fetch`] takes up to N deliveries
//! of a group in one `Subscribe` call and [`Client::ack`] settles them by id,
//! for jobs that run, take what is there, and stop.

use std::time::Duration;

use chronos_proto::v1::event_service_client::EventServiceClient;
use chronos_proto::v1::{AckItem, AckRequest, AckResponse, StartPosition, SubscribeRequest};
use futures::TryStreamExt;

use crate::{Client, Delivery, Error};

impl Client {
    /// Up to `max_deliveries` deliveries of `group` on `topic`, as soon as
    /// that many came, or after `wait` with what came by then (a new group
    /// starts with events due from now on). What it returns stays in flight
    /// for the group's ack timeout: settle each with [`Client::ack`]; what is
    /// not acked by then is delivered again. Not retried (a retry would take
    /// other events), but a failure moves the client to its next address.
    /// `wait` must be shorter than the request timeout.
    pub async fn fetch(
        &self,
        group: &str,
        topic: &str,
        max_deliveries: u32,
        wait: Duration,
    ) -> Result<Vec<Delivery>, Error> {
        let invalid = |field: &str, message: String| Error::InvalidOption {
            field: field.into(),
            message,
        };
        if max_deliveries == 0 {
            return Err(invalid("max_deliveries", "must be at least 1".into()));
        }
        let timeout = self.request_timeout();
        let wait_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
        if wait_ms == 0 || wait >= timeout {
            return Err(invalid(
                "wait",
                format!(
                    "{wait:?} must be at least 1 ms and below the request timeout ({timeout:?})"
                ),
            ));
        }
        let req = SubscribeRequest {
            consumer_group: group.into(),
            topic: topic.into(),
            partition_id: None,
            max_inflight: max_deliveries,
            start: StartPosition::Latest as i32,
            start_ts: 0,
            keep_unacked: true,
            max_deliveries,
            max_wait_ms: wait_ms,
        };
        let got = self
            .call(false, |ch| {
                let req = req.clone();
                async move {
                    let stream = EventServiceClient::new(ch).subscribe(req).await?;
                    let all: Vec<_> = stream.into_inner().try_collect().await?;
                    Ok(tonic::Response::new(all))
                }
            })
            .await?;
        Ok(got.into_iter().map(Delivery::from).collect())
    }

    /// Acks `deliveries` of `group` by id (from [`Client::fetch`] or any
    /// member; an earlier attempt's id counts too). Ids no longer in flight
    /// come back in `unknown`. Retried: settling twice is harmless.
    pub async fn ack(&self, group: &str, deliveries: &[Delivery]) -> Result<AckResponse, Error> {
        let req = AckRequest {
            consumer_group: group.into(),
            items: deliveries
                .iter()
                .map(|d| AckItem {
                    delivery_id: d.id.clone(),
                    ..Default::default()
                })
                .collect(),
            wait: true,
        };
        self.call(true, |ch| {
            let req = req.clone();
            async move { EventServiceClient::new(ch).ack(req).await }
        })
        .await
    }
}
