//! Arbitrary sequences of embedding-API calls across two stores and threads: no crash, no
//! cross-store reference, no call reaching another tenant's code.
#![no_main]

kiln_fuzz::target!(api);
