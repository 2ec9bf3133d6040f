//! The `api` fuzz target: arbitrary sequences of embedding-API calls, as a multi-tenant server
//! (or a careless one) might make them. Instances of two modules in two stores, calls with
//! arbitrary values (function references from any store included), table and global reads
//! and writes, host functions that return, return the wrong thing, fail or panic, calls from
//! another thread, and handles dropped in any order.
//!
//! What must hold, whatever the sequence: no crash and no panic out of Kiln (errors are
//! `Err`s); every function reference Kiln hands out belongs to the store it came from; and
//! every call through a table answers what one of the functions that can be there computes
//! (`x + 1` or `3 * x`), never anything else (another tenant's code, a stale slot).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use arbitrary::Unstructured;
use kiln_runtime::{
    CallError, Extern, Func, FuncType, Global, GlobalType, HostError, Instance, Module, RefType, Region, RegionConfig,
    Store, Table, TableType, Val, ValType,
};

/// Module "a": exports a table, globals, a memory and functions that move references around.
const EXPORTER: &str = r#"(module
  (type $i2i (func (param i32) (result i32)))
  (type $l2l (func (param i64) (result i64)))
  (import "host" "hook" (func $hook (param i32) (result i32)))
  (table $t (export "table") 4 16 funcref)
  (global $g (export "g") (mut funcref) (ref.null func))
  (global $n (export "n") (mut i32) (i32.const 0))
  (memory (export "mem") 1 2)
  (func $inc (export "inc") (type $i2i) (i32.add (local.get 0) (i32.const 1)))
  (func $id64 (export "id64") (type $l2l) (local.get 0))
  (elem declare func $inc $id64)
  (func (export "give_inc") (result funcref) (ref.func $inc))
  (func (export "give_typed") (result (ref $l2l)) (ref.func $id64))
  (func (export "is_null") (param funcref) (result i32) (ref.is_null (local.get 0)))
  (func (export "call_typed") (param (ref $l2l)) (param i64) (result i64) (call_ref $l2l (local.get 1) (local.get 0)))
  (func (export "put") (param i32 funcref) (table.set $t (local.get 0) (local.get 1)))
  (func (export "call_at") (param i32 i32) (result i32) (call_indirect $t (type $i2i) (local.get 1) (local.get 0)))
  (func (export "stash") (param funcref) (global.set $g (local.get 0)))
  (func (export "hook") (param i32) (result i32) (call $hook (local.get 0)))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "poke") (param i32 i32) (i32.store (local.get 0) (local.get 1)))
  (func (export "boom") (unreachable)))"#;

/// Module "b": imports the host's table and global and "a"'s function and table, and fills them.
const IMPORTER: &str = r#"(module
  (type $i2i (func (param i32) (result i32)))
  (import "host" "table" (table $h 4 funcref))
  (import "host" "slot" (global $s (mut funcref)))
  (import "a" "inc" (func $inc (type $i2i)))
  (import "a" "table" (table $a 4 funcref))
  (elem declare func $inc $mine)
  (func $mine (type $i2i) (i32.mul (local.get 0) (i32.const 3)))
  (func (export "spread") (param i32)
    (table.set $h (local.get 0) (ref.func $mine))
    (table.set $a (local.get 0) (ref.func $inc))
    (global.set $s (ref.func $mine)))
  (func (export "via_host") (param i32 i32) (result i32) (call_indirect $h (type $i2i) (local.get 1) (local.get 0)))
  (func (export "via_a") (param i32 i32) (result i32) (call_indirect $a (type $i2i) (local.get 1) (local.get 0)))
  (func (export "via_slot") (param i32) (result i32)
    (table.set $h (i32.const 0) (global.get $s))
    (call_indirect $h (type $i2i) (local.get 0) (i32.const 0))))"#;

/// The two modules, compiled once per process.
fn modules() -> &'static (tempfile::TempDir, Module, Module) {
    static MODULES: OnceLock<(tempfile::TempDir, Module, Module)> = OnceLock::new();
    MODULES.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let load = |name: &str, wat: &str| {
            let so = dir.path().join(format!("{name}.so"));
            super::targets::compiler().compile_to_file(wat.as_bytes(), &so).expect("the api modules compile");
            // SAFETY: compiled just above, into a private directory.
            unsafe { Module::load(&so) }.expect("the api modules load")
        };
        let exporter = load("exporter", EXPORTER);
        let importer = load("importer", IMPORTER);
        (dir, exporter, importer)
    })
}

/// What the runs on this thread reached (for the fixed-input test: the target must get past
/// instantiation and into calls, tables and cross-store refusals).
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Instances made.
    pub instances: usize,
    /// Calls that returned.
    pub calls: usize,
    /// Calls through a table (`call_at`, `via_host`, `via_a`, `via_slot`) that returned.
    pub table_calls: usize,
    /// Function references handed out by Kiln.
    pub funcrefs: usize,
    /// Calls or accesses refused for a bad value (wrong type, other store).
    pub refused: usize,
}

