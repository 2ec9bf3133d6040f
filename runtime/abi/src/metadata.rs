//! The module description the compiler serializes (postcard) behind the module header: types,
//! imports, exports, functions and their trap tables, memories, tables, globals, segments.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::TrapCode;

/// A wasm value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ValType {
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// 128-bit vector.
    V128,
    /// A reference.
    Ref(RefType),
}

impl ValType {
    /// Whether a value of this type may refer to a GC object (the `any` and `extern`
    /// hierarchies, which share an encoding; see [`crate::gc`]): a collection may move what it
    /// refers to and rewrite it.
    pub fn may_refer_to_gc_object(self) -> bool {
        matches!(self, ValType::Ref(r) if matches!(r.heap.hierarchy(), RefHierarchy::Any | RefHierarchy::Extern))
    }
}

/// A reference type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RefType {
    /// Whether null is a value of the type.
    pub nullable: bool,
    /// What it refers to.
    pub heap: HeapType,
}

/// What a reference refers to. Four hierarchies: `func`, `extern`, `any` (GC objects and
/// i31s) and `exn`, each with a top, its concrete types and a bottom (`nofunc`, `noextern`,
/// `none`, `noexn`) that only null inhabits. Concrete types are module type indices in
/// metadata and canonical type ids in the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HeapType {
    /// Any function.
    Func,
    /// Any host value.
    Extern,
    /// A function of the given type.
    ConcreteFunc(u32),
    /// An exception.
    Exn,
    /// Anything of the `any` hierarchy (and internalized host values).
    Any,
    /// Anything comparable with `ref.eq`: i31s, structs and arrays.
    Eq,
    /// An unboxed 31-bit integer.
    I31,
    /// Any struct.
    Struct,
    /// Any array.
    Array,
    /// A struct of the given type (or one of its subtypes).
    ConcreteStruct(u32),
    /// An array of the given type (or one of its subtypes).
    ConcreteArray(u32),
    /// The bottom of `any`.
    None,
    /// The bottom of `func`.
    NoFunc,
    /// The bottom of `extern`.
    NoExtern,
    /// The bottom of `exn`.
    NoExn,
}

/// The four reference hierarchies, by their top type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefHierarchy {
    /// `func`.
    Func,
    /// `extern`.
    Extern,
    /// `any`.
    Any,
    /// `exn`.
    Exn,
}

impl HeapType {
    /// The hierarchy the type belongs to.
    pub const fn hierarchy(self) -> RefHierarchy {
        match self {
            HeapType::Func | HeapType::ConcreteFunc(_) | HeapType::NoFunc => RefHierarchy::Func,
            HeapType::Extern | HeapType::NoExtern => RefHierarchy::Extern,
            HeapType::Exn | HeapType::NoExn => RefHierarchy::Exn,
            HeapType::Any
            | HeapType::Eq
            | HeapType::I31
            | HeapType::Struct
            | HeapType::Array
            | HeapType::ConcreteStruct(_)
            | HeapType::ConcreteArray(_)
            | HeapType::None => RefHierarchy::Any,
        }
    }

    /// The concrete type index or id, if the type is concrete.
    pub const fn concrete(self) -> Option<u32> {
        match self {
            HeapType::ConcreteFunc(i) | HeapType::ConcreteStruct(i) | HeapType::ConcreteArray(i) => Some(i),
            _ => None,
        }
    }

    /// The same kind of type with its concrete index mapped through `f`.
    pub fn map_concrete(self, f: impl FnOnce(u32) -> u32) -> HeapType {
        match self {
            HeapType::ConcreteFunc(i) => HeapType::ConcreteFunc(f(i)),
            HeapType::ConcreteStruct(i) => HeapType::ConcreteStruct(f(i)),
            HeapType::ConcreteArray(i) => HeapType::ConcreteArray(f(i)),
            other => other,
        }
    }
}

impl RefType {
    /// `funcref`.
    pub const FUNCREF: RefType = RefType { nullable: true, heap: HeapType::Func };
    /// `externref`.
    pub const EXTERNREF: RefType = RefType { nullable: true, heap: HeapType::Extern };
    /// `exnref`.
    pub const EXNREF: RefType = RefType { nullable: true, heap: HeapType::Exn };
    /// `anyref`.
    pub const ANYREF: RefType = RefType { nullable: true, heap: HeapType::Any };
}

/// A function type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct FuncType {
    /// Parameter types.
    pub params: Vec<ValType>,
    /// Result types.
    pub results: Vec<ValType>,
}

/// Limits and flags of a linear memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryType {
    /// Initial size in pages.
    pub minimum: u64,
    /// Maximum size in pages, if declared.
    pub maximum: Option<u64>,
    /// 64-bit indices.
    pub memory64: bool,
    /// Shared between threads.
    pub shared: bool,
    /// log2 of the page size (16 for 64 KiB pages).
    pub page_size_log2: u8,
}

/// Limits and element type of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableType {
    /// Element type.
    pub element: RefType,
    /// Initial size in elements.
    pub minimum: u64,
    /// Maximum size, if declared.
    pub maximum: Option<u64>,
    /// Whether its indices are 64-bit (the memory64 proposal's `table64`).
    pub table64: bool,
}

