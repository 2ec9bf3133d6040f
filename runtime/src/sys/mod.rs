//! Operating-system calls. Everything that talks to the kernel directly lives below here.

pub mod unix;
