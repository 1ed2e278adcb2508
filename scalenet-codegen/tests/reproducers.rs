//! Every declaration the hardening issue found to panic, hang, underline the whole call or be
//! accepted and then fail in rustc or at run time, with the error it gets now: spanned on a token
//! of the declaration (the source starts with a newline, so those are on line 2 or later).

use proc_macro2::{TokenStream, TokenTree};

/// The `compile_error!` messages of an expansion, with the line each is spanned on.
fn errors(source: &str) -> Vec<(usize, String)> {
    fn visit(stream: TokenStream, found: &mut Vec<(usize, String)>) {
        let mut line = None;
        for tree in stream {
            match tree {
                TokenTree::Ident(ident) if ident == "compile_error" => line = Some(ident.span().start().line),
                TokenTree::Group(group) => {
                    match (line.take(), group.stream().into_iter().collect::<Vec<_>>().as_slice()) {
                        (Some(line), [TokenTree::Literal(message)]) => found.push((line, message.to_string())),
                        _ => visit(group.stream(), found),
                    }
                }
                _ => {}
            }
        }
    }
    let mut found = Vec::new();
    visit(scalenet_codegen::expand_network(source.parse().expect("tokens")), &mut found);
    found
}

fn expect_error(body: &str, message: &str) {
    let source = format!("\npub struct Net {{\n{body}\n}}");
    let errors = errors(&source);
    assert!(errors.iter().any(|(_, m)| m.contains(message)), "{body}: expected `{message}`, got {errors:?}");
    assert!(errors.iter().all(|(line, _)| *line >= 2), "{body}: an error underlines the whole call: {errors:?}");
}

fn expect_valid(body: &str) {
    let source = format!("\npub struct Net {{\n{body}\n}}");
    let errors = errors(&source);
    assert!(errors.is_empty(), "{body}: {errors:?}");
}

#[test]
fn sizes_beyond_the_limit_are_spanned_errors() {
    expect_error("input: [3, 8, 8], conv(4, kernel = 3, padding = 9223372036854775808)", "beyond the limit of 2^31");
    expect_error("input: [1, 18446744073709551615, 8], flatten, linear(2)", "more than 2^31 elements per sample");
    expect_error("input: [4294967296, 4294967296, 4294967296], flatten", "more than 2^31 elements per sample");
    expect_error("input: [4], linear(18446744073709551615)", "beyond the limit of 2^31");
    expect_error("input: [4], linear(4294967296)", "beyond the limit of 2^31");
    expect_error("input: [65536], linear(65536)", "more than the 2^31 a tensor can hold");
    expect_error("input: [1, 8, 8], conv(1, kernel = 40000000000, padding = 2)", "beyond the limit of 2^31");
    expect_error("input: [1, 1000000000, 1000000000], conv(1, kernel = 3, padding = 1)", "more than 2^31 elements");
}

#[test]
fn extreme_factors_are_errors_that_name_the_layer() {
    expect_error(
        "input: [4], r: residual(beta = 1e-200) { relu, linear(4) }, linear(2)",
        "`beta = 1e-200` takes the network's values out of f32's range",
    );
    expect_valid("input: [4], r: residual(beta = 1e-3) { relu, linear(4) }, linear(2)");
    expect_error("input: [4], scale(1e308), linear(2)", "`scale(1e308)` takes the network's values out of f32's range");
    expect_error("input: [4], scale(1e40), linear(2)", "`scale(1e40)` takes the network's values out of f32's range");
}

/// The range rule judges the values a network computes (standard deviations), not their second
/// moments: 1e20 fits in f32 though its square does not.
#[test]
fn factors_whose_values_fit_in_f32_are_valid() {
    expect_valid("input: [4], scale(1e20), linear(2)");
    expect_valid("input: [4], scale(1e-20), linear(2)");
    // 100 halvings: values near 8e-31, inside f32's normal range.
    let halvings = vec!["scale(0.5)"; 100].join(", ");
    expect_valid(&format!("input: [4], {halvings}, linear(2)"));
    let mut nested = "relu, linear(4)".to_string();
    for _ in 0..60 {
        nested = format!("residual(beta = 0.5) {{ {nested} }}");
    }
    expect_valid(&format!("input: [4], {nested}, linear(2)"));
}

