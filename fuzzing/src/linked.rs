//! Differential fuzzing of linked instances: wasm-smith builds module A, which may import a
//! host table and host globals, then module B, which may import those and anything A exports.
//! Both engines instantiate A, then B linked to A and to the same host objects, call every
//! export of B then of A (with reference types on, so functions travel through the shared
//! tables as values), and must agree on every result and trap and on the final globals and
//! memories. In Kiln this exercises what the hostile-tenant work rests on: funcrefs that cross
//! instances and host tables, pinning, and store-bound host objects.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use arbitrary::Unstructured;

use crate::{Observation, Verdict};

/// What a linked pair may import from the host (module "host"), in both engines.
const HOST_IMPORTS: &str = r#"
  (import "host" "table" (table 8 funcref))
  (import "host" "global" (global (mut i32)))
  (import "host" "counter" (global (mut i64)))"#;

fn config(interface: Vec<u8>) -> wasm_smith::Config {
    wasm_smith::Config {
        available_imports: Some(interface),
        max_imports: 16,
        min_funcs: 1,
        max_funcs: 10,
        max_instructions: 150,
        max_memory32_bytes: 1 << 20,
        max_tables: 3,
        max_table_elements: 100,
        max_data_segments: 4,
        max_element_segments: 4,
        reference_types_enabled: true,
        ..crate::wasmi_config()
    }
}

fn smith(u: &mut Unstructured<'_>, interface: Vec<u8>) -> Result<Vec<u8>> {
    let mut module = wasm_smith::Module::new(config(interface), u).context("wasm-smith")?;
    module.ensure_termination(2_000).context("ensure_termination")?;
    Ok(module.to_bytes())
}

/// The pair wasm-smith builds from `bytes`: A (host imports only), then B (host imports and
/// A's exports, as module "a").
pub fn generate_from(bytes: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut u = Unstructured::new(bytes);
    let host = wat::parse_str(format!("(module {HOST_IMPORTS})")).expect("the host interface is valid");
    let a = smith(&mut u, host)?;
    let b = smith(&mut u, interface_for_b(&a)?)?;
    Ok((a, b))
}

/// The pair for `seed`.
pub fn generate(seed: u64) -> Result<(Vec<u8>, Vec<u8>)> {
    // Another multiplier than the single modules': the pair is not the seed's module again.
    generate_from(&crate::seed_bytes(seed, 0x2545_f491_4f6c_dd1d, 16384))
}

fn val_type(ty: wasmparser::ValType) -> Result<String> {
    use wasmparser::ValType as V;
    Ok(match ty {
        V::I32 => "i32".into(),
        V::I64 => "i64".into(),
        V::F32 => "f32".into(),
        V::F64 => "f64".into(),
        V::V128 => "v128".into(),
        V::Ref(r) if r == wasmparser::RefType::FUNCREF => "funcref".into(),
        V::Ref(r) if r == wasmparser::RefType::EXTERNREF => "externref".into(),
        V::Ref(other) => return Err(anyhow!("reference type {other:?} in an export")),
    })
}

/// `name` as the inside of a WAT string: printable ASCII as is, every other byte `\hh`.
fn wat_string(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b' '..=b'~' if b != b'"' && b != b'\\' => (b as char).to_string(),
            _ => format!("\\{b:02x}"),
        })
        .collect()
}

