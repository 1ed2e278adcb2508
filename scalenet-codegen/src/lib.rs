//! The pipeline behind scalenet's `network!` macro, on `proc_macro2` tokens, so that tests, the
//! fuzz harness and benchmarks can run it in process (a proc-macro crate can export nothing but
//! its macros). `scalenet-macros` is a thin wrapper around [`expand_network`].
//!
//! The pipeline, as in cxx: parse (every entry, errors accumulated) -> lower into the calculus's
//! [`NetworkSpec`], validating every layer's arguments against its entry in the calculus's op
//! registry -> check with the calculus (every rule, errors accumulated) -> generate the candle
//! module from the [`Plan`](scalenet_calculus::Plan). Between phases `errors.propagate()?` stops;
//! an invalid declaration still gets the same items from the same template (a stub whose bodies
//! never run) beside the errors, so user code adds no follow-on errors.
//!
//! What the check phase gets back for `max_pool(2)`, before the macro turns it into a compile
//! error underlining `max_pool`:
//!
//! ```
//! use scalenet_calculus::{analyze, LayerField, LayerId, Location, NetworkSpec, Op, Shape};
//!
//! let spec = NetworkSpec::new(Shape::Image { channels: 3, height: 8, width: 8 })
//!     .layer(Op::MaxPool2d { kernel: 2, stride: 2 });
//! let errors = analyze(&spec).unwrap_err();
//! assert_eq!(errors.0[0].location, Location::Layer { id: LayerId(0), field: LayerField::Kind });
//! assert!(errors.0[0].message.starts_with("max pooling does not preserve the scaling factor"));
//! ```
#![warn(missing_docs)]

mod ast;
mod errors;
mod lower;
mod module;
mod parse;
mod spec_tokens;
mod steps;
#[cfg(test)]
mod tests;

use errors::Errors;
use proc_macro2::TokenStream;
use scalenet_calculus::{Diagnostics, Fix, NetworkSpec};

/// What `network!` expands `input` (the macro's body) to: the module, or the stub and the
/// spanned errors.
pub fn expand_network(input: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let network = match parse::parse_network(input, &mut errors) {
        Ok(network) => network,
        Err(error) => return error.to_compile_error(),
    };
    let mut lowered = None;
    match check_and_expand(&network, &mut errors, &mut lowered) {
        Ok(tokens) => tokens,
        Err(error) => {
            let lowered = lowered.as_ref().map(|(spec, spans)| (spec, spans));
            let mut tokens = module::stub(&network, lowered);
            tokens.extend(error.to_compile_error());
            tokens
        }
    }
}

/// How `network!` words the fixes whose syntax depends on the front end.
fn dsl_words(fix: Fix) -> String {
    match fix {
        Fix::AllowUnscaled => "or write `#[allow(unscaled)]` before it to keep it knowingly".to_string(),
    }
}

fn check_and_expand(
    network: &ast::Network,
    errors: &mut Errors,
    lowered: &mut Option<(NetworkSpec, lower::Spans)>,
) -> syn::Result<TokenStream> {
    // Entries that did not parse were dropped with their error; the rest is lowered so that every
    // mistake the calculus can still see is reported in the same compile.
    let parse_errors = errors.len();
    let (spec, spans) = lower::lower(network, errors);
    let (spec, spans) = lowered.insert((spec, spans));
    let report = |diagnostics: &Diagnostics, errors: &mut Errors| {
        for diagnostic in diagnostics.iter().filter(|d| !spans.is_opaque(d.location)) {
            errors.error(spans.at(diagnostic.location), diagnostic.render(dsl_words));
        }
    };
    if !network.options.input_written {
        // Every moment follows from the input shape: report it missing.
        errors.error(
            spans.declaration(),
            "the network has no `input`; declare its per-sample shape, e.g. `input: [3, 32, 32]` or `input: [784]`",
        );
    }
    if !errors.is_empty() {
        if parse_errors == 0 && network.options.input.is_some() && spans.exact() {
            // Every layer was read as meant (`conv(16, 3)` as `kernel = 3`): the shapes after
            // it are known, so the shape and moment rules report in the same compile too.
            if let Err(diagnostics) = scalenet_calculus::analyze(spec) {
                report(&diagnostics, errors);
            }
        } else {
            // Shapes are unknown past a missing entry or an unreadable layer: report the rules
            // that need none, on the layers that were read.
            report(&scalenet_calculus::rules::check_rules(spec), errors);
        }
        return Err(errors.propagate().expect_err("an error was recorded"));
    }
    let plan = scalenet_calculus::analyze(spec).map_err(|diagnostics| {
        report(&diagnostics, errors);
        errors.propagate().expect_err("analysis failed with diagnostics")
    })?;
    // What the calculus predicts will train poorly is said where the user reads: at the layer,
    // as a rustc warning (`#[allow(deprecated)]` on the struct silences it).
    // A network that declares no precision is checked against f16 too (with one, `analyze`
    // already made a misfit an error).
    let precision_warnings = match spec.precision {
        None => scalenet_calculus::precision::check_format(&plan, None),
        Some(_) => Diagnostics::default(),
    };
    let warnings = plan
        .warnings()
        .iter()
        .chain(precision_warnings.iter())
        .enumerate()
        .map(|(index, warning)| {
            let name = format!("scalenet_warning_{index}");
            proc_macro_warning::FormattedWarning::new_deprecated(
                name,
                warning.render(dsl_words),
                spans.at(warning.location),
            )
        })
        .collect();
    Ok(module::expand(network, spec, spans, &plan, warnings))
}
