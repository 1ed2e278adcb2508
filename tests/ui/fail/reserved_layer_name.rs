use scalenet::network;

network! {
    pub struct Net {
        input: [4],
        output_calibration: linear(2),
    }
}

fn main() {}
