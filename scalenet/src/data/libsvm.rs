//! The LIBSVM / SVMlight text format, read into dense tensors: one example per line,
//! `label index:value index:value ... # comment`, indices 1-based in any order, absent features
//! zero, an optional `qid:` after the label (ignored), `#` comments and blank lines skipped.
//! Labels of any numeric spelling (`-1`/`+1`, `1.0`, `3`) are mapped to `0..C-1` in sorted order.
//!
//! ```
//! use scalenet::data::libsvm::{parse, Layout};
//!
//! let text = "+1 1:0.5 3:2\n-1 2:1 # a comment\n\n+1 qid:7 3:-1\n";
//! let data = parse(text, "example.svm", &Layout::default())?;
//! assert_eq!(data.features.dims(), [3, 3]);
//! assert_eq!(data.class_labels, [-1.0, 1.0]); // class 0 is -1, class 1 is +1
//! assert_eq!(data.labels.to_vec1::<u32>()?, [1, 0, 1]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};

/// A malformed file, with the place at fault.
#[derive(Debug, thiserror::Error)]
pub enum LibsvmError {
    #[error("cannot read {path}: {source}")]
    /// The file could not be read.
    Read {
        /// The file at fault.
        path: PathBuf,
        /// What the system or candle reported.
        source: std::io::Error,
    },
    #[error("{path}:{line}: `{token}`: {reason}")]
    /// A token does not parse.
    Parse {
        /// The file at fault.
        path: PathBuf,
        /// The line at fault, from 1.
        line: usize,
        /// The token.
        token: String,
        /// Why it does not parse.
        reason: &'static str,
    },
    #[error(
        "{path}:{line}: feature index {index} is beyond the {features} features of the reference (the training file)"
    )]
    /// A test file has a feature the training file does not.
    FeatureBeyondReference {
        /// The file at fault.
        path: PathBuf,
        /// The line at fault, from 1.
        line: usize,
        /// The feature index, from 1.
        index: usize,
        /// The training file's features.
        features: usize,
    },
    #[error("{path}:{line}: label {label} is not one of the reference's classes {classes:?}")]
    /// A test file has a label the training file does not.
    UnknownClass {
        /// The file at fault.
        path: PathBuf,
        /// The line at fault, from 1.
        line: usize,
        /// The label.
        label: f64,
        /// The training file's labels.
        classes: Vec<f64>,
    },
    #[error("{path} has no examples")]
    /// The file holds no examples.
    Empty {
        /// The file at fault.
        path: PathBuf,
    },
    #[error("{path}: {examples} examples x {features} features is more than 2^31 values")]
    /// The dense matrix would be too large for a tensor.
    TooLarge {
        /// The file at fault.
        path: PathBuf,
        /// Examples in the file.
        examples: usize,
        /// Features per example.
        features: usize,
    },
    #[error(transparent)]
    /// An error of candle's.
    Candle(#[from] candle_core::Error),
}

/// What a file is read against: nothing (a training file sets both), or a training file's
/// feature count and classes (a test file must use the same columns and label mapping).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layout {
    /// Number of features; `None`: the largest index in the file.
    pub features: Option<usize>,
    /// The labels class `0..C-1` stand for, sorted; `None`: the labels in the file.
    pub class_labels: Option<Vec<f64>>,
}

/// A dataset read from LIBSVM text.
#[derive(Debug, Clone)]
pub struct LibsvmData {
    /// `[N, D]` f32, absent features zero.
    pub features: Tensor,
    /// `[N]` u32 class indices.
    pub labels: Tensor,
    /// The label each class index stands for, sorted (`class_labels[k]` is class `k`).
    pub class_labels: Vec<f64>,
}

impl LibsvmData {
    /// The layout to read a matching test file with.
    pub fn layout(&self) -> Layout {
        Layout { features: Some(self.features.dims()[1]), class_labels: Some(self.class_labels.clone()) }
    }

