//! The `cargo fuzz` target bodies, run over fixed pseudo-random inputs so every `cargo test`
//! exercises them (the long runs are `cargo fuzz run -s none TARGET`, see the README).

use std::path::Path;

use kiln_fuzzing::targets;

/// Deterministic pseudo-random bytes.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    kiln_fuzzing::seed_bytes(seed, 0x9e37_79b9_7f4a_7c15, len)
}

#[test]
fn random_bytes_and_damaged_modules_are_refused_by_the_compiler() {
    let compiler = kiln_compiler::Compiler::new().unwrap();
    for seed in 0..300 {
        let bytes = random_bytes(seed, (seed as usize * 7) % 600);
        assert!(compiler.compile_object(&bytes).is_err(), "random bytes {seed} compiled");
        targets::compile(&bytes);
    }
    // A valid module with one byte changed: still valid, or refused with an error.
    let wasm = wat::parse_str(
        r#"(module (memory 1) (func (export "f") (param i32) (result i32)
             (i32.add (local.get 0) (i32.load (i32.const 8)))))"#,
    )
    .unwrap();
    let (mut compiled, mut refused) = (0, 0);
    for (i, mask) in (0..wasm.len()).flat_map(|i| [(i, 0x01u8), (i, 0x80), (i, 0xff)]) {
        let mut damaged = wasm.clone();
        damaged[i] ^= mask;
        match compiler.compile_object(&damaged) {
            Ok(_) => compiled += 1,
            Err(_) => refused += 1,
        }
        targets::compile(&damaged);
    }
    assert!(compiled > 0 && refused > 0, "{compiled} compiled, {refused} refused");
}

#[test]
fn generated_modules_with_every_proposal_compile() {
    let compiled = (0..40).filter(|&seed| targets::compile_generated(&random_bytes(seed, 4096))).count();
    assert_eq!(compiled, 40, "wasm-smith builds a module from any 4 KiB");
}

#[test]
fn changed_shared_objects_are_refused_and_the_unchanged_one_runs() {
    // No change: loads, instantiates, and `get` returns what the start function stored.
    assert!(targets::load(&[]));
    // Flipped bytes (even first byte) and truncations (odd first byte) anywhere in the file;
    // `load` panics if a changed object loads.
    for seed in 0..400 {
        let mut data = random_bytes(seed, 1 + 5 * (1 + seed as usize % 4));
        data[0] = (seed % 2) as u8;
        targets::load(&data);
    }
}

#[test]
fn metadata_decoding_refuses_damaged_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let so = dir.path().join("m.so");
    kiln_compiler::Compiler::new()
        .unwrap()
        .compile_to_file(br#"(module (memory 1) (global (export "g") i32 (i32.const 1)) (func (export "f")))"#, &so)
        .unwrap();
    // SAFETY: compiled by this test into its temporary directory.
    let module = unsafe { kiln_runtime::Module::load(&so) }.unwrap();
    let encoded = postcard::to_allocvec(module.metadata()).unwrap();
    let decoded = kiln_runtime::__fuzzing::decode_metadata(&encoded).unwrap();
    assert_eq!(postcard::to_allocvec(&decoded).unwrap(), encoded, "metadata round-trips");

    for len in 0..encoded.len() {
        assert!(kiln_runtime::__fuzzing::decode_metadata(&encoded[..len]).is_err(), "truncated to {len}");
    }
    for (i, mask) in (0..encoded.len()).flat_map(|i| [(i, 0x01u8), (i, 0x80), (i, 0xff)]) {
        let mut damaged = encoded.clone();
        damaged[i] ^= mask;
        targets::metadata(&damaged);
    }
    for seed in 0..200 {
        targets::metadata(&random_bytes(seed, seed as usize * 3));
    }
}

#[test]
fn wast_scripts_run_bounded_by_fuel() {
    let path = Path::new("fuzz.wast");
    let options = kiln_spec_tests::ScriptOptions { fuel: Some(targets::WAST_FUEL), no_cache: true };
    let run = |text: &str| {
        kiln_spec_tests::run_script_with(path, text, kiln_spec_tests::features_for(path), &options).unwrap()
    };
    // An endless loop ends when the fuel runs out, and the assertion fails instead of hanging.
    let endless = r#"(module (func (export "spin") (loop (br 0)))) (assert_return (invoke "spin"))"#;
    let report = run(endless);
    assert_eq!((report.counts.passed, report.counts.failed), (1, 1), "{:?}", report.failures);
    // Ordinary assertions still pass under fuel.
    let ok = r#"(module (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1))))
                (assert_return (invoke "add" (i32.const 2) (i32.const 3)) (i32.const 5))
                (assert_trap (module (func (unreachable)) (start 0)) "unreachable")"#;
    let report = run(ok);
    assert_eq!((report.counts.passed, report.counts.failed), (3, 0), "{:?}", report.failures);

    assert!(targets::wast(endless.as_bytes()));
    // Damaged scripts: parse errors or failed assertions, never a crash.
    for cut in (0..ok.len()).step_by(7) {
        targets::wast(&ok.as_bytes()[..cut]);
    }
}

