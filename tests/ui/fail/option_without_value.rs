use scalenet::network;

network! {
    pub struct Net {
        input: [4],
        init: ,
        linear(2),
    }
}

fn main() {}
