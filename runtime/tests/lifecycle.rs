//! The instance lifecycle end to end: compile with kiln-compiler, load the `.so`, instantiate
//! in region slots, call, trap, tear down, reuse.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_runtime::{
    CallError, Extern, Func, FuncType, HostError, Instance, InstantiationError, LoadError, Module, Region,
    RegionConfig, Store, Trap, TrapCode, Val, ValType,
};

/// Compiles `wat` into a shared object inside `dir`.
fn compile(dir: &Path, name: &str, wat: &str) -> PathBuf {
    let out = dir.join(format!("{name}.so"));
    kiln_compiler::Compiler::new().unwrap().compile_to_file(wat.as_bytes(), &out).unwrap();
    out
}

/// Loads a shared object. Every object these tests load was compiled by them, or is a damaged
/// or foreign file that the loader's checks must refuse before `dlopen` runs anything.
fn load(path: impl AsRef<std::path::Path>) -> Result<Module, kiln_runtime::LoadError> {
    // SAFETY: see above.
    unsafe { Module::load(path) }
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

const TENANT: &str = r#"
(module
  (memory (export "mem") 1)
  (global $g (mut i32) (i32.const 7))
  (data (i32.const 16) "seed")
  (func (export "dirty") (param i32)
    (i32.store (i32.const 0) (local.get 0))
    (i32.store (i32.const 65532) (local.get 0))
    (global.set $g (local.get 0)))
  (func (export "peek") (param i32) (result i32) (i32.load (local.get 0)))
  (func (export "global") (result i32) (global.get $g))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "size") (result i32) (memory.size))
  (func (export "boom") (unreachable))
  (func $fac (export "fac") (param i64) (result i64)
    (if (result i64) (i64.eqz (local.get 0)) (then (i64.const 1))
      (else (i64.mul (local.get 0) (call $fac (i64.sub (local.get 0) (i64.const 1)))))))
  (func $deep (export "deep") (param i32) (result i32)
    (i32.add (i32.const 1) (call $deep (local.get 0))))
  (func (export "div") (param i32 i32) (result i32) (i32.div_s (local.get 0) (local.get 1)))
  (func (export "oob") (result i32) (i32.load (i32.const 65536)))
  (func (export "trunc") (param f32) (result i32) (i32.trunc_f32_s (local.get 0)))
  (type $v (func))
  (table 2 funcref)
  (elem (i32.const 0) $fac)
  (func (export "indirect") (param i32) (call_indirect (type $v) (local.get 0)))
)
"#;

#[test]
fn a_trapped_slot_is_reused_and_the_next_tenant_sees_fresh_state() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(compile(dir.path(), "tenant", TENANT)).unwrap();
    let region = region(1);

    let first = Instance::new(&region, &module, &[]).unwrap();
    first.call("dirty", &[Val::I32(0x5a5a_5a5a)]).unwrap();
    assert_eq!(first.call("grow", &[Val::I32(2)]).unwrap(), vec![Val::I32(1)]);
    first.call("dirty", &[Val::I32(-1)]).unwrap();
    assert_eq!(first.call("global", &[]).unwrap(), vec![Val::I32(-1)]);
    assert_eq!(trap_code(first.call("boom", &[])), TrapCode::UnreachableCodeReached);
    assert_eq!(region.free_slots(), 0);
    drop(first);
    assert_eq!(region.free_slots(), 1);

    let second = Instance::new(&region, &module, &[]).unwrap();
    assert_eq!(second.call("peek", &[Val::I32(0)]).unwrap(), vec![Val::I32(0)], "heap must be zeroed");
    assert_eq!(second.call("peek", &[Val::I32(65532)]).unwrap(), vec![Val::I32(0)]);
    assert_eq!(second.call("peek", &[Val::I32(16)]).unwrap(), vec![Val::I32(i32::from_le_bytes(*b"seed"))]);
    assert_eq!(second.call("global", &[]).unwrap(), vec![Val::I32(7)], "globals must be re-initialised");
    assert_eq!(second.call("size", &[]).unwrap(), vec![Val::I32(1)], "memory must shrink back");
    // The pages the first tenant grew into are inaccessible again.
    assert_eq!(trap_code(second.call("oob", &[])), TrapCode::HeapOutOfBounds);
}

#[test]
fn extra_memories_are_kept_by_the_slot_and_wiped_between_tenants() {
    let dir = tempfile::tempdir().unwrap();
    // Memory 1 starts with one page and data; memory 2 with none. A second module with a
    // bigger memory 1 then a smaller one checks that accessibility follows each tenant.
    let wat = |pages: u32| {
        format!(
            r#"(module
              (memory $a 1)
              (memory $b {pages} 8)
              (memory $c 0 4)
              (data (memory $b) (i32.const 8) "\2a")
              (func (export "poke") (param i32 i32) (i32.store $b (local.get 0) (local.get 1)))
              (func (export "peek") (param i32) (result i32) (i32.load $b (local.get 0)))
              (func (export "grow") (param i32) (result i32) (memory.grow $b (local.get 0)))
              (func (export "size") (result i32) (memory.size $b))
              (func (export "grow_c") (result i32) (memory.grow $c (i32.const 1)))
              (func (export "poke_c") (param i32) (i32.store $c (i32.const 0) (local.get 0)))
              (func (export "peek_c") (result i32) (i32.load $c (i32.const 0))))"#
        )
    };
    let small = load(compile(dir.path(), "small", &wat(1))).unwrap();
    let big = load(compile(dir.path(), "big", &wat(3))).unwrap();
    assert!(matches!(small.metadata().heap_images.as_slice(), [None, Some(_), None]), "memory 1 has an image");
    assert!(small.maps_heap_image());
    let region = region(1);

    let first = Instance::new(&region, &small, &[]).unwrap();
    assert_eq!(first.call("peek", &[Val::I32(8)]).unwrap(), vec![Val::I32(42)], "data segment of memory 1");
    first.call("poke", &[Val::I32(100), Val::I32(-1)]).unwrap();
    assert_eq!(first.call("grow", &[Val::I32(2)]).unwrap(), vec![Val::I32(1)]);
    first.call("poke", &[Val::I32(2 * 65536 + 4), Val::I32(-1)]).unwrap();
    assert_eq!(first.call("grow_c", &[]).unwrap(), vec![Val::I32(0)]);
    first.call("poke_c", &[Val::I32(77)]).unwrap();
    drop(first);

    // Same module, same slot: fresh contents and sizes.
    let second = Instance::new(&region, &small, &[]).unwrap();
    assert_eq!(second.call("peek", &[Val::I32(100)]).unwrap(), vec![Val::I32(0)], "memory 1 wiped");
    assert_eq!(second.call("peek", &[Val::I32(8)]).unwrap(), vec![Val::I32(42)]);
    assert_eq!(second.call("size", &[]).unwrap(), vec![Val::I32(1)]);
    assert_eq!(trap_code(second.call("peek", &[Val::I32(2 * 65536 + 4)])), TrapCode::HeapOutOfBounds);
    assert_eq!(trap_code(second.call("peek_c", &[])), TrapCode::HeapOutOfBounds, "memory 2 back to 0 pages");
    assert_eq!(second.call("grow_c", &[]).unwrap(), vec![Val::I32(0)]);
    assert_eq!(second.call("peek_c", &[]).unwrap(), vec![Val::I32(0)], "memory 2 wiped");
    drop(second);

    // Another module in the same slot: a bigger, then a smaller memory 1 again.
    let third = Instance::new(&region, &big, &[]).unwrap();
    assert_eq!(third.call("peek", &[Val::I32(2 * 65536 + 4)]).unwrap(), vec![Val::I32(0)]);
    third.call("poke", &[Val::I32(2 * 65536 + 4), Val::I32(5)]).unwrap();
    drop(third);
    let fourth = Instance::new(&region, &small, &[]).unwrap();
    assert_eq!(trap_code(fourth.call("peek", &[Val::I32(65536)])), TrapCode::HeapOutOfBounds);
    assert_eq!(fourth.call("grow", &[Val::I32(2)]).unwrap(), vec![Val::I32(1)]);
    assert_eq!(fourth.call("peek", &[Val::I32(2 * 65536 + 4)]).unwrap(), vec![Val::I32(0)]);
}

