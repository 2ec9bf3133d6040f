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
        Err(CallError::Trap(Trap::Wasm(code))) => code,
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[test]
fn tenants_stay_isolated_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let so = dir.path().join("tenant.so");
    kiln_compiler::Compiler::new().unwrap().compile_to_file(TENANT.as_bytes(), &so).unwrap();
    let module = load(&so).unwrap();
    let region = Region::new(RegionConfig { slots: 6, ..Default::default() }).unwrap();
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let (module, region) = (module.clone(), region.clone());
            std::thread::spawn(move || {
                for i in 0..150u32 {
                    let tenant = Instance::new(&region, &module, &[]).unwrap();
                    // Fresh: exactly what the module defines, whatever ran in this slot before.
                    assert_eq!(tenant.call("seed", &[]).unwrap(), vec![Val::I32(i32::from_le_bytes(*b"kiln"))]);
                    assert_eq!(tenant.call("pages", &[]).unwrap(), vec![Val::I32(1)]);
                    assert_eq!(tenant.call("scan", &[]).unwrap(), vec![Val::I32(0)], "thread {t} tenant {i}: stale bytes");
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
