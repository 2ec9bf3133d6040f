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

/// An allocation storm stops at the store's GC heap limit with "GC heap exhausted", the store
/// stays usable for what fits, and a new store starts with an empty heap.
#[test]
fn allocation_is_bounded_by_the_store_limit() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(dir.path(), "boxes", BOXES);
    let region = region(2);
    let limits = StoreLimits { gc_heap_size: 64 << 10, ..StoreLimits::default() };
    let store = Store::with_limits(limits);
    let instance = Instance::new_in_store(&region, &store, &module, &[]).unwrap();
    // 1,016-byte arrays: 64 fit in 64 KiB, 1,000 do not.
    assert_eq!(trap_code(instance.call("churn", &[Val::I32(1000)])), TrapCode::GcHeapExhausted);
    assert_eq!(trap_code(instance.call("bytes", &[Val::I32(100 << 10)])), TrapCode::GcHeapExhausted);
    assert_eq!(trap_code(instance.call("bytes", &[Val::I32(-1)])), TrapCode::GcHeapExhausted);
    assert!(instance.call("box", &[Val::I64(1)]).is_ok(), "a small object still fits");

    let fresh = Instance::new_in_store(&region, &Store::with_limits(limits), &module, &[]).unwrap();
    assert!(fresh.call("churn", &[Val::I32(50)]).is_ok(), "a new store's heap is empty");
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
