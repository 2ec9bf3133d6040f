//! What the system's dynamic loader would do with a file, checked: nothing in a Kiln object
//! runs at load time, so anything that would is refused. Kiln maps its objects itself
//! (`sys::unix::object`), segment by segment, but keeps them loadable by `dlopen` as plain
//! shared objects, and keeps this check, so a file that would do anything at load time is
//! refused either way.
//!
//! `dlopen` runs a library's initialisers (`DT_INIT`, `DT_INIT_ARRAY`, `DT_PREINIT_ARRAY`),
//! loads its `DT_NEEDED` dependencies (and theirs), applies its relocations (an
//! `R_X86_64_IRELATIVE` calls a resolver function; a symbol relocation binds to whatever the
//! process exports), and may make the stack executable. Kiln's objects have none of that:
//! their dynamic section holds the symbol and hash tables and `BIND_NOW`, and no relocation at
//! all (everything is located by offset from the load base). So the check is a whitelist: any
//! other dynamic tag, any relocation, any other program header is refused, named in the error,
//! and so is a loadable segment that is both writable and executable or has a zero-filled
//! tail. (The one symbol Kiln looks up, `kiln_module`, must be a data object: `load.rs`
//! checks that.)
//!
//! This narrows what a foreign or damaged file can do at load time; it does not make a
//! hostile object safe to run (see `Module::load`'s safety contract).

use object::elf::{self, Dyn64, FileHeader64};
use object::read::elf::{Dyn as _, FileHeader as _, ProgramHeader as _};
use object::LittleEndian as LE;

use crate::sys::unix::mmap::SegmentAccess;
use crate::sys::unix::object::Segment;

/// Dynamic tags a Kiln object may carry.
const ALLOWED_TAGS: &[(u32, &str)] = &[
    (elf::DT_NULL, "DT_NULL"),
    (elf::DT_HASH, "DT_HASH"),
    (elf::DT_GNU_HASH, "DT_GNU_HASH"),
    (elf::DT_STRTAB, "DT_STRTAB"),
    (elf::DT_SYMTAB, "DT_SYMTAB"),
    (elf::DT_STRSZ, "DT_STRSZ"),
    (elf::DT_SYMENT, "DT_SYMENT"),
    (elf::DT_RELA, "DT_RELA"),
    (elf::DT_RELASZ, "DT_RELASZ"),
    (elf::DT_RELAENT, "DT_RELAENT"),
    (elf::DT_RELACOUNT, "DT_RELACOUNT"),
    (elf::DT_FLAGS, "DT_FLAGS"),
    (elf::DT_FLAGS_1, "DT_FLAGS_1"),
    (elf::DT_SONAME, "DT_SONAME"),
    (elf::DT_DEBUG, "DT_DEBUG"),
];

/// Names of the tags refused because they make the loader run or load something.
fn refused_tag_name(tag: u32) -> Option<&'static str> {
    Some(match tag {
        elf::DT_NEEDED => "DT_NEEDED (it would load other libraries)",
        elf::DT_INIT => "DT_INIT (an initialiser)",
        elf::DT_FINI => "DT_FINI (a finaliser)",
        elf::DT_INIT_ARRAY | elf::DT_INIT_ARRAYSZ => "DT_INIT_ARRAY (initialisers)",
        elf::DT_FINI_ARRAY | elf::DT_FINI_ARRAYSZ => "DT_FINI_ARRAY (finalisers)",
        elf::DT_PREINIT_ARRAY | elf::DT_PREINIT_ARRAYSZ => "DT_PREINIT_ARRAY (initialisers)",
        elf::DT_TEXTREL => "DT_TEXTREL (relocations in code)",
        elf::DT_JMPREL | elf::DT_PLTRELSZ | elf::DT_PLTREL => "DT_JMPREL (PLT relocations)",
        elf::DT_REL | elf::DT_RELSZ | elf::DT_RELENT => "DT_REL (relocations Kiln never emits)",
        elf::DT_RPATH | elf::DT_RUNPATH => "DT_RUNPATH (a library search path)",
        elf::DT_AUDIT | elf::DT_DEPAUDIT => "DT_AUDIT (an audit library)",
        _ => return None,
    })
}