/// Two memories with images on both sides of the keep-resident boundaries tested below, a
/// table and globals; `scribble(seed, from, len)` grows both memories, overwrites `len` bytes of
/// memory 0 from `from`, its grown page, all of memory 1, the table and the global.
const SCRIBBLER: &str = r#"
(module
  (memory (export "m0") 3 5)
  (memory (export "m1") 1 2)
  (table (export "t") 4 funcref)
  (global (export "g") (mut i64) (i64.const 11))
  (data (memory 0) (i32.const 8) "first page")
  (data (memory 0) (i32.const 70000) "second page")
  (data (memory 0) (i32.const 140000) "third page")
  (data (memory 1) (i32.const 4100) "extra memory")
  (elem (i32.const 1) $f)
  (func $f (result i32) (i32.const 1))
  (func (export "scribble") (param $seed i32) (param $from i32) (param $len i32)
    (drop (memory.grow 0 (i32.const 1)))
    (drop (memory.grow 1 (i32.const 1)))
    (memory.fill 0 (local.get $from) (local.get $seed) (local.get $len))
    (memory.fill 0 (i32.const 196608) (local.get $seed) (i32.const 65536))
    (memory.fill 1 (i32.const 0) (local.get $seed) (i32.const 131072))
    (table.fill (i32.const 0) (ref.func $f) (i32.const 4))
    (global.set 0 (i64.extend_i32_u (local.get $seed)))))
"#;

#[test]
fn a_warm_slot_is_reset_to_the_module_image_whatever_stays_resident() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(compile(dir.path(), "scribbler", SCRIBBLER)).unwrap();
    assert!(module.maps_heap_image());
    // Nothing, one page, less than one wasm page, a whole memory and more than any memory stay
    // resident; each way, the next tenant must see exactly what a fresh instance sees.
    // And with a ceiling of 0 on what idle slots keep, the trimmer decommits the slot after
    // each tenant, while the next one waits for it.
    let configs = [0, 4096, 12 * 1024, 64 * 1024, 1 << 20].map(|keep_resident| (keep_resident, usize::MAX));
    for (keep_resident, max_idle_resident) in configs.into_iter().chain([(64 * 1024, 0), (1 << 20, 0)]) {
        let config = RegionConfig { slots: 1, keep_resident, max_idle_resident, ..RegionConfig::default() };
        let region = Region::new(config).unwrap();
        let snapshot = |instance: &Instance| {
            let memory = |name: &str| match instance.get_export(name) {
                Some(Extern::Memory(m)) => m.read(0, m.size_bytes() as usize).unwrap(),
                _ => panic!("{name} is not a memory"),
            };
            let table = match instance.get_export("t") {
                Some(Extern::Table(t)) => {
                    (0..t.size()).map(|i| matches!(t.get(i).unwrap(), Val::FuncRef(None))).collect::<Vec<_>>()
                }
                _ => panic!("t is not a table"),
            };
            let global = match instance.get_export("g").map(|g| match g {
                Extern::Global(g) => g.get().unwrap(),
                _ => panic!("g is not a global"),
            }) {
                Some(Val::I64(value)) => value,
                _ => panic!("g is not an i64 global"),
            };
            (memory("m0"), memory("m1"), table, global)
        };
        let pristine = snapshot(&Instance::new(&region, &module, &[]).unwrap());
        assert_eq!(&pristine.0[8..18], b"first page");
        assert_eq!(pristine.2, [true, false, true, true]);
        for (round, (from, len)) in
            [(0, 196608), (4096, 8192), (60000, 80000), (8, 4), (139264, 4096)].into_iter().enumerate()
        {
            let tenant = Instance::new(&region, &module, &[]).unwrap();
            assert_eq!(snapshot(&tenant), pristine, "keep_resident {keep_resident}, before round {round}");
            let seed = 0x41 + round as i32;
            tenant.call("scribble", &[Val::I32(seed), Val::I32(from), Val::I32(len)]).unwrap();
            assert_ne!(snapshot(&tenant), pristine);
        }
        let last = Instance::new(&region, &module, &[]).unwrap();
        assert_eq!(snapshot(&last), pristine, "keep_resident {keep_resident}, after the last round");
    }
}

/// Stores through one pointer share the mark of the first (the compiler elides the others'
/// when the first mark's reach, `kiln_abi::DIRTY_MARK_REACH` bytes, covers them): even when the
/// pointer sits at the end of a page and the later stores land in the next page, the next
/// tenant sees none of them, whatever stays resident.
#[test]
fn stores_sharing_one_dirty_mark_are_reset_across_a_page_boundary() {
    let wat = r#"(module (memory (export "m") 2)
      (func (export "frame") (param $sp i32) (param $v i64)
        (i64.store (local.get $sp) (local.get $v))
        (i64.store offset=16 (local.get $sp) (local.get $v))
        (i32.store offset=40 (local.get $sp) (i32.wrap_i64 (local.get $v)))
        (i64.store offset=56 (local.get $sp) (local.get $v))))"#;
    let reach = kiln_abi::DIRTY_MARK_REACH as usize;
    assert!(56 + 8 <= reach, "every store of `frame` lies within the first one's reach");
    let dir = tempfile::tempdir().unwrap();
    let module = load(compile(dir.path(), "frame", wat)).unwrap();
    for keep_resident in [0, 64 * 1024] {
        let region = Region::new(RegionConfig { slots: 1, keep_resident, ..RegionConfig::default() }).unwrap();
        for sp in [4096 - 8, 4096 - 1, 4096 - 20, 100] {
            let memory_of = |instance: &Instance| match instance.get_export("m") {
                Some(Extern::Memory(memory)) => memory.read(0, 2 * 65536).unwrap(),
                _ => panic!("m is not a memory"),
            };
            let tenant = Instance::new(&region, &module, &[]).unwrap();
            tenant.call("frame", &[Val::I32(sp), Val::I64(-1)]).unwrap();
            let at = sp as usize + 56;
            assert_eq!(memory_of(&tenant)[at..at + 8], [0xff; 8], "the last store happened");
            drop(tenant);
            let next = Instance::new(&region, &module, &[]).unwrap();
            assert!(memory_of(&next).iter().all(|&b| b == 0), "keep_resident {keep_resident}, sp {sp}: a store leaked");
        }
    }
}

