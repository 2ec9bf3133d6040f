//! Kiln's runtime: loads shared objects made by `kiln-compiler` and runs them in reusable
//! memory slots.
//!
//! The lifecycle: load a `.so` ([`Module::load`], or [`Module::load_verified`] for a signed
//! one), reserve a [`Region`] of slots, [`Instance::new`] (instantiate), call exports through
//! the context switch, isolate traps, and tear down when nothing needs the instance any more.
//!
//! Everything public here is safe to call with any arguments, except the items marked
//! `unsafe`, whose contracts are listed in `SECURITY.md` (loading native code is the main one).
//! Internals with preconditions (the context switch, the trap registry, slots, the `vm`
//! layer's instance and store internals) are not public:
//!
//! ```compile_fail
//! let _ = kiln_runtime::traps::registry::register;
//! ```
//!
//! ```compile_fail
//! let _ = kiln_runtime::vm::libcalls::builtins;
//! ```
//!
//! Inside, imports point one way (`cargo xtask deps` checks it): the mechanisms (`sys`,
//! `context`, `traps`), then loading and slots (`load`, `region`), then `vm` (what compiled
//! code and the runtime share about live instances and stores), then the handles re-exported
//! here.
//!
//! This crate never depends on Cranelift.

#![deny(unsafe_op_in_unsafe_fn)]

mod context;
mod dirty;
mod elf_check;
mod exceptions;
mod externs;
mod func;
mod gc;
mod host;
mod instance;
mod limits;
mod load;
mod parking;
mod profiling;
mod region;
mod signature;
mod store;
mod sys;
mod tag;
mod trap;
mod traps;
mod types;
mod values;
mod vm;

pub use exceptions::ExnRef;
pub use externs::{AccessError, Extern, Global, Memory, Table};
pub use func::Func;
pub use gc::{AnyRef, GcObject};
pub use host::{Caller, GuestBytes, Interrupted, Waiter};
pub use instance::{CallError, Instance, InstantiationError, TypedFunc, WasmParams, WasmResults, WasmTy};
pub use kiln_abi::gc::MAX_HOST_VALUE;
pub use kiln_abi::{
    ExportKind, FuncType, GlobalType, HeapType, ImportKind, MemoryType, RefHierarchy, RefType, TableType, TrapCode,
    ValType,
};
pub use limits::{LimitError, StoreLimits};
pub use load::{LoadError, Module, ObjectFile};
pub use profiling::enable_jitdump;
pub use region::{Region, RegionConfig, RegionError, SlotLayout};
pub use signature::{signature_path, PublicKey, SignatureError};
pub use store::{InterruptHandle, Store, StoreBinding};
pub use tag::Tag;
pub use trap::{Exception, Trap};
pub use traps::{Frame, HostError, WasmBacktrace};
pub use values::{Val, ValueError};
pub use vm::store::StoreBusy;

/// What the fuzzers and their tests reach that is not part of the embedding API.
#[doc(hidden)]
pub mod __fuzzing {
    pub use crate::load::decode_metadata;
}
