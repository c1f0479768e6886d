//! The gRPC edge: generated protobuf types, conversions to and from the domain, request
//! parsing (names, page tokens, filters), errors as `tonic::Status`, and the services.

mod admin_service;
mod convert;
mod error;
mod filter;
mod metrics_service;
mod names;
mod newsletter_service;
mod paging;
mod tokens;
mod watch;

pub use admin_service::{AdminApi, RequireAdminToken};
pub use error::ApiError;
pub use metrics_service::MetricsApi;
pub use newsletter_service::NewsletterApi;
pub use tokens::TokenSealer;
pub use watch::{MetricsWithWatch, WatchConfig, WatchHub};

/// Generated protobuf code. Only this module includes it.
pub mod pb {
    pub mod google {
        pub mod r#type {
            tonic::include_proto!("google.r#type");
        }
    }
    pub mod runrate {
        pub mod v1 {
            tonic::include_proto!("runrate.v1");
        }
    }

    /// Descriptors of runrate's protos and their imports, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("runrate_descriptor");
}
