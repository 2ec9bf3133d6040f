//! The VM context: the per-instance block of memory that compiled code reaches through its
//! `vmctx` parameter.
//!
//! Layout (all offsets from [`VMOffsets`], computed from the module's counts):
//!
//! ```text
//! +--------------------------+ 0
//! | VMContextHeader          |  runtime limits, libcall table, instance back-pointer
//! +--------------------------+ type_ids
//! | u32 per type index       |  canonical signature id, compared by call_indirect
//! +--------------------------+ memories
//! | VMMemoryImport per mem   |  heap base (never moves), dirty-map bias, owner's definition
//! +--------------------------+ tables
//! | *mut VMTableDefinition   |  one per table, own or imported
//! +--------------------------+ globals
//! | *mut VMGlobalDefinition  |  one per global, own or imported
//! +--------------------------+ func_refs
//! | VMFuncRef per function   |  imported ones copied from the exporter, defined ones own
//! +--------------------------+ tags
//! | *const VMTagDefinition   |  one per exception tag, own or imported (its identity)
//! +--------------------------+ defined_memories / defined_tables / defined_tags / defined_globals
//! | the instance's own state |  what the pointers above point to for non-imported entities
//! +--------------------------+ size
//! ```
//!
//! The `#[repr(C)]` structs here are the single definition of each layout: the compiler reads
//! their offsets through the `*_OFFSET` constants, the runtime uses the structs themselves.

use core::mem::{offset_of, size_of};

/// Fixed fields at the start of every VM context.
#[repr(C)]
#[derive(Debug)]
pub struct VMContextHeader {
    /// The limits shared by every instance of one store (stack limit, interrupt flag). Shared
    /// because a call that crosses into an imported instance keeps running on the caller's
    /// stack, so the callee's prologue must check the caller's limit.
    pub runtime_limits: *const VMRuntimeLimits,
    /// The runtime's libcall table, indexed by [`crate::Libcall`].
    pub builtins: *const usize,
    /// The runtime's own per-instance state (opaque to compiled code).
    pub instance: *mut u8,
    /// Reserved, always zero.
    pub _reserved: u64,
}

impl VMContextHeader {
    /// Offset of [`Self::runtime_limits`].
    pub const RUNTIME_LIMITS_OFFSET: u32 = offset_of!(VMContextHeader, runtime_limits) as u32;
    /// Offset of [`Self::builtins`].
    pub const BUILTINS_OFFSET: u32 = offset_of!(VMContextHeader, builtins) as u32;
    /// Offset of [`Self::instance`].
    pub const INSTANCE_OFFSET: u32 = offset_of!(VMContextHeader, instance) as u32;
}

/// Per-store limits, written by the runtime when a call enters the guest.
#[repr(C)]
#[derive(Debug)]
pub struct VMRuntimeLimits {
    /// Lowest stack address wasm code may use; every function prologue compares against it.
    pub stack_limit: usize,
    /// Non-zero when the guest has been asked to stop.
    pub interrupt: u64,
    /// Fuel left for code compiled with fuel metering; it traps when this goes negative.
    pub fuel: i64,
    /// Base of the store's GC heap (see [`crate::gc`]): a GC reference is an offset from it.
    /// Null until an instance of a module with struct or array types makes the heap (no
    /// object exists before), then fixed for the store's life.
    pub gc_heap_base: usize,
    /// Offset in the store's GC heap where the next object goes (bump allocation).
    pub gc_next: u64,
    /// Offset in the store's GC heap where the space for bump allocation ends; an allocation
    /// that would pass it calls the `gc_alloc` libcall instead.
    pub gc_end: u64,
    /// Frame pointer of the guest code that last called a libcall or host function, written by
    /// the runtime's entry shims so that a trap raised there has the guest's backtrace and an
    /// exception thrown there unwinds from the right frame. Compiled code never reads it.
    pub last_libcall_fp: usize,
    /// Its stack pointer at that call, pointing at the return address (as above).
    pub last_libcall_sp: usize,
}

impl Default for VMRuntimeLimits {
    /// No stack yet, not interrupted, unlimited fuel.
    fn default() -> Self {
        VMRuntimeLimits {
            stack_limit: 0,
            interrupt: 0,
            fuel: i64::MAX,
            gc_heap_base: 0,
            gc_next: 0,
            gc_end: 0,
            last_libcall_fp: 0,
            last_libcall_sp: 0,
        }
    }
}

