//! A Kiln shared object with bytes flipped or cut off: refused with an error, never loaded.
#![no_main]

kiln_fuzz::target!(load);
