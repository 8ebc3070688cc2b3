//! Recurring schedules: each occurrence is published into the schedule's
//! topic as one event (message_id `<schedule_id>@<nominal time>`), consumed
//! like any other.

use chronos_proto::v1::event_service_client::EventServiceClient;
use chronos_proto::v1::{
    CreateScheduleRequest, DeleteScheduleRequest, GetScheduleRequest, ListSchedulesRequest,
    PauseScheduleRequest, ResumeScheduleRequest, Schedule, ScheduleInfo, TriggerScheduleRequest,
    UpdateScheduleRequest,
};

use crate::{Client, Error};

/// The schedule a change answered with; the server always sends it.
fn info(schedule: Option<ScheduleInfo>) -> Result<ScheduleInfo, Error> {
    schedule.ok_or_else(|| Error::Protocol("the server answered without the schedule".into()))
}

impl Client {
    /// Creates a schedule. Retried safely: the same schedule again is
    /// answered as it is (`existed`); other content under its id is
    /// `Error::AlreadyExists`.
    pub async fn create_schedule(&self, schedule: Schedule) -> Result<(ScheduleInfo, bool), Error> {
        let req = CreateScheduleRequest {
            schedule: Some(schedule),
        };
        let resp = self
            .call(true, |ch| {
                let req = req.clone();
                async move { EventServiceClient::new(ch).create_schedule(req).await }
            })
            .await?;
        Ok((info(resp.schedule)?, resp.existed))
    }

    /// Replaces everything but the id; the next occurrence is computed afresh.
    pub async fn update_schedule(&self, schedule: Schedule) -> Result<ScheduleInfo, Error> {
        let req = UpdateScheduleRequest {
            schedule: Some(schedule),
        };
        let resp = self
            .call(true, |ch| {
                let req = req.clone();
                async move { EventServiceClient::new(ch).update_schedule(req).await }
            })
            .await?;
        info(resp.schedule)
    }

    pub async fn pause_schedule(&self, schedule_id: &str) -> Result<ScheduleInfo, Error> {
        let req = PauseScheduleRequest {
            schedule_id: schedule_id.into(),
        };
        let resp = self
            .call(true, |ch| {
                let req = req.clone();
                async move { EventServiceClient::new(ch).pause_schedule(req).await }
            })
            .await?;
        info(resp.schedule)
    }

    pub async fn resume_schedule(&self, schedule_id: &str) -> Result<ScheduleInfo, Error> {
        let req = ResumeScheduleRequest {
            schedule_id: schedule_id.into(),
        };
        let resp = self
            .call(true, |ch| {
                let req = req.clone();
                async move { EventServiceClient::new(ch).resume_schedule(req).await }
            })
            .await?;
        info(resp.schedule)
    }

    /// Deletes a schedule; `NotFound` if there is none. A retry whose earlier
    /// attempt went unanswered and finds none counts as done: that attempt
    /// may have deleted it.
    pub async fn delete_schedule(&self, schedule_id: &str) -> Result<(), Error> {
        let req = DeleteScheduleRequest {
            schedule_id: schedule_id.into(),
        };
        let mut attempts = 0;
        let deleted = self
            .call(true, |ch| {
                attempts += 1;
                let req = req.clone();
                async move { EventServiceClient::new(ch).delete_schedule(req).await }
            })
            .await;
        match deleted {
            Err(Error::NotFound { .. }) if attempts > 1 => Ok(()),
            other => other.map(drop),
        }
    }

    /// A schedule with its next `upcoming` occurrences (0: the server's default).
    pub async fn get_schedule(
        &self,
        schedule_id: &str,
        upcoming: u32,
    ) -> Result<ScheduleInfo, Error> {
        let req = GetScheduleRequest {
            schedule_id: schedule_id.into(),
            upcoming,
        };
        let resp = self
            .call(true, |ch| {
                let req = req.clone();
                async move { EventServiceClient::new(ch).get_schedule(req).await }
            })
            .await?;
        info(resp.schedule)
    }

    /// Every schedule (of `topic`, unless empty), paging to the end.
    pub async fn list_schedules(&self, topic: &str) -> Result<Vec<ScheduleInfo>, Error> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let req = ListSchedulesRequest {
                topic: topic.into(),
                page_token: page_token.clone(),
                page_size: 0,
            };
            let page = self
                .call(true, |ch| {
                    let req = req.clone();
                    async move { EventServiceClient::new(ch).list_schedules(req).await }
                })
                .await?;
            out.extend(page.schedules);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = page.next_page_token;
        }
    }

    /// Publishes one extra occurrence now; returns its message_id. Not
    /// retried (a retry would publish another).
    pub async fn trigger_schedule(&self, schedule_id: &str) -> Result<String, Error> {
        let req = TriggerScheduleRequest {
            schedule_id: schedule_id.into(),
        };
        let resp = self
            .call(false, |ch| {
                let req = req.clone();
                async move { EventServiceClient::new(ch).trigger_schedule(req).await }
            })
            .await?;
        Ok(resp.message_id)
    }
}
