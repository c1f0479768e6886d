//! The gRPC edge: generated protobuf types; requests parsed into domain values
//! (`from_proto`) and domain values built into responses (`to_proto`); every error's one
//! mapping to `tonic::Status` (`error`); and the services, thin handlers over those.

mod admin_service;
mod error;
mod from_proto;
mod metrics_service;
mod newsletter_service;
pub mod proto_json;
mod to_proto;
mod watch;

pub use admin_service::{AdminApi, RequireAdminToken};
pub use error::ApiError;
pub use metrics_service::MetricsApi;
pub use newsletter_service::NewsletterApi;
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

/// Entry points for the fuzz targets under `fuzz/`: the parsers of what anonymous
/// clients send. Each must return (with an error, as a rule) and never panic.
#[doc(hidden)]
pub mod fuzzing {
    use std::sync::Arc;

    use super::{
        from_proto::{filter, paging::PageRequest},
        watch,
    };
    use crate::sealing::TokenSealer;

    const KEY: [u8; 32] = [42; 32];

    pub fn filters(text: &str) {
        let _ = filter::parse_fact_filter(text);
        let _ = filter::parse_subscriber_filter(text);
    }

    /// `text` as a page token, and as the payload of one this server sealed.
    pub fn page_token(text: &str, page_size: i32) {
        let sealer = TokenSealer::new(KEY);
        let fingerprint = super::from_proto::paging::fingerprint(&["fuzz"]);
        let _ = PageRequest::parse(page_size, text, fingerprint.clone(), &sealer);
        let sealed = sealer.seal("page", text);
        if let Ok(page) = PageRequest::parse(page_size, &sealed, fingerprint, &sealer) {
            let _ = page.after_number();
        }
    }

    /// `text` as a resume token, and as the payload of one this server sealed, checked
    /// against a store with no loads.
    pub fn resume_token(text: &str) {
        let sealer = Arc::new(TokenSealer::new(KEY));
        let sealed = sealer.seal("resume", text);
        for token in [text, sealed.as_str()] {
            watch::check_resume_token_for_fuzzing(token, sealer.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use prost_reflect::{DescriptorPool, Value};

    use super::pb;

    /// The `google.api.resource` pattern of a message, if it declares one.
    fn resource_pattern(pool: &DescriptorPool, message: &str) -> Option<String> {
        let resource = pool.get_extension_by_name("google.api.resource")?;
        let options = pool.get_message_by_name(message)?.options();
        if !options.has_extension(&resource) {
            return None;
        }
        let descriptor = options.get_extension(&resource);
        let patterns = descriptor.as_message()?.get_field_by_name("pattern")?;
        let first = patterns.as_list()?.first()?.as_str()?.to_owned();
        Some(first)
    }

    #[test]
    fn every_resource_declares_its_type_and_name_pattern_and_requests_require_names() {
        let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).expect("the protos");
        for (message, pattern) in [
            ("runrate.v1.Provider", "providers/{provider}"),
            ("runrate.v1.Metric", "metrics/{metric}"),
            ("runrate.v1.Period", "periods/{period}"),
            (
                "runrate.v1.Fact",
                "providers/{provider}/periods/{period}/facts/{metric}",
            ),
            ("runrate.v1.Load", "loads/{load}"),
            ("runrate.v1.Webhook", "webhooks/{webhook}"),
            ("runrate.v1.Subscriber", "subscribers/{subscriber}"),
            ("runrate.v1.DeliveryReport", "loads/{load}/deliveryReport"),
        ] {
            assert_eq!(
                resource_pattern(&pool, message).as_deref(),
                Some(pattern),
                "{message}"
            );
        }
        let behavior = pool
            .get_extension_by_name("google.api.field_behavior")
            .expect("the field_behavior extension");
        for request in ["GetProviderRequest", "GetFactRequest", "GetLoadRequest"] {
            let field = pool
                .get_message_by_name(&format!("runrate.v1.{request}"))
                .and_then(|message| message.get_field_by_name("name"))
                .expect("a name field");
            let options = field.options();
            let behaviors = options.get_extension(&behavior);
            let required = pool
                .get_enum_by_name("google.api.FieldBehavior")
                .and_then(|kind| kind.get_value_by_name("REQUIRED"))
                .expect("REQUIRED")
                .number();
            assert!(
                behaviors
                    .as_list()
                    .is_some_and(|list| list.contains(&Value::EnumNumber(required))),
                "{request}.name is REQUIRED: {behaviors:?}"
            );
        }
    }
}