/// Type and mutability of a global.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalType {
    /// Value type.
    pub content: ValType,
    /// Whether `global.set` may change it.
    pub mutable: bool,
}

/// One operation of a constant expression, evaluated on a small stack at instantiation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ConstOp {
    /// Push an i32.
    I32Const(i32),
    /// Push an i64.
    I64Const(i64),
    /// Push an f32 (bits).
    F32Const(u32),
    /// Push an f64 (bits).
    F64Const(u64),
    /// Push a v128.
    V128Const(u128),
    /// Push the value of a global (index space including imports).
    GlobalGet(u32),
    /// Push a null reference.
    RefNull,
    /// Push a reference to a function.
    RefFunc(u32),
    /// `ref.i31`.
    RefI31,
    /// `struct.new` of a module type index.
    StructNew(u32),
    /// `struct.new_default`.
    StructNewDefault(u32),
    /// `array.new`.
    ArrayNew(u32),
    /// `array.new_default`.
    ArrayNewDefault(u32),
    /// `array.new_fixed`: type index, element count.
    ArrayNewFixed(u32, u32),
    /// `any.convert_extern` (the identity: see [`crate::gc`]).
    AnyConvertExtern,
    /// `extern.convert_any` (the identity).
    ExternConvertAny,
    /// i32 addition (extended constant expressions).
    I32Add,
    /// i32 subtraction.
    I32Sub,
    /// i32 multiplication.
    I32Mul,
    /// i64 addition.
    I64Add,
    /// i64 subtraction.
    I64Sub,
    /// i64 multiplication.
    I64Mul,
}

/// A constant expression.
pub type ConstExpr = Vec<ConstOp>;

/// What an import brings in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ImportKind {
    /// A function of this module type index.
    Func(u32),
    /// A table.
    Table(TableType),
    /// A memory.
    Memory(MemoryType),
    /// A global.
    Global(GlobalType),
    /// An exception tag of this module type index (a function type without results: the
    /// payload's types are its parameters).
    Tag(u32),
}

/// One import.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Import {
    /// Module name.
    pub module: String,
    /// Field name.
    pub name: String,
    /// What is imported.
    pub kind: ImportKind,
}

/// The kind and index (in its index space) of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportKind {
    /// A function.
    Func(u32),
    /// A table.
    Table(u32),
    /// A memory.
    Memory(u32),
    /// A global.
    Global(u32),
    /// An exception tag.
    Tag(u32),
}

/// One export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Export {
    /// Export name.
    pub name: String,
    /// What is exported.
    pub kind: ExportKind,
}

/// A trapping instruction: its offset from the function's start and its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrapSite {
    /// Byte offset from the start of the function.
    pub offset: u32,
    /// What the trap means.
    pub code: TrapCode,
    /// Offset in the WebAssembly module of the instruction it came from ([`NO_WASM_OFFSET`]
    /// if none).
    pub wasm_offset: u32,
}

/// A call instruction of a compiled function, so that a backtrace can say which wasm
/// instruction each frame is at (a frame other than the innermost is always at a call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallSite {
    /// Offset of the call's return address from the start of the function (sorted key).
    pub return_offset: u32,
    /// Offset in the WebAssembly module of the instruction the call came from
    /// ([`NO_WASM_OFFSET`] if none).
    pub wasm_offset: u32,
}

/// A [`TrapSite::wasm_offset`] or [`CallSite::wasm_offset`] for machine code that no wasm
/// instruction produced (a function's prologue, for example).
pub const NO_WASM_OFFSET: u32 = u32::MAX;

/// A call that an exception may leave through a handler of the calling function: where it
/// returns to, where the handler is, and how the frame is laid out at the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandlerSite {
    /// Offset of the call's return address from the start of the function (sorted key).
    pub return_offset: u32,
    /// Offset of the handler's first instruction from the start of the function. It expects
    /// the exnref in `rax`, the calling frame's frame pointer in `rbp` and its stack pointer
    /// at `rbp - frame_offset`; every other register is dead.
    pub handler_offset: u32,
    /// The distance from the stack pointer to the frame pointer in the calling frame's body.
    pub frame_offset: u32,
}

/// The stack slots that hold GC references at one call of a compiled function (Cranelift's
/// user stack map), so a collector can find and update them while the call is in progress.
/// Compiled code reloads them after the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackMap {
    /// Offset of the call's return address from the start of the function (sorted key).
    pub return_offset: u32,
    /// Offsets of the 8-byte slots holding references from the calling frame's stack pointer
    /// at the call (just above the return address the call pushes).
    pub slots: Vec<u32>,
}

/// A defined function's code facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionInfo {
    /// Module type index.
    pub type_index: u32,
    /// Length of its machine code in bytes.
    pub code_len: u32,
    /// Its trap sites, sorted by offset.
    pub traps: Vec<TrapSite>,
    /// Its calls that an exception can leave through one of its handlers, sorted by return
    /// offset.
    pub handlers: Vec<HandlerSite>,
    /// Its calls, sorted by return offset.
    pub calls: Vec<CallSite>,
    /// Its calls at which GC references are live, sorted by return offset.
    pub stack_maps: Vec<StackMap>,
}

