//! Any text as a resume token, and as a sealed token's payload: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    runrate::grpc::fuzzing::resume_token(text);
});
