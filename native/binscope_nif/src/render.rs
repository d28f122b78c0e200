//! NIFs of `Binscope.Render.JSON` (prefixed `render_`): terms to JSON through `binscope_core::render`.
//!
//! Accepted: maps (keys: atoms, strings or integers), proper lists, tuples (as lists), atoms
//! (`true`/`false`/`nil` as JSON literals, others as strings), integers, floats and UTF-8
//! binaries. Anything else (pids, refs, funs, non-UTF-8 binaries, improper lists, nesting deeper
//! than `MAX_DEPTH`) raises `ArgumentError`: the Elixir side turns pids into strings first.
//!
//! A map's keys come out sorted (by their JSON text, byte order), not in the VM's iteration
//! order: that order is an implementation detail (OTP 26+ orders the atom keys of a small map by
//! atom-table index, and a map of over 32 keys by hash on every OTP), so the same report would
//! otherwise read differently from one node or OTP release to the next.

use binscope_core::render::{to_json, Value};
use rustler::{Binary, Error, NifResult, Term, TermType};

/// Deeper input is refused instead of recursing without bound on a hostile term.
const MAX_DEPTH: usize = 64;

fn atom_text(t: Term) -> NifResult<String> {
    t.atom_to_string()
}

fn key(t: Term) -> NifResult<String> {
    match t.get_type() {
        TermType::Atom => atom_text(t),
        TermType::Binary => utf8(t),
        TermType::Integer => Ok(integer(t)?.to_string()),
        _ => Err(Error::BadArg),
    }
}

fn utf8(t: Term) -> NifResult<String> {
    let b: Binary = t.decode()?;
    std::str::from_utf8(b.as_slice())
        .map(str::to_owned)
        .map_err(|_| Error::BadArg)
}

enum Int {
    Small(i64),
    Big(u64),
}

impl std::fmt::Display for Int {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Int::Small(i) => write!(f, "{i}"),
            Int::Big(u) => write!(f, "{u}"),
        }
    }
}

fn integer(t: Term) -> NifResult<Int> {
    if let Ok(i) = t.decode::<i64>() {
        return Ok(Int::Small(i));
    }
    t.decode::<u64>().map(Int::Big)
}

fn value(t: Term, depth: usize) -> NifResult<Value> {
    if depth > MAX_DEPTH {
        return Err(Error::BadArg);
    }
    Ok(match t.get_type() {
        TermType::Atom => match atom_text(t)?.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "nil" => Value::Null,
            other => Value::Str(other.to_owned()),
        },
        TermType::Integer => match integer(t)? {
            Int::Small(i) => Value::Int(i),
            Int::Big(u) => Value::BigInt(u.to_string()),
        },
        TermType::Float => Value::Float(t.decode()?),
        TermType::Binary => Value::Str(utf8(t)?),
        TermType::List => {
            let items: Vec<Term> = t.decode()?;
            Value::List(
                items
                    .into_iter()
                    .map(|i| value(i, depth + 1))
                    .collect::<NifResult<_>>()?,
            )
        }
        TermType::Tuple => {
            let items = rustler::types::tuple::get_tuple(t)?;
            Value::List(
                items
                    .into_iter()
                    .map(|i| value(i, depth + 1))
                    .collect::<NifResult<_>>()?,
            )
        }
        TermType::Map => {
            let iter = rustler::types::map::MapIterator::new(t).ok_or(Error::BadArg)?;
            let mut pairs = Vec::new();
            for (k, v) in iter {
                pairs.push((key(k)?, value(v, depth + 1)?));
            }
            // Stable: equal texts (an atom key and a string key alike) keep the VM's order.
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Map(pairs)
        }
        _ => return Err(Error::BadArg),
    })
}

/// JSON text for `term`; `pretty` indents it. Dirty: reports of a whole node can be large.
#[rustler::nif(schedule = "DirtyCpu")]
fn render_json(term: Term, pretty: bool) -> NifResult<String> {
    Ok(to_json(&value(term, 0)?, pretty))
}
