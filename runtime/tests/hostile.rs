//! Hostile tenants and hostile embedder programs: every way a guest, or ordinary safe code
//! using the embedding API, could reach another tenant's code, memory or the host's control
//! flow, as a test. Each one failed (wrong answer, crash, leak or hang) before the fix it
//! names.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use kiln_runtime::{
    AccessError, CallError, Extern, Func, FuncType, Global, GlobalType, HeapType, HostError, Instance,
    InstantiationError, LimitError, Memory, MemoryType, Module, RefType, Region, RegionConfig, Store, StoreLimits,
    Table, TableType, Trap, TrapCode, Val, ValType, ValueError,
};

fn compile(dir: &Path, name: &str, wat: &str, features: kiln_compiler::WasmFeatures) -> PathBuf {
    let out = dir.join(format!("{name}.so"));
    kiln_compiler::Compiler::with_features(features).unwrap().compile_to_file(wat.as_bytes(), &out).unwrap();
    out
}

/// Loads an object these tests compiled.
fn load(dir: &Path, name: &str, wat: &str) -> Module {
    load_with(dir, name, wat, kiln_compiler::default_features())
}

/// Loads an object these tests compiled with the proposals `features`.
fn load_with(dir: &Path, name: &str, wat: &str, features: kiln_compiler::WasmFeatures) -> Module {
    // SAFETY: compiled just now, by this test, into its own temporary directory.
    unsafe { Module::load(compile(dir, name, wat, features)) }.unwrap()
}

/// Default features and custom page sizes.
fn with_custom_page_sizes() -> kiln_compiler::WasmFeatures {
    kiln_compiler::default_features() | kiln_compiler::WasmFeatures::CUSTOM_PAGE_SIZES
}

fn region(slots: usize) -> Region {
    Region::new(RegionConfig { slots, ..RegionConfig::default() }).unwrap()
}

fn trap_code(result: Result<Vec<Val>, CallError>) -> TrapCode {
    match result {
        Err(CallError::Trap(Trap::Wasm { code, .. })) => code,
        other => panic!("expected a wasm trap, got {other:?}"),
    }
}

fn funcref_table(minimum: u64) -> TableType {
    TableType { element: RefType::FUNCREF, minimum, maximum: None, table64: false }
}

/// A tenant whose only function answers `answer`, and which stores that function in the
/// table it imports, at index 0.
fn writer(answer: i32) -> String {
    format!(
        r#"(module
          (import "host" "table" (table 1 funcref))
          (func $answer (result i32) (i32.const {answer}))
          (elem (table 0) (i32.const 0) func $answer)
          (func (export "answer") (result i32) (i32.const {answer})))"#
    )
}

/// The same shape as `writer`, but keeps its function to itself (its table is its own).
fn bystander(answer: i32) -> String {
    format!(
        r#"(module
          (table 1 funcref)
          (func $answer (result i32) (i32.const {answer}))
          (elem (i32.const 0) func $answer)
          (global (mut i64) (i64.const 0x4242424242))
          (func (export "answer") (result i32) (i32.const {answer})))"#
    )
}

const CALLER: &str = r#"(module
  (import "host" "table" (table 1 funcref))
  (type $r (func (result i32)))
  (func (export "call0") (result i32) (call_indirect (type $r) (i32.const 0))))"#;

/// Issue 12.1, as a spec-style script: tenant A stores its function in the host's table, A is
/// dropped, an unrelated tenant takes the slot A's handles freed, and B calls through the
/// table: the answer is A's function's result. Before the fix the table pointed into a slot
/// the new tenant owned, and B ran the new tenant's code on its VM context.
#[test]
fn a_function_in_a_host_table_outlives_its_tenants_handles() {
    let dir = tempfile::tempdir().unwrap();
    let a = load(dir.path(), "a", &writer(42));
    let unrelated = load(dir.path(), "unrelated", &bystander(7));
    let b = load(dir.path(), "b", CALLER);
    let region = region(3);
    let store = Store::new();
    let table = Table::new(&store, funcref_table(1), Val::FuncRef(None)).unwrap();

    let tenant_a = Instance::new_in_store(&region, &store, &a, &[Extern::Table(table.clone())]).unwrap();
    assert_eq!(tenant_a.call("answer", &[]).unwrap(), vec![Val::I32(42)]);
    drop(tenant_a);
    // A lives on in the store (its function is in a table it does not own): its slot is not
    // handed to anyone else while the store lives.
    assert_eq!(store.pinned_instances(), 1);
    let tenant_c = Instance::new(&region, &unrelated, &[]).unwrap();
    assert_eq!(tenant_c.call("answer", &[]).unwrap(), vec![Val::I32(7)]);

    let tenant_b = Instance::new_in_store(&region, &store, &b, &[Extern::Table(table.clone())]).unwrap();
    assert_eq!(tenant_b.call("call0", &[]).unwrap(), vec![Val::I32(42)], "B must run A's function");
    // The host sees a handle, never an address, and it answers the same.
    let Val::FuncRef(Some(f)) = table.get(0).unwrap() else { panic!("the table holds A's function") };
    assert_eq!(f.call(&[]).unwrap(), vec![Val::I32(42)]);

    // When the store's last handle goes, A is torn down and its slot comes back.
    drop((tenant_b, table, f, store));
    drop(tenant_c);
    assert_eq!(region.free_slots(), 3);
}