/// A module declaring, as imports, the host interface and every export of `a` (from "a").
fn interface_for_b(a: &[u8]) -> Result<Vec<u8>> {
    let mut validator = wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all());
    let types = validator.validate_all(a).context("A validates")?;
    let mut imports = String::new();
    for payload in wasmparser::Parser::new(0).parse_all(a) {
        let wasmparser::Payload::ExportSection(reader) = payload? else { continue };
        for export in reader {
            let export = export?;
            let entity = types.as_ref().entity_type_from_export(&export).ok_or_else(|| anyhow!("export type"))?;
            let limits =
                |min: u64, max: Option<u64>| format!("{min}{}", max.map(|m| format!(" {m}")).unwrap_or_default());
            let ty = match entity {
                // wasmparser reports a defined function's export as exact.
                wasmparser::types::EntityType::Func(id) | wasmparser::types::EntityType::FuncExact(id) => {
                    let wasmparser::CompositeInnerType::Func(f) = &types[id].composite_type.inner else {
                        return Err(anyhow!("a non-function type"));
                    };
                    let params = f.params().iter().map(|&t| val_type(t)).collect::<Result<Vec<_>>>()?.join(" ");
                    let results = f.results().iter().map(|&t| val_type(t)).collect::<Result<Vec<_>>>()?.join(" ");
                    format!("(func (param {params}) (result {results}))")
                }
                wasmparser::types::EntityType::Table(t) => {
                    format!(
                        "(table {} {})",
                        limits(t.initial, t.maximum),
                        val_type(wasmparser::ValType::Ref(t.element_type))?
                    )
                }
                wasmparser::types::EntityType::Memory(m) => format!("(memory {})", limits(m.initial, m.maximum)),
                wasmparser::types::EntityType::Global(g) => {
                    let content = val_type(g.content_type)?;
                    if g.mutable {
                        format!("(global (mut {content}))")
                    } else {
                        format!("(global {content})")
                    }
                }
                wasmparser::types::EntityType::Tag(_) => return Err(anyhow!("a tag export")),
            };
            imports.push_str(&format!("(import \"a\" \"{}\" {ty})\n", wat_string(export.name)));
        }
    }
    wat::parse_str(format!("(module {HOST_IMPORTS} {imports})")).context("B's interface")
}

mod on_kiln {
    use super::*;
    use kiln_runtime::{
        Extern, Global, GlobalType, Instance, InstantiationError, Module, RefType, Region, Store, Table, TableType,
        Trap, TrapCode, Val, ValType,
    };

    fn load(dir: &Path, name: &str, wasm: &[u8]) -> Result<Module> {
        let so = dir.join(format!("{name}.so"));
        let _ = std::fs::remove_file(&so);
        kiln_compiler::Compiler::new()?.compile_to_file(wasm, &so).with_context(|| format!("kiln compile {name}"))?;
        // SAFETY: compiled just above, into the fuzzer's private directory.
        Ok(unsafe { Module::load(&so) }?)
    }

    enum Outcome {
        Ready(Instance),
        Stopped(Observation),
    }

    fn instantiate(
        region: &Region,
        store: &Store,
        module: &Module,
        resolve: impl Fn(&str, &str) -> Option<Extern>,
    ) -> Result<Outcome> {
        let imports = module
            .metadata()
            .imports
            .iter()
            .map(|i| resolve(&i.module, &i.name).ok_or_else(|| anyhow!("unresolved import {}::{}", i.module, i.name)))
            .collect::<Result<Vec<_>>>()?;
        Ok(match Instance::new_in_store(region, store, module, &imports) {
            Ok(instance) => Outcome::Ready(instance),
            Err(InstantiationError::Trap(Trap::Wasm { code: TrapCode::StackOverflow, .. })) => {
                Outcome::Stopped(Observation::Inconclusive("stack exhausted".into()))
            }
            Err(InstantiationError::Trap(Trap::Wasm { code, .. })) => {
                Outcome::Stopped(Observation::InstantiationTrap(crate::on_kiln::trap_kind(code)))
            }
            Err(other) => return Err(other.into()),
        })
    }

