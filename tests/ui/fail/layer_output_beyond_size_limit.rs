use scalenet::network;

network! {
    pub struct Net {
        input: [1, 32768, 32768],
        conv(4, kernel = 1),
    }
}

fn main() {}
