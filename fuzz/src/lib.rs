//! The one shape every target in `fuzz_targets/` has: hand the fuzzer's bytes to the body of the
//! same name in `kiln_fuzzing::targets` and keep the input in the corpus only when the body says
//! it reached the code under test.

pub use kiln_fuzzing;
pub use libfuzzer_sys;

/// `kiln_fuzz::target!(name);` defines the libFuzzer entry point for `kiln_fuzzing::targets::name`.
#[macro_export]
macro_rules! target {
    ($name:ident) => {
        $crate::libfuzzer_sys::fuzz_target!(|data: &[u8]| -> $crate::libfuzzer_sys::Corpus {
            if $crate::kiln_fuzzing::targets::$name(data) {
                $crate::libfuzzer_sys::Corpus::Keep
            } else {
                $crate::libfuzzer_sys::Corpus::Reject
            }
        });
    };
}