    pub fn observe(a: &[u8], b: &[u8], dir: &Path, region: &Region) -> Result<Observation> {
        let (module_a, module_b) = (load(dir, "a", a)?, load(dir, "b", b)?);
        let store = crate::kiln_store();
        let funcrefs = TableType { element: RefType::FUNCREF, minimum: 8, maximum: None, table64: false };
        let host: HashMap<&str, Extern> = HashMap::from([
            ("table", Extern::Table(Table::new(&store, funcrefs, Val::FuncRef(None))?)),
            (
                "global",
                Extern::Global(Global::new(&store, GlobalType { content: ValType::I32, mutable: true }, Val::I32(0))?),
            ),
            (
                "counter",
                Extern::Global(Global::new(&store, GlobalType { content: ValType::I64, mutable: true }, Val::I64(0))?),
            ),
        ]);
        let from_host = |module: &str, name: &str| if module == "host" { host.get(name).cloned() } else { None };
        let instance_a = match instantiate(region, &store, &module_a, from_host)? {
            Outcome::Ready(instance) => instance,
            Outcome::Stopped(observation) => return Ok(observation),
        };
        let instance_b = match instantiate(region, &store, &module_b, |m, n| {
            from_host(m, n).or_else(|| if m == "a" { instance_a.get_export(n) } else { None })
        })? {
            Outcome::Ready(instance) => instance,
            Outcome::Stopped(observation) => return Ok(observation),
        };
        let mut seen = crate::on_kiln::Seen::default();
        for instance in [&instance_b, &instance_a] {
            if let Some(stop) = seen.observe_exports(instance)? {
                return Ok(stop);
            }
        }
        for name in ["global", "counter"] {
            let Some(Extern::Global(global)) = host.get(name) else { unreachable!("host globals") };
            seen.globals.push(crate::on_kiln::bits(&global.get()?));
        }
        Ok(seen.finish())
    }
}

mod on_wasmi {
    use super::*;
    use wasmi::core::ValType;
    use wasmi::{Engine, Extern, Global, Instance, Linker, Module, Mutability, StoreLimits, Table, TableType, Val};

    pub fn observe(a: &[u8], b: &[u8]) -> Result<Observation> {
        let engine = Engine::default();
        let module_a = Module::new(&engine, a).map_err(|e| anyhow!("wasmi rejects A: {e}"))?;
        let module_b = Module::new(&engine, b).map_err(|e| anyhow!("wasmi rejects B: {e}"))?;
        let mut store = crate::wasmi_store(&engine);
        let table = Table::new(&mut store, TableType::new(ValType::FuncRef, 8, None), Val::default(ValType::FuncRef))
            .map_err(|e| anyhow!("wasmi table: {e}"))?;
        let global = Global::new(&mut store, Val::I32(0), Mutability::Var);
        let counter = Global::new(&mut store, Val::I64(0), Mutability::Var);
        let mut linker = Linker::<StoreLimits>::new(&engine);
        linker.define("host", "table", table)?;
        linker.define("host", "global", global)?;
        linker.define("host", "counter", counter)?;
        let instance_a = match crate::on_wasmi::instantiate(&mut store, &linker, &module_a)? {
            Ok(instance) => instance,
            Err(stop) => return Ok(stop),
        };
        let exports: Vec<(String, Extern)> =
            instance_a.exports(&store).map(|e| (e.name().to_string(), e.into_extern())).collect();
        for (name, item) in exports {
            linker.define("a", &name, item)?;
        }
        let instance_b: Instance = match crate::on_wasmi::instantiate(&mut store, &linker, &module_b)? {
            Ok(instance) => instance,
            Err(stop) => return Ok(stop),
        };
        let mut seen = crate::on_wasmi::Seen::default();
        for instance in [instance_b, instance_a] {
            if let Some(stop) = seen.observe_exports(&mut store, instance)? {
                return Ok(stop);
            }
        }
        for g in [global, counter] {
            seen.globals.push(crate::on_wasmi::raw(&g.get(&store)));
        }
        Ok(seen.finish())
    }
}

/// Runs the pair on both engines and compares (`seed` only labels a mismatch).
pub fn compare(a: &[u8], b: &[u8], seed: u64, dir: &Path, region: &kiln_runtime::Region) -> Result<Verdict> {
    let reference = on_wasmi::observe(a, b)?;
    let kiln = on_kiln::observe(a, b, dir, region).with_context(|| format!("linked seed {seed}"))?;
    Ok(crate::verdict(kiln, reference, seed))
}

/// Checks the pair for `seed`.
pub fn check(seed: u64, dir: &Path, region: &kiln_runtime::Region) -> Result<Verdict> {
    let (a, b) = generate(seed)?;
    compare(&a, &b, seed, dir, region)
}
