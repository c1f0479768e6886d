//! `runrate.v1.AdminService`: operator calls, behind a bearer token.

use std::sync::Arc;

use std::time::SystemTime;

use tonic::{Request, Response, Status, service::Interceptor};

use crate::{
    auth::{AdminToken, generate_secret},
    domain::webhooks::{WebhookSecret, WebhookUrl},
    loading::FigureLoader,
    mail::FeedbackDesk,
    newsletter::Newsletter,
    outbox::Wakeup,
    store::Store,
};

use crate::sealing::TokenSealer;

use super::{
    ApiError, from_proto,
    from_proto::filter::parse_subscriber_filter,
    from_proto::paging::{Order, PageRequest, fingerprint},
    pb::runrate::v1::{self as api, admin_service_server::AdminService},
    to_proto,
};

pub struct AdminApi {
    loader: Arc<FigureLoader>,
    store: Arc<Store>,
    tokens: Arc<TokenSealer>,
    newsletter: Arc<Newsletter>,
    feedback: Arc<FeedbackDesk>,
    /// Wakes the outbox worker when failed deliveries become due again.
    outbox: Wakeup,
}

impl AdminApi {
    pub fn new(
        loader: Arc<FigureLoader>,
        store: Arc<Store>,
        tokens: Arc<TokenSealer>,
        newsletter: Arc<Newsletter>,
        feedback: Arc<FeedbackDesk>,
        outbox: Wakeup,
    ) -> Self {
        AdminApi {
            loader,
            store,
            tokens,
            newsletter,
            feedback,
            outbox,
        }
    }
}

/// Lets a request through only with `authorization: Bearer <admin token>`.
#[derive(Clone)]
pub struct RequireAdminToken(pub Arc<AdminToken>);

