//! Per-tenant resource limits: what one store's instances may take from the host.
//!
//! Every value a module declares (initial and maximum sizes, numbers of memories and tables)
//! is a request from the tenant, not a fact the host must honour. Instantiation refuses a
//! module that asks for more than these limits with [`InstantiationError::Limit`](crate::InstantiationError::Limit)
//! (crate::InstantiationError::Limit), naming the limit; `memory.grow` and `table.grow` past
//! them fail the way the spec lets growth fail, by returning -1.

/// Limits on what a store's instances may use. The field names follow Wasmtime's
/// `StoreLimits` and `-W` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Largest size of any linear memory, in bytes (`-W max-memory-size`). Default 4 GiB: the
    /// whole of a 32-bit memory, which is also the address space Kiln reserves for each.
    pub memory_size: u64,
    /// Most elements any table may hold (`-W max-table-elements`). Default 1,000,000
    /// (8 MB of elements per table).
    pub table_elements: u64,
    /// Most live instances in the store (`-W max-instances`). Default 10,000.
    pub instances: usize,
    /// Most tables one instance may define (`-W max-tables`). Default 16.
    pub tables: u32,
    /// Most memories one instance may define (`-W max-memories`). Default 8: each one after
    /// the first reserves 6 GiB of address space that its slot keeps.
    pub memories: u32,
    /// Most bytes the store's live exception objects may take (`-W max-exception-memory`):
    /// each `throw` makes one of 16 bytes plus 16 per payload value, released when a catch
    /// takes only its payload or it leaves the guest, else kept as long as the store (an
    /// `exnref` may be anywhere). A throw beyond it traps with "too many exceptions". Default
    /// 64 MiB.
    pub exception_memory: u64,
    /// Bytes of the store's GC heap, which holds its structs and arrays
    /// (`-W max-gc-heap-size`). Objects live in one half at a time (a collection copies what
    /// is live into the other), so what is live is bounded by half of it: an allocation that
    /// does not fit after a collection traps with "GC heap exhausted". At most 4 GiB. Pages are
    /// only taken from the system as objects fill them. Default 64 MiB.
    pub gc_heap_size: u64,
}

impl StoreLimits {
    /// The limits of a new [`Store`](crate::Store).
    pub const DEFAULT: StoreLimits = StoreLimits {
        memory_size: kiln_abi::HEAP_RESERVATION,
        table_elements: 1_000_000,
        instances: 10_000,
        tables: 16,
        memories: 8,
        exception_memory: 64 << 20,
        gc_heap_size: 64 << 20,
    };
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits::DEFAULT
    }
}

/// Which limit a module exceeded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A memory's initial size exceeds `memory_size`.
    #[error("memory {index} needs {bytes} bytes initially, more than the limit of {limit} bytes (max-memory-size)")]
    MemorySize {
        /// Memory index.
        index: u32,
        /// Its initial size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// A table's initial size exceeds `table_elements`.
    #[error("table {index} needs {elements} elements initially, more than the limit of {limit} (max-table-elements)")]
    TableElements {
        /// Table index.
        index: u32,
        /// Its initial size.
        elements: u64,
        /// The limit.
        limit: u64,
    },
    /// The module defines more tables than `tables`.
    #[error("the module defines {count} tables, more than the limit of {limit} (max-tables)")]
    Tables {
        /// Tables it defines.
        count: u32,
        /// The limit.
        limit: u32,
    },
    /// The module defines more memories than `memories`.
    #[error("the module defines {count} memories, more than the limit of {limit} (max-memories)")]
    Memories {
        /// Memories it defines.
        count: u32,
        /// The limit.
        limit: u32,
    },
    /// The store already holds `instances` live instances.
    #[error("the store already holds {limit} instances, its limit (max-instances)")]
    Instances {
        /// The limit.
        limit: usize,
    },
}
