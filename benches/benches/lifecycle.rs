//! The seed article's lifecycle benchmarks, for Kiln and (feature `wasmtime`) Wasmtime in the
//! same run. Names follow DESIGN.md's contract; criterion groups are the engine names.
//! Run through `cargo xtask bench`, which builds the C hello world and reports ratios.

use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};
use kiln_benches::{
    code_section_size, compile_modules, compute_wasm, cpu_time, deep_lifecycle_wasm, dirty_lifecycle_wasm, gc_wasm,
    heap_wasm, hello_wasm, kiln, lifecycle_wasm, memory_shape_wasm, stores_wasm, throw_wasm, traps, trivial_wasm,
    with_workers, DIRTY_SIZES, HEAP_SIZES, THROW_DEPTHS,
};

const MEMORY_SHAPES: [&str; 3] = ["one_memory", "two_memories", "memory64"];

/// Lifecycles per second on one and two threads (reported as ns per lifecycle: 1e9 / rate),
/// with one lifecycle in three trapping in the last, named `lifecycles{suffix}/1t`,
/// `lifecycles{suffix}/2t` and `lifecycles_trapping{suffix}/2t`. The system CPU time each took
/// per lifecycle is appended to `$KILN_BENCH_SYSTIME` as `lifecycles_system...` (`cargo xtask
/// bench` reports it beside the wall-clock figures).
fn lifecycle_throughput(
    group: &mut BenchmarkGroup<WallTime>,
    engine: &str,
    suffix: &str,
    lifecycle: impl Fn(bool) + Sync,
) {
    for (kind, threads, trapping) in [("", 1, false), ("", 2, false), ("_trapping", 2, true)] {
        let (function, threads_name) = (format!("lifecycles{kind}{suffix}"), format!("{threads}t"));
        let (mut system, mut count) = (Duration::ZERO, 0);
        with_workers(
            threads,
            |i| lifecycle(trapping && traps(i)),
            |run| {
                group.bench_function(BenchmarkId::new(&function, &threads_name), |b| {
                    b.iter_custom(|iters| {
                        let (wall, sys) = run(iters);
                        system += sys;
                        count += iters;
                        wall
                    })
                });
            },
        );
        if count > 0 {
            let system_name = format!("{}/{threads_name}", function.replacen("lifecycles", "lifecycles_system", 1));
            report(&format!("{engine}\t{system_name}\t{:.1}\n", system.as_nanos() as f64 / count as f64));
        }
    }
}

/// `teardown_dirty/SIZE`: the time to tear down an instance that wrote SIZE bytes of its memory,
/// together with the next instantiation (an engine may leave the memory for the kernel until
/// the slot is taken again, or to another thread). What the whole loop (writing included) costs
/// the process in CPU time, every thread's, is appended to `$KILN_BENCH_SYSTIME` per
/// lifecycle as `teardown_dirty_cpu/SIZE`, so that work moved off the timed path still shows.
fn teardown_dirty<I>(
    group: &mut BenchmarkGroup<WallTime>,
    engine: &str,
    instantiate: impl Fn() -> I,
    dirty: impl Fn(&mut I, i32),
) {
    for &(name, size) in DIRTY_SIZES {
        let (mut cpu, mut count) = (Duration::ZERO, 0);
        group.bench_with_input(BenchmarkId::new("teardown_dirty", name), &size, |b, &size| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut instance = instantiate();
                let cpu_before = cpu_time();
                for _ in 0..iters {
                    dirty(&mut instance, size as i32);
                    let start = Instant::now();
                    drop(instance);
                    instance = instantiate();
                    total += start.elapsed();
                }
                cpu += cpu_time() - cpu_before;
                count += iters;
                total
            })
        });
        if count > 0 {
            report(&format!("{engine}\tteardown_dirty_cpu/{name}\t{:.1}\n", cpu.as_nanos() as f64 / count as f64));
        }
    }
}

