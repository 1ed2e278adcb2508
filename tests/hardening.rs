//! Bad input at run time gets a typed error that names what is at fault, never a silent NaN, a
//! half-loaded network or a lost file.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Optimizer, VarMap, SGD};
use fixtures::networks::{Mlp, PooledLeNet};
use scalenet::checkpoint::{load_checkpoint, save_atomically, CheckpointError};
use scalenet::data::{DataError, ImageDataset};
use scalenet::finite::{Culprit, TrainingError, TrainingWatch};
use scalenet::Network;
use std::collections::HashMap;
use std::path::PathBuf;

fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("scalenet-hardening-{name}-")).tempdir().unwrap()
}

/// Every variable's values, to compare bit for bit.
fn snapshot(varmap: &VarMap) -> Vec<(String, Vec<u32>)> {
    let data = varmap.data().lock().unwrap();
    let mut all: Vec<(String, Vec<u32>)> = data
        .iter()
        .map(|(name, var)| {
            let values = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (name.clone(), values.into_iter().map(f32::to_bits).collect())
        })
        .collect();
    all.sort();
    all
}

fn set(varmap: &VarMap, name: &str, value: f32) {
    let data = varmap.data().lock().unwrap();
    let var = &data[name];
    var.set(&(var.as_tensor().ones_like().unwrap() * value as f64).unwrap()).unwrap();
}

#[test]
fn forward_checked_names_the_input_or_the_step_that_went_non_finite() -> candle_core::Result<()> {
    let varmap = VarMap::new();
    let net = Mlp::new_seeded(&varmap, DType::F32, &Device::Cpu, 0)?;
    let mut values = vec![0.5f32; 2 * 784];
    values[787] = f32::NAN;
    let input = Tensor::from_vec(values, (2, 784), &Device::Cpu)?;
    let error = net.forward_checked(&input, false).unwrap_err().to_string();
    // Flat element 787 of a [2, 784] batch: sample 1, feature 3.
    assert!(error.contains("Mlp: the input holds NaN at [1, 3]"), "{error}");

    set(&varmap, "fc2.weight", f32::INFINITY);
    let input = Tensor::ones((2, 784), DType::F32, &Device::Cpu)?;
    let error = net.forward_checked(&input, false).unwrap_err().to_string();
    assert!(error.contains("(linear) produced"), "{error}");
    // The unchecked pass gives no error, which is why the checked one exists.
    assert!(net.forward(&input).is_ok());
    Ok(())
}

