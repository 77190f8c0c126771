//! A dump shown to a person or a tool: the text form ([`render`]; the JSON form is `serde_json`
//! of the model), folded stacks ([`folded`]), and what changed across dumps ([`compare`]).

pub mod compare;
pub mod folded;
pub mod render;