/// The GC workloads of [`gc_wasm`]: the call alone, each in a fresh instance (a new store, so
/// allocation-only runs never collect): `gc_alloc/100K_structs`, `gc_binary_trees/depth_14`,
/// and `gc_binary_trees_collect/100x_depth_14`, which allocates more than a heap holds.
/// `instantiate(collects)` makes the instance, told whether the workload needs a collector.
fn gc_benches<I>(
    group: &mut BenchmarkGroup<WallTime>,
    instantiate: impl Fn(bool) -> I,
    call: impl Fn(&mut I, &str, i32) -> i64,
) {
    for (name, id, export, arg, expected, collects) in [
        ("gc_alloc", "100K_structs", "alloc", 100_000, 5_000_050_000, false),
        ("gc_binary_trees", "depth_14", "trees", 14, (1 << 15) - 1, false),
        ("gc_binary_trees_collect", "100x_depth_14", "many_trees", 100, 100 * ((1 << 15) - 1), true),
    ] {
        group.bench_function(BenchmarkId::new(name, id), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut instance = instantiate(collects);
                    let start = Instant::now();
                    let result = call(&mut instance, export, arg);
                    total += start.elapsed();
                    assert_eq!(result, expected);
                }
                total
            })
        });
    }
}

/// Appends `lines` (`engine\tname\tvalue` each) to `$KILN_BENCH_SYSTIME`, the figures
/// `cargo xtask bench` reports beside criterion's; nothing when it is unset.
fn report(lines: &str) {
    use std::io::Write;
    if let Some(path) = std::env::var_os("KILN_BENCH_SYSTIME") {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path);
        file.and_then(|mut f| f.write_all(lines.as_bytes())).expect("write the benchmark report");
    }
}

/// Compile time of each of [`compile_modules`] from wasm to the file a deployment keeps (Kiln's
/// shared object, Wasmtime's `.cwasm`), as `compile_wall/NAME` (wall-clock, all cores); the CPU time
/// per compile goes to `$KILN_BENCH_SYSTIME` as `compile_cpu/NAME`, and each module's code
/// section size as a `code_bytes` line, for the throughput `cargo xtask bench` prints.
fn compile_benches(c: &mut Criterion, engine: &str, compile: impl Fn(&[u8], &std::path::Path)) {
    let modules = compile_modules().expect("the compile benchmark modules");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut group = c.benchmark_group(engine);
    group.sample_size(10);
    for (name, wasm) in &modules {
        let out = dir.path().join(name);
        let (mut cpu, mut count) = (Duration::ZERO, 0u32);
        group.bench_function(BenchmarkId::new("compile_wall", name), |b| {
            b.iter_custom(|iters| {
                let (wall, before) = (Instant::now(), cpu_time());
                for _ in 0..iters {
                    compile(wasm, &out);
                }
                cpu += cpu_time() - before;
                count += iters as u32;
                wall.elapsed()
            })
        });
        if count > 0 {
            report(&format!(
                "{engine}\tcompile_cpu/{name}\t{:.1}\ncode_bytes\tcompile_wall/{name}\t{}\n",
                cpu.as_nanos() as f64 / f64::from(count),
                code_section_size(wasm)
            ));
        }
    }
    group.finish();
}