/// Stores addressed `base + c` (as an unrolled `memset` addresses them) share the mark of the
/// store at `base`, across a page boundary too; and where `base + c` wraps around a memory of
/// 4 GiB, to its first bytes, teardown still resets them.
#[test]
fn stores_at_a_pointer_plus_a_constant_share_its_mark_and_are_reset_even_when_they_wrap() {
    let unrolled = |pages: u32| {
        format!(
            r#"(module (memory (export "m") {pages})
              (func (export "fill") (param $p i32) (param $v i64)
                (i64.store (local.get $p) (local.get $v))
                (i64.store (i32.add (local.get $p) (i32.const 24)) (local.get $v))
                (i64.store offset=8 (i32.add (i32.const 32) (local.get $p)) (local.get $v))
                (i64.store (i32.add (local.get $p) (i32.const 8)) (local.get $v))
                (i64.store (i32.add (local.get $p) (i32.const 60)) (local.get $v)))
              (func (export "peek") (param $at i32) (result i64) (i64.load (local.get $at))))"#
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let small = load(compile(dir.path(), "unrolled", &unrolled(2))).unwrap();
    let large = load(compile(dir.path(), "unrolled_4g", &unrolled(65536))).unwrap();
    for keep_resident in [0, 64 * 1024] {
        let region = Region::new(RegionConfig { slots: 1, keep_resident, ..RegionConfig::default() }).unwrap();
        for p in [4096 - 1, 4096 - 8, 4096 - 20, 4096 - 31, 100] {
            let tenant = Instance::new(&region, &small, &[]).unwrap();
            tenant.call("fill", &[Val::I32(p), Val::I64(-1)]).unwrap();
            assert_eq!(tenant.call("peek", &[Val::I32(p + 24)]).unwrap(), [Val::I64(-1)]);
            drop(tenant);
            let next = Instance::new(&region, &small, &[]).unwrap();
            let Some(Extern::Memory(memory)) = next.get_export("m") else { panic!("m is not a memory") };
            let bytes = memory.read(0, 2 * 65536).unwrap();
            assert!(bytes.iter().all(|&b| b == 0), "keep_resident {keep_resident}, p {p}: a store leaked");
        }
        // At the top of 4 GiB, `p + 24` and `(p + 32) + offset 8` wrap to the first bytes of
        // the memory.
        let tenant = Instance::new(&region, &large, &[]).unwrap();
        tenant.call("fill", &[Val::I32(-24), Val::I64(-1)]).unwrap();
        assert_eq!(tenant.call("peek", &[Val::I32(0)]).unwrap(), [Val::I64(-1)], "the store wrapped");
        assert_eq!(tenant.call("peek", &[Val::I32(16)]).unwrap(), [Val::I64(-1)], "the store wrapped");
        assert_eq!(tenant.call("peek", &[Val::I32(36)]).unwrap(), [Val::I64(-1)], "the store wrapped");
        drop(tenant);
        let next = Instance::new(&region, &large, &[]).unwrap();
        for at in [0, 16, 36, -24, -16] {
            assert_eq!(
                next.call("peek", &[Val::I32(at)]).unwrap(),
                [Val::I64(0)],
                "keep_resident {keep_resident}: {at}"
            );
        }
    }
}

/// Kiln maps its objects itself, but they stay plain shared objects: the system's `dlopen`
/// loads one and finds its header.
#[test]
fn compiled_objects_load_with_the_system_dlopen() {
    let dir = tempfile::tempdir().unwrap();
    let so = compile(dir.path(), "plain", r#"(module (memory 1) (func (export "f") (result i32) (i32.const 7)))"#);
    let path = std::ffi::CString::new(so.to_str().unwrap()).unwrap();
    let symbol = std::ffi::CString::new(kiln_abi::MODULE_SYMBOL).unwrap();
    // SAFETY: a file Kiln's compiler just wrote (nothing runs at load time); the header is read
    // while the library is open.
    unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        assert!(!handle.is_null(), "dlopen refused a compiled object");
        let header = libc::dlsym(handle, symbol.as_ptr()).cast::<[u8; 8]>();
        assert!(!header.is_null(), "no {} symbol", kiln_abi::MODULE_SYMBOL);
        assert_eq!(*header, kiln_abi::MODULE_MAGIC);
        assert_eq!(libc::dlclose(handle), 0);
    }
    // And Kiln's own mapping runs it.
    let module = load(&so).unwrap();
    let region = Region::new(RegionConfig { slots: 1, ..RegionConfig::default() }).unwrap();
    let instance = Instance::new(&region, &module, &[]).unwrap();
    assert_eq!(instance.call("f", &[]).unwrap(), [Val::I32(7)]);
}

/// A store that begins at the end of a page writes the next one too: teardown restores that
/// page as well, and counts it in what the slot keeps resident (or, over `keep_resident`,
/// has the kernel take it back).
#[test]
fn a_page_that_a_store_spilled_into_counts_as_kept_resident() {
    let wat = r#"(module (memory (export "m") 2)
      (func (export "spill") (param $at i32) (i64.store (local.get $at) (i64.const -1))))"#;
    let dir = tempfile::tempdir().unwrap();
    let module = load(compile(dir.path(), "spill", wat)).unwrap();
    for (keep_pages, kept_pages) in [(2, 2), (1, 1)] {
        let config = RegionConfig { slots: 1, keep_resident: keep_pages * 4096, ..RegionConfig::default() };
        let region = Region::new(config).unwrap();
        let tenant = Instance::new(&region, &module, &[]).unwrap();
        tenant.call("spill", &[Val::I32(4096 - 1)]).unwrap();
        drop(tenant);
        assert_eq!(region.idle_resident(), kept_pages * 4096, "keep_resident of {keep_pages} pages");
        let next = Instance::new(&region, &module, &[]).unwrap();
        let Some(Extern::Memory(memory)) = next.get_export("m") else { panic!("m is not a memory") };
        assert!(memory.read(0, 2 * 65536).unwrap().iter().all(|&b| b == 0), "a store leaked");
    }
}

/// Teardown restores a run of written pages at once, whatever part of it `keep_resident`
/// keeps (the rest goes back to the kernel): with the module's image across the run's first
/// pages and a store that spilled past its end, every budget leaves the next tenant exactly the
/// image, and no more resident than the budget.
#[test]
fn a_run_of_written_pages_is_reset_to_the_image_whatever_the_budget_keeps() {
    let wat = r#"(module (memory (export "m") 6)
      (data (i32.const 4000) "an image that straddles the first page boundary")
      (data (i32.const 8190) "and the second")
      (func (export "dirty") (param $pages i32)
        (memory.fill (i32.const 0) (i32.const 0xab) (i32.mul (local.get $pages) (i32.const 4096)))
        (i64.store (i32.sub (i32.mul (local.get $pages) (i32.const 4096)) (i32.const 4)) (i64.const -1))))"#;
    let dir = tempfile::tempdir().unwrap();
    let module = load(compile(dir.path(), "run", wat)).unwrap();
    let memory_of = |instance: &Instance| match instance.get_export("m") {
        Some(Extern::Memory(memory)) => memory.read(0, 6 * 65536).unwrap(),
        _ => panic!("m is not a memory"),
    };
    for keep_pages in [0, 1, 2, 3, 4, 5, 16] {
        let config = RegionConfig { slots: 1, keep_resident: keep_pages * 4096, ..RegionConfig::default() };
        let region = Region::new(config).unwrap();
        let image = memory_of(&Instance::new(&region, &module, &[]).unwrap());
        assert_eq!(&image[4000..4002], b"an");
        for pages in [4, 1, 3] {
            let tenant = Instance::new(&region, &module, &[]).unwrap();
            tenant.call("dirty", &[Val::I32(pages)]).unwrap();
            drop(tenant);
            assert!(region.idle_resident() <= keep_pages * 4096, "keep {keep_pages} pages, wrote {pages}");
            let next = Instance::new(&region, &module, &[]).unwrap();
            assert!(memory_of(&next) == image, "keep {keep_pages} pages, wrote {pages}: not the image");
        }
    }
}