thread_local! {
    static STATS: std::cell::Cell<Stats> = const { std::cell::Cell::new(Stats { instances: 0, calls: 0, table_calls: 0, funcrefs: 0, refused: 0 }) };
}

/// What the runs on this thread reached so far.
pub fn stats() -> Stats {
    STATS.get()
}

fn count(f: impl FnOnce(&mut Stats)) {
    let mut stats = STATS.get();
    f(&mut stats);
    STATS.set(stats);
}

/// What the host function `hook` does, chosen by the input.
static HOOK_MODE: AtomicU8 = AtomicU8::new(0);

fn hook() -> Func {
    let ty = FuncType { params: vec![ValType::I32], results: vec![ValType::I32] };
    Func::new_host(ty, |_, params, results| {
        let Val::I32(x) = params[0] else { return Err(HostError("a non-i32 argument".into())) };
        match HOOK_MODE.load(Ordering::Relaxed) % 5 {
            0 => results[0] = Val::I32(x.wrapping_add(1)),
            1 => results[0] = Val::I64(0x4242_4242),
            2 => std::panic::panic_any(vec![0u8; 4096]),
            3 => return Err(HostError("the host said no".into())),
            _ => results[0] = Val::FuncRef(None),
        }
        Ok(())
    })
}

/// One tenant world: a store with its host objects.
struct World {
    store: Store,
    table: Table,
    slot: Global,
}

impl World {
    fn new() -> World {
        let store = Store::new();
        let ty = TableType { element: RefType::FUNCREF, minimum: 4, maximum: None, table64: false };
        let table = Table::new(&store, ty, Val::FuncRef(None)).expect("a host table");
        let slot = Global::new(
            &store,
            GlobalType { content: ValType::Ref(RefType::FUNCREF), mutable: true },
            Val::FuncRef(None),
        )
        .expect("a host global");
        World { store, table, slot }
    }
}

/// What the fuzzed program holds.
struct State {
    worlds: [World; 2],
    /// Instances and the world they were made in.
    instances: Vec<(usize, Instance)>,
    /// Values seen (function references from any store among them).
    values: Vec<Val>,
}

/// Checks the promises on one successful call's results.
fn check_results(func: &Func, args: &[Val], results: &[Val], state: &mut State) {
    let store = func.store().expect("calls go to wasm functions");
    for value in args.iter().chain(results) {
        if let Val::FuncRef(Some(f)) = value {
            let owner = f.store().expect("only wasm functions are references");
            assert!(owner.same(&store), "a function reference crossed stores");
        }
    }
    // Every i32 -> i32 function reachable through a table computes x + 1 or 3 * x, and the
    // only (i64) -> i64 function is the identity.
    match (args, results) {
        ([Val::I32(_), Val::I32(x)], [Val::I32(r)]) => {
            assert!(*r == x.wrapping_add(1) || *r == x.wrapping_mul(3), "a call through a table answered {r} for {x}");
        }
        ([Val::FuncRef(_), Val::I64(x)], [Val::I64(r)]) => {
            assert_eq!(r, x, "call_ref reached something but the identity")
        }
        _ => {}
    }
    count(|s| {
        s.calls += 1;
        s.table_calls += matches!(args, [Val::I32(_), Val::I32(_)]) as usize;
        s.funcrefs += results.iter().filter(|v| matches!(v, Val::FuncRef(Some(_)))).count();
    });
    state.values.extend(results.iter().cloned());
}

fn arbitrary_val(u: &mut Unstructured<'_>, state: &State) -> arbitrary::Result<Val> {
    Ok(match u.int_in_range(0..=5)? {
        0 => Val::I32(u.arbitrary()?),
        1 => Val::I64(u.arbitrary()?),
        2 => Val::ExternRef(u.arbitrary()?),
        3 => Val::FuncRef(None),
        4 if !state.values.is_empty() => state.values[u.choose_index(state.values.len())?].clone(),
        _ => Val::F64(u.arbitrary()?),
    })
}

fn instantiate(u: &mut Unstructured<'_>, state: &mut State, region: &Region) -> arbitrary::Result<()> {
    let (_, exporter, importer) = modules();
    let w = u.int_in_range(0..=1)?;
    let world = &state.worlds[w];
    let imports = if u.arbitrary()? {
        vec![Extern::Func(hook())]
    } else {
        // Host objects and an exporter from any world: a foreign one must be refused.
        let host_world = &state.worlds[u.int_in_range(0..=1)?];
        let exporters: Vec<&Instance> = state
            .instances
            .iter()
            .filter(|(_, i)| std::ptr::eq(i.module().metadata(), exporter.metadata()))
            .map(|(_, i)| i)
            .collect();
        if exporters.is_empty() {
            return Ok(());
        }
        let a = exporters[u.choose_index(exporters.len())?];
        vec![
            Extern::Table(host_world.table.clone()),
            Extern::Global(host_world.slot.clone()),
            a.get_export("inc").expect("inc"),
            a.get_export("table").expect("table"),
        ]
    };
    let module = if imports.len() == 1 { exporter } else { importer };
    match Instance::new_in_store(region, &world.store, module, &imports) {
        Ok(instance) => {
            count(|s| s.instances += 1);
            state.instances.push((w, instance));
        }
        Err(kiln_runtime::InstantiationError::Unlinkable { .. }) => count(|s| s.refused += 1),
        Err(_) => {}
    }
    Ok(())
}