fn kiln_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("kiln");
    let requests = kiln::setup_slots(&lifecycle_wasm(), 4).expect("compile lifecycle module");
    lifecycle_throughput(&mut group, "kiln", "", |trap| requests.lifecycle(trap));
    let deep = kiln::setup_slots(&deep_lifecycle_wasm(), 4).expect("compile deep lifecycle module");
    lifecycle_throughput(&mut group, "kiln", "_deep", |trap| deep.lifecycle(trap));
    let dirty = kiln::setup_slots(&dirty_lifecycle_wasm(), 16).expect("compile dirty lifecycle module");
    lifecycle_throughput(&mut group, "kiln", "_dirty256K", |trap| dirty.lifecycle(trap));

    let hello = hello_wasm().expect("hello.wasm");
    let setup = kiln::setup(&hello).expect("compile hello");

    group.bench_function("load_region_instantiate_hello", |b| {
        b.iter(|| {
            // SAFETY: compiled by `kiln::setup` into its private directory.
            let module = unsafe { kiln_runtime::Module::load(&setup.so) }.unwrap();
            let region =
                kiln_runtime::Region::new(kiln_runtime::RegionConfig { slots: 1, ..Default::default() }).unwrap();
            let imports = kiln::stub_imports(&module);
            let instance = kiln_runtime::Instance::new(&region, &module, &imports).unwrap();
            drop(instance);
        })
    });
    group.bench_function("instantiate_hello", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let instance = setup.instantiate();
                total += start.elapsed();
                drop(instance);
            }
            total
        })
    });
    group.bench_function("teardown_hello", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let instance = setup.instantiate();
                let start = Instant::now();
                drop(instance);
                total += start.elapsed();
            }
            total
        })
    });
    group.bench_function("instantiate_teardown_hello", |b| b.iter(|| drop(setup.instantiate())));

    let trivial = kiln::setup(&trivial_wasm()).expect("compile trivial");
    let instance = trivial.instantiate();
    let untyped = instance.get_func("nop").unwrap();
    group.bench_function("first_run_with_signal_install", |b| {
        // A thread that has never run guest code: the alternate signal stack is installed on
        // its first call (the process-wide handlers are installed once per process).
        b.iter(|| {
            let nop = untyped.clone();
            std::thread::spawn(move || nop.call(&[]).unwrap()).join().unwrap()
        })
    });
    let nop = untyped.typed::<(), ()>().unwrap();
    // A store other threads may use: each call takes it with a compare-and-swap.
    group.bench_function("call_trivial_shared", |b| b.iter(|| nop.call(()).unwrap()));
    // Bound to this thread (as Wasmtime's `&mut Store` is): no atomic operation per call.
    let binding = instance.store().bind_to_thread().unwrap();
    group.bench_function("call_trivial", |b| b.iter(|| nop.call(()).unwrap()));
    drop(binding);
    drop(nop);
    drop(instance);

    for &(name, size) in HEAP_SIZES {
        for (kind, dense) in [("instantiate_dense", true), ("instantiate_sparse", false)] {
            let setup = kiln::setup(&heap_wasm(size, dense)).expect("compile heap module");
            group.bench_with_input(BenchmarkId::new(kind, name), &setup, |b, setup| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let instance = setup.instantiate();
                        total += start.elapsed();
                        drop(instance);
                    }
                    total
                })
            });
        }
    }
    for shape in MEMORY_SHAPES {
        let setup = kiln::setup(&memory_shape_wasm(shape)).expect("compile memory shape");
        group.bench_function(BenchmarkId::new("instantiate_teardown", shape), |b| b.iter(|| drop(setup.instantiate())));
    }
    for (name, interruptible) in [("interruptible", true), ("uninterruptible", false)] {
        let setup = kiln::setup_with(&compute_wasm(), interruptible).expect("compile compute");
        let instance = setup.instantiate();
        let sum = instance.get_func("sum").unwrap().typed::<i32, i64>().unwrap();
        let _binding = instance.store().bind_to_thread().unwrap();
        group.bench_function(BenchmarkId::new("compute_1M_calls", name), |b| b.iter(|| sum.call(1_000_000).unwrap()));
    }
    {
        let setup = kiln::setup(&stores_wasm()).expect("compile store kernels");
        let instance = setup.instantiate();
        let stores = instance.get_func("stores").unwrap().typed::<i32, ()>().unwrap();
        let sieve = instance.get_func("sieve").unwrap().typed::<i32, i32>().unwrap();
        let _binding = instance.store().bind_to_thread().unwrap();
        group.bench_function(BenchmarkId::new("compute_stores", "1M_words"), |b| {
            b.iter(|| stores.call(1 << 20).unwrap())
        });
        group.bench_function(BenchmarkId::new("compute_stores", "sieve_64K"), |b| {
            b.iter(|| assert_eq!(sieve.call(65536).unwrap(), 6542))
        });
    }
    {
        let setup = kiln::setup(&throw_wasm()).expect("compile throw module");
        let instance = setup.instantiate();
        let throw = instance.get_func("throw").unwrap().typed::<i32, i32>().unwrap();
        let _binding = instance.store().bind_to_thread().unwrap();
        for &depth in THROW_DEPTHS {
            group.bench_function(BenchmarkId::new("throw", format!("{depth}_frames")), |b| {
                b.iter(|| assert_eq!(throw.call(depth as i32).unwrap(), 42))
            });
        }
    }

    {
        let setup = kiln::setup_gc(&gc_wasm()).expect("compile GC module");
        gc_benches(
            &mut group,
            |_| setup.instantiate(),
            |instance, export, arg| match instance.call(export, &[kiln_runtime::Val::I32(arg)]).unwrap()[..] {
                [kiln_runtime::Val::I64(v)] => v,
                [kiln_runtime::Val::I32(v)] => i64::from(v),
                ref other => panic!("unexpected results {other:?}"),
            },
        );
    }

    // As many slots as the peer's pool has instances (see `peer::engine_with`).
    let dirty = kiln::setup_slots(&heap_wasm(16 << 20, false), 16).expect("compile heap module");
    teardown_dirty(
        &mut group,
        "kiln",
        || dirty.instantiate(),
        |instance, size| {
            instance.call("dirty", &[kiln_runtime::Val::I32(size)]).unwrap();
        },
    );
    group.finish();
    compile_benches(c, "kiln", |wasm, so| kiln::compile(wasm, so).expect("compile"));
}