    /// The number of examples.
    pub fn len(&self) -> usize {
        self.features.dims()[0]
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads the file at `path` (see the module documentation).
pub fn read(path: impl AsRef<Path>, layout: &Layout) -> Result<LibsvmData, LibsvmError> {
    let path = path.as_ref();
    let text =
        std::fs::read_to_string(path).map_err(|source| LibsvmError::Read { path: path.to_path_buf(), source })?;
    parse(&text, path, layout)
}

/// Parses LIBSVM `text`; `path` names it in errors.
pub fn parse(text: &str, path: impl AsRef<Path>, layout: &Layout) -> Result<LibsvmData, LibsvmError> {
    let path = path.as_ref();
    let error = |line: usize, token: &str, reason: &'static str| LibsvmError::Parse {
        path: path.to_path_buf(),
        line,
        token: token.to_string(),
        reason,
    };
    let mut labels = Vec::new();
    let mut rows: Vec<Vec<(usize, f32)>> = Vec::new();
    let mut width = 0usize;
    for (number, line) in text.lines().enumerate() {
        let number = number + 1;
        let content = line.split('#').next().unwrap_or_default();
        let mut tokens = content.split_ascii_whitespace();
        let Some(label) = tokens.next() else { continue };
        let value: f64 = label.parse().map_err(|_| error(number, label, "a label must be a number"))?;
        if !value.is_finite() {
            return Err(error(number, label, "a label must be finite"));
        }
        let mut row: Vec<(usize, f32)> = Vec::new();
        for token in tokens {
            if token.starts_with("qid:") {
                continue;
            }
            let (index, feature) =
                token.split_once(':').ok_or_else(|| error(number, token, "expected `index:value`"))?;
            let index: usize =
                index.parse().map_err(|_| error(number, token, "the index must be a positive integer"))?;
            if index == 0 {
                return Err(error(number, token, "indices start at 1"));
            }
            let feature: f32 = feature.parse().map_err(|_| error(number, token, "the value must be a number"))?;
            if !feature.is_finite() {
                return Err(error(number, token, "the value must be finite"));
            }
            if let Some(features) = layout.features {
                if index > features {
                    return Err(LibsvmError::FeatureBeyondReference {
                        path: path.to_path_buf(),
                        line: number,
                        index,
                        features,
                    });
                }
            }
            row.push((index - 1, feature));
            width = width.max(index);
        }
        row.sort_unstable_by_key(|&(index, _)| index);
        if let Some(pair) = row.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            let token = format!("{}:", pair[0].0 + 1);
            return Err(error(number, &token, "this index appears twice on the line"));
        }
        labels.push((number, value));
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(LibsvmError::Empty { path: path.to_path_buf() });
    }
    let features = layout.features.unwrap_or(width).max(1);
    if rows.len().checked_mul(features).is_none_or(|n| n > 1 << 31) {
        return Err(LibsvmError::TooLarge { path: path.to_path_buf(), examples: rows.len(), features });
    }
    let class_labels = match &layout.class_labels {
        Some(classes) => classes.clone(),
        None => {
            let mut classes: Vec<f64> = labels.iter().map(|&(_, v)| v).collect();
            classes.sort_by(f64::total_cmp);
            classes.dedup();
            classes
        }
    };
    let mut classes = Vec::with_capacity(labels.len());
    for &(line, label) in &labels {
        let class = class_labels.iter().position(|&c| c == label).ok_or_else(|| LibsvmError::UnknownClass {
            path: path.to_path_buf(),
            line,
            label,
            classes: class_labels.clone(),
        })?;
        classes.push(class as u32);
    }
    let mut dense = vec![0f32; rows.len() * features];
    for (r, row) in rows.iter().enumerate() {
        for &(index, value) in row {
            dense[r * features + index] = value;
        }
    }
    let count = rows.len();
    Ok(LibsvmData {
        features: Tensor::from_vec(dense, (count, features), &Device::Cpu)?,
        labels: Tensor::from_vec(classes, count, &Device::Cpu)?,
        class_labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> String {
        parse(text, "bad.svm", &Layout::default()).unwrap_err().to_string()
    }

    #[test]
    fn malformed_lines_name_the_file_line_and_token() {
        assert_eq!(parse_err("1 1:1\n1 x:2\n"), "bad.svm:2: `x:2`: the index must be a positive integer");
        assert_eq!(parse_err("1 0:1\n"), "bad.svm:1: `0:1`: indices start at 1");
        assert_eq!(parse_err("1 3\n"), "bad.svm:1: `3`: expected `index:value`");
        assert_eq!(parse_err("1 2:abc\n"), "bad.svm:1: `2:abc`: the value must be a number");
        assert_eq!(parse_err("1 2:1 4:0 2:3\n"), "bad.svm:1: `2:`: this index appears twice on the line");
        assert_eq!(parse_err("yes 1:1\n"), "bad.svm:1: `yes`: a label must be a number");
        assert_eq!(parse_err("1 1:nan\n"), "bad.svm:1: `1:nan`: the value must be finite");
        assert_eq!(parse_err(""), "bad.svm has no examples");
        assert_eq!(parse_err("# only a comment\n\n   \n"), "bad.svm has no examples");
    }

    #[test]
    fn comments_order_qid_and_label_spellings() -> Result<(), LibsvmError> {
        let text = "# header\n3 4:1 1:2 # trailing\n\n1.0 qid:2 2:0.5\n-1 3:-2\n3\n";
        let data = parse(text, "ok.svm", &Layout::default())?;
        assert_eq!(data.features.dims(), [4, 4]);
        assert_eq!(
            data.features.to_vec2::<f32>()?,
            [[2.0, 0.0, 0.0, 1.0], [0.0, 0.5, 0.0, 0.0], [0.0, 0.0, -2.0, 0.0], [0.0; 4]]
        );
        assert_eq!(data.class_labels, [-1.0, 1.0, 3.0]);
        assert_eq!(data.labels.to_vec1::<u32>()?, [2, 1, 0, 2]);
        let signs = parse("+1 1:1\n-1 1:2\n", "signs.svm", &Layout::default())?;
        assert_eq!(signs.class_labels, [-1.0, 1.0]);
        assert_eq!(signs.labels.to_vec1::<u32>()?, [1, 0]);
        Ok(())
    }

    /// A test file with fewer features than its training file is read into the training file's
    /// columns and classes; one with a feature or a class the training file lacks is an error.
    #[test]
    fn a_test_file_is_read_against_its_training_file() -> Result<(), LibsvmError> {
        let train = parse("1 1:1 5:1\n2 2:1\n3 3:1\n", "train.svm", &Layout::default())?;
        let test = parse("2 1:4\n3 2:1\n", "test.svm", &train.layout())?;
        assert_eq!(test.features.dims(), [2, 5]);
        assert_eq!(test.labels.to_vec1::<u32>()?, [1, 2]);
        let error = parse("1 6:1\n", "test.svm", &train.layout()).unwrap_err().to_string();
        assert_eq!(error, "test.svm:1: feature index 6 is beyond the 5 features of the reference (the training file)");
        let error = parse("4 1:1\n", "test.svm", &train.layout()).unwrap_err().to_string();
        assert!(error.starts_with("test.svm:1: label 4 is not one of the reference's classes"), "{error}");
        Ok(())
    }

    #[test]
    fn tens_of_thousands_of_rows_parse() -> Result<(), LibsvmError> {
        let text: String = (0..20_000).map(|i| format!("{} 1:{} 7:0.5 12:{}\n", i % 3, i, -i)).collect();
        let data = parse(&text, "big.svm", &Layout::default())?;
        assert_eq!(data.features.dims(), [20_000, 12]);
        assert_eq!(data.class_labels.len(), 3);
        Ok(())
    }
}