/// Issue 21.3: B puts its function into A's own exported table; the user drops B and the
/// `Store` handle; C takes a slot. A's `call_indirect` must still run B's code on B's state.
/// Before the fix the keep-alive list lived in the `Store` handle, and A ran C's code.
#[test]
fn an_instance_table_keeps_what_it_references_after_the_store_handle_goes() {
    let dir = tempfile::tempdir().unwrap();
    let a = load(
        dir.path(),
        "a",
        r#"(module
          (table (export "table") 1 funcref)
          (type $r (func (result i32)))
          (func (export "call0") (result i32) (call_indirect (type $r) (i32.const 0))))"#,
    );
    let b = load(dir.path(), "b", &writer(1234));
    let c = load(dir.path(), "c", &bystander(-1));
    let region = region(2);
    let instance_a = {
        let store = Store::new();
        let instance_a = Instance::new_in_store(&region, &store, &a, &[]).unwrap();
        let table = instance_a.get_export("table").unwrap();
        let instance_b = Instance::new_in_store(&region, &store, &b, &[table]).unwrap();
        drop(instance_b);
        instance_a
    }; // the `Store` handle is gone; A's handle keeps the store (and so B) alive
       // The region has two slots, both taken (A, and B pinned to the store): C cannot have B's.
    assert!(matches!(Instance::new(&region, &c, &[]), Err(InstantiationError::NoFreeSlot)));
    assert_eq!(instance_a.call("call0", &[]).unwrap(), vec![Val::I32(1234)]);
    drop(instance_a);
    let tenant_c = Instance::new(&region, &c, &[]).unwrap();
    assert_eq!(tenant_c.call("answer", &[]).unwrap(), vec![Val::I32(-1)]);
}

/// Issue 12.1: a failed instantiation keeps what its segments already wrote (the spec says
/// so), so the instance must live on for the entries it left in a shared table.
#[test]
fn entries_left_by_a_failed_instantiation_stay_callable() {
    let dir = tempfile::tempdir().unwrap();
    let failing = load(
        dir.path(),
        "failing",
        r#"(module
          (import "host" "table" (table 1 funcref))
          (memory 1)
          (func $answer (result i32) (i32.const 99))
          (elem (table 0) (i32.const 0) func $answer)
          (data (i32.const 65535) "too long"))"#,
    );
    let b = load(dir.path(), "b", CALLER);
    let unrelated = load(dir.path(), "unrelated", &bystander(5));
    let region = region(3);
    let store = Store::new();
    let table = Table::new(&store, funcref_table(1), Val::FuncRef(None)).unwrap();
    let failed = Instance::new_in_store(&region, &store, &failing, &[Extern::Table(table.clone())]);
    assert!(matches!(failed, Err(InstantiationError::Trap(Trap::Wasm { code: TrapCode::HeapOutOfBounds, .. }))));
    let _other = Instance::new(&region, &unrelated, &[]).unwrap();
    let caller = Instance::new_in_store(&region, &store, &b, &[Extern::Table(table)]).unwrap();
    assert_eq!(caller.call("call0", &[]).unwrap(), vec![Val::I32(99)]);
}

/// Issue 12.1: a table owned by one store cannot be linked into another (one store's function
/// would run on the other's stack and limits).
#[test]
fn host_tables_and_globals_belong_to_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let a = load(dir.path(), "a", &writer(1));
    let region = region(2);
    let table = Table::new(&Store::new(), funcref_table(1), Val::FuncRef(None)).unwrap();
    let result = Instance::new(&region, &a, &[Extern::Table(table)]);
    match result {
        Err(InstantiationError::Unlinkable { reason, .. }) => assert!(reason.contains("another store"), "{reason}"),
        other => panic!("expected unlinkable, got {:?}", other.map(|_| ())),
    }
    assert_eq!(region.free_slots(), 2);
}

