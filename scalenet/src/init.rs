//! Reproducible initialization. candle's CPU RNG cannot be seeded, so [`seeded_var_builder`] draws
//! every new variable on the host with a ChaCha8 generator seeded from the seed and the variable's
//! name, then moves it to the device: the same seed gives the same values on every device, in any
//! order of creation.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::{FanInOut, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

/// A `VarBuilder` that creates missing variables in `varmap` from seeded draws and returns those
/// already there (so loading saved weights into `varmap` first still works).
pub fn seeded_var_builder(varmap: &VarMap, seed: u64, dtype: DType, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(SeededVarMap { varmap: varmap.clone(), seed }), dtype, device.clone())
}

struct SeededVarMap {
    varmap: VarMap,
    seed: u64,
}

/// FNV-1a: a stable hash of the variable's name (std's hasher may change between releases).
fn stable_hash(seed: u64, name: &str) -> u64 {
    fnv1a(seed.to_le_bytes().iter().chain(name.as_bytes()))
}

/// FNV-1a over `bytes`: stable across releases and platforms (also the checkpoints' checksum).
pub(crate) fn fnv1a<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

/// Draws `shape` values following `init`, as candle's `Init::var` would, from `rng`.
pub fn draw(init: Init, shape: &Shape, rng: &mut ChaCha8Rng) -> Result<Vec<f32>> {
    let n = shape.elem_count();
    let normal = |mean: f64, std: f64, rng: &mut ChaCha8Rng| -> Result<Vec<f32>> {
        let dist = Normal::new(mean, std).map_err(|e| candle_core::Error::Msg(format!("invalid normal init: {e}")))?;
        Ok((0..n).map(|_| dist.sample(rng) as f32).collect())
    };
    let uniform = |lo: f64, up: f64, rng: &mut ChaCha8Rng| -> Result<Vec<f32>> {
        let dist = Uniform::new(lo, up).map_err(|e| candle_core::Error::Msg(format!("invalid uniform init: {e}")))?;
        Ok((0..n).map(|_| dist.sample(rng) as f32).collect())
    };
    match init {
        Init::Const(value) => Ok(vec![value as f32; n]),
        Init::Randn { mean, stdev } => normal(mean, stdev, rng),
        Init::Uniform { lo, up } => uniform(lo, up, rng),
        Init::Kaiming { dist, fan, non_linearity } => {
            let fan = match fan {
                FanInOut::FanIn => FanInOut::FanIn.for_shape(shape),
                FanInOut::FanOut => FanInOut::FanOut.for_shape(shape),
            };
            let std = non_linearity.gain() / (fan as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => normal(0.0, std, rng),
                NormalOrUniform::Uniform => uniform(-(3f64.sqrt()) * std, 3f64.sqrt() * std, rng),
            }
        }
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, shape: Shape, name: &str, init: Init, dtype: DType, device: &Device) -> Result<Tensor> {
        let mut vars = self.varmap.data().lock().expect("varmap lock poisoned");
        if let Some(var) = vars.get(name) {
            if var.shape() != &shape {
                candle_core::bail!("shape mismatch on {name}: asked for {shape:?}, the varmap holds {:?}", var.shape())
            }
            return Ok(var.as_tensor().clone());
        }
        let mut rng = ChaCha8Rng::seed_from_u64(stable_hash(self.seed, name));
        let values = draw(init, &shape, &mut rng)?;
        let tensor = Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?;
        let var = Var::from_tensor(&tensor)?;
        let tensor = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _device: &Device) -> Result<Tensor> {
        candle_core::bail!("`{name}` has no shape: a seeded VarMap creates variables with `get`")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap.data().lock().expect("varmap lock poisoned").contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_any_creation_order() -> Result<()> {
        let (a, b) = (VarMap::new(), VarMap::new());
        let (vb_a, vb_b) =
            (seeded_var_builder(&a, 7, DType::F32, &Device::Cpu), seeded_var_builder(&b, 7, DType::F32, &Device::Cpu));
        let init = Init::Randn { mean: 0.0, stdev: 1.0 };
        let a1 = vb_a.get_with_hints((3, 4), "one", init)?;
        let a2 = vb_a.get_with_hints(5, "two", init)?;
        let b2 = vb_b.get_with_hints(5, "two", init)?;
        let b1 = vb_b.get_with_hints((3, 4), "one", init)?;
        assert_eq!(a1.to_vec2::<f32>()?, b1.to_vec2::<f32>()?);
        assert_eq!(a2.to_vec1::<f32>()?, b2.to_vec1::<f32>()?);
        let other = seeded_var_builder(&VarMap::new(), 8, DType::F32, &Device::Cpu).get_with_hints(5, "two", init)?;
        assert_ne!(a2.to_vec1::<f32>()?, other.to_vec1::<f32>()?);
        Ok(())
    }

    #[test]
    fn existing_variables_are_returned_not_redrawn() -> Result<()> {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 1, DType::F32, &Device::Cpu);
        let first = vb.get_with_hints(4, "w", Init::Randn { mean: 0.0, stdev: 1.0 })?;
        let again = vb.get_with_hints(4, "w", Init::Const(0.0))?;
        assert_eq!(first.to_vec1::<f32>()?, again.to_vec1::<f32>()?);
        assert!(vb.get_with_hints(5, "w", Init::Const(0.0)).is_err());
        Ok(())
    }
}
