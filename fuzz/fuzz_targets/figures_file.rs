//! Any bytes as a figures file: parsed and checked, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runrate::{
    domain::{Metric, ResourceId},
    figures_file::{KnownDefinitions, ParseLimits, parse},
};

/// The seed's providers and no metrics: enough for facts to reach the value checks.
struct SeedProviders;

impl KnownDefinitions for SeedProviders {
    fn known_provider(&self, id: &ResourceId) -> bool {
        ["aws", "azure", "google-cloud"].contains(&id.as_str())
    }
    fn known_metric(&self, _: &ResourceId) -> Option<&Metric> {
        None
    }
}

fuzz_target!(|bytes: &[u8]| {
    let _ = parse("fuzz.toml", bytes, &SeedProviders, ParseLimits::default());
});
