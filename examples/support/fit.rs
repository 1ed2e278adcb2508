//! The training loop the examples share: SGD epochs with a progress bar and test accuracy.

use candle_nn::{ModuleT, Optimizer, VarMap, SGD};
use indicatif::{ProgressBar, ProgressStyle};
use scalenet::data::ImageDataset;
use scalenet::train::{accuracy, train_epoch};

/// The flags every training example takes.
#[derive(clap::Args)]
pub struct Schedule {
    #[arg(long, default_value_t = 8)]
    pub epochs: usize,
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The dataset (safetensors with `images` and `labels`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/digits.safetensors"))]
    pub data: std::path::PathBuf,
}

/// Trains `model` (whose variables are in `varmap`) on `train`, printing the train loss and the
/// test accuracy after every epoch.
pub fn fit(
    model: &dyn ModuleT,
    varmap: &VarMap,
    train: &ImageDataset,
    test: &ImageDataset,
    schedule: &Schedule,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut optimizer = SGD::new(varmap.all_vars(), schedule.lr)?;
    let progress = ProgressBar::new((schedule.epochs * train.len().div_ceil(schedule.batch_size)) as u64);
    progress.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")?);
    for epoch in 1..=schedule.epochs {
        let epoch_data = train.shuffled(schedule.seed * 1000 + epoch as u64)?;
        let loss = train_epoch(model, &mut optimizer, &epoch_data, schedule.batch_size, |loss| {
            progress.set_message(format!("epoch {epoch} loss {loss:.4}"));
            progress.inc(1);
        })?;
        let test_accuracy = accuracy(model, test)?;
        // `suspend` prints even when the bar is hidden (output not a terminal), unlike `println`.
        progress.suspend(|| {
            println!("epoch {epoch:>2}: train loss {loss:.4}, test accuracy {:.1}%", 100.0 * test_accuracy)
        });
    }
    progress.finish_and_clear();
    Ok(())
}