impl Interceptor for RequireAdminToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request.metadata().get("authorization");
        match AdminToken::presented(header.and_then(|value| value.to_str().ok())) {
            Some(token) if self.0.matches(token) => Ok(request),
            Some(_) => Err(Status::unauthenticated("the admin token is wrong")),
            None => Err(Status::unauthenticated(
                "admin calls need `authorization: Bearer <token>` (the token is admin.token, or the admin-token file in the data directory)",
            )),
        }
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn check_figures_file(
        &self,
        request: Request<api::CheckFiguresFileRequest>,
    ) -> Result<Response<api::CheckFiguresFileResponse>, Status> {
        let request = request.into_inner();
        let file_name = from_proto::file_name(&request.file_name)?;
        let errors = self.loader.check(file_name, &request.content);
        Ok(Response::new(api::CheckFiguresFileResponse {
            errors: errors.iter().map(to_proto::figures_file_error).collect(),
        }))
    }

    async fn load_figures(
        &self,
        request: Request<api::LoadFiguresRequest>,
    ) -> Result<Response<api::LoadFiguresResponse>, Status> {
        let request = request.into_inner();
        let file_name = from_proto::file_name(&request.file_name)?;
        let summary = self
            .loader
            .load(file_name, &request.content, request.validate_only)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(to_proto::load_summary(
            &summary,
            &self.loader.snapshot().load(),
            request.validate_only,
        )))
    }

    async fn list_subscribers(
        &self,
        request: Request<api::ListSubscribersRequest>,
    ) -> Result<Response<api::ListSubscribersResponse>, Status> {
        let request = request.into_inner();
        let state = parse_subscriber_filter(&request.filter)?;
        let page = PageRequest::parse(
            request.page_size,
            &request.page_token,
            fingerprint(&["subscribers", &request.filter]),
            &self.tokens,
        )?;
        let after = page.after_number()?.unwrap_or(0);
        // One more than the page, to know whether another page follows.
        let limit = u32::try_from(page.size + 1).unwrap_or(u32::MAX);
        let subscribers = self
            .store
            .list_subscribers(state, after, limit)
            .await
            .map_err(ApiError::from)?;
        let (subscribers, next_page_token) = page.page(subscribers.into_iter(), |subscriber| {
            subscriber.id.to_string()
        });
        Ok(Response::new(api::ListSubscribersResponse {
            subscribers: subscribers.iter().map(to_proto::subscriber).collect(),
            next_page_token,
        }))
    }

    async fn get_delivery_report(
        &self,
        request: Request<api::GetDeliveryReportRequest>,
    ) -> Result<Response<api::DeliveryReport>, Status> {
        let name = request.into_inner().name;
        let load_name = from_proto::parse_delivery_report_name("name", &name)?;
        let not_found = || {
            ApiError::not_found(
                "runrate.v1.DeliveryReport",
                match &load_name {
                    None => "loads/-/deliveryReport (no load has sent updates yet)".to_owned(),
                    Some(_) => name.clone(),
                },
            )
        };
        let load = match load_name {
            Some(load) => Some(load),
            None => self
                .store
                .latest_notified_load()
                .await
                .map_err(ApiError::from)?,
        }
        .ok_or_else(not_found)?;
        let report = self
            .store
            .delivery_report(load)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(not_found)?;
        Ok(Response::new(to_proto::delivery_report(&report)))
    }

    async fn retry_failed_deliveries(
        &self,
        request: Request<api::RetryFailedDeliveriesRequest>,
    ) -> Result<Response<api::RetryFailedDeliveriesResponse>, Status> {
        let name = request.into_inner().load;
        let load = if name.is_empty() {
            None
        } else {
            Some(from_proto::parse_load_name("load", &name)?)
        };
        let retried = self
            .store
            .retry_failed_deliveries(load, SystemTime::now())
            .await
            .map_err(ApiError::from)?;
        if retried > 0 {
            self.outbox.wake();
        }
        Ok(Response::new(api::RetryFailedDeliveriesResponse {
            deliveries_retried: i64::try_from(retried).unwrap_or(i64::MAX),
        }))
    }

    async fn ingest_mail_feedback(
        &self,
        request: Request<api::IngestMailFeedbackRequest>,
    ) -> Result<Response<api::IngestMailFeedbackResponse>, Status> {
        let message = request.into_inner().message;
        let outcome = self.feedback.take(&message).await.map_err(ApiError::from)?;
        Ok(Response::new(to_proto::feedback_outcome(&outcome)))
    }

    async fn lift_suppression(
        &self,
        request: Request<api::LiftSuppressionRequest>,
    ) -> Result<Response<api::LiftSuppressionResponse>, Status> {
        let email = request.into_inner().email;
        let (previous, now) = self
            .newsletter
            .lift_suppression(&email)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(api::LiftSuppressionResponse {
            email,
            previous_state: to_proto::subscriber_state(previous) as i32,
            state: to_proto::subscriber_state(now) as i32,
        }))
    }

    async fn create_webhook(
        &self,
        request: Request<api::CreateWebhookRequest>,
    ) -> Result<Response<api::Webhook>, Status> {
        let requested = request.into_inner().webhook.unwrap_or_default();
        let url = WebhookUrl::parse(&requested.url)
            .map_err(|err| ApiError::invalid("webhook.url", err.to_string()))?;
        let secret = if requested.secret.is_empty() {
            generate_secret().map_err(ApiError::Internal)?
        } else {
            requested.secret
        };
        let secret = WebhookSecret::parse(&secret)
            .map_err(|err| ApiError::invalid("webhook.secret", err.to_string()))?;
        let webhook = self
            .store
            .create_webhook(&url, &secret, SystemTime::now())
            .await
            .map_err(ApiError::from)?;
        tracing::info!(webhook = webhook.id, origin = %url.origin(), "registered a webhook");
        Ok(Response::new(api::Webhook {
            secret: secret.expose().to_owned(),
            ..to_proto::webhook(&webhook)
        }))
    }

    async fn list_webhooks(
        &self,
        request: Request<api::ListWebhooksRequest>,
    ) -> Result<Response<api::ListWebhooksResponse>, Status> {
        let request = request.into_inner();
        let page = PageRequest::parse(
            request.page_size,
            &request.page_token,
            fingerprint(&["webhooks"]),
            &self.tokens,
        )?;
        // At most MAX_WEBHOOKS of them: read whole, paged here.
        let webhooks = self.store.list_webhooks().await.map_err(ApiError::from)?;
        let (webhooks, next_page_token) =
            page.page_by(webhooks.into_iter(), Order::Ascending, |webhook| webhook.id)?;
        Ok(Response::new(api::ListWebhooksResponse {
            webhooks: webhooks.iter().map(to_proto::webhook).collect(),
            next_page_token,
        }))
    }

    async fn delete_webhook(
        &self,
        request: Request<api::DeleteWebhookRequest>,
    ) -> Result<Response<()>, Status> {
        let name = request.into_inner().name;
        let id = from_proto::parse_webhook_name("name", &name)?;
        let deleted = self
            .store
            .delete_webhook(id, SystemTime::now())
            .await
            .map_err(ApiError::from)?;
        if !deleted {
            return Err(ApiError::not_found("runrate.v1.Webhook", name).into());
        }
        tracing::info!(webhook = id, "deleted a webhook");
        Ok(Response::new(()))
    }
}
