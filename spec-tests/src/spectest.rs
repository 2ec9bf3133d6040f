//! The `spectest` host module the official scripts import from.

use std::collections::HashMap;

use anyhow::Result;
use kiln_runtime::{
    Extern, Func, FuncType, Global, GlobalType, Memory, MemoryType, RefType, Store, Table, TableType, Val, ValType,
};

fn print(params: &[ValType]) -> Extern {
    let ty = FuncType { params: params.to_vec(), results: vec![] };
    Extern::Func(Func::new_host(ty, |_caller, _params, _results| Ok(())))
}

fn global(store: &Store, content: ValType, value: Val) -> Result<Extern> {
    Ok(Extern::Global(Global::new(store, GlobalType { content, mutable: false }, value)?))
}

/// `spectest`'s exports, by name, in `store` (the script's: its tables and unshared memory
/// can only be imported there).
pub fn exports(store: &Store) -> Result<HashMap<&'static str, Extern>> {
    use ValType::*;
    let memory =
        |shared: bool| MemoryType { minimum: 1, maximum: Some(2), memory64: false, shared, page_size_log2: 16 };
    Ok(HashMap::from([
        ("print", print(&[])),
        ("print_i32", print(&[I32])),
        ("print_i64", print(&[I64])),
        ("print_f32", print(&[F32])),
        ("print_f64", print(&[F64])),
        ("print_i32_f32", print(&[I32, F32])),
        ("print_f64_f64", print(&[F64, F64])),
        ("global_i32", global(store, I32, Val::I32(666))?),
        ("global_i64", global(store, I64, Val::I64(666))?),
        ("global_f32", global(store, F32, Val::F32(666.6f32.to_bits()))?),
        ("global_f64", global(store, F64, Val::F64(666.6f64.to_bits()))?),
        ("table", Extern::Table(Table::new(store, table(false), Val::FuncRef(None))?)),
        // The memory64 proposal's spectest adds the same table with 64-bit indices.
        ("table64", Extern::Table(Table::new(store, table(true), Val::FuncRef(None))?)),
        ("memory", Extern::Memory(Memory::new(store, memory(false))?)),
        ("shared_memory", Extern::Memory(Memory::new(store, memory(true))?)),
    ]))
}

fn table(table64: bool) -> TableType {
    TableType { element: RefType::FUNCREF, minimum: 10, maximum: Some(20), table64 }
}
