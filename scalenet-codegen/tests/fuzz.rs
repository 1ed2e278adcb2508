//! Grammar-aware fuzzing of `network!`'s whole pipeline (parse -> lower -> check -> generate),
//! in process. Declarations are composed from the registry's keywords and argument names, edge
//! values (0, 2^32, u64::MAX, 1e308, 1e-200, 0.99999999), hostile names (raw identifiers,
//! reserved and colliding names, std's type names), nested residual blocks and entries that end
//! early. Every expansion must:
//!
//! - not panic;
//! - finish (a hang detector here: under a second each; the long run reports the slowest);
//! - point every error at a token of the declaration, never at the whole call.
//!
//! CI runs a fixed number of cases. A long run, which prints throughput and the slowest case:
//!
//! ```text
//! SCALENET_FUZZ_CASES=1000000 SCALENET_FUZZ_RANDOM=1 cargo test --release -p scalenet-codegen --test fuzz -- --nocapture
//! ```

use proc_macro2::{TokenStream, TokenTree};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use scalenet_calculus::registry::{self, Params};
use std::time::{Duration, Instant};

fn int_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u64..40).prop_map(|v| v.to_string()),
        1 => prop::sample::select(vec![
            "0", "1", "2", "3", "5", "64", "1024", "65536", "4294967296", "40000000000",
            "9223372036854775808", "18446744073709551615",
        ])
        .prop_map(str::to_string),
    ]
}

fn float_value() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "0.0",
        "0.5",
        "0.25",
        "1.0",
        "0.99999999",
        "1e-200",
        "1e-160",
        "1e308",
        "-0.1",
        "-1.0",
        "2.0",
        "0.01",
    ])
    .prop_map(str::to_string)
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => int_value(),
        2 => float_value(),
        1 => prop::sample::select(vec!["true", "false", "-3", "x", "\"s\""]).prop_map(str::to_string),
    ]
}

/// Argument names: every name any kind accepts, and a few it does not.
fn key() -> impl Strategy<Value = String> {
    let mut keys: Vec<String> = registry::REGISTRY
        .iter()
        .flat_map(|def| match def.params {
            Params::List(params) => params.iter().map(|p| p.name.to_string()).collect(),
            Params::Ignored => Vec::new(),
        })
        .collect();
    keys.extend(["strid", "kernal", "groups"].map(String::from));
    keys.sort();
    keys.dedup();
    prop::sample::select(keys)
}

fn keyword() -> impl Strategy<Value = String> {
    let mut words: Vec<String> = registry::keywords().map(String::from).collect();
    words.extend(["frobnicate", "conv2d", "Relu", "r#type", "self", "fn"].map(String::from));
    prop::sample::select(words)
}

fn layer_name() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        3 => Just(None),
        3 => (0u8..6).prop_map(|i| Some(format!("l{i}"))),
        1 => prop::sample::select(vec![
            "r#type", "r#self", "output_calibration", "a_main_c", "new", "plan", "Self", "_", "conv_0", "res_main_conv_1",
            "input", "init",
        ])
        .prop_map(|s| Some(s.to_string())),
    ]
}

fn args() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just(String::new()),
        5 => prop::collection::vec((prop::option::of(key()), value()), 0..5).prop_map(|args| {
            let args: Vec<String> = args
                .into_iter()
                .map(|(key, value)| match key {
                    Some(key) => format!("{key} = {value}"),
                    None => value,
                })
                .collect();
            format!("({})", args.join(", "))
        }),
        1 => prop::sample::select(vec!["(", "(,)", "(= 3)", "(kernel =)", "[3]"]).prop_map(str::to_string),
    ]
}