/// A defined global.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GlobalDef {
    /// Its type.
    pub ty: GlobalType,
    /// Its initializer.
    pub init: ConstExpr,
}

/// A defined table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDef {
    /// Its type.
    pub ty: TableType,
    /// Initial value of every element (function references proposal); None means null.
    pub init: Option<ConstExpr>,
}

/// Where an element segment goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ElementMode {
    /// Copied into a table at instantiation, then dropped.
    Active {
        /// Table index.
        table: u32,
        /// Offset expression.
        offset: ConstExpr,
    },
    /// Available to `table.init` until dropped.
    Passive,
    /// Only declares functions for `ref.func`; dropped at instantiation.
    Declared,
}

/// An element segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElementSegment {
    /// Where it goes.
    pub mode: ElementMode,
    /// Element type.
    pub ty: RefType,
    /// One constant expression per element.
    pub items: Vec<ConstExpr>,
}

/// Where a data segment goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DataMode {
    /// Copied into a memory at instantiation, then dropped.
    Active {
        /// Memory index.
        memory: u32,
        /// Offset expression.
        offset: ConstExpr,
    },
    /// Available to `memory.init` until dropped.
    Passive,
}

/// A data segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSegment {
    /// Where it goes.
    pub mode: DataMode,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// Where one defined memory's heap image lies in the [`crate::HEAP_IMAGE_SECTION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeapImage {
    /// Byte offset from the start of the section (a multiple of 4096).
    pub offset: u64,
    /// Length in bytes (a multiple of 4096, not 0).
    pub len: u64,
}

/// Everything the runtime needs to know about a compiled module.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModuleMetadata {
    /// Version string of the compiler that produced the object.
    pub compiler: String,
    /// SHA-256 of the WebAssembly binary the object was compiled from: binds a cached object
    /// to its source, so a cache entry swapped for another module's object is noticed.
    pub source_sha256: [u8; 32],
    /// Whether the code checks the store's interrupt flag (see `Compiler::set_interruptible`).
    pub interruptible: bool,
    /// Whether the code meters fuel (see `Compiler::set_fuel_metering`).
    pub fuel_metered: bool,
    /// The type section's function types (entries of struct and array types are empty
    /// placeholders).
    pub types: Vec<FuncType>,
    /// Every type-section entry's supertype, finality and shape, in order (empty in a module
    /// without struct or array types, whose types are all final function types).
    pub subtypes: Vec<crate::gc::SubType>,
    /// Sizes of the type section's recursion groups, in order (they add up to `types.len()`).
    pub rec_groups: Vec<u32>,
    /// Imports, in order.
    pub imports: Vec<Import>,
    /// Module type index of every function (imports first).
    pub func_types: Vec<u32>,
    /// Number of imported functions.
    pub num_imported_funcs: u32,
    /// The defined functions.
    pub functions: Vec<FunctionInfo>,
    /// Types of all tables (imports first).
    pub tables: Vec<TableType>,
    /// Number of imported tables.
    pub num_imported_tables: u32,
    /// The defined tables.
    pub defined_tables: Vec<TableDef>,
    /// Types of all memories (imports first).
    pub memories: Vec<MemoryType>,
    /// Number of imported memories.
    pub num_imported_memories: u32,
    /// Types of all globals (imports first).
    pub globals: Vec<GlobalType>,
    /// Number of imported globals.
    pub num_imported_globals: u32,
    /// The defined globals.
    pub defined_globals: Vec<GlobalDef>,
    /// Module type index of every exception tag (imports first).
    pub tags: Vec<u32>,
    /// Number of imported tags.
    pub num_imported_tags: u32,
    /// Exports.
    pub exports: Vec<Export>,
    /// Start function, if any.
    pub start: Option<u32>,
    /// Element segments.
    pub elements: Vec<ElementSegment>,
    /// Data segments.
    pub data: Vec<DataSegment>,
    /// Per defined memory (empty, or one entry per defined memory): its heap image, if it has
    /// one. An image holds the memory's initial contents with every active data segment for
    /// that memory already applied, so instantiation maps it instead of copying segments.
    pub heap_images: Vec<Option<HeapImage>>,
}

impl ModuleMetadata {
    /// The counts a [`crate::VMOffsets`] is computed from.
    pub fn vm_counts(&self) -> crate::VMCounts {
        crate::VMCounts {
            types: self.types.len() as u32,
            funcs: self.func_types.len() as u32,
            memories: self.memories.len() as u32,
            defined_memories: self.memories.len() as u32 - self.num_imported_memories,
            tables: self.tables.len() as u32,
            defined_tables: self.defined_tables.len() as u32,
            globals: self.globals.len() as u32,
            defined_globals: self.defined_globals.len() as u32,
            tags: self.tags.len() as u32,
            defined_tags: self.tags.len() as u32 - self.num_imported_tags,
        }
    }
}
