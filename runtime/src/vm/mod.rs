//! The machine layer: what compiled code and the runtime share (instances' and stores'
//! internals, the storage VM contexts point at, GC and exception heaps, libcalls). It imports
//! nothing from the public API above it (checked by `cargo xtask deps`); the handle types
//! (`Instance`, `Func`, `Store`, ...) are built on it.

pub(crate) mod collect;
pub(crate) mod exceptions;
pub(crate) mod gc;
pub(crate) mod instance;
pub(crate) mod libcalls;
pub(crate) mod storage;
pub(crate) mod store;
