//! The input-output Jacobian and its singular values: dynamical isometry (all singular values 1)
//! is what mirrored orthogonal weights promise at initialization (Burkholz & Dubatovka 2019).
//!
//! A ReLU network is piecewise linear, so its Jacobian at `x` is exact from one backward pass: the
//! sample is repeated once per output unit and the loss `sum_j f_j(x_j)` gives row `j` of the
//! Jacobian as the gradient of copy `j` (samples never mix in a network without normalization).

use candle_core::{Result, Tensor, Var};
pub use nalgebra::DMatrix;

/// `d f / d x` at one sample `x` (`[features]`), for `forward` mapping `[batch, features]` to
/// `[batch, outputs]`: an `outputs x features` matrix.
///
/// ```
/// use scalenet::candle_core::{Device, Tensor};
/// use scalenet::diagnostics::jacobian::jacobian;
///
/// let w = Tensor::new(&[[1f32, 2.], [3., 4.], [5., 6.]], &Device::Cpu)?;
/// let x = Tensor::new(&[0.5f32, -1.], &Device::Cpu)?;
/// let j = jacobian(|xs| xs.matmul(&w.t()?), &x)?;
/// assert_eq!(j[(2, 1)], 6.0);
/// # Ok::<(), scalenet::candle_core::Error>(())
/// ```
pub fn jacobian(forward: impl Fn(&Tensor) -> Result<Tensor>, x: &Tensor) -> Result<DMatrix<f64>> {
    let mut all = jacobians(|xs| forward(&xs.squeeze(0)?)?.unsqueeze(0), &x.unsqueeze(0)?)?;
    Ok(all.remove(0))
}

/// The Jacobians of `P` networks run together (an [`crate::ensemble::Ensemble`]): `forward` maps
/// `[P, batch, features]` to `[P, batch, outputs]`, and copy `p` is differentiated at `xs[p]`.
pub fn jacobians(forward: impl Fn(&Tensor) -> Result<Tensor>, xs: &Tensor) -> Result<Vec<DMatrix<f64>>> {
    let (population, features) = xs.dims2()?;
    let outputs = forward(&xs.unsqueeze(1)?)?.dim(2)?;
    let repeated = Var::from_tensor(&xs.unsqueeze(1)?.broadcast_as((population, outputs, features))?.contiguous()?)?;
    let ys = forward(repeated.as_tensor())?;
    let diagonal = Tensor::eye(outputs, ys.dtype(), ys.device())?.unsqueeze(0)?;
    let grads = ys.broadcast_mul(&diagonal)?.sum_all()?.backward()?;
    let rows = grads
        .get(&repeated)
        .ok_or_else(|| candle_core::Error::Msg("the output does not depend on the input".into()))?
        .to_dtype(candle_core::DType::F64)?
        .to_vec3::<f64>()?;
    Ok(rows.into_iter().map(|copy| DMatrix::from_fn(outputs, features, |j, i| copy[j][i])).collect())
}

/// Singular values of `matrix`, largest first: `min(rows, columns)` of them.
pub fn singular_values(matrix: &DMatrix<f64>) -> Vec<f64> {
    let mut values: Vec<f64> = matrix.clone().singular_values().iter().copied().collect();
    values.sort_by(|a, b| b.total_cmp(a));
    values
}

/// An orthonormal basis (columns) of the input subspace a mirrored first layer `[W0; -W0]` reads,
/// the row space of its difference map `W[:n/2] - W[n/2:]` (for mirrored weights, `2 W0`): the
/// paper's difference subspace, on which the mirrored network is the linear map `prod W0`. For
/// any other first weight it is still defined (a generic subspace of the same dimension), so the
/// same spectrum can be compared across inits. `first_weight` is `(out, in)` with `out` even.
pub fn difference_basis(first_weight: &DMatrix<f64>) -> DMatrix<f64> {
    let half = first_weight.nrows() / 2;
    let difference = first_weight.rows(0, half) - first_weight.rows(half, half);
    let svd = difference.svd(false, true);
    let v_t = svd.v_t.expect("asked for V^T");
    let tolerance = svd.singular_values.max() * 1e-9 * first_weight.ncols() as f64;
    let rank = svd.singular_values.iter().filter(|&&s| s > tolerance).count();
    v_t.rows(0, rank).transpose()
}

/// Singular values of the Jacobian on the whole input and on the difference subspace of the
/// first layer ([`difference_basis`]).
#[derive(Debug, Clone, PartialEq)]
pub struct JacobianSpectrum {
    /// One value per input feature: the Jacobian's singular values, padded with the zeros of
    /// its null space when it has fewer rows than columns, so every input direction counts.
    pub whole: Vec<f64>,
    /// The singular values of `J Q` for `Q` the difference basis.
    pub difference: Vec<f64>,
}

impl JacobianSpectrum {
    /// The spectra of `jacobian`, on the whole input and on the difference subspace of `first_weight`'s mirrored inputs.
    pub fn new(jacobian: &DMatrix<f64>, first_weight: &DMatrix<f64>) -> Self {
        let mut whole = singular_values(jacobian);
        whole.resize(jacobian.ncols(), 0.0);
        let difference = singular_values(&(jacobian * difference_basis(first_weight)));
        JacobianSpectrum { whole, difference }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn relu_network_jacobian_matches_finite_differences() -> Result<()> {
        let device = Device::Cpu;
        let w1 = Tensor::new(&[[1f64, -2.], [0.5, 1.], [-1., 0.25]], &device)?;
        let w2 = Tensor::new(&[[1f64, 2., -1.], [0.5, -0.5, 3.]], &device)?;
        let forward = |xs: &Tensor| xs.matmul(&w1.t()?)?.relu()?.matmul(&w2.t()?);
        let x = Tensor::new(&[0.3f64, 0.7], &device)?;
        let j = jacobian(forward, &x)?;
        let eps = 1e-6;
        for i in 0..2 {
            let mut shifted = x.to_vec1::<f64>()?;
            shifted[i] += eps;
            let plus =
                forward(&Tensor::new(shifted.as_slice(), &device)?.unsqueeze(0)?)?.squeeze(0)?.to_vec1::<f64>()?;
            let base = forward(&x.unsqueeze(0)?)?.squeeze(0)?.to_vec1::<f64>()?;
            for o in 0..2 {
                assert!((j[(o, i)] - (plus[o] - base[o]) / eps).abs() < 1e-6);
            }
        }
        Ok(())
    }

    #[test]
    fn difference_basis_of_a_mirrored_layer_is_the_row_space_of_w0() {
        let w0 = DMatrix::from_row_slice(2, 3, &[1.0, 0.0, 0.0, 0.0, 0.6, 0.8]);
        let mut first = DMatrix::zeros(4, 3);
        first.rows_mut(0, 2).copy_from(&w0);
        first.rows_mut(2, 2).copy_from(&(-&w0));
        let basis = difference_basis(&first);
        assert_eq!(basis.ncols(), 2);
        // Projecting W0's rows onto the basis keeps them whole.
        let projected = &w0 * &basis * basis.transpose();
        assert!((projected - w0).norm() < 1e-12);
    }
}