const IDENTITY: &str = r#"(module
  (type $i64 (func (param i64) (result i64)))
  (type $other (func (param i32 i32) (result i32)))
  (func $id (export "id") (type $i64) (local.get 0))
  (elem declare func $id)
  (func (export "give") (result (ref $i64)) (ref.func $id))
  (func (export "call_other") (param (ref $other)) (result i32)
    (call_ref $other (i32.const 1) (i32.const 2) (local.get 0)))
  (func (export "call_any") (param funcref) (result i32) (ref.is_null (local.get 0))))"#;

/// Issue 21.1: a function reference entering wasm is checked against the exact declared type.
/// Before the fix, `call_other` accepted the `(i64) -> i64` function as a `(ref $other)` and
/// called it at the wrong type (the confirmed exploit built a fake funcref from there).
#[test]
fn function_references_from_the_host_are_checked_against_concrete_types() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(dir.path(), "identity", IDENTITY);
    let region = region(2);
    let instance = Instance::new(&region, &module, &[]).unwrap();
    let given = instance.call("give", &[]).unwrap();
    let [Val::FuncRef(Some(id))] = given.as_slice() else { panic!("expected a function, got {given:?}") };
    assert_eq!(id.call(&[Val::I64(-5)]).unwrap(), vec![Val::I64(-5)]);

    let wrong = instance.call("call_other", &[Val::FuncRef(Some(id.clone()))]);
    assert!(matches!(wrong, Err(CallError::BadArguments(_))), "{wrong:?}");
    let null = instance.call("call_other", &[Val::FuncRef(None)]);
    assert!(matches!(null, Err(CallError::BadArguments(_))), "a non-nullable parameter refuses null: {null:?}");
    let not_a_ref = instance.call("call_any", &[Val::I64(0x4242_4242)]);
    assert!(matches!(not_a_ref, Err(CallError::BadArguments(_))));
    assert_eq!(instance.call("call_any", &[Val::FuncRef(Some(id.clone()))]).unwrap(), vec![Val::I32(0)]);

    // Another store's function is refused, whatever its type.
    let elsewhere = Instance::new(&region, &module, &[]).unwrap();
    let result = elsewhere.call("call_any", &[Val::FuncRef(Some(id.clone()))]);
    match result {
        Err(CallError::BadArguments(message)) => assert!(message.contains("another store"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Host functions are not function references.
    let host = Func::new_host(FuncType::default(), |_, _, _| Ok(()));
    assert!(matches!(instance.call("call_any", &[Val::FuncRef(Some(host))]), Err(CallError::BadArguments(_))));
}

/// Issue 21.1: globals and tables made by the host check their values too; `u64::MAX` is not
/// silently a null extern reference.
#[test]
fn host_globals_and_tables_check_their_values() {
    let store = Store::new();
    let funcref_global = GlobalType { content: ValType::Ref(RefType::FUNCREF), mutable: true };
    let err =
        Global::new(&store, funcref_global, Val::I64(0x4242_4242_4242)).err().expect("an integer is not a funcref");
    assert!(matches!(err, AccessError::Value(ValueError::Type { .. })), "{err}");
    let global = Global::new(&store, funcref_global, Val::FuncRef(None)).unwrap();
    assert!(matches!(global.set(Val::I32(1)), Err(AccessError::Value(_))));
    let extern_global = GlobalType { content: ValType::Ref(RefType::EXTERNREF), mutable: false };
    let err = Global::new(&store, extern_global, Val::ExternRef(Some(u64::MAX))).err().unwrap();
    assert!(matches!(err, AccessError::Value(ValueError::ExternRefOutOfRange)), "{err}");
    let immutable = Global::new(&store, extern_global, Val::ExternRef(Some(7))).unwrap();
    assert_eq!(immutable.get().unwrap(), Val::ExternRef(Some(7)));
    assert!(matches!(immutable.set(Val::ExternRef(None)), Err(AccessError::Immutable)));

    let table = Table::new(&store, funcref_table(2), Val::FuncRef(None)).unwrap();
    assert!(matches!(table.set(0, Val::ExternRef(Some(1))), Err(AccessError::Value(_))));
    assert!(matches!(table.set(2, Val::FuncRef(None)), Err(AccessError::OutOfBounds(_))));
    assert_eq!(table.grow(3, Val::FuncRef(None)).unwrap(), 2);
    assert_eq!(table.size(), 5);
}

/// Issue 21.1: what a host function returns is checked against its declared result types
/// (and the caller's store); a mismatch traps instead of reaching the guest.
#[test]
fn host_function_results_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(
        dir.path(),
        "importer",
        r#"(module
          (import "host" "make" (func $make (result funcref)))
          (func (export "make_is_null") (result i32) (ref.is_null (call $make))))"#,
    );
    let region = region(2);
    let ty = FuncType { params: vec![], results: vec![ValType::Ref(RefType::FUNCREF)] };
    let liar = Func::new_host(ty.clone(), |_, _, results| {
        results[0] = Val::I64(0x4242_4242_4242);
        Ok(())
    });
    let instance = Instance::new(&region, &module, &[Extern::Func(liar)]).unwrap();
    match instance.call("make_is_null", &[]) {
        Err(CallError::Trap(Trap::Host(err))) => assert!(err.to_string().contains("expected a value of type"), "{err}"),
        other => panic!("expected a host trap, got {other:?}"),
    }
    // A function of another store, smuggled out through a host function, is refused too.
    let other = Instance::new(&region, &load(dir.path(), "identity", IDENTITY), &[]).unwrap();
    let foreign = other.get_func("id").unwrap();
    let smuggler = Func::new_host(ty, move |_, _, results| {
        results[0] = Val::FuncRef(Some(foreign.clone()));
        Ok(())
    });
    drop(instance);
    let instance = Instance::new(&region, &module, &[Extern::Func(smuggler)]).unwrap();
    match instance.call("make_is_null", &[]) {
        Err(CallError::Trap(Trap::Host(err))) => assert!(err.to_string().contains("another store"), "{err}"),
        other => panic!("expected a host trap, got {other:?}"),
    }
}

