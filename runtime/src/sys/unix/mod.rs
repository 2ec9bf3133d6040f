//! Linux implementations: memory mappings, the dynamic loader, event descriptors.

pub mod dl;
mod event;
pub mod mmap;

pub use event::{drain_eventfd, eventfd, signal_eventfd};
