//! Any bytes as an XBRL instance or inline XBRL filing: facts or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|document: &[u8]| {
    let _ = runrate::sources::xbrl::read(document);
});