/// Issue 21.5: a panicking host function becomes a trap, and its panic payload is dropped
/// (before the fix, every panic leaked its payload: 300 panics with 1 MiB payloads grew the
/// process by 300 MB).
#[test]
fn a_host_panic_drops_its_payload() {
    static DROPPED: AtomicUsize = AtomicUsize::new(0);
    struct Payload(#[allow(dead_code, reason = "gives the payload a size")] Vec<u8>);
    impl Drop for Payload {
        fn drop(&mut self) {
            DROPPED.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let module = load(
        dir.path(),
        "panics",
        r#"(module (import "host" "boom" (func $boom)) (func (export "run") (call $boom)))"#,
    );
    let boom = Func::new_host(FuncType::default(), |_, _, _| std::panic::panic_any(Payload(vec![0; 1 << 20])));
    let region = region(1);
    let instance = Instance::new(&region, &module, &[Extern::Func(boom)]).unwrap();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for i in 1..=20 {
        match instance.call("run", &[]) {
            Err(CallError::Trap(Trap::Host(err))) => assert_eq!(err.to_string(), "host function panicked"),
            other => panic!("expected a host trap, got {other:?}"),
        }
        assert_eq!(DROPPED.load(Ordering::SeqCst), i, "payload {i} was dropped");
    }
    std::panic::set_hook(hook);
}

/// Issue 21.6: shared memories are not handed out as `&mut [u8]` (other threads write them);
/// host functions get atomic bytes instead.
#[test]
fn shared_memories_are_reached_through_atomic_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(
        dir.path(),
        "shared",
        r#"(module
          (import "host" "look" (func $look (result i32)))
          (memory 1 1 shared)
          (func (export "run") (result i32) (i32.store (i32.const 4) (i32.const 77)) (call $look)))"#,
    );
    let look = Func::new_host(FuncType { params: vec![], results: vec![ValType::I32] }, |caller, _, results| {
        assert!(caller.memory(0).is_none(), "no &mut [u8] over a shared memory");
        let bytes = caller.shared_memory(0).expect("the shared memory");
        results[0] = Val::I32(bytes[4].load(Ordering::Relaxed) as i32);
        Ok(())
    });
    let region = region(1);
    let instance = Instance::new(&region, &module, &[Extern::Func(look)]).unwrap();
    assert_eq!(instance.call("run", &[]).unwrap(), vec![Val::I32(77)]);
}

const SPIN: &str = r#"(module
  (memory (export "mem") 1)
  (global (export "g") (mut i32) (i32.const 0))
  (func (export "spin") (loop $l (global.set 0 (i32.add (global.get 0) (i32.const 1))) (br $l))))"#;

