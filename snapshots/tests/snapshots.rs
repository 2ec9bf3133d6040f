//! Snapshot tests of the code Kiln emits: one `#[test]` per `.wat` file in `cases/`, each
//! asserting an insta snapshot (`tests/snapshots/snapshots__<case>.snap`) of the module's CLIF,
//! x86-64 disassembly and trap table (see `kiln_snapshots::render_listings`).
//!
//! A changed snapshot fails the test; review it with `cargo insta review` or accept every change
//! with `INSTA_UPDATE=always cargo test -p kiln-snapshots`. `every_case_has_a_test` fails when a
//! `.wat` file is added without a line in `snapshot_cases!` below (or the other way round).

/// Declares one snapshot test per case name, plus `CASES`, the list of all of them.
macro_rules! snapshot_cases {
    ($($case:ident),* $(,)?) => {
        const CASES: &[&str] = &[$(stringify!($case)),*];

        $(
            #[test]
            fn $case() {
                check(stringify!($case));
            }
        )*
    };
}

snapshot_cases! {
    br_table,
    bulk_memory,
    call_direct,
    call_indirect,
    exceptions,
    float_ops,
    globals,
    globals_imported,
    host_import_call,
    int_ops,
    load_memory64,
    loads,
    loop_counter,
    memory_grow_size,
    multi_value,
    ref_func_table_get,
    saturating_trunc,
    select,
    sign_extension,
    simd,
    stack_limit,
    stores,
    tail_call,
    trap_division,
    trap_float_to_int,
    trap_unreachable,
}

/// Compiles `cases/<case>.wat` and compares its listing with the stored snapshot.
fn check(case: &str) {
    let path = kiln_snapshots::cases_dir().join(format!("{case}.wat"));
    let wat = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let text = kiln_snapshots::render_module(&wat).unwrap_or_else(|e| panic!("compiling {case}.wat: {e}"));
    insta::assert_snapshot!(case, text);
}

#[test]
fn every_case_has_a_test() {
    let mut declared: Vec<&str> = CASES.to_vec();
    declared.sort_unstable();
    let on_disk = kiln_snapshots::case_names().expect("listing cases/");
    assert_eq!(
        declared, on_disk,
        "the cases in `snapshot_cases!` must match the .wat files in cases/ (add the missing ones)"
    );
}

#[test]
fn rendering_is_deterministic() {
    // Two compilations of the same module give the same text (no addresses or hash-order
    // effects leak into the listing).
    let wat = std::fs::read(kiln_snapshots::cases_dir().join("call_indirect.wat")).unwrap();
    let first = kiln_snapshots::render_module(&wat).unwrap();
    let second = kiln_snapshots::render_module(&wat).unwrap();
    assert_eq!(first, second);
}
