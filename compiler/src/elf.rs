//! Stage 5: lay out the compiled code and data as an x86-64 ELF shared object, in process (no
//! external linker), ending in the checksum trailer.
//!
//! The object loads with the system `dlopen` and needs no relocation: code calls code
//! PC-relatively (resolved here), and the module header and its tables locate everything by
//! offset from the load base (see `kiln_abi::ModuleHeader`). Its layout, file offsets equal to
//! addresses:
//!
//! ```text
//! read-only   ELF and program headers, .hash, .dynsym, .dynstr, .rodata (header, tables,
//!             metadata), .kiln.image (page-aligned heap images)
//! executable  .text (functions, then trampolines)
//! writable    .dynamic (the dynamic loader writes to it)
//! not loaded  .debug_* (with -D debug-info), .symtab, .strtab, .shstrtab, section headers
//! ```

use cranelift_codegen::binemit::Reloc;
use kiln_abi::{ModuleHeader, ABI_VERSION, HEAP_IMAGE_SECTION, IMAGE_PAGE_SIZE, MODULE_MAGIC, MODULE_SYMBOL};
use object::elf;
use object::write::elf::{FileHeader, ProgramHeader, SectionHeader, Sym, Writer};
use object::Endianness;

use crate::CompileError;

/// One piece of machine code: a function or a trampoline.
pub(crate) struct Code {
    /// Its symbol in `.symtab`.
    pub name: String,
    pub bytes: Vec<u8>,
    pub alignment: u64,
    pub relocs: Vec<CodeReloc>,
}

/// A reference from code to code, resolved when the object is laid out.
pub(crate) struct CodeReloc {
    /// Where in the referring code the value goes.
    pub offset: u32,
    pub kind: Reloc,
    /// Index of the referenced [`Code`].
    pub target: usize,
    pub addend: i64,
}

/// Everything the shared object holds.
pub(crate) struct ObjectParts {
    /// Functions, then trampolines.
    pub code: Vec<Code>,
    /// For each defined function, its index in `code`.
    pub functions: Vec<usize>,
    /// Per type index, the index in `code` of its trampoline, if it has one.
    pub array_trampolines: Vec<Option<usize>>,
    pub host_trampolines: Vec<Option<usize>>,
    /// The serialized metadata.
    pub metadata: Vec<u8>,
    /// The heap images' section, if any memory has one.
    pub heap_image: Option<Vec<u8>>,
    /// DWARF sections, resolved once the code's addresses are known (`-D debug-info`).
    pub debug: Option<crate::debug::DebugSections>,
}

const PAGE: usize = IMAGE_PAGE_SIZE as usize;
const HEADER_TABLES_ALIGN: usize = 8;

