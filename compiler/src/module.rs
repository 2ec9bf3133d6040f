//! Stage 1: parse and validate a wasm binary with wasmparser, collecting the module description
//! ([`ModuleMetadata`]) and the function bodies still to be translated.

use kiln_abi::{
    ConstExpr, ConstOp, DataMode, DataSegment, ElementMode, ElementSegment, Export, ExportKind, FuncType, GlobalDef,
    GlobalType, HeapType, Import, ImportKind, MemoryType, ModuleMetadata, RefType, TableDef, TableType, ValType,
};
use wasmparser::{
    self, CompositeInnerType, ElementItems, ElementKind, ExternalKind, FuncToValidate, FunctionBody, Operator, Parser,
    Payload, TypeRef, ValidPayload, Validator, ValidatorResources, WasmFeatures,
};

use crate::CompileError;

/// A parsed and validated module, ready for code generation.
pub(crate) struct ParsedModule<'data> {
    /// Everything but the per-function code facts, which code generation fills in.
    pub meta: ModuleMetadata,
    /// Which type indices are function types (the others are GC types Kiln does not run).
    pub is_func_type: Vec<bool>,
    /// The function bodies, each with the validator that checks it during translation.
    pub bodies: Vec<(FuncToValidate<ValidatorResources>, FunctionBody<'data>)>,
    /// Function names from the `name` section, by function index.
    pub func_names: std::collections::HashMap<u32, String>,
    /// The module's own DWARF: its `.debug_*` custom sections, by name.
    pub debug_sections: std::collections::HashMap<&'data str, &'data [u8]>,
    /// The module offset of the code section's contents, which DWARF addresses count from.
    pub code_section_start: u64,
}

/// The proposals Kiln compiles by default: WebAssembly 3.0 without GC (not supported yet).
/// Wide arithmetic, custom page sizes and legacy exception handling, which Kiln also runs, are
/// opt-in as in Wasmtime: add them with [`crate::Compiler::with_features`].
pub fn default_features() -> WasmFeatures {
    WasmFeatures::MUTABLE_GLOBAL
        | WasmFeatures::SATURATING_FLOAT_TO_INT
        | WasmFeatures::SIGN_EXTENSION
        | WasmFeatures::REFERENCE_TYPES
        | WasmFeatures::MULTI_VALUE
        | WasmFeatures::BULK_MEMORY
        | WasmFeatures::SIMD
        | WasmFeatures::RELAXED_SIMD
        | WasmFeatures::THREADS
        | WasmFeatures::TAIL_CALL
        | WasmFeatures::FLOATS
        | WasmFeatures::MULTI_MEMORY
        | WasmFeatures::EXTENDED_CONST
        | WasmFeatures::FUNCTION_REFERENCES
        | WasmFeatures::MEMORY64
        | WasmFeatures::GC_TYPES
        | WasmFeatures::EXCEPTIONS
}

pub(crate) fn invalid(err: wasmparser::BinaryReaderError) -> CompileError {
    CompileError::Invalid { message: err.message().to_string(), offset: err.offset() as usize }
}

pub(crate) fn convert_val_type(ty: wasmparser::ValType) -> ValType {
    match ty {
        wasmparser::ValType::I32 => ValType::I32,
        wasmparser::ValType::I64 => ValType::I64,
        wasmparser::ValType::F32 => ValType::F32,
        wasmparser::ValType::F64 => ValType::F64,
        wasmparser::ValType::V128 => ValType::V128,
        wasmparser::ValType::Ref(r) => ValType::Ref(convert_ref_type(r)),
    }
}

pub(crate) fn convert_ref_type(ty: wasmparser::RefType) -> RefType {
    let heap = match ty.heap_type() {
        wasmparser::HeapType::Abstract { ty: wasmparser::AbstractHeapType::Extern, .. } => HeapType::Extern,
        wasmparser::HeapType::Abstract {
            ty: wasmparser::AbstractHeapType::Exn | wasmparser::AbstractHeapType::NoExn,
            ..
        } => HeapType::Exn,
        wasmparser::HeapType::Concrete(wasmparser::UnpackedIndex::Module(i)) => HeapType::ConcreteFunc(i),
        _ => HeapType::Func,
    };
    RefType { nullable: ty.is_nullable(), heap }
}

fn convert_memory_type(ty: &wasmparser::MemoryType) -> MemoryType {
    MemoryType {
        minimum: ty.initial,
        maximum: ty.maximum,
        memory64: ty.memory64,
        shared: ty.shared,
        page_size_log2: ty.page_size_log2.map(|p| p as u8).unwrap_or(16),
    }
}

fn convert_table_type(ty: &wasmparser::TableType) -> TableType {
    TableType {
        element: convert_ref_type(ty.element_type),
        minimum: ty.initial,
        maximum: ty.maximum,
        table64: ty.table64,
    }
}

