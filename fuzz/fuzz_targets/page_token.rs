//! Any text as a page token, and as a sealed token's payload: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (i32, &str)| {
    let (page_size, text) = input;
    runrate::grpc::fuzzing::page_token(text, page_size);
});
