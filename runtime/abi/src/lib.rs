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
pub mod gc;
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
/// which only code from Kiln's own translator bounds-checks exactly; 11 locates everything by
/// offset, with no relocation; 12 adds GC objects.)
pub const ABI_VERSION: u32 = 12;

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
/// Everything the header locates is given as an offset from the module's load base (its
/// address 0), never as a pointer, so a module needs no relocation at load time: the runtime
/// finds the base by subtracting `header_offset` from the header's own address. The tables
/// hold one little-endian `u64` code offset per entry (0: none); the code they name uses these
/// calling conventions:
/// - `functions[i]`: Cranelift's `tail` convention, `(callee_vmctx, caller_vmctx, wasm params...)
///   -> wasm results`.
/// - `array_trampolines[t]`: System V, `(callee_vmctx, caller_vmctx, values: *mut ValRaw,
///   code: fn ptr) -> ()`; loads the parameters of type `t` from `values`, calls `code`, stores
///   the results back into `values`. None for types no trampoline was made for.
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
    /// This header's own offset from the load base.
    pub header_offset: u64,
    /// Offset of the serialized [`ModuleMetadata`] (postcard).
    pub metadata_offset: u64,
    /// Length of the metadata in bytes.
    pub metadata_len: u64,
    /// Offset of the table of the defined functions' code offsets, in order.
    pub functions_offset: u64,
    /// Number of entries in the functions table.
    pub num_functions: u64,
    /// Offset of the table of host-to-wasm trampolines, per type index.
    pub array_trampolines_offset: u64,
    /// Offset of the table of wasm-to-host trampolines, per type index.
    pub host_trampolines_offset: u64,
    /// Number of entries in each trampoline table.
    pub num_types: u64,
    /// Offset of the heap images of the defined memories, one after another in their own
    /// page-aligned section [`HEAP_IMAGE_SECTION`] (0 when the module has none; see
    /// `ModuleMetadata::heap_images`).
    pub heap_image_offset: u64,
}

impl ModuleHeader {
    /// Byte offset of `magic` (never changes).
    pub const MAGIC_OFFSET: usize = 0;
    /// Byte offset of `abi_version` (never changes).
    pub const VERSION_OFFSET: usize = 8;
    /// Size in bytes, as written into `header_size`.
    pub const SIZE: usize = core::mem::size_of::<ModuleHeader>();

    /// The header as it lies in a file or in memory (`None` if `bytes` is shorter than it).
    pub fn from_bytes(bytes: &[u8]) -> Option<ModuleHeader> {
        let bytes = bytes.get(..Self::SIZE)?;
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"));
        Some(ModuleHeader {
            magic: bytes[..8].try_into().expect("eight bytes"),
            abi_version: u32_at(8),
            header_size: u32_at(12),
            header_offset: u64_at(16),
            metadata_offset: u64_at(24),
            metadata_len: u64_at(32),
            functions_offset: u64_at(40),
            num_functions: u64_at(48),
            array_trampolines_offset: u64_at(56),
            host_trampolines_offset: u64_at(64),
            num_types: u64_at(72),
            heap_image_offset: u64_at(80),
        })
    }

    /// The header's bytes, as the compiler writes them.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut bytes = [0u8; Self::SIZE];
        bytes[..8].copy_from_slice(&self.magic);
        bytes[8..12].copy_from_slice(&self.abi_version.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.header_size.to_le_bytes());
        let words = [
            self.header_offset,
            self.metadata_offset,
            self.metadata_len,
            self.functions_offset,
            self.num_functions,
            self.array_trampolines_offset,
            self.host_trampolines_offset,
            self.num_types,
            self.heap_image_offset,
        ];
        for (i, word) in words.iter().enumerate() {
            bytes[16 + 8 * i..24 + 8 * i].copy_from_slice(&word.to_le_bytes());
        }
        bytes
    }
}

const _: () = {
    assert!(core::mem::offset_of!(ModuleHeader, magic) == ModuleHeader::MAGIC_OFFSET);
    assert!(core::mem::offset_of!(ModuleHeader, abi_version) == ModuleHeader::VERSION_OFFSET);
    assert!(core::mem::offset_of!(ModuleHeader, header_offset) == 16);
    assert!(core::mem::offset_of!(ModuleHeader, heap_image_offset) == 80);
    assert!(ModuleHeader::SIZE == 88);
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
