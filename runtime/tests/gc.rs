//! GC objects across the host boundary and between tenants: handles stay in their store, the
//! heap is bounded by the store's limit, a new store never sees an old store's objects, and
//! whatever the host passes in cannot point outside the heap.

use std::path::Path;

use kiln_runtime::{
    AnyRef, CallError, Instance, Module, Region, RegionConfig, Store, StoreLimits, Trap, TrapCode, Val,
};

/// Loads `wat`, compiled with GC by this test into `dir`.
fn load(dir: &Path, name: &str, wat: &str) -> Module {
    let out = dir.join(format!("{name}.so"));
    let features = kiln_compiler::default_features() | kiln_compiler::WasmFeatures::GC;
    kiln_compiler::Compiler::with_features(features).unwrap().compile_to_file(wat.as_bytes(), &out).unwrap();
    // SAFETY: compiled just now, by this test, into its own temporary directory.
    unsafe { Module::load(out) }.unwrap()
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

const BOXES: &str = r#"(module
  (type $box (struct (field (mut i64))))
  (type $bytes (array (mut i8)))
  (func (export "box") (param i64) (result (ref $box)) (struct.new $box (local.get 0)))
  (func (export "unbox") (param (ref $box)) (result i64) (struct.get $box 0 (local.get 0)))
  (func (export "is_box") (param anyref) (result i32) (ref.test (ref $box) (local.get 0)))
  (func (export "i31") (param i31ref) (result i32) (i31.get_u (local.get 0)))
  (func (export "internalize") (param externref) (result anyref) (any.convert_extern (local.get 0)))
  (func (export "bytes") (param i32) (result (ref $bytes)) (array.new_default $bytes (local.get 0)))
  (func (export "fill") (param (ref $bytes) i32)
    (array.fill $bytes (local.get 0) (i32.const 0) (local.get 1) (array.len (local.get 0))))
  (func (export "sum") (param (ref $bytes)) (result i32) (local $i i32) (local $sum i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (array.len (local.get 0))))
        (local.set $sum (i32.add (local.get $sum) (array.get_u $bytes (local.get 0) (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $sum))
  (func (export "churn") (param i32) (loop $more
    (drop (array.new_default $bytes (i32.const 1000)))
    (br_if $more (local.tee 0 (i32.sub (local.get 0) (i32.const 1)))))))"#;

/// A struct leaves wasm as a handle that goes back into the same store's wasm, and is refused
/// by another store's instance of the same module: a tenant cannot hand another tenant's
/// object to its own code.
#[test]
fn objects_reach_the_host_as_handles_that_stay_in_their_store() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(dir.path(), "boxes", BOXES);
    let region = region(2);
    let ours = Instance::new(&region, &module, &[]).unwrap();
    let theirs = Instance::new(&region, &module, &[]).unwrap();

    let boxed = ours.call("box", &[Val::I64(42)]).unwrap().remove(0);
    assert!(matches!(&boxed, Val::AnyRef(Some(AnyRef::Object(o))) if !o.is_array()), "{boxed:?}");
    assert_eq!(ours.call("unbox", std::slice::from_ref(&boxed)).unwrap(), [Val::I64(42)]);
    assert_eq!(ours.call("is_box", std::slice::from_ref(&boxed)).unwrap(), [Val::I32(1)]);
    match theirs.call("unbox", std::slice::from_ref(&boxed)) {
        Err(CallError::BadArguments(message)) => assert!(message.contains("another store"), "{message}"),
        other => panic!("another store's object was accepted: {other:?}"),
    }
    // Nor can the host pass an i31 or host value where a struct is expected.
    assert!(matches!(ours.call("unbox", &[Val::AnyRef(Some(AnyRef::I31(1)))]), Err(CallError::BadArguments(_))));
    assert_eq!(ours.call("is_box", &[Val::AnyRef(Some(AnyRef::I31(1)))]).unwrap(), [Val::I32(0)]);
}

/// What the host passes in cannot become an object reference: an i31 keeps 31 bits, a host
/// value 62, and a value beyond that is refused rather than truncated into another encoding.
#[test]
fn host_values_cannot_forge_object_references() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(dir.path(), "boxes", BOXES);
    let region = region(1);
    let instance = Instance::new(&region, &module, &[]).unwrap();
    assert_eq!(instance.call("i31", &[Val::AnyRef(Some(AnyRef::I31(u32::MAX)))]).unwrap(), [Val::I32(0x7fff_ffff)]);
    let largest = kiln_runtime::MAX_HOST_VALUE;
    assert_eq!(
        instance.call("internalize", &[Val::ExternRef(Some(largest))]).unwrap(),
        [Val::AnyRef(Some(AnyRef::Host(largest)))]
    );
    assert_eq!(instance.call("is_box", &[Val::AnyRef(Some(AnyRef::Host(8)))]).unwrap(), [Val::I32(0)]);
    assert!(matches!(
        instance.call("internalize", &[Val::ExternRef(Some(largest + 1))]),
        Err(CallError::BadArguments(message)) if message.contains("2^62")
    ));
}