#[test]
fn checkpoints_load_all_or_nothing_and_name_the_file_and_tensor() -> candle_core::Result<()> {
    let folder = scratch("checkpoint");
    let dir = folder.path();
    let saved = VarMap::new();
    PooledLeNet::new_seeded(&saved, DType::F32, &Device::Cpu, 1)?;
    let path = dir.join("lenet.safetensors");
    save_atomically(&saved, &path).unwrap();

    // A file whose every tensor but one fits: nothing of the target may change.
    let target = VarMap::new();
    PooledLeNet::new_seeded(&target, DType::F32, &Device::Cpu, 2)?;
    let before = snapshot(&target);
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu)?;
    tensors.insert("fc3.weight".into(), Tensor::zeros((10, 83), DType::F32, &Device::Cpu)?);
    let wrong = dir.join("wrong-shape.safetensors");
    candle_core::safetensors::save(&tensors, &wrong)?;
    match load_checkpoint(&target, &wrong) {
        Err(CheckpointError::Shape { path, name, expected, found }) => {
            assert_eq!((path, name.as_str()), (wrong.clone(), "fc3.weight"));
            assert_eq!((expected, found), (vec![10, 84], vec![10, 83]));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(snapshot(&target), before, "a failed load changed the network");

    tensors.remove("fc3.weight");
    let missing = dir.join("missing.safetensors");
    candle_core::safetensors::save(&tensors, &missing)?;
    let error = load_checkpoint(&target, &missing).unwrap_err().to_string();
    assert!(error.contains("missing.safetensors") && error.contains("`fc3.weight`"), "{error}");

    tensors = candle_core::safetensors::load(&path, &Device::Cpu)?;
    tensors.insert("conv1.bias".into(), Tensor::full(f32::NAN, 6, &Device::Cpu)?);
    let nan = dir.join("nan.safetensors");
    candle_core::safetensors::save(&tensors, &nan)?;
    assert!(
        matches!(load_checkpoint(&target, &nan), Err(CheckpointError::NonFinite { ref name, .. }) if name == "conv1.bias")
    );

    // Flip one byte of the data: the checksum recorded at save time catches it.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    let flipped = dir.join("flipped.safetensors");
    std::fs::write(&flipped, bytes).unwrap();
    assert!(matches!(load_checkpoint(&target, &flipped), Err(CheckpointError::Checksum { .. })));
    assert_eq!(snapshot(&target), before);

    // Loading into a map the network has not been built in is an error, not a silent no-op.
    assert!(matches!(load_checkpoint(&VarMap::new(), &path), Err(CheckpointError::EmptyVarMap { .. })));

    load_checkpoint(&target, &path).unwrap();
    assert_eq!(snapshot(&target), snapshot(&saved));
    Ok(())
}

#[test]
fn saving_names_the_path_asked_for_and_leaves_nothing_behind() -> candle_core::Result<()> {
    let folder = scratch("save");
    let dir = folder.path();
    let varmap = VarMap::new();
    Mlp::new_seeded(&varmap, DType::F32, &Device::Cpu, 0)?;
    let target = dir.join("a-directory");
    std::fs::create_dir_all(&target).unwrap();
    let error = save_atomically(&varmap, &target).unwrap_err().to_string();
    assert!(error.contains("a-directory"), "{error}");
    let unwritable = dir.join("no-such-folder").join("net.safetensors");
    let error = save_atomically(&varmap, &unwritable).unwrap_err().to_string();
    assert!(error.contains("no-such-folder/net.safetensors"), "{error}");
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("a-directory")], "stale files: {left:?}");
    Ok(())
}

#[test]
fn calibration_rejects_bad_targets_and_another_networks_varmap() -> candle_core::Result<()> {
    let varmap = VarMap::new();
    let net = Mlp::new_seeded(&varmap, DType::F32, &Device::Cpu, 0)?;
    let batch = Tensor::ones((4, 784), DType::F32, &Device::Cpu)?;
    let batch = (batch * Tensor::arange(0f32, 784., &Device::Cpu)?.broadcast_as((4, 784))?.sin()?)?;
    for target in [f64::NAN, f64::INFINITY, 0.0, -0.05] {
        let error = net.calibrate_output(&varmap, &batch, target).unwrap_err().to_string();
        assert!(error.contains("positive, finite target"), "{target}: {error}");
    }
    let other = VarMap::new();
    Mlp::new_seeded(&other, DType::F32, &Device::Cpu, 1)?;
    let before = snapshot(&other);
    let error = net.calibrate_output(&other, &batch, 0.05).unwrap_err().to_string();
    assert!(error.contains("another network's"), "{error}");
    assert_eq!(snapshot(&other), before);
    assert!(net.calibrate_output(&varmap, &batch, 0.05).is_ok());
    Ok(())
}

#[test]
fn training_stops_at_the_first_non_finite_step_and_names_it() -> candle_core::Result<()> {
    let varmap = VarMap::new();
    let net = Mlp::new_seeded(&varmap, DType::F32, &Device::Cpu, 0)?;
    // 64 "images" of 1 x 1 x 784, fed to the MLP flattened.
    let images = scalenet::diagnostics::seeded_normal(&Tensor::zeros((64, 1, 1, 784), DType::F32, &Device::Cpu)?, 3)?;
    let labels = Tensor::from_vec((0..64u32).map(|i| i % 10).collect::<Vec<_>>(), 64, &Device::Cpu)?;
    let data = ImageDataset { images, labels, classes: 10 };
    struct Flat<'a>(&'a Mlp);
    impl candle_nn::ModuleT for Flat<'_> {
        fn forward_t(&self, xs: &Tensor, _: bool) -> candle_core::Result<Tensor> {
            self.0.forward(&xs.flatten_from(1)?)
        }
    }
    // Without the jump check, the run is named at its first NaN or infinity.
    let mut sgd = SGD::new(varmap.all_vars(), 1e6)?;
    let mut watch = TrainingWatch::new().jump_factor(f64::INFINITY);
    let step = |loss: &Tensor| watch.backward_step(&mut sgd, &varmap, loss);
    let error = fixtures::train::train_epoch(&Flat(&net), &data, 8, step, |_| {}).unwrap_err();
    match &error {
        TrainingError::NonFinite { step, culprit, name, found }
        | TrainingError::NonFiniteLoss { step, culprit: Some((culprit, name, found)), .. } => {
            assert!(*step <= 3, "{error}");
            assert!(matches!(culprit, Culprit::Parameter | Culprit::Gradient), "{error}");
            assert!(name.starts_with("fc"), "{error}");
            let shape = varmap.data().lock().unwrap()[name].dims().to_vec();
            assert_eq!(found.position.len(), shape.len(), "{error}");
            assert!(found.position.iter().zip(&shape).all(|(i, n)| i < n), "{error}");
        }
        other => panic!("{other}"),
    }
    println!("{error}");
    Ok(())
}

