//! The declaration as Rust code, so that `plan()` can run the calculus again at run time. Generic
//! over layer kinds: each layer is rebuilt from its keyword and its arguments through the
//! calculus's registry.

use crate::steps::{arg_literal, float, int};
use proc_macro2::TokenStream;
use quote::quote;
use scalenet_calculus::{LayerSpec, NetworkSpec, Op, Shape};

pub fn spec_tokens(spec: &NetworkSpec) -> TokenStream {
    let input = match spec.input.expect("checked") {
        Shape::Image { channels, height, width } => {
            let (c, h, w) = (int(channels), int(height), int(width));
            quote!(sn::calculus::Shape::Image { channels: #c, height: #h, width: #w })
        }
        Shape::Vector { features } => {
            let d = int(features);
            quote!(sn::calculus::Shape::Vector { features: #d })
        }
    };
    let init = spec.init.name();
    let typical = match spec.typical_kernel {
        Some(k) => {
            let k = int(k);
            quote!(::core::option::Option::Some(#k))
        }
        None => quote!(::core::option::Option::None),
    };
    let output_std = float(spec.output_std);
    let (fixed_scalars, branch_scaling) = (spec.fixed_scalars, spec.branch_scaling);
    let layers = layers(&spec.layers);
    quote! {
        let mut spec = sn::calculus::NetworkSpec::new(#input)
            .with_init(sn::calculus::InitScheme::from_name(#init).expect("a known init"))
            .with_output_std(#output_std)
            .with_fixed_scalars(#fixed_scalars)
            .with_branch_scaling(#branch_scaling);
        spec.typical_kernel = #typical;
        spec.layers = #layers;
        spec.assign_layer_ids();
        spec
    }
}

fn layers(layers: &[LayerSpec]) -> TokenStream {
    let layers = layers.iter().map(|layer| {
        let name = match &layer.name {
            Some(name) => quote!(::core::option::Option::Some(::std::string::String::from(#name))),
            None => quote!(::core::option::Option::None),
        };
        let keyword = layer.op.keyword();
        let args = layer.op.args().into_iter().map(|arg| match arg {
            Some(value) => {
                let value = match value {
                    scalenet_calculus::registry::ArgValue::Count(_) => quote!(Count),
                    scalenet_calculus::registry::ArgValue::Number(_) => quote!(Number),
                    scalenet_calculus::registry::ArgValue::Flag(_) => quote!(Flag),
                };
                let literal = arg_literal(arg.expect("some"));
                quote!(::core::option::Option::Some(sn::calculus::registry::ArgValue::#value(#literal)))
            }
            None => quote!(::core::option::Option::None),
        });
        let branches = match &layer.op {
            Op::Residual(block) => {
                let main = self::layers(&block.main);
                let shortcut = match &block.shortcut {
                    Some(shortcut) => {
                        let shortcut = self::layers(shortcut);
                        quote!(::core::option::Option::Some(#shortcut))
                    }
                    None => quote!(::core::option::Option::None),
                };
                quote!(::core::option::Option::Some((#main, #shortcut)))
            }
            _ => quote!(::core::option::Option::None),
        };
        let allow = layer.allow_unscaled;
        quote! {
            sn::calculus::LayerSpec {
                name: #name,
                allow_unscaled: #allow,
                ..sn::calculus::LayerSpec::new(sn::calculus::registry::rebuild(#keyword, &[#(#args),*], #branches))
            }
        }
    });
    quote!(::std::vec![#(#layers),*])
}
