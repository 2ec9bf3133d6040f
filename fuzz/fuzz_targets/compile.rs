//! Any bytes, as a binary or text module: compiled, or refused with an error.
#![no_main]

kiln_fuzz::target!(compile);