#[test]
fn training_stops_where_the_loss_jumps_before_any_nan() -> candle_core::Result<()> {
    let varmap = VarMap::new();
    let net = Mlp::new_seeded(&varmap, DType::F32, &Device::Cpu, 0)?;
    let images = scalenet::diagnostics::seeded_normal(&Tensor::zeros((64, 784), DType::F32, &Device::Cpu)?, 3)?;
    let labels = Tensor::from_vec((0..64u32).map(|i| i % 10).collect::<Vec<_>>(), 64, &Device::Cpu)?;
    // A rate large enough to blow the loss up, small enough that it stays finite for a while.
    let mut sgd = SGD::new(varmap.all_vars(), 30.0)?;
    let mut watch = TrainingWatch::new();
    let mut losses = Vec::new();
    let error = loop {
        let batch = losses.len() % 8;
        let logits = net.forward(&images.narrow(0, 8 * batch, 8)?)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &labels.narrow(0, 8 * batch, 8)?)?;
        let value = loss.to_scalar::<f32>()? as f64;
        match watch.backward_step(&mut sgd, &varmap, &loss) {
            Ok(_) => losses.push(value),
            Err(error) => break (error, value),
        }
        assert!(losses.len() < 100, "no divergence in 100 steps: {losses:?}");
    };
    match &error.0 {
        TrainingError::Diverged { step, loss, start, start_step } => {
            assert_eq!((*step, *start_step), (losses.len(), 0), "{}", error.0);
            assert_eq!((*loss, *start), (error.1, losses[0]));
            assert!(loss.is_finite() && *loss > 100.0 * start, "{}", error.0);
            // Every earlier loss stayed within the factor: this is the first jump.
            assert!(losses.iter().all(|l| *l <= 100.0 * start), "{losses:?}");
        }
        other => panic!("{other}"),
    }
    assert!(error.0.to_string().contains("the loss jumped to"), "{}", error.0);
    println!("{} (losses before: {:?})", error.0, losses);
    Ok(())
}

scalenet::network! { pub struct BeforeInsert { input: [4], linear(8), relu, linear(8), relu, linear(2) } }
scalenet::network! { pub struct AfterInsert { input: [4], scale(2.0), linear(8), relu, linear(8), relu, linear(2) } }

