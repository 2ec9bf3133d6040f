//! Kiln's WASI host: every function of `wasi_snapshot_preview1`, as Kiln host functions.
//!
//! A [`WasiCtx`] holds what one guest program sees of the world: its arguments, its
//! environment, and its descriptor table (stdio plus the preopened directories). The sandbox is
//! [cap-std](https://docs.rs/cap-std): every preopen is a `cap_std::fs::Dir`, and every
//! `path_*` call resolves the guest's path beneath one with cap-std, which refuses `..` past
//! the directory, absolute paths, and symlinks that lead outside, whatever their depth. The
//! guest never gets a host path.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // SAFETY: hello.so was made by `kiln compile` from a module we trust to load.
//! let module = unsafe { kiln_runtime::Module::load("hello.so") }?;
//! let ctx = kiln_wasi::WasiCtxBuilder::new().arg("hello").inherit_stdio().build()?;
//! let imports = kiln_wasi::imports(&module, ctx)?;
//! let region = kiln_runtime::Region::new(kiln_runtime::RegionConfig { slots: 1, ..Default::default() })?;
//! let instance = kiln_runtime::Instance::new(&region, &module, &imports)?;
//! let status = kiln_wasi::exit_status(instance.call("_start", &[]))?;
//! # Ok(()) }
//! ```
//!
//! `proc_exit` traps with an [`Exit`] error; [`exit_status`] turns the outcome of `_start` into
//! the program's exit status.
//!
//! A server that runs a fresh instance per request makes the functions once, with
//! [`shared_imports`], and [`attach`]es each request's context to the request's store:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // SAFETY: hello.so was made by `kiln compile` from a module we trust to load.
//! # let module = unsafe { kiln_runtime::Module::load("hello.so") }?;
//! # let region = kiln_runtime::Region::new(kiln_runtime::RegionConfig { slots: 1, ..Default::default() })?;
//! let imports = kiln_wasi::shared_imports(&module)?;
//! for request_body in [b"one".to_vec(), b"two".to_vec()] {
//!     let output = kiln_wasi::OutputCapture::new(1 << 20);
//!     let ctx = kiln_wasi::WasiCtxBuilder::new().arg("handler").stdin_bytes(request_body).stdout_capture(&output);
//!     let store = kiln_runtime::Store::new();
//!     kiln_wasi::attach(&store, ctx.build()?)?;
//!     let instance = kiln_runtime::Instance::new_in_store(&region, &store, &module, &imports)?;
//!     kiln_wasi::exit_status(instance.call("_start", &[]))?;
//!     let response: Vec<u8> = output.take();
//! }
//! # Ok(()) }
//! ```

// Bodies take preview1's arguments by name, as many as the ABI has (`path_open`: nine).
#[allow(clippy::too_many_arguments)]
mod fs;
#[allow(clippy::too_many_arguments)]
mod funcs;
mod io;
mod layout;
pub mod memory;
mod poll;
mod stdio;
pub mod table;
#[cfg(test)]
mod tests;
pub mod types;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kiln_runtime::{CallError, Extern, Module, Store, Trap, Val};

use table::{classify, Descriptor, Handle, Table};
use types::rights;

pub use funcs::NAMES as FUNCTION_NAMES;
pub use stdio::OutputCapture;