impl VMRuntimeLimits {
    /// Offset of [`Self::fuel`].
    pub const FUEL_OFFSET: u32 = offset_of!(VMRuntimeLimits, fuel) as u32;
    /// Offset of [`Self::stack_limit`].
    pub const STACK_LIMIT_OFFSET: u32 = offset_of!(VMRuntimeLimits, stack_limit) as u32;
    /// Offset of [`Self::interrupt`].
    pub const INTERRUPT_OFFSET: u32 = offset_of!(VMRuntimeLimits, interrupt) as u32;
    /// Offset of [`Self::gc_heap_base`].
    pub const GC_HEAP_BASE_OFFSET: u32 = offset_of!(VMRuntimeLimits, gc_heap_base) as u32;
    /// Offset of [`Self::gc_next`].
    pub const GC_NEXT_OFFSET: u32 = offset_of!(VMRuntimeLimits, gc_next) as u32;
    /// Offset of [`Self::gc_end`].
    pub const GC_END_OFFSET: u32 = offset_of!(VMRuntimeLimits, gc_end) as u32;
    /// Offset of [`Self::last_libcall_fp`].
    pub const LAST_LIBCALL_FP_OFFSET: u32 = offset_of!(VMRuntimeLimits, last_libcall_fp) as u32;
    /// Offset of [`Self::last_libcall_sp`].
    pub const LAST_LIBCALL_SP_OFFSET: u32 = offset_of!(VMRuntimeLimits, last_libcall_sp) as u32;
}

/// A callable function: code, the context it expects as `callee_vmctx`, its canonical type.
/// Table elements and `funcref` values are pointers to one of these (null is the null ref).
///
/// Every `VMFuncRef` lives in the `func_refs` array of some instance's VM context (imported
/// functions get a copy in the importer's), and records which one in `home`: that is how the
/// runtime finds, from a bare funcref the guest hands out, the instance that must stay alive
/// for the pointer to stay valid.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct VMFuncRef {
    /// Entry point, `tail` calling convention.
    pub code: *const u8,
    /// Passed as the callee's `vmctx` (a wasm instance's context or a [`VMHostFuncContext`]).
    pub vmctx: *mut u8,
    /// Canonical type id, compared against the caller's expected id by `call_indirect`.
    pub type_id: u32,
    /// Padding, always zero.
    pub _pad: u32,
    /// The VM context whose `func_refs` array holds this entry (never read by compiled code).
    pub home: *mut u8,
}

impl VMFuncRef {
    /// Offset of [`Self::code`].
    pub const CODE_OFFSET: u32 = offset_of!(VMFuncRef, code) as u32;
    /// Offset of [`Self::vmctx`].
    pub const VMCTX_OFFSET: u32 = offset_of!(VMFuncRef, vmctx) as u32;
    /// Offset of [`Self::type_id`].
    pub const TYPE_ID_OFFSET: u32 = offset_of!(VMFuncRef, type_id) as u32;
    /// Offset of [`Self::home`].
    pub const HOME_OFFSET: u32 = offset_of!(VMFuncRef, home) as u32;
    /// Size in bytes.
    pub const SIZE: u32 = size_of::<VMFuncRef>() as u32;
}

/// Log2 of the granule a memory's dirty map tracks: one map byte per 4 KiB page.
pub const DIRTY_PAGE_LOG2: u32 = 12;

/// What one dirty mark promises: when compiled code marks the page of address `X`, teardown
/// resets at least `[X, X + DIRTY_MARK_REACH)`, the page holding `X` and the first
/// `DIRTY_MARK_REACH - 1` bytes of the next. So a store needs no mark of its own when a mark
/// that dominates it already reaches all of its bytes (the widest store, `v128`, is 16 bytes).
pub const DIRTY_MARK_REACH: u64 = 64;

/// How far into a memory a store may reach when the compiler left it to another store's mark
/// although its 32-bit address `base + c` may have wrapped around (see `FuncEnv::mark_store`):
/// teardown resets the first page of a memory whose length is within `DIRTY_MARK_REACH` of
/// 4 GiB, the only kind in which such a sum can wrap after a store at `base` succeeded.
pub const WRAPPED_STORE_REACH: u64 = 1 << DIRTY_PAGE_LOG2;

/// Bytes in a memory's dirty map: one per page of the reservation.
pub const DIRTY_MAP_SIZE: u64 = crate::HEAP_RESERVATION >> DIRTY_PAGE_LOG2;

