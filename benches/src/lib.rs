//! Workloads for the lifecycle benchmarks (the seed article's eight graphs) and the two engines
//! that run them: Kiln, and Wasmtime as the peer (feature `wasmtime`). The benchmarks
//! themselves are in `benches/lifecycle.rs`; `cargo xtask bench` runs them and reports.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Initial heap sizes of the dense/sparse instantiation benchmarks.
pub const HEAP_SIZES: &[(&str, usize)] =
    &[("64K", 64 << 10), ("512K", 512 << 10), ("1M", 1 << 20), ("4M", 4 << 20), ("16M", 16 << 20)];

/// Heap sizes the teardown benchmark dirties.
pub const DIRTY_SIZES: &[(&str, usize)] = &[("1M", 1 << 20), ("4M", 4 << 20), ("16M", 16 << 20)];

/// The C hello world built for wasm32-wasi (`benches/programs/hello.c`). `cargo xtask bench`
/// builds it and passes its path in `KILN_BENCH_HELLO`.
pub fn hello_wasm() -> Result<Vec<u8>> {
    let path = std::env::var_os("KILN_BENCH_HELLO")
        .context("KILN_BENCH_HELLO is not set: run the benchmarks through `cargo xtask bench`, which builds hello.c")?;
    std::fs::read(&path).with_context(|| format!("cannot read {}", Path::new(&path).display()))
}

/// A module with a trivial export `nop` and the `dirty` function that fills memory.
pub fn trivial_wasm() -> Vec<u8> {
    wat::parse_str(
        r#"(module
             (memory 1)
             (func (export "nop"))
             (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1))))"#,
    )
    .expect("valid text")
}

/// Throws through `throw(depth)` frames: `throw(n)` calls a function that recurses `n` times
/// and then throws, caught (payload only) by `throw` itself, which returns the payload.
pub fn throw_wasm() -> Vec<u8> {
    wat::parse_str(
        r#"(module
             (tag $e (param i32))
             (func $down (param i32)
               (if (local.get 0)
                 (then (call $down (i32.sub (local.get 0) (i32.const 1))))
                 (else (throw $e (i32.const 42)))))
             (func (export "throw") (param i32) (result i32)
               (block $h (result i32)
                 (try_table (catch $e $h) (call $down (local.get 0)))
                 (unreachable))))"#,
    )
    .expect("valid text")
}

/// How deep `throw` benchmarks throw from.
pub const THROW_DEPTHS: &[u32] = &[10, 100];

/// Modules that isolate what extra and 64-bit memories cost at instantiation: one memory,
/// two memories, one 64-bit memory; each one page with a byte of data.
pub fn memory_shape_wasm(shape: &str) -> Vec<u8> {
    let text = match shape {
        "one_memory" => r#"(module (memory 1) (data (i32.const 0) "x"))"#,
        "two_memories" => r#"(module (memory 1) (memory $second 1) (data (memory $second) (i32.const 0) "x"))"#,
        "memory64" => r#"(module (memory i64 1) (data (i64.const 0) "x"))"#,
        other => panic!("unknown memory shape {other}"),
    };
    wat::parse_str(text).expect("valid text")
}

/// A compute loop (`sum(n)` adds 0..n with a call per iteration) for measuring what the
/// interrupt checks at loop headers and calling functions' entries cost.
pub fn compute_wasm() -> Vec<u8> {
    wat::parse_str(
        r#"(module
             (func $step (param i64 i32) (result i64) (i64.add (local.get 0) (i64.extend_i32_u (local.get 1))))
             (func (export "sum") (param $n i32) (result i64)
               (local $i i32) (local $acc i64)
               (loop $next
                 (local.set $acc (call $step (local.get $acc) (local.get $i)))
                 (local.set $i (i32.add (local.get $i) (i32.const 1)))
                 (br_if $next (i32.lt_u (local.get $i) (local.get $n))))
               (local.get $acc)))"#,
    )
    .expect("valid text")
}

