//! Lifecycle stage 1, load: check a `.so` is a Kiln module of this ABI version, map its
//! segments (`sys::unix::object`), read its metadata and register its code for trap handling.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_abi::{ModuleHeader, ModuleMetadata, VMOffsets, ABI_VERSION, MODULE_MAGIC, MODULE_SYMBOL};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

use crate::sys::unix::object::{MappedObject, Segment};
use crate::traps::registry::{self, FunctionRange, Registration, TrapTable};
use crate::types;

/// Why a shared object could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error (part of the message, so not also a `source`).
        error: std::io::Error,
    },
    /// The file is not a Kiln module (not ELF, wrong architecture, truncated, no Kiln header).
    #[error("{path} is not a Kiln module: {reason}")]
    NotKiln {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file is a Kiln module of another ABI version.
    #[error("{path} was compiled for Kiln ABI version {found}, this runtime needs version {expected}: recompile it with `kiln compile`")]
    AbiMismatch {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// Ours.
        expected: u32,
    },
    /// The module's metadata is inconsistent.
    #[error("{path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The object's signature is missing or does not verify (see [`Module::load_verified`]).
    #[error(transparent)]
    Signature(#[from] crate::signature::SignatureError),
}

/// A loaded module: its code mapped, its metadata decoded. Cheap to clone.
#[derive(Clone)]
pub struct Module {
    pub(crate) inner: Arc<ModuleInner>,
}

pub(crate) struct ModuleInner {
    pub meta: ModuleMetadata,
    pub offsets: VMOffsets,
    /// Code address of each defined function.
    pub functions: Vec<*const u8>,
    /// Per type index: host-to-wasm trampoline (null if none).
    pub array_trampolines: Vec<*const u8>,
    /// Per type index: wasm-to-host trampoline (null if none).
    pub host_trampolines: Vec<*const u8>,
    /// Per type index: canonical type id.
    pub type_ids: Vec<u32>,
    /// Whether the module declares struct or array types (its instances make GC objects).
    pub uses_gc: bool,
    /// Whether its instances can hold a GC reference in a global, table or element segment of
    /// their own (a collection's roots: such instances are pinned to their store).
    pub holds_references: bool,
    /// Per data segment: whether it starts dropped (active segments baked into the heap image).
    pub initially_dropped: Vec<bool>,
    /// Indices of the active data segments instantiation must copy (not in the heap image).
    pub copied_segments: Vec<usize>,
    /// Per type index: the type with concrete references as canonical ids, shared by the
    /// `Func` handles of the module's functions.
    pub canonical_types: Vec<Arc<kiln_abi::FuncType>>,
    /// Canonical type id → the first type index with that id.
    pub type_index_of_id: std::collections::HashMap<u32, u32>,
    /// Unique in the process (slots remember which module's heap image they hold).
    pub id: u64,
    /// Per defined memory (empty if none has one): its heap image.
    pub images: Vec<Option<ModuleImage>>,
    /// The sealed copy of the module's file, kept when its heap images can be mapped from it
    /// (page-aligned).
    pub image_file: Option<std::fs::File>,
    pub path: PathBuf,
    // Drop order matters: unregister the code, then free the table, then unload the code.
    _registration: Registration,
    _trap_table: Box<TrapTable>,
    _object: MappedObject,
}

/// One defined memory's heap image.
pub(crate) struct ModuleImage {
    /// Its offset in the module's file (used when `image_file` is open).
    pub file_offset: u64,
    /// Its bytes in the loaded object, for copying when it cannot be mapped; valid as long as
    /// the library stays loaded, never written.
    pub in_memory: *const u8,
    /// Length in bytes, a multiple of the page size.
    pub len: usize,
}

impl ModuleInner {
    /// The fields of struct type `index` (which validation made sure it is).
    pub(crate) fn struct_fields(&self, index: u32) -> &[kiln_abi::gc::FieldType] {
        match self.meta.subtypes.get(index as usize).map(|s| &s.composite) {
            Some(kiln_abi::gc::CompositeType::Struct(fields)) => fields,
            _ => unreachable!("validated code only names struct types here"),
        }
    }

    /// The element of array type `index` (which validation made sure it is).
    pub(crate) fn array_element(&self, index: u32) -> kiln_abi::gc::FieldType {
        match self.meta.subtypes.get(index as usize).map(|s| &s.composite) {
            Some(kiln_abi::gc::CompositeType::Array(element)) => *element,
            _ => unreachable!("validated code only names array types here"),
        }
    }
}

// SAFETY: the raw pointers point into the loaded library's immutable code, which lives as long
// as this value and may be read from any thread.
unsafe impl Send for ModuleInner {}
// SAFETY: as above; nothing here is mutated after loading.
unsafe impl Sync for ModuleInner {}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

fn not_kiln(path: &Path, reason: impl Into<String>) -> LoadError {
    LoadError::NotKiln { path: path.to_path_buf(), reason: reason.into() }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> LoadError {
    LoadError::Corrupt { path: path.to_path_buf(), reason: reason.into() }
}

/// Reads the whole file through one descriptor.
fn read_file(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|error| LoadError::Io { path: path.to_path_buf(), error })
}

/// What [`check_file`] learns from a file without loading it.
struct Checked {
    meta: ModuleMetadata,
    /// The header as the file holds it (the loaded one must be the same).
    header: ModuleHeader,
    /// The code offsets of the header's tables: every function's, and each type's trampolines
    /// (0: none). Each lies in an executable segment.
    functions: Vec<u64>,
    array_trampolines: Vec<u64>,
    host_trampolines: Vec<u64>,
    /// Where the heap image section lies in the file (offset and size), if there is one.
    image_section: Option<(u64, u64)>,
    /// The loadable segments, to map.
    segments: Vec<Segment>,
    /// The wasm names of its functions, by function index (see [`function_names`]).
    func_names: std::collections::HashMap<u32, Box<str>>,
}

/// Checks the file before the dynamic loader sees it: an x86-64 ELF shared object whose
/// segments lie inside the file, with nothing that runs at load time (see
/// [`crate::elf_check`]), exporting a Kiln header of our ABI version, ending in a valid
/// checksum trailer; and decodes its metadata from the file (as the loader would see it after
/// relocation), so nothing needs to be loaded to inspect it.
fn check_file(path: &Path, bytes: &[u8]) -> Result<Checked, LoadError> {
    let file = object::File::parse(bytes).map_err(|e| not_kiln(path, format!("not an ELF object ({e})")))?;
    if file.format() != object::BinaryFormat::Elf
        || file.architecture() != object::Architecture::X86_64
        || !file.is_64()
    {
        return Err(not_kiln(path, "not an x86-64 ELF object"));
    }
    if file.kind() != object::ObjectKind::Dynamic {
        return Err(not_kiln(path, "not a shared object"));
    }
    for segment in file.segments() {
        let (offset, size) = segment.file_range();
        if offset.checked_add(size).is_none_or(|end| end > bytes.len() as u64) {
            return Err(not_kiln(path, "truncated: a segment extends past the end of the file"));
        }
    }
    let image = crate::elf_check::nothing_runs_at_load(bytes).map_err(|reason| not_kiln(path, reason))?;
    let symbol = file
        .dynamic_symbols()
        .find(|s| s.name() == Ok(MODULE_SYMBOL))
        .ok_or_else(|| not_kiln(path, format!("no `{MODULE_SYMBOL}` symbol")))?;
    if symbol.kind() != object::SymbolKind::Data || symbol.is_undefined() {
        return Err(not_kiln(path, format!("`{MODULE_SYMBOL}` is not a data object")));
    }
    let header = image
        .bytes_at(symbol.address(), ModuleHeader::SIZE as u64)
        .ok_or_else(|| not_kiln(path, "the module header is not inside a loadable segment"))?;
    if header[ModuleHeader::MAGIC_OFFSET..ModuleHeader::MAGIC_OFFSET + 8] != MODULE_MAGIC {
        return Err(not_kiln(path, format!("`{MODULE_SYMBOL}` does not start with Kiln's magic")));
    }
    let field32 = |offset: usize| u32::from_le_bytes(header[offset..offset + 4].try_into().expect("four bytes"));
    let version = field32(ModuleHeader::VERSION_OFFSET);
    if version != ABI_VERSION {
        return Err(LoadError::AbiMismatch { path: path.to_path_buf(), found: version, expected: ABI_VERSION });
    }
    let header = ModuleHeader::from_bytes(header).expect("the header's bytes were read whole");
    if header.header_size as usize != ModuleHeader::SIZE {
        return Err(corrupt(path, "module header has the wrong size"));
    }
    if header.header_offset != symbol.address() {
        return Err(corrupt(path, "the module header does not know where it is"));
    }
    kiln_abi::verify_checksum_trailer(bytes).map_err(|e| corrupt(path, e.to_string()))?;
    let metadata = image
        .bytes_at(header.metadata_offset, header.metadata_len)
        .ok_or_else(|| corrupt(path, "the metadata lies outside the file"))?;
    let meta = decode_metadata(metadata).map_err(|reason| corrupt(path, reason))?;
    if header.num_functions as usize != meta.functions.len() || header.num_types as usize != meta.types.len() {
        return Err(corrupt(path, "the header's table lengths disagree with the metadata"));
    }
    // Every table entry names code: an offset inside an executable segment (or 0, for a type
    // without that trampoline).
    let table = |offset: u64, count: u64, optional: bool| -> Result<Vec<u64>, LoadError> {
        let bytes = count
            .checked_mul(8)
            .and_then(|len| image.bytes_at(offset, len))
            .ok_or_else(|| corrupt(path, "a code table lies outside the file"))?;
        let entries: Vec<u64> =
            bytes.chunks_exact(8).map(|e| u64::from_le_bytes(e.try_into().expect("eight bytes"))).collect();
        if entries.iter().all(|&e| (optional && e == 0) || image.is_code(e)) {
            Ok(entries)
        } else {
            Err(corrupt(path, "a code table names something that is not code"))
        }
    };
    let functions = table(header.functions_offset, header.num_functions, false)?;
    let array_trampolines = table(header.array_trampolines_offset, header.num_types, true)?;
    let host_trampolines = table(header.host_trampolines_offset, header.num_types, true)?;
    let image_section = file.section_by_name(kiln_abi::HEAP_IMAGE_SECTION).and_then(|section| {
        let (offset, size) = section.file_range()?;
        (section.address() == header.heap_image_offset).then_some((offset, size))
    });
    Ok(Checked {
        meta,
        header,
        functions,
        array_trampolines,
        host_trampolines,
        image_section,
        segments: image.segments().to_vec(),
        func_names: function_names(&file),
    })
}

/// A compiled object read into memory and checked, but not loaded: nothing in it has run, and
/// its metadata (imports, exports, functions, which wasm it was compiled from) can be
/// inspected. [`ObjectFile::load`] then loads exactly these bytes.
pub struct ObjectFile {
    path: PathBuf,
    bytes: Vec<u8>,
    checked: Checked,
}

impl std::fmt::Debug for ObjectFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectFile").field("path", &self.path).finish_non_exhaustive()
    }
}

