//! Isolation under load: several threads each run many tenant lifecycles in a shared region,
//! with every trap kind and unbounded recursion mixed in. No crash, every result right, and
//! each new tenant's heap, globals and table exactly as the module defines them: nothing an
//! earlier tenant wrote is readable.

use kiln_runtime::{CallError, Instance, Module, Region, RegionConfig, Trap, TrapCode, Val};

const TENANT: &str = r#"
(module
  (memory 1 4)
  (data (i32.const 0) "kiln")
  (global $g (mut i64) (i64.const 17))
  (table 4 funcref)
  (elem (i32.const 0) $leaf)
  (type $v (func))
  (type $r (func (result i32)))
  (func $leaf)
  ;; OR of every byte after the data segment, over the whole current memory.
  (func (export "scan") (result i32)
    (local $i i32) (local $acc i32)
    (local.set $i (i32.const 4))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (i32.mul (memory.size) (i32.const 65536))))
        (local.set $acc (i32.or (local.get $acc) (i32.load8_u (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $acc))
  (func (export "seed") (result i32) (i32.load (i32.const 0)))
  (func (export "pages") (result i32) (memory.size))
  (func (export "global") (result i64) (global.get $g))
  (func (export "slot2_is_null") (result i32) (ref.is_null (table.get (i32.const 2))))
  ;; What a tenant leaves behind: every byte of a grown memory, the global, a table entry.
  (func (export "dirty") (param $v i32)
    (drop (memory.grow (i32.const 2)))
    (memory.fill (i32.const 0) (local.get $v) (i32.mul (memory.size) (i32.const 65536)))
    (global.set $g (i64.extend_i32_u (local.get $v)))
    (table.set (i32.const 2) (ref.func $leaf)))
  (func (export "div") (param i32) (result i32) (i32.div_u (i32.const 1) (local.get 0)))
  (func (export "oob") (result i32) (i32.load (i32.const 0x7fffffff)))
  (func (export "boom") (unreachable))
  (func $deep (export "deep") (param i32) (result i32) (i32.add (call $deep (local.get 0)) (i32.const 1)))
  (func (export "mismatch") (result i32) (call_indirect (type $r) (i32.const 0)))
  (func (export "null") (call_indirect (type $v) (i32.const 3)))
)
"#;

/// Loads a shared object. Every object these tests load was compiled by them, or is a damaged
/// or foreign file that the loader's checks must refuse before `dlopen` runs anything.
fn load(path: impl AsRef<std::path::Path>) -> Result<Module, kiln_runtime::LoadError> {
    // SAFETY: see above.
    unsafe { Module::load(path) }
}

fn trap(result: Result<Vec<Val>, CallError>) -> TrapCode {
    match result {
        Err(CallError::Trap(Trap::Wasm { code, .. })) => code,
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[test]
fn tenants_stay_isolated_under_load() {
    isolated_under_load(RegionConfig { slots: 6, ..Default::default() });
}

/// The same, while the trimmer decommits nearly every slot as it comes back (no free slot may
/// keep anything resident), racing the threads that take them.
#[test]
fn tenants_stay_isolated_under_load_while_idle_slots_are_trimmed() {
    isolated_under_load(RegionConfig { slots: 6, max_idle_resident: 0, ..Default::default() });
}

fn isolated_under_load(config: RegionConfig) {
    let dir = tempfile::tempdir().unwrap();
    let so = dir.path().join("tenant.so");
    kiln_compiler::Compiler::new().unwrap().compile_to_file(TENANT.as_bytes(), &so).unwrap();
    let module = load(&so).unwrap();
    let region = Region::new(config).unwrap();
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let (module, region) = (module.clone(), region.clone());
            std::thread::spawn(move || {
                for i in 0..150u32 {
                    let tenant = Instance::new(&region, &module, &[]).unwrap();
                    // Fresh: exactly what the module defines, whatever ran in this slot before.
                    assert_eq!(tenant.call("seed", &[]).unwrap(), vec![Val::I32(i32::from_le_bytes(*b"kiln"))]);
                    assert_eq!(tenant.call("pages", &[]).unwrap(), vec![Val::I32(1)]);
                    assert_eq!(
                        tenant.call("scan", &[]).unwrap(),
                        vec![Val::I32(0)],
                        "thread {t} tenant {i}: stale bytes"
                    );
                    assert_eq!(tenant.call("global", &[]).unwrap(), vec![Val::I64(17)]);
                    assert_eq!(tenant.call("slot2_is_null", &[]).unwrap(), vec![Val::I32(1)]);
                    let mark = 1 + (t * 150 + i) % 250;
                    tenant.call("dirty", &[Val::I32(mark as i32)]).unwrap();
                    assert_eq!(tenant.call("scan", &[]).unwrap(), vec![Val::I32(mark as i32)]);
                    let expected = match (t + i) % 7 {
                        0 => trap(tenant.call("div", &[Val::I32(0)])) == TrapCode::IntegerDivisionByZero,
                        1 => trap(tenant.call("oob", &[])) == TrapCode::HeapOutOfBounds,
                        2 => trap(tenant.call("boom", &[])) == TrapCode::UnreachableCodeReached,
                        3 => trap(tenant.call("deep", &[Val::I32(0)])) == TrapCode::StackOverflow,
                        4 => trap(tenant.call("mismatch", &[])) == TrapCode::BadSignature,
                        5 => trap(tenant.call("null", &[])) == TrapCode::IndirectCallToNull,
                        _ => tenant.call("div", &[Val::I32(3)]).unwrap() == vec![Val::I32(0)],
                    };
                    assert!(expected, "thread {t} tenant {i}: wrong outcome");
                    // Still consistent after the trap.
                    assert_eq!(tenant.call("global", &[]).unwrap(), vec![Val::I64(mark as i64)]);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(region.free_slots(), 6);
}

/// Tenants that each write more than a batch of pending memory (`LARGE_BATCH`, 4 MiB), so that
/// the trimmer thread discards it in the background while other threads take and return slots:
/// each next tenant still sees only zeros.
#[test]
fn tenants_stay_isolated_while_large_discards_run_in_the_background() {
    let wat = r#"(module (memory 80)
      (func (export "fill") (param $v i32) (memory.fill (i32.const 0) (local.get $v) (i32.const 0x500000)))
      ;; OR of every 8-byte word of the memory.
      (func (export "scan") (result i64)
        (local $i i32) (local $acc i64)
        (block $done
          (loop $next
            (br_if $done (i32.ge_u (local.get $i) (i32.const 0x500000)))
            (local.set $acc (i64.or (local.get $acc) (i64.load (local.get $i))))
            (local.set $i (i32.add (local.get $i) (i32.const 8)))
            (br $next)))
        (local.get $acc)))"#;
    let dir = tempfile::tempdir().unwrap();
    let so = dir.path().join("large.so");
    kiln_compiler::Compiler::new().unwrap().compile_to_file(wat.as_bytes(), &so).unwrap();
    let module = load(&so).unwrap();
    let region = Region::new(RegionConfig { slots: 3, ..Default::default() }).unwrap();
    let threads: Vec<_> = (0..2u32)
        .map(|t| {
            let (module, region) = (module.clone(), region.clone());
            std::thread::spawn(move || {
                for i in 0..60u32 {
                    let tenant = Instance::new(&region, &module, &[]).unwrap();
                    assert_eq!(
                        tenant.call("scan", &[]).unwrap(),
                        vec![Val::I64(0)],
                        "thread {t} tenant {i}: stale bytes"
                    );
                    tenant.call("fill", &[Val::I32(1 + (i % 200) as i32)]).unwrap();
                    assert_ne!(tenant.call("scan", &[]).unwrap(), vec![Val::I64(0)]);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(region.free_slots(), 3);
}

/// A tenant that shares its store's host table and global: it writes its own function into the
/// table and its id into the global, and can call whatever the table holds.
const SHARED_USER: &str = r#"
(module
  (import "host" "table" (table 4 funcref))
  (import "host" "last" (global $last (mut i32)))
  (memory 1)
  (global $mine (mut i32) (i32.const 0))
  (type $r (func (result i32)))
  (func $id (result i32) (global.get $mine))
  (elem declare func $id)
  (func (export "init") (param $id i32) (param $slot i32)
    (global.set $mine (local.get $id))
    (i32.store (i32.const 100) (local.get $id))
    (table.set (local.get $slot) (ref.func $id))
    (global.set $last (local.get $id)))
  (func (export "probe") (result i32) (i32.load (i32.const 100)))
  (func (export "mine") (result i32) (global.get $mine))
  (func (export "call") (param i32) (result i32) (call_indirect (type $r) (local.get 0)))
  (func (export "spin") (loop $l (br $l)))
  (func (export "boom") (unreachable)))
"#;

/// A tenant of its own store that looks for anything a previous tenant of its slot left.
const LOOKOUT: &str = r#"
(module
  (memory 1)
  (table 4 funcref)
  (func (export "probe") (result i32) (i32.load (i32.const 100)))
  (func (export "slot_is_null") (param i32) (result i32) (ref.is_null (table.get (local.get 0)))))
"#;

/// Many threads, each running sessions of tenants that share a store's host table and global,
/// with traps and interrupts, while lookout tenants of their own stores take the slots the
/// sessions free. Every call through the shared table answers its writer's id (the writer is
/// kept alive by the store, whatever became of its handle), no tenant starts with another's
/// memory, globals or table entries, and every slot comes back.
#[test]
fn shared_tables_and_globals_never_leak_between_tenants() {
    use kiln_runtime::{Extern, Global, GlobalType, RefType, Store, Table, TableType, ValType};
    const THREADS: u32 = 4;
    const SESSIONS: u32 = 25;
    const PER_SESSION: u32 = 3;
    let dir = tempfile::tempdir().unwrap();
    let compile = |name: &str, wat: &str| {
        let so = dir.path().join(format!("{name}.so"));
        kiln_compiler::Compiler::new().unwrap().compile_to_file(wat.as_bytes(), &so).unwrap();
        load(&so).unwrap()
    };
    let user = compile("user", SHARED_USER);
    let lookout = compile("lookout", LOOKOUT);
    let slots = (THREADS * (PER_SESSION + 1)) as usize;
    let region = Region::new(RegionConfig { slots, ..Default::default() }).unwrap();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (user, lookout, region) = (user.clone(), lookout.clone(), region.clone());
            std::thread::spawn(move || {
                for session in 0..SESSIONS {
                    let store = Store::new();
                    let table_type = TableType { element: RefType::FUNCREF, minimum: 4, maximum: None, table64: false };
                    let table = Table::new(&store, table_type, Val::FuncRef(None)).unwrap();
                    let last =
                        Global::new(&store, GlobalType { content: ValType::I32, mutable: true }, Val::I32(0)).unwrap();
                    let imports = [Extern::Table(table.clone()), Extern::Global(last.clone())];
                    let mut ids = Vec::new();
                    for k in 0..PER_SESSION {
                        let id = (t * 1_000_000 + session * 100 + k + 1) as i32;
                        let tenant = Instance::new_in_store(&region, &store, &user, &imports).unwrap();
                        assert_eq!(
                            tenant.call("probe", &[]).unwrap(),
                            vec![Val::I32(0)],
                            "t{t} s{session}: stale memory"
                        );
                        assert_eq!(
                            tenant.call("mine", &[]).unwrap(),
                            vec![Val::I32(0)],
                            "t{t} s{session}: stale global"
                        );
                        tenant.call("init", &[Val::I32(id), Val::I32(k as i32)]).unwrap();
                        assert_eq!(last.get().unwrap(), Val::I32(id));
                        // Every earlier tenant of the session still answers through the table,
                        // although its handle is gone.
                        for (slot, &earlier) in ids.iter().enumerate() {
                            assert_eq!(tenant.call("call", &[Val::I32(slot as i32)]).unwrap(), vec![Val::I32(earlier)]);
                        }
                        match (t + session + k) % 4 {
                            0 => assert_eq!(trap(tenant.call("boom", &[])), TrapCode::UnreachableCodeReached),
                            1 => {
                                let handle = tenant.interrupt_handle();
                                let stopper = std::thread::spawn(move || {
                                    std::thread::sleep(std::time::Duration::from_millis(2));
                                    handle.interrupt();
                                });
                                assert_eq!(trap(tenant.call("spin", &[])), TrapCode::Interrupt);
                                stopper.join().unwrap();
                                store.clear_interrupt();
                            }
                            2 => assert_eq!(trap(tenant.call("call", &[Val::I32(3)])), TrapCode::IndirectCallToNull),
                            _ => {}
                        }
                        assert_eq!(tenant.call("call", &[Val::I32(k as i32)]).unwrap(), vec![Val::I32(id)]);
                        ids.push(id);
                    }
                    assert_eq!(store.pinned_instances(), PER_SESSION as usize);
                    drop((table, last, imports, store));
                    // The session's slots are free again; a lookout that gets one sees nothing.
                    let watcher = Instance::new(&region, &lookout, &[]).unwrap();
                    assert_eq!(
                        watcher.call("probe", &[]).unwrap(),
                        vec![Val::I32(0)],
                        "t{t} s{session}: a tenant's memory leaked"
                    );
                    for slot in 0..4 {
                        assert_eq!(watcher.call("slot_is_null", &[Val::I32(slot)]).unwrap(), vec![Val::I32(1)]);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(region.free_slots(), slots, "every slot came back");
}

/// A tenant for the fast-reset soak: one page with an image, a global and a table.
const SOAK_TENANT: &str = r#"
(module
  (memory 1 3)
  (data (i32.const 0) "kiln")
  (global $g (mut i64) (i64.const 17))
  (table 2 funcref)
  (func $leaf)
  (elem declare func $leaf)
  ;; 0 when everything is as the module defines it, else which part is not.
  (func (export "stale") (result i64)
    (local $i i32) (local $acc i64)
    (if (i32.ne (memory.size) (i32.const 1)) (then (return (i64.const -1))))
    (if (i64.ne (i64.load (i32.const 0)) (i64.const 0x6e6c696b)) (then (return (i64.const -2))))
    (if (i64.ne (global.get $g) (i64.const 17)) (then (return (i64.const -3))))
    (if (i32.eqz (ref.is_null (table.get (i32.const 1)))) (then (return (i64.const -4))))
    (local.set $i (i32.const 8))
    (loop $next
      (local.set $acc (i64.or (local.get $acc) (i64.load (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 8)))
      (br_if $next (i32.lt_u (local.get $i) (i32.const 65536))))
    (local.get $acc))
  ;; Leaves marks: three words at places the seed picks, the image, the global, the table;
  ;; mode 1 also fills the page, mode 2 grows the memory and fills the new pages, mode 3 traps.
  (func (export "dirty") (param $seed i32) (param $mode i32)
    (local $k i32)
    (loop $marks
      (i64.store (i32.and (i32.mul (i32.add (local.get $seed) (local.get $k)) (i32.const 0x9e3779b1)) (i32.const 0xfff8))
        (i64.extend_i32_u (i32.or (local.get $seed) (i32.const 1))))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br_if $marks (i32.lt_u (local.get $k) (i32.const 3))))
    (i32.store (i32.const 0) (local.get $seed))
    (global.set $g (i64.extend_i32_u (local.get $seed)))
    (table.set (i32.const 1) (ref.func $leaf))
    (if (i32.eq (local.get $mode) (i32.const 1))
      (then (memory.fill (i32.const 0) (i32.const 0xa5) (i32.const 65536))))
    (if (i32.eq (local.get $mode) (i32.const 2))
      (then (drop (memory.grow (i32.const 2)))
            (memory.fill (i32.const 65536) (i32.const 0x5a) (i32.const 131072))))
    (if (i32.eq (local.get $mode) (i32.const 3)) (then unreachable)))
)
"#;

/// A million lifecycles on every core through the warm path (the page is reset with plain
/// stores; grown pages are returned to the kernel), each tenant checking that it starts
/// exactly as the module defines it before leaving marks of its own, sometimes trapping.
#[test]
fn a_million_warm_resets_leak_nothing() {
    let total: u64 = std::env::var("KILN_SOAK_LIFECYCLES").map_or(1_000_000, |n| n.parse().unwrap());
    soak(total, usize::MAX);
}

/// A fifth as many, while the trimmer decommits idle slots (they may keep two pages resident
/// in all), racing the threads that take them.
#[test]
fn warm_resets_leak_nothing_while_idle_slots_are_trimmed() {
    let total: u64 = std::env::var("KILN_SOAK_LIFECYCLES").map_or(1_000_000, |n| n.parse().unwrap());
    soak(total / 5, 8192);
}

fn soak(total: u64, max_idle_resident: usize) {
    let dir = tempfile::tempdir().unwrap();
    let so = dir.path().join("soak.so");
    kiln_compiler::Compiler::new().unwrap().compile_to_file(SOAK_TENANT.as_bytes(), &so).unwrap();
    let module = load(&so).unwrap();
    assert!(module.maps_heap_image());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8) as u64;
    let config = RegionConfig { slots: threads as usize + 1, max_idle_resident, ..Default::default() };
    let region = Region::new(config).unwrap();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (module, region) = (&module, &region);
            scope.spawn(move || {
                for i in 0..total / threads {
                    let tenant = Instance::new(region, module, &[]).unwrap();
                    let stale = tenant.get_func("stale").unwrap().typed::<(), i64>().unwrap();
                    let dirty = tenant.get_func("dirty").unwrap().typed::<(i32, i32), ()>().unwrap();
                    assert_eq!(stale.call(()).unwrap(), 0, "thread {t}, lifecycle {i}: an earlier tenant's state");
                    let seed = (t << 28 | i) as i32;
                    let mode = [0, 0, 0, 0, 0, 1, 0, 2, 0, 3][i as usize % 10];
                    assert_eq!(dirty.call((seed, mode)).is_err(), mode == 3);
                }
            });
        }
    });
    assert_eq!(region.free_slots(), threads as usize + 1);
}
