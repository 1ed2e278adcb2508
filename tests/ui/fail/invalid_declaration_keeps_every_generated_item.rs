// An invalid declaration still generates every item a valid one has, so code that uses them
// reports nothing but the declaration's own error.
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarMap;
use scalenet::{network, Network};

network! {
    pub struct Broken {
        input: [3, 16, 16],
        conv1: conv(4, kernel = 3, padding = 1),
        relu,
        max_pool(2),
        flatten,
        res: residual(beta = 0.5) { relu, fc: linear(256) },
        head: linear(10),
    }
}

fn uses_the_trait<N: Network>() -> &'static str {
    N::NAME
}

fn main() -> candle_core::Result<()> {
    let varmap = VarMap::new();
    let net = Broken::new_seeded(&varmap, DType::F32, &Device::Cpu, 0)?;
    let xs = Tensor::zeros((1, 3, 16, 16), DType::F32, &Device::Cpu)?;
    let _: &[usize] = &Broken::INPUT_SHAPE;
    let _: &[usize] = &Broken::OUTPUT_SHAPE;
    let _ = (&net.conv1, &net.res_main_fc, &net.head, &net.output_calibration);
    let _ = (Broken::spec(), Broken::plan(), Broken::report().to_string(), uses_the_trait::<Broken>());
    let _ = net.forward(&xs)?;
    let _ = net.forward_steps(&xs, false)?;
    let _ = net.forward_hooked(&xs, false, None)?;
    let _ = net.calibrate_output(&varmap, &xs, 0.05)?;
    let _ = Broken::new(candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    Ok(())
}