/// A per-request module for the lifecycle throughput benchmarks: `pages` of memory and a
/// global; `run(trap)` counts in the global, runs `writes` (which may use `$calls`), traps
/// (`unreachable`) when `trap` is non-zero, and returns the word at `result_at`.
fn request_wasm(pages: u32, writes: &str, result_at: u32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
             (memory {pages})
             (global $calls (mut i32) (i32.const 0))
             (func (export "run") (param $trap i32) (result i32)
               (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
               {writes}
               (if (local.get $trap) (then unreachable))
               (i32.load (i32.const {result_at}))))"#
    ))
    .expect("valid text")
}

/// The per-request workload of the lifecycle throughput benchmarks: one memory page;
/// `run(trap)` reads and dirties a word of memory, after which it traps if asked.
pub fn lifecycle_wasm() -> Vec<u8> {
    request_wasm(1, "(i32.store (i32.const 1024) (i32.add (i32.load (i32.const 1024)) (global.get $calls)))", 1024)
}

/// The lifecycle workload laid out like a compiled C or Rust program: 17 pages, the shadow stack
/// growing down from 1 MiB and the data after it. `run(trap)` writes a stack frame just below
/// 1 MiB, a counter in the data and a heap word 32 KiB further, then traps like
/// [`lifecycle_wasm`]. A fixed window at the start of memory misses all of it.
pub fn deep_lifecycle_wasm() -> Vec<u8> {
    request_wasm(
        17,
        "(i64.store (i32.const 0xFFFC0) (i64.const -1))
         (i32.store (i32.const 0x100400) (i32.add (i32.load (i32.const 0x100400)) (global.get $calls)))
         (i32.store (i32.const 0x108000) (global.get $calls))",
        0x100400,
    )
}

/// A lifecycle workload that writes more than a warm slot keeps resident: `run(trap)` fills
/// 256 KiB of its 8-page memory (so teardown returns memory to the kernel), then traps like
/// [`lifecycle_wasm`].
pub fn dirty_lifecycle_wasm() -> Vec<u8> {
    request_wasm(8, "(memory.fill (i32.const 0) (global.get $calls) (i32.const 0x40000))", 1024)
}

