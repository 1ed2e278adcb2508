//! The geometry of a window sliding over one axis: whether it fits its input exactly, and the
//! output size. Shape inference and the kinds' shape rules both ask it.

use crate::diagnostic::{Diagnostics, LayerField, Location, Rule};
use crate::spec::LayerId;

/// Why a window does not fit its input.
pub(crate) enum WindowError {
    KernelTooLarge { padded: usize },
    NotIntegral { padded: usize },
}

/// Output size of a window of `kernel` sliding by `stride` over `size` padded by `padding`.
pub(crate) fn conv_window(size: usize, kernel: usize, stride: usize, padding: usize) -> Result<usize, WindowError> {
    let padded = size + 2 * padding;
    if kernel > padded {
        return Err(WindowError::KernelTooLarge { padded });
    }
    if !(padded - kernel).is_multiple_of(stride) {
        return Err(WindowError::NotIntegral { padded });
    }
    Ok((padded - kernel) / stride + 1)
}

impl WindowError {
    /// The diagnostic of a convolution whose window does not fit an input of `size`, with the
    /// padding or size that would.
    pub(crate) fn report(
        self,
        id: LayerId,
        kernel: usize,
        stride: usize,
        padding: usize,
        size: usize,
        diagnostics: &mut Diagnostics,
    ) {
        match self {
            WindowError::KernelTooLarge { padded } => diagnostics.push(Rule::ExactWindow,
                Location::layer(id, LayerField::Kernel),
                format!(
                    "the {kernel}x{kernel} kernel is larger than its padded input ({padded} = {size} + 2 x {padding}); use a kernel of at most {padded} or `padding = {}`",
                    (kernel - size).div_ceil(2)
                ),
            ),
            WindowError::NotIntegral { padded } => {
                // The smallest extra padding that makes the windows tile, if a small one does: the
                // search is bounded so that no size a user writes makes it long.
                let padding_fix = (1..=kernel.min(64)).find(|extra| (padded + 2 * extra - kernel).is_multiple_of(stride));
                let hint = match padding_fix {
                    Some(extra) => format!("use `padding = {}`", padding + extra),
                    None => format!("pick an input size that {stride} divides"),
                };
                let dropped = match (padded - kernel) % stride {
                    1 => "the last row".to_string(),
                    rows => format!("the last {rows} rows"),
                };
                diagnostics.push(Rule::ExactWindow,
                    Location::layer(id, LayerField::Stride),
                    format!(
                        "the output size ({padded} - {kernel}) / {stride} + 1 is not an integer, so {dropped} would be dropped; {hint}"
                    ),
                )
            }
        }
    }
}
