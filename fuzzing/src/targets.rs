//! The bodies of the `cargo fuzz` targets in `fuzz/` (one function per target), kept here so
//! `cargo test` runs them too, over fixed inputs, without libFuzzer or a nightly toolchain.
//!
//! Each function takes the fuzzer's bytes and panics only on a Kiln bug: a crash, a panic
//! inside Kiln, or a broken promise (a valid module that does not compile, a changed `.so` that
//! loads, two engines that disagree). It returns whether the input reached the code under test
//! (the fuzz targets keep only those in the corpus; the tests count them).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kiln_compiler::Compiler;
use kiln_runtime::{Module, Region, RegionConfig};

use crate::Verdict;

pub(crate) fn compiler() -> &'static Compiler {
    static COMPILER: OnceLock<Compiler> = OnceLock::new();
    COMPILER.get_or_init(|| {
        let features = kiln_compiler::default_features()
            | kiln_compiler::WasmFeatures::WIDE_ARITHMETIC
            | kiln_compiler::WasmFeatures::CUSTOM_PAGE_SIZES;
        Compiler::with_features(features).expect("the host ISA is supported")
    })
}

/// Per-thread scratch space: a directory for shared objects and a one-slot region.
struct Scratch {
    dir: tempfile::TempDir,
    region: Region,
    next_file: u64,
}

impl Scratch {
    /// A fresh path in the scratch directory (a loaded object's file must not be rewritten).
    fn fresh_path(&mut self) -> PathBuf {
        self.next_file += 1;
        self.dir.path().join(format!("input{}.so", self.next_file))
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        dir: tempfile::tempdir().expect("a temporary directory"),
        region: Region::new(RegionConfig { slots: 1, ..Default::default() }).expect("a one-slot region"),
        next_file: 0,
    });
}

/// `compile`: any bytes, as a binary or text module, are compiled or refused with an error,
/// never a panic (which the compiler would report as an internal compiler error). Debug
/// information is on, so the guest's own DWARF sections are read too. Every input counts:
/// text that fails to parse still steers the fuzzer toward binaries.
pub fn compile(data: &[u8]) -> bool {
    static DEBUG_COMPILER: OnceLock<Compiler> = OnceLock::new();
    let compiler = DEBUG_COMPILER.get_or_init(|| {
        let mut compiler = Compiler::with_features(compiler().features()).expect("the host ISA is supported");
        compiler.set_debug_info(true);
        compiler
    });
    if let Ok(wasm) = kiln_compiler::wasm_from_input(data) {
        if let Err(err) = compiler.compile_object(&wasm) {
            assert!(!err.to_string().contains("internal compiler error"), "{err}");
        }
    }
    true
}

/// `compile_generated`: every valid module wasm-smith builds from `data`, with every proposal
/// Kiln supports, compiles.
pub fn compile_generated(data: &[u8]) -> bool {
    let Ok(wasm) = generate_any(data) else { return false };
    if let Err(err) = compiler().compile_object(&wasm) {
        panic!("a valid module failed to compile: {err}");
    }
    true
}

/// A module using every proposal Kiln supports, built by wasm-smith from `data`.
fn generate_any(data: &[u8]) -> arbitrary::Result<Vec<u8>> {
    let config = wasm_smith::Config {
        bulk_memory_enabled: true,
        reference_types_enabled: true,
        simd_enabled: true,
        relaxed_simd_enabled: true,
        tail_call_enabled: true,
        threads_enabled: true,
        memory64_enabled: true,
        wide_arithmetic_enabled: true,
        custom_page_sizes_enabled: true,
        extended_const_enabled: true,
        // What Kiln does not run yet.
        exceptions_enabled: false,
        gc_enabled: false,
        compact_imports_enabled: false,
        max_memories: 4,
        max_memory32_bytes: 1 << 30,
        ..wasm_smith::Config::default()
    };
    let mut u = arbitrary::Unstructured::new(data);
    Ok(wasm_smith::Module::new(config, &mut u)?.to_bytes())
}

/// The shared object every `load` input starts from, compiled once.
fn seed_object() -> &'static (tempfile::TempDir, Vec<u8>) {
    static SEED: OnceLock<(tempfile::TempDir, Vec<u8>)> = OnceLock::new();
    SEED.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let so = dir.path().join("seed.so");
        compiler().compile_to_file(SEED_MODULE.as_bytes(), &so).expect("the seed module compiles");
        let bytes = std::fs::read(&so).expect("the seed object is readable");
        (dir, bytes)
    })
}

/// A module with something in every part of the object: functions, a table, a heap image,
/// globals, exports and a start function.
const SEED_MODULE: &str = r#"(module
  (memory (export "mem") 1)
  (data (i32.const 16) "kiln seed")
  (global $g (mut i32) (i32.const 7))
  (table 2 funcref)
  (elem (i32.const 0) $get $set)
  (func $get (export "get") (result i32) (global.get $g))
  (func $set (export "set") (param i32) (global.set $g (local.get 0)))
  (func $start (call $set (i32.load (i32.const 16))))
  (start $start))"#;

