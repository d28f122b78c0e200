//! Labels group store binaries for accounting. An Elixir atom and an Elixir string with the same
//! text are different labels, and a string label never becomes an atom.

use std::fmt;
use std::sync::Arc;

const DEFAULT: &str = "default";

/// A label as the caller gave it. Cloning is a reference-count increment.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    /// An atom's text (the atom already exists in the VM that sent it).
    Atom(Arc<str>),
    /// A UTF-8 string.
    Text(Arc<str>),
}

impl Label {
    pub fn atom(name: &str) -> Self {
        Label::Atom(Arc::from(name))
    }

    pub fn text(name: &str) -> Self {
        Label::Text(Arc::from(name))
    }

    /// The label's text, whichever kind it is.
    pub fn as_str(&self) -> &str {
        match self {
            Label::Atom(s) | Label::Text(s) => s,
        }
    }

    /// The label every binary gets when the caller names none (`:default`).
    pub fn default_label() -> Self {
        Label::atom(DEFAULT)
    }

    /// Whether this is [`Label::default_label`] (checked without allocating).
    pub fn is_default(&self) -> bool {
        matches!(self, Label::Atom(s) if &**s == DEFAULT)
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Label::Atom(s) => write!(f, ":{s}"),
            Label::Text(s) => write!(f, "{s:?}"),
        }
    }
}