#[test]
fn a_load_whose_names_moved_lists_the_renamings() -> candle_core::Result<()> {
    let folder = scratch("renamed");
    let dir = folder.path();
    let saved = VarMap::new();
    BeforeInsert::new_seeded(&saved, DType::F32, &Device::Cpu, 0)?;
    let path = dir.join("before.safetensors");
    save_atomically(&saved, &path).unwrap();
    let target = VarMap::new();
    AfterInsert::new_seeded(&target, DType::F32, &Device::Cpu, 0)?;
    let before = snapshot(&target);
    let error = load_checkpoint(&target, &path).unwrap_err();
    match &error {
        CheckpointError::Renamed { renamings, .. } => {
            let expected = [
                ("linear_0.bias", "linear_1.bias"),
                ("linear_0.weight", "linear_1.weight"),
                ("linear_2.bias", "linear_3.bias"),
                ("linear_2.weight", "linear_3.weight"),
                ("linear_4.bias", "linear_5.bias"),
                ("linear_4.weight", "linear_5.weight"),
            ];
            let expected: Vec<(String, String)> =
                expected.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
            assert_eq!(renamings, &expected);
        }
        other => panic!("{other}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("`linear_0.weight` -> `linear_1.weight`") && message.contains("name the layers"),
        "{message}"
    );
    assert_eq!(snapshot(&target), before, "a failed load changed the network");
    // Names that differ in shape too are no renaming: the plain error stays.
    let other = VarMap::new();
    Mlp::new_seeded(&other, DType::F32, &Device::Cpu, 0)?;
    assert!(matches!(load_checkpoint(&other, &path), Err(CheckpointError::Unexpected { .. })));
    Ok(())
}

#[test]
fn saving_an_empty_varmap_is_an_error_and_writes_nothing() {
    let folder = scratch("empty-save");
    let dir = folder.path();
    let path = dir.join("net.safetensors");
    let error = save_atomically(&VarMap::new(), &path).unwrap_err();
    assert!(matches!(error, CheckpointError::NothingToSave { .. }), "{error}");
    assert!(error.to_string().contains("net.safetensors") && error.to_string().contains("build the network"));
    assert!(!path.exists());
}

#[test]
fn an_input_of_another_dtype_names_both_dtypes() -> candle_core::Result<()> {
    let varmap = VarMap::new();
    let net = Mlp::new_seeded(&varmap, DType::F32, &Device::Cpu, 0)?;
    let error = net.forward(&Tensor::ones((2, 784), DType::F64, &Device::Cpu)?).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("Mlp was built in F32") && message.contains("not F64"), "{message}");
    assert!(message.contains("to_dtype(DType::F32)"), "{message}");
    match error {
        candle_core::Error::Context { inner, .. } => assert!(
            matches!(*inner, candle_core::Error::UnexpectedDType { expected: DType::F32, got: DType::F64, .. }),
            "{inner}"
        ),
        other => panic!("{other}"),
    }
    Ok(())
}

#[test]
fn diagnostics_refuse_non_finite_activations() -> candle_core::Result<()> {
    let varmap = VarMap::new();
    let net = Mlp::new_seeded(&varmap, DType::F32, &Device::Cpu, 0)?;
    set(&varmap, "fc1.weight", f32::NAN);
    let input = Tensor::ones((4, 784), DType::F32, &Device::Cpu)?;
    let error = scalenet::diagnostics::measure(&net, &varmap, &input, 0).unwrap_err().to_string();
    assert!(error.contains("produced NaN"), "{error}");
    Ok(())
}

#[test]
fn datasets_with_no_rows_or_bad_labels_are_typed_errors() -> candle_core::Result<()> {
    let folder = scratch("data");
    let dir = folder.path();
    let write = |name: &str, images: Tensor, labels: Tensor| -> PathBuf {
        let path = dir.join(name);
        let tensors = HashMap::from([("images".to_string(), images), ("labels".to_string(), labels)]);
        candle_core::safetensors::save(&tensors, &path).unwrap();
        path
    };
    let empty = write(
        "empty.safetensors",
        Tensor::zeros((0, 4, 4), DType::U8, &Device::Cpu)?,
        Tensor::zeros(0, DType::U8, &Device::Cpu)?,
    );
    assert!(matches!(ImageDataset::from_safetensors(&empty), Err(DataError::Empty { .. })));
    let images = Tensor::zeros((3, 4, 4), DType::U8, &Device::Cpu)?;
    let negative = write("negative.safetensors", images.clone(), Tensor::new(&[0i64, -1, 2], &Device::Cpu)?);
    match ImageDataset::from_safetensors(&negative) {
        Err(DataError::Label { index: 1, value, .. }) => assert_eq!(value, -1.0),
        other => panic!("{other:?}"),
    }
    let fractional = write("fractional.safetensors", images, Tensor::new(&[0f32, 1.5, 2.0], &Device::Cpu)?);
    let error = ImageDataset::from_safetensors(&fractional).unwrap_err().to_string();
    assert!(error.contains("fractional.safetensors") && error.contains("label 1 is 1.5"), "{error}");
    Ok(())
}
