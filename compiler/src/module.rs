//! Stage 1: parse and validate a wasm binary with wasmparser, collecting the module description
//! ([`ModuleMetadata`]) and the function bodies still to be translated.

use kiln_abi::gc::{CompositeType, FieldType, StorageType, SubType};
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

/// The Cranelift type of a wasm value type (references are `i64` whatever they refer to).
pub(crate) fn ir_type_of(ty: wasmparser::ValType) -> cranelift_codegen::ir::Type {
    use cranelift_codegen::ir::types;
    match ty {
        wasmparser::ValType::I32 => types::I32,
        wasmparser::ValType::I64 => types::I64,
        wasmparser::ValType::F32 => types::F32,
        wasmparser::ValType::F64 => types::F64,
        wasmparser::ValType::V128 => types::I8X16,
        wasmparser::ValType::Ref(_) => types::I64,
    }
}

/// Converts wasmparser's types to Kiln's, knowing the shape of every type index declared so
/// far (a concrete reference becomes a function, struct or array reference).
#[derive(Default)]
pub(crate) struct TypeConverter {
    shapes: Vec<Shape>,
}

/// Converts a heap type, given the shape of each type index.
pub(crate) fn convert_heap_type(ty: wasmparser::HeapType, shape: impl Fn(u32) -> Shape) -> HeapType {
    use wasmparser::AbstractHeapType as A;
    match ty {
        wasmparser::HeapType::Abstract { ty, .. } => match ty {
            A::Func => HeapType::Func,
            A::Extern => HeapType::Extern,
            A::Any => HeapType::Any,
            A::None => HeapType::None,
            A::NoExtern => HeapType::NoExtern,
            A::NoFunc => HeapType::NoFunc,
            A::Eq => HeapType::Eq,
            A::Struct => HeapType::Struct,
            A::Array => HeapType::Array,
            A::I31 => HeapType::I31,
            A::Exn => HeapType::Exn,
            A::NoExn => HeapType::NoExn,
            // Stack switching is not enabled, so validation never lets these through.
            A::Cont | A::NoCont => HeapType::NoFunc,
        },
        wasmparser::HeapType::Concrete(index) | wasmparser::HeapType::Exact(index) => {
            let i = index.as_module_index().expect("wasmparser's readers give module indices");
            match shape(i) {
                Shape::Struct => HeapType::ConcreteStruct(i),
                Shape::Array => HeapType::ConcreteArray(i),
                Shape::Func => HeapType::ConcreteFunc(i),
            }
        }
    }
}

/// The shape of a type index.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Func,
    Struct,
    Array,
}

impl TypeConverter {
    pub fn val(&self, ty: wasmparser::ValType) -> ValType {
        match ty {
            wasmparser::ValType::I32 => ValType::I32,
            wasmparser::ValType::I64 => ValType::I64,
            wasmparser::ValType::F32 => ValType::F32,
            wasmparser::ValType::F64 => ValType::F64,
            wasmparser::ValType::V128 => ValType::V128,
            wasmparser::ValType::Ref(r) => ValType::Ref(self.reference(r)),
        }
    }

    pub fn reference(&self, ty: wasmparser::RefType) -> RefType {
        RefType { nullable: ty.is_nullable(), heap: self.heap(ty.heap_type()) }
    }

    pub fn heap(&self, ty: wasmparser::HeapType) -> HeapType {
        convert_heap_type(ty, |i| self.shapes.get(i as usize).copied().unwrap_or(Shape::Func))
    }

    fn field(&self, ty: &wasmparser::FieldType) -> FieldType {
        let storage = match ty.element_type {
            wasmparser::StorageType::I8 => StorageType::I8,
            wasmparser::StorageType::I16 => StorageType::I16,
            wasmparser::StorageType::Val(v) => StorageType::Val(self.val(v)),
        };
        FieldType { storage, mutable: ty.mutable }
    }

    /// Records the shapes of a recursion group's types, so references within the group convert.
    fn declare_group(&mut self, group: &wasmparser::RecGroup) {
        for sub in group.types() {
            self.shapes.push(match sub.composite_type.inner {
                CompositeInnerType::Struct(_) => Shape::Struct,
                CompositeInnerType::Array(_) => Shape::Array,
                _ => Shape::Func,
            });
        }
    }

    fn sub_type(&self, sub: &wasmparser::SubType) -> Result<(FuncType, SubType), CompileError> {
        let supertype = sub
            .supertype_idxs
            .first()
            .map(|i| i.as_module_index().expect("the type section reader gives module indices"));
        let (func, composite) = match &sub.composite_type.inner {
            CompositeInnerType::Func(f) => (
                FuncType {
                    params: f.params().iter().map(|&t| self.val(t)).collect(),
                    results: f.results().iter().map(|&t| self.val(t)).collect(),
                },
                CompositeType::Func,
            ),
            CompositeInnerType::Struct(s) => {
                (FuncType::default(), CompositeType::Struct(s.fields.iter().map(|f| self.field(f)).collect()))
            }
            CompositeInnerType::Array(a) => (FuncType::default(), CompositeType::Array(self.field(&a.0))),
            CompositeInnerType::Cont(_) => return Err(CompileError::Unsupported("stack switching".to_string())),
        };
        if sub.composite_type.shared || sub.composite_type.descriptor_idx.is_some() {
            return Err(CompileError::Unsupported("shared or described types".to_string()));
        }
        Ok((func, SubType { is_final: sub.is_final, supertype, composite }))
    }

    fn table_type(&self, ty: &wasmparser::TableType) -> TableType {
        TableType {
            element: self.reference(ty.element_type),
            minimum: ty.initial,
            maximum: ty.maximum,
            table64: ty.table64,
        }
    }

    fn global_type(&self, ty: &wasmparser::GlobalType) -> GlobalType {
        GlobalType { content: self.val(ty.content_type), mutable: ty.mutable }
    }
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
            Operator::RefI31 => ConstOp::RefI31,
            Operator::StructNew { struct_type_index } => ConstOp::StructNew(struct_type_index),
            Operator::StructNewDefault { struct_type_index } => ConstOp::StructNewDefault(struct_type_index),
            Operator::ArrayNew { array_type_index } => ConstOp::ArrayNew(array_type_index),
            Operator::ArrayNewDefault { array_type_index } => ConstOp::ArrayNewDefault(array_type_index),
            Operator::ArrayNewFixed { array_type_index, array_size } => {
                ConstOp::ArrayNewFixed(array_type_index, array_size)
            }
            Operator::AnyConvertExtern => ConstOp::AnyConvertExtern,
            Operator::ExternConvertAny => ConstOp::ExternConvertAny,
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
    let mut types = TypeConverter::default();
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
                    types.declare_group(&group);
                    for sub in group.types() {
                        let (func, sub) = types.sub_type(sub)?;
                        is_func_type.push(sub.composite == CompositeType::Func);
                        meta.types.push(func);
                        meta.subtypes.push(sub);
                    }
                }
                // A module of final function types only keeps the compact form.
                if meta.subtypes.iter().all(|s| *s == SubType::FUNC) {
                    meta.subtypes.clear();
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
                            let t = types.table_type(&t);
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
                            let g = types.global_type(&g);
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
                    let ty = types.table_type(&table.ty);
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
                    let ty = types.global_type(&global.ty);
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
                    meta.elements.push(convert_element(element.map_err(invalid)?, &types)?);
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

fn convert_element(element: wasmparser::Element<'_>, types: &TypeConverter) -> Result<ElementSegment, CompileError> {
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
            (types.reference(ty), items)
        }
    };
    Ok(ElementSegment { mode, ty, items })
}
