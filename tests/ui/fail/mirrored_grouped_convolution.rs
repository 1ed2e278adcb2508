use scalenet::network;

network! {
    pub struct Mirrored {
        input: [4, 4, 4],
        init: mirrored,
        conv1: conv(4, kernel = 1, groups = 2),
        relu,
        flatten,
        fc: linear(2),
    }
}

fn main() {}