fn convert_global_type(ty: &wasmparser::GlobalType) -> GlobalType {
    GlobalType { content: convert_val_type(ty.content_type), mutable: ty.mutable }
}

fn convert_const_expr(expr: &wasmparser::ConstExpr<'_>) -> Result<ConstExpr, CompileError> {
    let mut ops = Vec::new();
    let mut reader = expr.get_operators_reader();
    while !reader.eof() {
        let op = reader.read().map_err(invalid)?;
        ops.push(match op {
            Operator::I32Const { value } => ConstOp::I32Const(value),
            Operator::I64Const { value } => ConstOp::I64Const(value),
            Operator::F32Const { value } => ConstOp::F32Const(value.bits()),
            Operator::F64Const { value } => ConstOp::F64Const(value.bits()),
            Operator::V128Const { value } => ConstOp::V128Const(u128::from_le_bytes(*value.bytes())),
            Operator::GlobalGet { global_index } => ConstOp::GlobalGet(global_index),
            Operator::RefNull { .. } => ConstOp::RefNull,
            Operator::RefFunc { function_index } => ConstOp::RefFunc(function_index),
            Operator::I32Add => ConstOp::I32Add,
            Operator::I32Sub => ConstOp::I32Sub,
            Operator::I32Mul => ConstOp::I32Mul,
            Operator::I64Add => ConstOp::I64Add,
            Operator::I64Sub => ConstOp::I64Sub,
            Operator::I64Mul => ConstOp::I64Mul,
            Operator::End => break,
            other => return Err(CompileError::Unsupported(format!("constant expression operator {other:?}"))),
        });
    }
    Ok(ops)
}