#[test]
fn generated_modules_agree_with_wasmi() {
    let conclusive = (0..20).filter(|&seed| targets::differential(&random_bytes(1000 + seed, 4096))).count();
    assert!(conclusive >= 15, "only {conclusive} of 20 runs were conclusive");
}

/// Found by `cargo fuzz run compile_generated` (crash-312b47cc…): `table.size` of a 64-bit
/// table (memory64's table64) was translated as i32, which Cranelift's verifier rejected (and a
/// build without the verifier would have miscompiled). Table64 is now supported throughout.
#[test]
fn fuzzer_finding_table64_size_is_an_i64() {
    let dir = tempfile::tempdir().unwrap();
    let so = dir.path().join("table64.so");
    let wat = r#"(module
      (table $t i64 33 funcref)
      (func (export "found") (result f64)
        table.size $t
        f64.reinterpret_i64
        loop end)
      (func (export "size") (result i64) (table.size $t))
      (func (export "grow") (result i64) (table.grow $t (ref.null func) (i64.const 2)))
      (func (export "fill_past_end") (table.fill $t (i64.const 34) (ref.null func) (i64.const 2))))"#;
    kiln_compiler::Compiler::new().unwrap().compile_to_file(wat.as_bytes(), &so).unwrap();
    // SAFETY: compiled by this test into its temporary directory.
    let module = unsafe { kiln_runtime::Module::load(&so) }.unwrap();
    let region = kiln_runtime::Region::new(kiln_runtime::RegionConfig { slots: 1, ..Default::default() }).unwrap();
    let instance = kiln_runtime::Instance::new(&region, &module, &[]).unwrap();
    use kiln_runtime::Val;
    assert_eq!(instance.call("found", &[]).unwrap(), vec![Val::F64(33)]);
    assert_eq!(instance.call("size", &[]).unwrap(), vec![Val::I64(33)]);
    assert_eq!(instance.call("grow", &[]).unwrap(), vec![Val::I64(33)]);
    assert_eq!(instance.call("size", &[]).unwrap(), vec![Val::I64(35)]);
    instance.call("fill_past_end", &[]).unwrap_err();
    // The fuzzer's own input, through the target.
    let input: &[u8] = &[
        231, 0, 0, 0, 0, 255, 255, 255, 69, 104, 115, 255, 255, 255, 175, 98, 198, 198, 198, 198, 198, 198, 58, 64, 8,
        255, 39, 255, 255, 255, 255, 255, 198, 198, 60, 255, 7, 60, 209,
    ];
    assert!(targets::compile_generated(input));
}

/// Found by `cargo fuzz run compile_generated` (oom-b641c56c…): two data bytes near the end of
/// a 1 GiB initial memory made the compiler build a 1 GiB heap image, so a 110-byte module took
/// 2 GB of memory and seconds to compile. Large, sparse images are now left to instantiation.
#[test]
fn fuzzer_finding_sparse_data_high_up_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let so = dir.path().join("sparse.so");
    let wat = r#"(module
      (memory 16384 16384)
      (data (i32.const 1024193260) "\ff\4a")
      (func (export "peek") (result i32) (i32.load16_u (i32.const 1024193260))))"#;
    kiln_compiler::Compiler::new().unwrap().compile_to_file(wat.as_bytes(), &so).unwrap();
    let size = std::fs::metadata(&so).unwrap().len();
    assert!(size < 1 << 20, "the object is {size} bytes");
    // SAFETY: compiled by this test into its temporary directory.
    let module = unsafe { kiln_runtime::Module::load(&so) }.unwrap();
    let region = kiln_runtime::Region::new(kiln_runtime::RegionConfig { slots: 1, ..Default::default() }).unwrap();
    let instance = kiln_runtime::Instance::new(&region, &module, &[]).unwrap();
    assert_eq!(instance.call("peek", &[]).unwrap(), vec![kiln_runtime::Val::I32(0x4aff)]);
    // The fuzzer's own input, through the target.
    let input: &[u8] = &[
        231, 32, 0, 198, 0, 255, 75, 96, 74, 1, 0, 0, 170, 255, 255, 255, 74, 74, 255, 255, 255, 75, 74, 74, 74, 0, 0,
        0, 0, 253, 253, 253, 253, 253, 253, 253, 253, 253, 253, 253, 7, 2, 2, 255, 85, 0, 0, 0, 74, 74, 255, 255, 255,
        75, 74, 74, 74, 253, 253, 253, 253, 253, 253, 253, 253, 253, 253, 253, 253, 253, 253, 253, 253, 253, 253, 253,
        253, 253, 255, 198, 209,
    ];
    assert!(targets::compile_generated(input));
}

