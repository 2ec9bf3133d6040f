//! The differential with Wasmtime as the reference, for what wasmi 0.36 does not run:
//! exception handling, SIMD, tail calls, memory64, extended constants and wide arithmetic, all
//! on at once in the generated modules. Behind the `wasmtime` feature (a large dependency), run
//! by the `wasmtime-differential` binary.
//!
//! As with wasmi: each export is called with fixed arguments, and the results, traps and
//! uncaught exceptions (with their payloads), the exported globals and memories must agree.

use std::path::Path;

use anyhow::{Context, Result};
use wasmtime::{Config, Engine, Extern, Instance, Module, Store, StoreLimits, StoreLimitsBuilder, Val, ValType};

use crate::{
    arg_bits, digest, generate_wasm3, on_kiln, verdict, wasm3_features, wasm3_gc_features, Observation, Verdict,
};

/// Wasmtime configured for the same proposals.
pub fn engine() -> Result<Engine> {
    let mut config = Config::new();
    config
        .wasm_exceptions(true)
        .wasm_simd(true)
        .wasm_relaxed_simd(false)
        .wasm_tail_call(true)
        .wasm_memory64(true)
        .wasm_extended_const(true)
        .wasm_wide_arithmetic(true)
        .wasm_multi_memory(true)
        .wasm_function_references(true)
        .wasm_gc(true)
        .cranelift_nan_canonicalization(false);
    Ok(Engine::new(&config)?)
}

/// The name Kiln's side gives a trap (see `on_kiln::trap_kind`).
fn trap_kind(trap: wasmtime::Trap) -> String {
    use wasmtime::Trap as T;
    match trap {
        T::StackOverflow => "call stack exhausted",
        T::MemoryOutOfBounds => "out of bounds memory access",
        T::HeapMisaligned => "unaligned atomic",
        T::TableOutOfBounds => "table out of bounds",
        T::IndirectCallToNull => "uninitialized element",
        T::BadSignature => "indirect call type mismatch",
        T::IntegerOverflow => "integer overflow",
        T::IntegerDivisionByZero => "integer divide by zero",
        T::BadConversionToInteger => "invalid conversion to integer",
        T::UnreachableCodeReached => "unreachable",
        T::NullReference => "null reference",
        T::CastFailure => "cast failure",
        T::ArrayOutOfBounds => "out of bounds array access",
        other => return format!("{other:?}"),
    }
    .to_string()
}

/// A value's bits (a reference as 1 if it is not null), as Kiln's side counts them.
fn raw(val: &Val) -> u128 {
    match val {
        Val::I32(v) => *v as u32 as u128,
        Val::I64(v) => *v as u64 as u128,
        Val::F32(v) => *v as u128,
        Val::F64(v) => *v as u128,
        Val::V128(v) => v.as_u128(),
        Val::FuncRef(f) => f.is_some() as u128,
        Val::ExternRef(r) => r.is_some() as u128,
        Val::AnyRef(r) => r.is_some() as u128,
        Val::ExnRef(r) => r.is_some() as u128,
        Val::ContRef(r) => r.is_some() as u128,
    }
}

/// How a call or instantiation that failed is seen: a trap, an uncaught exception with its
/// payload, or (stack exhaustion) nothing comparable.
fn failure(store: &mut Store<StoreLimits>, err: wasmtime::Error) -> Result<std::result::Result<String, Observation>> {
    if err.is::<wasmtime::ThrownException>() {
        let exn = store.take_pending_exception().context("a thrown exception is pending")?;
        let fields: Vec<Val> = exn.fields(&mut *store)?.collect();
        let payload: Vec<u128> = fields.iter().map(raw).collect();
        return Ok(Ok(format!("exception {payload:?}")));
    }
    // Engines size their GC heaps differently.
    if err.is::<wasmtime::GcHeapOutOfMemory<()>>() {
        return Ok(Err(Observation::Inconclusive("GC heap exhausted".into())));
    }
    match err.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::StackOverflow) => Ok(Err(Observation::Inconclusive("stack exhausted".into()))),
        Some(wasmtime::Trap::AllocationTooLarge) => Ok(Err(Observation::Inconclusive("GC heap exhausted".into()))),
        Some(&trap) => Ok(Ok(trap_kind(trap))),
        None => Err(anyhow::Error::from(err).context("wasmtime")),
    }
}

/// Wasmtime's observation of `wasm`.
pub fn observe(engine: &Engine, wasm: &[u8]) -> Result<Observation> {
    let module = Module::new(engine, wasm).map_err(anyhow::Error::from).context("wasmtime rejects the module")?;
    let limits = StoreLimitsBuilder::new()
        .memory_size(crate::MAX_MEMORY_BYTES as usize)
        .table_elements(crate::MAX_TABLE_ELEMENTS as usize)
        .build();
    let mut store = Store::new(engine, limits);
    store.limiter(|limits| limits);
    let instance = match Instance::new(&mut store, &module, &[]) {
        Ok(instance) => instance,
        Err(err) => {
            return Ok(match failure(&mut store, err)? {
                Ok(kind) => Observation::InstantiationTrap(kind),
                Err(stop) => stop,
            })
        }
    };
    let mut exports: Vec<(String, Extern)> =
        instance.exports(&mut store).map(|e| (e.name().to_string(), e.into_extern())).collect();
    exports.sort_by(|a, b| a.0.cmp(&b.0));
    let (mut calls, mut globals, mut memories) = (Vec::new(), Vec::new(), Vec::new());
    for (_, export) in exports {
        match export {
            Extern::Func(func) => {
                let ty = func.ty(&store);
                let args: Vec<Val> = ty
                    .params()
                    .enumerate()
                    .map(|(i, t)| match t {
                        ValType::I32 => Val::I32(arg_bits(i) as u32 as i32),
                        ValType::I64 => Val::I64(arg_bits(i) as i64),
                        ValType::F32 => Val::F32(arg_bits(i) as u32),
                        ValType::F64 => Val::F64(arg_bits(i)),
                        other => Val::default_for_ty(&other).unwrap_or(Val::null_func_ref()),
                    })
                    .collect();
                let mut results: Vec<Val> =
                    ty.results().map(|t| Val::default_for_ty(&t).unwrap_or(Val::I32(0))).collect();
                match func.call(&mut store, &args, &mut results) {
                    Ok(()) => calls.push(Ok(results.iter().map(raw).collect())),
                    Err(err) => match failure(&mut store, err)? {
                        Ok(kind) => calls.push(Err(kind)),
                        Err(stop) => return Ok(stop),
                    },
                }
            }
            Extern::Global(global) => globals.push(raw(&global.get(&mut store))),
            Extern::Memory(memory) => {
                let bytes = memory.data(&store);
                memories.push((bytes.len(), digest(bytes)));
            }
            _ => {}
        }
    }
    Ok(Observation::Ran { calls, globals, memories })
}

/// Runs module `seed` (with GC operators if `gc`) on Kiln and Wasmtime and compares.
pub fn check(seed: u64, gc: bool, engine: &Engine, dir: &Path, region: &kiln_runtime::Region) -> Result<Verdict> {
    let wasm = generate_wasm3(seed, gc)?;
    let reference = observe(engine, &wasm).with_context(|| format!("seed {seed}"))?;
    let features = if gc { wasm3_gc_features() } else { wasm3_features() };
    let kiln = on_kiln::observe_with(&wasm, features, dir, region).with_context(|| format!("seed {seed}"))?;
    Ok(verdict(kiln, reference, seed))
}