#[test]
fn idle_slots_keep_no_more_than_the_ceiling_resident_and_still_isolate_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(compile(dir.path(), "tenant", TENANT)).unwrap();
    let ceiling = 16 * 1024;
    let config = RegionConfig { slots: 8, max_idle_resident: ceiling, ..RegionConfig::default() };
    let region = Region::new(config).unwrap();
    // Eight tenants each leave two written pages (8 KiB) behind, resident for the next.
    let tenants: Vec<Instance> = (0..8).map(|_| Instance::new(&region, &module, &[]).unwrap()).collect();
    for tenant in &tenants {
        tenant.call("dirty", &[Val::I32(99)]).unwrap();
    }
    drop(tenants);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while region.idle_resident() > ceiling {
        assert!(std::time::Instant::now() < deadline, "{} bytes idle, over {ceiling}", region.idle_resident());
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // Trimmed or not, every next tenant starts clean.
    let tenants: Vec<Instance> = (0..8).map(|_| Instance::new(&region, &module, &[]).unwrap()).collect();
    for tenant in &tenants {
        assert_eq!(tenant.call("peek", &[Val::I32(0)]).unwrap(), [Val::I32(0)]);
        assert_eq!(tenant.call("peek", &[Val::I32(65532)]).unwrap(), [Val::I32(0)]);
        assert_eq!(tenant.call("global", &[]).unwrap(), [Val::I32(7)]);
    }
}

#[test]
fn a_trap_carries_the_guest_frames_innermost_first() {
    let dir = tempfile::tempdir().unwrap();
    let wat = r#"(module
      (func $inner (param i32) (result i32) (i32.div_u (i32.const 1) (local.get 0)))
      (func $middle (param i32) (result i32) (i32.add (call $inner (local.get 0)) (i32.const 1)))
      (func (export "outer") (param i32) (result i32) (call $middle (local.get 0)))
      (func $deep (export "deep") (param i32) (result i32) (i32.add (call $deep (local.get 0)) (i32.const 1)))
      (memory 1)
      (func $filler (memory.fill (i32.const 65000) (i32.const 0) (i32.const 1000)))
      (func (export "fill") (call $filler)))"#;
    let module = load(compile(dir.path(), "frames", wat)).unwrap();
    let region = region(1);
    let instance = Instance::new(&region, &module, &[]).unwrap();
    let frames = |trap: &Trap| -> Vec<(u32, Option<String>)> {
        trap.backtrace().frames().iter().map(|f| (f.func_index, f.name.as_deref().map(String::from))).collect()
    };
    // Each frame's module offset is that of the instruction it is at, so the byte there is
    // that instruction's opcode.
    let bytes = wat::parse_str(wat).unwrap();
    let opcodes = |trap: &Trap| -> Vec<Option<u8>> {
        trap.backtrace().frames().iter().map(|f| f.module_offset.map(|o| bytes[o as usize])).collect()
    };
    const CALL: Option<u8> = Some(0x10);
    let expected = [(0, Some("inner".to_string())), (1, Some("middle".to_string())), (2, None)];
    // Through the untyped path (array trampoline) and the typed direct one.
    let Err(CallError::Trap(trap)) = instance.call("outer", &[Val::I32(0)]) else { panic!("outer(0) must trap") };
    assert_eq!(trap.code(), Some(TrapCode::IntegerDivisionByZero));
    assert_eq!(frames(&trap), expected);
    assert_eq!(opcodes(&trap), [Some(0x6e), CALL, CALL], "i32.div_u, then two calls");
    assert_eq!(trap.backtrace().frames_omitted(), 0);
    let listing = trap.backtrace().to_string();
    let div_offset = trap.backtrace().frames()[0].module_offset.unwrap();
    assert!(listing.contains(&format!("0: {div_offset:>#8x} - inner (wasm function 0)")), "{listing}");
    assert!(listing.contains(" - wasm function 2"), "{listing}");
    let outer = instance.get_func("outer").unwrap().typed::<i32, i32>().unwrap();
    let Err(CallError::Trap(trap)) = outer.call(0) else { panic!("outer(0) must trap") };
    assert_eq!(frames(&trap), expected);
    // A deep recursion keeps the innermost frames and counts the rest.
    let Err(CallError::Trap(trap)) = instance.call("deep", &[Val::I32(0)]) else { panic!("deep must trap") };
    assert_eq!(trap.code(), Some(TrapCode::StackOverflow));
    let deep = frames(&trap);
    assert!(deep.len() == 100 && deep.iter().all(|f| f == &(3, Some("deep".to_string()))), "{deep:?}");
    assert!(opcodes(&trap)[1..].iter().all(|&op| op == CALL), "{:?}", opcodes(&trap));
    assert!(trap.backtrace().frames_omitted() > 1000, "{}", trap.backtrace().frames_omitted());
    // A trap raised inside the runtime (memory.fill out of bounds) has the frames too.
    let Err(CallError::Trap(trap)) = instance.call("fill", &[]) else { panic!("fill must trap") };
    assert_eq!(trap.code(), Some(TrapCode::HeapOutOfBounds));
    assert_eq!(frames(&trap), [(4, Some("filler".to_string())), (5, None)]);
    assert_eq!(opcodes(&trap), [Some(0xfc), CALL], "memory.fill, then a call");
    // The instance still works after all three.
    assert_eq!(instance.call("outer", &[Val::I32(1)]).unwrap(), [Val::I32(2)]);
}

#[test]
fn reset_gives_a_fresh_instance_and_refuses_while_shared() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(compile(dir.path(), "tenant", TENANT)).unwrap();
    let region = region(1);
    let instance = Instance::new(&region, &module, &[]).unwrap();
    instance.call("dirty", &[Val::I32(99)]).unwrap();
    let held = instance.clone();
    assert!(matches!(held.clone().reset(), Err(InstantiationError::InUse)));
    drop(held);
    let instance = instance.reset().unwrap();
    assert_eq!(instance.call("peek", &[Val::I32(0)]).unwrap(), vec![Val::I32(0)]);
    assert_eq!(instance.call("global", &[]).unwrap(), vec![Val::I32(7)]);
}