#[test]
fn linked_pairs_share_functions_tables_and_globals_and_agree() {
    // The generator really links: over these seeds, B imports functions and tables from A, and
    // A or B import the host's table and globals.
    let (mut from_a, mut tables, mut host) = (0, 0, 0);
    let region = kiln_runtime::Region::new(kiln_runtime::RegionConfig { slots: 2, ..Default::default() }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut agreed = 0;
    for seed in 1..=40 {
        let (a, b) = kiln_fuzzing::linked::generate(seed).unwrap();
        for payload in wasmparser::Parser::new(0).parse_all(&b).chain(wasmparser::Parser::new(0).parse_all(&a)) {
            let Ok(wasmparser::Payload::ImportSection(reader)) = payload else { continue };
            for import in reader.into_imports().flatten() {
                from_a += (import.module == "a" && matches!(import.ty, wasmparser::TypeRef::Func(_))) as usize;
                tables += matches!(import.ty, wasmparser::TypeRef::Table(_)) as usize;
                host += (import.module == "host") as usize;
            }
        }
        match kiln_fuzzing::linked::compare(&a, &b, seed, dir.path(), &region).unwrap() {
            kiln_fuzzing::Verdict::Agree => agreed += 1,
            kiln_fuzzing::Verdict::Inconclusive => {}
            kiln_fuzzing::Verdict::Mismatch { kiln, reference, .. } => {
                panic!("seed {seed}: kiln {kiln}\n wasmi {reference}")
            }
        }
        targets::linked(&random_bytes(seed, 4096));
    }
    assert!(
        from_a >= 10 && tables >= 10 && host >= 20,
        "imports: {from_a} functions from A, {tables} tables, {host} from the host"
    );
    assert!(agreed >= 30, "{agreed} of 40 pairs agreed (the rest inconclusive)");
}

#[test]
fn api_call_sequences_keep_every_promise() {
    let mut exercised = 0;
    for seed in 0..300 {
        exercised += targets::api(&random_bytes(seed, 64 + (seed as usize * 37) % 2000)) as usize;
    }
    assert!(exercised >= 250, "only {exercised} of 300 sequences did anything");
    let stats = kiln_fuzzing::api::stats();
    eprintln!("api: {stats:?}");
    assert!(
        stats.instances >= 300
            && stats.calls >= 1000
            && stats.table_calls >= 100
            && stats.funcrefs >= 50
            && stats.refused >= 100,
        "the sequences do not reach far enough: {stats:?}"
    );
}

#[test]
fn fuzzer_finding_a_billion_element_table_grow_is_bounded_in_both_engines() {
    // 48 bytes that make module A grow the host table by ~1.9 billion elements: Kiln refused
    // (its default limit), wasmi, unlimited, used 8 GB. Both engines now apply the same limits.
    let input = [
        0xd9, 0xff, 0x5d, 0xff, 0xff, 0xda, 0xb2, 0x29, 0x14, 0xda, 0xf6, 0xf6, 0xf6, 0xda, 0xda, 0xda, 0xda, 0xda,
        0xda, 0xda, 0xda, 0xda, 0xda, 0x7c, 0xda, 0xda, 0xda, 0xda, 0x73, 0x79, 0x7d, 0x01, 0x74, 0x79, 0x7d, 0x01,
        0x74, 0x85, 0x85, 0x85, 0x85, 0x85, 0x74, 0x61, 0x01, 0x2b, 0x62, 0xe1,
    ];
    assert!(targets::linked(&input), "the pair runs and both engines agree");
}

#[test]
fn metadata_with_malformed_constant_expressions_is_refused() {
    use kiln_abi::ConstOp::*;
    let dir = tempfile::tempdir().unwrap();
    let so = dir.path().join("m.so");
    let wat = r#"(module (import "m" "g" (global i32)) (global (export "g") i32 (global.get 0)))"#;
    kiln_compiler::Compiler::new().unwrap().compile_to_file(wat.as_bytes(), &so).unwrap();
    // SAFETY: compiled by this test into its temporary directory.
    let module = unsafe { kiln_runtime::Module::load(&so) }.unwrap();
    let with_init = |init: Vec<kiln_abi::ConstOp>| {
        let mut meta = module.metadata().clone();
        meta.defined_globals[0].init = init;
        kiln_runtime::__fuzzing::decode_metadata(&postcard::to_allocvec(&meta).unwrap())
    };
    assert!(with_init(vec![GlobalGet(0)]).is_ok(), "the module as compiled");
    assert!(with_init(vec![I32Const(2), I32Const(3), I32Add]).is_ok());
    for (why, init) in [
        ("no value", vec![]),
        ("pops an empty stack", vec![I32Const(2), I32Add]),
        ("leaves two values", vec![I32Const(2), I32Const(3)]),
        ("reads its own global, not yet set", vec![GlobalGet(1)]),
        ("reads a global that does not exist", vec![GlobalGet(7)]),
        ("names a function that does not exist", vec![RefFunc(0)]),
        ("makes a struct of a type that does not exist", vec![StructNewDefault(0)]),
        ("makes an array of a type that does not exist", vec![I32Const(1), ArrayNewDefault(3)]),
    ] {
        let error = with_init(init).expect_err(why);
        assert!(error.contains("malformed constant expression"), "{why}: {error}");
    }
}