impl ObjectFile {
    /// Reads the object at `path` through one descriptor and checks it: an x86-64 ELF shared
    /// object of this ABI version whose checksum trailer covers every byte, with nothing that
    /// runs at load time (no `DT_NEEDED`, initialisers, finalisers, text relocations,
    /// executable stack, or relocation types Kiln never emits), and decodable metadata.
    pub fn read(path: impl AsRef<Path>) -> Result<ObjectFile, LoadError> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        let checked = check_file(path, &bytes)?;
        Ok(ObjectFile { path: path.to_path_buf(), bytes, checked })
    }

    /// The object's metadata, read from the file.
    pub fn metadata(&self) -> &ModuleMetadata {
        &self.checked.meta
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the checked bytes, from a sealed memory file: replacing or editing the file
    /// afterwards, or a library search path, changes nothing.
    ///
    /// # Safety
    /// The object's code runs natively when the module is instantiated and called: whoever
    /// could write the file can run any code in this process, and none of the checks proves
    /// otherwise (the checksum detects accidents, not forgeries). The caller must trust the
    /// file's origin: Kiln's compiler made it, and nobody untrusted could change it since. To
    /// load an object of untrusted provenance, check its signature with
    /// [`ObjectFile::load_verified`] instead.
    pub unsafe fn load(self) -> Result<Module, LoadError> {
        // SAFETY: forwarded from the caller.
        unsafe { Module::from_checked(&self.path, &self.bytes, self.checked) }
    }

    /// Loads the checked bytes if the object's signature, `PATH.minisig`, verifies with `key`
    /// (see [`crate::signature_path`]). Safe: the key's holder vouches that the object came
    /// from Kiln's compiler. ([`Module::load_verified`] checks the signature before parsing
    /// anything.)
    pub fn load_verified(self, key: &crate::PublicKey) -> Result<Module, LoadError> {
        crate::signature::verify(&self.path, &self.bytes, key)?;
        // SAFETY: a key the embedder trusts signed these very bytes, vouching for their origin.
        unsafe { self.load() }
    }
}