/// GC workloads (WebAssembly 3.0 structs): `alloc(n)` makes `n` two-field structs and sums a
/// field of each (allocation only); `trees(depth)` builds a complete binary tree of that depth
/// out of two-reference nodes and counts its nodes by walking it (binary-trees);
/// `many_trees(n)` does that for `n` trees of depth 14, which a collector must reclaim.
pub fn gc_wasm() -> Vec<u8> {
    wat::parse_str(
        r#"(module
          (type $pair (struct (field (mut i64)) (field (mut i64))))
          (type $node (struct (field (ref null $node)) (field (ref null $node))))
          (func (export "alloc") (param $n i32) (result i64) (local $sum i64) (local $p (ref null $pair))
            (loop $more
              (local.set $p (struct.new $pair (i64.extend_i32_u (local.get $n)) (i64.const 1)))
              (local.set $sum (i64.add (local.get $sum) (struct.get $pair 0 (local.get $p))))
              (br_if $more (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
            (local.get $sum))
          (func $make (param $depth i32) (result (ref $node))
            (if (result (ref $node)) (local.get $depth)
              (then (struct.new $node
                (call $make (i32.sub (local.get $depth) (i32.const 1)))
                (call $make (i32.sub (local.get $depth) (i32.const 1)))))
              (else (struct.new $node (ref.null $node) (ref.null $node)))))
          (func $check (param $tree (ref $node)) (result i32) (local $left (ref null $node))
            (local.set $left (struct.get $node 0 (local.get $tree)))
            (if (result i32) (ref.is_null (local.get $left))
              (then (i32.const 1))
              (else (i32.add (i32.const 1) (i32.add
                (call $check (ref.as_non_null (local.get $left)))
                (call $check (ref.as_non_null (struct.get $node 1 (local.get $tree)))))))))
          (func (export "trees") (param $depth i32) (result i32) (call $check (call $make (local.get $depth))))
          ;; 100 trees of depth 14 one after another, each garbage once counted: 79 MB in all,
          ;; more than Kiln's default heap holds, so collections run.
          (func (export "many_trees") (param $n i32) (result i32) (local $sum i32)
            (loop $more
              (local.set $sum (i32.add (local.get $sum) (call $check (call $make (i32.const 14)))))
              (br_if $more (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
            (local.get $sum)))"#,
    )
    .expect("valid text")
}

/// Store-heavy kernels over one 64 KiB page, for what per-store work costs: `stores(n)` writes
/// `n` words round the page; `sieve(n)` runs the sieve of Eratosthenes over `n` bytes (at most
/// 65536) and counts the primes.
pub fn stores_wasm() -> Vec<u8> {
    wat::parse_str(
        r#"(module
             (memory 1)
             (func (export "stores") (param $n i32)
               (local $i i32)
               (loop $next
                 (i32.store (i32.and (i32.shl (local.get $i) (i32.const 2)) (i32.const 0xFFFC)) (local.get $i))
                 (local.set $i (i32.add (local.get $i) (i32.const 1)))
                 (br_if $next (i32.lt_u (local.get $i) (local.get $n)))))
             (func (export "sieve") (param $n i32) (result i32)
               (local $i i32) (local $j i32) (local $count i32)
               (memory.fill (i32.const 0) (i32.const 1) (local.get $n))
               (local.set $i (i32.const 2))
               (block $done
                 (loop $outer
                   (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
                   (if (i32.load8_u (local.get $i))
                     (then
                       (local.set $count (i32.add (local.get $count) (i32.const 1)))
                       (local.set $j (i32.mul (local.get $i) (local.get $i)))
                       (block $marked
                         (loop $inner
                           (br_if $marked (i32.ge_u (local.get $j) (local.get $n)))
                           (i32.store8 (local.get $j) (i32.const 0))
                           (local.set $j (i32.add (local.get $j) (local.get $i)))
                           (br $inner)))))
                   (local.set $i (i32.add (local.get $i) (i32.const 1)))
                   (br $outer)))
               (local.get $count)))"#,
    )
    .expect("valid text")
}

/// Whether lifecycle number `i` of a `lifecycles_trapping` run traps (one in three).
pub fn traps(i: u64) -> bool {
    i % 3 == 2
}

/// Runs `body` with a pool of `threads` worker threads, started once (like a server's, they
/// are warm on their cores for every sample; starting threads per sample would measure thread
/// creation and the scheduler spreading them). `body` gets `run(iters)`, which has the workers
/// make `iters` calls of `lifecycle(i)` (each `i` once, taken in chunks, so that the workers
/// finish together) and returns the wall time and the process's system CPU time they took.
pub fn with_workers<T>(
    threads: usize,
    lifecycle: impl Fn(u64) + Sync,
    body: impl FnOnce(&mut dyn FnMut(u64) -> (Duration, Duration)) -> T,
) -> T {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Barrier;
    const CHUNK: u64 = 256;
    let (start, done) = (Barrier::new(threads + 1), Barrier::new(threads + 1));
    let (next, end, stop) = (AtomicU64::new(0), AtomicU64::new(0), AtomicBool::new(false));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (start, done, next, end, stop, lifecycle) = (&start, &done, &next, &end, &stop, &lifecycle);
            scope.spawn(move || loop {
                start.wait();
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let end = end.load(Ordering::Relaxed);
                loop {
                    let first = next.fetch_add(CHUNK, Ordering::Relaxed);
                    if first >= end {
                        break;
                    }
                    (first..(first + CHUNK).min(end)).for_each(lifecycle);
                }
                done.wait();
            });
        }
        /// Releases the workers to stop when `body` returns or panics.
        struct Stop<'a>(&'a AtomicBool, &'a Barrier);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
                self.1.wait();
            }
        }
        let _stop = Stop(&stop, &start);
        body(&mut |iters| {
            next.store(0, Ordering::Relaxed);
            end.store(iters, Ordering::Relaxed);
            let system_before = system_time();
            let started = Instant::now();
            // The barriers order the stores above before the workers' loads.
            start.wait();
            done.wait();
            (started.elapsed(), system_time().saturating_sub(system_before))
        })
    })
}

