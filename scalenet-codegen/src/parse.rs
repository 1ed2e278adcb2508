//! Token stream -> [`ast::Network`]. Each comma-separated entry of the struct body is parsed on
//! its own: a bad entry records an error and parsing goes on with the next.

use crate::ast::{Arg, Body, Layer, Network, Options, Spanned, Value, ValueKind};
use crate::errors::{did_you_mean, Errors};
use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::{braced, bracketed, parenthesized, Attribute, Ident, Lit, LitInt, Token, Visibility};

/// What a network option's value is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OptionKind {
    Input,
    Init,
    TypicalKernel,
    OutputStd,
    Precision,
    Flag(Flag),
}

/// The options that are `true` or `false`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flag {
    FixedScalars,
    BranchScaling,
    SpatialCoherence,
    CentredWeights,
    VaryingOutputStd,
}

/// A network option: its name, a use for messages, and what its value is.
pub struct NetworkOption {
    pub name: &'static str,
    example: &'static str,
    kind: OptionKind,
}

/// Every network option, in the order the documentation lists them: what the parser, its
/// did-you-mean hints and its messages read.
pub const OPTIONS: [NetworkOption; 10] = [
    NetworkOption { name: "input", example: "input: [3, 32, 32]", kind: OptionKind::Input },
    NetworkOption { name: "init", example: "init: geometric", kind: OptionKind::Init },
    NetworkOption { name: "typical_kernel", example: "typical_kernel: 3", kind: OptionKind::TypicalKernel },
    NetworkOption { name: "output_std", example: "output_std: 0.05", kind: OptionKind::OutputStd },
    NetworkOption { name: "fixed_scalars", example: "fixed_scalars: true", kind: OptionKind::Flag(Flag::FixedScalars) },
    NetworkOption {
        name: "branch_scaling",
        example: "branch_scaling: true",
        kind: OptionKind::Flag(Flag::BranchScaling),
    },
    NetworkOption {
        name: "spatial_coherence",
        example: "spatial_coherence: false",
        kind: OptionKind::Flag(Flag::SpatialCoherence),
    },
    NetworkOption {
        name: "centred_weights",
        example: "centred_weights: true",
        kind: OptionKind::Flag(Flag::CentredWeights),
    },
    NetworkOption {
        name: "varying_output_std",
        example: "varying_output_std: true",
        kind: OptionKind::Flag(Flag::VaryingOutputStd),
    },
    NetworkOption { name: "precision", example: "precision: f16", kind: OptionKind::Precision },
];

/// The option called `name`.
fn network_option(name: &str) -> Option<&'static NetworkOption> {
    OPTIONS.iter().find(|option| option.name == name)
}

fn option_names() -> impl Iterator<Item = &'static str> {
    OPTIONS.iter().map(|option| option.name)
}

impl Options {
    fn flag(&mut self, flag: Flag) -> &mut Option<Spanned<bool>> {
        match flag {
            Flag::FixedScalars => &mut self.fixed_scalars,
            Flag::BranchScaling => &mut self.branch_scaling,
            Flag::SpatialCoherence => &mut self.spatial_coherence,
            Flag::CentredWeights => &mut self.centred_weights,
            Flag::VaryingOutputStd => &mut self.varying_output_std,
        }
    }

    /// Whether the option was given already.
    fn is_given(&mut self, kind: OptionKind) -> bool {
        match kind {
            OptionKind::Input => self.input.is_some(),
            OptionKind::Init => self.init.is_some(),
            OptionKind::TypicalKernel => self.typical_kernel.is_some(),
            OptionKind::OutputStd => self.output_std.is_some(),
            OptionKind::Precision => self.precision.is_some(),
            OptionKind::Flag(flag) => self.flag(flag).is_some(),
        }
    }
}

