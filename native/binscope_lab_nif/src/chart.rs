//! NIFs of `Binscope.Chart`: decode the terms, draw with `binscope_chart` on a dirty CPU
//! scheduler (a chart takes a few ms), and return `:ok` or `{:error, reason}`.
//!
//! `Binscope.Chart` has already validated shapes and turned every number into a float, so a
//! term of the wrong shape here is `badarg` (ArgumentError).

use std::path::Path;

use binscope_chart::{BarChart, ChartError, Event, LineChart, Series};
use rustler::{Encoder, Env, NifResult, Term};

mod atoms {
    rustler::atoms! { ok, error, empty, non_finite, too_large, io, draw }
}

/// The error's atom: one per `ChartError` variant, made once by `rustler::atoms!`.
fn reason_atom(e: &ChartError) -> rustler::Atom {
    match e {
        ChartError::Empty => atoms::empty(),
        ChartError::NonFinite => atoms::non_finite(),
        ChartError::TooLarge => atoms::too_large(),
        ChartError::Io(_) => atoms::io(),
        ChartError::Draw(_) => atoms::draw(),
    }
}

/// `:ok`, `{:error, reason}` (a fixed atom) or `{:error, {reason, message}}` for I/O and
/// drawing errors.
fn reply<'a>(env: Env<'a>, result: Result<(), ChartError>) -> Term<'a> {
    match result {
        Ok(()) => atoms::ok().encode(env),
        Err(e) => {
            let name = reason_atom(&e).encode(env);
            let reason = match &e {
                ChartError::Io(io) => (name, io.to_string()).encode(env),
                ChartError::Draw(msg) => (name, msg.as_str()).encode(env),
                _ => name,
            };
            (atoms::error(), reason).encode(env)
        }
    }
}

#[rustler::nif(schedule = "DirtyCpu")]
#[allow(clippy::too_many_arguments)]
fn chart_line<'a>(
    env: Env<'a>,
    path: String,
    title: String,
    x_label: String,
    y_label: String,
    series: Vec<(String, Vec<(f64, f64)>)>,
    events: Vec<(f64, String)>,
) -> NifResult<Term<'a>> {
    let chart = LineChart {
        title,
        x_label,
        y_label,
        series: series
            .into_iter()
            .map(|(name, points)| Series { name, points })
            .collect(),
        events: events
            .into_iter()
            .map(|(x, label)| Event { x, label })
            .collect(),
    };
    Ok(reply(env, chart.write(Path::new(&path))))
}

#[rustler::nif(schedule = "DirtyCpu")]
fn chart_bars<'a>(
    env: Env<'a>,
    path: String,
    title: String,
    y_label: String,
    bars: Vec<(String, f64)>,
) -> NifResult<Term<'a>> {
    let chart = BarChart {
        title,
        y_label,
        bars,
    };
    Ok(reply(env, chart.write(Path::new(&path))))
}
