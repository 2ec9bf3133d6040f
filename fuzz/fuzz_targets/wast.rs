//! Any text as a .wast script, through the whole pipeline, with fuel so loops end.
#![no_main]

kiln_fuzz::target!(wast);
