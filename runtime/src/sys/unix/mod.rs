//! Linux implementations: memory mappings, mapping checked objects, event descriptors, what `perf`
//! needs.

mod event;
pub mod mmap;
pub mod object;
pub mod perf;

pub use event::{drain_eventfd, eventfd, signal_eventfd};