/// Issue 21.6: reading a global or memory while the store runs a guest on another thread is
/// refused (before, it raced with the guest's writes: undefined behaviour in Rust's model).
#[test]
fn host_access_waits_for_the_store_to_be_idle() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(dir.path(), "spin", SPIN);
    let region = region(1);
    let instance = Instance::new(&region, &module, &[]).unwrap();
    let (Some(Extern::Global(global)), Some(Extern::Memory(memory))) =
        (instance.get_export("g"), instance.get_export("mem"))
    else {
        panic!("exports")
    };
    let interrupt = instance.interrupt_handle();
    let running = std::thread::spawn({
        let instance = instance.clone();
        move || instance.call("spin", &[])
    });
    // Wait until the guest runs (the global moves), then try to read.
    while global.get().is_ok_and(|v| v == Val::I32(0)) {
        std::thread::yield_now();
    }
    assert!(matches!(global.get(), Err(AccessError::Busy(_))));
    assert!(matches!(memory.read(0, 4), Err(AccessError::Busy(_))));
    assert!(matches!(memory.write(0, &[1]), Err(AccessError::Busy(_))));
    // The store is busy from the moment the call starts; give the guest time to loop, or the
    // interrupt can stop it at its first loop header, before it wrote anything.
    std::thread::sleep(std::time::Duration::from_millis(20));
    interrupt.interrupt();
    assert_eq!(trap_code(running.join().unwrap()), TrapCode::Interrupt);
    instance.store().clear_interrupt();
    assert!(matches!(global.get(), Ok(Val::I32(n)) if n > 0), "the guest's writes are visible");
    memory.write(0, b"kiln").unwrap();
    assert_eq!(memory.read(0, 4).unwrap(), b"kiln");
}

/// Issue 12.4: `memory.atomic.wait` with no timeout wakes on an interrupt and traps with
/// "deadline exceeded" (before, it ignored the interrupt and blocked forever).
#[test]
fn an_endless_atomic_wait_stops_on_interrupt() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(
        dir.path(),
        "wait",
        r#"(module
          (memory 1 1 shared)
          (func (export "wait") (result i32)
            (memory.atomic.wait32 (i32.const 0) (i32.const 0) (i64.const -1))))"#,
    );
    let region = region(1);
    let instance = Instance::new(&region, &module, &[]).unwrap();
    let handle = instance.interrupt_handle();
    let waiter = std::thread::spawn({
        let instance = instance.clone();
        move || instance.call("wait", &[])
    });
    std::thread::sleep(std::time::Duration::from_millis(50));
    let start = std::time::Instant::now();
    handle.interrupt();
    assert_eq!(trap_code(waiter.join().unwrap()), TrapCode::Interrupt);
    assert!(start.elapsed() < std::time::Duration::from_secs(2), "woken promptly");
}

fn tight_limits() -> StoreLimits {
    StoreLimits {
        memory_size: 4 << 16,
        table_elements: 1000,
        instances: 2,
        tables: 2,
        memories: 2,
        exception_memory: 4096,
        gc_heap_size: 4096,
    }
}

/// Issue 12.7: per-tenant limits refuse what a module asks for beyond them, naming the limit,
/// and make growth past them fail as the spec allows (-1). Before, a 480-byte module took
/// 800 MB (ten 10M-element tables) and 100 memories reserved 600 GiB of address space.
#[test]
fn tenants_are_held_to_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    let region = region(4);
    let instantiate = |name: &str, wat: &str| {
        let module = load(dir.path(), name, wat);
        Instance::new_in_store(&region, &Store::with_limits(tight_limits()), &module, &[])
    };
    let limit = |result: Result<Instance, InstantiationError>| match result {
        Err(InstantiationError::Limit(limit)) => limit,
        other => panic!("expected a limit error, got {:?}", other.map(|_| ())),
    };
    let tables: String = (0..10).map(|_| "(table 10000000 funcref)").collect();
    let err = limit(instantiate("tables", &format!("(module {tables})")));
    assert!(matches!(err, LimitError::Tables { count: 10, limit: 2 }), "{err}");
    assert!(err.to_string().contains("max-tables"));
    let err = limit(instantiate("big_table", "(module (table 10000000 funcref))"));
    assert!(matches!(err, LimitError::TableElements { elements: 10_000_000, .. }), "{err}");
    let memories: String = (0..100).map(|_| "(memory 0)").collect();
    assert!(matches!(
        limit(instantiate("memories", &format!("(module {memories})"))),
        LimitError::Memories { count: 100, .. }
    ));
    assert!(matches!(limit(instantiate("big_memory", "(module (memory 5))")), LimitError::MemorySize { .. }));
    assert_eq!(region.free_slots(), 4, "nothing was taken");

    let grower = load(
        dir.path(),
        "grower",
        r#"(module
          (memory 1) (table 10 funcref)
          (func (export "grow_memory") (param i32) (result i32) (memory.grow (local.get 0)))
          (func (export "grow_table") (param i32) (result i32) (table.grow (ref.null func) (local.get 0))))"#,
    );
    let store = Store::with_limits(tight_limits());
    let instance = Instance::new_in_store(&region, &store, &grower, &[]).unwrap();
    assert_eq!(instance.call("grow_memory", &[Val::I32(3)]).unwrap(), vec![Val::I32(1)]);
    assert_eq!(instance.call("grow_memory", &[Val::I32(1)]).unwrap(), vec![Val::I32(-1)], "past max-memory-size");
    assert_eq!(instance.call("grow_table", &[Val::I32(990)]).unwrap(), vec![Val::I32(10)]);
    assert_eq!(instance.call("grow_table", &[Val::I32(1)]).unwrap(), vec![Val::I32(-1)], "past max-table-elements");
    let _second = Instance::new_in_store(&region, &store, &grower, &[]).unwrap();
    let third = Instance::new_in_store(&region, &store, &grower, &[]);
    assert!(matches!(third, Err(InstantiationError::Limit(LimitError::Instances { limit: 2 }))));
    assert_eq!(region.free_slots(), 2);

    // Host-made memories and tables are held to the store's limits too.
    assert!(Memory::new(
        &store,
        MemoryType { minimum: 5, maximum: None, memory64: false, shared: false, page_size_log2: 16 }
    )
    .is_err());
    assert!(Table::new(&store, funcref_table(1001), Val::FuncRef(None)).is_err());
}

