//! wasm-smith modules run in Kiln and in wasmi: same results, traps, memories, globals.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| -> libfuzzer_sys::Corpus {
    if kiln_fuzzing::targets::differential(data) {
        libfuzzer_sys::Corpus::Keep
    } else {
        libfuzzer_sys::Corpus::Reject
    }
});