/// Parses `#[attrs] vis struct Name { entries }`. Only a broken outer structure is fatal; a
/// struct that stops after its name (`pub struct Net`) is an error on the name and still gets its
/// stub, so code that uses it adds no errors of its own.
pub fn parse_network(tokens: TokenStream, errors: &mut Errors) -> syn::Result<Network> {
    const SHAPE: &str = "`network!` expects `pub struct Name { input: [C, H, W], layer, ... }`";
    let (attrs, vis, ident, body) = (|input: ParseStream| {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let keyword = input.parse::<Token![struct]>()?;
        if input.is_empty() {
            return Err(syn::Error::new(keyword.span, format!("the struct has no name; {SHAPE}")));
        }
        let ident: Ident = input.parse()?;
        if input.is_empty() {
            return Ok((attrs, vis, ident, None));
        }
        let content;
        braced!(content in input);
        let body: TokenStream = content.parse()?;
        Ok((attrs, vis, ident, Some(body)))
    })
    .parse2(tokens)
    .map_err(|e| {
        if e.to_string().contains(SHAPE) {
            e
        } else {
            syn::Error::new(e.span(), format!("{e}; {SHAPE}"))
        }
    })?;
    let Some(body) = body else {
        errors.error(
            ident.span(),
            format!("`{ident}` has no body; declare its input and layers in braces: `{ident} {{ input: [C, H, W], layer, ... }}`"),
        );
        // The missing body is the error; a missing `input` would repeat it.
        let options = Options { input_written: true, ..Options::default() };
        return Ok(Network { attrs, vis, ident, options, layers: Vec::new() });
    };

    let mut network = Network { attrs, vis, ident, options: Options::default(), layers: Vec::new() };
    for entry in split_top_level_commas(body) {
        if let Err(error) = parse_scoped(entry, |input| parse_entry(input, &mut network, errors)) {
            errors.push(error);
        }
    }
    Ok(network)
}

/// Parses one entry so that an error at its end (an entry that stops early, like `fc2:` or
/// `init:`) underlines its last token rather than the whole macro call: the entry is parsed inside
/// a bracket group spanned on that token, and syn reports a premature end at the group's span.
fn parse_scoped<T>(entry: TokenStream, parse: impl FnOnce(ParseStream) -> syn::Result<T>) -> syn::Result<T> {
    let last = entry.clone().into_iter().last().map_or_else(proc_macro2::Span::call_site, |tree| tree.span());
    let mut group = proc_macro2::Group::new(proc_macro2::Delimiter::Bracket, entry);
    group.set_span(last);
    (|input: ParseStream| {
        let content;
        bracketed!(content in input);
        parse(&content)
    })
    .parse2(TokenStream::from(TokenTree::Group(group)))
}

fn split_top_level_commas(tokens: TokenStream) -> Vec<TokenStream> {
    let mut entries = vec![TokenStream::new()];
    for tree in tokens {
        match &tree {
            TokenTree::Punct(p) if p.as_char() == ',' => entries.push(TokenStream::new()),
            _ => entries.last_mut().expect("nonempty").extend([tree]),
        }
    }
    entries.retain(|entry| !entry.is_empty());
    entries
}

fn parse_entry(input: ParseStream, network: &mut Network, errors: &mut Errors) -> syn::Result<()> {
    let attrs = input.call(Attribute::parse_outer)?;
    let key = if input.peek(Ident) && input.peek2(Token![:]) && !input.peek2(Token![::]) {
        let key: Ident = input.parse()?;
        input.parse::<Token![:]>()?;
        Some(key)
    } else {
        None
    };
    if let Some(key) = &key {
        let name = key.to_string();
        if let Some(option) = network_option(&name) {
            for attr in attrs.iter().filter(|a| !a.path().is_ident("doc")) {
                errors.error(attr.span(), "network options take no attributes; remove it");
            }
            return parse_option(option, key, input, &mut network.options, errors);
        }
    }
    let fork = input.fork();
    let layer = match parse_layer(input, key.clone(), attrs, errors) {
        Ok(layer) => layer,
        Err(error) => {
            // `inptu: [3, 32, 32]` is a misspelled option, not a malformed layer.
            if let Some(key) = &key {
                if fork.peek(Ident) || !fork.peek(syn::token::Paren) {
                    let name = key.to_string();
                    if let Some(option) = did_you_mean(&name, option_names()) {
                        // The misspelling is reported; a "missing input" would repeat it.
                        network.options.input_written |= option == "input";
                        return Err(syn::Error::new(
                            key.span(),
                            format!("unknown option `{name}`; did you mean `{option}`?"),
                        ));
                    }
                }
            }
            return Err(error);
        }
    };
    if let Some(key) = &layer.name {
        let kind = layer.kind.to_string();
        let name = key.to_string();
        if scalenet_calculus::registry::lookup(&kind).is_none() {
            if let Some(option) = did_you_mean(&name, option_names()) {
                network.options.input_written |= option == "input";
                return Err(syn::Error::new(key.span(), format!("unknown option `{name}`; did you mean `{option}`?")));
            }
        }
    }
    network.layers.push(layer);
    Ok(())
}

