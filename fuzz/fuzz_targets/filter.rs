//! Any text as a ListFacts or ListSubscribers filter: an answer, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    runrate::grpc::fuzzing::filters(text);
});