#[test]
fn every_trap_kind_is_reported_and_the_instance_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(compile(dir.path(), "tenant", TENANT)).unwrap();
    let region = region(1);
    let instance = Instance::new(&region, &module, &[]).unwrap();
    let cases: Vec<(&str, Vec<Val>, TrapCode, &str)> = vec![
        ("boom", vec![], TrapCode::UnreachableCodeReached, "unreachable"),
        ("div", vec![Val::I32(1), Val::I32(0)], TrapCode::IntegerDivisionByZero, "integer divide by zero"),
        ("div", vec![Val::I32(i32::MIN), Val::I32(-1)], TrapCode::IntegerOverflow, "integer overflow"),
        ("oob", vec![], TrapCode::HeapOutOfBounds, "out of bounds memory access"),
        (
            "trunc",
            vec![Val::F32(f32::NAN.to_bits())],
            TrapCode::BadConversionToInteger,
            "invalid conversion to integer",
        ),
        ("trunc", vec![Val::F32(3e9f32.to_bits())], TrapCode::IntegerOverflow, "integer overflow"),
        ("deep", vec![Val::I32(0)], TrapCode::StackOverflow, "call stack exhausted"),
        ("indirect", vec![Val::I32(0)], TrapCode::BadSignature, "indirect call type mismatch"),
        ("indirect", vec![Val::I32(1)], TrapCode::IndirectCallToNull, "uninitialized element"),
        ("indirect", vec![Val::I32(2)], TrapCode::TableOutOfBounds, "undefined element"),
    ];
    for (name, args, code, message) in cases {
        let result = instance.call(name, &args);
        let err = result.as_ref().unwrap_err().to_string();
        assert_eq!(trap_code(result), code, "{name}");
        assert_eq!(err, message);
        // The instance is still usable after each trap.
        assert_eq!(instance.call("fac", &[Val::I64(10)]).unwrap(), vec![Val::I64(3628800)]);
    }
}

#[test]
fn threads_trap_and_compute_at_the_same_time() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(compile(dir.path(), "tenant", TENANT)).unwrap();
    let region = region(8);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let module = module.clone();
            let region = region.clone();
            std::thread::spawn(move || {
                for i in 0..50i64 {
                    let instance = Instance::new(&region, &module, &[]).unwrap();
                    let n = (t * 50 + i) % 20;
                    let expected: i64 = (1..=n).product();
                    assert_eq!(instance.call("fac", &[Val::I64(n)]).unwrap(), vec![Val::I64(expected)]);
                    match i % 4 {
                        0 => assert_eq!(
                            trap_code(instance.call("div", &[Val::I32(1), Val::I32(0)])),
                            TrapCode::IntegerDivisionByZero
                        ),
                        1 => assert_eq!(trap_code(instance.call("oob", &[])), TrapCode::HeapOutOfBounds),
                        2 => assert_eq!(trap_code(instance.call("deep", &[Val::I32(0)])), TrapCode::StackOverflow),
                        _ => assert_eq!(trap_code(instance.call("boom", &[])), TrapCode::UnreachableCodeReached),
                    }
                    instance.call("dirty", &[Val::I32(t as i32)]).unwrap();
                    assert_eq!(instance.call("peek", &[Val::I32(0)]).unwrap(), vec![Val::I32(t as i32)]);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(region.free_slots(), 8);
}

#[test]
fn host_functions_are_called_and_their_errors_become_traps() {
    let dir = tempfile::tempdir().unwrap();
    let wat = r#"
    (module
      (import "host" "add" (func $add (param i32 i32) (result i32)))
      (import "host" "fail" (func $fail))
      (memory (export "mem") 1)
      (func (export "twice") (param i32) (result i32) (call $add (local.get 0) (local.get 0)))
      (func (export "fail") (call $fail) (unreachable)))
    "#;
    let module = load(compile(dir.path(), "host", wat)).unwrap();
    let add = Func::new_host(
        FuncType { params: vec![ValType::I32, ValType::I32], results: vec![ValType::I32] },
        |caller, params, results| {
            assert!(caller.memory(0).is_some_and(|m| m.len() == 65536));
            let (Val::I32(a), Val::I32(b)) = (&params[0], &params[1]) else { unreachable!() };
            results[0] = Val::I32(a.wrapping_add(*b));
            Ok(())
        },
    );
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let fail = Func::new_host(FuncType::default(), move |_, _, _| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(HostError("the host said no".into()))
    });
    let region = region(1);
    let instance = Instance::new(&region, &module, &[Extern::Func(add), Extern::Func(fail)]).unwrap();
    assert_eq!(instance.call("twice", &[Val::I32(21)]).unwrap(), vec![Val::I32(42)]);
    match instance.call("fail", &[]) {
        Err(CallError::Trap(Trap::Host(err))) => assert_eq!(err.to_string(), "the host said no"),
        other => panic!("expected the host error, got {other:?}"),
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(instance.call("twice", &[Val::I32(-3)]).unwrap(), vec![Val::I32(-6)]);
}

/// A host function made once finds each calling store's own data, of the type asked for; a
/// store's data is set once.
#[test]
fn host_functions_find_the_data_of_the_calling_store() {
    let dir = tempfile::tempdir().unwrap();
    let wat = r#"(module (import "host" "tenant" (func $t (result i32))) (func (export "f") (result i32) (call $t)))"#;
    let module = load(compile(dir.path(), "data", wat)).unwrap();
    let tenant = Func::new_host(FuncType { params: vec![], results: vec![ValType::I32] }, |caller, _, results| {
        results[0] = Val::I32(match (caller.data::<u32>(), caller.data::<String>()) {
            (Some(n), None) => *n as i32,
            (None, _) => -1,
            (Some(_), Some(_)) => unreachable!("one store, one piece of data"),
        });
        Ok(())
    });
    let imports = [Extern::Func(tenant)];
    let region = region(1);
    for n in [7u32, 9] {
        let store = Store::new();
        assert_eq!(store.set_data(n), Ok(()));
        assert_eq!(store.set_data(0u32), Err(0), "the data is set once");
        assert_eq!((store.data::<u32>(), store.data::<u64>()), (Some(&n), None));
        let instance = Instance::new_in_store(&region, &store, &module, &imports).unwrap();
        assert_eq!(instance.call("f", &[]).unwrap(), vec![Val::I32(n as i32)]);
    }
    let instance = Instance::new_in_store(&region, &Store::new(), &module, &imports).unwrap();
    assert_eq!(instance.call("f", &[]).unwrap(), vec![Val::I32(-1)]);
}

#[test]
fn instances_link_functions_memories_tables_and_globals() {
    let dir = tempfile::tempdir().unwrap();
    let exporter = r#"
    (module
      (memory (export "mem") 1)
      (global (export "g") (mut i32) (i32.const 5))
      (table (export "tab") 2 funcref)
      (func $seven (result i32) (i32.const 7))
      (elem (i32.const 1) $seven)
      (func (export "store") (param i32 i32) (i32.store (local.get 0) (local.get 1)))
      (func (export "bump") (global.set 0 (i32.add (global.get 0) (i32.const 1)))))
    "#;
    let importer = r#"
    (module
      (import "a" "mem" (memory 1))
      (import "a" "g" (global (mut i32)))
      (import "a" "tab" (table 2 funcref))
      (import "a" "store" (func $store (param i32 i32)))
      (type $r (func (result i32)))
      (func (export "roundtrip") (param i32) (result i32)
        (call $store (i32.const 8) (local.get 0))
        (i32.load (i32.const 8)))
      (func (export "g") (result i32) (global.get 0))
      (func (export "via_table") (result i32) (call_indirect (type $r) (i32.const 1))))
    "#;
    let a = load(compile(dir.path(), "a", exporter)).unwrap();
    let b = load(compile(dir.path(), "b", importer)).unwrap();
    let region = region(2);
    let store = kiln_runtime::Store::new();
    let ia = Instance::new_in_store(&region, &store, &a, &[]).unwrap();
    let imports: Vec<Extern> = ["mem", "g", "tab", "store"].iter().map(|n| ia.get_export(n).unwrap()).collect();
    let ib = Instance::new_in_store(&region, &store, &b, &imports).unwrap();
    assert_eq!(ib.call("roundtrip", &[Val::I32(1234)]).unwrap(), vec![Val::I32(1234)]);
    ia.call("bump", &[]).unwrap();
    assert_eq!(ib.call("g", &[]).unwrap(), vec![Val::I32(6)]);
    assert_eq!(ib.call("via_table", &[]).unwrap(), vec![Val::I32(7)]);

    // Another store's instance cannot be linked, and a wrong type is refused.
    let other = Instance::new(&region, &b, &imports);
    assert!(matches!(other, Err(InstantiationError::Unlinkable { .. })), "cross-store link must fail");
}

#[test]
fn bad_shared_objects_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = compile(dir.path(), "good", "(module (func (export \"f\")))");
    let bytes = std::fs::read(&good).unwrap();

    let truncated = dir.path().join("truncated.so");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = load(&truncated).unwrap_err();
    assert!(matches!(err, LoadError::NotKiln { .. }), "{err}");

    let garbage = dir.path().join("garbage.so");
    std::fs::write(&garbage, b"\x7fELF this is not really an object file").unwrap();
    assert!(matches!(load(&garbage).unwrap_err(), LoadError::NotKiln { .. }));

    // A real shared library that is not Kiln's.
    let foreign = ["/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("libm is on every Debian machine");
    let err = load(foreign).unwrap_err();
    assert!(matches!(err, LoadError::NotKiln { .. }), "{err}");
    assert!(err.to_string().contains("DT_NEEDED"), "refused before dlopen could load its dependencies: {err}");

    // Another ABI version: bump the version field right after the magic.
    let magic_at = bytes.windows(8).position(|w| w == kiln_abi_magic()).expect("header in file");
    let mut other_version = bytes.clone();
    other_version[magic_at + 8] ^= 0x40;
    let wrong = dir.path().join("wrong-abi.so");
    std::fs::write(&wrong, &other_version).unwrap();
    let err = load(&wrong).unwrap_err();
    assert!(matches!(err, LoadError::AbiMismatch { .. }), "{err}");

    // A byte changed anywhere (here: in the middle of the code, then in the trailer's hash) is
    // caught by the checksum before the dynamic loader runs.
    for (what, at) in [("code", code_offset(&bytes)), ("trailer", bytes.len() - 1)] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x10;
        let corrupted = dir.path().join(format!("corrupt-{what}.so"));
        std::fs::write(&corrupted, &flipped).unwrap();
        let err = load(&corrupted).unwrap_err();
        assert!(matches!(err, LoadError::Corrupt { .. }), "{what}: {err}");
        assert!(err.to_string().contains("checksum mismatch"), "{what}: {err}");
    }

    let missing = load(dir.path().join("missing.so")).unwrap_err();
    assert!(matches!(missing, LoadError::Io { .. }));

    // The good one still loads.
    load(&good).unwrap();
}

/// The file offset of the first byte of `.text`.
fn code_offset(so: &[u8]) -> usize {
    use object::{Object, ObjectSection};
    let file = object::File::parse(so).unwrap();
    let text = file.section_by_name(".text").expect("a .text section");
    let (offset, size) = text.file_range().expect(".text is in the file");
    assert!(size > 0);
    (offset + size / 2) as usize
}

fn kiln_abi_magic() -> &'static [u8] {
    b"KILNMOD\0"
}

