//! Libcalls: runtime functions compiled code calls through the VM context's `builtins` table.
//!
//! [`for_each_libcall!`](crate::for_each_libcall) is the one list. The compiler expands it into
//! Cranelift signatures, the runtime into its table of `extern "C"` functions (checked against
//! these signatures at compile time). Parameter kinds: `vmctx` (pointer to the calling
//! instance's VM context), `ptr`, `i32`, `i64`. Trapping libcalls do not return.

/// Invokes `$m!` with the list of libcalls: `name(param kinds) -> result kind;`.
#[macro_export]
macro_rules! for_each_libcall {
    ($m:ident) => {
        $m! {
            /// `memory.grow`: (memory index, delta pages) -> old size in pages, or -1.
            memory_grow(vmctx, i32, i64) -> i64;
            /// `memory.fill`: (memory index, dst, byte, len).
            memory_fill(vmctx, i32, i64, i32, i64) -> ();
            /// `memory.copy`: (dst memory, src memory, dst, src, len).
            memory_copy(vmctx, i32, i32, i64, i64, i64) -> ();
            /// `memory.init`: (memory index, data segment, dst, src, len).
            memory_init(vmctx, i32, i32, i64, i32, i32) -> ();
            /// `data.drop`: (data segment).
            data_drop(vmctx, i32) -> ();
            /// `table.grow`: (table, delta, init value) -> old size, or -1. Indices and sizes
            /// are 64-bit for every table (zero-extended from 32-bit ones).
            table_grow(vmctx, i32, i64, ptr) -> i64;
            /// `table.fill`: (table, dst, value, len).
            table_fill(vmctx, i32, i64, ptr, i64) -> ();
            /// `table.copy`: (dst table, src table, dst, src, len).
            table_copy(vmctx, i32, i32, i64, i64, i64) -> ();
            /// `table.init`: (table, element segment, dst, src, len).
            table_init(vmctx, i32, i32, i64, i64, i64) -> ();
            /// `elem.drop`: (element segment).
            elem_drop(vmctx, i32) -> ();
            /// `memory.atomic.wait32`: (memory, address, expected, timeout ns) -> 0 woken, 1 not-equal, 2 timed out.
            memory_atomic_wait32(vmctx, i32, i64, i32, i64) -> i32;
            /// `memory.atomic.wait64`: (memory, address, expected, timeout ns) -> as above.
            memory_atomic_wait64(vmctx, i32, i64, i64, i64) -> i32;
            /// `memory.atomic.notify`: (memory, address, count) -> waiters woken.
            memory_atomic_notify(vmctx, i32, i64, i32) -> i32;
            /// A new exception object of tag (tag index), its payload still to be written
            /// (`VMException` layout) -> the exnref.
            exn_new(vmctx, i32) -> ptr;
            /// Releases exception object (exnref) unless it has escaped (see `VMException`).
            exn_drop(vmctx, ptr) -> ();
            /// `throw_ref` of a non-null exnref: unwinds to the nearest handler of a guest
            /// frame on this call's stack, or out to the host. Never returns.
            throw_ref(vmctx, ptr) -> ();
            /// A GC object of (size in bytes), when bump allocation ran out of room ->
            /// its heap offset (the header still to be written). Traps when the heap is full.
            gc_alloc(vmctx, i64) -> i64;
            /// Whether canonical type id (sub) is (sup) or one of its subtypes -> 0 or 1.
            is_subtype(vmctx, i32, i32) -> i32;
            /// `array.new_data`: (array type index, data segment, offset, length) -> the array.
            array_new_data(vmctx, i32, i32, i32, i32) -> i64;
            /// `array.new_elem`: (array type index, element segment, offset, length) -> the array.
            array_new_elem(vmctx, i32, i32, i32, i32) -> i64;
            /// `array.init_data`: (array type index, data segment, array, dst, src, length).
            array_init_data(vmctx, i32, i32, i64, i32, i32, i32) -> ();
            /// `array.init_elem`: (array type index, element segment, array, dst, src, length).
            array_init_elem(vmctx, i32, i32, i64, i32, i32, i32) -> ();
            /// Copies (bytes) within the GC heap from offset (src) to offset (dst), which compiled
            /// code checked are inside two arrays (`array.copy`): (dst, src, bytes).
            gc_copy(vmctx, i64, i64, i64) -> ();
        }
    };
}

macro_rules! define_libcall_enum {
    ($($(#[$doc:meta])* $name:ident($($param:ident),*) -> $ret:tt;)*) => {
        /// Index of a libcall in the `builtins` table.
        #[allow(non_camel_case_types, reason = "variants are named after the wasm instructions")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum Libcall {
            $($(#[$doc])* $name,)*
        }

        impl Libcall {
            /// Every libcall, in table order.
            pub const ALL: &'static [Libcall] = &[$(Libcall::$name,)*];

            /// The libcall's name.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Libcall::$name => stringify!($name),)*
                }
            }

            /// Parameter kinds, in order.
            pub const fn params(self) -> &'static [AbiType] {
                match self {
                    $(Libcall::$name => &[$(AbiType::$param),*],)*
                }
            }

            /// Result kind, if any.
            pub const fn result(self) -> Option<AbiType> {
                match self {
                    $(Libcall::$name => define_libcall_enum!(@ret $ret),)*
                }
            }
        }
    };
    (@ret ()) => { None };
    (@ret $t:ident) => { Some(AbiType::$t) };
}

/// The kind of a libcall parameter or result.
#[allow(non_camel_case_types, reason = "named like the wasm types they carry")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbiType {
    /// The calling instance's VM context.
    vmctx,
    /// A pointer-sized value.
    ptr,
    /// A 32-bit integer.
    i32,
    /// A 64-bit integer.
    i64,
}

crate::for_each_libcall!(define_libcall_enum);

impl Libcall {
    /// Byte offset of this libcall's entry in the `builtins` table.
    pub const fn table_offset(self) -> u32 {
        self as u32 * core::mem::size_of::<usize>() as u32
    }
}
