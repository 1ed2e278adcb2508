use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarMap;
use fixtures::networks::{PooledResNet, PooledResNetIndependent};
use scalenet::diagnostics::{seeded_normal, weight_to_gradient_ratios};
fn main() -> candle_core::Result<()> {
    let seeds: u64 = std::env::args().nth(1).map_or(32, |s| s.parse().unwrap());
    let samples = 256;
    let plan = PooledResNet::plan();
    let rows: Vec<(String, f64, f64)> = plan.weight_steps().map(|s| (s.path.to_string(), s.step.gamma.unwrap(), s.step.coherence.unwrap())).collect();
    let mut all: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for seed in 0..seeds {
        let varmap = VarMap::new();
        let x = seeded_normal(&Tensor::zeros((samples, 3, 16, 16), DType::F32, &Device::Cpu)?, seed)?;
        let out = PooledResNet::new_seeded(&varmap, DType::F32, &Device::Cpu, seed)?.forward(&x)?;
        let m = weight_to_gradient_ratios(&varmap, &out, 100 + seed)?;
        for (i, (p, _, _)) in rows.iter().enumerate() { all[i].push(m[&format!("{p}.weight")]); }
    }
    let _ = PooledResNetIndependent::plan();
    for (i, (p, g, k)) in rows.iter().enumerate() {
        let n = all[i].len() as f64;
        let mean = all[i].iter().sum::<f64>() / n;
        let sd = (all[i].iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        println!("{p:<24} kappa {k:.3} ratio {:.3} ± {:.3}", mean / g, sd / n.sqrt() / g);
    }
    Ok(())
}