impl Module {
    /// Loads the Kiln shared object at `path`: [`ObjectFile::read`], then
    /// [`ObjectFile::load`].
    ///
    /// # Safety
    /// As for [`ObjectFile::load`]: the caller must trust the file's origin.
    pub unsafe fn load(path: impl AsRef<Path>) -> Result<Module, LoadError> {
        // SAFETY: forwarded from the caller.
        unsafe { ObjectFile::read(path)?.load() }
    }

    /// Loads the Kiln shared object at `path` if its signature, `PATH.minisig`, verifies with
    /// `key` (see [`crate::signature_path`]): the signature is checked over the file's bytes
    /// before anything in them is parsed, and exactly those bytes are then checked and loaded.
    /// Safe: the key's holder vouches that the object came from Kiln's compiler.
    pub fn load_verified(path: impl AsRef<Path>, key: &crate::PublicKey) -> Result<Module, LoadError> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        crate::signature::verify(path, &bytes, key)?;
        let checked = check_file(path, &bytes)?;
        // SAFETY: a key the embedder trusts signed these very bytes, vouching for their origin.
        unsafe { Module::from_checked(path, &bytes, checked) }
    }

    /// Loads checked bytes (the contents of `path`, which is only named in errors).
    ///
    /// # Safety
    /// As for [`ObjectFile::load`].
    unsafe fn from_checked(path: &Path, bytes: &[u8], checked: Checked) -> Result<Module, LoadError> {
        let Checked {
            meta,
            header,
            functions,
            array_trampolines,
            host_trampolines,
            image_section,
            segments,
            func_names,
        } = checked;
        let io_error = |error| LoadError::Io { path: path.to_path_buf(), error };
        // Mapped from a sealed copy of the checked bytes: whatever happens to the file now, the
        // code that runs is the code that was checked.
        let sealed = crate::sys::unix::object::sealed_memfd(bytes).map_err(io_error)?;
        let object = MappedObject::map(sealed, &segments).map_err(io_error)?;
        // SAFETY: the header lies in a loadable segment (checked in the file), mapped readable.
        let loaded =
            unsafe { std::slice::from_raw_parts(object.base().add(header.header_offset as usize), ModuleHeader::SIZE) };
        if ModuleHeader::from_bytes(loaded).map(|h| h.to_bytes()) != Some(header.to_bytes()) {
            return Err(corrupt(path, "the mapped header differs from the file's"));
        }
        // Everything is located by offset from the object's address 0.
        let base = object.base() as usize;
        let at = |offset: u64| -> *const u8 {
            if offset == 0 {
                std::ptr::null()
            } else {
                base.wrapping_add(offset as usize) as *const u8
            }
        };
        let functions: Vec<*const u8> = functions.iter().map(|&o| at(o)).collect();
        let array_trampolines: Vec<*const u8> = array_trampolines.iter().map(|&o| at(o)).collect();
        let host_trampolines: Vec<*const u8> = host_trampolines.iter().map(|&o| at(o)).collect();

        let mut sites: Vec<(usize, kiln_abi::TrapCode, u32)> = Vec::new();
        let mut calls: Vec<(usize, u32)> = Vec::new();
        let mut handlers: Vec<registry::HandlerEntry> = Vec::new();
        let mut stack_maps: Vec<registry::StackMapEntry> = Vec::new();
        let (mut code_start, mut code_end) = (usize::MAX, 0usize);
        for (info, &code) in meta.functions.iter().zip(&functions) {
            let start = code as usize;
            code_start = code_start.min(start);
            code_end = code_end.max(start.saturating_add(info.code_len as usize));
            sites.extend(info.traps.iter().map(|t| (start + t.offset as usize, t.code, t.wasm_offset)));
            calls.extend(info.calls.iter().map(|c| (start + c.return_offset as usize, c.wasm_offset)));
            handlers.extend(info.handlers.iter().map(|h| registry::HandlerEntry {
                return_address: start + h.return_offset as usize,
                handler: start + h.handler_offset as usize,
                frame_offset: h.frame_offset as usize,
            }));
            stack_maps.extend(info.stack_maps.iter().map(|m| registry::StackMapEntry {
                return_address: start + m.return_offset as usize,
                slots: m.slots.clone().into_boxed_slice(),
            }));
        }
        sites.sort_by_key(|s| s.0);
        calls.sort_by_key(|c| c.0);
        handlers.sort_by_key(|h| h.return_address);
        stack_maps.sort_by_key(|m| m.return_address);
        let mut ranges: Vec<FunctionRange> = meta
            .functions
            .iter()
            .zip(&functions)
            .enumerate()
            .map(|(defined, (info, &code))| {
                let index = meta.num_imported_funcs + defined as u32;
                let start = code as usize;
                FunctionRange {
                    start,
                    end: start + info.code_len as usize,
                    index,
                    name: func_names.get(&index).cloned(),
                }
            })
            .collect();
        ranges.sort_by_key(|f| f.start);
        // SAFETY: the ranges are the code of the library just loaded, which `library` keeps.
        unsafe { crate::profiling::describe_functions(&ranges) };
        let trap_table = Box::new(TrapTable {
            pcs: sites.iter().map(|s| s.0).collect(),
            codes: sites.iter().map(|s| s.1).collect(),
            wasm_offsets: sites.iter().map(|s| s.2).collect(),
            calls,
            functions: ranges,
            handlers,
            stack_maps,
        });
        if code_start == usize::MAX {
            code_start = 0;
        }
        // SAFETY: the table is boxed and stored beside the registration in `ModuleInner`, which
        // drops the registration first.
        let registration = unsafe { registry::register(code_start, code_end, &trap_table) }
            .ok_or_else(|| corrupt(path, "too many modules loaded at once"))?;

        let type_ids = types::canonical_ids(&meta.types, &meta.subtypes, &meta.rec_groups);
        let sealed = object.file();
        let heap_image = at(header.heap_image_offset);
        let (images, image_file) = heap_images(path, &meta, heap_image, image_section, sealed)?;
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let offsets = VMOffsets::new(meta.vm_counts());
        let initially_dropped: Vec<bool> = meta.data.iter().map(|d| in_image(&meta, d)).collect();
        let copied_segments = (0..meta.data.len())
            .filter(|&i| matches!(meta.data[i].mode, kiln_abi::DataMode::Active { .. }) && !initially_dropped[i])
            .collect();
        Ok(Module {
            inner: Arc::new(ModuleInner {
                offsets,
                functions,
                array_trampolines,
                host_trampolines,
                initially_dropped,
                copied_segments,
                canonical_types: meta
                    .types
                    .iter()
                    .map(|ty| Arc::new(types::canonical_func_type(ty, &type_ids)))
                    .collect(),
                type_index_of_id: type_ids.iter().enumerate().rev().map(|(t, &id)| (id, t as u32)).collect(),
                type_ids,
                uses_gc: meta.subtypes.iter().any(|s| s.composite != kiln_abi::gc::CompositeType::Func),
                holds_references: meta.defined_globals.iter().any(|g| crate::types::traced(g.ty.content))
                    || meta.defined_tables.iter().any(|t| crate::types::traced(kiln_abi::ValType::Ref(t.ty.element)))
                    || meta.elements.iter().any(|e| crate::types::traced(kiln_abi::ValType::Ref(e.ty))),
                id,
                images,
                image_file,
                path: path.to_path_buf(),
                meta,
                _registration: registration,
                _trap_table: trap_table,
                _object: object,
            }),
        })
    }

    /// The module's metadata (types, imports, exports, ...).
    pub fn metadata(&self) -> &ModuleMetadata {
        &self.inner.meta
    }

    /// `ty` with this module's concrete type indices replaced by canonical ids.
    pub(crate) fn canonical_val_type(&self, ty: kiln_abi::ValType) -> kiln_abi::ValType {
        types::canonical_val_type(ty, &self.inner.type_ids)
    }

    /// Whether instantiation maps the module's heap images copy-on-write from its file (rather
    /// than copying data segments or the images).
    pub fn maps_heap_image(&self) -> bool {
        self.inner.image_file.is_some()
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

/// The wasm names of the functions of the object `file`, by function index, from its function
/// symbols (`wasm[INDEX]::NAME`, see the compiler's `function_symbol`).
fn function_names(file: &object::File<'_>) -> std::collections::HashMap<u32, Box<str>> {
    file.symbols()
        .filter_map(|symbol| {
            let (index, name) = symbol.name().ok()?.strip_prefix("wasm[")?.split_once("]::")?;
            Some((index.parse().ok()?, Box::from(name)))
        })
        .collect()
}

/// Whether `segment` was applied to a heap image by the compiler (every active segment of a
/// defined memory with an image is).
fn in_image(meta: &ModuleMetadata, segment: &kiln_abi::DataSegment) -> bool {
    let kiln_abi::DataMode::Active { memory, .. } = segment.mode else { return false };
    memory
        .checked_sub(meta.num_imported_memories)
        .and_then(|d| meta.heap_images.get(d as usize))
        .is_some_and(Option::is_some)
}

/// The defined memories' heap images, checked against the image section, and the module's
/// file opened for mapping them when the section is page-aligned in it.
fn heap_images(
    path: &Path,
    meta: &ModuleMetadata,
    heap_image: *const u8,
    section: Option<(u64, u64)>,
    sealed: &std::fs::File,
) -> Result<(Vec<Option<ModuleImage>>, Option<std::fs::File>), LoadError> {
    if meta.heap_images.iter().all(Option::is_none) {
        return Ok((Vec::new(), None));
    }
    let Some((section_offset, section_size)) = section.filter(|_| !heap_image.is_null()) else {
        return Err(corrupt(path, "the heap image section is missing"));
    };
    let page = kiln_abi::IMAGE_PAGE_SIZE;
    let mut images = Vec::with_capacity(meta.heap_images.len());
    let own_memories = &meta.memories[meta.num_imported_memories as usize..];
    for (image, memory) in meta.heap_images.iter().zip(own_memories) {
        let page_size = 1u64.checked_shl(memory.page_size_log2.into()).unwrap_or(0);
        let initial = memory.minimum.saturating_mul(page_size);
        images.push(match image {
            Some(i)
                if i.offset % page == 0
                    && i.len % page == 0
                    && i.len > 0
                    && i.len <= initial.next_multiple_of(page)
                    && i.offset.checked_add(i.len).is_some_and(|end| end <= section_size) =>
            {
                Some(ModuleImage {
                    file_offset: section_offset + i.offset,
                    // SAFETY: inside the image section, which the loader mapped at `heap_image`.
                    in_memory: unsafe { heap_image.add(i.offset as usize) },
                    len: i.len as usize,
                })
            }
            Some(_) => return Err(corrupt(path, "a heap image lies outside its section")),
            None => None,
        });
    }
    // The sealed copy the library was loaded from: its image pages are exactly the checked ones.
    let file = if section_offset % page == 0 {
        Some(sealed.try_clone().map_err(|error| LoadError::Io { path: path.to_path_buf(), error })?)
    } else {
        None
    };
    Ok((images, file))
}

/// Decodes a module's serialized metadata and cross-checks the counts and indices that loading
/// and instantiation index by. Public for the metadata fuzz target.
pub fn decode_metadata(bytes: &[u8]) -> Result<ModuleMetadata, String> {
    let meta: ModuleMetadata = postcard::from_bytes(bytes).map_err(|e| format!("metadata does not decode: {e}"))?;
    check_metadata(&meta)?;
    Ok(meta)
}

fn check_metadata(meta: &ModuleMetadata) -> Result<(), String> {
    let fail = |reason: &str| Err(reason.to_string());
    if meta.func_types.len() != meta.num_imported_funcs as usize + meta.functions.len() {
        return fail("function counts disagree");
    }
    if meta.func_types.iter().any(|&t| t as usize >= meta.types.len()) {
        return fail("function type index out of range");
    }
    // Compiled code and the runtime look up a type's shape by index, and a function's
    // signature in `types`: every index must have both, and function types must be functions.
    let shapes_consistent = meta.subtypes.is_empty()
        || (meta.subtypes.len() == meta.types.len()
            && meta.subtypes.iter().enumerate().all(|(t, s)| s.supertype.is_none_or(|sup| (sup as usize) < t))
            && meta
                .func_types
                .iter()
                .all(|&t| meta.subtypes[t as usize].composite == kiln_abi::gc::CompositeType::Func));
    if !shapes_consistent {
        return fail("type shapes disagree with the type section");
    }
    if (meta.num_imported_memories as usize) > meta.memories.len()
        || (meta.num_imported_globals as usize) + meta.defined_globals.len() != meta.globals.len()
        || (meta.num_imported_tables as usize) + meta.defined_tables.len() != meta.tables.len()
    {
        return fail("import counts disagree");
    }
    let tag_imports = meta.imports.iter().filter(|i| matches!(i.kind, kiln_abi::ImportKind::Tag(_))).count();
    let tag_types_in_range = meta.tags.iter().all(|&t| (t as usize) < meta.types.len())
        && meta
            .imports
            .iter()
            .all(|i| !matches!(i.kind, kiln_abi::ImportKind::Tag(t) if t as usize >= meta.types.len()));
    if tag_imports != meta.num_imported_tags as usize || tag_imports > meta.tags.len() || !tag_types_in_range {
        return fail("tag counts or types out of range");
    }
    // A handler runs code at its offset: it must lie inside its function (its frame offset
    // comes from the same trusted compiler as the code).
    let handlers_in_range = meta.functions.iter().all(|f| {
        f.handlers.iter().all(|h| h.return_offset <= f.code_len && h.handler_offset < f.code_len)
            && f.handlers.windows(2).all(|w| w[0].return_offset < w[1].return_offset)
    });
    // A collector looks stack maps up by return address (the slots it then writes are checked
    // against the guest stack's bounds).
    let stack_maps_in_range = meta.functions.iter().all(|f| {
        f.stack_maps.iter().all(|m| m.return_offset <= f.code_len)
            && f.stack_maps.windows(2).all(|w| w[0].return_offset < w[1].return_offset)
    });
    if !stack_maps_in_range {
        return fail("stack map outside its frame");
    }
    if !handlers_in_range {
        return fail("exception handler outside its function");
    }
    if !const_exprs(meta).all(|(expr, globals)| const_expr_well_formed(meta, expr, globals)) {
        return fail("malformed constant expression");
    }
    let own_memories = meta.memories.len() - meta.num_imported_memories as usize;
    if !meta.heap_images.is_empty() && meta.heap_images.len() != own_memories {
        return fail("heap image count disagrees with the memories");
    }
    let funcs = meta.func_types.len() as u32;
    let in_range = |kind: &kiln_abi::ExportKind| match *kind {
        kiln_abi::ExportKind::Func(i) => i < funcs,
        kiln_abi::ExportKind::Table(i) => (i as usize) < meta.tables.len(),
        kiln_abi::ExportKind::Memory(i) => (i as usize) < meta.memories.len(),
        kiln_abi::ExportKind::Global(i) => (i as usize) < meta.globals.len(),
        kiln_abi::ExportKind::Tag(i) => (i as usize) < meta.tags.len(),
    };
    if !meta.exports.iter().all(|e| in_range(&e.kind)) || meta.start.is_some_and(|s| s >= funcs) {
        return fail("export or start index out of range");
    }
    Ok(())
}

/// Every constant expression of a module (global and table initialisers, element items and
/// segment offsets), each with how many globals it may read: a global's initialiser only those
/// before it, which are set when it runs.
fn const_exprs(meta: &ModuleMetadata) -> impl Iterator<Item = (&kiln_abi::ConstExpr, usize)> {
    use kiln_abi::{DataMode, ElementMode};
    let all = meta.globals.len();
    let imported = meta.num_imported_globals as usize;
    let globals = meta.defined_globals.iter().enumerate().map(move |(i, g)| (&g.init, imported + i));
    let tables = meta.defined_tables.iter().filter_map(|t| t.init.as_ref());
    let elements = meta.elements.iter().flat_map(|e| {
        let offset = match &e.mode {
            ElementMode::Active { offset, .. } => Some(offset),
            _ => None,
        };
        offset.into_iter().chain(&e.items)
    });
    let data = meta.data.iter().filter_map(|d| match &d.mode {
        DataMode::Active { offset, .. } => Some(offset),
        DataMode::Passive => None,
    });
    globals.chain(tables.chain(elements).chain(data).map(move |expr| (expr, all)))
}

/// Whether `expr` leaves exactly one value, never takes more than its stack holds, and names
/// only functions, types of the right kind and the first `globals` globals: what the
/// instantiation's evaluator relies on.
fn const_expr_well_formed(meta: &ModuleMetadata, expr: &[kiln_abi::ConstOp], globals: usize) -> bool {
    use kiln_abi::gc::CompositeType;
    use kiln_abi::ConstOp as Op;
    let is_struct =
        |t: u32| matches!(meta.subtypes.get(t as usize).map(|s| &s.composite), Some(CompositeType::Struct(_)));
    let is_array =
        |t: u32| matches!(meta.subtypes.get(t as usize).map(|s| &s.composite), Some(CompositeType::Array(_)));
    let mut depth: usize = 0;
    for op in expr {
        let (pops, known) = match *op {
            Op::I32Const(_) | Op::I64Const(_) | Op::F32Const(_) | Op::F64Const(_) | Op::V128Const(_) | Op::RefNull => {
                (0, true)
            }
            Op::GlobalGet(g) => (0, (g as usize) < globals),
            Op::RefFunc(f) => (0, (f as usize) < meta.func_types.len()),
            Op::RefI31 | Op::AnyConvertExtern | Op::ExternConvertAny => (1, true),
            Op::I32Add | Op::I32Sub | Op::I32Mul | Op::I64Add | Op::I64Sub | Op::I64Mul => (2, true),
            Op::StructNew(t) => match meta.subtypes.get(t as usize).map(|s| &s.composite) {
                Some(CompositeType::Struct(fields)) => (fields.len(), true),
                _ => (0, false),
            },
            Op::StructNewDefault(t) => (0, is_struct(t)),
            Op::ArrayNew(t) => (2, is_array(t)),
            Op::ArrayNewDefault(t) => (1, is_array(t)),
            Op::ArrayNewFixed(t, n) => (n as usize, is_array(t)),
        };
        if !known || depth < pops {
            return false;
        }
        depth = depth - pops + 1;
    }
    depth == 1
}