/// Issue 21.1: a funcref given back to the guest through a global keeps its instance alive
/// and can be called at its own type only.
#[test]
fn a_funcref_in_a_host_global_keeps_its_instance() {
    let dir = tempfile::tempdir().unwrap();
    let exporter = load(dir.path(), "identity", IDENTITY);
    let user = load(
        dir.path(),
        "user",
        r#"(module
          (type $i64 (func (param i64) (result i64)))
          (import "host" "g" (global $g (mut funcref)))
          (func (export "call") (param i64) (result i64)
            (call_indirect (type $i64) (local.get 0) (i32.const 0)))
          (table 1 funcref)
          (func (export "install") (table.set (i32.const 0) (global.get $g))))"#,
    );
    let region = region(3);
    let store = Store::new();
    let global =
        Global::new(&store, GlobalType { content: ValType::Ref(RefType::FUNCREF), mutable: true }, Val::FuncRef(None))
            .unwrap();
    {
        let owner = Instance::new_in_store(&region, &store, &exporter, &[]).unwrap();
        global.set(Val::FuncRef(Some(owner.get_func("id").unwrap()))).unwrap();
    } // the owner's handles are gone; the global holds its function
    let user = Instance::new_in_store(&region, &store, &user, &[Extern::Global(global.clone())]).unwrap();
    user.call("install", &[]).unwrap();
    assert_eq!(user.call("call", &[Val::I64(31)]).unwrap(), vec![Val::I64(31)]);
    let Val::FuncRef(Some(f)) = global.get().unwrap() else { panic!("a function") };
    assert_eq!(f.ty().params, vec![ValType::I64]);
    let concrete = ValType::Ref(RefType { nullable: false, heap: HeapType::ConcreteFunc(1 << 30) });
    let err =
        Global::new(&store, GlobalType { content: concrete, mutable: false }, Val::FuncRef(Some(f))).err().unwrap();
    assert!(matches!(err, AccessError::Value(ValueError::Type { .. })), "{err}");
}

/// Issue 12.3: the loader loads exactly the bytes it checked. Two different modules loaded one
/// after the other are each themselves (when Kiln used the system loader, which knew both by a
/// `/proc/self/fd/N` name whose number the system reuses, this needed care).
#[test]
fn every_load_is_of_the_checked_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let region = region(2);
    let mut modules = Vec::new();
    for answer in 0..8 {
        let module = load(
            dir.path(),
            &format!("m{answer}"),
            &format!("(module (func (export \"answer{answer}\") (result i32) (i32.const {answer})))"),
        );
        modules.push(module);
    }
    for (answer, module) in modules.iter().enumerate() {
        let instance = Instance::new(&region, module, &[]).unwrap();
        let name = format!("answer{answer}");
        assert_eq!(instance.call(&name, &[]).unwrap(), vec![Val::I32(answer as i32)]);
    }
    // Loading by a relative name does not consult the library search path.
    let here = std::env::current_dir().unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    // SAFETY: compiled by this test.
    let relative = unsafe { Module::load("m3.so") };
    std::env::set_current_dir(here).unwrap();
    let instance = Instance::new(&region, &relative.unwrap(), &[]).unwrap();
    assert_eq!(instance.call("answer3", &[]).unwrap(), vec![Val::I32(3)]);
}

