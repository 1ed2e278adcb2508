use scalenet::network;

network! {
    pub struct Net {
        input: [4],
        linear(4294967296),
    }
}

fn main() {}