/// The process's resource usage (all its threads).
fn resource_usage() -> libc::rusage {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `getrusage` writes a `rusage` into the buffer, which is large enough.
    unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    }
}

fn duration(time: libc::timeval) -> Duration {
    Duration::new(time.tv_sec as u64, time.tv_usec as u32 * 1000)
}

/// System CPU time the process (all its threads) has used.
pub fn system_time() -> Duration {
    duration(resource_usage().ru_stime)
}

/// A module whose memory is `size` bytes, initialised with non-zero data everywhere (`dense`)
/// or in one 4 KiB page of every eight (sparse), exporting `dirty(len)` which writes `len`
/// bytes.
pub fn heap_wasm(size: usize, dense: bool) -> Vec<u8> {
    let pages = size.div_ceil(64 << 10).max(1);
    let mut wat = format!(
        "(module (memory {pages}) (func (export \"dirty\") (param i32) (memory.fill (i32.const 0) (i32.const 7) (local.get 0)))"
    );
    let chunk = |len: usize| -> String { (0..len).map(|i| format!("\\{:02x}", (i % 251) as u8 + 1)).collect() };
    if dense {
        // One segment per 64 KiB keeps the text manageable.
        let piece = chunk(64 << 10);
        for offset in (0..size).step_by(64 << 10) {
            wat.push_str(&format!("(data (i32.const {offset}) \"{piece}\")"));
        }
    } else {
        let piece = chunk(4096);
        for offset in (0..size).step_by(8 * 4096) {
            wat.push_str(&format!("(data (i32.const {offset}) \"{piece}\")"));
        }
    }
    wat.push(')');
    wat::parse_str(&wat).expect("valid text")
}

/// A request's deadline in the serving benchmarks' own servers (`kiln serve`'s default).
pub const SERVE_DEADLINE: Duration = Duration::from_secs(30);

/// How the serving benchmarks' own servers (`wasmtime-serve`, `serve-ceiling`) serve: as
/// `kiln serve --quiet` with its defaults (the benchmarks run it so), only failures logged.
pub fn serve_config(listen: std::net::SocketAddr, workers: usize, name: String) -> kiln_serve::Config {
    kiln_serve::Config {
        listen,
        workers,
        queue: 64 * workers,
        deadline: SERVE_DEADLINE,
        max_request_body: 1 << 20,
        max_response: 16 << 20,
        name,
        admin: None,
        read_timeout: Duration::from_secs(10),
        log_requests: false,
    }
}

/// User plus system CPU time the process (all its threads) has used.
pub fn cpu_time() -> Duration {
    let usage = resource_usage();
    duration(usage.ru_utime) + duration(usage.ru_stime)
}

/// The modules the compile benchmarks compile, as `(name, wasm)`: a generated module of 3,000
/// functions shaped like compiled code (`generated`), and the Rust program named by
/// `$KILN_BENCH_RUST_PROGRAM` (`cargo xtask bench` passes the largest one of the
/// wasi-testsuite) as `rust_NAME`.
pub fn compile_modules() -> Result<Vec<(String, Vec<u8>)>> {
    let mut modules = vec![("generated".to_string(), generated_wasm(3000))];
    if let Some(path) = std::env::var_os("KILN_BENCH_RUST_PROGRAM") {
        let path = PathBuf::from(path);
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let wasm = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        modules.push((format!("rust_{name}"), wasm));
    }
    Ok(modules)
}

/// The size of a module's code section's contents (the wasm code a compiler translates).
pub fn code_section_size(wasm: &[u8]) -> usize {
    wasmparser::Parser::new(0)
        .parse_all(wasm)
        .find_map(|payload| match payload {
            Ok(wasmparser::Payload::CodeSectionStart { size, .. }) => Some(size as usize),
            _ => None,
        })
        .unwrap_or(0)
}

