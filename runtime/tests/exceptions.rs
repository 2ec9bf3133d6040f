//! Exception handling across the host boundary: what leaves the guest, what the host throws,
//! how tags are told apart between instances and the host, the per-store limit on exception
//! objects, and that traps, interrupts and stack overflow keep working inside handlers.

use std::path::Path;

use kiln_runtime::{
    CallError, Exception, Extern, Func, FuncType, HostError, Instance, Module, Region, RegionConfig, Store,
    StoreLimits, Tag, Trap, TrapCode, Val, ValType,
};

/// Loads `wat`, compiled by this test into `dir`.
fn load(dir: &Path, name: &str, wat: &str) -> Module {
    load_metered(dir, name, wat, false)
}

/// Loads `wat`, compiled by this test into `dir`, with fuel metering if `fuel`.
fn load_metered(dir: &Path, name: &str, wat: &str, fuel: bool) -> Module {
    let out = dir.join(format!("{name}.so"));
    // Legacy exception handling too, for its `try`/`catch`.
    let features = kiln_compiler::default_features() | kiln_compiler::WasmFeatures::LEGACY_EXCEPTIONS;
    let mut compiler = kiln_compiler::Compiler::with_features(features).unwrap();
    compiler.set_fuel_metering(fuel);
    compiler.compile_to_file(wat.as_bytes(), &out).unwrap();
    // SAFETY: compiled just now, by this test, into its own temporary directory.
    unsafe { Module::load(out) }.unwrap()
}

fn region(slots: usize) -> Region {
    Region::new(RegionConfig { slots, ..RegionConfig::default() }).unwrap()
}

fn exception(result: Result<Vec<Val>, CallError>) -> Exception {
    match result {
        Err(CallError::Trap(Trap::Exception(exception))) => exception,
        other => panic!("expected an uncaught exception, got {other:?}"),
    }
}

fn trap_code(result: Result<Vec<Val>, CallError>) -> TrapCode {
    match result {
        Err(CallError::Trap(Trap::Wasm { code, .. })) => code,
        other => panic!("expected a wasm trap, got {other:?}"),
    }
}

fn tag(instance: &Instance, name: &str) -> Tag {
    match instance.get_export(name) {
        Some(Extern::Tag(tag)) => tag,
        _ => panic!("no tag {name}"),
    }
}

const THROWER: &str = r#"(module
  (tag $e (export "e") (param i32 i64))
  (tag $other (export "other"))
  (func $deep (param i32)
    (if (local.get 0)
      (then (call $deep (i32.sub (local.get 0) (i32.const 1))))
      (else (throw $e (i32.const 7) (i64.const -1)))))
  (func (export "throw") (param i32) (call $deep (local.get 0)))
  (func (export "catch") (param i32) (result i32 i64)
    (block $h (result i32 i64)
      (try_table (catch $e $h) (call $deep (local.get 0)))
      (unreachable)))
  (func (export "ping") (result i32) (i32.const 1)))"#;

/// An exception no frame catches ends the call with `Trap::Exception`, carrying its tag and
/// payload, and leaves nothing behind: the same instance serves the next calls, and a throw
/// through 1,000 frames lands in its handler.
#[test]
fn an_uncaught_exception_reaches_the_host_with_its_tag_and_payload() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(dir.path(), "thrower", THROWER);
    let region = region(1);
    let instance = Instance::new(&region, &module, &[]).unwrap();
    for depth in [0, 10, 1000] {
        let thrown = exception(instance.call("throw", &[Val::I32(depth)]));
        assert!(thrown.is(&tag(&instance, "e")) && !thrown.is(&tag(&instance, "other")));
        assert_eq!(thrown.payload(), &[Val::I32(7), Val::I64(-1)]);
        assert_eq!(thrown.to_string(), "uncaught wasm exception carrying (7, -1)");
        assert_eq!(instance.call("ping", &[]).unwrap(), vec![Val::I32(1)]);
        assert_eq!(instance.call("catch", &[Val::I32(depth)]).unwrap(), vec![Val::I32(7), Val::I64(-1)]);
    }
}

