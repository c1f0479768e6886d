//! `runrate.v1.AdminService`: operator calls, behind a bearer token.

use std::sync::Arc;

use std::time::SystemTime;

use tonic::{Request, Response, Status, service::Interceptor};

use crate::{
    auth::AdminToken,
    domain::LoadId,
    loader::{FigureLoader, LoadError},
    outbox::Wakeup,
    store::{Store, StoreError},
};

use super::{
    ApiError, convert,
    filter::parse_subscriber_filter,
    names,
    paging::{PageRequest, fingerprint},
    pb::runrate::v1::{self as api, admin_service_server::AdminService},
    tokens::TokenSealer,
};

pub struct AdminApi {
    loader: Arc<FigureLoader>,
    store: Arc<Store>,
    tokens: Arc<TokenSealer>,
    /// Wakes the outbox worker when failed deliveries become due again.
    outbox: Wakeup,
}

impl AdminApi {
    pub fn new(
        loader: Arc<FigureLoader>,
        store: Arc<Store>,
        tokens: Arc<TokenSealer>,
        outbox: Wakeup,
    ) -> Self {
        AdminApi {
            loader,
            store,
            tokens,
            outbox,
        }
    }

    /// The load a request names, or the newest load that sent updates.
    async fn notified_load(&self, name: &str) -> Result<Option<LoadId>, ApiError> {
        if !name.is_empty() {
            return Ok(Some(names::parse_load_name("load", name)?));
        }
        self.store.latest_notified_load().await.map_err(internal)
    }
}

fn internal(err: StoreError) -> ApiError {
    ApiError::Internal(err.into())
}

/// Lets a request through only with `authorization: Bearer <admin token>`.
#[derive(Clone)]
pub struct RequireAdminToken(pub Arc<AdminToken>);

impl Interceptor for RequireAdminToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        match presented {
            Some(token) if self.0.matches(token.trim()) => Ok(request),
            Some(_) => Err(Status::unauthenticated("the admin token is wrong")),
            None => Err(Status::unauthenticated(
                "admin calls need `authorization: Bearer <token>` (the token is admin.token, or the admin-token file in the data directory)",
            )),
        }
    }
}

/// A figures file's name as a request gives it: what its errors and its load are named by.
fn parse_file_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "file_name",
            "is required: the file's name, at most 255 characters, with no control characters",
        ));
    }
    Ok(name)
}

fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn check_figures_file(
        &self,
        request: Request<api::CheckFiguresFileRequest>,
    ) -> Result<Response<api::CheckFiguresFileResponse>, Status> {
        let request = request.into_inner();
        let file_name = parse_file_name(&request.file_name)?;
        let errors = self.loader.check(file_name, &request.content);
        Ok(Response::new(api::CheckFiguresFileResponse {
            errors: errors.iter().map(convert::figures_file_error).collect(),
        }))
    }

    async fn load_figures(
        &self,
        request: Request<api::LoadFiguresRequest>,
    ) -> Result<Response<api::LoadFiguresResponse>, Status> {
        let request = request.into_inner();
        let file_name = parse_file_name(&request.file_name)?;
        let summary = self
            .loader
            .load(file_name, &request.content, request.validate_only)
            .await
            .map_err(|err| match err {
                LoadError::Rejected(errors) => ApiError::FiguresRejected {
                    errors: errors.iter().map(ToString::to_string).collect(),
                },
                LoadError::Store(err) => ApiError::Internal(err.into()),
            })?;
        let snapshot = self.loader.snapshot();
        let load = summary
            .load
            .as_ref()
            .map(|record| convert::load(record, snapshot.load().load_changes(record.id)));
        Ok(Response::new(api::LoadFiguresResponse {
            no_op: !request.validate_only && load.is_none(),
            load,
            facts_added: count(summary.facts_added),
            facts_revised: count(summary.facts_revised),
            facts_unchanged: count(summary.facts_unchanged),
            definitions_changed: count(summary.definitions_changed),
            validate_only: request.validate_only,
        }))
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
            .map_err(internal)?;
        let (subscribers, next_page_token) = page.page(subscribers.into_iter(), |subscriber| {
            subscriber.id.to_string()
        });
        Ok(Response::new(api::ListSubscribersResponse {
            subscribers: subscribers.iter().map(convert::subscriber).collect(),
            next_page_token,
        }))
    }

    async fn get_delivery_report(
        &self,
        request: Request<api::GetDeliveryReportRequest>,
    ) -> Result<Response<api::DeliveryReport>, Status> {
        let name = request.into_inner().load;
        let not_found = || {
            ApiError::not_found(
                "runrate.v1.DeliveryReport",
                if name.is_empty() {
                    "loads/- (no load has sent updates yet)".to_owned()
                } else {
                    format!("{name}/deliveryReport")
                },
            )
        };
        let load = self.notified_load(&name).await?.ok_or_else(not_found)?;
        let report = self
            .store
            .delivery_report(load)
            .await
            .map_err(internal)?
            .ok_or_else(not_found)?;
        Ok(Response::new(convert::delivery_report(&report)))
    }

    async fn retry_failed_deliveries(
        &self,
        request: Request<api::RetryFailedDeliveriesRequest>,
    ) -> Result<Response<api::RetryFailedDeliveriesResponse>, Status> {
        let name = request.into_inner().load;
        let load = if name.is_empty() {
            None
        } else {
            Some(names::parse_load_name("load", &name)?)
        };
        let retried = self
            .store
            .retry_failed_deliveries(load, SystemTime::now())
            .await
            .map_err(internal)?;
        if retried > 0 {
            self.outbox.wake();
        }
        Ok(Response::new(api::RetryFailedDeliveriesResponse {
            deliveries_retried: i64::try_from(retried).unwrap_or(i64::MAX),
        }))
    }
}
