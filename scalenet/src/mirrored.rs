//! Mirrored ("looks-linear") orthogonal weights, `init: mirrored` (Burkholz & Dubatovka 2019;
//! Balduzzi et al. 2017).
//!
//! A hidden layer is `[[W0, -W0], [-W0, W0]]`, the first `[W0; -W0]`, the last `[W0, -W0]`; a
//! convolution is mirrored along its channel dimensions, with `W0` orthogonal over the flattened
//! `(c_out/2, c_in/2 k k)` matrix. For `u` a pre-activation, `relu(u) - relu(-u) = u`, so with zero
//! biases the whole network computes the linear map `prod_l W0_l` at initialization, and with
//! orthogonal `W0` every singular value of that map is 1 (dynamical isometry).
//!
//! `W0` comes from a QR decomposition of a seeded Gaussian draw (Haar-distributed: the signs of
//! `R`'s diagonal are folded into `Q`), on the host like every seeded draw, then scaled so that the
//! mean square of the weight is the `E[W^2]` the calculus chose.

use crate::calculus::Mirror;
use crate::nn::Linear;
use candle_core::{DType, Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};
use nalgebra::DMatrix;

/// A linear layer `(out, in)` with mirrored orthogonal weights of mean square `std^2` and a zero
/// bias. A weight already in `vb` (loaded or trained) is returned unchanged.
pub fn mirrored_linear(
    vb: VarBuilder,
    in_features: usize,
    out_features: usize,
    bias: bool,
    std: f64,
    mirror: Mirror,
) -> Result<Linear> {
    let weight = mirrored_weight(&vb, &[out_features, in_features], std, mirror)?;
    let bias = bias.then(|| vb.get_with_hints(out_features, "bias", Init::Const(0.0))).transpose()?;
    Ok(Linear::new(weight, bias))
}

/// A convolution `(out, in, k, k)` with weights mirrored along both channel dimensions as
/// `mirror` says, of mean square `std^2`, and a zero bias.
#[allow(clippy::too_many_arguments)]
pub fn mirrored_conv2d(
    vb: VarBuilder,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    bias: bool,
    std: f64,
    mirror: Mirror,
) -> Result<crate::nn::Conv2d> {
    let weight = mirrored_weight(&vb, &[out_channels, in_channels, kernel, kernel], std, mirror)?;
    let bias = bias.then(|| vb.get_with_hints(out_channels, "bias", Init::Const(0.0))).transpose()?;
    Ok(crate::nn::Conv2d::new(weight, bias, stride, padding))
}

/// A linear layer under `mirror`: [`crate::nn::linear`] for Gaussian weights, else
/// [`mirrored_linear`]. What a plan's [`crate::calculus::WeightInit`] asks for.
pub fn linear_for(
    vb: VarBuilder,
    in_features: usize,
    out_features: usize,
    bias: bool,
    std: f64,
    mirror: Mirror,
) -> Result<Linear> {
    match mirror {
        Mirror::Gaussian => crate::nn::linear(vb, in_features, out_features, bias, std),
        mirror => mirrored_linear(vb, in_features, out_features, bias, std, mirror),
    }
}

/// A convolution under `mirror`: [`crate::nn::conv2d`] for Gaussian weights, else
/// [`mirrored_conv2d`].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_for(
    vb: VarBuilder,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    bias: bool,
    std: f64,
    mirror: Mirror,
) -> Result<crate::nn::Conv2d> {
    match mirror {
        Mirror::Gaussian => crate::nn::conv2d(vb, in_channels, out_channels, kernel, stride, padding, bias, std),
        mirror => mirrored_conv2d(vb, in_channels, out_channels, kernel, stride, padding, bias, std, mirror),
    }
}

/// `<vb>.weight` of `shape`: created from a Gaussian draw of the backend (seeded with
/// [`crate::init::seeded_var_builder`]) and overwritten in place by its mirrored orthogonal
/// version, or returned as it is when the backend already holds it.
fn mirrored_weight(vb: &VarBuilder, shape: &[usize], std: f64, mirror: Mirror) -> Result<Tensor> {
    let fresh = !vb.contains_tensor("weight");
    let drawn = vb.get_with_hints(shape, "weight", Init::Randn { mean: 0.0, stdev: 1.0 })?;
    if !fresh {
        return Ok(drawn);
    }
    let values = mirror_values(&drawn.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?, shape, std, mirror)
        .map_err(|message| candle_core::Error::Msg(format!("{}.weight: {message}", vb.prefix())))?;
    let mirrored = Tensor::from_vec(values, shape, &candle_core::Device::Cpu)?
        .to_dtype(drawn.dtype())?
        .to_device(drawn.device())?;
    if drawn.is_variable() {
        // The backend keeps this variable (a `VarMap`): write the mirrored values into it.
        Var::from_tensor(&drawn)?.set(&mirrored)?;
        Ok(drawn)
    } else {
        Ok(mirrored)
    }
}

