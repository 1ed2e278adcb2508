//! The shipped LIBSVM datasets read with `scalenet::data::libsvm` have the sizes the script that
//! wrote them reports in `data/libsvm/README.md` (an independent count: Python wrote the table).

use scalenet::data::libsvm::{read, Layout};

#[test]
fn every_shipped_dataset_reads_with_the_sizes_its_readme_gives() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/libsvm");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let rows: Vec<Vec<String>> = readme
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| line.split('|').map(|cell| cell.trim().trim_matches('`').to_string()).collect())
        .collect();
    assert_eq!(rows.len(), 12);
    for row in rows {
        let (file, examples, features, classes) = (&row[1], &row[2], &row[3], &row[4]);
        let data = read(dir.join(file), &Layout::default()).unwrap_or_else(|e| panic!("{e}"));
        // A trailing feature that is zero in every example cannot be seen in the sparse format.
        assert_eq!(data.features.dims()[0].to_string(), *examples, "{file}");
        assert!(data.features.dims()[1] <= features.parse::<usize>().unwrap(), "{file}");
        assert_eq!(data.class_labels.len().to_string(), *classes, "{file}");
    }
}