fn call(u: &mut Unstructured<'_>, state: &mut State, on_another_thread: bool) -> arbitrary::Result<()> {
    if state.instances.is_empty() {
        return Ok(());
    }
    let (_, instance) = &state.instances[u.choose_index(state.instances.len())?];
    let exports: Vec<Func> = instance
        .exports()
        .into_iter()
        .filter_map(|(_, e)| if let Extern::Func(f) = e { Some(f) } else { None })
        .collect();
    let func = exports[u.choose_index(exports.len())?].clone();
    let mut args = Vec::new();
    for &param in &func.ty().params {
        // Mostly values of the right kind, sometimes anything.
        args.push(match (param, u.int_in_range(0..=3)?) {
            (ValType::I32, 0..=2) => Val::I32(u.int_in_range(-2..=20)?),
            (ValType::I64, 0..=2) => Val::I64(u.arbitrary()?),
            _ => arbitrary_val(u, state)?,
        });
    }
    HOOK_MODE.store(u.arbitrary()?, Ordering::Relaxed);
    let outcome = if on_another_thread {
        let (f, a) = (func.clone(), args.clone());
        std::thread::scope(|s| s.spawn(move || f.call(&a)).join().expect("a call on another thread does not panic"))
    } else {
        func.call(&args)
    };
    match outcome {
        Ok(results) => check_results(&func, &args, &results, state),
        Err(CallError::BadArguments(_)) => count(|s| s.refused += 1),
        Err(CallError::Trap(_) | CallError::Busy | CallError::NoSuchExport(_)) => {}
    }
    Ok(())
}

fn touch_tables_and_globals(u: &mut Unstructured<'_>, state: &mut State) -> arbitrary::Result<()> {
    let w = u.int_in_range(0..=1)?;
    let value = arbitrary_val(u, state)?;
    let index = u.int_in_range(0..=5)?;
    let (table, slot) = (state.worlds[w].table.clone(), state.worlds[w].slot.clone());
    let mut store = state.worlds[w].store.clone();
    let seen = match u.int_in_range(0..=5)? {
        0 => table.get(index).ok(),
        1 => table.set(index, value.clone()).ok().map(|()| value),
        2 => table.grow(u.int_in_range(0..=3)?, value).ok().map(|_| Val::FuncRef(None)),
        3 => slot.get().ok(),
        4 => slot.set(value.clone()).ok().map(|()| value),
        _ => {
            // An exported table or global of some instance.
            if state.instances.is_empty() {
                return Ok(());
            }
            let (_, instance) = &state.instances[u.choose_index(state.instances.len())?];
            store = instance.store();
            match instance.get_export(if u.arbitrary()? { "table" } else { "g" }) {
                Some(Extern::Table(t)) => t.set(index, value.clone()).ok().and(t.get(index).ok()),
                Some(Extern::Global(g)) => g.set(value).ok().and(g.get().ok()),
                _ => None,
            }
        }
    };
    if let Some(Val::FuncRef(Some(f))) = &seen {
        assert!(f.store().expect("a wasm function").same(&store), "a foreign function in a store's table or global");
        state.values.push(Val::FuncRef(Some(f.clone())));
    }
    Ok(())
}

/// Runs the program `data` describes; whether it did anything.
pub fn run(data: &[u8]) -> bool {
    thread_local! {
        static REGION: Region = Region::new(RegionConfig { slots: 8, ..Default::default() }).expect("a region");
    }
    let mut u = Unstructured::new(data);
    let mut state = State { worlds: [World::new(), World::new()], instances: Vec::new(), values: Vec::new() };
    let hook_panics = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = REGION.with(|region| -> arbitrary::Result<usize> {
        let mut steps = 0;
        while !u.is_empty() && steps < 200 {
            steps += 1;
            match u.int_in_range(0..=9)? {
                0 | 1 => instantiate(&mut u, &mut state, region)?,
                2..=4 => call(&mut u, &mut state, false)?,
                5 => call(&mut u, &mut state, true)?,
                6 => touch_tables_and_globals(&mut u, &mut state)?,
                7 if !state.instances.is_empty() => {
                    let i = u.choose_index(state.instances.len())?;
                    state.instances.swap_remove(i);
                }
                8 => {
                    // Drop a world's own handles: its instances and host objects live on
                    // through what still refers to them.
                    let w = u.int_in_range(0..=1)?;
                    state.worlds[w] = World::new();
                }
                _ => {
                    if let Some(i) = state.values.len().checked_sub(1) {
                        state.values.swap_remove(u.choose_index(i + 1)?);
                    }
                }
            }
        }
        Ok(steps)
    });
    std::panic::set_hook(hook_panics);
    let steps = result.unwrap_or(0);
    drop(state);
    steps > 0
}