/// The host error a host function returns reaches the caller intact.
#[test]
fn host_errors_still_reach_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let module =
        load(dir.path(), "fails", r#"(module (import "host" "no" (func $no)) (func (export "run") (call $no)))"#);
    let calls = Arc::new(AtomicUsize::new(0));
    let no = Func::new_host(FuncType::default(), {
        let calls = calls.clone();
        move |_, _, _| {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(HostError("no".into()))
        }
    });
    let region = region(1);
    let instance = Instance::new(&region, &module, &[Extern::Func(no)]).unwrap();
    assert!(matches!(instance.call("run", &[]), Err(CallError::Trap(Trap::Host(e))) if e.to_string() == "no"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A shared memory grown by guests of two stores on two threads at once grows by every page
/// asked for (before, concurrent `memory.grow`s could lose updates).
#[test]
fn concurrent_growth_of_a_shared_memory_is_never_lost() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(
        dir.path(),
        "grower",
        r#"(module
          (import "host" "mem" (memory 1 400 shared))
          (func (export "grow") (param i32) (result i32)
            (local $i i32)
            (loop $l
              (drop (memory.grow (i32.const 1)))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br_if $l (i32.lt_u (local.get $i) (local.get 0))))
            (memory.size)))"#,
    );
    let region = region(2);
    let owner = Store::new();
    let ty = MemoryType { minimum: 1, maximum: Some(400), memory64: false, shared: true, page_size_log2: 16 };
    let memory = Memory::new(&owner, ty).unwrap();
    let growers: Vec<Instance> =
        (0..2).map(|_| Instance::new(&region, &module, &[Extern::Memory(memory.clone())]).unwrap()).collect();
    std::thread::scope(|s| {
        for grower in &growers {
            s.spawn(move || grower.call("grow", &[Val::I32(150)]).unwrap());
        }
    });
    assert_eq!(memory.size_pages(), 301, "1 + 2 × 150 pages");
}

/// Memories with 1-byte pages (the custom-page-sizes proposal) end at their exact length,
/// although the host can only protect whole 4 KiB pages: compiled code checks every access
/// against the length in bytes, for 32- and 64-bit memories, before and after growth, and the
/// slot's next tenant sees none of the bytes. A guard-page check alone would let `load 10`
/// read the rest of the OS page.
#[test]
fn memories_with_one_byte_pages_end_at_their_exact_length() {
    let dir = tempfile::tempdir().unwrap();
    let region = region(1);
    for (name, index) in [("bytes32", "i32"), ("bytes64", "i64")] {
        let memory = if index == "i64" { "i64 10" } else { "10" };
        let wat = format!(
            r#"(module
              (memory {memory} (pagesize 1))
              (func (export "load") (param {index}) (result i32) (i32.load8_u (local.get 0)))
              (func (export "load32") (param {index}) (result i32) (i32.load (local.get 0)))
              (func (export "store") (param {index} i32) (i32.store8 (local.get 0) (local.get 1)))
              (func (export "grow") (param {index}) (result {index}) (memory.grow (local.get 0))))"#
        );
        let module = load_with(dir.path(), name, &wat, with_custom_page_sizes());
        let at = |i: u64| if index == "i64" { Val::I64(i as i64) } else { Val::I32(i as i32) };

        let tenant = Instance::new(&region, &module, &[]).unwrap();
        tenant.call("store", &[at(9), Val::I32(7)]).unwrap();
        assert_eq!(tenant.call("load", &[at(9)]).unwrap(), vec![Val::I32(7)]);
        assert_eq!(trap_code(tenant.call("load", &[at(10)])), TrapCode::HeapOutOfBounds, "{name}");
        assert_eq!(trap_code(tenant.call("load32", &[at(7)])), TrapCode::HeapOutOfBounds, "{name}: straddles the end");
        assert_eq!(tenant.call("grow", &[at(1)]).unwrap(), vec![at(10)]);
        assert_eq!(tenant.call("load", &[at(10)]).unwrap(), vec![Val::I32(0)]);
        tenant.call("store", &[at(10), Val::I32(5)]).unwrap();
        assert_eq!(trap_code(tenant.call("load", &[at(11)])), TrapCode::HeapOutOfBounds, "{name}");
        drop(tenant);

        let next = Instance::new(&region, &module, &[]).unwrap();
        assert_eq!(next.call("load", &[at(9)]).unwrap(), vec![Val::I32(0)], "{name}: the slot was reset");
        assert_eq!(trap_code(next.call("load", &[at(10)])), TrapCode::HeapOutOfBounds, "{name}");
        assert_eq!(next.call("grow", &[at(1)]).unwrap(), vec![at(10)]);
        assert_eq!(next.call("load", &[at(10)]).unwrap(), vec![Val::I32(0)], "{name}: nothing left past the length");
    }
}