/// A layer written the way its registry entry asks: its positional arguments in order, some of
/// its named ones, values mostly small and sane.
fn well_formed() -> impl Strategy<Value = String> {
    let defs: Vec<&'static registry::OpDef> = registry::REGISTRY.iter().copied().filter(|d| d.is_kept()).collect();
    (
        prop::sample::select(defs),
        prop::collection::vec(prop::bool::weighted(0.5), 8),
        prop::collection::vec(0usize..64, 8),
    )
        .prop_map(|(def, include, picks)| {
            let params = def.param_list();
            let mut args = Vec::new();
            for (i, param) in params.iter().enumerate() {
                let value = match param.kind {
                    registry::ParamKind::Count => ["1", "2", "3", "4", "8", "16", "0", "5"][picks[i] % 8].to_string(),
                    registry::ParamKind::Number => {
                        ["0.5", "0.1", "0.9", "0.25", "2.0", "1e-200", "1e308", "0.0"][picks[i] % 8].to_string()
                    }
                    registry::ParamKind::Flag => ["true", "false"][picks[i] % 2].to_string(),
                };
                let required = param.default == registry::ParamDefault::Required;
                if param.positional && (required || include[i]) {
                    args.push(value);
                } else if !param.positional && (required || include[i]) {
                    args.push(format!("{} = {value}", param.name));
                }
            }
            if args.is_empty() {
                def.keyword.to_string()
            } else {
                format!("{}({})", def.keyword, args.join(", "))
            }
        })
}

/// One entry of a chain; a `residual` gets a body built from `inner`.
fn entry(inner: BoxedStrategy<String>) -> impl Strategy<Value = String> {
    let layer = prop_oneof![
        3 => well_formed(),
        1 => (keyword(), args()).prop_map(|(keyword, args)| format!("{keyword}{args}")),
    ];
    (
        prop::option::weighted(0.1, prop::sample::select(vec!["/// doc", "#[allow(unscaled)]", "#[inline]"])),
        prop_oneof![3 => Just(None), 1 => layer_name()],
        layer,
        prop::option::weighted(0.3, (inner.clone(), prop::option::weighted(0.5, inner))),
    )
        .prop_map(|(attr, name, layer, body)| {
            let mut text = String::new();
            if let Some(attr) = attr {
                text += attr;
                text += "\n";
            }
            if let Some(name) = name {
                text += &format!("{name}: ");
            }
            text += &layer;
            if let Some((main, shortcut)) = body {
                text += &format!(" {{ {main} }}");
                if let Some(shortcut) = shortcut {
                    text += &format!(" shortcut {{ {shortcut} }}");
                }
            }
            text
        })
}

fn chain() -> impl Strategy<Value = String> {
    let leaf = prop::collection::vec(entry(Just(String::new()).boxed()), 0..4).prop_map(|e| e.join(",\n")).boxed();
    leaf.prop_recursive(4, 64, 8, |inner| prop::collection::vec(entry(inner), 0..8).prop_map(|e| e.join(",\n")))
}

fn option() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(int_value(), 1..4).prop_map(|dims| format!("input: [{}]", dims.join(", "))),
        1 => prop::sample::select(vec!["geometric", "fan_in", "fan_out", "arithmetic", "xavier"]).prop_map(|v| format!("init: {v}")),
        1 => int_value().prop_map(|v| format!("typical_kernel: {v}")),
        1 => value().prop_map(|v| format!("output_std: {v}")),
        1 => prop::sample::select(vec!["true", "false", "1"]).prop_map(|v| format!("fixed_scalars: {v}")),
        1 => prop::sample::select(vec!["true", "false"]).prop_map(|v| format!("branch_scaling: {v}")),
        1 => prop::sample::select(vec!["inptu: [3]", "init:", "input:", "fc2:", "/// trailing doc", "shortcut", "input: [3, 8, 8],,"])
            .prop_map(str::to_string),
    ]
}

fn declaration() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["Net", "Option", "FnMut", "Result", "Tensor", "Vec", "sn", "String", "Self"]),
        prop::collection::vec(option(), 0..4),
        prop_oneof![Just("input: [3, 8, 8]"), Just("input: [16]"), Just("")],
        chain(),
    )
        .prop_map(|(name, options, input, layers)| {
            let mut entries: Vec<String> = vec![input.to_string()];
            entries.extend(options);
            entries.push(layers);
            format!("\n/// A fuzzed declaration.\npub struct {name} {{\n{}\n}}\n", entries.join(",\n"))
        })
}

