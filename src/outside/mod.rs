//! A dump of a process that was not preloaded (`stackdump inspect`): its kernel view visited
//! from outside ([`inspect`]), and its user stacks read without a stop or with ptrace
//! ([`capture`]).

pub mod capture;
pub mod inspect;
