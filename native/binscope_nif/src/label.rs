//! Labels between terms and the core: an atom stays an atom, a string stays a string.
//!
//! Atom labels are cached by atom: an atom's term never changes while the VM runs (atoms are
//! never collected), so a put whose atom label was seen recently reuses its `Label` (no text
//! lookup, no allocation, no hashing of the text). The cache is direct-mapped with
//! [`CACHE_SLOTS`] slots, so it stays small whatever labels callers use, and there is one per
//! scheduler thread, so a lookup takes no lock (a shared cache's lock cost two atomic operations
//! on every put).

use std::cell::RefCell;

use binscope_core::store::{Label, LabelKind};
use rustler::types::atom::Atom;
use rustler::{Binary, Encoder, Env, Error, NifResult, Term, TermType};

/// Slots of the atom label cache.
pub const CACHE_SLOTS: usize = 256;

thread_local! {
    static CACHE: RefCell<[Option<(usize, Label)>; CACHE_SLOTS]> =
        const { RefCell::new([const { None }; CACHE_SLOTS]) };
}

fn slot(word: usize) -> usize {
    // Atom terms are tagged indexes: drop the 6 tag bits, the index spreads over the slots.
    (word >> 6) % CACHE_SLOTS
}

/// A term's word.
pub fn term_word(term: Term) -> usize {
    // SAFETY: `ErlNifTerm` is `#[repr(transparent)]` over `usize`.
    unsafe { std::mem::transmute::<rustler::sys::ErlNifTerm, usize>(term.as_c_arg()) }
}

/// Decodes an atom or a UTF-8 binary. Anything else is `badarg`.
pub fn decode(term: Term) -> NifResult<Label> {
    match term.get_type() {
        TermType::Atom => {
            let (word, at) = (term_word(term), slot(term_word(term)));
            let cached = CACHE
                .try_with(|c| match &c.borrow()[at] {
                    Some((w, l)) if *w == word => Some(l.clone()),
                    _ => None,
                })
                .ok()
                .flatten();
            if let Some(label) = cached {
                return Ok(label);
            }
            let label = Label::atom(&term.atom_to_string()?);
            let _ = CACHE.try_with(|c| c.borrow_mut()[at] = Some((word, label.clone())));
            Ok(label)
        }
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
        let name = self.0.as_str();
        match self.0.kind() {
            // The atom existed when the label was decoded, so this creates nothing (the text is
            // a label's, not a fixed name: `rustler::atoms!` cannot list it).
            LabelKind::Atom => match Atom::existing_from_utf8_bytes(env, name.as_bytes()) {
                Ok(a) => a.encode(env),
                Err(_) => name.encode(env),
            },
            LabelKind::Text => name.encode(env),
        }
    }
}