/// Tags are compared by identity: an importer catches the exporter's exception under its own
/// name for the tag, while a module with a structurally equal tag of its own does not.
#[test]
fn instances_tell_tags_apart_by_identity() {
    let dir = tempfile::tempdir().unwrap();
    let thrower = load(dir.path(), "thrower", THROWER);
    let catcher = load(
        dir.path(),
        "catcher",
        r#"(module
          (import "m" "e" (tag $mine (param i32 i64)))
          (import "m" "throw" (func $throw (param i32)))
          (tag $lookalike (param i32 i64))
          (func (export "by_import") (result i32)
            (block $h (result i32 i64)
              (try_table (catch $mine $h) (call $throw (i32.const 3)))
              (return (i32.const -1)))
            (drop))
          (func (export "by_lookalike") (result i32)
            (block $h (result i32 i64)
              (block $all
                (try_table (catch $lookalike $h) (catch_all $all) (call $throw (i32.const 3))))
              (return (i32.const -2)))
            (drop) (drop) (i32.const -3)))"#,
    );
    let region = region(2);
    let store = Store::new();
    let a = Instance::new_in_store(&region, &store, &thrower, &[]).unwrap();
    let imports = [a.get_export("e").unwrap(), a.get_export("throw").unwrap()];
    let b = Instance::new_in_store(&region, &store, &catcher, &imports).unwrap();
    assert_eq!(b.call("by_import", &[]).unwrap(), vec![Val::I32(7)]);
    assert_eq!(b.call("by_lookalike", &[]).unwrap(), vec![Val::I32(-2)]);
}

/// A host function throws with a tag of the host's; the guest catches it like its own, or
/// lets it out to the host, which recognises its tag. A malformed throw is a host error.
#[test]
fn a_host_function_throws_a_guest_visible_exception() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(
        dir.path(),
        "guest",
        r#"(module
          (import "host" "oops" (tag $oops (param i32)))
          (import "host" "fail" (func $fail (param i32)))
          (func (export "caught") (param i32) (result i32)
            (block $h (result i32)
              (try_table (catch $oops $h) (call $fail (local.get 0)))
              (return (i32.const -1)))
            (i32.add (i32.const 1000)))
          (func (export "uncaught") (param i32) (call $fail (local.get 0))))"#,
    );
    let region = region(1);
    let store = Store::new();
    let oops = Tag::new(&store, vec![ValType::I32]);
    let foreign = Tag::new(&Store::new(), vec![ValType::I32]);
    assert!(!foreign.same(&oops) && oops.same(&oops.clone()));
    let thrown_by_host = oops.clone();
    let fail =
        Func::new_host(FuncType { params: vec![ValType::I32], results: vec![] }, move |_, params, _| match params[0] {
            Val::I32(0) => Err(HostError::throw(&thrown_by_host, vec![Val::I64(1)])),
            Val::I32(1) => Err(HostError::throw(&foreign, params.to_vec())),
            _ => Err(HostError::throw(&thrown_by_host, params.to_vec())),
        });
    let instance =
        Instance::new_in_store(&region, &store, &module, &[Extern::Tag(oops.clone()), Extern::Func(fail)]).unwrap();
    assert_eq!(instance.call("caught", &[Val::I32(42)]).unwrap(), vec![Val::I32(1042)]);
    let thrown = exception(instance.call("uncaught", &[Val::I32(5)]));
    assert!(thrown.is(&oops));
    assert_eq!(thrown.payload(), &[Val::I32(5)]);
    // A payload of the wrong type, or another store's tag, is the host's mistake, reported as
    // such (never caught by the guest).
    for (arg, complaint) in [(0, "payload"), (1, "another store")] {
        match instance.call("caught", &[Val::I32(arg)]) {
            Err(CallError::Trap(Trap::Host(err))) => assert!(err.to_string().contains(complaint), "{err}"),
            other => panic!("expected a host error, got {other:?}"),
        }
    }
}