/// Lays `parts` out as a shared object and returns its bytes, checksum trailer included.
pub(crate) fn write_shared_object(parts: &ObjectParts) -> Result<Vec<u8>, CompileError> {
    // Code offsets within .text.
    let mut text_len = 0usize;
    let code_offsets: Vec<usize> = parts
        .code
        .iter()
        .map(|code| {
            let offset = text_len.next_multiple_of(code.alignment.max(1) as usize);
            text_len = offset + code.bytes.len();
            offset
        })
        .collect();

    // .rodata: the header, the three tables, the metadata.
    let table_len = |n: usize| n * 8;
    let header_at = 0;
    let functions_at = header_at + ModuleHeader::SIZE;
    let array_at = functions_at + table_len(parts.functions.len());
    let host_at = array_at + table_len(parts.array_trampolines.len());
    let metadata_at = host_at + table_len(parts.host_trampolines.len());
    let rodata_len = metadata_at + parts.metadata.len();

    let mut buffer = Vec::new();
    let mut writer = Writer::new(Endianness::Little, true, &mut buffer);

    // Section indices, in the order their headers are written.
    writer.reserve_null_section_index();
    let _hash_index = writer.reserve_hash_section_index();
    let _dynsym_index = writer.reserve_dynsym_section_index();
    let _dynstr_index = writer.reserve_dynstr_section_index();
    let rodata_name = writer.add_section_name(b".rodata");
    let rodata_index = writer.reserve_section_index();
    let image_name = parts.heap_image.as_ref().map(|_| writer.add_section_name(HEAP_IMAGE_SECTION.as_bytes()));
    if image_name.is_some() {
        writer.reserve_section_index();
    }
    let text_name = writer.add_section_name(b".text");
    let text_index = writer.reserve_section_index();
    let _dynamic_index = writer.reserve_dynamic_section_index();
    let debug_sections = parts.debug.as_ref().map(|d| d.names()).unwrap_or_default();
    let debug_names: Vec<_> = debug_sections
        .iter()
        .map(|name| {
            let id = writer.add_section_name(name.as_bytes());
            writer.reserve_section_index();
            id
        })
        .collect();
    writer.reserve_symtab_section_index();
    writer.reserve_strtab_section_index();
    writer.reserve_shstrtab_section_index();

    // The one dynamic symbol, and the symbol table (every function and trampoline, then the
    // header).
    let module_dynstr = writer.add_dynamic_string(MODULE_SYMBOL.as_bytes());
    writer.reserve_null_dynamic_symbol_index();
    writer.reserve_dynamic_symbol_index();
    writer.reserve_null_symbol_index();
    let code_names: Vec<_> = parts
        .code
        .iter()
        .map(|code| {
            writer.reserve_symbol_index(Some(text_index));
            writer.add_string(code.name.as_bytes())
        })
        .collect();
    writer.reserve_symbol_index(Some(rodata_index));
    let module_str = writer.add_string(MODULE_SYMBOL.as_bytes());

    // File layout (addresses equal file offsets).
    const PROGRAM_HEADERS: u32 = 5;
    writer.reserve_file_header();
    writer.reserve_program_headers(PROGRAM_HEADERS);
    let hash_offset = writer.reserve_hash(1, 2);
    let dynsym_offset = writer.reserve_dynsym();
    let dynstr_offset = writer.reserve_dynstr();
    let rodata_offset = writer.reserve(rodata_len, HEADER_TABLES_ALIGN);
    let image_offset = parts.heap_image.as_ref().map(|image| writer.reserve(image.len(), PAGE));
    let read_only_end = writer.reserved_len();
    writer.reserve_until(read_only_end.next_multiple_of(PAGE));
    let text_offset = writer.reserve(text_len.max(1), PAGE);
    writer.reserve_until(writer.reserved_len().next_multiple_of(PAGE));
    const DYNAMIC_ENTRIES: usize = 8;
    let dynamic_offset = writer.reserve_dynamic(DYNAMIC_ENTRIES);
    let dynamic_end = writer.reserved_len();

    // Code addresses are known: resolve the code's references and the debug information.
    let code_addresses: Vec<u64> = code_offsets.iter().map(|&o| (text_offset + o) as u64).collect();
    let mut text = vec![0u8; text_len];
    for (i, code) in parts.code.iter().enumerate() {
        let at = code_offsets[i];
        text[at..at + code.bytes.len()].copy_from_slice(&code.bytes);
        for reloc in &code.relocs {
            let place = code_addresses[i] + u64::from(reloc.offset);
            let target = code_addresses[reloc.target] as i64 + reloc.addend;
            let value = match reloc.kind {
                Reloc::X86CallPCRel4 | Reloc::X86CallPLTRel4 | Reloc::X86PCRel4 => {
                    i32::try_from(target - place as i64).map_err(|_| internal("a call out of 32-bit range"))?
                }
                other => return Err(internal(&format!("a relocation Kiln never emits in code ({other:?})"))),
            };
            let field = at + reloc.offset as usize;
            text[field..field + 4].copy_from_slice(&value.to_le_bytes());
        }
    }
    let debug: Vec<(&'static str, Vec<u8>)> = match &parts.debug {
        Some(debug) => debug.resolve(&code_addresses),
        None => Vec::new(),
    };
    let debug_offsets: Vec<usize> = debug.iter().map(|(_, bytes)| writer.reserve(bytes.len(), 1)).collect();
    writer.reserve_symtab();
    writer.reserve_strtab();
    writer.reserve_shstrtab();
    writer.reserve_section_headers();

    // The read-only data, with everything located by offset from the base.
    let base = rodata_offset as u64;
    let code_offset = |index: &Option<usize>| index.map_or(0, |i| code_addresses[i]);
    let header = ModuleHeader {
        magic: MODULE_MAGIC,
        abi_version: ABI_VERSION,
        header_size: ModuleHeader::SIZE as u32,
        header_offset: base + header_at as u64,
        metadata_offset: base + metadata_at as u64,
        metadata_len: parts.metadata.len() as u64,
        functions_offset: base + functions_at as u64,
        num_functions: parts.functions.len() as u64,
        array_trampolines_offset: base + array_at as u64,
        host_trampolines_offset: base + host_at as u64,
        num_types: parts.array_trampolines.len() as u64,
        heap_image_offset: image_offset.map_or(0, |o| o as u64),
    };
    let mut rodata = Vec::with_capacity(rodata_len);
    rodata.extend_from_slice(&header.to_bytes());
    for &f in &parts.functions {
        rodata.extend_from_slice(&code_addresses[f].to_le_bytes());
    }
    for table in [&parts.array_trampolines, &parts.host_trampolines] {
        for entry in table.iter() {
            rodata.extend_from_slice(&code_offset(entry).to_le_bytes());
        }
    }
    rodata.extend_from_slice(&parts.metadata);
    debug_assert_eq!(rodata.len(), rodata_len);

    // Write everything in the order it was reserved.
    writer
        .write_file_header(&FileHeader {
            os_abi: elf::ELFOSABI_NONE,
            abi_version: 0,
            e_type: elf::ET_DYN,
            e_machine: elf::EM_X86_64,
            e_entry: 0,
            e_flags: 0,
        })
        .map_err(|e| internal(&e.to_string()))?;
    writer.write_align_program_headers();
    let segment = |p_type, p_flags, offset: usize, len: usize, align: usize| ProgramHeader {
        p_type,
        p_flags,
        p_offset: offset as u64,
        p_vaddr: offset as u64,
        p_paddr: offset as u64,
        p_filesz: len as u64,
        p_memsz: len as u64,
        p_align: align as u64,
    };
    writer.write_program_header(&segment(elf::PT_LOAD, elf::PF_R, 0, read_only_end, PAGE));
    writer.write_program_header(&segment(elf::PT_LOAD, elf::PF_R | elf::PF_X, text_offset, text_len.max(1), PAGE));
    let dynamic_len = dynamic_end - dynamic_offset;
    writer.write_program_header(&segment(elf::PT_LOAD, elf::PF_R | elf::PF_W, dynamic_offset, dynamic_len, PAGE));
    writer.write_program_header(&segment(elf::PT_DYNAMIC, elf::PF_R | elf::PF_W, dynamic_offset, dynamic_len, 8));
    // A non-executable stack.
    writer.write_program_header(&segment(elf::PT_GNU_STACK, elf::PF_R | elf::PF_W, 0, 0, 16));

    writer.write_hash(1, 2, |i| (i == 1).then(|| elf::hash(MODULE_SYMBOL.as_bytes())));
    writer.write_null_dynamic_symbol();
    let header_symbol = |name| Sym {
        name: Some(name),
        section: Some(rodata_index),
        st_info: (elf::STB_GLOBAL << 4) | elf::STT_OBJECT,
        st_other: elf::STV_DEFAULT,
        st_shndx: 0,
        st_value: base + header_at as u64,
        st_size: ModuleHeader::SIZE as u64,
    };
    writer.write_dynamic_symbol(&header_symbol(module_dynstr));
    writer.write_dynstr();
    writer.pad_until(rodata_offset);
    writer.write(&rodata);
    if let (Some(image), Some(offset)) = (&parts.heap_image, image_offset) {
        writer.pad_until(offset);
        writer.write(image);
    }
    writer.pad_until(text_offset);
    writer.write(&text);
    writer.pad_until(dynamic_offset);
    writer.write_align_dynamic();
    for (tag, value) in [
        (elf::DT_HASH, hash_offset as u64),
        (elf::DT_STRTAB, dynstr_offset as u64),
        (elf::DT_SYMTAB, dynsym_offset as u64),
        (elf::DT_STRSZ, writer.dynstr_len() as u64),
        (elf::DT_SYMENT, std::mem::size_of::<elf::Sym64<Endianness>>() as u64),
        // Every reference resolved at load (there are none to resolve): BIND_NOW semantics.
        (elf::DT_FLAGS, u64::from(elf::DF_BIND_NOW)),
        (elf::DT_FLAGS_1, u64::from(elf::DF_1_NOW)),
        (elf::DT_NULL, 0),
    ] {
        writer.write_dynamic(tag, value).map_err(|e| internal(&e.to_string()))?;
    }
    for ((_, bytes), &offset) in debug.iter().zip(&debug_offsets) {
        writer.pad_until(offset);
        writer.write(bytes);
    }
    writer.write_null_symbol();
    for (i, &name) in code_names.iter().enumerate() {
        writer.write_symbol(&Sym {
            name: Some(name),
            section: Some(text_index),
            st_info: (elf::STB_LOCAL << 4) | elf::STT_FUNC,
            st_other: elf::STV_DEFAULT,
            st_shndx: 0,
            st_value: code_addresses[i],
            st_size: parts.code[i].bytes.len() as u64,
        });
    }
    writer.write_symbol(&header_symbol(module_str));
    writer.write_strtab();
    writer.write_shstrtab();

    writer.write_null_section_header();
    writer.write_hash_section_header(hash_offset as u64);
    writer.write_dynsym_section_header(dynsym_offset as u64, 1);
    writer.write_dynstr_section_header(dynstr_offset as u64);
    let progbits = |name, flags: u32, offset: usize, len: usize, align: usize| SectionHeader {
        name: Some(name),
        sh_type: elf::SHT_PROGBITS,
        sh_flags: u64::from(flags),
        sh_addr: if flags & elf::SHF_ALLOC != 0 { offset as u64 } else { 0 },
        sh_offset: offset as u64,
        sh_size: len as u64,
        sh_link: 0,
        sh_info: 0,
        sh_addralign: align as u64,
        sh_entsize: 0,
    };
    writer.write_section_header(&progbits(rodata_name, elf::SHF_ALLOC, rodata_offset, rodata_len, HEADER_TABLES_ALIGN));
    if let (Some(name), Some(image), Some(offset)) = (image_name, &parts.heap_image, image_offset) {
        writer.write_section_header(&progbits(name, elf::SHF_ALLOC, offset, image.len(), PAGE));
    }
    writer.write_section_header(&progbits(text_name, elf::SHF_ALLOC | elf::SHF_EXECINSTR, text_offset, text_len, 16));
    writer.write_dynamic_section_header(dynamic_offset as u64);
    for ((name, (_, bytes)), &offset) in debug_names.iter().zip(&debug).zip(&debug_offsets) {
        writer.write_section_header(&progbits(*name, 0, offset, bytes.len(), 1));
    }
    // Locals: the null symbol and every piece of code; the header's symbol is the one global.
    writer.write_symtab_section_header(1 + parts.code.len() as u32);
    writer.write_strtab_section_header();
    writer.write_shstrtab_section_header();
    debug_assert_eq!(writer.reserved_len(), writer.len());

    let trailer = kiln_abi::checksum_trailer(&buffer);
    buffer.extend_from_slice(&trailer);
    Ok(buffer)
}

fn internal(what: &str) -> CompileError {
    CompileError::Codegen(format!("internal compiler error: {what}"))
}
