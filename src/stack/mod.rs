//! User stacks: the copy of a blocked thread's stack ([`blocked`]), the loaded modules and DWARF
//! unwinding of copied stacks ([`unwind`]), and symbols from module files ([`symbols`], with
//! its cache of debug sections and unit filter); rbp recovered from a blocked thread's copied
//! stack for frames that need it ([`fprecover`]); code outside every module, JIT-compiled, named from
//! perf maps ([`jit`]).

pub mod blocked;
pub mod dwarfcache;
pub mod dwarfunits;
pub mod elfhead;
pub mod fprecover;
pub mod jit;
pub mod mapped;
pub mod symbols;
pub mod unwind;
