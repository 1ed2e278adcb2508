//! Every form of `init: mirrored` on the layer kinds it supports: it compiles, and the generated
//! network is looks-linear at initialization.
use scalenet::candle_core::{DType, Device, Tensor};
use scalenet::candle_nn::ModuleT;
use scalenet::candle_nn::VarMap;
use scalenet::network;

network! {
    pub struct MirroredConv {
        input: [3, 8, 8],
        init: mirrored,
        conv1: conv(8, kernel = 3, padding = 1),
        relu,
        avg_pool(2),
        conv2: conv(6, kernel = 2, stride = 2),
        relu,
        flatten,
        dropout(0.1),
        fc: linear(5),
    }
}

network! {
    pub struct MirroredFanIn { input: [9], init: mirrored(fan_in), fc1: linear(10), relu, fc2: linear(3) }
}

network! {
    pub struct MirroredOrthogonal { input: [9], init: mirrored(orthogonal), fixed_scalars: false, fc1: linear(10), relu, fc2: linear(3) }
}

network! {
    /// One weight layer: orthogonal, not mirrored.
    pub struct MirroredSingle { input: [9], init: mirrored, fc: linear(7) }
}

fn main() -> scalenet::candle_core::Result<()> {
    let net = MirroredConv::new_seeded(&VarMap::new(), DType::F64, &Device::Cpu, 1)?;
    let x = Tensor::randn(0f64, 1., (2, 3, 8, 8), &Device::Cpu)?;
    let y = Tensor::randn(0f64, 1., (2, 3, 8, 8), &Device::Cpu)?;
    let sum = (net.forward_t(&x, false)? + net.forward_t(&y, false)?)?;
    let difference = (net.forward_t(&(&x + &y)?, false)? - sum)?.abs()?.max_all()?.to_scalar::<f64>()?;
    assert!(difference < 1e-9, "{difference}");
    for report in [MirroredFanIn::report().to_string(), MirroredOrthogonal::report().to_string(), MirroredSingle::report().to_string()] {
        assert!(report.contains("mirrored"), "{report}");
    }
    Ok(())
}