/// The dirty-map byte of the page holding `address`, a byte of the memory whose definition
/// carries `dirty_bias`: `dirty_bias + (address >> DIRTY_PAGE_LOG2)`, in wrapping arithmetic.
///
/// Compiled code marks a page after every store to it by writing 1 there (a store that spans
/// two pages marks the first; whoever resets the memory also restores the first 15 bytes of
/// the page after each dirty one). The runtime marks what host code writes, and teardown
/// restores exactly the marked pages. With the map at `map` and the memory at `base` (4 KiB
/// aligned), `dirty_bias = map - (base >> DIRTY_PAGE_LOG2)`.
pub const fn dirty_map_entry(dirty_bias: usize, address: usize) -> usize {
    dirty_bias.wrapping_add(address >> DIRTY_PAGE_LOG2)
}

/// A linear memory's state, owned by the instance that defines it.
#[repr(C)]
#[derive(Debug)]
pub struct VMMemoryDefinition {
    /// Start of the memory; never moves (the whole reservation is mapped up front).
    pub base: *mut u8,
    /// Current size in bytes.
    pub current_length: u64,
    /// Largest size in bytes `memory.grow` may reach (declared maximum, capped by the reservation).
    pub maximum_length: u64,
    /// Where the memory's dirty map is, as a bias (see [`dirty_map_entry`]).
    pub dirty_bias: usize,
}

impl VMMemoryDefinition {
    /// Offset of [`Self::base`].
    pub const BASE_OFFSET: u32 = offset_of!(VMMemoryDefinition, base) as u32;
    /// Offset of [`Self::current_length`].
    pub const CURRENT_LENGTH_OFFSET: u32 = offset_of!(VMMemoryDefinition, current_length) as u32;
    /// Offset of [`Self::dirty_bias`].
    pub const DIRTY_BIAS_OFFSET: u32 = offset_of!(VMMemoryDefinition, dirty_bias) as u32;
    /// Size in bytes.
    pub const SIZE: u32 = size_of::<VMMemoryDefinition>() as u32;
}

/// How an instance reaches one of its memories, own or imported.
#[repr(C)]
#[derive(Debug)]
pub struct VMMemoryImport {
    /// Copy of the definition's base, so heap accesses need one load.
    pub base: *mut u8,
    /// The owner's definition (for the current length, which can change).
    pub definition: *mut VMMemoryDefinition,
    /// Copy of the definition's dirty-map bias, so marking a page needs one load.
    pub dirty_bias: usize,
}

impl VMMemoryImport {
    /// Offset of [`Self::base`].
    pub const BASE_OFFSET: u32 = offset_of!(VMMemoryImport, base) as u32;
    /// Offset of [`Self::definition`].
    pub const DEFINITION_OFFSET: u32 = offset_of!(VMMemoryImport, definition) as u32;
    /// Offset of [`Self::dirty_bias`].
    pub const DIRTY_BIAS_OFFSET: u32 = offset_of!(VMMemoryImport, dirty_bias) as u32;
    /// Size in bytes.
    pub const SIZE: u32 = size_of::<VMMemoryImport>() as u32;
}

/// A table's state, owned by the instance that defines it. Elements are pointer-sized: a
/// `*const VMFuncRef` for funcref tables, an opaque host value for externref tables, 0 is null.
#[repr(C)]
#[derive(Debug)]
pub struct VMTableDefinition {
    /// First element; never moves (room for `maximum_elements` is reserved up front).
    pub base: *mut usize,
    /// Current number of elements.
    pub current_elements: u64,
    /// Largest number of elements `table.grow` may reach.
    pub maximum_elements: u64,
}

impl VMTableDefinition {
    /// Offset of [`Self::base`].
    pub const BASE_OFFSET: u32 = offset_of!(VMTableDefinition, base) as u32;
    /// Offset of [`Self::current_elements`].
    pub const CURRENT_ELEMENTS_OFFSET: u32 = offset_of!(VMTableDefinition, current_elements) as u32;
    /// Size in bytes.
    pub const SIZE: u32 = size_of::<VMTableDefinition>() as u32;
    /// Size of one element in bytes.
    pub const ELEMENT_SIZE: u32 = size_of::<usize>() as u32;
}

/// Storage of one global, large enough for a v128.
#[repr(C, align(16))]
#[derive(Debug, Clone, Copy, Default)]
pub struct VMGlobalDefinition {
    /// The value, little endian, in the low bytes.
    pub storage: [u8; 16],
}

impl VMGlobalDefinition {
    /// Size in bytes.
    pub const SIZE: u32 = size_of::<VMGlobalDefinition>() as u32;
}