/// What is live is bounded by the store's GC heap limit (half of it: a collection copies
/// into the other half): a list that outgrows it traps with "GC heap exhausted", as does a
/// single array beyond it, and the store stays usable for what fits; garbage is not bounded.
#[test]
fn live_objects_are_bounded_by_the_store_limit() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(dir.path(), "lists", LISTS);
    let region = region(2);
    let limits = StoreLimits { gc_heap_size: 64 << 10, ..StoreLimits::default() };
    let instance = Instance::new_in_store(&region, &Store::with_limits(limits), &module, &[]).unwrap();
    // 16 KiB of garbage a call, 100 MiB in all.
    for _ in 0..400 {
        instance.call("garbage", &[Val::I32(256)]).unwrap();
    }
    // 24-byte nodes: 2,000 of them are more than the 32 KiB half.
    assert_eq!(trap_code(instance.call("build_global", &[Val::I32(2000)])), TrapCode::GcHeapExhausted);
    assert_eq!(trap_code(instance.call("bytes", &[Val::I32(100 << 10)])), TrapCode::GcHeapExhausted);
    assert_eq!(trap_code(instance.call("bytes", &[Val::I32(-1)])), TrapCode::GcHeapExhausted);
    instance.call("clear", &[]).unwrap();
    instance.call("build_global", &[Val::I32(100)]).unwrap();
    assert_eq!(instance.call("sum_global", &[]).unwrap(), [Val::I64(5050)]);
}

const LISTS: &str = r#"(module
  (type $node (struct (field i64) (field (ref null $node))))
  (type $pair (struct (field (ref null $node)) (field (ref null $node))))
  (type $bytes (array (mut i8)))
  (global $list (mut (ref null $node)) (ref.null $node))
  (table $t 4 (ref null $node))
  (func $garbage (export "garbage") (param $n i32)
    (block $done (loop $more
      (br_if $done (i32.eqz (local.get $n)))
      (drop (array.new_default $bytes (i32.const 1000)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $more))))
  (func $sum (param $l (ref null $node)) (result i64) (local $s i64)
    (block $done (loop $next
      (br_if $done (ref.is_null (local.get $l)))
      (local.set $s (i64.add (local.get $s) (struct.get $node 0 (local.get $l))))
      (local.set $l (struct.get $node 1 (local.get $l)))
      (br $next)))
    (local.get $s))
  (func (export "bytes") (param i32) (result (ref $bytes)) (array.new_default $bytes (local.get 0)))
  (func (export "clear") (global.set $list (ref.null $node)))
  ;; A list of n nodes in a global, with garbage made between nodes.
  (func (export "build_global") (param $n i32)
    (loop $more
      (global.set $list (struct.new $node (i64.extend_i32_u (local.get $n)) (global.get $list)))
      (call $garbage (i32.const 10))
      (br_if $more (local.tee $n (i32.sub (local.get $n) (i32.const 1))))))
  (func (export "sum_global") (result i64) (call $sum (global.get $list)))
  ;; Each level keeps its node in a local across calls that collect: 1 + 2 + ... + n.
  (func $deep (export "deep") (param $n i32) (result i64) (local $mine (ref null $node))
    (if (result i64) (i32.eqz (local.get $n))
      (then (i64.const 0))
      (else
        (local.set $mine (struct.new $node (i64.extend_i32_u (local.get $n)) (ref.null $node)))
        (call $garbage (i32.const 20))
        (i64.add (call $deep (i32.sub (local.get $n) (i32.const 1)))
                 (struct.get $node 0 (ref.as_non_null (local.get $mine)))))))
  ;; A node on the operand stack across a call that collects: 40 + 2.
  (func (export "stack") (param $n i32) (result i64) (local $p (ref null $pair))
    (local.set $p (struct.new $pair
      (struct.new $node (i64.const 40) (ref.null $node))
      (block (result (ref null $node))
        (call $garbage (local.get $n))
        (struct.new $node (i64.const 2) (ref.null $node)))))
    (i64.add (struct.get $node 0 (ref.as_non_null (struct.get $pair 0 (local.get $p))))
             (struct.get $node 0 (ref.as_non_null (struct.get $pair 1 (local.get $p))))))
  (func (export "make") (param i64) (result (ref $node)) (struct.new $node (local.get 0) (ref.null $node)))
  (func (export "val") (param (ref $node)) (result i64) (struct.get $node 0 (local.get 0)))
  (func (export "table_set") (param i32 i64)
    (table.set $t (local.get 0) (struct.new $node (local.get 1) (ref.null $node))))
  (func (export "table_sum") (result i64)
    (i64.add (call $sum (table.get $t (i32.const 0))) (call $sum (table.get $t (i32.const 1))))))"#;

