//! Linux implementations: memory mappings and the dynamic loader.

pub mod dl;
pub mod mmap;