/// A 32-bit memory with 1-byte pages stops growing at 2^32 - 1 bytes, the most pages
/// `memory.size` can report (before, it grew to 2^32 bytes: that grow returned -1 although it
/// succeeded, and `memory.size` then read 0).
#[test]
fn a_one_byte_page_memory_stops_where_its_size_still_fits() {
    let dir = tempfile::tempdir().unwrap();
    let wat = r#"(module (memory 0 (pagesize 1))
                   (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
                   (func (export "size") (result i32) (memory.size)))"#;
    let module = load_with(dir.path(), "grow", wat, with_custom_page_sizes());
    let region = region(1);
    let instance = Instance::new(&region, &module, &[]).unwrap();
    assert_eq!(instance.call("grow", &[Val::I32(-1)]).unwrap(), vec![Val::I32(0)], "to 2^32 - 1 bytes");
    assert_eq!(instance.call("size", &[]).unwrap(), vec![Val::I32(-1)], "2^32 - 1 pages");
    assert_eq!(instance.call("grow", &[Val::I32(1)]).unwrap(), vec![Val::I32(-1)], "one byte more fails");
    assert_eq!(instance.call("size", &[]).unwrap(), vec![Val::I32(-1)]);
}

/// A function made only of huge bulk operations has no loop header and no call, where
/// compiled code looks at the interrupt flag; the libcalls look at it every megabyte instead,
/// so a deadline stops it (before, this call ran all its fills and returned normally).
#[test]
fn a_deadline_stops_a_function_of_bulk_operations() {
    let dir = tempfile::tempdir().unwrap();
    let fill = "(memory.fill (i32.const 0) (i32.const 1) (i32.const 0x4000000))";
    let copy = "(memory.copy (i32.const 1) (i32.const 0) (i32.const 0x3ffffff))";
    let body: String = (0..200).map(|_| format!("{fill} {copy}")).collect();
    let module = load(dir.path(), "bulk", &format!(r#"(module (memory 1024) (func (export "run") {body}))"#));
    let region = region(1);
    let instance = Instance::new(&region, &module, &[]).unwrap();
    let interrupt = instance.interrupt_handle();
    let running = std::thread::spawn({
        let instance = instance.clone();
        move || instance.call("run", &[])
    });
    std::thread::sleep(std::time::Duration::from_millis(50));
    interrupt.interrupt();
    assert_eq!(trap_code(running.join().unwrap()), TrapCode::Interrupt);
}

/// Whatever straight-line stores a tenant makes (every width, through a pointer, a pointer
/// plus a constant either way round, with offsets, across page boundaries), the next tenant
/// of its slot sees none of them: 300 generated tenants, each written at pointers around page
/// boundaries, in a slot that keeps written pages resident and in one that keeps none.
#[test]
fn no_generated_sequence_of_stores_outlives_its_tenant() {
    // xorshift64: deterministic, so a failure names a case that fails again.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };
    let dir = tempfile::tempdir().unwrap();
    let regions = [0, 64 * 1024]
        .map(|keep_resident| Region::new(RegionConfig { slots: 1, keep_resident, ..RegionConfig::default() }).unwrap());
    for case in 0..300 {
        let mut body = String::new();
        for _ in 0..1 + next(12) {
            let store = ["i32.store8", "i32.store16", "i32.store", "i64.store"][next(4) as usize];
            let value = if store.starts_with("i64") { "(i64.const -1)" } else { "(i32.const -1)" };
            let c = next(80);
            let index = match next(3) {
                0 => "(local.get $p)".to_string(),
                1 => format!("(i32.add (local.get $p) (i32.const {c}))"),
                _ => format!("(i32.add (i32.const {c}) (local.get $p))"),
            };
            let offset = if next(2) == 0 { 0 } else { next(80) };
            body.push_str(&format!("({store} offset={offset} {index} {value})"));
        }
        let wat = format!(r#"(module (memory (export "m") 3) (func (export "f") (param $p i32) {body}))"#);
        let module = load(dir.path(), &format!("stores{case}"), &wat);
        for region in &regions {
            let p = (1 + next(2) as i32) * 4096 - next(96) as i32;
            let tenant = Instance::new(region, &module, &[]).unwrap();
            tenant.call("f", &[Val::I32(p)]).unwrap();
            drop(tenant);
            let next_tenant = Instance::new(region, &module, &[]).unwrap();
            let Some(Extern::Memory(memory)) = next_tenant.get_export("m") else { panic!("m is not a memory") };
            let leaked = memory.read(0, 3 * 65536).unwrap().iter().position(|&b| b != 0);
            assert_eq!(leaked, None, "case {case}, p {p}: a store outlived its tenant:\n{wat}");
        }
    }
}
