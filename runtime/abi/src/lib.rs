//! The contract between Kiln's compiler and its runtime.
//!
//! Everything both sides must agree on lives here and only here: the ABI version and magic, the
//! exported symbol name, the module header layout, the serialized metadata format, the VM context
//! layout ([`VMOffsets`]), trap codes and their spec wording, and the libcall table. The compiler
//! turns these into Cranelift IR offsets, the runtime into `#[repr(C)]` structs and assembly
//! operands; the tests at the bottom of each module check that the two views agree.
//!
//! This crate must never depend on Cranelift: an embedder that only loads `.so` files links it.

#![no_std]
#![deny(missing_docs)]

extern crate alloc;

pub mod checksum;
pub mod libcalls;
pub mod metadata;
pub mod trap;
pub mod vmctx;

pub use checksum::{checksum_trailer, verify_checksum_trailer, ChecksumError, CHECKSUM_TRAILER_LEN};
pub use libcalls::{AbiType, Libcall};
pub use metadata::*;
pub use trap::TrapCode;
pub use vmctx::*;

/// Bumped whenever anything in this crate changes shape. The runtime refuses a `.so` whose
/// header carries another version, before reading anything else from it. (Also bumped when
/// what the runtime trusts compiled code to check changes: 8 runs memories with 1-byte pages,
/// which only code from Kiln's own translator bounds-checks exactly.)
pub const ABI_VERSION: u32 = 10;

/// First eight bytes of the module header, so a foreign symbol of the same name is refused.
pub const MODULE_MAGIC: [u8; 8] = *b"KILNMOD\0";

/// The one dynamic symbol a Kiln shared object exports; it names a [`ModuleHeader`].
pub const MODULE_SYMBOL: &str = "kiln_module";

/// ELF section holding the heap image, 4096-aligned so the runtime can map it copy-on-write
/// straight from the file.
pub const HEAP_IMAGE_SECTION: &str = ".kiln.image";

/// Page size of heap images (the x86-64 Linux page size).
pub const IMAGE_PAGE_SIZE: u64 = 4096;

/// Symbol prefix of the host-to-wasm trampolines (`kiln_array_tramp_<type index>`).
pub const ARRAY_TRAMPOLINE_PREFIX: &str = "kiln_array_tramp_";
/// Symbol prefix of the wasm-to-host trampolines (`kiln_host_tramp_<type index>`).
pub const HOST_TRAMPOLINE_PREFIX: &str = "kiln_host_tramp_";

/// The header every Kiln shared object exports under [`MODULE_SYMBOL`].
///
/// The first two fields never move, whatever the version: the runtime reads them first and
/// refuses anything whose magic or version differs.
///
/// Function pointers in the tables below use these calling conventions:
/// - `functions[i]`: Cranelift's `tail` convention, `(callee_vmctx, caller_vmctx, wasm params...)
///   -> wasm results`.
/// - `array_trampolines[t]`: System V, `(callee_vmctx, caller_vmctx, values: *mut ValRaw,
///   code: fn ptr) -> ()`; loads the parameters of type `t` from `values`, calls `code`, stores
///   the results back into `values`. Null for types no trampoline was made for.
/// - `host_trampolines[t]`: `tail` convention with the wasm signature of type `t`; spills the
///   parameters into a `ValRaw` array and calls the [`VMHostFuncContext`]'s `host_fn`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleHeader {
    /// [`MODULE_MAGIC`].
    pub magic: [u8; 8],
    /// [`ABI_VERSION`] of the compiler that wrote the object.
    pub abi_version: u32,
    /// Size of this header in bytes, a second sanity check.
    pub header_size: u32,
    /// The serialized [`ModuleMetadata`] (postcard).
    pub metadata: *const u8,
    /// Length of `metadata` in bytes.
    pub metadata_len: u64,
    /// Code addresses of the defined functions, in order.
    pub functions: *const *const u8,
    /// Number of entries in `functions`.
    pub num_functions: u64,
    /// Per type index: the host-to-wasm trampoline, or null.
    pub array_trampolines: *const *const u8,
    /// Per type index: the wasm-to-host trampoline, or null.
    pub host_trampolines: *const *const u8,
    /// Number of entries in each trampoline table.
    pub num_types: u64,
    /// The heap images of the defined memories, one after another in their own section
    /// [`HEAP_IMAGE_SECTION`] (null when the module has none; see
    /// `ModuleMetadata::heap_images`).
    pub heap_image: *const u8,
}

impl ModuleHeader {
    /// Byte offset of `magic` (never changes).
    pub const MAGIC_OFFSET: usize = 0;
    /// Byte offset of `abi_version` (never changes).
    pub const VERSION_OFFSET: usize = 8;
    /// Size in bytes, as written into `header_size`.
    pub const SIZE: usize = core::mem::size_of::<ModuleHeader>();
    /// Offsets of the pointer fields, in the order the compiler writes relocations for them.
    pub const METADATA_OFFSET: usize = core::mem::offset_of!(ModuleHeader, metadata);
    /// See [`Self::METADATA_OFFSET`].
    pub const FUNCTIONS_OFFSET: usize = core::mem::offset_of!(ModuleHeader, functions);
    /// See [`Self::METADATA_OFFSET`].
    pub const ARRAY_TRAMPOLINES_OFFSET: usize = core::mem::offset_of!(ModuleHeader, array_trampolines);
    /// See [`Self::METADATA_OFFSET`].
    pub const HOST_TRAMPOLINES_OFFSET: usize = core::mem::offset_of!(ModuleHeader, host_trampolines);
    /// See [`Self::METADATA_OFFSET`].
    pub const METADATA_LEN_OFFSET: usize = core::mem::offset_of!(ModuleHeader, metadata_len);
    /// See [`Self::METADATA_OFFSET`].
    pub const NUM_FUNCTIONS_OFFSET: usize = core::mem::offset_of!(ModuleHeader, num_functions);
    /// See [`Self::METADATA_OFFSET`].
    pub const NUM_TYPES_OFFSET: usize = core::mem::offset_of!(ModuleHeader, num_types);
    /// See [`Self::METADATA_OFFSET`].
    pub const HEADER_SIZE_OFFSET: usize = core::mem::offset_of!(ModuleHeader, header_size);
    /// See [`Self::METADATA_OFFSET`].
    pub const HEAP_IMAGE_OFFSET: usize = core::mem::offset_of!(ModuleHeader, heap_image);
}

const _: () = {
    assert!(core::mem::offset_of!(ModuleHeader, magic) == ModuleHeader::MAGIC_OFFSET);
    assert!(core::mem::offset_of!(ModuleHeader, abi_version) == ModuleHeader::VERSION_OFFSET);
    assert!(ModuleHeader::SIZE == 80);
};

/// One wasm value as passed between host and guest through the trampolines: 16 bytes, little
/// endian, the value in the low bytes (i32 and f32 in the low 4, i64, f64 and references in the
/// low 8, v128 in all 16).
pub type ValRaw = u128;

/// Address space reserved for each 32-bit linear memory: any 32-bit index lands inside it.
pub const HEAP_RESERVATION: u64 = 1 << 32;
/// Inaccessible space after each reservation: accesses whose static offset is below this need
/// no explicit bounds check.
pub const HEAP_GUARD: u64 = 1 << 31;

/// Size of one [`ValRaw`] slot in bytes.
pub const VAL_RAW_SIZE: u32 = 16;
