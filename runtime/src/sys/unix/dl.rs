//! The dynamic loader: `dlopen`, `dlsym`, `dladdr`, `dlclose`.

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A library opened with `dlopen`, closed on drop.
#[derive(Debug)]
pub struct Library {
    handle: *mut libc::c_void,
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
    /// Opens `path` with all symbols bound now and kept local.
    ///
    /// # Safety
    /// Loading runs the object's initialisers; the caller must have checked that the file is a
    /// Kiln object (whose objects have none).
    pub unsafe fn open(path: &Path) -> Result<Library, String> {
        let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| "path contains NUL".to_string())?;
        // SAFETY: c_path is a valid C string; the caller vouches for the file's contents.
        let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(last_error());
        }
        Ok(Library { handle })
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
    }
}