fn parse_layer(
    input: ParseStream,
    name: Option<Ident>,
    attrs: Vec<Attribute>,
    errors: &mut Errors,
) -> syn::Result<Layer> {
    let mut docs = Vec::new();
    let mut allow_unscaled = false;
    for attr in attrs {
        if attr.path().is_ident("doc") {
            docs.push(attr);
        } else if attr.path().is_ident("allow") && is_allow_unscaled(&attr) {
            allow_unscaled = true;
        } else {
            errors.error(
                attr.span(),
                "unsupported attribute on a layer; only doc comments and `#[allow(unscaled)]` are accepted",
            );
        }
    }
    let kind: Ident = input.call(syn::ext::IdentExt::parse_any).map_err(|e| {
        let expected =
            "expected a layer such as `relu` or `conv(16, kernel = 3)`, or an option such as `input: [3, 32, 32]`";
        syn::Error::new(e.span(), expected)
    })?;
    let args = if input.peek(syn::token::Paren) {
        let content;
        parenthesized!(content in input);
        let args = Punctuated::<Arg, Token![,]>::parse_terminated_with(&content, parse_arg)?;
        Some(args.into_iter().collect())
    } else {
        None
    };
    let body = if input.peek(syn::token::Brace) {
        let content;
        braced!(content in input);
        let main = parse_layer_list(content.parse()?, errors);
        let shortcut = if input.peek(Ident) {
            let keyword: Ident = input.parse()?;
            if keyword != "shortcut" {
                return Err(syn::Error::new(keyword.span(), "expected `shortcut { .. }` or `,` after the main branch"));
            }
            let content;
            braced!(content in input);
            Some((keyword, parse_layer_list(content.parse()?, errors)))
        } else {
            None
        };
        Some(Body { main, shortcut })
    } else {
        None
    };
    if !input.is_empty() {
        return Err(input.error("expected `,` after the layer"));
    }
    Ok(Layer { docs, allow_unscaled, name, kind, args, body })
}

/// The layers of a branch: named or unnamed layers, no options.
fn parse_layer_list(tokens: TokenStream, errors: &mut Errors) -> Vec<Layer> {
    let mut layers = Vec::new();
    for entry in split_top_level_commas(tokens) {
        let parsed = parse_scoped(entry, |input: ParseStream| {
            let attrs = input.call(Attribute::parse_outer)?;
            let name = if input.peek(Ident) && input.peek2(Token![:]) && !input.peek2(Token![::]) {
                let name: Ident = input.parse()?;
                input.parse::<Token![:]>()?;
                if network_option(&name.to_string()).is_some() {
                    return Err(syn::Error::new(
                        name.span(),
                        format!("`{name}` is a network option; give it at the top of the network, not inside a block"),
                    ));
                }
                Some(name)
            } else {
                None
            };
            parse_layer(input, name, attrs, errors)
        });
        match parsed {
            Ok(layer) => layers.push(layer),
            Err(error) => errors.push(error),
        }
    }
    layers
}

fn is_allow_unscaled(attr: &Attribute) -> bool {
    attr.parse_args::<Ident>().is_ok_and(|ident| ident == "unscaled")
}

fn parse_arg(input: ParseStream) -> syn::Result<Arg> {
    if input.peek(Ident) && input.peek2(Token![=]) {
        let key: Ident = input.parse()?;
        input.parse::<Token![=]>()?;
        Ok(Arg { key: Some(key), value: parse_value(input)? })
    } else {
        Ok(Arg { key: None, value: parse_value(input)? })
    }
}

fn parse_value(input: ParseStream) -> syn::Result<Value> {
    let minus: Option<Token![-]> = input.parse()?;
    let lit: Lit = input.parse().map_err(|e| syn::Error::new(e.span(), "expected a number or `true`/`false`"))?;
    let span = minus.map_or(lit.span(), |m| m.span.join(lit.span()).unwrap_or(lit.span()));
    reject_suffix(&lit)?;
    let kind = match (&lit, minus.is_some()) {
        (Lit::Int(int), false) => ValueKind::Int(int.base10_parse()?),
        (Lit::Int(int), true) => ValueKind::NegativeInt(int.base10_parse()?),
        (Lit::Float(float), negative) => {
            let v: f64 = float.base10_parse()?;
            ValueKind::Float(if negative { -v } else { v })
        }
        (Lit::Bool(b), false) => ValueKind::Bool(b.value),
        _ => return Err(syn::Error::new(span, "expected a number or `true`/`false`")),
    };
    Ok(Value { kind, span })
}