/// Every `compile_error!` of `output` is spanned on a token of the declaration: the source starts
/// with a newline, so a real token is on line 2 or later and the whole call (the call-site span
/// outside a compiler) is on line 1.
fn errors_point_into_the_declaration(output: &TokenStream) -> Result<(), String> {
    let mut trees: Vec<TokenTree> = output.clone().into_iter().collect();
    while let Some(tree) = trees.pop() {
        match tree {
            TokenTree::Ident(ident) if ident == "compile_error" && ident.span().start().line < 2 => {
                return Err("an error underlines the whole call".into());
            }
            TokenTree::Group(group) => trees.extend(group.stream()),
            _ => {}
        }
    }
    Ok(())
}

fn check(source: &str, slowest: &mut (Duration, String), valid: &mut usize) -> Result<(), TestCaseError> {
    let tokens: TokenStream = match source.parse() {
        Ok(tokens) => tokens,
        // Not Rust tokens at all (an unbalanced generator choice): rustc would reject it first.
        Err(_) => return Ok(()),
    };
    let start = Instant::now();
    let result = std::panic::catch_unwind(|| scalenet_codegen::expand_network(tokens));
    let elapsed = start.elapsed();
    if elapsed > slowest.0 {
        *slowest = (elapsed, source.to_string());
    }
    let output = result.map_err(|_| TestCaseError::fail(format!("panicked on:\n{source}")))?;
    prop_assert!(elapsed < Duration::from_secs(1), "took {elapsed:?} on:\n{source}");
    errors_point_into_the_declaration(&output).map_err(|e| TestCaseError::fail(format!("{e} on:\n{source}")))?;
    *valid += usize::from(!output.to_string().contains("compile_error"));
    Ok(())
}

#[test]
fn no_panic_no_hang_no_unspanned_error() {
    let cases = std::env::var("SCALENET_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(3000);
    // Panics are caught and reported as failures; keep their messages off the output.
    std::panic::set_hook(Box::new(|_| {}));
    // Deterministic by default, so CI sees the same cases every run; `SCALENET_FUZZ_RANDOM=1` explores.
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = match std::env::var_os("SCALENET_FUZZ_RANDOM") {
        Some(_) => TestRunner::new(config),
        None => TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha)),
    };
    let slowest = std::cell::RefCell::new((Duration::ZERO, String::new()));
    let valid = std::cell::Cell::new(0);
    let start = Instant::now();
    let result = runner.run(&declaration(), |source| {
        let mut count = valid.get();
        let outcome = check(&source, &mut slowest.borrow_mut(), &mut count);
        valid.set(count);
        outcome
    });
    let slowest = slowest.into_inner();
    let _ = std::panic::take_hook();
    println!(
        "{cases} declarations in {:.1} s, {} of them valid; slowest expansion {:?}:\n{}",
        start.elapsed().as_secs_f64(),
        valid.get(),
        slowest.0,
        slowest.1
    );
    if let Err(error) = result {
        panic!("{error}");
    }
}

/// The two sizes the issue names: a residual block nested 50 deep and a 2,000-layer chain.
#[test]
fn deep_nesting_and_long_chains_expand() {
    let mut nested = String::from("relu, conv(8, kernel = 3, padding = 1)");
    for _ in 0..50 {
        nested = format!("residual(beta = 0.5) {{ {nested} }}");
    }
    let long = (0..1000).map(|i| format!("l{i}: linear(16), relu")).collect::<Vec<_>>().join(", ");
    for (label, source) in [
        ("nested 50 deep", format!("\npub struct Deep {{ input: [8, 8, 8], {nested} }}")),
        ("2,000 layers", format!("\npub struct Long {{ input: [16], {long} }}")),
    ] {
        let start = Instant::now();
        let output = scalenet_codegen::expand_network(source.parse().unwrap());
        let elapsed = start.elapsed();
        println!("{label}: {elapsed:?}");
        assert!(!output.to_string().contains("compile_error"), "{label}: {output}");
        assert!(elapsed < Duration::from_secs(5), "{label}: {elapsed:?}");
    }
}