#[test]
fn a_segfault_in_host_code_still_kills_the_process() {
    const CHILD: &str = "KILN_HOST_SEGFAULT_CHILD";
    if std::env::var_os(CHILD).is_some() {
        // Child: run guest code (installing Kiln's handlers), then crash in host code.
        let dir = tempfile::tempdir().unwrap();
        let module = load(compile(dir.path(), "tenant", TENANT)).unwrap();
        let instance = Instance::new(&region(1), &module, &[]).unwrap();
        assert_eq!(trap_code(instance.call("boom", &[])), TrapCode::UnreachableCodeReached);
        let null: *mut u32 = std::hint::black_box(std::ptr::null_mut());
        // SAFETY: not safe at all: this is the host crash the test expects to kill the process.
        unsafe { null.write_volatile(1) };
        unreachable!("the write above must kill the process");
    }
    crashed_child("a_segfault_in_host_code_still_kills_the_process", CHILD);
}

/// Runs test `name` again in a child process with `child_env` set, expects the child to die of
/// SIGSEGV, and returns its stderr.
fn crashed_child(name: &str, child_env: &str) -> String {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(child_env, "1")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.signal(), Some(libc_sigsegv()), "status {:?}, stderr: {stderr}", output.status);
    stderr
}

#[test]
fn a_host_function_overflowing_the_guest_stack_dies_with_a_clear_message() {
    const CHILD: &str = "KILN_HOST_STACK_OVERFLOW_CHILD";
    if std::env::var_os(CHILD).is_some() {
        // Child: a host function that recurses far past the guest stack's host reserve.
        fn deep(n: u64) -> u64 {
            let frame = std::hint::black_box([n; 512]);
            if n == 0 {
                frame[7]
            } else {
                deep(n - 1).wrapping_add(frame[n as usize % 512])
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let wat = r#"(module (import "host" "deep" (func $deep)) (func (export "go") (call $deep)))"#;
        let module = load(compile(dir.path(), "deep", wat)).unwrap();
        let recurse = Func::new_host(FuncType::default(), |_, _, _| {
            std::hint::black_box(deep(std::hint::black_box(100_000)));
            Ok(())
        });
        let instance = Instance::new(&region(1), &module, &[Extern::Func(recurse)]).unwrap();
        let _ = instance.call("go", &[]);
        unreachable!("the recursion above must kill the process");
    }
    let stderr = crashed_child("a_host_function_overflowing_the_guest_stack_dies_with_a_clear_message", CHILD);
    assert!(stderr.contains("stack overflow in host code called from wasm"), "stderr: {stderr}");
}

fn libc_sigsegv() -> i32 {
    11
}

#[test]
fn an_interrupt_stops_runaway_guests_promptly_and_the_slot_is_reusable() {
    let dir = tempfile::tempdir().unwrap();
    let wat = r#"
    (module
      (func (export "spin") (loop (br 0)))
      (func $f (call $g))
      (func $g (call $f2))
      (func $f2 (return_call $f))
      (func (export "calls") (loop (call $leaf) (br 0)))
      (func $leaf)
      ;; No loops anywhere: a tail-call cycle, and a binary recursion 60 deep (2^60 calls).
      (func (export "cycle") (return_call $cycle_b))
      (func $cycle_b (return_call $cycle_c))
      (func $cycle_c (return_call $cycle_b))
      (func (export "tree") (call $tree (i32.const 60)))
      (func $tree (param i32)
        (if (local.get 0) (then
          (call $tree (i32.sub (local.get 0) (i32.const 1)))
          (call $tree (i32.sub (local.get 0) (i32.const 1))))))
      (func (export "answer") (result i32) (i32.const 42)))
    "#;
    let module = load(compile(dir.path(), "spin", wat)).unwrap();
    let region = region(1);
    // If the interruption never lands, fail loudly instead of hanging the test run.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog_done = done.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(30));
        if !watchdog_done.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!("the guest was not interrupted within 30 s");
            std::process::abort();
        }
    });
    for export in ["spin", "calls", "cycle", "tree"] {
        let instance = Instance::new(&region, &module, &[]).unwrap();
        let handle = instance.interrupt_handle();
        let timer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            handle.interrupt();
        });
        let start = std::time::Instant::now();
        let result = instance.call(export, &[]);
        let elapsed = start.elapsed();
        timer.join().unwrap();
        assert_eq!(trap_code(result), TrapCode::Interrupt, "{export}");
        assert!(elapsed < std::time::Duration::from_secs(1), "{export} took {elapsed:?}");
        assert_eq!(TrapCode::Interrupt.message(), "deadline exceeded");
        drop(instance);
        // A fresh tenant in the same slot runs normally.
        let next = Instance::new(&region, &module, &[]).unwrap();
        assert_eq!(next.call("answer", &[]).unwrap(), vec![Val::I32(42)]);
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn typed_calls_take_the_direct_and_the_trampoline_paths() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(compile(dir.path(), "tenant", TENANT)).unwrap();
    let region = region(1);
    let instance = Instance::new(&region, &module, &[]).unwrap();
    // Integers only: the direct path.
    let div = instance.get_func("div").unwrap().typed::<(i32, i32), i32>().unwrap();
    assert_eq!(div.call((-7, 2)).unwrap(), -3);
    assert!(matches!(div.call((1, 0)), Err(CallError::Trap(Trap::Wasm { code: TrapCode::IntegerDivisionByZero, .. }))));
    assert_eq!(div.call((100, 7)).unwrap(), 14, "usable after a trap");
    let fac = instance.get_func("fac").unwrap().typed::<i64, i64>().unwrap();
    assert_eq!(fac.call(20).unwrap(), 2432902008176640000);
    // A float parameter: through the array trampoline.
    let trunc = instance.get_func("trunc").unwrap().typed::<f32, i32>().unwrap();
    assert_eq!(trunc.call(-3.9).unwrap(), -3);
    // A wrong signature is refused.
    assert!(instance.get_func("div").unwrap().typed::<i32, i32>().is_err());
    // Typed functions do not bind the store (forgetting one changes nothing): other threads
    // can call.
    std::mem::forget(div.clone());
    let untyped = instance.get_func("fac").unwrap();
    let free = std::thread::spawn(move || untyped.call(&[Val::I64(3)])).join().unwrap();
    assert_eq!(free.unwrap(), vec![Val::I64(6)]);
    // An explicit binding does, until it is dropped.
    let binding = instance.store().bind_to_thread().unwrap();
    assert_eq!(div.call((9, 3)).unwrap(), 3);
    let untyped = instance.get_func("fac").unwrap();
    let busy = std::thread::spawn(move || untyped.call(&[Val::I64(3)]).map(|_| ())).join().unwrap();
    assert!(matches!(busy, Err(CallError::Busy)), "the store is bound to this thread while the binding lives");
    drop(binding);
    drop((div, fac, trunc));
    let untyped = instance.get_func("fac").unwrap();
    let free = std::thread::spawn(move || untyped.call(&[Val::I64(3)])).join().unwrap();
    assert_eq!(free.unwrap(), vec![Val::I64(6)]);
}

