use scalenet::network;

network! {
    pub struct Grouped {
        input: [6, 8, 8],
        conv1: conv(8, kernel = 3, padding = 1, groups = 4),
        relu,
        conv2: conv(8, kernel = 3, padding = 1, groups = 3),
        relu,
        flatten,
        fc: linear(2),
    }
}

fn main() {}
