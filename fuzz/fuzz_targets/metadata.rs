//! Any bytes to the module metadata decoder: decoded and cross-checked, or refused.
#![no_main]

kiln_fuzz::target!(metadata);