#[cfg(feature = "wasmtime")]
fn peer_benches(c: &mut Criterion) {
    use kiln_benches::peer;
    let mut group = c.benchmark_group("wasmtime");
    // The peer's best configuration for warm reuse under the plain names, its default pooling
    // configuration beside it.
    for (suffix, keep_resident) in [("", true), ("_pooling_default", false)] {
        let requests = peer::setup_with(&lifecycle_wasm(), keep_resident).expect("compile lifecycle module");
        lifecycle_throughput(&mut group, "wasmtime", suffix, |trap| requests.lifecycle(trap));
    }
    let deep = peer::setup_with(&deep_lifecycle_wasm(), true).expect("compile deep lifecycle module");
    lifecycle_throughput(&mut group, "wasmtime", "_deep", |trap| deep.lifecycle(trap));
    let dirty = peer::setup_with(&dirty_lifecycle_wasm(), true).expect("compile dirty lifecycle module");
    lifecycle_throughput(&mut group, "wasmtime", "_dirty256K", |trap| dirty.lifecycle(trap));
    group.finish();
    let mut group = c.benchmark_group("wasmtime");
    let hello = hello_wasm().expect("hello.wasm");
    let setup = peer::setup(&hello).expect("compile hello");

    group.bench_function("load_region_instantiate_hello", |b| {
        b.iter(|| {
            let engine = peer::engine().unwrap();
            let pre = peer::load(&engine, &setup.cwasm).unwrap();
            let mut store = wasmtime::Store::new(&engine, ());
            let instance = pre.instantiate(&mut store).unwrap();
            let _ = instance;
            drop(store);
        })
    });
    group.bench_function("instantiate_hello", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let pair = setup.instantiate();
                total += start.elapsed();
                drop(pair);
            }
            total
        })
    });
    group.bench_function("teardown_hello", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let pair = setup.instantiate();
                let start = Instant::now();
                drop(pair);
                total += start.elapsed();
            }
            total
        })
    });
    group.bench_function("instantiate_teardown_hello", |b| b.iter(|| drop(setup.instantiate())));

    let trivial = peer::setup(&trivial_wasm()).expect("compile trivial");
    let (mut store, instance) = trivial.instantiate();
    let nop = instance.get_typed_func::<(), ()>(&mut store, "nop").unwrap();
    group.bench_function("call_trivial", |b| b.iter(|| nop.call(&mut store, ()).unwrap()));
    group.bench_function("first_run_with_signal_install", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (mut store, instance) = trivial.instantiate();
                let nop = instance.get_typed_func::<(), ()>(&mut store, "nop").unwrap();
                let start = Instant::now();
                std::thread::spawn(move || nop.call(&mut store, ()).unwrap()).join().unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    drop(store);

    for &(name, size) in HEAP_SIZES {
        for (kind, dense) in [("instantiate_dense", true), ("instantiate_sparse", false)] {
            let setup = peer::setup(&heap_wasm(size, dense)).expect("compile heap module");
            group.bench_with_input(BenchmarkId::new(kind, name), &setup, |b, setup| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let pair = setup.instantiate();
                        total += start.elapsed();
                        drop(pair);
                    }
                    total
                })
            });
        }
    }
    for shape in MEMORY_SHAPES {
        let setup = peer::setup(&memory_shape_wasm(shape)).expect("compile memory shape");
        group.bench_function(BenchmarkId::new("instantiate_teardown", shape), |b| b.iter(|| drop(setup.instantiate())));
    }
    {
        let setup = peer::setup(&compute_wasm()).expect("compile compute");
        let (mut store, instance) = setup.instantiate();
        let sum = instance.get_typed_func::<i32, i64>(&mut store, "sum").unwrap();
        group.bench_function(BenchmarkId::new("compute_1M_calls", "default"), |b| {
            b.iter(|| sum.call(&mut store, 1_000_000).unwrap())
        });
    }
    {
        let setup = peer::setup(&stores_wasm()).expect("compile store kernels");
        let (mut store, instance) = setup.instantiate();
        let stores = instance.get_typed_func::<i32, ()>(&mut store, "stores").unwrap();
        let sieve = instance.get_typed_func::<i32, i32>(&mut store, "sieve").unwrap();
        group.bench_function(BenchmarkId::new("compute_stores", "1M_words"), |b| {
            b.iter(|| stores.call(&mut store, 1 << 20).unwrap())
        });
        group.bench_function(BenchmarkId::new("compute_stores", "sieve_64K"), |b| {
            b.iter(|| assert_eq!(sieve.call(&mut store, 65536).unwrap(), 6542))
        });
    }
    {
        let setup = peer::setup(&throw_wasm()).expect("compile throw module");
        let (mut store, instance) = setup.instantiate();
        let throw = instance.get_typed_func::<i32, i32>(&mut store, "throw").unwrap();
        for &depth in THROW_DEPTHS {
            group.bench_function(BenchmarkId::new("throw", format!("{depth}_frames")), |b| {
                b.iter(|| assert_eq!(throw.call(&mut store, depth as i32).unwrap(), 42))
            });
        }
    }

    {
        let null = peer::setup_gc(&gc_wasm(), wasmtime::Collector::Null).expect("compile GC module");
        let drc =
            peer::setup_gc(&gc_wasm(), wasmtime::Collector::DeferredReferenceCounting).expect("compile GC module");
        gc_benches(
            &mut group,
            |collects| if collects { drc.instantiate() } else { null.instantiate() },
            |(store, instance), export, arg| {
                let f = instance.get_func(&mut *store, export).unwrap();
                let mut results = [wasmtime::Val::I32(0)];
                f.call(&mut *store, &[wasmtime::Val::I32(arg)], &mut results).unwrap();
                match results[0] {
                    wasmtime::Val::I64(v) => v,
                    wasmtime::Val::I32(v) => i64::from(v),
                    ref other => panic!("unexpected result {other:?}"),
                }
            },
        );
    }

    let dirty = peer::setup(&heap_wasm(16 << 20, false)).expect("compile heap module");
    teardown_dirty(
        &mut group,
        "wasmtime",
        || dirty.instantiate(),
        |(store, instance), size| {
            let f = instance.get_typed_func::<i32, ()>(&mut *store, "dirty").unwrap();
            f.call(store, size).unwrap();
        },
    );
    group.finish();
    // The peer's defaults: Cranelift at the same optimisation level (speed), parallel
    // compilation on.
    let engine = peer::engine().expect("the peer's engine");
    compile_benches(c, "wasmtime", |wasm, cwasm| {
        std::fs::write(cwasm, engine.precompile_module(wasm).expect("compile")).expect("write the .cwasm")
    });
}

#[cfg(not(feature = "wasmtime"))]
fn peer_benches(_: &mut Criterion) {}

criterion_group!(benches, kiln_benches, peer_benches);
criterion_main!(benches);
