//! Garbage-collected objects (WebAssembly 3.0's structs and arrays): the type section's
//! composite types, how objects are laid out in a store's GC heap, and how references of the
//! `any` and `extern` hierarchies are encoded.
//!
//! **References.** Every reference is 64 bits in registers, tables, globals and object fields.
//! `anyref` and `externref` share one encoding, so `any.convert_extern` and
//! `extern.convert_any` are the identity:
//!
//! ```text
//! 0                     null (of every hierarchy)
//! value << 1 | 1        an i31 (value: the 31-bit payload, zero-extended)
//! n << 2 | 0b10         host value n (an externref the host passed in, n < 2^62)
//! offset (8-aligned)    a struct or array: its offset in the store's GC heap, below 2^32
//! ```
//!
//! **Objects** start at an 8-aligned offset with a header: the canonical type id (`u32`) and a
//! kind byte; an array's length follows at [`ARRAY_LEN_OFFSET`] and its elements at
//! [`ARRAY_DATA_OFFSET`], a struct's fields at [`STRUCT_FIELDS_OFFSET`] as [`struct_layout`]
//! places them. Offset 0 is never an object: the heap's first object is at
//! [`GC_HEAP_START`].

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::ValType;

/// What a struct field or array element holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StorageType {
    /// A packed 8-bit integer (read with `_s` or `_u`).
    I8,
    /// A packed 16-bit integer.
    I16,
    /// A value of a value type.
    Val(ValType),
}

/// A struct field or the element of an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FieldType {
    /// What it holds.
    pub storage: StorageType,
    /// Whether `struct.set`/`array.set` may change it.
    pub mutable: bool,
}

/// The shape of a type-section entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompositeType {
    /// A function type (its signature is the entry of `ModuleMetadata::types`).
    Func,
    /// A struct with these fields.
    Struct(Vec<FieldType>),
    /// An array of this element.
    Array(FieldType),
}

/// A type-section entry's place in the subtype hierarchy, and its shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SubType {
    /// Whether no type may declare it as its supertype.
    pub is_final: bool,
    /// The declared supertype (a module type index), if any.
    pub supertype: Option<u32>,
    /// The shape.
    pub composite: CompositeType,
}

impl SubType {
    /// A final function type without supertype (what every type was before GC).
    pub const FUNC: SubType = SubType { is_final: true, supertype: None, composite: CompositeType::Func };
}

/// Offset of an object's canonical type id (`u32`).
pub const OBJECT_TYPE_ID_OFFSET: u32 = 0;
/// Offset of an object's kind byte ([`KIND_STRUCT`] or [`KIND_ARRAY`]).
pub const OBJECT_KIND_OFFSET: u32 = 4;
/// Kind byte of a struct.
pub const KIND_STRUCT: u8 = 1;
/// Kind byte of an array.
pub const KIND_ARRAY: u8 = 2;
/// Offset of a struct's first field.
pub const STRUCT_FIELDS_OFFSET: u32 = 8;
/// Offset of an array's length (`u32`).
pub const ARRAY_LEN_OFFSET: u32 = 8;
/// Offset of an array's first element.
pub const ARRAY_DATA_OFFSET: u32 = 16;
/// Objects start at multiples of this.
pub const OBJECT_ALIGN: u64 = 8;
/// Offset of the first object in a GC heap (0 is the null reference).
pub const GC_HEAP_START: u64 = 16;

/// Tag bit of an i31 reference.
pub const I31_TAG: u64 = 1;
/// Low two bits of a host value's reference.
pub const HOST_TAG: u64 = 0b10;
/// The largest host value an `externref` can carry.
pub const MAX_HOST_VALUE: u64 = (1 << 62) - 1;

/// Bytes a field or element of this storage type takes.
pub const fn storage_size(storage: StorageType) -> u32 {
    match storage {
        StorageType::I8 => 1,
        StorageType::I16 => 2,
        StorageType::Val(ValType::I32 | ValType::F32) => 4,
        StorageType::Val(ValType::I64 | ValType::F64 | ValType::Ref(_)) => 8,
        StorageType::Val(ValType::V128) => 16,
    }
}

/// Where a struct's fields go and how big its objects are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StructLayout {
    /// Offset of each field from the object's start.
    pub fields: Vec<u32>,
    /// Object size in bytes, header included, a multiple of [`OBJECT_ALIGN`].
    pub size: u32,
}

/// The layout of a struct with `fields`: in declaration order, each aligned to its size (at
/// most 8), after the header.
pub fn struct_layout(fields: &[FieldType]) -> StructLayout {
    let mut offset = STRUCT_FIELDS_OFFSET;
    let offsets = fields
        .iter()
        .map(|field| {
            let size = storage_size(field.storage);
            let align = if size > 8 { 8 } else { size };
            offset = offset.next_multiple_of(align);
            let at = offset;
            offset += size;
            at
        })
        .collect();
    StructLayout { fields: offsets, size: offset.next_multiple_of(OBJECT_ALIGN as u32) }
}

/// The size of an array object of `len` elements of `element_size` bytes, or `None` if it
/// exceeds what a GC heap can hold (4 GiB).
pub const fn array_size(element_size: u32, len: u32) -> Option<u64> {
    let bytes = ARRAY_DATA_OFFSET as u64 + element_size as u64 * len as u64;
    let size = bytes.next_multiple_of(OBJECT_ALIGN);
    if size <= u32::MAX as u64 {
        Some(size)
    } else {
        None
    }
}

/// The reference encoding of host value `n`, if it is at most [`MAX_HOST_VALUE`].
pub const fn host_ref(n: u64) -> Option<u64> {
    if n <= MAX_HOST_VALUE {
        Some(n << 2 | HOST_TAG)
    } else {
        None
    }
}

/// What a non-null reference of the `any`/`extern` hierarchies is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    /// An i31 with this payload (zero-extended).
    I31(u32),
    /// A host value.
    Host(u64),
    /// An object at this heap offset.
    Object(u32),
}

/// Decodes a non-null `anyref`/`externref` (`None` for null).
pub const fn ref_kind(raw: u64) -> Option<RefKind> {
    if raw == 0 {
        None
    } else if raw & I31_TAG != 0 {
        Some(RefKind::I31((raw >> 1) as u32 & 0x7fff_ffff))
    } else if raw & 0b11 == HOST_TAG {
        Some(RefKind::Host(raw >> 2))
    } else {
        Some(RefKind::Object(raw as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_fields_are_aligned_to_their_size_after_the_header() {
        let field = |storage| FieldType { storage, mutable: true };
        let layout = struct_layout(&[
            field(StorageType::I8),
            field(StorageType::Val(ValType::I64)),
            field(StorageType::I16),
            field(StorageType::Val(ValType::V128)),
        ]);
        assert_eq!(layout.fields, [8, 16, 24, 32]);
        assert_eq!(layout.size, 48);
        assert_eq!(struct_layout(&[]).size, 8);
    }

    #[test]
    fn references_decode_to_what_they_encode() {
        assert_eq!(ref_kind(0), None);
        assert_eq!(ref_kind(0x7fff_ffff << 1 | 1), Some(RefKind::I31(0x7fff_ffff)));
        assert_eq!(ref_kind(host_ref(MAX_HOST_VALUE).unwrap()), Some(RefKind::Host(MAX_HOST_VALUE)));
        assert_eq!(host_ref(MAX_HOST_VALUE + 1), None);
        assert_eq!(ref_kind(GC_HEAP_START), Some(RefKind::Object(GC_HEAP_START as u32)));
        assert_eq!(array_size(16, u32::MAX), None);
        assert_eq!(array_size(1, 3), Some(24));
    }
}
