//! Runs that would fail are refused before the first batch: an empty cell late in the file,
//! empty cells skipped while the whole input is to be written back, an output folder that
//! does not exist. Each is checked through the events: no `Progress` (no batch) before the
//! error, and no output file.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use aido_pipeline::embed::{EmbedOptions, OutputKind, embed_file};
use aido_pipeline::{Event, OpenOptions, PipelineError, Pretrained};
use aido_tokenize::{EmptyCellPolicy, ReadOptions};

/// A CSV of 40 cells over `genes` (cells × genes, header of gene names), the last cell all
/// zeros.
fn csv_with_empty_last_cell(path: &Path, genes: &[String]) {
    let mut s = format!("cell,{}\n", genes.join(","));
    for c in 0..40 {
        let row: Vec<String> = (0..genes.len())
            .map(|g| {
                if c == 39 {
                    "0".into()
                } else {
                    ((c * 7 + g * 3) % 5).to_string()
                }
            })
            .collect();
        s.push_str(&format!("cell{c},{}\n", row.join(",")));
    }
    std::fs::write(path, s).unwrap();
}

fn run(
    model: &Pretrained,
    input: &Path,
    output: &Path,
    skip_empty: bool,
) -> (Result<(), PipelineError>, usize) {
    let mut options = EmbedOptions {
        batch_size: 4,
        ..EmbedOptions::default()
    };
    if skip_empty {
        options.tokenize.empty = EmptyCellPolicy::Skip;
    }
    let mut batches = 0;
    let r = embed_file::<aido_model::Cpu>(
        model,
        input,
        &ReadOptions::default(),
        output,
        OutputKind::WholeInput,
        None,
        &options,
        &Default::default(),
        &mut |e| {
            if matches!(e, Event::Progress { .. }) {
                batches += 1;
            }
        },
    )
    .map(|_| ());
    (r, batches)
}

#[test]
fn an_empty_cell_late_in_the_file_is_refused_before_the_first_batch() {
    let dir = tempfile::tempdir().unwrap();
    let genes = common::tiny_checkpoint(&dir.path().join("model"), true);
    let model = Pretrained::open_str(
        dir.path().join("model").to_str().unwrap(),
        &OpenOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let input = dir.path().join("cells.csv");
    csv_with_empty_last_cell(&input, &genes);
    let out = dir.path().join("e.safetensors");
    let (r, batches) = run(&model, &input, &out, false);
    let e = r.unwrap_err();
    assert!(e.to_string().contains("cell39"), "{e}");
    assert_eq!(batches, 0, "a batch ran before the refusal");
    assert!(!out.exists());
    // Skipped on request, into a small file: runs, and the empty cell is not embedded.
    let (r, batches) = run(&model, &input, &out, true);
    r.unwrap();
    assert!(batches > 0 && out.exists());
}

#[test]
fn skipping_cells_of_a_file_written_back_whole_is_refused_first() {
    let dir = tempfile::tempdir().unwrap();
    let genes = common::tiny_checkpoint(&dir.path().join("model"), true);
    let model = Pretrained::open_str(
        dir.path().join("model").to_str().unwrap(),
        &OpenOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    // An h5ad input (written back whole by default) with the same cells as the CSV.
    let csv = dir.path().join("cells.csv");
    csv_with_empty_last_cell(&csv, &genes);
    let input = dir.path().join("cells.h5ad");
    let small = dir.path().join("small.h5ad");
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<Vec<f32>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').skip(1).map(|v| v.parse().unwrap()).collect())
        .collect();
    let mut csr = aido_tokenize::CsrChunk {
        first_cell: 0,
        indptr: vec![0],
        indices: Vec::new(),
        data: Vec::new(),
    };
    for r in &rows {
        for (j, &v) in r.iter().enumerate() {
            if v != 0.0 {
                csr.indices.push(j as u32);
                csr.data.push(v);
            }
        }
        csr.indptr.push(csr.indices.len());
    }
    let obs = aido_tokenize::ObsTable {
        index_name: "_index".into(),
        names: (0..rows.len()).map(|c| format!("cell{c}")).collect(),
        columns: Vec::new(),
    };
    let mut w = aido_tokenize::h5ad_out::H5adWriter::new(obs, genes.clone());
    w.x = Some(aido_tokenize::h5ad_out::XMatrix::Csr {
        csr,
        n_cols: genes.len(),
    });
    w.write(&input).unwrap();
    let (r, batches) = run(&model, &input, &small, true);
    let e = r.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("1 cell has no counts")
            && text.contains("cell39")
            && text.contains("embeddings_only"),
        "{text}"
    );
    assert_eq!(batches, 0, "a batch ran before the refusal");
    assert!(!small.exists());
}

#[test]
fn an_output_folder_that_does_not_exist_is_refused_first() {
    let dir = tempfile::tempdir().unwrap();
    let genes = common::tiny_checkpoint(&dir.path().join("model"), true);
    let model = Pretrained::open_str(
        dir.path().join("model").to_str().unwrap(),
        &OpenOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let input = dir.path().join("cells.csv");
    csv_with_empty_last_cell(&input, &genes);
    let out = dir.path().join("missing_dir").join("e.h5ad");
    let (r, batches) = run(&model, &input, &out, true);
    match r.unwrap_err() {
        PipelineError::Output { option, detail, .. } => {
            assert_eq!(option, "output");
            assert!(detail.contains("missing_dir") && detail.contains("does not exist"));
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(batches, 0);
}
