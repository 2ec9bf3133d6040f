//! Linux implementations: memory mappings, the dynamic loader, event descriptors, what `perf`
//! needs.

pub mod dl;
mod event;
pub mod mmap;
pub mod perf;

pub use event::{drain_eventfd, eventfd, signal_eventfd};
