//! What a dump means: the process facts (who holds the other end of a pipe, who owns a futex;
//! [`facts`]) and the findings computed from them ([`diagnose`]). Pure functions of the model.

pub mod diagnose;
pub mod facts;
