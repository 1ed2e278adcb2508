//! The declaration as Rust code, so that `plan()` can run the calculus again at run time. Generic
//! over layer kinds: each layer is rebuilt from its keyword and its arguments through the
//! calculus's registry.

use crate::steps::{arg_literal, float, int};
use proc_macro2::TokenStream;
use quote::quote;
use scalenet_calculus::registry::ArgValue;
use scalenet_calculus::{LayerSpec, NetworkSpec, Op, Shape};

pub fn spec_tokens(spec: &NetworkSpec, sn: &proc_macro2::Ident) -> TokenStream {
    let input = match spec.input {
        Shape::Image { channels, height, width } => {
            let (c, h, w) = (int(channels), int(height), int(width));
            quote!(#sn::calculus::Shape::Image { channels: #c, height: #h, width: #w })
        }
        Shape::Vector { features } => {
            let d = int(features);
            quote!(#sn::calculus::Shape::Vector { features: #d })
        }
    };
    let init = spec.init_name();
    let typical = match spec.typical_kernel {
        Some(k) => {
            let k = int(k);
            quote!(Some(#k))
        }
        None => quote!(None),
    };
    let output_std = float(spec.output_std);
    let (fixed_scalars, branch_scaling, spatial_coherence) =
        (spec.fixed_scalars, spec.branch_scaling, spec.spatial_coherence);
    let (centred_weights, varying_output_std) = (spec.centred_weights, spec.varying_output_std);
    let precision = match spec.precision {
        Some(format) => {
            let name = format.name();
            quote!(Some(#sn::calculus::Format::from_name(#name).expect("a known format")))
        }
        None => quote!(None),
    };
    let layers = layers(&spec.layers);
    quote! {
        use ::core::option::Option::{None, Some};
        use #sn::calculus::registry::ArgValue::{Count, Flag, Number};
        use #sn::spec_layer as layer;
        let mut spec = #sn::calculus::NetworkSpec::new(#input)
            .with_init_law(#sn::calculus::NetworkSpec::parse_init(#init).expect("a known init"))
            .with_output_std(#output_std)
            .with_fixed_scalars(#fixed_scalars)
            .with_branch_scaling(#branch_scaling)
            .with_spatial_coherence(#spatial_coherence)
            .with_centred_weights(#centred_weights)
            .with_varying_output_std(#varying_output_std)
            .with_precision(#precision);
        spec.typical_kernel = #typical;
        spec.layers = #layers;
        spec.assign_layer_ids();
        spec
    }
}

fn layers(layers: &[LayerSpec]) -> TokenStream {
    let layers = layers.iter().map(|layer| {
        let name = match &layer.name {
            Some(name) => quote!(Some(#name)),
            None => quote!(None),
        };
        let keyword = layer.op.keyword();
        let args = layer.op.args().into_iter().map(|arg| match arg {
            Some(value) => {
                let variant = match value {
                    ArgValue::Count(_) => quote!(Count),
                    ArgValue::Number(_) => quote!(Number),
                    ArgValue::Flag(_) => quote!(Flag),
                };
                let literal = arg_literal(value);
                quote!(Some(#variant(#literal)))
            }
            None => quote!(None),
        });
        let branches = match &layer.op {
            Op::Residual(block) => {
                let main = self::layers(&block.main);
                let shortcut = match &block.shortcut {
                    Some(shortcut) => {
                        let shortcut = self::layers(shortcut);
                        quote!(Some(#shortcut))
                    }
                    None => quote!(None),
                };
                quote!(Some((#main, #shortcut)))
            }
            _ => quote!(None),
        };
        let allow = layer.allow_unscaled;
        quote!(layer(#name, #keyword, &[#(#args),*], #branches, #allow))
    });
    quote!(::std::vec::Vec::from([#(#layers),*]))
}