/// The `callee_vmctx` of a host function: the host trampoline calls `host_fn(self, caller_vmctx,
/// values)` with the System V convention; `values` holds the parameters on entry and the results
/// on return.
#[repr(C)]
#[derive(Debug)]
pub struct VMHostFuncContext {
    /// `extern "C" fn(*mut VMHostFuncContext, caller_vmctx: *mut u8, values: *mut ValRaw)`.
    pub host_fn: *const u8,
    /// The runtime's data for this function (opaque to compiled code).
    pub data: *mut u8,
}

impl VMHostFuncContext {
    /// Offset of [`Self::host_fn`].
    pub const HOST_FN_OFFSET: u32 = offset_of!(VMHostFuncContext, host_fn) as u32;
}

/// An exception tag, owned by the instance that defines it (or by the host). Its address is
/// the tag's identity: two tags are the same tag exactly when their definitions are.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct VMTagDefinition {
    /// Canonical type id of the tag's function type.
    pub type_id: u32,
    /// Padding, always zero.
    pub _pad: u32,
}

impl VMTagDefinition {
    /// Size in bytes.
    pub const SIZE: u32 = size_of::<VMTagDefinition>() as u32;
}

/// The head of an exception object; an `exnref` is its address (null is 0). The payload
/// follows: value `i` of the tag's parameters at [`VMException::payload_offset`]`(i)`, each in
/// a 16-byte slot as in a `VMGlobalDefinition`. Exception objects belong to their store.
///
/// An object whose exnref never became a wasm value (`escaped` is 0) has exactly one holder,
/// the throw in flight, so a `catch` or `catch_all` clause that takes only the payload
/// releases it (`exn_drop`). Compiled code sets `escaped` where the exnref becomes a value
/// (`catch_ref`, `catch_all_ref`, a legacy `catch`, whose body may `rethrow`); the object then
/// lives as long as its store.
#[repr(C, align(16))]
#[derive(Debug)]
pub struct VMException {
    /// The tag's definition (its identity).
    pub tag: *const VMTagDefinition,
    /// Non-zero once the exnref may be held anywhere (see above).
    pub escaped: u32,
    /// Padding, always zero.
    pub _pad: u32,
}

impl VMException {
    /// Offset of [`Self::tag`].
    pub const TAG_OFFSET: u32 = offset_of!(VMException, tag) as u32;
    /// Offset of [`Self::escaped`].
    pub const ESCAPED_OFFSET: u32 = offset_of!(VMException, escaped) as u32;
    /// Offset of payload value `index`.
    pub const fn payload_offset(index: u32) -> u32 {
        size_of::<VMException>() as u32 + 16 * index
    }
}

/// How many of each entity a module has; all a [`VMOffsets`] needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VMCounts {
    /// Entries in the type section.
    pub types: u32,
    /// Functions, imported and defined.
    pub funcs: u32,
    /// Memories, imported and defined.
    pub memories: u32,
    /// Memories defined by the module.
    pub defined_memories: u32,
    /// Tables, imported and defined.
    pub tables: u32,
    /// Tables defined by the module.
    pub defined_tables: u32,
    /// Globals, imported and defined.
    pub globals: u32,
    /// Globals defined by the module.
    pub defined_globals: u32,
    /// Exception tags, imported and defined.
    pub tags: u32,
    /// Tags defined by the module.
    pub defined_tags: u32,
}

/// Byte offsets of every VM context field for one module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VMOffsets {
    /// The counts these offsets were computed from.
    pub counts: VMCounts,
    /// Start of the `u32` type-id array.
    pub type_ids: u32,
    /// Start of the [`VMMemoryImport`] array.
    pub memories: u32,
    /// Start of the table-definition pointer array.
    pub tables: u32,
    /// Start of the global-definition pointer array.
    pub globals: u32,
    /// Start of the [`VMFuncRef`] array.
    pub func_refs: u32,
    /// Start of the tag-definition pointer array.
    pub tags: u32,
    /// Start of the own [`VMMemoryDefinition`]s.
    pub defined_memories: u32,
    /// Start of the own [`VMTableDefinition`]s.
    pub defined_tables: u32,
    /// Start of the own [`VMTagDefinition`]s.
    pub defined_tags: u32,
    /// Start of the own [`VMGlobalDefinition`]s.
    pub defined_globals: u32,
    /// Total size in bytes.
    pub size: u32,
}

const fn align_up(value: u32, align: u32) -> u32 {
    (value + align - 1) & !(align - 1)
}

const PTR: u32 = size_of::<usize>() as u32;

