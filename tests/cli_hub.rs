//! `aido embed --model ORG/NAME`: a model named by its Hugging Face id, found in the
//! `huggingface_hub` cache offline, or downloaded from a local stand-in for the hub's `resolve`
//! API into an empty cache; a missing model offline, a wrong revision and a download cut short
//! are refused with the id and the cache named, and nothing is left that looks complete.
#![allow(clippy::unwrap_used)]

#[path = "../aido-pipeline/tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use common::{Hub, Served, cache_model, folder_files, tiny_checkpoint};

const REPO: &str = "genbio-ai/AIDO.Cell-tiny";
const COMMIT: &str = "fedcba9876543210fedcba9876543210fedcba98";

fn embed(model: &str, cells: &Path, out: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aido"));
    c.args(["embed", "--model", model, "--input"])
        .arg(cells)
        .arg("--output")
        .arg(out);
    for v in [
        "HF_HUB_CACHE",
        "HF_HOME",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "HF_HUB_OFFLINE",
    ] {
        c.env_remove(v);
    }
    c.envs(env.iter().copied());
    c.output().unwrap()
}

fn cells(dir: &Path, genes: &[String]) -> std::path::PathBuf {
    let sim = aido_tokenize::simulate::simulate(
        &aido_tokenize::simulate::SimulationConfig::new(10, 2, 4),
        genes.to_vec(),
    )
    .unwrap();
    let p = dir.join("cells.h5ad");
    let mut w = aido_tokenize::h5ad_out::H5adWriter::new(sim.obs, genes.to_vec());
    w.x = Some(aido_tokenize::h5ad_out::XMatrix::Csr {
        csr: sim.counts,
        n_cols: genes.len(),
    });
    w.write(&p).unwrap();
    p
}

fn emb(path: &Path) -> Vec<f32> {
    let h5 = aido::tokenize::h5::H5::open(path).unwrap();
    let s = h5.shape("obsm/X_aido_cell").unwrap();
    h5.read_f32_rows("obsm/X_aido_cell", 0, s[0], s[1]).unwrap()
}

#[test]
fn embed_takes_a_hub_id_from_the_cache_offline_and_from_the_hub() {
    let t = tempfile::tempdir().unwrap();
    let folder = t.path().join("ckpt");
    let genes = tiny_checkpoint(&folder, true);
    let cells = cells(t.path(), &genes);
    let by_folder = t.path().join("by_folder.h5ad");
    let o = embed(&folder.display().to_string(), &cells, &by_folder, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // 1. In the cache (the huggingface_hub layout under HF_HOME/hub), offline.
    let home = t.path().join("hf_home");
    cache_model(
        &home.join("hub"),
        REPO,
        "main",
        COMMIT,
        &folder_files(&folder),
    );
    let out = t.path().join("cached.h5ad");
    let h = home.display().to_string();
    let o = embed(
        REPO,
        &cells,
        &out,
        &[("HF_HOME", &h), ("HF_HUB_OFFLINE", "1")],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(emb(&out), emb(&by_folder));
    let uns = aido::tokenize::h5::H5::open(&out).unwrap();
    assert!(uns.shape("uns/aido_embed_model").is_ok());

    // 2. Offline and absent: refused, naming the id, the cache and HF_HUB_OFFLINE; no output.
    let empty = t.path().join("empty_cache");
    let e = empty.display().to_string();
    let gone = t.path().join("gone.h5ad");
    let o = embed(
        "genbio-ai/AIDO.Cell-absent",
        &cells,
        &gone,
        &[("HF_HUB_CACHE", &e), ("HF_HUB_OFFLINE", "1")],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("genbio-ai/AIDO.Cell-absent")
            && err.contains(&e)
            && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
    assert!(!gone.exists());

    // 3. From the hub into an empty cache (HF_ENDPOINT), then a wrong revision.
    let mut revs = HashMap::new();
    revs.insert(
        "main".to_string(),
        Served {
            commit: COMMIT.into(),
            files: folder_files(&folder),
        },
    );
    let hub = Hub::start(REPO, revs);
    let fresh = t.path().join("fresh_cache");
    let f = fresh.display().to_string();
    // A connection dropped mid-download: an error, and nothing in the cache passes for complete.
    hub.truncate
        .lock()
        .unwrap()
        .push("model.safetensors".into());
    let o = embed(
        REPO,
        &cells,
        &gone,
        &[("HF_HUB_CACHE", &f), ("HF_ENDPOINT", &hub.endpoint)],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("model.safetensors") && err.contains(REPO),
        "{err}"
    );
    assert!(
        !fresh
            .join("models--genbio-ai--AIDO.Cell-tiny/snapshots")
            .join(COMMIT)
            .join("model.safetensors")
            .exists()
    );
    assert!(!gone.exists());
    hub.truncate.lock().unwrap().clear();
    let out = t.path().join("downloaded.h5ad");
    let o = embed(
        REPO,
        &cells,
        &out,
        &[("HF_HUB_CACHE", &f), ("HF_ENDPOINT", &hub.endpoint)],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(emb(&out), emb(&by_folder));
    let o = embed(
        &format!("{REPO}@v2"),
        &cells,
        &gone,
        &[("HF_HUB_CACHE", &f), ("HF_ENDPOINT", &hub.endpoint)],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("no revision 'v2'") && err.contains(&f),
        "{err}"
    );
    // Neither a folder nor an id.
    let o = embed("no-such-model", &cells, &gone, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("no such file or folder"),
        "{err}"
    );
}
