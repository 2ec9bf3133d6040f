//! Linked wasm-smith modules (B imports A's exports; both share host tables and globals) run in
//! Kiln and in wasmi: same results, traps, memories, globals.
#![no_main]

kiln_fuzz::target!(linked);