/// A checked file as the loader will map it: which file bytes land at which address.
#[derive(Debug)]
pub struct LoadImage<'a> {
    bytes: &'a [u8],
    /// Each loadable segment.
    segments: Vec<Segment>,
}

impl<'a> LoadImage<'a> {
    /// The file bytes the loaded image holds at `address`, if a loadable segment maps all
    /// `size` of them from the file.
    pub fn bytes_at(&self, address: u64, size: u64) -> Option<&'a [u8]> {
        self.segments.iter().find_map(|segment| {
            let within = address.checked_sub(segment.address)?;
            if within.checked_add(size)? > segment.size {
                return None;
            }
            let start = usize::try_from(segment.offset.checked_add(within)?).ok()?;
            self.bytes.get(start..start.checked_add(usize::try_from(size).ok()?)?)
        })
    }

    /// Whether `address` lies in an executable segment's bytes.
    pub fn is_code(&self, address: u64) -> bool {
        self.segments.iter().any(|segment| {
            segment.access == SegmentAccess::ReadExecute
                && address.checked_sub(segment.address).is_some_and(|within| within < segment.size)
        })
    }

    /// The loadable segments, to map.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }
}

/// Checks that loading `bytes` (an ELF file) runs nothing (see the module documentation), and
/// returns the file as the loader will map it.
pub fn nothing_runs_at_load(bytes: &[u8]) -> Result<LoadImage<'_>, String> {
    let header = FileHeader64::<LE>::parse(bytes).map_err(|e| format!("not a 64-bit ELF file ({e})"))?;
    let endian = header.endian().map_err(|e| format!("unreadable ELF header ({e})"))?;
    if header.e_machine(endian) != elf::EM_X86_64 || header.e_type(endian) != elf::ET_DYN {
        return Err("not an x86-64 ELF shared object".into());
    }
    let segments = header.program_headers(endian, bytes).map_err(|e| format!("unreadable program headers ({e})"))?;
    let mut stack_declared = false;
    let mut dynamic = None;
    for segment in segments {
        match segment.p_type(endian) {
            elf::PT_LOAD
            | elf::PT_NOTE
            | elf::PT_GNU_EH_FRAME
            | elf::PT_GNU_RELRO
            | elf::PT_GNU_PROPERTY
            | elf::PT_NULL
            | elf::PT_PHDR => {}
            elf::PT_DYNAMIC => dynamic = Some(segment),
            elf::PT_GNU_STACK => {
                if segment.p_flags(endian) & elf::PF_X != 0 {
                    return Err("it asks for an executable stack".into());
                }
                stack_declared = true;
            }
            elf::PT_INTERP => return Err("it has a program interpreter (an executable, not a Kiln module)".into()),
            elf::PT_TLS => return Err("it has thread-local storage, which Kiln never emits".into()),
            other => return Err(format!("it has a program header of type {other:#x}, which Kiln never emits")),
        }
    }
    if !stack_declared {
        // Without PT_GNU_STACK, the loader may make every thread stack executable.
        return Err("it does not declare a non-executable stack (PT_GNU_STACK)".into());
    }
    let dynamic = dynamic.ok_or("it has no dynamic section")?;
    let entries: &[Dyn64<LE>] = dynamic
        .dynamic(endian, bytes)
        .map_err(|e| format!("unreadable dynamic section ({e})"))?
        .ok_or("it has no dynamic section")?;

    let (mut rela, mut rela_size) = (None, 0u64);
    for entry in entries {
        let tag = entry.d_tag(endian) as u32;
        let value = entry.d_val(endian);
        if entry.d_tag(endian) > u32::MAX as u64 {
            return Err(format!("it has the dynamic tag {:#x}, which Kiln never emits", entry.d_tag(endian)));
        }
        if let Some(name) = refused_tag_name(tag) {
            return Err(format!("it has {name}"));
        }
        if !ALLOWED_TAGS.iter().any(|&(allowed, _)| allowed == tag) {
            return Err(format!("it has the dynamic tag {tag:#x}, which Kiln never emits"));
        }
        match tag {
            elf::DT_NULL => break,
            elf::DT_FLAGS if value & u64::from(elf::DF_TEXTREL | elf::DF_STATIC_TLS) != 0 => {
                return Err("its DT_FLAGS ask for text relocations or static TLS".into());
            }
            elf::DT_RELA => rela = Some(value),
            elf::DT_RELASZ => rela_size = value,
            _ => {}
        }
    }

    // Kiln's objects locate everything by offset: nothing is patched at load time.
    if rela.is_some() && rela_size > 0 {
        return Err("it has dynamic relocations, which Kiln never emits".into());
    }
    let mut loadable = Vec::new();
    for s in segments.iter().filter(|s| s.p_type(endian) == elf::PT_LOAD) {
        if s.p_memsz(endian) != s.p_filesz(endian) {
            return Err("a loadable segment is larger in memory than in the file, which Kiln never emits".into());
        }
        let flags = s.p_flags(endian);
        let access = match (flags & elf::PF_W != 0, flags & elf::PF_X != 0) {
            (false, false) => SegmentAccess::Read,
            (true, false) => SegmentAccess::ReadWrite,
            (false, true) => SegmentAccess::ReadExecute,
            (true, true) => return Err("a loadable segment is both writable and executable".into()),
        };
        loadable.push(Segment {
            address: s.p_vaddr(endian),
            offset: s.p_offset(endian),
            size: s.p_filesz(endian),
            access,
        });
    }
    Ok(LoadImage { bytes, segments: loadable })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_files_are_refused_with_a_reason() {
        assert!(nothing_runs_at_load(b"not an elf file").unwrap_err().contains("ELF"));
        // The test binary itself: an executable (or a PIE with an interpreter and DT_NEEDED).
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let reason = nothing_runs_at_load(&me).unwrap_err();
        assert!(
            reason.contains("interpreter") || reason.contains("DT_NEEDED") || reason.contains("shared object"),
            "{reason}"
        );
    }

    /// A compiled object, with its loadable segments' `p_flags` and `p_memsz` edited by `edit`.
    fn compiled_object_with(edit: impl Fn(&mut u32, &mut u64)) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let so = dir.path().join("m.so");
        let wat = r#"(module (memory 1) (func (export "f") (result i32) (i32.const 1)))"#;
        kiln_compiler::Compiler::new().unwrap().compile_to_file(wat.as_bytes(), &so).unwrap();
        let mut bytes = std::fs::read(&so).unwrap();
        assert!(nothing_runs_at_load(&bytes).is_ok(), "the compiled object passes");
        let header = FileHeader64::<LE>::parse(&bytes[..]).unwrap();
        let (phoff, phnum) = (header.e_phoff.get(LE) as usize, header.e_phnum.get(LE) as usize);
        for i in 0..phnum {
            let at = phoff + i * std::mem::size_of::<elf::ProgramHeader64<LE>>();
            let field = |offset: usize, len: usize| at + offset..at + offset + len;
            if u32::from_le_bytes(bytes[field(0, 4)].try_into().unwrap()) != elf::PT_LOAD {
                continue;
            }
            let mut flags = u32::from_le_bytes(bytes[field(4, 4)].try_into().unwrap());
            let mut memsz = u64::from_le_bytes(bytes[field(40, 8)].try_into().unwrap());
            edit(&mut flags, &mut memsz);
            bytes[field(4, 4)].copy_from_slice(&flags.to_le_bytes());
            bytes[field(40, 8)].copy_from_slice(&memsz.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn segments_both_writable_and_executable_or_with_zero_filled_tails_are_refused() {
        let writable_code = compiled_object_with(|flags, _| {
            if *flags & elf::PF_X != 0 {
                *flags |= elf::PF_W;
            }
        });
        let reason = nothing_runs_at_load(&writable_code).unwrap_err();
        assert!(reason.contains("both writable and executable"), "{reason}");
        let tail = compiled_object_with(|_, memsz| *memsz += 4096);
        let reason = nothing_runs_at_load(&tail).unwrap_err();
        assert!(reason.contains("larger in memory than in the file"), "{reason}");
    }
}