/// Errors setting up a WASI context or linking a module against it.
#[derive(Debug, thiserror::Error)]
pub enum WasiError {
    /// A host directory the guest must never get (`/proc`, `/sys`, `/dev`: through them a
    /// guest could write the host's memory or devices).
    #[error("refusing to give the guest {path}: {reason}")]
    Forbidden {
        /// The host path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A `--dir` host directory could not be opened.
    #[error("cannot open directory {path} for the guest: {source}")]
    Preopen {
        /// The host path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The module imports something this host does not provide.
    #[error("unknown import `{module}::{name}` (Kiln provides wasi_snapshot_preview1 functions only)")]
    UnknownImport {
        /// Import module.
        module: String,
        /// Import name.
        name: String,
    },
    /// [`attach`] to a store that already carries data.
    #[error("the store already carries data (a WASI context is attached once, to a new store)")]
    StoreTaken,
    /// The module imports a WASI function with the wrong type.
    #[error("import `{module}::{name}` has type {found}, but WASI defines it as {expected}")]
    Signature {
        /// Import module.
        module: String,
        /// Import name.
        name: String,
        /// The module's type.
        found: String,
        /// WASI's.
        expected: String,
    },
}

/// `proc_exit` was called: the program's exit status. It reaches the embedder as the error of a
/// [`Trap::Host`]; see [`exit_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("exit with status {0}")]
pub struct Exit(pub i32);

/// `proc_raise` asked for a signal whose default action terminates the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("terminated by signal {0}")]
pub struct Signal(pub u8);

/// Turns the outcome of a WASI command's `_start` into its exit status: 0 when `_start`
/// returned, the `proc_exit` code, or 128 + the signal number after `proc_raise`. Any other
/// trap or error is returned as is.
pub fn exit_status(outcome: Result<Vec<Val>, CallError>) -> Result<i32, CallError> {
    match outcome {
        Ok(_) => Ok(0),
        Err(CallError::Trap(Trap::Host(err))) => {
            if let Some(exit) = err.0.downcast_ref::<Exit>() {
                Ok(exit.0)
            } else if let Some(sig) = err.0.downcast_ref::<Signal>() {
                Ok(128 + sig.0 as i32)
            } else {
                Err(CallError::Trap(Trap::Host(err)))
            }
        }
        Err(other) => Err(other),
    }
}

/// How many descriptors a guest may hold open unless [`WasiCtxBuilder::max_open_files`]
/// says otherwise (stdio and preopens included): enough for real programs, small enough that
/// a few hundred tenants cannot take a process's whole descriptor limit.
pub const DEFAULT_MAX_OPEN_FILES: usize = 256;

/// What one guest program sees: arguments, environment, descriptors.
pub struct WasiCtx {
    pub(crate) args: Strings,
    pub(crate) env: Strings,
    pub(crate) table: Table,
}

/// NUL-terminated strings, laid out in one block as `args_get` and `environ_get` hand them to
/// the guest: a context with many variables costs two allocations, not one per variable.
#[derive(Default)]
pub(crate) struct Strings {
    bytes: Vec<u8>,
    /// Where each string ends (after its NUL) in `bytes`.
    ends: Vec<usize>,
}

impl Strings {
    /// Appends the string made of `parts`, NUL-terminated.
    fn push(&mut self, parts: &[&[u8]]) {
        if self.ends.is_empty() {
            // Room for a typical environment (a CGI request's is about 400 bytes) at once.
            self.bytes.reserve(512);
            self.ends.reserve(16);
        }
        for part in parts {
            self.bytes.extend_from_slice(part);
        }
        self.bytes.push(0);
        self.ends.push(self.bytes.len());
    }

    /// How many strings.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Every string, NUL included.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Where each string starts in [`Self::bytes`].
    pub(crate) fn starts(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(0).chain(self.ends.iter().copied()).take(self.ends.len())
    }
}

/// Builds a [`WasiCtx`].
#[derive(Default)]
pub struct WasiCtxBuilder {
    args: Strings,
    env: Strings,
    stdio: [Option<StdioSource>; 3],
    preopens: Vec<(PathBuf, String)>,
    max_open_files: Option<usize>,
}

enum StdioSource {
    Inherit,
    File(std::fs::File),
    Bytes(Vec<u8>),
    Capture(OutputCapture),
}

impl WasiCtxBuilder {
    /// An empty context: no arguments, no environment, no stdio, no directories.
    pub fn new() -> WasiCtxBuilder {
        WasiCtxBuilder::default()
    }

    /// Appends one argument (the first is the program name).
    pub fn arg(mut self, arg: impl AsRef<str>) -> Self {
        self.args.push(&[arg.as_ref().as_bytes()]);
        self
    }

    /// Appends arguments.
    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    /// Adds the environment variable `key=value`.
    pub fn env(mut self, key: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        self.env.push(&[key.as_ref().as_bytes(), b"=", value.as_ref().as_bytes()]);
        self
    }

    /// Passes the host's stdin, stdout and stderr through.
    pub fn inherit_stdio(mut self) -> Self {
        self.stdio = [Some(StdioSource::Inherit), Some(StdioSource::Inherit), Some(StdioSource::Inherit)];
        self
    }

    /// Uses `file` as the guest's descriptor `fd` (0, 1 or 2).
    pub fn stdio_file(mut self, fd: usize, file: std::fs::File) -> Self {
        assert!(fd < 3, "stdio descriptors are 0, 1 and 2");
        self.stdio[fd] = Some(StdioSource::File(file));
        self
    }

    /// Gives the guest `bytes` as its stdin (in host memory: no descriptor, no system call).
    pub fn stdin_bytes(mut self, bytes: Vec<u8>) -> Self {
        self.stdio[0] = Some(StdioSource::Bytes(bytes));
        self
    }

    /// Collects what the guest writes to its stdout in `capture` (in host memory, bounded).
    pub fn stdout_capture(mut self, capture: &OutputCapture) -> Self {
        self.stdio[1] = Some(StdioSource::Capture(capture.clone()));
        self
    }

    /// Collects what the guest writes to its stderr in `capture` (in host memory, bounded).
    pub fn stderr_capture(mut self, capture: &OutputCapture) -> Self {
        self.stdio[2] = Some(StdioSource::Capture(capture.clone()));
        self
    }

    /// Preopens the host directory `host` under the guest name `guest`.
    pub fn preopened_dir(mut self, host: impl AsRef<Path>, guest: impl AsRef<str>) -> Self {
        self.preopens.push((host.as_ref().to_path_buf(), guest.as_ref().to_string()));
        self
    }

    /// Limits the descriptors the guest may hold open at once, stdio and preopens included
    /// (default [`DEFAULT_MAX_OPEN_FILES`]); opening more fails with `mfile`.
    pub fn max_open_files(mut self, max: usize) -> Self {
        self.max_open_files = Some(max);
        self
    }

    /// Opens the preopened directories and builds the context.
    pub fn build(self) -> Result<WasiCtx, WasiError> {
        let mut table = Table::with_limit(self.max_open_files.unwrap_or(DEFAULT_MAX_OPEN_FILES));
        for (i, source) in self.stdio.into_iter().enumerate() {
            let handle = match source {
                None => continue,
                // A closed host descriptor stays closed for the guest (`badf`): the number may
                // later be reused by a file Kiln opens, which the guest must not reach as stdio.
                Some(StdioSource::Inherit) if !host_stdio_is_open(i) => continue,
                Some(StdioSource::Inherit) => Handle::Inherited(i as i32),
                Some(StdioSource::File(f)) => Handle::File(cap_std::fs::File::from_std(f)),
                Some(StdioSource::Bytes(bytes)) => Handle::Input(stdio::MemoryInput::new(bytes)),
                Some(StdioSource::Capture(capture)) => Handle::Output(capture),
            };
            // A stream in host memory is a pipe to the guest: `unknown`, as fdstat says of one.
            let filetype = handle.fd().map_or(types::filetype::UNKNOWN, |fd| classify(fd).0);
            // Lent by the host: a stream to read or write, nothing more. No seeking,
            // truncating, re-timing, syncing or allocating what the caller owns; flags the
            // guest sets are kept here, never applied to the host's descriptor.
            let base = if i == 0 { rights::STDIN } else { rights::STDOUT };
            table.insert(i as u32, Descriptor { handle, filetype, base, inheriting: 0, flags: 0, preopen: None });
        }
        // Preopens start at 3 even when some stdio descriptor is absent.
        for (next, (host, guest)) in (3u32..).zip(self.preopens) {
            refuse_special_directory(&host)?;
            let dir = cap_std::fs::Dir::open_ambient_dir(&host, cap_std::ambient_authority())
                .map_err(|source| WasiError::Preopen { path: host.clone(), source })?;
            table.insert(
                next,
                Descriptor {
                    handle: Handle::Dir(dir),
                    filetype: types::filetype::DIRECTORY,
                    base: rights::DIRECTORY,
                    inheriting: rights::DIRECTORY_INHERITING,
                    flags: 0,
                    preopen: Some(guest.into_bytes()),
                },
            );
        }
        Ok(WasiCtx { args: self.args, env: self.env, table })
    }
}

/// Refuses preopens of `/proc`, `/sys` and `/dev` (and anything inside them): `/proc/self/mem`
/// alone would let the guest rewrite the host's memory. Paths are resolved first, so a symlink
/// or `..` leading there is refused too. (Opening such files through a wider preopen, such as
/// `/`, is refused file by file; see `fs::path_open`.)
fn refuse_special_directory(host: &Path) -> Result<(), WasiError> {
    let resolved =
        std::fs::canonicalize(host).map_err(|source| WasiError::Preopen { path: host.to_path_buf(), source })?;
    for special in ["/proc", "/sys", "/dev"] {
        if resolved.starts_with(special) {
            return Err(WasiError::Forbidden {
                path: host.to_path_buf(),
                reason: format!("{} is inside {special}, which exposes the host itself", resolved.display()),
            });
        }
    }
    Ok(())
}

fn host_stdio_is_open(fd: usize) -> bool {
    use std::os::fd::AsFd;
    let open = |fd| rustix::io::fcntl_getfd(fd).is_ok();
    match fd {
        0 => open(std::io::stdin().as_fd()),
        1 => open(std::io::stdout().as_fd()),
        _ => open(std::io::stderr().as_fd()),
    }
}

/// The host functions for every import of `module`, in import order, all sharing `ctx`.
/// Every import must be a `wasi_snapshot_preview1` function of the right type.
pub fn imports(module: &Module, ctx: WasiCtx) -> Result<Vec<Extern>, WasiError> {
    module_imports(module, funcs::CtxSource::Captured(Arc::new(Mutex::new(ctx))))
}

/// The host functions for every import of `module`, in import order, made once for any number
/// of stores: each call uses the context [`attach`]ed to the store of the instance calling it
/// (and traps if there is none). A server that runs a fresh instance per request makes these
/// once instead of a set per request. Every import must be a `wasi_snapshot_preview1`
/// function of the right type.
pub fn shared_imports(module: &Module) -> Result<Vec<Extern>, WasiError> {
    module_imports(module, funcs::CtxSource::Store)
}

/// Gives `store`'s instances `ctx` as their WASI context, for [`shared_imports`]. A store has
/// one context for its life: an error if it already has data (see `Store::set_data`).
pub fn attach(store: &Store, ctx: WasiCtx) -> Result<(), WasiError> {
    store.set_data(funcs::StoreCtx(Mutex::new(ctx))).map_err(|_| WasiError::StoreTaken)
}

fn module_imports(module: &Module, ctx: funcs::CtxSource) -> Result<Vec<Extern>, WasiError> {
    let meta = module.metadata();
    meta.imports
        .iter()
        .map(|import| {
            let unknown = || WasiError::UnknownImport { module: import.module.clone(), name: import.name.clone() };
            let kiln_runtime::ImportKind::Func(type_index) = import.kind else {
                return Err(unknown());
            };
            if import.module != "wasi_snapshot_preview1" {
                return Err(unknown());
            }
            let ty = &meta.types[type_index as usize];
            let func = funcs::host_func(&import.name, ty, ctx.clone()).map_err(|expected| match expected {
                None => unknown(),
                Some(expected) => WasiError::Signature {
                    module: import.module.clone(),
                    name: import.name.clone(),
                    found: format!("{:?} -> {:?}", ty.params, ty.results),
                    expected: format!("{:?} -> {:?}", expected.params, expected.results),
                },
            })?;
            Ok(Extern::Func(func))
        })
        .collect()
}
