//! DWARF line information for compiled code (`Compiler::set_debug_info`): when a module carries
//! DWARF of its own (C, C++ or Rust built with `-g`), each run of native code is mapped to the
//! source line its wasm instruction came from, so `addr2line`, `objdump -dl` and `gdb` on the
//! compiled object show the guest's source. The wasm's DWARF is the guest's: anything malformed
//! in it is skipped, never an error or a panic.

use std::collections::HashMap;

use gimli::write::{
    Address, AttributeValue, DwarfUnit, EndianVec, LineProgram, LineString, Range, RangeList, RelocateWriter,
    Relocation, RelocationTarget, Sections,
};
use gimli::{EndianSlice, LittleEndian};

/// The line table of a module's own DWARF, by code-section offset.
pub(crate) struct SourceLines {
    /// Source paths, indexed by `Row::file`.
    files: Vec<String>,
    /// Rows sorted by address; an `end` row closes the range before it.
    rows: Vec<Row>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Row {
    /// Offset from the start of the code section's contents (DWARF addresses in wasm).
    address: u64,
    file: u32,
    line: u64,
    column: u64,
    end: bool,
}

/// Where the source of one run of native code is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SourceLocation {
    file: u32,
    line: u64,
    column: u64,
}

impl SourceLines {
    /// The line table of the module's `.debug_*` custom sections, if they hold one.
    pub fn parse(sections: &HashMap<&str, &[u8]>) -> Option<SourceLines> {
        let load = |id: gimli::SectionId| -> Result<EndianSlice<'_, LittleEndian>, gimli::Error> {
            Ok(EndianSlice::new(sections.get(id.name()).copied().unwrap_or(&[]), LittleEndian))
        };
        let dwarf = gimli::Dwarf::load(load).ok()?;
        let mut files: Vec<String> = Vec::new();
        let mut file_ids: HashMap<String, u32> = HashMap::new();
        let mut rows = Vec::new();
        let mut units = dwarf.units();
        while let Ok(Some(header)) = units.next() {
            let Ok(unit) = dwarf.unit(header) else { continue };
            let Some(program) = unit.line_program.clone() else { continue };
            let comp_dir = unit.comp_dir.map(|d| d.to_string_lossy().into_owned());
            let mut sequence: Vec<Row> = Vec::new();
            let mut program_rows = program.rows();
            while let Ok(Some((header, row))) = program_rows.next_row() {
                let file = row.file(header).map(|entry| {
                    let name = dwarf.attr_string(&unit, entry.path_name()).map(|s| s.to_string_lossy().into_owned());
                    let dir = entry
                        .directory(header)
                        .and_then(|d| dwarf.attr_string(&unit, d).ok())
                        .map(|s| s.to_string_lossy().into_owned())
                        .or_else(|| comp_dir.clone());
                    match (dir, name.unwrap_or_default()) {
                        (_, name) if name.starts_with('/') => name,
                        (Some(dir), name) if !dir.is_empty() => format!("{}/{name}", dir.trim_end_matches('/')),
                        (_, name) => name,
                    }
                });
                let file = match file {
                    Some(path) if !path.is_empty() && !path.contains('\0') => {
                        let next = files.len() as u32;
                        *file_ids.entry(path.clone()).or_insert_with(|| {
                            files.push(path);
                            next
                        })
                    }
                    _ => u32::MAX,
                };
                // Clamped, so the writer's line and column arithmetic cannot overflow.
                let column = match row.column() {
                    gimli::ColumnType::LeftEdge => 0,
                    gimli::ColumnType::Column(c) => c.get().min(u32::MAX.into()),
                };
                let line = row.line().map_or(0, |l| l.get().min(u32::MAX.into()));
                sequence.push(Row { address: row.address(), file, line, column, end: row.end_sequence() });
                if row.end_sequence() {
                    // A sequence at offset 0 (or at the tombstone wasm-ld writes for code it
                    // dropped) describes no code: no function starts at the section's start.
                    let first = sequence.first().map_or(0, |r| r.address);
                    if first != 0 && first < 0xffff_fff0 {
                        rows.append(&mut sequence);
                    }
                    sequence.clear();
                }
            }
        }
        if rows.is_empty() {
            return None;
        }
        // At one address an end comes before the row that starts the next sequence there.
        rows.sort_by_key(|r| (r.address, !r.end));
        Some(SourceLines { files, rows })
    }

    /// The source of the instruction at `address` (a code-section offset).
    fn at(&self, address: u64) -> Option<SourceLocation> {
        let i = self.rows.partition_point(|r| r.address <= address).checked_sub(1)?;
        let row = self.rows[i];
        (!row.end && row.file != u32::MAX && row.line != 0).then_some(SourceLocation {
            file: row.file,
            line: row.line,
            column: row.column,
        })
    }
}

/// One compiled function, for its line table (the `i`th is the object's `i`th piece of code).
pub(crate) struct FunctionLines {
    pub name: String,
    pub code_len: u32,
    /// Its runs of native code as `(start offset, end offset, wasm module offset)`, in order
    /// (code between runs has no wasm instruction).
    pub runs: Vec<(u32, u32, u32)>,
}

/// A debug section being written, with the relocations its addresses need.
#[derive(Clone)]
struct DebugSection {
    data: EndianVec<LittleEndian>,
    relocations: Vec<Relocation>,
}

impl RelocateWriter for DebugSection {
    type Writer = EndianVec<LittleEndian>;
    fn writer(&self) -> &Self::Writer {
        &self.data
    }
    fn writer_mut(&mut self) -> &mut Self::Writer {
        &mut self.data
    }
    fn relocate(&mut self, relocation: Relocation) {
        self.relocations.push(relocation);
    }
}

