//! The generated module: one template for a valid declaration and for the stub emitted beside
//! `compile_error!`, so the two cannot drift. The stub has the same items with bodies that never
//! run, so code that uses the struct reports nothing but the declaration's own errors.

use crate::ast::Network;
use crate::lower::Spans;
use crate::spec_tokens::spec_tokens;
use crate::steps::{expand_steps, field_ident, field_type, int, Code};
use proc_macro2::TokenStream;
use quote::quote;
use scalenet_calculus::{LayerSpec, NetworkSpec, Op, Plan, Shape};
use std::collections::HashSet;

fn shape_array(shape: Option<Shape>) -> (TokenStream, TokenStream) {
    let dims: Vec<_> = shape.map(|s| s.dims()).unwrap_or_default().into_iter().map(int).collect();
    let rank = int(dims.len());
    (quote!([usize; #rank]), quote!([#(#dims),*]))
}

/// What differs between the module of a valid declaration and the stub.
struct Parts {
    docs: TokenStream,
    fields: Vec<TokenStream>,
    constants: Vec<TokenStream>,
    input: Option<Shape>,
    output: Option<Shape>,
    /// Generated bodies, or `None` for the stub's `unreachable!()`.
    bodies: Option<Bodies>,
    /// `Module` (no dropout) or only `ModuleT` (dropout needs `train`).
    uses_train: bool,
    /// [`Plan::fingerprint`] of the plan the constants come from (0 for the stub).
    fingerprint: u64,
    /// The calculus's warnings, each spanned on its layer.
    warnings: Vec<proc_macro_warning::FormattedWarning>,
}

struct Bodies {
    constructors: Vec<TokenStream>,
    forward: Vec<TokenStream>,
    spec: TokenStream,
}

/// The module of a checked declaration.
pub fn expand(
    network: &Network,
    spec: &NetworkSpec,
    spans: &Spans,
    plan: &Plan,
    warnings: Vec<proc_macro_warning::FormattedWarning>,
) -> TokenStream {
    let report_doc = format!("\n\n# Scaling calculus\n\n```text\n{plan}\n```");
    let sn = runtime_alias(&network.ident);
    let Code { fields, constructors, constants, forward, uses_train } =
        expand_steps(&plan.steps, &network.vis, spans, &sn);
    generate(
        network,
        Parts {
            docs: quote!(#[doc = #report_doc]),
            fields,
            constants,
            input: Some(plan.input),
            output: Some(plan.output),
            bodies: Some(Bodies { constructors, forward, spec: spec_tokens(spec, &sn) }),
            uses_train,
            fingerprint: plan.fingerprint(),
            warnings,
        },
    )
}

/// The same items for an invalid declaration, with bodies that never run. `lowered` is the
/// declaration when it got as far as the calculus: then the stub has the layers' fields too
/// (but for a bottleneck's, which need shapes).
pub fn stub(network: &Network, lowered: Option<(&NetworkSpec, &Spans)>) -> TokenStream {
    let input = network.options.input.as_ref().and_then(|input| match input.value[..] {
        [features] => Some(Shape::Vector { features }),
        [channels, height, width] => Some(Shape::Image { channels, height, width }),
        _ => None,
    });
    let mut fields = Vec::new();
    if let Some((spec, spans)) = lowered {
        // The network's own fields are declared by the template; a layer that took one of their
        // names is already an error.
        let mut seen: HashSet<String> =
            scalenet_calculus::rules::RESERVED_NAMES.iter().map(|n| n.to_string()).collect();
        stub_fields(&spec.layers, "", &network.vis, spans, &mut fields, &mut seen);
    }
    generate(
        network,
        Parts {
            docs: TokenStream::new(),
            fields,
            constants: Vec::new(),
            input,
            output: None,
            bodies: None,
            uses_train: false,
            fingerprint: 0,
            warnings: Vec::new(),
        },
    )
}

/// The fields a valid declaration would have: one per layer with parameters, branches flattened
/// as `<block>_main_<layer>`. A name given twice (already an error) gets one field.
fn stub_fields(
    layers: &[LayerSpec],
    prefix: &str,
    vis: &syn::Visibility,
    spans: &Spans,
    fields: &mut Vec<TokenStream>,
    seen: &mut HashSet<String>,
) {
    for layer in layers {
        let Some(name) = layer.field_name() else { continue };
        let path = if prefix.is_empty() { name } else { format!("{prefix}_{name}") };
        if let Op::Residual(block) = &layer.op {
            stub_fields(&block.main, &format!("{path}_main"), vis, spans, fields, seen);
            let shortcut = block.shortcut.as_deref().unwrap_or_default();
            stub_fields(shortcut, &format!("{path}_shortcut"), vis, spans, fields, seen);
        } else if let Some(ty) = field_type(&layer.op) {
            if seen.insert(path.clone()) {
                let ident = field_ident(&path);
                let docs = spans.docs(layer.id);
                fields.push(quote!(#(#docs)* #vis #ident: #ty));
            }
        }
    }
}

/// The name generated code gives `scalenet::__private` inside its block: `sn`, unless the network
/// itself is called `sn`.
pub fn runtime_alias(network: &syn::Ident) -> syn::Ident {
    if network == "sn" {
        quote::format_ident!("sn_")
    } else {
        quote::format_ident!("sn")
    }
}

fn generate(network: &Network, parts: Parts) -> TokenStream {
    let Network { attrs, vis, ident, .. } = network;
    let sn = runtime_alias(ident);
    let name = ident.to_string();
    let Parts { docs, fields, constants, input, output, bodies, uses_train, fingerprint, warnings } = parts;
    let (input_type, input_value) = shape_array(input);
    let (output_type, output_value) = shape_array(output);
    let unreachable = quote!(::core::unreachable!("invalid network! declaration"));
    let (new_body, forward_body, spec_body) = match bodies {
        Some(Bodies { constructors, forward, spec }) => {
            let train_unused = (!uses_train).then(|| quote!(let _ = train;));
            (
                quote! {
                    ::core::result::Result::Ok(Self {
                        #(#constructors,)*
                        output_calibration: vb.get_with_hints((), "output_calibration", #sn::Init::Const(1.0))?,
                    })
                },
                quote! {
                    #train_unused
                    #sn::check_input(xs, &Self::INPUT_SHAPE, self.output_calibration.dtype(), #name)?;
                    let mut hook = #sn::Hook::new(hook);
                    let xs = xs.clone();
                    #[allow(unused_mut)]
                    let mut pending: f64 = 1.0;
                    #(#forward)*
                    #sn::calibrated(&xs, &self.output_calibration, pending)
                },
                spec,
            )
        }
        None => {
            (quote!(let _ = vb; #unreachable), quote!(let _ = (xs, train, hook); #unreachable), unreachable.clone())
        }
    };
    let module_impl = if uses_train {
        quote! {
            impl #sn::ModuleT for #ident {
                /// `[batch, ...INPUT_SHAPE] -> [batch, ...OUTPUT_SHAPE]`; dropout is active only when `train`.
                fn forward_t(&self, xs: &#sn::Tensor, train: bool) -> #sn::Result<#sn::Tensor> {
                    self.forward_hooked(xs, train, ::core::option::Option::None)
                }
            }
        }
    } else {
        quote! {
            impl #sn::Module for #ident {
                /// `[batch, ...INPUT_SHAPE] -> [batch, ...OUTPUT_SHAPE]`.
                fn forward(&self, xs: &#sn::Tensor) -> #sn::Result<#sn::Tensor> {
                    self.forward_hooked(xs, false, ::core::option::Option::None)
                }
            }
        }
    };

    // Conditions and lint levels written on the struct apply to everything generated for it: a
    // `#[cfg(feature = "..")]` network has no impls left behind when it is off. (`cfg_attr` may
    // carry a derive, and `expect` would go unfulfilled on one of the two items: they stay on the
    // struct.)
    let shared_attrs = attrs
        .iter()
        .filter(|attr| ["cfg", "allow", "warn", "deny", "forbid"].iter().any(|name| attr.path().is_ident(name)));
    quote! {
        #(#attrs)*
        #docs
        #vis struct #ident {
            #(#fields,)*
            /// Output calibration (section 7), 1 until [`Self::calibrate_output`] sets it; kept in the
            /// `VarMap` as `output_calibration` so it is saved and loaded with the weights, and
            /// applied detached so no optimizer trains it.
            #vis output_calibration: ::scalenet::candle_core::Tensor,
        }

        // The calculus's constants are computed literals; some land near 1/√2 or √2. A warning is
        // the use of a deprecated unit constant (`let _ = _w;`), which clippy would flag again.
        #[allow(clippy::approx_constant, clippy::let_unit_value)]
        #(#shared_attrs)*
        const _: () = {
            use ::scalenet::__private as #sn;

            #(#constants)*

            #(#warnings)*

            impl #ident {
                /// Per-sample input shape, `[C, H, W]` or `[D]`.
                pub const INPUT_SHAPE: #input_type = #input_value;
                /// Per-sample output shape.
                pub const OUTPUT_SHAPE: #output_type = #output_value;

                /// The fingerprint of the plan this code was generated from, computed at compile time:
                /// `Self::plan().fingerprint()` must equal it (the tests check every fixture).
                #[doc(hidden)]
                pub const PLAN_FINGERPRINT: u64 = #fingerprint;

                /// Creates the parameters through `vb` (`<layer>.weight`, `<layer>.bias`, candle-nn layout),
                /// drawn with the variances the calculus chose; biases start at zero. With a `VarMap`
                /// backend the draws come from candle's RNG, which cannot be seeded on CPU: use
                /// [`Self::new_seeded`] for reproducible runs, or load trained weights through `vb`.
                pub fn new(vb: #sn::VarBuilder) -> #sn::Result<Self> {
                    #new_body
                }

                /// Creates the parameters in `varmap`, drawn from a `rand` generator seeded with `seed`
                /// and the parameter's name: the same seed gives the same values on every device.
                pub fn new_seeded(varmap: &#sn::VarMap, dtype: #sn::DType, device: &#sn::Device, seed: u64) -> #sn::Result<Self> {
                    Self::new(#sn::seeded_var_builder(varmap, seed, dtype, device))
                }

                /// The declaration, as the calculus reads it.
                pub fn spec() -> #sn::calculus::NetworkSpec {
                    #spec_body
                }

                /// The calculus's plan: every op, init variance, fixed scalar and predicted moment.
                pub fn plan() -> &'static #sn::calculus::Plan {
                    static PLAN: ::std::sync::OnceLock<#sn::calculus::Plan> = ::std::sync::OnceLock::new();
                    PLAN.get_or_init(|| {
                        #sn::calculus::analyze(&Self::spec()).expect("network! checked this declaration at compile time")
                    })
                }

                /// The plan as a table (`Display`), the same one as in this struct's documentation.
                pub fn report() -> #sn::Report {
                    #sn::Report::new(#name, Self::plan())
                }

                /// The output of every top-level step of [`Self::plan`] (`plan().steps`, fixed scalars and
                /// whole residual blocks included), in order: for measuring what the calculus predicts.
                pub fn forward_steps(&self, xs: &#sn::Tensor, train: bool) -> #sn::Result<::std::vec::Vec<#sn::Tensor>> {
                    let mut trace = ::std::vec::Vec::new();
                    let mut record = |_: usize, xs: #sn::Tensor| {
                        trace.push(xs.clone());
                        ::core::result::Result::Ok(xs)
                    };
                    self.forward_hooked(xs, train, ::core::option::Option::Some(&mut record))?;
                    ::core::result::Result::Ok(trace)
                }

                /// The forward pass with `hook(step, output)` called after every top-level step of
                /// `plan().steps`; what it returns continues the pass (add a zero probe variable there
                /// to read `dL/dx` of that activation, which candle's `GradStore` does not keep).
                pub fn forward_hooked(
                    &self,
                    xs: &#sn::Tensor,
                    train: bool,
                    hook: ::core::option::Option<#sn::StepHook<'_>>,
                ) -> #sn::Result<#sn::Tensor> {
                    #forward_body
                }

                /// Sets the output calibration so that the output standard deviation on `xs` (evaluation
                /// mode) is `target_std` (`Self::plan().output_std` keeps the plan's; the paper's experiments
                /// use 0.05), as section 7 and the paper's experiments do after one batch. `varmap` must
                /// hold this network's variables. Returns the new factor.
                pub fn calibrate_output(&self, varmap: &#sn::VarMap, xs: &#sn::Tensor, target_std: f64) -> #sn::Result<f64> {
                    #sn::calibrate(varmap, &self.output_calibration, &self.forward_hooked(xs, false, ::core::option::Option::None)?, target_std)
                }
            }

            #module_impl

            impl #sn::Network for #ident {
                const NAME: &'static str = #name;

                fn plan() -> &'static #sn::calculus::Plan {
                    Self::plan()
                }

                fn new_seeded(varmap: &#sn::VarMap, dtype: #sn::DType, device: &#sn::Device, seed: u64) -> #sn::Result<Self> {
                    Self::new_seeded(varmap, dtype, device, seed)
                }

                fn forward_hooked(
                    &self,
                    xs: &#sn::Tensor,
                    train: bool,
                    hook: ::core::option::Option<#sn::StepHook<'_>>,
                ) -> #sn::Result<#sn::Tensor> {
                    Self::forward_hooked(self, xs, train, hook)
                }
            }
        };
    }
}
