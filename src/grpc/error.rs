//! Errors of the gRPC layer and their one mapping to `tonic::Status`, with the richer
//! error model: `BadRequest` field violations, `ResourceInfo` and an `ErrorInfo` reason.

use std::collections::HashMap;

use tonic::{Code, Status};

use crate::newsletter::NewsletterError;
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every error runrate returns.
pub const ERROR_DOMAIN: &str = "runrate.v1";

/// Errors of a rejected figures file written into the status message and its details.
const MAX_ERRORS_IN_MESSAGE: usize = 20;
const MAX_ERRORS_IN_DETAILS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is malformed; `field` is its path, e.g. `page_token`.
    #[error("{field}: {description}")]
    InvalidArgument { field: String, description: String },
    /// A well-formed name of something runrate does not have.
    #[error("{resource_name} not found")]
    NotFound {
        resource_type: &'static str,
        resource_name: String,
    },
    /// The request cannot be served in the current state; `reason` is the ErrorInfo reason.
    #[error("{message}")]
    FailedPrecondition {
        reason: &'static str,
        message: String,
    },
    /// Over a rate limit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A figures file failed its checks: one entry per error.
    #[error("the figures file was rejected")]
    FiguresRejected { errors: Vec<String> },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        ApiError::InvalidArgument {
            field: field.to_owned(),
            description: description.into(),
        }
    }

    pub fn not_found(resource_type: &'static str, resource_name: impl Into<String>) -> Self {
        ApiError::NotFound {
            resource_type,
            resource_name: resource_name.into(),
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::InvalidArgument { field, description } => {
                let message = format!("{field}: {description}");
                let mut details = ErrorDetails::with_bad_request_violation(field, description);
                details.set_error_info("INVALID_ARGUMENT", ERROR_DOMAIN, HashMap::new());
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::NotFound {
                resource_type,
                resource_name,
            } => {
                let message = format!("{resource_name} not found");
                let mut details = ErrorDetails::with_resource_info(
                    resource_type,
                    resource_name.clone(),
                    "",
                    message.clone(),
                );
                details.set_error_info(
                    "RESOURCE_NOT_FOUND",
                    ERROR_DOMAIN,
                    HashMap::from([("resource".to_owned(), resource_name)]),
                );
                Status::with_error_details(Code::NotFound, message, details)
            }
            ApiError::FailedPrecondition { reason, message } => {
                let details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new());
                Status::with_error_details(Code::FailedPrecondition, message, details)
            }
            ApiError::ResourceExhausted(message) => {
                let mut details =
                    ErrorDetails::with_error_info("RATE_LIMITED", ERROR_DOMAIN, HashMap::new());
                details.set_retry_info(Some(std::time::Duration::from_secs(60)));
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            ApiError::FiguresRejected { errors } => {
                // Status messages and details travel in HTTP/2 trailers, whose size peers
                // limit: a file with thousands of errors must not make the answer unreadable.
                let mut message = format!(
                    "the figures file was rejected with {} error(s); nothing was written:\n{}",
                    errors.len(),
                    errors[..errors.len().min(MAX_ERRORS_IN_MESSAGE)].join("\n")
                );
                if errors.len() > MAX_ERRORS_IN_MESSAGE {
                    message.push_str(&format!(
                        "\n… and {} more",
                        errors.len() - MAX_ERRORS_IN_MESSAGE
                    ));
                }
                let mut details = ErrorDetails::new();
                details.set_error_info(
                    "FIGURES_FILE_REJECTED",
                    ERROR_DOMAIN,
                    HashMap::from([("error_count".to_owned(), errors.len().to_string())]),
                );
                for error in errors.into_iter().take(MAX_ERRORS_IN_DETAILS) {
                    details.add_bad_request_violation("content", error);
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "internal error");
                Status::internal("internal error; the server log has the details")
            }
        }
    }
}

impl From<NewsletterError> for ApiError {
    fn from(err: NewsletterError) -> Self {
        let message = err.to_string();
        match err {
            NewsletterError::InvalidEmail(_) => ApiError::invalid("email", message),
            NewsletterError::UnsupportedLanguage(_) => ApiError::invalid("language", message),
            NewsletterError::UnknownProvider(_) => ApiError::invalid("providers", message),
            NewsletterError::RateLimited => ApiError::ResourceExhausted(message),
            NewsletterError::UnknownToken => ApiError::invalid("token", message),
            NewsletterError::ExpiredToken => ApiError::FailedPrecondition {
                reason: "TOKEN_EXPIRED",
                message,
            },
            NewsletterError::Store(err) => ApiError::Internal(err.into()),
        }
    }
}