impl VMOffsets {
    /// Lays out a VM context for a module with these counts.
    pub const fn new(counts: VMCounts) -> VMOffsets {
        let type_ids = size_of::<VMContextHeader>() as u32;
        let memories = align_up(type_ids + 4 * counts.types, 16);
        let tables = memories + VMMemoryImport::SIZE * counts.memories;
        let globals = tables + PTR * counts.tables;
        let func_refs = globals + PTR * counts.globals;
        let tags = func_refs + VMFuncRef::SIZE * counts.funcs;
        let defined_memories = tags + PTR * counts.tags;
        let defined_tables = defined_memories + VMMemoryDefinition::SIZE * counts.defined_memories;
        let defined_tags = defined_tables + VMTableDefinition::SIZE * counts.defined_tables;
        let defined_globals = align_up(defined_tags + VMTagDefinition::SIZE * counts.defined_tags, 16);
        let size = defined_globals + VMGlobalDefinition::SIZE * counts.defined_globals;
        VMOffsets {
            counts,
            type_ids,
            memories,
            tables,
            globals,
            func_refs,
            tags,
            defined_memories,
            defined_tables,
            defined_tags,
            defined_globals,
            size,
        }
    }

    /// Offset of the canonical id of type `index`.
    pub const fn type_id(&self, index: u32) -> u32 {
        self.type_ids + 4 * index
    }
    /// Offset of the [`VMMemoryImport`] of memory `index`.
    pub const fn memory(&self, index: u32) -> u32 {
        self.memories + VMMemoryImport::SIZE * index
    }
    /// Offset of the definition pointer of table `index`.
    pub const fn table(&self, index: u32) -> u32 {
        self.tables + PTR * index
    }
    /// Offset of the definition pointer of global `index`.
    pub const fn global(&self, index: u32) -> u32 {
        self.globals + PTR * index
    }
    /// Offset of the [`VMFuncRef`] of function `index`.
    pub const fn func_ref(&self, index: u32) -> u32 {
        self.func_refs + VMFuncRef::SIZE * index
    }
    /// Offset of the definition pointer of tag `index`.
    pub const fn tag(&self, index: u32) -> u32 {
        self.tags + PTR * index
    }
    /// Offset of own tag `defined_index`'s definition.
    pub const fn defined_tag(&self, defined_index: u32) -> u32 {
        self.defined_tags + VMTagDefinition::SIZE * defined_index
    }
    /// Offset of own memory `defined_index`'s definition.
    pub const fn defined_memory(&self, defined_index: u32) -> u32 {
        self.defined_memories + VMMemoryDefinition::SIZE * defined_index
    }
    /// Offset of own table `defined_index`'s definition.
    pub const fn defined_table(&self, defined_index: u32) -> u32 {
        self.defined_tables + VMTableDefinition::SIZE * defined_index
    }
    /// Offset of own global `defined_index`'s storage.
    pub const fn defined_global(&self, defined_index: u32) -> u32 {
        self.defined_globals + VMGlobalDefinition::SIZE * defined_index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_sizes_are_what_the_compiler_assumes() {
        assert_eq!(VMFuncRef::SIZE, 32);
        assert_eq!(VMMemoryImport::SIZE, 24);
        assert_eq!(VMMemoryDefinition::SIZE, 32);
        assert_eq!(VMTableDefinition::SIZE, 24);
        assert_eq!(VMGlobalDefinition::SIZE, 16);
        assert_eq!(core::mem::align_of::<VMGlobalDefinition>(), 16);
    }

    #[test]
    fn offsets_do_not_overlap_and_globals_are_aligned() {
        let counts = VMCounts {
            types: 3,
            funcs: 5,
            memories: 2,
            defined_memories: 1,
            tables: 2,
            defined_tables: 1,
            globals: 4,
            defined_globals: 3,
            tags: 3,
            defined_tags: 2,
        };
        let o = VMOffsets::new(counts);
        assert_eq!(o.type_ids as usize, size_of::<VMContextHeader>());
        assert!(o.type_id(3) <= o.memories);
        assert_eq!(o.memory(2), o.tables);
        assert_eq!(o.table(2), o.globals);
        assert_eq!(o.global(4), o.func_refs);
        assert_eq!(o.func_ref(5), o.tags);
        assert_eq!(o.tag(3), o.defined_memories);
        assert_eq!(o.defined_memory(1), o.defined_tables);
        assert_eq!(o.defined_table(1), o.defined_tags);
        assert!(o.defined_tag(2) <= o.defined_globals);
        assert_eq!(o.defined_globals % 16, 0);
        assert_eq!(o.defined_global(3), o.size);
    }

    #[test]
    fn empty_module_has_just_a_header() {
        let o = VMOffsets::new(VMCounts::default());
        assert_eq!(o.size as usize, size_of::<VMContextHeader>());
    }
}
