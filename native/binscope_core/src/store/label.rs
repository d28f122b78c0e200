//! Labels group store binaries for accounting. An Elixir atom and an Elixir string with the same
//! text are different labels, and a string label never becomes an atom.
//!
//! Each label carries its hash, computed once when it is made (seeded xxh3, so label text chosen
//! by a hostile caller cannot aim at one hash bucket): every registry map keyed by a label hashes
//! one word per lookup instead of the text (see `hash::Prehashed`).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64_with_seed;

const DEFAULT: &str = "default";

/// Which kind of term the label was.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum LabelKind {
    /// An atom's text (the atom already exists in the VM that sent it).
    Atom,
    /// A UTF-8 string.
    Text,
}

/// A label as the caller gave it. Cloning is a reference-count increment.
#[derive(Clone)]
pub struct Label {
    kind: LabelKind,
    hash: u64,
    text: Arc<str>,
}

impl Label {
    fn new(kind: LabelKind, name: &str) -> Self {
        let seed = super::hash::seed() ^ kind as u64;
        Label {
            kind,
            hash: xxh3_64_with_seed(name.as_bytes(), seed),
            text: Arc::from(name),
        }
    }

    pub fn atom(name: &str) -> Self {
        Label::new(LabelKind::Atom, name)
    }

    pub fn text(name: &str) -> Self {
        Label::new(LabelKind::Text, name)
    }

    /// Atom or string.
    pub fn kind(&self) -> LabelKind {
        self.kind
    }

    /// The label's text, whichever kind it is.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The label every binary gets when the caller names none (`:default`).
    pub fn default_label() -> Self {
        Label::atom(DEFAULT)
    }

    /// Whether this is [`Label::default_label`] (checked without allocating).
    pub fn is_default(&self) -> bool {
        self.kind == LabelKind::Atom && &*self.text == DEFAULT
    }
}

impl PartialEq for Label {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.hash == other.hash
            && (Arc::ptr_eq(&self.text, &other.text) || self.text == other.text)
    }
}

impl Eq for Label {}

impl Hash for Label {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialOrd for Label {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Atoms before strings, then by text (what the reports sort by).
impl Ord for Label {
    fn cmp(&self, other: &Self) -> Ordering {
        self.kind
            .cmp(&other.kind)
            .then_with(|| self.text.cmp(&other.text))
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            LabelKind::Atom => write!(f, ":{}", self.text),
            LabelKind::Text => write!(f, "{:?}", &*self.text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn kinds_and_texts_stay_apart() {
        assert_eq!(Label::atom("a"), Label::atom("a"));
        assert_ne!(Label::atom("a"), Label::text("a"));
        assert_ne!(Label::atom("a"), Label::atom("b"));
        assert!(Label::atom("z") < Label::text("a"), "atoms sort first");
        assert!(Label::default_label().is_default());
        assert!(!Label::text(DEFAULT).is_default());
        let set: HashSet<Label> = [Label::atom("x"), Label::text("x"), Label::atom("x")]
            .into_iter()
            .collect();
        assert_eq!(set.len(), 2);
    }
}
