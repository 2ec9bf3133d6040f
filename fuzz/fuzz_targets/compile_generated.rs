//! wasm-smith modules with every supported proposal: each one compiles.
#![no_main]

kiln_fuzz::target!(compile_generated);
