//! wasm-smith modules run in Kiln and in wasmi: same results, traps, memories, globals.
#![no_main]

kiln_fuzz::target!(differential);
