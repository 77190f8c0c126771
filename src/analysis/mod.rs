//! What a dump means: the process facts (who holds the other end of a pipe, who owns a futex;
//! [`facts`]) and the findings computed from them ([`diagnose`]), with a system call in words
//! ([`syscall`]). Pure functions of the model.

pub mod diagnose;
pub mod facts;
pub mod syscall;
pub mod watch;
