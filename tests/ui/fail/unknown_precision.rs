use scalenet::network;

network! {
    pub struct Net {
        input: [64],
        precision: fp16,
        fc: linear(10),
    }
}

fn main() {}
