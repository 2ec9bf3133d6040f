//! Kiln's runtime: loads shared objects made by `kiln-compiler` and runs them in reusable
//! memory slots.
//!
//! The lifecycle, one module each: [`load`] a `.so` ([`Module`]), reserve a [`Region`] of slots,
//! [`Instance::new`] (instantiate), call exports through the [`context`] switch, isolate
//! [`traps`], and tear down when the instance is dropped.
//!
//! This crate never depends on Cranelift.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod context;
pub mod externs;
pub mod host;
pub mod instance;
mod libcalls;
pub mod load;
mod parking;
pub mod region;
pub mod store;
mod sys;
pub mod traps;
mod types;
pub mod values;

pub use externs::{Extern, Func, Global, Memory, Table};
pub use host::Caller;
pub use instance::{CallError, Instance, InstantiationError, TypedFunc, WasmParams, WasmResults, WasmTy};
pub use kiln_abi::{FuncType, GlobalType, HeapType, ImportKind, MemoryType, RefType, TableType, TrapCode, ValType};
pub use load::{LoadError, Module};
pub use region::{Region, RegionConfig, RegionError};
pub use store::{InterruptHandle, Store};
pub use traps::{HostError, Trap};
pub use values::Val;
