//! Generated code names std's and candle's items by full path, so a network may be called like
//! them, and a layer may be named by a keyword as a raw identifier.
use scalenet::network;

network! {
    pub struct Option { input: [4], r#type: linear(3), relu, r#fn: linear(2) }
}
network! {
    pub struct Result { input: [4], linear(2) }
}
network! {
    pub struct FnMut { input: [4], linear(2) }
}
network! {
    pub struct Tensor { input: [4], linear(2) }
}
network! {
    pub struct Vec { input: [4], linear(2) }
}
network! {
    pub struct sn { input: [4], linear(2) }
}

fn main() {
    let varmap = scalenet::candle_nn::VarMap::new();
    let net = Option::new_seeded(&varmap, scalenet::candle_core::DType::F32, &scalenet::candle_core::Device::Cpu, 0).unwrap();
    let _ = (&net.r#type, &net.r#fn);
    let _ = (Result::plan(), FnMut::plan(), Tensor::plan(), Vec::plan(), sn::plan());
}
