//! Labels between terms and the core: an atom stays an atom, a string stays a string.

use binscope_core::store::Label;
use rustler::types::atom::Atom;
use rustler::{Binary, Encoder, Env, Error, NifResult, Term, TermType};

/// Decodes an atom or a UTF-8 binary. Anything else is `badarg`.
pub fn decode(term: Term) -> NifResult<Label> {
    match term.get_type() {
        TermType::Atom => Ok(Label::atom(&term.atom_to_string()?)),
        TermType::Binary => {
            let bin = Binary::from_term(term)?;
            let text = std::str::from_utf8(bin.as_slice()).map_err(|_| Error::BadArg)?;
            Ok(Label::text(text))
        }
        _ => Err(Error::BadArg),
    }
}

/// A label on its way back to Elixir.
pub struct LabelTerm(pub Label);

impl Encoder for LabelTerm {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        match &self.0 {
            // The atom existed when the label was decoded, so this creates nothing.
            Label::Atom(name) => match Atom::from_str(env, name) {
                Ok(a) => a.encode(env),
                Err(_) => name.as_ref().encode(env),
            },
            Label::Text(text) => text.as_ref().encode(env),
        }
    }
}
