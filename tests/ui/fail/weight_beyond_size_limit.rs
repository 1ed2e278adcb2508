use scalenet::network;

network! {
    pub struct Net {
        input: [65536],
        linear(65536),
    }
}

fn main() {}