/// Parses and validates `wasm`, returning the module description and the bodies to translate.
pub(crate) fn parse(wasm: &[u8], features: WasmFeatures) -> Result<ParsedModule<'_>, CompileError> {
    let mut validator = Validator::new_with_features(features);
    let mut meta = ModuleMetadata {
        compiler: crate::COMPILER_VERSION.to_string(),
        source_sha256: <sha2::Sha256 as sha2::Digest>::digest(wasm).into(),
        ..Default::default()
    };
    let mut is_func_type = Vec::new();
    let mut bodies = Vec::new();
    let mut defined_func_types = Vec::new();
    let mut func_names = std::collections::HashMap::new();
    let mut debug_sections = std::collections::HashMap::new();
    let mut code_section_start = 0;

    // The parser decodes with the module's features too: without multi-memory, for example,
    // `memory.grow`'s memory index must be a single zero byte.
    let mut parser = Parser::new(0);
    parser.set_features(features);
    for payload in parser.parse_all(wasm) {
        let payload = payload.map_err(invalid)?;
        if let ValidPayload::Func(func, body) = validator.payload(&payload).map_err(invalid)? {
            bodies.push((func, body));
        }
        match payload {
            Payload::Version { encoding, .. } if encoding != wasmparser::Encoding::Module => {
                return Err(CompileError::Unsupported("components".to_string()));
            }
            Payload::TypeSection(reader) => {
                for group in reader {
                    let group = group.map_err(invalid)?;
                    meta.rec_groups.push(group.types().len() as u32);
                    for sub in group.into_types() {
                        match &sub.composite_type.inner {
                            CompositeInnerType::Func(f) => {
                                meta.types.push(FuncType {
                                    params: f.params().iter().copied().map(convert_val_type).collect(),
                                    results: f.results().iter().copied().map(convert_val_type).collect(),
                                });
                                is_func_type.push(true);
                            }
                            _ => {
                                meta.types.push(FuncType::default());
                                is_func_type.push(false);
                            }
                        }
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(invalid)?;
                    let kind = match import.ty {
                        TypeRef::Func(t) => {
                            meta.func_types.push(t);
                            meta.num_imported_funcs += 1;
                            ImportKind::Func(t)
                        }
                        TypeRef::Table(t) => {
                            let t = convert_table_type(&t);
                            meta.tables.push(t);
                            meta.num_imported_tables += 1;
                            ImportKind::Table(t)
                        }
                        TypeRef::Memory(m) => {
                            let m = convert_memory_type(&m);
                            meta.memories.push(m);
                            meta.num_imported_memories += 1;
                            ImportKind::Memory(m)
                        }
                        TypeRef::Global(g) => {
                            let g = convert_global_type(&g);
                            meta.globals.push(g);
                            meta.num_imported_globals += 1;
                            ImportKind::Global(g)
                        }
                        TypeRef::Tag(t) => {
                            meta.tags.push(t.func_type_idx);
                            meta.num_imported_tags += 1;
                            ImportKind::Tag(t.func_type_idx)
                        }
                        TypeRef::FuncExact(_) => {
                            return Err(CompileError::Unsupported(
                                "exact function imports (custom descriptors)".to_string(),
                            ))
                        }
                    };
                    meta.imports.push(Import {
                        module: import.module.to_string(),
                        name: import.name.to_string(),
                        kind,
                    });
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader {
                    let ty = ty.map_err(invalid)?;
                    meta.func_types.push(ty);
                    defined_func_types.push(ty);
                }
            }
            Payload::TableSection(reader) => {
                for table in reader {
                    let table = table.map_err(invalid)?;
                    let ty = convert_table_type(&table.ty);
                    meta.tables.push(ty);
                    let init = match &table.init {
                        wasmparser::TableInit::RefNull => None,
                        wasmparser::TableInit::Expr(e) => Some(convert_const_expr(e)?),
                    };
                    meta.defined_tables.push(TableDef { ty, init });
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    meta.memories.push(convert_memory_type(&memory.map_err(invalid)?));
                }
            }
            Payload::TagSection(reader) => {
                for tag in reader {
                    meta.tags.push(tag.map_err(invalid)?.func_type_idx);
                }
            }
            Payload::GlobalSection(reader) => {
                for global in reader {
                    let global = global.map_err(invalid)?;
                    let ty = convert_global_type(&global.ty);
                    meta.globals.push(ty);
                    meta.defined_globals.push(GlobalDef { ty, init: convert_const_expr(&global.init_expr)? });
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(invalid)?;
                    let kind = match export.kind {
                        ExternalKind::Func => ExportKind::Func(export.index),
                        ExternalKind::Table => ExportKind::Table(export.index),
                        ExternalKind::Memory => ExportKind::Memory(export.index),
                        ExternalKind::Global => ExportKind::Global(export.index),
                        ExternalKind::Tag => ExportKind::Tag(export.index),
                        ExternalKind::FuncExact => {
                            return Err(CompileError::Unsupported(
                                "exact function exports (custom descriptors)".to_string(),
                            ))
                        }
                    };
                    meta.exports.push(Export { name: export.name.to_string(), kind });
                }
            }
            Payload::StartSection { func, .. } => meta.start = Some(func),
            Payload::CodeSectionStart { unchecked_range, .. } => code_section_start = unchecked_range.start,
            Payload::ElementSection(reader) => {
                for element in reader {
                    meta.elements.push(convert_element(element.map_err(invalid)?)?);
                }
            }
            Payload::DataSection(reader) => {
                for data in reader {
                    let data = data.map_err(invalid)?;
                    let mode = match data.kind {
                        wasmparser::DataKind::Passive => DataMode::Passive,
                        wasmparser::DataKind::Active { memory_index, offset_expr } => {
                            DataMode::Active { memory: memory_index, offset: convert_const_expr(&offset_expr)? }
                        }
                    };
                    meta.data.push(DataSegment { mode, bytes: data.data.to_vec() });
                }
            }
            Payload::CustomSection(section) => {
                if let wasmparser::KnownCustom::Name(names) = section.as_known() {
                    collect_function_names(names, &mut func_names);
                } else if section.name().starts_with(".debug_") {
                    debug_sections.insert(section.name(), section.data());
                }
            }
            _ => {}
        }
    }

    Ok(ParsedModule { meta, is_func_type, bodies, func_names, debug_sections, code_section_start })
}

/// Adds the function names of a `name` section to `names`. A malformed section names nothing
/// more, and is not an error: custom sections never make a module invalid.
fn collect_function_names(
    section: wasmparser::NameSectionReader<'_>,
    names: &mut std::collections::HashMap<u32, String>,
) {
    for subsection in section {
        let Ok(wasmparser::Name::Function(map)) = subsection else { continue };
        for naming in map.into_iter().map_while(Result::ok) {
            names.insert(naming.index, naming.name.to_string());
        }
    }
}

fn convert_element(element: wasmparser::Element<'_>) -> Result<ElementSegment, CompileError> {
    let mode = match element.kind {
        ElementKind::Passive => ElementMode::Passive,
        ElementKind::Declared => ElementMode::Declared,
        ElementKind::Active { table_index, offset_expr } => {
            ElementMode::Active { table: table_index.unwrap_or(0), offset: convert_const_expr(&offset_expr)? }
        }
    };
    let (ty, items) = match element.items {
        ElementItems::Functions(reader) => {
            let mut items = Vec::new();
            for f in reader {
                items.push(vec![ConstOp::RefFunc(f.map_err(invalid)?)]);
            }
            (RefType { nullable: false, heap: HeapType::Func }, items)
        }
        ElementItems::Expressions(ty, reader) => {
            let mut items = Vec::new();
            for e in reader {
                items.push(convert_const_expr(&e.map_err(invalid)?)?);
            }
            (convert_ref_type(ty), items)
        }
    };
    Ok(ElementSegment { mode, ty, items })
}