/// DWARF sections whose addresses wait for the code's: `.debug_info`, `.debug_abbrev`,
/// `.debug_line` and the ranges and strings they use.
pub(crate) struct DebugSections {
    sections: Vec<(gimli::SectionId, DebugSection)>,
}

impl DebugSections {
    /// The sections' names, in the order [`Self::resolve`] returns them.
    pub fn names(&self) -> Vec<&'static str> {
        self.sections.iter().map(|(id, _)| id.name()).collect()
    }

    /// The sections' bytes with every address filled in: `code_addresses[i]` is where the
    /// `i`th function's code starts.
    pub fn resolve(&self, code_addresses: &[u64]) -> Vec<(&'static str, Vec<u8>)> {
        self.sections
            .iter()
            .map(|(id, section)| {
                let mut bytes = section.data.slice().to_vec();
                for relocation in &section.relocations {
                    let value = match relocation.target {
                        RelocationTarget::Symbol(index) => code_addresses[index].wrapping_add_signed(relocation.addend),
                        // Each section is alone in the object: an offset into it is the addend.
                        RelocationTarget::Section(_) => relocation.addend as u64,
                    };
                    let size = usize::from(relocation.size);
                    bytes[relocation.offset..relocation.offset + size].copy_from_slice(&value.to_le_bytes()[..size]);
                }
                (id.name(), bytes)
            })
            .collect()
    }
}

/// DWARF for the object: one compilation unit named `unit_name` whose line table maps each
/// function's native code to the source lines of `lines`, and a subprogram entry per function.
/// `code_section_start` is the module offset that DWARF addresses in wasm count from.
pub(crate) fn line_info(
    unit_name: &str,
    lines: &SourceLines,
    code_section_start: u64,
    functions: &[FunctionLines],
) -> Result<DebugSections, String> {
    let encoding = gimli::Encoding { format: gimli::Format::Dwarf32, version: 4, address_size: 8 };
    let mut dwarf = DwarfUnit::new(encoding);
    let mut program = LineProgram::new(
        encoding,
        gimli::LineEncoding::default(),
        LineString::String(b"/".to_vec()),
        None,
        LineString::String(unit_name.as_bytes().to_vec()),
        None,
    );
    let dir = program.default_directory();
    let file_ids: Vec<_> = lines
        .files
        .iter()
        .map(|path| program.add_file(LineString::String(path.as_bytes().to_vec()), dir, None))
        .collect();
    let mut ranges = Vec::new();
    let root = dwarf.unit.root();
    for (symbol, function) in functions.iter().enumerate() {
        let start = Address::Symbol { symbol, addend: 0 };
        ranges.push(Range::StartLength { begin: start, length: u64::from(function.code_len) });
        let subprogram = dwarf.unit.add(root, gimli::DW_TAG_subprogram);
        let entry = dwarf.unit.get_mut(subprogram);
        entry.set(gimli::DW_AT_name, AttributeValue::String(function.name.as_bytes().to_vec()));
        entry.set(gimli::DW_AT_low_pc, AttributeValue::Address(start));
        entry.set(gimli::DW_AT_high_pc, AttributeValue::Udata(u64::from(function.code_len)));

        program.begin_sequence(Some(start));
        let location_of =
            |wasm_offset: u32| u64::from(wasm_offset).checked_sub(code_section_start).and_then(|a| lines.at(a));
        // The prologue has no wasm instruction; as compilers do, it gets the function's first
        // line, so a breakpoint on the function's address lands on a source line.
        let first = function.runs.iter().find_map(|&(_, _, wasm_offset)| location_of(wasm_offset));
        let mut previous = None;
        let mut previous_end = 0;
        let mut row = |program: &mut LineProgram, address: u32, location: Option<SourceLocation>| {
            if location == previous {
                return;
            }
            previous = location;
            let row = program.row();
            row.address_offset = u64::from(address);
            match location {
                Some(location) => {
                    row.file = file_ids[location.file as usize];
                    row.line = location.line;
                    row.column = location.column;
                }
                // Code with no source line: line 0, by DWARF's convention.
                None => row.line = 0,
            }
            program.generate_row();
        };
        for (i, &(run_start, run_end, wasm_offset)) in function.runs.iter().enumerate() {
            if run_start > previous_end {
                row(&mut program, previous_end, None);
            }
            row(&mut program, run_start, location_of(wasm_offset).or(if i == 0 { first } else { None }));
            previous_end = run_end;
        }
        program.end_sequence(u64::from(function.code_len));
    }
    dwarf.unit.line_program = program;
    let range_list = dwarf.unit.ranges.add(RangeList(ranges));
    let root = dwarf.unit.get_mut(root);
    root.set(gimli::DW_AT_name, AttributeValue::String(unit_name.as_bytes().to_vec()));
    root.set(gimli::DW_AT_producer, AttributeValue::String(b"kiln".to_vec()));
    root.set(gimli::DW_AT_comp_dir, AttributeValue::String(b"/".to_vec()));
    root.set(gimli::DW_AT_low_pc, AttributeValue::Address(Address::Constant(0)));
    root.set(gimli::DW_AT_ranges, AttributeValue::RangeListRef(range_list));

    let mut sections = Sections::new(DebugSection { data: EndianVec::new(LittleEndian), relocations: Vec::new() });
    dwarf.write(&mut sections).map_err(|e| format!("cannot write DWARF: {e}"))?;

    let mut collected = Vec::new();
    sections.for_each(|id, section| -> Result<(), String> {
        if !section.data.slice().is_empty() {
            collected.push((id, section.clone()));
        }
        Ok(())
    })?;
    Ok(DebugSections { sections: collected })
}