/// A module of `functions` functions shaped like compiled code: loops over memory with loads
/// and stores, integer and float arithmetic, direct and indirect calls, branches, of varied
/// sizes. Deterministic.
pub fn generated_wasm(functions: usize) -> Vec<u8> {
    let mut wat = format!(
        "(module (type $t (func (param i32 i32) (result i32))) (memory 4) (table {functions} funcref) \
         (global $g (mut i32) (i32.const 0))"
    );
    for i in 0..functions {
        let callee = (i * 7 + 3) % functions;
        let mut body = String::new();
        for k in 0..(i % 6 + 1) {
            let c = 3 + (i * 13 + k) % 97;
            body.push_str(&format!(
                "(local.set 3 (i32.add (i32.load offset={o1} (i32.and (local.get 2) (i32.const 0xfff0))) \
                   (i32.mul (local.get 2) (i32.const {c}))))\
                 (i32.store offset={o2} (i32.and (local.get 3) (i32.const 0xfff0)) (i32.xor (local.get 3) (local.get 0)))\
                 (local.set 4 (i64.add (local.get 4) (i64.mul (i64.extend_i32_u (local.get 3)) (i64.const {c}))))\
                 (local.set 5 (f64.add (f64.mul (local.get 5) (f64.const 0.5)) (f64.convert_i32_s (local.get 3))))\
                 (if (i32.eqz (i32.and (local.get 3) (i32.const {mask})))\
                   (then (local.set 0 (call $f{callee} (local.get 3) (i32.const 2))))\
                   (else (global.set $g (i32.add (global.get $g) (local.get 3)))))",
                o1 = (k * 4) % 64,
                o2 = (k * 8 + 4) % 64,
                mask = (1 << (k % 4 + 2)) - 1,
            ));
        }
        wat.push_str(&format!(
            "(func $f{i} (type $t) (local i32 i32 i64 f64)\
               (local.set 2 (i32.const {i}))\
               (block $exit (loop $next\
                 (br_if $exit (i32.ge_u (local.get 2) (local.get 1)))\
                 {body}\
                 (local.set 2 (i32.add (local.get 2) (i32.const 1)))\
                 (br $next)))\
               (if (i32.gt_u (local.get 1) (i32.const 1000))\
                 (then (local.set 0 (call_indirect (type $t) (local.get 3) (i32.const 1) (i32.rem_u (local.get 3) (i32.const {functions}))))))\
               (i32.add (i32.add (local.get 0) (i32.wrap_i64 (local.get 4))) (i32.trunc_sat_f64_s (local.get 5))))"
        ));
    }
    wat.push_str(&format!(
        "(elem (i32.const 0) func {})",
        (0..functions).map(|i| format!("$f{i}")).collect::<Vec<_>>().join(" ")
    ));
    wat.push_str("(export \"f0\" (func $f0)))");
    wat::parse_str(&wat).expect("valid text")
}

/// Kiln's side: a compiled, loaded module and a one-slot region.
pub mod kiln {
    use super::*;
    use kiln_runtime::{Extern, Func, Instance, Module, Region, RegionConfig, Val};

    /// Everything one benchmark needs.
    pub struct Setup {
        _dir: tempfile::TempDir,
        /// The compiled shared object.
        pub so: PathBuf,
        /// The loaded module.
        pub module: Module,
        /// A region with one slot.
        pub region: Region,
        /// Stub host functions for the module's imports (WASI calls return 0).
        pub imports: Vec<Extern>,
    }

    /// Stubs for every imported function: zero results.
    pub fn stub_imports(module: &Module) -> Vec<Extern> {
        let meta = module.metadata();
        meta.imports
            .iter()
            .map(|import| match &import.kind {
                kiln_runtime::ImportKind::Func(t) => {
                    let ty = meta.types[*t as usize].clone();
                    Extern::Func(Func::new_host(ty, |_, _, results| {
                        for r in results.iter_mut() {
                            *r = Val::I32(0);
                        }
                        Ok(())
                    }))
                }
                other => panic!("benchmark modules import only functions, not {other:?}"),
            })
            .collect()
    }

