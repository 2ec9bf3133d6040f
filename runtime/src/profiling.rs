//! Profiling guest code with `perf`: a jitdump file that describes the functions of every
//! module loaded after it is enabled.
//!
//! Kiln loads code from a sealed in-memory file, which `perf report` cannot open afterwards,
//! so samples in guest code would have no symbols. With [`enable_jitdump`], each module loaded
//! from then on is described (address, size, name and machine code of each function) in
//! `jit-PID.dump` in the current directory, in the format of the Linux kernel's
//! `tools/perf/Documentation/jitdump-specification.txt`, which `perf inject --jit` turns into
//! symbols:
//!
//! ```text
//! perf record -k 1 -g kiln run --profile=jitdump prog.wasm
//! perf inject --jit -i perf.data -o perf.jit.data
//! perf report -i perf.jit.data
//! ```

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::sys::unix::perf;
use crate::traps::registry::FunctionRange;

/// Set once the jitdump file is open, so that loading without profiling takes no lock.
static ENABLED: AtomicBool = AtomicBool::new(false);
static JITDUMP: Mutex<Option<JitDump>> = Mutex::new(None);

struct JitDump {
    file: File,
    /// Each code record's number, unique in the file.
    next_index: u64,
}

const MAGIC: u32 = 0x4A69_5444; // "JiTD"
const VERSION: u32 = 1;
const HEADER_SIZE: u32 = 40;
const EM_X86_64: u32 = 62;
const JIT_CODE_LOAD: u32 = 0;

/// Starts describing loaded modules' code in `jit-PID.dump` in the current directory, for
/// `perf inject --jit` (see the module documentation); returns the file's path. Modules loaded
/// before the call are not described. Calling it again returns the same path.
pub fn enable_jitdump() -> io::Result<PathBuf> {
    let path = PathBuf::from(format!("jit-{}.dump", std::process::id()));
    let mut jitdump = JITDUMP.lock().unwrap_or_else(|e| e.into_inner());
    if jitdump.is_some() {
        return Ok(path);
    }
    let mut file = File::options().read(true).write(true).create(true).truncate(true).open(&path)?;
    let mut header = Vec::with_capacity(HEADER_SIZE as usize);
    for word in [MAGIC, VERSION, HEADER_SIZE, EM_X86_64, 0, std::process::id()] {
        header.extend_from_slice(&word.to_le_bytes());
    }
    header.extend_from_slice(&perf::monotonic_ns().to_le_bytes());
    header.extend_from_slice(&0u64.to_le_bytes()); // flags
    file.write_all(&header)?;
    perf::map_jitdump_marker(&file)?;
    *jitdump = Some(JitDump { file, next_index: 0 });
    ENABLED.store(true, Ordering::Release);
    Ok(path)
}

/// Describes a just-loaded module's functions in the jitdump file, if one is open. A failed
/// write leaves the profile short of those symbols; loading goes on regardless.
///
/// # Safety
/// Every range must be the mapped, readable code of a module that stays loaded during the call.
pub(crate) unsafe fn describe_functions(functions: &[FunctionRange]) {
    if !ENABLED.load(Ordering::Acquire) {
        return;
    }
    let mut jitdump = JITDUMP.lock().unwrap_or_else(|e| e.into_inner());
    let Some(jitdump) = jitdump.as_mut() else { return };
    let (pid, tid) = (std::process::id(), perf::thread_id());
    let mut record = Vec::new();
    for function in functions {
        let len = function.end - function.start;
        // SAFETY: the caller's contract: the function's code is mapped and readable.
        let code = unsafe { std::slice::from_raw_parts(function.start as *const u8, len) };
        let name = match &function.name {
            Some(name) => format!("wasm[{}]::{name}\0", function.index),
            None => format!("wasm[{}]\0", function.index),
        };
        let total = 16 + 40 + name.len() + len;
        record.clear();
        record.extend_from_slice(&JIT_CODE_LOAD.to_le_bytes());
        record.extend_from_slice(&(total as u32).to_le_bytes());
        record.extend_from_slice(&perf::monotonic_ns().to_le_bytes());
        record.extend_from_slice(&pid.to_le_bytes());
        record.extend_from_slice(&tid.to_le_bytes());
        for field in [function.start as u64, function.start as u64, len as u64, jitdump.next_index] {
            record.extend_from_slice(&field.to_le_bytes());
        }
        record.extend_from_slice(name.as_bytes());
        record.extend_from_slice(code);
        jitdump.next_index += 1;
        if jitdump.file.write_all(&record).is_err() {
            return;
        }
    }
}