#[test]
fn data_segments_become_a_heap_image_mapped_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let module = load(compile(dir.path(), "tenant", TENANT)).unwrap();
    assert!(matches!(module.metadata().heap_images.as_slice(), [Some(image)] if image.len > 0));
    assert!(module.maps_heap_image(), "the image should be mapped from {}", module.path().display());
}

#[test]
fn fuel_bounds_execution_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let wat = r#"
    (module
      (func $inc (param i32) (result i32) (i32.add (local.get 0) (i32.const 1)))
      (func (export "count") (param $n i32) (result i32)
        (local $i i32)
        (block $done
          (loop $next
            (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
            (local.set $i (call $inc (local.get $i)))
            (br $next)))
        (local.get $i))
      (func (export "forever") (loop (br 0))))
    "#;
    let so = dir.path().join("fuel.so");
    let mut compiler = kiln_compiler::Compiler::new().unwrap();
    compiler.set_fuel_metering(true);
    compiler.compile_to_file(wat.as_bytes(), &so).unwrap();
    let module = load(&so).unwrap();
    let region = region(1);
    let instance = Instance::new(&region, &module, &[]).unwrap();
    let store = instance.store();

    // Unlimited by default; the same work always costs the same fuel.
    let mut costs = Vec::new();
    for _ in 0..3 {
        assert!(store.set_fuel(1_000_000));
        assert_eq!(instance.call("count", &[Val::I32(100)]).unwrap(), vec![Val::I32(100)]);
        costs.push(1_000_000 - store.fuel_remaining().unwrap());
    }
    assert!(costs[0] > 100, "100 iterations must cost more than 100 units, cost {}", costs[0]);
    assert!(costs.iter().all(|&c| c == costs[0]), "fuel use must be deterministic: {costs:?}");

    // Too little fuel stops the same work, and an endless loop.
    assert!(store.set_fuel(costs[0] / 2));
    assert_eq!(trap_code(instance.call("count", &[Val::I32(100)])), TrapCode::OutOfFuel);
    assert!(store.set_fuel(10_000));
    assert_eq!(trap_code(instance.call("forever", &[])), TrapCode::OutOfFuel);
    assert_eq!(store.fuel_remaining(), Some(0));
    assert_eq!(TrapCode::OutOfFuel.message(), "all fuel consumed");
}

#[test]
fn region_configurations_are_checked() {
    let bad = |config: RegionConfig| match Region::new(config) {
        Err(err) => err.to_string(),
        Ok(_) => panic!("refused"),
    };
    assert!(bad(RegionConfig { slots: 0, ..Default::default() }).contains("at least one slot"));
    assert!(bad(RegionConfig { stack_size: usize::MAX, ..Default::default() }).contains("stack_size"));
    assert!(bad(RegionConfig { max_vmctx_size: usize::MAX, ..Default::default() }).contains("max_vmctx_size"));
    assert!(bad(RegionConfig { host_stack_reserve: 1 << 21, stack_size: 1 << 21, ..Default::default() })
        .contains("reserve"));
    assert!(bad(RegionConfig { slots: usize::MAX, ..Default::default() }).contains("too many slots"));
}