/// Collections move objects and update every reference to them: in globals, tables, locals
/// and operand-stack values of frames stopped at calls, and host handles; what is live keeps
/// its contents through thousands of collections in a heap of 64 KiB.
#[test]
fn collections_keep_everything_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(dir.path(), "lists", LISTS);
    let region = region(1);
    let limits = StoreLimits { gc_heap_size: 64 << 10, ..StoreLimits::default() };
    let instance = Instance::new_in_store(&region, &Store::with_limits(limits), &module, &[]).unwrap();
    let kept = instance.call("make", &[Val::I64(7)]).unwrap().remove(0);
    instance.call("table_set", &[Val::I32(0), Val::I64(5)]).unwrap();
    instance.call("table_set", &[Val::I32(1), Val::I64(6)]).unwrap();
    instance.call("build_global", &[Val::I32(100)]).unwrap();
    assert_eq!(instance.call("deep", &[Val::I32(100)]).unwrap(), [Val::I64(5050)]);
    for n in [0, 1, 10, 100] {
        assert_eq!(instance.call("stack", &[Val::I32(n)]).unwrap(), [Val::I64(42)]);
    }
    instance.call("garbage", &[Val::I32(1000)]).unwrap();
    assert_eq!(instance.call("sum_global", &[]).unwrap(), [Val::I64(5050)]);
    assert_eq!(instance.call("table_sum", &[]).unwrap(), [Val::I64(11)]);
    assert_eq!(instance.call("val", &[kept]).unwrap(), [Val::I64(7)]);
}

/// A constant global holding a GC reference still changes when a collection moves its object:
/// its reads are not hoisted out of a loop or merged with one before a call (a differential
/// fuzzing finding, seed 5094815: the stale offset pointed into the evacuated half).
#[test]
fn a_constant_reference_global_is_read_again_after_a_collection() {
    const WAT: &str = r#"(module
      (type $s (struct (field i32)))
      (type $big (array i8))
      (global $g (ref null $s) (struct.new $s (i32.const 42)))
      (func $churn (drop (array.new_default $big (i32.const 1000))))
      (func (export "loop") (param $n i32) (result i32)
        (local $i i32) (local $sum i32)
        (loop $l
          (call $churn)
          (local.set $sum (i32.add (local.get $sum) (struct.get $s 0 (global.get $g))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
        (local.get $sum)))"#;
    let dir = tempfile::tempdir().unwrap();
    let module = load(dir.path(), "constant_global", WAT);
    let region = region(1);
    let limits = StoreLimits { gc_heap_size: 16 << 10, ..StoreLimits::default() };
    let instance = Instance::new_in_store(&region, &Store::with_limits(limits), &module, &[]).unwrap();
    for n in [7, 20, 33] {
        assert_eq!(instance.call("loop", &[Val::I32(n)]).unwrap(), [Val::I32(42 * n)], "{n} rounds");
    }
}

/// The next tenant's objects start as zeros, never as what an earlier tenant wrote, though
/// the next store reuses the earlier one's heap: both for the part a used heap keeps resident
/// (zeroed with stores) and for what lies beyond it (returned to the kernel).
#[test]
fn a_new_tenant_never_sees_an_old_tenants_objects() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(dir.path(), "boxes", BOXES);
    let region = region(1);
    for len in [4096, 4096, 6 << 20, 6 << 20, 4096] {
        let instance = Instance::new(&region, &module, &[]).unwrap();
        let bytes = instance.call("bytes", &[Val::I32(len)]).unwrap().remove(0);
        assert_eq!(instance.call("sum", std::slice::from_ref(&bytes)).unwrap(), [Val::I32(0)], "{len} bytes");
        instance.call("fill", &[bytes.clone(), Val::I32(0xff)]).unwrap();
        assert_eq!(instance.call("sum", &[bytes]).unwrap(), [Val::I32(len * 0xff)]);
    }
}

/// A constant expression's array length is the guest's: a 2^31-element array in a global
/// initialiser traps at instantiation (beyond the heap), never makes the host allocate it.
#[test]
fn constant_expressions_cannot_make_the_host_allocate_what_the_heap_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(
        dir.path(),
        "huge",
        r#"(module
          (type $a (array i64))
          (global (export "g") (ref $a) (array.new $a (i64.const 1) (i32.const 0x7fffffff))))"#,
    );
    let region = region(1);
    match Instance::new(&region, &module, &[]) {
        Err(kiln_runtime::InstantiationError::Trap(Trap::Wasm { code, .. })) => {
            assert_eq!(code, TrapCode::GcHeapExhausted)
        }
        Err(other) => panic!("expected a trap, got {other}"),
        Ok(_) => panic!("a 16 GiB array was made"),
    }
}
