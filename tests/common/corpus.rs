//! The ingest test corpus: several SOP classes (CT, MR, 8-bit secondary capture, multi-frame,
//! text SR), each set converted with DCMTK into its own transfer syntax, one directory per
//! syntax so `storescu` can be told which syntax to propose.

use super::dcmtk;
use dicom_scp::synthetic::{generate, CorpusSpec, Kind};
use std::path::{Path, PathBuf};

pub struct CorpusSet {
    pub dir: PathBuf,
    pub transfer_syntax: &'static str,
    /// `storescu` options that make it propose this set's syntax.
    pub storescu_options: &'static [&'static str],
    pub files: Vec<PathBuf>,
}

struct Recipe {
    name: &'static str,
    kind: Kind,
    transfer_syntax: &'static str,
    /// DCMTK converter and its options; `None` keeps the generator's Explicit VR LE.
    convert: Option<(&'static str, &'static [&'static str])>,
    storescu_options: &'static [&'static str],
}

const RECIPES: &[Recipe] = &[
    Recipe {
        name: "explicit_le",
        kind: Kind::Ct,
        transfer_syntax: "1.2.840.10008.1.2.1",
        convert: None,
        storescu_options: &[],
    },
    Recipe {
        name: "implicit_le",
        kind: Kind::Mr,
        transfer_syntax: "1.2.840.10008.1.2",
        convert: Some(("dcmconv", &["+ti"])),
        storescu_options: &["-xi"],
    },
    Recipe {
        name: "big_endian",
        kind: Kind::Ct,
        transfer_syntax: "1.2.840.10008.1.2.2",
        convert: Some(("dcmconv", &["+tb"])),
        storescu_options: &["-xb"],
    },
    Recipe {
        name: "deflated",
        kind: Kind::MultiFrame,
        transfer_syntax: "1.2.840.10008.1.2.1.99",
        convert: Some(("dcmconv", &["+td"])),
        storescu_options: &["-xd"],
    },
    Recipe {
        name: "rle",
        kind: Kind::Ct,
        transfer_syntax: "1.2.840.10008.1.2.5",
        convert: Some(("dcmcrle", &[])),
        storescu_options: &["-xr"],
    },
    Recipe {
        name: "jpeg_lossless",
        kind: Kind::Ct,
        transfer_syntax: "1.2.840.10008.1.2.4.70",
        convert: Some(("dcmcjpeg", &["+e1"])),
        storescu_options: &["-xs"],
    },
    Recipe {
        name: "jpeg_baseline",
        kind: Kind::SecondaryCapture,
        transfer_syntax: "1.2.840.10008.1.2.4.50",
        convert: Some(("dcmcjpeg", &["+eb"])),
        storescu_options: &["-xy"],
    },
    Recipe {
        name: "jpeg_ls",
        kind: Kind::Ct,
        transfer_syntax: "1.2.840.10008.1.2.4.80",
        convert: Some(("dcmcjpls", &[])),
        storescu_options: &["-xt"],
    },
    Recipe {
        name: "text_sr",
        kind: Kind::TextSr,
        transfer_syntax: "1.2.840.10008.1.2.1",
        convert: None,
        storescu_options: &[],
    },
    Recipe {
        name: "multiframe",
        kind: Kind::MultiFrame,
        transfer_syntax: "1.2.840.10008.1.2.1",
        convert: None,
        storescu_options: &[],
    },
];

/// Builds the corpus under `root`: `instances` objects per set, each set its own study.
pub fn build(root: &Path, instances: u32) -> Vec<CorpusSet> {
    RECIPES
        .iter()
        .enumerate()
        .map(|(n, recipe)| {
            let raw = root.join(format!("raw_{}", recipe.name));
            let spec = CorpusSpec {
                out_dir: raw.clone(),
                instances_per_series: instances,
                matrix: 32,
                frames: 4,
                kind: recipe.kind,
                seed: 1000 + n as u64,
                patient_prefix: format!("E2E{n}"),
                ..CorpusSpec::default()
            };
            let raw_files = generate(&spec).expect("generate corpus");
            let dir = root.join(recipe.name);
            let files = match recipe.convert {
                None => {
                    std::fs::rename(&raw, &dir).expect("rename");
                    raw_files
                        .iter()
                        .map(|f| dir.join(f.file_name().expect("name")))
                        .collect()
                }
                Some((tool, options)) => {
                    std::fs::create_dir_all(&dir).expect("mkdir");
                    raw_files
                        .iter()
                        .map(|source| {
                            let target = dir.join(source.file_name().expect("name"));
                            let mut args: Vec<&str> = options.to_vec();
                            let (source_text, target_text) =
                                (source.display().to_string(), target.display().to_string());
                            args.push(&source_text);
                            args.push(&target_text);
                            let output = dcmtk::run(tool, &args);
                            assert!(
                                output.status.success(),
                                "{tool} failed: {}",
                                String::from_utf8_lossy(&output.stderr)
                            );
                            target
                        })
                        .collect()
                }
            };
            CorpusSet {
                dir,
                transfer_syntax: recipe.transfer_syntax,
                storescu_options: recipe.storescu_options,
                files,
            }
        })
        .collect()
}