/// Every way a tenant can write memory, one export each: `kind(addr)` writes at `addr` (of
/// memory 0 unless it says otherwise), and the host functions write through the host API.
const WRITER: &str = r#"
(module
  (import "host" "poke" (func $poke (param i32)))
  (import "host" "poke_all" (func $poke_all (param i32)))
  (memory (export "m0") 3 3)
  (memory (export "m1") 1 1)
  (data (memory 0) (i32.const 4090) "image across a page boundary")
  (data (memory 1) (i32.const 8) "second memory")
  (data $passive "passive segment")
  (func (export "i32") (param i32) (i32.store (local.get 0) (i32.const 0x41414141)))
  (func (export "i64") (param i32) (i64.store (local.get 0) (i64.const -1)))
  (func (export "i32_8") (param i32) (i32.store8 (local.get 0) (i32.const 0x42)))
  (func (export "i32_16") (param i32) (i32.store16 (local.get 0) (i32.const 0x4343)))
  (func (export "i64_8") (param i32) (i64.store8 (local.get 0) (i64.const 0x44)))
  (func (export "i64_16") (param i32) (i64.store16 (local.get 0) (i64.const 0x4545)))
  (func (export "i64_32") (param i32) (i64.store32 (local.get 0) (i64.const 0x46464646)))
  (func (export "f32") (param i32) (f32.store (local.get 0) (f32.const -1)))
  (func (export "f64") (param i32) (f64.store (local.get 0) (f64.const -1)))
  (func (export "v128") (param i32) (v128.store (local.get 0) (v128.const i64x2 -1 -1)))
  (func (export "lane") (param i32) (v128.store64_lane 1 (local.get 0) (v128.const i64x2 0 -1)))
  (func (export "offset") (param i32) (i32.store offset=70000 (local.get 0) (i32.const -1)))
  (func (export "atomic") (param i32) (i32.atomic.store (local.get 0) (i32.const -1)))
  (func (export "rmw") (param i32) (drop (i64.atomic.rmw.or (local.get 0) (i64.const -1))))
  (func (export "cmpxchg") (param i32)
    (drop (i32.atomic.rmw.cmpxchg (local.get 0) (i32.load (local.get 0)) (i32.const -1))))
  (func (export "second") (param i32) (i64.store 1 (local.get 0) (i64.const -1)))
  (func (export "fill") (param i32) (memory.fill (local.get 0) (i32.const 0x47) (i32.const 5000)))
  (func (export "copy") (param i32) (memory.copy 1 0 (local.get 0) (i32.const 4090) (i32.const 28)))
  (func (export "init") (param i32) (memory.init $passive (local.get 0) (i32.const 0) (i32.const 15)))
  (func (export "host") (param i32) (call $poke (local.get 0)))
  (func (export "host_all") (param i32) (call $poke_all (local.get 0))))
"#;

/// A module that writes into an imported memory: with a store and with an active data segment.
const IMPORTER: &str = r#"
(module
  (import "writer" "m0" (memory 3 3))
  (data (i32.const 12000) "written by the importer's segment")
  (func (export "i32") (param i32) (i32.store (local.get 0) (i32.const -1))))
"#;

#[test]
fn every_write_a_tenant_or_its_host_makes_is_undone_before_the_next_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let writer = load(compile(dir.path(), "writer", WRITER)).unwrap();
    let importer = load(compile(dir.path(), "importer", IMPORTER)).unwrap();
    let poke = |all: bool| {
        let ty = FuncType { params: vec![ValType::I32], results: vec![] };
        Extern::Func(Func::new_host(ty, move |caller, args, _| {
            let Val::I32(at) = args[0] else { unreachable!() };
            let at = at as usize;
            if all {
                caller.memory(0).unwrap()[at..at + 4].copy_from_slice(b"HOST");
            } else {
                caller.memory_bytes(0).unwrap().slice_mut(at..at + 4).unwrap().copy_from_slice(b"host");
            }
            Ok(())
        }))
    };
    let imports = [poke(false), poke(true)];
    let memories = |instance: &Instance| {
        ["m0", "m1"].map(|name| match instance.get_export(name) {
            Some(Extern::Memory(m)) => m.read(0, m.size_bytes() as usize).unwrap(),
            _ => panic!("{name} is not a memory"),
        })
    };
    // Pages start at 0, 4096, 8192: an address just below a boundary makes the widest stores
    // spill into the next page, whose own start must be restored too.
    let writes: Vec<(&str, i32)> = [
        ("i32", 0),
        ("i32", 4094),
        ("i64", 8188),
        ("i32_8", 5000),
        ("i32_16", 4095),
        ("i64_8", 196607),
        ("i64_16", 12287),
        ("i64_32", 12286),
        ("f32", 4093),
        ("f64", 4091),
        ("v128", 8191),
        ("v128", 16),
        ("lane", 4090),
        ("offset", 100),
        ("atomic", 4092),
        ("rmw", 8184),
        ("cmpxchg", 20000),
        ("second", 4092),
        ("fill", 4000),
        ("copy", 60000),
        ("init", 4089),
        ("host", 4094),
        ("host_all", 100000),
    ]
    .into();
    // Reset with plain stores (everything fits), and by the kernel (nothing may stay resident).
    for keep_resident in [64 * 1024, 0] {
        let region = Region::new(RegionConfig { slots: 1, keep_resident, ..RegionConfig::default() }).unwrap();
        let pristine = memories(&Instance::new(&region, &writer, &imports).unwrap());
        assert_eq!(&pristine[0][4090..4118], b"image across a page boundary");
        for &(kind, at) in &writes {
            let tenant = Instance::new(&region, &writer, &imports).unwrap();
            assert_same(&memories(&tenant), &pristine, &format!("keep_resident {keep_resident}, before {kind}({at})"));
            tenant.call(kind, &[Val::I32(at)]).unwrap();
            assert_ne!(memories(&tenant), pristine, "{kind}({at}) wrote nothing");
        }
        // The embedder's writes, and another instance's through an import.
        let tenant = Instance::new(&region, &writer, &imports).unwrap();
        assert_same(&memories(&tenant), &pristine, &format!("keep_resident {keep_resident}, after the wasm writes"));
        let Some(Extern::Memory(m0)) = tenant.get_export("m0") else { panic!("m0 is not a memory") };
        m0.write(50000, b"embedder").unwrap();
        let other_region = Region::new(RegionConfig { slots: 1, ..RegionConfig::default() }).unwrap();
        let guest = Instance::new_in_store(&other_region, &tenant.store(), &importer, &[Extern::Memory(m0)]).unwrap();
        guest.call("i32", &[Val::I32(30000)]).unwrap();
        assert_eq!(&memories(&tenant)[0][12000..12033], b"written by the importer's segment");
        drop(guest);
        drop(tenant);
        let last = Instance::new(&region, &writer, &imports).unwrap();
        assert_same(&memories(&last), &pristine, &format!("keep_resident {keep_resident}, after the host writes"));
    }
}

/// Asserts that two sets of memory contents are equal, naming the first byte that differs.
fn assert_same(memories: &[Vec<u8>], expected: &[Vec<u8>], context: &str) {
    for (m, (got, want)) in memories.iter().zip(expected).enumerate() {
        assert_eq!(got.len(), want.len(), "{context}: size of memory {m}");
        if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
            panic!("{context}: memory {m} differs at byte {at}: {} instead of {}", got[at], want[at]);
        }
    }
}