/// Values that leave the range through many moderate factors name no single factor.
#[test]
fn compounding_factors_are_named_as_such() {
    let shrinks = vec!["scale(1e-3)"; 14].join(", ");
    let source = format!("\npub struct Net {{\ninput: [4], {shrinks}, linear(2)\n}}");
    let errors = errors(&source);
    assert!(
        errors.iter().any(
            |(_, m)| m.contains("though no single factor is extreme: the factors of the layers before it compound")
        ),
        "{errors:?}"
    );
    expect_error("input: [4], dropout(0.99999999), linear(2)", "is 1 in f32");
}

#[test]
fn names_that_would_collide_or_cannot_be_fields_are_errors() {
    expect_error("input: [4], output_calibration: linear(2)", "output calibration");
    expect_error(
        "input: [4], a: residual(beta = 0.5) { c: linear(4) }, a_main_c: linear(4)",
        "the field `a_main_c` would be generated twice",
    );
    // `r#self` does not even lex (rustc and proc-macro2 both reject it); `self` itself is a
    // keyword the parser reports in place.
    assert!("r#self".parse::<TokenStream>().is_err());
    let errors = errors("\npub struct Net {\ninput: [4], self: linear(2)\n}");
    assert!(!errors.is_empty() && errors.iter().all(|(line, _)| *line >= 2), "{errors:?}");
    expect_valid("input: [4], r#type: linear(2)");
    expect_valid("input: [4], a: residual(beta = 0.5) { r#type: linear(4) }, linear(2)");
}

#[test]
fn entries_that_end_early_underline_their_last_token() {
    for body in [
        "input: [4], fc2:, linear(2)",
        "input: [4], linear(2), /// doc",
        "input: [4], init: , linear(2)",
        "input: [4], residual(beta = 0.5) { relu } shortcut , linear(2)",
        "input: , linear(2)",
    ] {
        let source = format!("\npub struct Net {{\n{body}\n}}");
        let errors = errors(&source);
        assert!(!errors.is_empty(), "{body}");
        assert!(errors.iter().all(|(line, _)| *line >= 2), "{body}: {errors:?}");
    }
}

#[test]
fn every_phase_reports_in_one_expansion() {
    let body = "input: [3, 8, 8], frobnicate, max_pool(2), sigmoid, flatten, linear(2)";
    for message in ["unknown layer `frobnicate`", "max pooling", "`sigmoid` is not positively homogeneous"] {
        expect_error(body, message);
    }
}

#[test]
fn tokens_are_what_the_compiler_reads() {
    // The helper finds every message: a declaration with two mistakes gives two.
    let source = "\npub struct Net {\ninput: [4], max_pool(2), sigmoid\n}";
    assert_eq!(errors(source).len(), 2, "{:?}", errors(source));
    let _: TokenStream = source.parse().unwrap();
}

/// A layer read as meant despite its error (an extra positional argument taken as the next named
/// one) leaves the shapes after it known: a later shape error is reported in the same expansion.
#[test]
fn an_extra_positional_argument_does_not_hide_later_shape_errors() {
    let source = "\npub struct Net {\ninput: [3, 16, 16], conv1: conv(8, 3), relu, avg_pool(3), flatten, linear(10)\n}";
    let errors = errors(source);
    assert!(errors.iter().any(|(_, m)| m.contains("this one reads as `kernel = 3`")), "{errors:?}");
    assert!(errors.iter().any(|(_, m)| m.contains("avg_pool")), "{errors:?}");
    assert_eq!(errors.len(), 2, "{errors:?}");
    // A placeholder (a missing kernel) leaves the shapes unknown: only the rules that need none.
    let errors = errors_of("input: [3, 16, 16], conv1: conv(8), relu, avg_pool(3), flatten, linear(10)");
    assert_eq!(errors.len(), 1, "{errors:?}");
}

fn errors_of(body: &str) -> Vec<(usize, String)> {
    errors(&format!("\npub struct Net {{\n{body}\n}}"))
}
