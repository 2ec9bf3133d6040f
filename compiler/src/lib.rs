//! Kiln's ahead-of-time compiler: wasm in, native x86-64 ELF shared object out.
//!
//! The pipeline, one module per stage:
//! 1. [`module`]: parse and validate with wasmparser, collect the module's description.
//! 2. [`translate`] with [`func_env`]: each body to Cranelift IR, validated as it is read.
//! 3. [`trampolines`]: host↔wasm entry and exit shims per function type.
//! 4. [`emit`]: Cranelift compiles everything into an ELF relocatable object together with the
//!    module header and serialized metadata (see `kiln_abi`).
//! 5. [`link`]: the system linker turns the object into a shared object.

pub mod cache;
mod debug;
mod elf;
pub mod emit;
pub mod func_env;
pub mod link;
mod module;
pub mod trampolines;
mod translate;

use std::borrow::Cow;
use std::path::Path;

pub use module::default_features;
pub use wasmparser::WasmFeatures;

/// Identifies the compiler that produced an object (stored in its metadata, part of cache keys).
pub const COMPILER_VERSION: &str =
    concat!("kiln-compiler ", env!("CARGO_PKG_VERSION"), "+", env!("KILN_COMPILER_FINGERPRINT"));

/// Why a module could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The text format could not be parsed.
    #[error("invalid text format: {0}")]
    Text(String),
    /// The binary is malformed or fails validation.
    #[error("invalid module at offset {offset:#x}: {message}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// Byte offset in the binary.
        offset: usize,
    },
    /// Valid wasm that uses something Kiln cannot compile.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Cranelift failed (a Kiln bug).
    #[error("code generation failed: {0}")]
    Codegen(String),
    /// Reading or writing a file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Turns user input into a wasm binary: binaries pass through, anything else is parsed as the
/// text format.
pub fn wasm_from_input(bytes: &[u8]) -> Result<Cow<'_, [u8]>, CompileError> {
    wasm_from(bytes, None)
}

/// [`wasm_from_input`] for the contents of the file at `path`, which text-format errors name.
pub fn wasm_from_file_contents<'a>(bytes: &'a [u8], path: &Path) -> Result<Cow<'a, [u8]>, CompileError> {
    wasm_from(bytes, Some(path))
}

fn wasm_from<'a>(bytes: &'a [u8], path: Option<&Path>) -> Result<Cow<'a, [u8]>, CompileError> {
    if bytes.starts_with(b"\0asm") {
        return Ok(Cow::Borrowed(bytes));
    }
    let text =
        std::str::from_utf8(bytes).map_err(|e| CompileError::Text(format!("neither wasm nor UTF-8 text: {e}")))?;
    wat::parse_str(text).map(Cow::Owned).map_err(|mut e| {
        if let Some(path) = path {
            e.set_path(path);
        }
        CompileError::Text(e.to_string())
    })
}

/// What the binary module `wasm` declares (types, imports, exports, memories, tables, globals,
/// functions), read and validated like a compilation's first stage but without compiling
/// anything (function bodies are not checked).
pub fn describe(wasm: &[u8]) -> Result<kiln_abi::ModuleMetadata, CompileError> {
    Ok(module::parse(wasm, default_features())?.meta)
}

/// A configured compiler for the host's x86-64.
pub struct Compiler {
    pub(crate) isa: cranelift_codegen::isa::OwnedTargetIsa,
    pub(crate) features: WasmFeatures,
    pub(crate) options: emit::CodegenOptions,
}

impl Compiler {
    /// A compiler for this machine's CPU with [`default_features`].
    pub fn new() -> Result<Compiler, CompileError> {
        Compiler::with_features(default_features())
    }

    /// A compiler accepting exactly the given wasm proposals.
    pub fn with_features(features: WasmFeatures) -> Result<Compiler, CompileError> {
        Ok(Compiler { isa: emit::host_isa()?, features, options: emit::CodegenOptions::default() })
    }

    /// A compiler for the fixed x86-64-v2 baseline (see [`emit::baseline_isa`]): identical
    /// output on every machine.
    pub fn baseline(features: WasmFeatures) -> Result<Compiler, CompileError> {
        Ok(Compiler { isa: emit::baseline_isa()?, features, options: emit::CodegenOptions::default() })
    }

    /// The wasm proposals this compiler accepts.
    pub fn features(&self) -> WasmFeatures {
        self.features
    }

    /// Whether compiled code checks the store's interrupt flag at every loop header and at the
    /// entry of every function that calls (the default). Without the checks a guest cannot be stopped from outside: only
    /// for trusted code, or to measure what the checks cost.
    pub fn set_interruptible(&mut self, interruptible: bool) -> &mut Compiler {
        self.options.interruptible = interruptible;
        self
    }

