//! Linux implementations: memory mappings, mapping checked objects, event descriptors, signal
//! handlers and the interrupted machine context, what `perf` needs.

mod event;
pub mod mmap;
pub mod object;
pub mod perf;
pub mod signals;

pub use event::{drain_eventfd, eventfd, signal_eventfd};
