//! Lifecycle stage 3, instantiate: take a slot, fill in the VM context, link the imports,
//! initialise memories, tables and globals, apply the segments, run the start function.

use std::any::Any;
use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use kiln_abi::{
    DataMode, ElementMode, ImportKind, MemoryType, ModuleMetadata, TableType, TrapCode, VMContextHeader, VMFuncRef,
    VMGlobalDefinition, VMMemoryDefinition, VMMemoryImport, VMTableDefinition, VMTagDefinition, ValType,
};

use super::const_expr::eval_const;
use super::Instance;
use crate::externs::{holds_references, Extern};
use crate::func::{Func, FuncKind};
use crate::limits::{LimitError, StoreLimits};
use crate::load::Module;
use crate::region::{ImageSource, RegionInner};
use crate::store::Store;
use crate::trap::Trap;
use crate::vm::instance::{InstanceInner, TablePlacement};
use crate::vm::storage::{TableStorage, MAX_TABLE_ELEMENTS};
use crate::vm::store::{StoreBusy, StoreInner};

/// Why instantiation failed.
#[derive(Debug, thiserror::Error)]
pub enum InstantiationError {
    /// Wrong number of imports.
    #[error("the module has {expected} imports but {given} were provided")]
    ImportCount {
        /// Declared imports.
        expected: usize,
        /// Provided.
        given: usize,
    },
    /// An import does not match its declaration ("unlinkable" in the spec).
    #[error("incompatible import type for `{module}::{name}`: {reason}")]
    Unlinkable {
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
        /// What does not match.
        reason: String,
    },
    /// Every slot of the region is in use.
    #[error("no free slot in the region")]
    NoFreeSlot,
    /// The module needs more than a slot offers, or something Kiln does not support yet.
    #[error("the module cannot be instantiated here: {0}")]
    Unsupported(String),
    /// The instance is still referenced elsewhere.
    #[error("the instance is still in use")]
    InUse,
    /// The module asks for more than the store's limits allow.
    #[error("the module exceeds a resource limit: {0}")]
    Limit(#[from] LimitError),
    /// The store is running a call (instantiation needs it idle, as it writes to imports).
    #[error(transparent)]
    Busy(#[from] StoreBusy),
    /// Mapping memory failed.
    #[error("memory mapping failed: {0}")]
    Io(#[from] std::io::Error),
    /// A segment was out of bounds or the start function trapped.
    #[error("{0}")]
    Trap(Trap),
}

fn unlinkable(meta: &ModuleMetadata, index: usize, reason: impl Into<String>) -> InstantiationError {
    let import = &meta.imports[index];
    InstantiationError::Unlinkable { module: import.module.clone(), name: import.name.clone(), reason: reason.into() }
}

/// Limits subtyping: the provided `(min, max)` must fit inside the declared one.
fn limits_match(actual_min: u64, actual_max: Option<u64>, min: u64, max: Option<u64>) -> bool {
    actual_min >= min
        && match max {
            None => true,
            Some(max) => actual_max.is_some_and(|m| m <= max),
        }
}

fn memory_matches(actual: &MemoryType, current_pages: u64, declared: &MemoryType) -> bool {
    actual.memory64 == declared.memory64
        && actual.shared == declared.shared
        && actual.page_size_log2 == declared.page_size_log2
        && limits_match(current_pages, actual.maximum, declared.minimum, declared.maximum)
}

fn table_matches(actual: &TableType, current: u64, declared: &TableType) -> bool {
    actual.element == declared.element
        && actual.table64 == declared.table64
        && limits_match(current, actual.maximum, declared.minimum, declared.maximum)
}

pub(super) fn instantiate(
    region: &RegionInner,
    store: &Store,
    module: &Module,
    imports: &[Extern],
) -> Result<Instance, InstantiationError> {
    let m = &module.inner;
    let meta = &m.meta;
    let offsets = &m.offsets;
    if imports.len() != meta.imports.len() {
        return Err(InstantiationError::ImportCount { expected: meta.imports.len(), given: imports.len() });
    }
    if offsets.size as usize > region.layout.vmctx_size {
        return Err(InstantiationError::Unsupported(format!(
            "its VM context needs {} bytes, the region's slots hold {}",
            offsets.size, region.layout.vmctx_size
        )));
    }
    let limits = &store.root.inner.resource_limits;
    let defined_memories = meta.memories.len() as u32 - meta.num_imported_memories;
    if defined_memories > limits.memories {
        return Err(LimitError::Memories { count: defined_memories, limit: limits.memories }.into());
    }
    let defined_tables = meta.defined_tables.len() as u32;
    if defined_tables > limits.tables {
        return Err(LimitError::Tables { count: defined_tables, limit: limits.tables }.into());
    }
    // Check every import before touching a slot.
    for (i, (import, provided)) in meta.imports.iter().zip(imports).enumerate() {
        match (&import.kind, provided) {
            (ImportKind::Func(t), Extern::Func(f)) => {
                // A function of a declared subtype may stand in for its supertype (every
                // reference is a word, so the calling convention is the same).
                if !crate::types::is_subtype_id(f.type_id, module.inner.type_ids[*t as usize]) {
                    return Err(unlinkable(meta, i, "function type mismatch"));
                }
            }
            (ImportKind::Memory(declared), Extern::Memory(mem)) => {
                if !memory_matches(&mem.ty, mem.size_pages(), declared) {
                    return Err(unlinkable(meta, i, "memory limits or flags do not match"));
                }
            }
            (ImportKind::Table(declared), Extern::Table(table)) => {
                let mut declared = *declared;
                if let ValType::Ref(r) = module.canonical_val_type(ValType::Ref(declared.element)) {
                    declared.element = r;
                }
                if !table_matches(&table.ty, table.size(), &declared) {
                    return Err(unlinkable(meta, i, "table type or limits do not match"));
                }
            }
            (ImportKind::Global(declared), Extern::Global(global)) => {
                let expected = module.canonical_val_type(declared.content);
                let fits = if declared.mutable {
                    global.ty.mutable && global.ty.content == expected
                } else {
                    !global.ty.mutable && crate::types::is_subtype(global.ty.content, expected)
                };
                if !fits {
                    return Err(unlinkable(meta, i, "global type or mutability does not match"));
                }
            }
            (ImportKind::Tag(t), Extern::Tag(tag)) => {
                // Tags match when their types are the same (canonical) type.
                if tag.type_id != module.inner.type_ids[*t as usize] {
                    return Err(unlinkable(meta, i, "tag type mismatch"));
                }
            }
            (_, other) => {
                return Err(unlinkable(meta, i, format!("expected a different kind, got a {}", other.kind_name())));
            }
        }
        let shared_memory = matches!(provided, Extern::Memory(mem) if mem.ty.shared);
        if let Some(owner_store) = provided.store() {
            if !Arc::ptr_eq(owner_store, &store.root.inner) && !shared_memory {
                return Err(unlinkable(meta, i, "it belongs to another store"));
            }
        }
    }

    let own_memory_lengths = meta.memories[meta.num_imported_memories as usize..]
        .iter()
        .enumerate()
        .map(|(d, ty)| initial_length(ty, meta.num_imported_memories + d as u32, limits))
        .collect::<Result<Vec<_>, _>>()?;
    for (d, def) in meta.defined_tables.iter().enumerate() {
        if def.ty.minimum > limits.table_elements {
            let index = meta.num_imported_tables + d as u32;
            return Err(
                LimitError::TableElements { index, elements: def.ty.minimum, limit: limits.table_elements }.into()
            );
        }
    }
    let counted = InstanceCount::add(&store.root.inner)?;
    let mut slot = region.take_slot(m.id).ok_or(InstantiationError::NoFreeSlot)?;
    // The first defined memory lives in the slot's heap, any further ones in reservations the
    // slot keeps between tenants; each starts with its heap image, mapped copy-on-write from
    // the module's file (or copied when the file cannot be mapped).
    for (d, &length) in own_memory_lengths.iter().enumerate() {
        let image = m.images.get(d).and_then(Option::as_ref);
        let source = image.zip(m.image_file.as_ref()).map(|(image, file)| ImageSource {
            id: (m.id, d as u32),
            file,
            offset: image.file_offset,
            len: image.len,
        });
        let prepared = match d {
            0 => slot.prepare_heap(source.as_ref(), length).map(|()| slot.heap()),
            _ => slot.prepare_extra_heap(d - 1, source.as_ref(), length),
        };
        let base = match prepared {
            Ok(base) => base,
            Err(err) => {
                slot.retire();
                return Err(err.into());
            }
        };
        if let (Some(image), None) = (image, &source) {
            // SAFETY: the image lies in the loaded object (see `Module::load`) and the heap's
            // first `length >= image.len` bytes were just made accessible.
            unsafe { std::ptr::copy_nonoverlapping(image.in_memory, base, image.len) };
        }
    }
    let vmctx = slot.vmctx();

    // Own tables go in the slot's table area, which they share equally; a table whose initial
    // size exceeds its share gets a reservation of its own.
    let mut tables = Vec::new();
    let mut table_placements = Vec::with_capacity(meta.defined_tables.len());
    let mut next_element = 0usize;
    let share = slot.table_capacity() / meta.defined_tables.len().max(1);
    for def in &meta.defined_tables {
        let wanted = def.ty.maximum.unwrap_or(u64::MAX).min(limits.table_elements).min(MAX_TABLE_ELEMENTS) as usize;
        if (def.ty.minimum as usize) <= share.min(wanted) {
            let capacity = wanted.min(share);
            table_placements.push(TablePlacement::Slot { start: next_element, capacity });
            next_element += capacity;
        } else {
            table_placements.push(TablePlacement::Own(tables.len()));
            tables.push(TableStorage::new(&def.ty, wanted as u64, 0)?);
        }
    }

    // A warm slot hands over the module handle it kept (see `FreeSlot::module`).
    let module = slot.take_module().unwrap_or_else(|| module.clone());
    let inner = Arc::new(InstanceInner {
        module: ManuallyDrop::new(module),
        store: store.root.inner.clone(),
        slot,
        vmctx,
        tables,
        table_placements,
        dropped_data: RefCell::new(m.initially_dropped.clone()),
        elements: RefCell::new(vec![None; meta.elements.len()]),
        imports: (!imports.is_empty()).then(|| {
            Box::new(imports.iter().map(Extern::detached).collect::<Vec<Extern>>()) as Box<dyn Any + Send + Sync>
        }),
        pinned: AtomicBool::new(false),
    });
    // From here on, dropping `inner` tears the slot down and uncounts it (see teardown.rs).
    counted.transfer();
    let instance = Instance { inner, root: store.root.clone() };
    // Its functions may end up where it cannot see them (an imported table or global, or an
    // instance it calls): it must then live as long as the store. Pinned before anything runs,
    // because a failed instantiation keeps what its segments already wrote.
    // So must an instance whose funcrefs may be stored in GC objects, which live as long as
    // the store, and one that can hold GC references of its own: a collection finds those
    // among the pinned instances.
    if m.uses_gc || m.holds_references || imports.iter().any(may_carry_its_references_away) {
        store.root.pin(&instance.inner);
    }
    // Segments write into imported tables and memories: the store must be idle and ours.
    store.root.inner.access(|_| initialise(&instance, imports, &own_memory_lengths))??;
    start(&instance)?;
    Ok(instance)
}

/// Whether, through this import, the importing instance's function references can end up held
/// by something other than itself (and so must not die with its handles).
fn may_carry_its_references_away(ext: &Extern) -> bool {
    match ext {
        Extern::Func(f) => f.wasm().is_some(),
        Extern::Table(t) => holds_references(ValType::Ref(t.ty.element)),
        Extern::Global(g) => g.ty.mutable && holds_references(g.ty.content),
        Extern::Memory(_) | Extern::Tag(_) => false,
    }
}

/// Counts an instance against its store's limit until the instance itself takes over the
/// count (its teardown uncounts it), or uncounts it if instantiation fails before that.
struct InstanceCount<'a> {
    store: Option<&'a StoreInner>,
}

impl<'a> InstanceCount<'a> {
    fn add(store: &'a StoreInner) -> Result<InstanceCount<'a>, LimitError> {
        if store.add_instance() {
            Ok(InstanceCount { store: Some(store) })
        } else {
            Err(LimitError::Instances { limit: store.resource_limits.instances })
        }
    }

    fn transfer(mut self) {
        self.store = None;
    }
}

impl Drop for InstanceCount<'_> {
    fn drop(&mut self) {
        if let Some(store) = self.store {
            store.remove_instance();
        }
    }
}

/// Writes a value of type `T` into the VM context.
///
/// # Safety
/// `offset` must be a field of type `T` in this instance's VM context.
unsafe fn write<T>(inner: &InstanceInner, offset: u32, value: T) {
    // SAFETY: forwarded from the caller; the VM context area is mapped read-write.
    unsafe { inner.vm_field::<T>(offset).write(value) }
}

/// Fills in the VM context, links `imports` (matched against the module's) and applies
/// segments. `own_memory_lengths`: the initial byte length of each defined memory, as prepared
/// in the slot.
fn initialise(instance: &Instance, imports: &[Extern], own_memory_lengths: &[usize]) -> Result<(), InstantiationError> {
    let inner = &*instance.inner;
    let m = &inner.module.inner;
    let meta = &m.meta;
    let o = &m.offsets;
    let trap = |code| InstantiationError::Trap(Trap::wasm(code));
    if m.uses_gc {
        // Inside the store's access: the heap's base and bounds go in its runtime limits.
        inner.store.ensure_gc_heap()?;
    }

    // Every `write` below: offsets come from this module's VMOffsets and the types are the ones
    // the ABI defines for those fields.
    // SAFETY: as just said; the header sits at offset 0.
    unsafe {
        write(
            inner,
            0,
            VMContextHeader {
                runtime_limits: inner.store.limits_ptr(),
                builtins: crate::vm::libcalls::builtins(),
                instance: Arc::as_ptr(&instance.inner) as *mut u8,
                _reserved: 0,
            },
        );
        for (t, &id) in m.type_ids.iter().enumerate() {
            write(inner, o.type_id(t as u32), id);
        }
    }

    // Imports, in import order within each index space.
    let (mut func, mut memory, mut table, mut global, mut tag) = (0u32, 0u32, 0u32, 0u32, 0u32);
    for (import, provided) in meta.imports.iter().zip(imports) {
        // SAFETY: see above.
        unsafe {
            match (&import.kind, provided) {
                (ImportKind::Func(t), Extern::Func(f)) => {
                    let home = inner.vmctx;
                    let funcref = match &f.kind {
                        // A copy of the exporter's, which now lives in this VM context.
                        FuncKind::Wasm(w) => VMFuncRef { home, ..*w.funcref },
                        FuncKind::Host(host) => VMFuncRef {
                            code: m.host_trampolines[*t as usize],
                            vmctx: host.vmctx(),
                            type_id: f.type_id,
                            _pad: 0,
                            home,
                        },
                    };
                    write(inner, o.func_ref(func), funcref);
                    func += 1;
                }
                (ImportKind::Memory(_), Extern::Memory(mem)) => {
                    write(
                        inner,
                        o.memory(memory),
                        VMMemoryImport {
                            base: (*mem.definition).base,
                            definition: mem.definition,
                            dirty_bias: (*mem.definition).dirty_bias,
                        },
                    );
                    memory += 1;
                }
                (ImportKind::Table(_), Extern::Table(t)) => {
                    write(inner, o.table(table), t.definition);
                    table += 1;
                }
                (ImportKind::Global(_), Extern::Global(g)) => {
                    write(inner, o.global(global), g.definition);
                    global += 1;
                }
                (ImportKind::Tag(_), Extern::Tag(t)) => {
                    write(inner, o.tag(tag), t.definition);
                    tag += 1;
                }
                _ => unreachable!("import kinds were checked before taking a slot"),
            }
        }
    }

    // Own tags: each definition's address is the tag's identity.
    for (d, &type_index) in meta.tags[meta.num_imported_tags as usize..].iter().enumerate() {
        let def_offset = o.defined_tag(d as u32);
        // SAFETY: see above.
        unsafe {
            write(inner, def_offset, VMTagDefinition { type_id: m.type_ids[type_index as usize], _pad: 0 });
            write(inner, o.tag(meta.num_imported_tags + d as u32), inner.vm_field::<VMTagDefinition>(def_offset));
        }
    }

    // Own functions.
    for (i, &code) in m.functions.iter().enumerate() {
        let index = meta.num_imported_funcs + i as u32;
        let type_index = meta.func_types[index as usize];
        // SAFETY: see above.
        unsafe {
            let type_id = m.type_ids[type_index as usize];
            write(
                inner,
                o.func_ref(index),
                VMFuncRef { code, vmctx: inner.vmctx, type_id, _pad: 0, home: inner.vmctx },
            );
        }
    }

    // Own memories: the first in the slot's heap, the others in the slot's extra heaps (all
    // prepared before).
    for (d, (ty, &length)) in
        meta.memories[meta.num_imported_memories as usize..].iter().zip(own_memory_lengths).enumerate()
    {
        let page = 1u64 << ty.page_size_log2;
        let length = length as u64;
        let cap = crate::vm::storage::memory_cap(ty, inner.store.resource_limits.memory_size);
        let maximum = ty.maximum.map_or(cap, |mx| mx.saturating_mul(page).min(cap));
        let (heap, dirty_bias) = if d == 0 {
            (inner.slot.heap(), inner.slot.heap_dirty_bias())
        } else {
            (inner.slot.extra_heap(d - 1), inner.slot.extra_heap_dirty_bias(d - 1))
        };
        let index = meta.num_imported_memories + d as u32;
        let def_offset = o.defined_memory(d as u32);
        // SAFETY: see above.
        unsafe {
            write(
                inner,
                def_offset,
                VMMemoryDefinition { base: heap, current_length: length, maximum_length: maximum, dirty_bias },
            );
            write(
                inner,
                o.memory(index),
                VMMemoryImport { base: heap, definition: inner.vm_field(def_offset), dirty_bias },
            );
        }
    }

    // Own globals, in order (an initialiser may read imported and earlier globals).
    for (d, def) in meta.defined_globals.iter().enumerate() {
        let value = eval_const(inner, &def.init, def.ty.content).map_err(trap)?;
        let offset = o.defined_global(d as u32);
        // SAFETY: see above.
        unsafe {
            write(inner, offset, VMGlobalDefinition { storage: value.to_le_bytes() });
            write(inner, o.global(meta.num_imported_globals + d as u32), inner.vm_field::<VMGlobalDefinition>(offset));
        }
    }

    // Own tables (their elements start zeroed: fresh or wiped at the last teardown).
    for (d, (def, placement)) in meta.defined_tables.iter().zip(&inner.table_placements).enumerate() {
        let index = meta.num_imported_tables + d as u32;
        let definition: *mut VMTableDefinition = match *placement {
            TablePlacement::Slot { start, capacity } => {
                let offset = o.defined_table(d as u32);
                // SAFETY: see above; the elements lie in the slot's table area.
                unsafe {
                    write(
                        inner,
                        offset,
                        VMTableDefinition {
                            // SAFETY: `start + capacity` is within the table area.
                            base: inner.slot.tables().add(start),
                            current_elements: def.ty.minimum,
                            maximum_elements: capacity as u64,
                        },
                    );
                }
                inner.vm_field(offset)
            }
            TablePlacement::Own(i) => inner.tables[i].definition_ptr(),
        };
        if let Some(init) = &def.init {
            let value = eval_const(inner, init, ValType::Ref(def.ty.element)).map_err(trap)? as usize;
            // SAFETY: the table holds `minimum` accessible elements.
            unsafe { std::slice::from_raw_parts_mut((*definition).base, def.ty.minimum as usize) }.fill(value);
        }
        // SAFETY: see above.
        unsafe { write(inner, o.table(index), definition) };
    }

    // Element segments: evaluate all, apply the active ones in order.
    {
        let mut elements = inner.elements.borrow_mut();
        for (i, segment) in meta.elements.iter().enumerate() {
            let value = |e: &kiln_abi::ConstExpr| eval_const(inner, e, ValType::Ref(segment.ty)).map(|v| v as usize);
            match &segment.mode {
                ElementMode::Passive => {
                    elements[i] = Some(segment.items.iter().map(value).collect::<Result<_, _>>().map_err(trap)?)
                }
                ElementMode::Declared => {}
                ElementMode::Active { table, offset } => {
                    let start = if meta.tables[*table as usize].table64 {
                        eval_const(inner, offset, ValType::I64).map_err(trap)? as u64
                    } else {
                        eval_const(inner, offset, ValType::I32).map_err(trap)? as u32 as u64
                    };
                    // SAFETY: written above (own) or at import.
                    let def = unsafe { &*(*inner.vm_field::<*mut VMTableDefinition>(o.table(*table))) };
                    if start.checked_add(segment.items.len() as u64).is_none_or(|end| end > def.current_elements) {
                        return Err(trap(TrapCode::TableAccessOutOfBounds));
                    }
                    // SAFETY: bounds checked against the table's current size.
                    let slots =
                        unsafe { std::slice::from_raw_parts_mut(def.base.add(start as usize), segment.items.len()) };
                    for (slot, item) in slots.iter_mut().zip(&segment.items) {
                        *slot = value(item).map_err(trap)?;
                    }
                }
            }
        }
    }

    // Data segments, in order.
    {
        let mut dropped = inner.dropped_data.borrow_mut();
        // Segments already in the heap image start out dropped (see `Module::load`); only the
        // others are applied here.
        for &i in &inner.module.inner.copied_segments {
            let segment = &meta.data[i];
            let DataMode::Active { memory, offset } = &segment.mode else { continue };
            let ty = meta.memories[*memory as usize];
            let start =
                eval_const(inner, offset, if ty.memory64 { ValType::I64 } else { ValType::I32 }).map_err(trap)?;
            let start = if ty.memory64 { start as u64 } else { start as u32 as u64 };
            // SAFETY: written above (own) or at import.
            let import = unsafe { &*inner.vm_field::<VMMemoryImport>(o.memory(*memory)) };
            // SAFETY: as above.
            let def = unsafe { &*import.definition };
            if start.checked_add(segment.bytes.len() as u64).is_none_or(|end| end > def.current_length) {
                return Err(trap(TrapCode::HeapOutOfBounds));
            }
            // SAFETY: bounds checked against the memory's current size.
            let dst = unsafe { def.base.add(start as usize) };
            // SAFETY: a live definition; the range is checked above.
            unsafe { crate::dirty::mark(def, start as usize, segment.bytes.len()) };
            if ty.shared {
                // Other stores' threads may be using it: write as atomics do.
                for (k, &byte) in segment.bytes.iter().enumerate() {
                    // SAFETY: in bounds (checked above); Rust accesses shared memories atomically.
                    unsafe { std::sync::atomic::AtomicU8::from_ptr(dst.add(k)) }
                        .store(byte, std::sync::atomic::Ordering::Relaxed);
                }
            } else {
                // SAFETY: in bounds; the store is idle and ours, and no other store reaches an
                // unshared memory.
                unsafe { std::ptr::copy_nonoverlapping(segment.bytes.as_ptr(), dst, segment.bytes.len()) };
            }
            dropped[i] = true;
        }
    }

    Ok(())
}

/// Runs the start function, if the module has one.
fn start(instance: &Instance) -> Result<(), InstantiationError> {
    let Some(start) = instance.inner.module.inner.meta.start else { return Ok(()) };
    let func = Func::of_instance(&instance.inner, start, Some(instance.root.clone()));
    func.call(&[]).map_err(|e| match e {
        crate::CallError::Trap(trap) => InstantiationError::Trap(trap),
        other => InstantiationError::Unsupported(other.to_string()),
    })?;
    Ok(())
}

/// Memory `index`'s initial size in bytes, if Kiln can hold it and the limits allow it.
fn initial_length(ty: &MemoryType, index: u32, limits: &StoreLimits) -> Result<usize, InstantiationError> {
    let bytes = ty
        .minimum
        .checked_mul(1u64 << ty.page_size_log2)
        .filter(|&l| l <= kiln_abi::HEAP_RESERVATION)
        .ok_or_else(|| InstantiationError::Unsupported("initial memory larger than 4 GiB".into()))?;
    if bytes > limits.memory_size {
        return Err(LimitError::MemorySize { index, bytes, limit: limits.memory_size }.into());
    }
    Ok(bytes as usize)
}
