//! User stacks: the copy of a blocked thread's stack ([`blocked`]), the loaded modules and DWARF
//! unwinding of copied stacks ([`unwind`]), and symbols from module files ([`symbols`], with
//! its cache of debug sections and unit filter).

pub mod blocked;
pub mod dwarfcache;
pub mod dwarfunits;
pub mod mapped;
pub mod symbols;
pub mod unwind;