    /// Whether compiled code counts executed operators against the store's fuel
    /// (`Store::set_fuel`) and traps with "all fuel consumed" when it runs out: bounded,
    /// deterministic execution. Off by default (it costs a load, a store and a branch per
    /// basic block).
    pub fn set_fuel_metering(&mut self, fuel: bool) -> &mut Compiler {
        self.options.fuel = fuel;
        self
    }

    /// Whether functions compile on every core of rayon's current thread pool (on by
    /// default; run the compile inside `ThreadPool::install` to choose the pool). The object
    /// is the same byte for byte either way.
    pub fn set_parallel_compilation(&mut self, parallel: bool) -> &mut Compiler {
        self.options.parallel = parallel;
        self
    }

    /// Whether the object carries DWARF line information (off by default): when the module
    /// has DWARF of its own (C, C++ or Rust built with `-g`), `addr2line`, `objdump -dl` and
    /// `gdb` on the object show the guest's source lines. A module without it gets none.
    pub fn set_debug_info(&mut self, debug_info: bool) -> &mut Compiler {
        self.options.debug_info = debug_info;
        self
    }

    /// Compiles wasm (binary) into an ELF relocatable object.
    pub fn compile_object(&self, wasm: &[u8]) -> Result<emit::CompiledObject, CompileError> {
        // A panic inside Cranelift or the translator is a compiler bug, but a server compiling
        // untrusted modules must get an error, not lose the process.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let parsed = module::parse(wasm, self.features)?;
            emit::compile(&self.isa, parsed, None, self.options)
        }))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(CompileError::Codegen(format!("internal compiler error: {what}")))
        })
    }

    /// Compiles wasm (binary) and returns, per defined function, its Cranelift IR, disassembly
    /// and trap sites (for snapshot tests; nothing is linked).
    pub fn compile_listing(&self, wasm: &[u8]) -> Result<Vec<emit::FunctionListing>, CompileError> {
        let parsed = module::parse(wasm, self.features)?;
        let mut listings = Vec::new();
        emit::compile(&self.isa, parsed, Some(&mut listings), self.options)?;
        Ok(listings)
    }

    /// Compiles wasm (binary or text) into a shared object at `out`.
    pub fn compile_to_file(&self, input: &[u8], out: &Path) -> Result<(), CompileError> {
        self.compile_wasm_to_file(&wasm_from_input(input)?, out)
    }

    /// Compiles `wasm` (a binary module) into a shared object at `out`.
    pub fn compile_wasm_to_file(&self, wasm: &[u8], out: &Path) -> Result<(), CompileError> {
        let object = self.compile_object(wasm)?;
        link::write_object_file(&object.object, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `perf report`, `gdb` and `addr2line` name the guest's functions: each has a symbol made
    /// of its index and its name from the `name` section.
    #[test]
    fn function_symbols_carry_the_wasm_names() {
        use object::{Object, ObjectSymbol};
        let dir = tempfile::tempdir().unwrap();
        let so = dir.path().join("names.so");
        let wat = r#"(module
            (import "env" "imported" (func $imported))
            (func $fib (export "fib"))
            (func)
            (func $again (@name "fib") (export "fib_again"))
            (func (@name "tab\tand a space"))
            (func (@name "_ZN4core3fmt5write17h0123456789abcdefE"))
            (func (@name "_Z6divideii")))"#;
        Compiler::new().unwrap().compile_to_file(wat.as_bytes(), &so).unwrap();
        let bytes = std::fs::read(&so).unwrap();
        let file = object::File::parse(&bytes[..]).unwrap();
        let mut names: Vec<String> = file
            .symbols()
            .filter(|s| s.kind() == object::SymbolKind::Text)
            .filter_map(|s| s.name().ok().map(String::from))
            .filter(|n| n.starts_with("wasm["))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "wasm[1]::fib",
                "wasm[2]",
                "wasm[3]::fib",
                "wasm[4]::tab_and a space",
                "wasm[5]::core::fmt::write",
                "wasm[6]::divide(int, int)"
            ]
        );
    }

    /// Functions compile on several threads but land in the object in index order: the
    /// object is identical with one thread, several, or none.
    #[test]
    fn parallel_compilation_is_deterministic() {
        let mut wat = String::from("(module (memory 1) (table 300 funcref)");
        for i in 0..300 {
            // Bodies of different sizes, calls and traps, so workers finish out of order.
            let adds = "(drop (i32.add (local.get 0) (i32.const 3)))".repeat(i % 17 + 1);
            let callee = (i * 7) % 300;
            wat.push_str(&format!(
                "(func $f{i} (export \"f{i}\") (param i32) (result i32) {adds} \
                 (if (i32.eqz (local.get 0)) (then (return (i32.div_u (local.get 0) (local.get 0))))) \
                 (i32.load (call $f{callee} (i32.sub (local.get 0) (i32.const 1)))))"
            ));
        }
        wat.push(')');
        let wasm = wat::parse_str(&wat).unwrap();
        let compile = |parallel: bool, threads: usize| {
            let mut compiler = Compiler::new().unwrap();
            compiler.set_parallel_compilation(parallel);
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| compiler.compile_object(&wasm).unwrap())
        };
        let sequential = compile(false, 1);
        for threads in [1, 2, 4] {
            let parallel = compile(true, threads);
            assert!(parallel.object == sequential.object, "{threads} threads give another object");
            assert_eq!(parallel.metadata, sequential.metadata);
        }
    }

    /// With functions compiled in parallel, an invalid function is still reported as the
    /// error, whichever worker meets it, and the lowest-indexed one when there are several.
    #[test]
    fn parallel_compilation_reports_the_first_invalid_function() {
        let mut wat = String::from("(module");
        for i in 0..64 {
            match i {
                // Invalid: a value left on the stack of a function with no results.
                9 | 40 => wat.push_str("(func (i32.const 1))"),
                _ => wat.push_str("(func (result i32) (i32.const 1))"),
            }
        }
        wat.push(')');
        let wasm = wat::parse_str(&wat).unwrap();
        let error = |parallel: bool| {
            let mut compiler = Compiler::new().unwrap();
            compiler.set_parallel_compilation(parallel);
            compiler.compile_object(&wasm).err().expect("an invalid function").to_string()
        };
        let sequential = error(false);
        assert!(
            sequential.contains("type mismatch") && !sequential.contains("internal compiler error"),
            "{sequential}"
        );
        for _ in 0..5 {
            assert_eq!(error(true), sequential);
        }
    }

    /// Stores that share a dirty mark are compared by offset: offsets at the top of a 64-bit
    /// memory's range must not overflow that comparison (found by review; it panicked in
    /// builds with overflow checks).
    #[test]
    fn stores_at_the_largest_offsets_compile() {
        let wat = r#"(module (memory i64 1)
            (func (export "f") (param i64)
              (i32.store offset=0xfffffffffffffff0 (local.get 0) (i32.const 1))
              (i32.store offset=0xfffffffffffffff8 (local.get 0) (i32.const 1))))"#;
        Compiler::new().unwrap().compile_object(&wat::parse_str(wat).unwrap()).unwrap();
    }

    /// Debug information comes from the guest's DWARF, which may be anything: malformed
    /// sections are skipped (no line table, no error), and a module without DWARF compiles
    /// with debug information on exactly as without.
    #[test]
    fn malformed_guest_dwarf_is_skipped() {
        let wat = r#"(module
            (@custom ".debug_info" "\ff\ff\ff\ff\01\02\03")
            (@custom ".debug_line" "\10\00\00\00\04\00garbage-garbage")
            (@custom ".debug_abbrev" "\01\11\00")
            (func (export "f") (result i32) (i32.const 1)))"#;
        let wasm = wat::parse_str(wat).unwrap();
        let mut compiler = Compiler::new().unwrap();
        compiler.set_debug_info(true);
        let object = compiler.compile_object(&wasm).unwrap();
        let file = object::File::parse(&object.object[..]).unwrap();
        assert!(object::Object::section_by_name(&file, ".debug_line").is_none());
    }

    /// Exception-handling blocks keep their nesting in dead code: once, the `end` of a dead
    /// `try_table` closed the function's own block, and the compiler panicked at the
    /// function's last `end`.
    #[test]
    fn dead_exception_handling_blocks_keep_their_nesting() {
        let features = default_features() | WasmFeatures::EXCEPTIONS | WasmFeatures::LEGACY_EXCEPTIONS;
        let compiler = Compiler::with_features(features).unwrap();
        for body in [
            "unreachable try_table end",
            "(if (i32.const 0) (then unreachable try_table end) (else))",
            "unreachable try catch_all end",
            "(block unreachable try delegate 0)",
            "(block try unreachable catch_all unreachable end)",
            "(block try unreachable catch_all try unreachable delegate 0 end)",
            "try_table end",
        ] {
            let wasm = wat::parse_str(format!("(module (func {body}))")).unwrap();
            compiler.compile_object(&wasm).unwrap_or_else(|e| panic!("{body}: {e}"));
        }
    }

    #[test]
    fn random_bytes_are_an_error_never_a_panic() {
        let compiler = Compiler::new().unwrap();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in 0..400usize {
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            // Half of them start like a real module, to get past the magic check.
            if len % 2 == 0 && len >= 8 {
                bytes[..8].copy_from_slice(b"\0asm\x01\0\0\0");
            }
            match compiler.compile_object(&bytes) {
                Err(CompileError::Invalid { .. }) => {}
                // An empty module after the header is valid; nothing else may be.
                Ok(_) => assert_eq!(bytes.len(), 8, "{bytes:?} compiled"),
                Err(other) => panic!("unexpected error kind for {bytes:?}: {other}"),
            }
        }
    }
}