    /// Compiles and loads `wasm`.
    pub fn setup(wasm: &[u8]) -> Result<Setup> {
        setup_with(wasm, true)
    }

    /// Compiles (with or without interrupt checks) and loads `wasm`.
    pub fn setup_with(wasm: &[u8], interruptible: bool) -> Result<Setup> {
        let dir = tempfile::tempdir()?;
        let so = dir.path().join("bench.so");
        let mut compiler = kiln_compiler::Compiler::new()?;
        compiler.set_interruptible(interruptible);
        compiler.compile_to_file(wasm, &so)?;
        // SAFETY: compiled just above into a private temporary directory.
        let module = unsafe { Module::load(&so) }?;
        let region = Region::new(RegionConfig { slots: 1, ..RegionConfig::default() })?;
        let imports = stub_imports(&module);
        Ok(Setup { _dir: dir, so, module, region, imports })
    }

    /// Compiles (with GC) and loads `wasm`.
    pub fn setup_gc(wasm: &[u8]) -> Result<Setup> {
        let dir = tempfile::tempdir()?;
        let so = dir.path().join("bench.so");
        let features = kiln_compiler::default_features() | kiln_compiler::WasmFeatures::GC;
        kiln_compiler::Compiler::with_features(features)?.compile_to_file(wasm, &so)?;
        // SAFETY: compiled just above into a private temporary directory.
        let module = unsafe { Module::load(&so) }?;
        let region = Region::new(RegionConfig { slots: 1, ..RegionConfig::default() })?;
        Ok(Setup { _dir: dir, so, module, region, imports: Vec::new() })
    }

    /// Compiles `wasm` into a shared object at `so`, as `kiln compile` does.
    pub fn compile(wasm: &[u8], so: &Path) -> Result<()> {
        Ok(kiln_compiler::Compiler::new()?.compile_to_file(wasm, so)?)
    }

    /// Compiles and loads `wasm` into a region of `slots` slots.
    pub fn setup_slots(wasm: &[u8], slots: usize) -> Result<Setup> {
        let mut setup = setup(wasm)?;
        setup.region = Region::new(RegionConfig { slots, ..RegionConfig::default() })?;
        Ok(setup)
    }

    impl Setup {
        /// Instantiates in the region's slot.
        pub fn instantiate(&self) -> Instance {
            Instance::new(&self.region, &self.module, &self.imports).expect("instantiate")
        }

        /// One request of [`lifecycle_wasm`]: instantiate, call `run(trap)`, tear down.
        pub fn lifecycle(&self, trap: bool) {
            let instance = self.instantiate();
            let run = instance.get_func("run").unwrap().typed::<i32, i32>().unwrap();
            assert_eq!(run.call(i32::from(trap)).is_err(), trap);
        }
    }
}

/// Wasmtime's side: pooling allocator, copy-on-write memory images, module compiled ahead of
/// time and loaded from a file.
#[cfg(feature = "wasmtime")]
pub mod peer {
    use super::*;
    use wasmtime::{
        Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, PoolingAllocationConfig, Store, Val,
    };

    /// Everything one benchmark needs.
    pub struct Setup {
        _dir: tempfile::TempDir,
        /// The precompiled module file.
        pub cwasm: PathBuf,
        /// The engine.
        pub engine: Engine,
        /// The module, pre-linked with stub imports.
        pub pre: InstancePre<()>,
    }

    /// The engine configuration the peer numbers use.
    pub fn engine() -> Result<Engine> {
        engine_with(false)
    }