/// `16u8`, `4usize`, `0.5f32`: the DSL's numbers are plain, and a suffix would be dropped in
/// silence (a size is a `usize`, a factor an `f64`, whatever the suffix says).
fn reject_suffix(lit: &Lit) -> syn::Result<()> {
    let (suffix, digits) = match lit {
        Lit::Int(int) => (int.suffix(), int.base10_digits().to_string()),
        Lit::Float(float) => (float.suffix(), float.base10_digits().to_string()),
        _ => return Ok(()),
    };
    if suffix.is_empty() {
        return Ok(());
    }
    Err(syn::Error::new(
        lit.span(),
        format!(
            "`{}` has the type suffix `{suffix}`, which `network!` would ignore; write the plain number `{digits}`",
            lit.to_token_stream()
        ),
    ))
}

fn parse_option(
    option: &NetworkOption,
    key: &Ident,
    input: ParseStream,
    options: &mut Options,
    errors: &mut Errors,
) -> syn::Result<()> {
    let name = option.name;
    let span = key.span();
    if input.is_empty() {
        options.input_written |= option.kind == OptionKind::Input;
        return Err(syn::Error::new(
            span,
            format!("`{name}` needs a value after the colon, e.g. `{}`", option.example),
        ));
    }
    if options.is_given(option.kind) {
        errors.error(span, format!("duplicate option `{name}`; give it once"));
    }
    match option.kind {
        OptionKind::Input => {
            options.input_written = true;
            let content;
            let bracket = bracketed!(content in input);
            let dims = Punctuated::<LitInt, Token![,]>::parse_terminated(&content).map_err(|e| {
                syn::Error::new(e.span(), "`input` lists positive integers: [C, H, W] for images or [D] for vectors")
            })?;
            for dim in &dims {
                reject_suffix(&Lit::Int(dim.clone()))?;
            }
            let dims: Vec<usize> = dims.iter().map(LitInt::base10_parse).collect::<syn::Result<_>>()?;
            let span = bracket.span.join();
            if dims.len() != 1 && dims.len() != 3 {
                return Err(syn::Error::new(
                    span,
                    format!("`input` has {} dimensions; write [C, H, W] for images or [D] for vectors", dims.len()),
                ));
            }
            options.input = Some(Spanned { value: dims, span });
        }
        OptionKind::Init => {
            let scheme: Ident = input.parse()?;
            let (value, span) = if input.peek(syn::token::Paren) {
                let content;
                let parens = parenthesized!(content in input);
                let variance: Ident = content.parse()?;
                if !content.is_empty() {
                    return Err(content.error("`mirrored(..)` takes one variance rule, e.g. `mirrored(fan_in)`"));
                }
                // `mirrored(..)` errors are about the variance rule: underline it.
                let span = if scheme == "mirrored" { variance.span() } else { scheme.span() };
                let _ = parens;
                (format!("{scheme}({variance})"), span)
            } else {
                (scheme.to_string(), scheme.span())
            };
            options.init = Some(Spanned { value, span });
        }
        OptionKind::TypicalKernel => {
            let lit: LitInt = input.parse()?;
            reject_suffix(&Lit::Int(lit.clone()))?;
            options.typical_kernel = Some(Spanned { value: lit.base10_parse()?, span: lit.span() });
        }
        OptionKind::OutputStd => {
            let value = parse_value(input)?;
            let std =
                value.as_f64().ok_or_else(|| syn::Error::new(value.span, "`output_std` is a number such as 0.05"))?;
            options.output_std = Some(Spanned { value: std, span: value.span });
        }
        OptionKind::Precision => {
            let format: Ident = input.parse()?;
            options.precision = Some(Spanned { value: format.to_string(), span: format.span() });
        }
        OptionKind::Flag(flag) => {
            let value = parse_value(input)?;
            let ValueKind::Bool(on) = value.kind else {
                return Err(syn::Error::new(value.span, format!("`{name}` is `true` or `false`")));
            };
            *options.flag(flag) = Some(Spanned { value: on, span: value.span });
        }
    }
    if !input.is_empty() {
        return Err(input.error("expected `,` after the option"));
    }
    Ok(())
}
