//! `runrate.v1.NewsletterService`: sign-up, confirmation, unsubscribe, preferences.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::{
    client_address,
    domain::subscribers::TokenOutcome,
    newsletter::{Newsletter, SUBSCRIBE_ANSWER},
    settings::TrustedProxies,
};

use super::{
    ApiError,
    pb::runrate::v1::{self as api, newsletter_service_server::NewsletterService},
};

pub struct NewsletterApi {
    newsletter: Arc<Newsletter>,
    trusted_proxies: TrustedProxies,
}

impl NewsletterApi {
    pub fn new(newsletter: Arc<Newsletter>, trusted_proxies: TrustedProxies) -> Self {
        NewsletterApi {
            newsletter,
            trusted_proxies,
        }
    }
}

#[tonic::async_trait]
impl NewsletterService for NewsletterApi {
    async fn subscribe(
        &self,
        request: Request<api::SubscribeRequest>,
    ) -> Result<Response<api::SubscribeResponse>, Status> {
        let client = client_address::of_grpc_request(&request, &self.trusted_proxies);
        let request = request.into_inner();
        self.newsletter
            .subscribe(
                client,
                &request.email,
                &request.language,
                &request.providers,
            )
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(api::SubscribeResponse {
            message: SUBSCRIBE_ANSWER.to_owned(),
        }))
    }

    async fn confirm_subscription(
        &self,
        request: Request<api::ConfirmSubscriptionRequest>,
    ) -> Result<Response<api::ConfirmSubscriptionResponse>, Status> {
        let outcome = self
            .newsletter
            .confirm(&request.get_ref().token)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(api::ConfirmSubscriptionResponse {
            already_confirmed: outcome == TokenOutcome::AlreadyApplied,
        }))
    }

    async fn unsubscribe(
        &self,
        request: Request<api::UnsubscribeRequest>,
    ) -> Result<Response<api::UnsubscribeResponse>, Status> {
        let outcome = self
            .newsletter
            .unsubscribe(&request.get_ref().token)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(api::UnsubscribeResponse {
            already_unsubscribed: outcome == TokenOutcome::AlreadyApplied,
        }))
    }

    async fn update_preferences(
        &self,
        request: Request<api::UpdatePreferencesRequest>,
    ) -> Result<Response<api::UpdatePreferencesResponse>, Status> {
        let request = request.into_inner();
        self.newsletter
            .update_preferences(&request.token, &request.providers)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(api::UpdatePreferencesResponse {}))
    }
}