/// A guest that keeps exnrefs cannot grow its store's exception objects past the store's
/// limit: the throw after the last one traps. Exceptions caught by payload only, or that leave
/// the guest, which nothing can refer to afterwards, are released and never count.
#[test]
fn a_tenant_cannot_pile_up_exception_objects() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(
        dir.path(),
        "pile",
        r#"(module
          (tag $e (param i32))
          (func (export "keep") (param i32) (result i32)
            (local $n i32)
            (loop $again
              (block $h (result i32 exnref)
                (try_table (catch_ref $e $h) (throw $e (local.get $n)))
                (unreachable))
              (drop) (drop)
              (local.set $n (i32.add (local.get $n) (i32.const 1)))
              (br_if $again (i32.lt_u (local.get $n) (local.get 0))))
            (local.get $n))
          (func (export "consume") (param i32) (result i32)
            (local $n i32)
            (loop $again
              (block $h (result i32)
                (try_table (catch $e $h) (throw $e (local.get $n)))
                (unreachable))
              (drop)
              (local.set $n (i32.add (local.get $n) (i32.const 1)))
              (br_if $again (i32.lt_u (local.get $n) (local.get 0))))
            (local.get $n))
          (func (export "escape") (throw $e (i32.const 1))))"#,
    );
    let region = region(1);
    // 100 objects of one i32 each (16 bytes of head, 16 of payload).
    let limits = StoreLimits { exception_memory: 100 * 32, ..StoreLimits::default() };
    let instance = Instance::new_in_store(&region, &Store::with_limits(limits), &module, &[]).unwrap();
    assert_eq!(instance.call("consume", &[Val::I32(10_000)]).unwrap(), vec![Val::I32(10_000)]);
    // Nor do exceptions that leave to the host (it keeps a copy).
    for _ in 0..1000 {
        exception(instance.call("escape", &[]));
    }
    assert_eq!(instance.call("keep", &[Val::I32(100)]).unwrap(), vec![Val::I32(100)]);
    assert_eq!(trap_code(instance.call("keep", &[Val::I32(1)])), TrapCode::TooManyExceptions);
    // The next tenant, in a new store and the same slot, starts with none.
    drop(instance);
    let next = Instance::new_in_store(&region, &Store::with_limits(limits), &module, &[]).unwrap();
    assert_eq!(next.call("keep", &[Val::I32(100)]).unwrap(), vec![Val::I32(100)]);
}

const HANDLERS: &str = r#"(module
  (tag $e)
  (func $throw (throw $e))
  (func $recurse (param i32) (result i32)
    (i32.add (i32.const 1) (call $recurse (local.get 0))))
  (func (export "trap_in_handler") (result i32)
    (block $h (try_table (catch $e $h) (call $throw)))
    (i32.div_u (i32.const 1) (i32.const 0)))
  (func (export "spin_in_handler")
    (block $h (try_table (catch $e $h) (call $throw)))
    (loop $forever (br $forever)))
  (func (export "overflow_in_handler") (result i32)
    (block $h (try_table (catch $e $h) (call $throw)))
    (call $recurse (i32.const 0)))
  (func (export "legacy_catch_then_trap") (result i32)
    try (result i32)
      call $throw
      i32.const 0
    catch $e
      unreachable
    end)
  (func (export "ping") (result i32) (i32.const 1)))"#;

/// Traps, interrupts, fuel and stack overflow inside handlers end the call as they would
/// anywhere, and the instance keeps working afterwards.
#[test]
fn traps_interrupts_and_overflow_work_inside_handlers() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(dir.path(), "handlers", HANDLERS);
    let region = region(1);
    let instance = Instance::new(&region, &module, &[]).unwrap();
    assert_eq!(trap_code(instance.call("trap_in_handler", &[])), TrapCode::IntegerDivisionByZero);
    assert_eq!(trap_code(instance.call("overflow_in_handler", &[])), TrapCode::StackOverflow);
    assert_eq!(trap_code(instance.call("legacy_catch_then_trap", &[])), TrapCode::UnreachableCodeReached);
    let interrupt = instance.interrupt_handle();
    let spinning = std::thread::spawn({
        let instance = instance.clone();
        move || instance.call("spin_in_handler", &[])
    });
    std::thread::sleep(std::time::Duration::from_millis(50));
    interrupt.interrupt();
    assert_eq!(trap_code(spinning.join().unwrap()), TrapCode::Interrupt);
    instance.store().clear_interrupt();
    assert_eq!(instance.call("ping", &[]).unwrap(), vec![Val::I32(1)]);

    drop(instance);
    let metered = load_metered(dir.path(), "metered", HANDLERS, true);
    let instance = Instance::new(&region, &metered, &[]).unwrap();
    assert!(instance.store().set_fuel(1_000_000));
    assert_eq!(trap_code(instance.call("spin_in_handler", &[])), TrapCode::OutOfFuel);
    assert!(instance.store().set_fuel(1_000));
    assert_eq!(instance.call("ping", &[]).unwrap(), vec![Val::I32(1)]);
}