    /// The peer's configuration, or its best for warm reuse (`keep_resident`: like Kiln's warm
    /// path, it resets the first 64 KiB of each memory and table with `memset` instead of
    /// returning them to the kernel).
    pub fn engine_with(keep_resident: bool) -> Result<Engine> {
        let mut config = Config::new();
        let mut pool = PoolingAllocationConfig::default();
        pool.total_memories(32).total_tables(16).total_core_instances(16).max_memories_per_module(2);
        if keep_resident {
            pool.linear_memory_keep_resident(64 << 10).table_keep_resident(64 << 10);
        }
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        config.wasm_memory64(true);
        config.wasm_multi_memory(true);
        config.memory_init_cow(true);
        Ok(Engine::new(&config)?)
    }

    /// Loads a precompiled module and links stubs for its imports.
    pub fn load(engine: &Engine, cwasm: &Path) -> Result<InstancePre<()>> {
        // SAFETY: the file was written by `Engine::precompile_module` of the same engine config.
        let module = unsafe { Module::deserialize_file(engine, cwasm)? };
        let mut linker = Linker::new(engine);
        for import in module.imports() {
            if let wasmtime::ExternType::Func(ty) = import.ty() {
                linker.func_new(import.module(), import.name(), ty, |_, _, results| {
                    for r in results.iter_mut() {
                        *r = Val::I32(0);
                    }
                    Ok(())
                })?;
            }
        }
        Ok(linker.instantiate_pre(&module)?)
    }

    /// [`setup`] for a GC module in the peer's best configuration for `collector`: the pooling
    /// allocator (GC heaps reused across stores, their first 64 KiB kept resident like Kiln's
    /// warm path) and a GC heap that starts at Kiln's default size (64 MiB), so allocation never
    /// waits for the heap to grow. The benchmarks pick the null collector where nothing needs
    /// collecting (the fastest allocator Wasmtime has) and its default, deferred reference
    /// counting, where something does (its copying collector is not functional in 48).
    pub fn setup_gc(wasm: &[u8], collector: wasmtime::Collector) -> Result<Setup> {
        let mut config = Config::new();
        let mut pool = PoolingAllocationConfig::default();
        pool.total_memories(16).total_tables(16).total_core_instances(16).total_gc_heaps(16);
        pool.linear_memory_keep_resident(64 << 10).table_keep_resident(64 << 10);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        config.wasm_gc(true).wasm_function_references(true).collector(collector);
        config.gc_heap_initial_size(64 << 20);
        let engine = Engine::new(&config)?;
        let dir = tempfile::tempdir()?;
        let cwasm = dir.path().join("bench.cwasm");
        std::fs::write(&cwasm, engine.precompile_module(wasm)?)?;
        let pre = load(&engine, &cwasm)?;
        Ok(Setup { _dir: dir, cwasm, engine, pre })
    }

    /// Precompiles `wasm` to a file and loads it.
    pub fn setup(wasm: &[u8]) -> Result<Setup> {
        setup_with(wasm, false)
    }

    /// [`setup`] with [`engine_with`]`(keep_resident)`.
    pub fn setup_with(wasm: &[u8], keep_resident: bool) -> Result<Setup> {
        let engine = engine_with(keep_resident)?;
        let dir = tempfile::tempdir()?;
        let cwasm = dir.path().join("bench.cwasm");
        std::fs::write(&cwasm, engine.precompile_module(wasm)?)?;
        let pre = load(&engine, &cwasm)?;
        Ok(Setup { _dir: dir, cwasm, engine, pre })
    }

    impl Setup {
        /// A new store with an instance in it.
        pub fn instantiate(&self) -> (Store<()>, wasmtime::Instance) {
            let mut store = Store::new(&self.engine, ());
            let instance = self.pre.instantiate(&mut store).expect("instantiate");
            (store, instance)
        }

        /// One request of [`lifecycle_wasm`]: a new store, instantiate, call `run(trap)`, drop.
        pub fn lifecycle(&self, trap: bool) {
            let (mut store, instance) = self.instantiate();
            let run = instance.get_typed_func::<i32, i32>(&mut store, "run").unwrap();
            assert_eq!(run.call(&mut store, i32::from(trap)).is_err(), trap);
        }
    }
}
