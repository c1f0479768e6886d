//! Errors of the gRPC layer and their one mapping to `tonic::Status`, with the richer
//! error model: `BadRequest` field violations, `ResourceInfo` and an `ErrorInfo` reason.

use std::collections::HashMap;

use tonic::{Code, Status};

use crate::{
    loading::LoadError,
    mail::FeedbackError,
    newsletter::NewsletterError,
    store::{CreateWebhookError, StoreError},
};
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every error runrate returns.
pub const ERROR_DOMAIN: &str = "runrate.v1";

/// A status travels in HTTP/2 trailers, which clients cap (grpcio at 8 KB soft and 16 KB
/// hard, hyper at 16 KB): its message, and each text in its details, is cut to this
/// many bytes, and a rejected figures file lists errors in the details only up to
/// `MAX_LISTED_ERRORS_BYTES`. The whole status then stays within about 4 KB, base64
/// of the details included.
const MAX_TEXT_BYTES: usize = 512;
const MAX_LISTED_ERRORS_BYTES: usize = 1536;

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
    /// Lost a race with a concurrent write; trying again will do.
    #[error("{0}")]
    Aborted(String),
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

/// `text` cut to at most `MAX_TEXT_BYTES`, at a character boundary, marked with `…` where
/// cut: texts in a status may echo what a client sent, of any length.
fn bounded(text: impl Into<String>) -> String {
    let mut text = text.into();
    if text.len() > MAX_TEXT_BYTES {
        let mut end = MAX_TEXT_BYTES - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::InvalidArgument { field, description } => {
                let (field, description) = (bounded(field), bounded(description));
                let message = bounded(format!("{field}: {description}"));
                let mut details = ErrorDetails::with_bad_request_violation(field, description);
                details.set_error_info("INVALID_ARGUMENT", ERROR_DOMAIN, HashMap::new());
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::NotFound {
                resource_type,
                resource_name,
            } => {
                let resource_name = bounded(resource_name);
                let message = bounded(format!("{resource_name} not found"));
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
                Status::with_error_details(Code::FailedPrecondition, bounded(message), details)
            }
            ApiError::ResourceExhausted(message) => {
                let mut details =
                    ErrorDetails::with_error_info("RATE_LIMITED", ERROR_DOMAIN, HashMap::new());
                details.set_retry_info(Some(std::time::Duration::from_secs(60)));
                Status::with_error_details(Code::ResourceExhausted, bounded(message), details)
            }
            ApiError::Aborted(message) => {
                let details =
                    ErrorDetails::with_error_info("CONFLICT", ERROR_DOMAIN, HashMap::new());
                Status::with_error_details(Code::Aborted, bounded(message), details)
            }
            ApiError::FiguresRejected { errors } => figures_rejected(errors),
            ApiError::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "internal error");
                Status::internal("internal error; the server log has the details")
            }
        }
    }
}

/// The first errors of a rejected file, as many as fit the budget; the count of all of
/// them, and where to get the rest, in the message and the ErrorInfo.
fn figures_rejected(errors: Vec<String>) -> Status {
    let mut details = ErrorDetails::new();
    let mut listed = 0;
    let mut listed_bytes = 0;
    for error in &errors {
        let error = bounded(error.as_str());
        listed_bytes += error.len();
        if listed > 0 && listed_bytes > MAX_LISTED_ERRORS_BYTES {
            break;
        }
        details.add_bad_request_violation("content", error);
        listed += 1;
    }
    let first = errors.first().map(String::as_str).unwrap_or_default();
    let mut message = format!(
        "the figures file was rejected with {} error(s); nothing was written. First: {first}",
        errors.len()
    );
    if listed < errors.len() {
        message.push_str(&format!(
            " ({listed} listed in the details; AdminService.CheckFiguresFile lists all)"
        ));
    }
    details.set_error_info(
        "FIGURES_FILE_REJECTED",
        ERROR_DOMAIN,
        HashMap::from([
            ("error_count".to_owned(), errors.len().to_string()),
            ("errors_listed".to_owned(), listed.to_string()),
        ]),
    );
    Status::with_error_details(Code::InvalidArgument, bounded(message), details)
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
            NewsletterError::NotSuppressed(_) => ApiError::FailedPrecondition {
                reason: "NOT_SUPPRESSED",
                message,
            },
            NewsletterError::Store(err) => err.into(),
        }
    }
}

impl From<FeedbackError> for ApiError {
    fn from(err: FeedbackError) -> Self {
        match err {
            FeedbackError::Store(err) => err.into(),
            other => ApiError::invalid("message", other.to_string()),
        }
    }
}

impl From<LoadError> for ApiError {
    fn from(err: LoadError) -> Self {
        match err {
            LoadError::Rejected(errors) => ApiError::FiguresRejected {
                errors: errors.iter().map(ToString::to_string).collect(),
            },
            LoadError::Store(err) => err.into(),
        }
    }
}

impl From<CreateWebhookError> for ApiError {
    fn from(err: CreateWebhookError) -> Self {
        match err {
            CreateWebhookError::TooMany => ApiError::ResourceExhausted(err.to_string()),
            CreateWebhookError::Store(err) => err.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            // The loader plans again on a conflict; one that reaches a client means
            // writers kept racing it, and a retry is the answer.
            StoreError::Conflict { .. } => ApiError::Aborted(err.to_string()),
            StoreError::UnsupportedUrl(_)
            | StoreError::Corrupt(_)
            | StoreError::Batch(_)
            | StoreError::Database(_)
            | StoreError::Migration(_)
            | StoreError::SchemaTooNew { .. }
            | StoreError::SchemaBehind { .. } => ApiError::Internal(err.into()),
        }
    }
}