/// Applies the changes `data` describes to `object`: with an odd first byte, truncation at the
/// offset in bytes 1..5; otherwise each 5-byte record (offset, xor mask) flips bits.
fn mutate(object: &[u8], data: &[u8]) -> Vec<u8> {
    let mut bytes = object.to_vec();
    let Some((&mode, rest)) = data.split_first() else { return bytes };
    let offset = |chunk: &[u8]| u32::from_le_bytes(chunk[..4].try_into().expect("four bytes")) as usize;
    if mode & 1 == 1 {
        if rest.len() >= 4 {
            bytes.truncate(offset(rest) % (object.len() + 1));
        }
        return bytes;
    }
    for record in rest.chunks_exact(5) {
        let at = offset(record) % bytes.len();
        bytes[at] ^= record[4];
    }
    bytes
}

/// `load`: a Kiln shared object with bytes flipped or cut off is refused with an error; an
/// unchanged one loads and runs.
pub fn load(data: &[u8]) -> bool {
    let (_, object) = seed_object();
    let bytes = mutate(object, data);
    SCRATCH.with_borrow_mut(|scratch| {
        let path = scratch.fresh_path();
        std::fs::write(&path, &bytes).expect("the scratch directory is writable");
        // SAFETY: the bytes are the seed object Kiln compiled, with some flipped or cut off:
        // the checksum refuses any change before the loader sees it (a change that kept the
        // checksum would need an XXH3 collision), so only the unchanged object loads.
        let loaded = unsafe { Module::load(&path) };
        let unchanged = bytes == *object;
        match loaded {
            Ok(module) if unchanged => {
                let instance =
                    kiln_runtime::Instance::new(&scratch.region, &module, &[]).expect("the seed instantiates");
                let got = instance.call("get", &[]).expect("`get` runs");
                assert_eq!(got, vec![kiln_runtime::Val::I32(i32::from_le_bytes(*b"kiln"))]);
            }
            Ok(_) => panic!("a changed shared object loaded"),
            Err(err) if unchanged => panic!("the unchanged seed object failed to load: {err}"),
            Err(_) => {}
        }
        let _ = std::fs::remove_file(&path);
    });
    true
}

/// `metadata`: any bytes given to the metadata decoder are decoded and cross-checked or refused
/// with an error.
pub fn metadata(data: &[u8]) -> bool {
    let _ = kiln_runtime::__fuzzing::decode_metadata(data);
    true
}

/// Fuel for one `wast` input: enough for real scripts' assertions, small enough that a loop
/// ends in milliseconds.
pub const WAST_FUEL: u64 = 10_000_000;

/// `wast`: any text is run as a `.wast` script through the whole pipeline (with fuel, so loops
/// end); failed assertions and errors are fine, crashes and panics are not.
pub fn wast(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    let path = Path::new("fuzz.wast");
    let options = kiln_spec_tests::ScriptOptions { fuel: Some(WAST_FUEL), no_cache: true };
    let _ = kiln_spec_tests::run_script_with(path, text, kiln_spec_tests::features_for(path), &options);
    true
}

/// `differential`: the module wasm-smith builds from `data` behaves the same in Kiln and in
/// wasmi (results, traps, final memories and globals). Inconclusive runs (stack exhaustion)
/// do not count as exercised.
pub fn differential(data: &[u8]) -> bool {
    let Ok(wasm) = crate::generate_from(data) else { return false };
    SCRATCH.with_borrow_mut(|scratch| {
        let dir = scratch.dir.path().to_path_buf();
        match crate::compare(&wasm, 0, &dir, &scratch.region) {
            Ok(Verdict::Agree) => true,
            Ok(Verdict::Inconclusive) => false,
            Ok(Verdict::Mismatch { kiln, reference: wasmi, .. }) => {
                panic!("Kiln and wasmi disagree:\n kiln  {kiln}\n wasmi {wasmi}")
            }
            Err(err) => panic!("the differential check failed: {err:#}"),
        }
    })
}

/// `linked`: the pair of modules wasm-smith builds from `data` (B importing A's exports, both
/// importing a host table and globals) behaves the same in Kiln and in wasmi.
pub fn linked(data: &[u8]) -> bool {
    let Ok((a, b)) = crate::linked::generate_from(data) else { return false };
    PAIR_REGION.with(|region| {
        SCRATCH.with_borrow_mut(|scratch| match crate::linked::compare(&a, &b, 0, scratch.dir.path(), region) {
            Ok(Verdict::Agree) => true,
            Ok(Verdict::Inconclusive) => false,
            Ok(Verdict::Mismatch { kiln, reference: wasmi, .. }) => {
                panic!("Kiln and wasmi disagree on a linked pair:\n kiln  {kiln}\n wasmi {wasmi}")
            }
            Err(err) => panic!("the linked differential check failed: {err:#}"),
        })
    })
}

thread_local! {
    /// A two-slot region for linked pairs.
    static PAIR_REGION: Region = Region::new(RegionConfig { slots: 2, ..Default::default() }).expect("a two-slot region");
}

/// `api`: an arbitrary sequence of embedding-API calls across two stores and threads (see
/// [`crate::api`]) never crashes, never hands out a function reference of another store, and
/// every call through a table reaches only the functions that can be there.
pub fn api(data: &[u8]) -> bool {
    crate::api::run(data)
}
