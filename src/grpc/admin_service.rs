//! `runrate.v1.AdminService`: operator calls, behind a bearer token.

use std::sync::Arc;

use tonic::{Request, Response, Status, service::Interceptor};

use crate::{
    auth::AdminToken,
    loader::{FigureLoader, LoadError},
};

use super::{
    ApiError, convert,
    pb::runrate::v1::{self as api, admin_service_server::AdminService},
};

pub struct AdminApi {
    loader: Arc<FigureLoader>,
}

impl AdminApi {
    pub fn new(loader: Arc<FigureLoader>) -> Self {
        AdminApi { loader }
    }
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

fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn load_figures(
        &self,
        request: Request<api::LoadFiguresRequest>,
    ) -> Result<Response<api::LoadFiguresResponse>, Status> {
        let request = request.into_inner();
        let file_name = request.file_name.trim();
        if file_name.is_empty() || file_name.len() > 255 || file_name.chars().any(char::is_control)
        {
            return Err(ApiError::invalid(
                "file_name",
                "is required: the file's name, at most 255 characters, with no control characters",
            )
            .into());
        }
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
}
