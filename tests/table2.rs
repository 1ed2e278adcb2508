//! The Table 2 tool end to end on one tiny dataset (seconds): the table has the paper's form,
//! every normalized loss is in (0, 1], and finished runs survive a round trip through the
//! results log so an interrupted sweep resumes.

use candle_core::Device;
use fixtures::table2::{self, Settings, Table, INITS};

#[test]
fn table2_on_a_tiny_dataset() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let folder = tempfile::Builder::new().prefix("scalenet-table2-").tempdir()?;
    let dir = folder.path();
    // Two noisy classes on 5 features, 80 examples; and a file that is not LIBSVM.
    let text: String = (0..80)
        .map(|i| {
            let class = i % 2;
            let sign = if class == 0 { -1.0 } else { 1.0 };
            let noise = |k: usize| (((i * 37 + k * 11) % 17) as f64 / 17.0) - 0.5;
            format!("{} 1:{} 2:{} 3:{} 5:{}\n", class, sign + noise(1), 2.0 * noise(2), sign * 0.5 + noise(3), noise(4))
        })
        .collect();
    std::fs::write(dir.join("tiny.svm"), text)?;
    std::fs::write(dir.join("notes.txt"), "not a dataset\n")?;
    let files = table2::dataset_files(dir)?;
    assert_eq!(files.len(), 2);
    let settings =
        Settings { learning_rates: vec![0.5, 0.05, 0.005], seeds: 2, epochs: 2, batch_size: 4, ..Settings::paper() };
    let mut loaded = Vec::new();
    for file in &files {
        match table2::load(file, &settings) {
            Ok(data) => loaded.push(data),
            Err(error) => assert!(error.to_string().contains("notes.txt:1"), "{error}"),
        }
    }
    assert_eq!(loaded.len(), 1);
    let data = &loaded[0];
    let mut runs = Vec::new();
    for init in INITS {
        let result = table2::run(data, init, &settings, &Device::Cpu, &|_| {})?;
        assert_eq!((result.losses.len(), result.losses[0].len()), (3, 2));
        let line = table2::to_json_line(&result, &settings);
        assert_eq!(table2::from_json_line(&line, &settings).as_ref(), Some(&result));
        let other = Settings { seeds: 3, ..settings.clone() };
        assert!(table2::from_json_line(&line, &other).is_none(), "a log of other settings is not reused");
        runs.push(result);
    }
    let table = Table::new(&runs, &settings.learning_rates);
    assert_eq!(table.datasets, ["tiny.svm"]);
    for value in table.normalized.iter().flatten() {
        assert!(*value > 0.0 && *value <= 1.0, "normalized loss {value}");
    }
    assert!(table.normalized[0].contains(&1.0));
    let markdown = table.to_markdown(&settings);
    for row in ["average normalized loss", "worst in #", "best in #", "| tiny.svm |"] {
        assert!(markdown.contains(row), "{markdown}");
    }
    let summary = table.summary();
    // One dataset: the inits at 1.0 are the worst in it.
    assert_eq!(summary.iter().map(|s| s.1).sum::<usize>(), table.normalized[0].iter().filter(|&&v| v == 1.0).count());
    assert_eq!(table.to_csv().lines().count(), 1 + 4);
    println!("{markdown}");
    Ok(())
}
