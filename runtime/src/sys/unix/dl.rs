//! The dynamic loader (`dlopen`, `dlsym`, `dlclose`) and the sealed memory files it loads from.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A memory file holding `bytes`, sealed so neither its contents nor its size can change.
pub fn sealed_memfd(bytes: &[u8]) -> std::io::Result<File> {
    // SAFETY: a NUL-terminated name and flags; a non-negative result is a new descriptor.
    let fd = unsafe { libc::memfd_create(c"kiln-module".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(bytes)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: plain fcntl on our own descriptor.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// A library opened with `dlopen`, closed on drop.
#[derive(Debug)]
pub struct Library {
    handle: *mut libc::c_void,
    /// The sealed memory file it was loaded from, closed only after `dlclose`: the loader
    /// knows the library by the name `/proc/self/fd/N` and returns an already-loaded library
    /// of the same name, so no other file may get descriptor N while this one is loaded.
    file: Option<File>,
}

// SAFETY: a dlopen handle may be used and closed from any thread.
unsafe impl Send for Library {}
// SAFETY: `dlsym` on a handle is thread-safe.
unsafe impl Sync for Library {}

fn last_error() -> String {
    // SAFETY: dlerror returns null or a pointer to a NUL-terminated string owned by libc.
    let err = unsafe { libc::dlerror() };
    if err.is_null() {
        "unknown dynamic loader error".to_string()
    } else {
        // SAFETY: non-null, NUL-terminated (dlerror's contract).
        unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned()
    }
}

impl Library {
    /// Opens the shared object in the sealed memory file `file` (see [`sealed_memfd`]) with all
    /// symbols bound now and kept local: the loader reads exactly the bytes the caller checked,
    /// whatever happens to the file they came from, and searches no library path.
    ///
    /// # Safety
    /// Loading runs the object's initialisers and relocations; the caller must have checked
    /// that the bytes are a Kiln object (which has none that run code).
    pub unsafe fn open_sealed(file: File) -> Result<Library, String> {
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        // SAFETY: forwarded from the caller.
        let mut library = unsafe { Library::open(Path::new(&path)) }?;
        library.file = Some(file);
        Ok(library)
    }

    /// The sealed memory file the library was loaded from.
    pub fn file(&self) -> Option<&File> {
        self.file.as_ref()
    }

    /// Opens `path` with all symbols bound now and kept local.
    ///
    /// # Safety
    /// As for [`Self::open_sealed`]; `path` must name the checked bytes.
    unsafe fn open(path: &Path) -> Result<Library, String> {
        let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| "path contains NUL".to_string())?;
        // SAFETY: c_path is a valid C string; the caller vouches for the file's contents.
        let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(last_error());
        }
        Ok(Library { handle, file: None })
    }

    /// Address of the symbol `name`, if defined.
    pub fn symbol(&self, name: &str) -> Option<*const u8> {
        let c_name = CString::new(name).ok()?;
        // SAFETY: handle is open; c_name is a valid C string.
        let ptr = unsafe { libc::dlsym(self.handle, c_name.as_ptr()) };
        (!ptr.is_null()).then_some(ptr as *const u8)
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        // SAFETY: the handle is open and nothing uses the library's code or data any more
        // (the owning `Module` is dropped only after every instance of it).
        unsafe {
            libc::dlclose(self.handle);
        }
        // `file` closes after this, once the loader has forgotten the name.
    }
}