/// The mirrored weight of `shape` (`(out, in)` or `(out, in, k, k)`) built from the Gaussian
/// `draw` of the same shape: `W0` is the orthogonalized top-left block of the draw.
pub fn mirror_values(draw: &[f64], shape: &[usize], std: f64, mirror: Mirror) -> std::result::Result<Vec<f64>, String> {
    let (out, inputs) = (shape[0], shape[1]);
    let taps: usize = shape[2..].iter().product();
    if mirror.mirrors_outputs() && out % 2 == 1 {
        return Err(format!("mirroring needs an even number of outputs, got {out}"));
    }
    if mirror.mirrors_inputs() && inputs % 2 == 1 {
        return Err(format!("mirroring needs an even number of inputs, got {inputs}"));
    }
    let kernel = (taps as f64).sqrt().round() as usize;
    let (rows, cols) = mirror.half_shape(inputs, out, kernel.max(1));
    let width = inputs * taps;
    let block = DMatrix::from_fn(rows, cols, |r, c| draw[r * width + c]);
    let w0 = semi_orthogonal(block) * (std * std * rows.max(cols) as f64).sqrt();
    let mut values = Vec::with_capacity(out * width);
    for o in 0..out {
        let (row, row_sign) = if o < rows { (o, 1.0) } else { (o - rows, -1.0) };
        for c in 0..width {
            let (col, col_sign) = if c < cols { (c, 1.0) } else { (c - cols, -1.0) };
            values.push(row_sign * col_sign * w0[(row, col)]);
        }
    }
    Ok(values)
}

/// The (semi-)orthogonal factor of a Gaussian matrix: orthonormal columns when it is tall, rows
/// when it is wide, with `R`'s diagonal signs folded in so the result is Haar-distributed.
fn semi_orthogonal(gaussian: DMatrix<f64>) -> DMatrix<f64> {
    let wide = gaussian.nrows() < gaussian.ncols();
    let tall = if wide { gaussian.transpose() } else { gaussian };
    let qr = tall.qr();
    let signs = qr.r().diagonal().map(|d| if d < 0.0 { -1.0 } else { 1.0 });
    let mut q = qr.q();
    for (mut column, sign) in q.column_iter_mut().zip(signs.iter()) {
        column *= *sign;
    }
    if wide {
        q.transpose()
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    fn gaussian(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| StandardNormal.sample(&mut rng)).collect()
    }

    #[test]
    fn hidden_layer_is_mirrored_orthogonal_with_the_chosen_mean_square() {
        let (out, inputs) = (8, 6);
        let w = mirror_values(&gaussian(out * inputs, 1), &[out, inputs], 0.3, Mirror::Both).unwrap();
        let at = |o: usize, i: usize| w[o * inputs + i];
        for o in 0..4 {
            for i in 0..3 {
                assert_eq!(at(o, i + 3), -at(o, i));
                assert_eq!(at(o + 4, i), -at(o, i));
                assert_eq!(at(o + 4, i + 3), at(o, i));
            }
        }
        // W0 is 4 x 3: orthonormal columns times the scale.
        let w0 = DMatrix::from_fn(4, 3, at);
        let gram = w0.transpose() * &w0;
        let scale2 = 0.09 * 4.0;
        for a in 0..3 {
            for b in 0..3 {
                let expected = if a == b { scale2 } else { 0.0 };
                assert!((gram[(a, b)] - expected).abs() < 1e-12, "{gram}");
            }
        }
        let mean_square = w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64;
        assert!((mean_square - 0.09).abs() < 1e-12);
    }

    #[test]
    fn convolution_is_mirrored_along_both_channel_dimensions() {
        let shape = [4, 2, 3, 3];
        let w = mirror_values(&gaussian(72, 2), &shape, 1.0, Mirror::Both).unwrap();
        let at = |o: usize, i: usize, t: usize| w[(o * 2 + i) * 9 + t];
        for t in 0..9 {
            assert_eq!(at(0, 1, t), -at(0, 0, t));
            assert_eq!(at(2, 0, t), -at(0, 0, t));
            assert_eq!(at(3, 1, t), at(1, 0, t));
        }
    }

    #[test]
    fn odd_mirrored_dimensions_are_errors_not_panics() {
        assert!(mirror_values(&gaussian(15, 3), &[5, 3], 1.0, Mirror::Outputs).unwrap_err().contains("even"));
        assert!(mirror_values(&gaussian(15, 3), &[3, 5], 1.0, Mirror::Inputs).unwrap_err().contains("even"));
    }
}