/// An exnref the host holds can go back into wasm of its own store (and be rethrown there),
/// never into another store's.
#[test]
fn exnref_values_cross_the_host_boundary_within_their_store() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(
        dir.path(),
        "exnref",
        r#"(module
          (tag $e (export "e") (param i32))
          (global $kept (export "kept") (mut exnref) (ref.null exn))
          (table $shelf (export "shelf") 1 exnref)
          (func (export "make") (result exnref)
            (local $exn exnref)
            (block $h (result i32 exnref)
              (try_table (catch_ref $e $h) (throw $e (i32.const 9)))
              (unreachable))
            (local.set $exn)
            (drop)
            (global.set $kept (local.get $exn))
            (table.set $shelf (i32.const 0) (local.get $exn))
            (local.get $exn))
          (func (export "rethrow") (param exnref) (throw_ref (local.get 0)))
          (func (export "rethrow_kept") (throw_ref (global.get $kept)))
          (func (export "rethrow_shelved") (throw_ref (table.get $shelf (i32.const 0)))))"#,
    );
    let region = region(2);
    let instance = Instance::new(&region, &module, &[]).unwrap();
    let made = instance.call("make", &[]).unwrap();
    let [Val::ExnRef(Some(exn))] = made.as_slice() else { panic!("expected an exnref, got {made:?}") };
    assert!(exn.is(&tag(&instance, "e")));
    let thrown = exception(instance.call("rethrow", &[Val::ExnRef(Some(exn.clone()))]));
    assert_eq!(thrown.payload(), &[Val::I32(9)]);
    assert_eq!(trap_code(instance.call("rethrow", &[Val::ExnRef(None)])), TrapCode::NullExceptionReference);
    // The same object, kept in a global and a table across calls, and seen by the host there.
    for rethrow in ["rethrow_kept", "rethrow_shelved"] {
        assert_eq!(exception(instance.call(rethrow, &[])).payload(), &[Val::I32(9)]);
    }
    let Some(Extern::Global(kept)) = instance.get_export("kept") else { panic!("global") };
    assert_eq!(kept.get().unwrap(), Val::ExnRef(Some(exn.clone())));
    let other = Instance::new(&region, &module, &[]).unwrap();
    assert!(matches!(
        other.call("rethrow", &[Val::ExnRef(Some(exn.clone()))]),
        Err(CallError::BadArguments(message)) if message.contains("another store")
    ));
}

/// An exception's tag is compared by the address of its definition, so that address must not
/// be reused while the exception can still be caught. Review finding: the throwing instance
/// was not kept alive, so a new instance of the same module took its warm slot, VM context and
/// tag address, and caught the old exception as its own (payload of one tag read as another's:
/// type confusion). Now the thrower is pinned to the store.
#[test]
fn a_kept_exception_never_matches_a_later_instances_tag() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(
        dir.path(),
        "tagged",
        r#"(module
          (tag $t (param i64))
          (func (export "make") (result exnref)
            (block $h (result exnref)
              (try_table (catch_all_ref $h) (throw $t (i64.const 0x4141)))
              (unreachable)))
          (func (export "mine") (param exnref) (result i64)
            (block $h (result i64)
              (block $other
                (try_table (catch $t $h) (catch_all $other) (throw_ref (local.get 0))))
              (return (i64.const -1)))))"#,
    );
    let region = region(2);
    let store = Store::new();
    let first = Instance::new_in_store(&region, &store, &module, &[]).unwrap();
    let made = first.call("make", &[]).unwrap();
    assert_eq!(first.call("mine", &made).unwrap(), vec![Val::I64(0x4141)], "its own tag");
    drop(first);
    let second = Instance::new_in_store(&region, &store, &module, &[]).unwrap();
    assert_eq!(second.call("mine", &made).unwrap(), vec![Val::I64(-1)], "another instance's tag");
    assert_eq!(store.pinned_instances(), 1, "the thrower lives as long as the store");
}
