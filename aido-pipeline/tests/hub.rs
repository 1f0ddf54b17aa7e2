//! Models by Hugging Face id: the cache layout `huggingface_hub` writes, offline mode, and
//! downloads from a local stand-in for the hub's `resolve` API (tests/common), including a
//! connection dropped mid-file. Expectations come from huggingface_hub's documented cache
//! layout and environment variables (docs/RESEARCH-python-hub.md in the project's notes), not
//! from this code.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use aido_model::Cpu;
use aido_pipeline::embed::{EmbedOptions, embed_matrix};
use aido_pipeline::{
    CountsMatrix, HubSettings, Indices, ModelId, ModelSource, OpenOptions, PipelineError,
    Pretrained, Values, ignore_events,
};
use common::{Hub, Served, cache_model, counts, folder_files, tiny_checkpoint};

const REPO: &str = "genbio-ai/AIDO.Cell-tiny";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn settings(cache: PathBuf, endpoint: &str, offline: bool) -> OpenOptions {
    OpenOptions {
        genes: None,
        hub: Some(HubSettings {
            cache,
            endpoint: endpoint.to_string(),
            token: None,
            offline,
        }),
    }
}

fn embed(p: &Pretrained, genes: &[String]) -> ndarray::Array2<f32> {
    let (indptr, indices, data) = counts(genes, 6);
    let m = CountsMatrix::csr(
        genes.to_vec(),
        Indices::I64(&indptr),
        Indices::I32(&indices),
        Values::F32(&data),
        None,
    )
    .unwrap();
    embed_matrix::<Cpu>(
        p,
        &m,
        &EmbedOptions::default(),
        &Default::default(),
        &mut ignore_events,
    )
    .unwrap()
    .cells
}

#[test]
fn model_ids_and_environment_follow_huggingface_hub() {
    let id = ModelId::parse("genbio-ai/AIDO.Cell-3M").unwrap();
    assert_eq!(
        (id.repo.as_str(), id.revision()),
        ("genbio-ai/AIDO.Cell-3M", "main")
    );
    let id = ModelId::parse("genbio-ai/AIDO.Cell-3M@v1.0").unwrap();
    assert_eq!(id.revision(), "v1.0");
    assert_eq!(id.to_string(), "genbio-ai/AIDO.Cell-3M@v1.0");
    for bad in ["AIDO.Cell-3M", "a/b/c", "/x", "a/", "a/b@", "a b/c", "../x"] {
        assert!(ModelId::parse(bad).is_none(), "{bad}");
    }
    assert_eq!(
        id.cache_folder(std::path::Path::new("/c")),
        PathBuf::from("/c/models--genbio-ai--AIDO.Cell-3M")
    );
    let home = Some(PathBuf::from("/home/u"));
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    let s = HubSettings::from_vars(env(&[]), home.clone());
    assert_eq!(s.cache, PathBuf::from("/home/u/.cache/huggingface/hub"));
    assert_eq!(s.endpoint, "https://huggingface.co");
    assert!(!s.offline && s.token.is_none());
    let s = HubSettings::from_vars(env(&[("XDG_CACHE_HOME", "/x")]), home.clone());
    assert_eq!(s.cache, PathBuf::from("/x/huggingface/hub"));
    let s = HubSettings::from_vars(
        env(&[("HF_HOME", "/h"), ("XDG_CACHE_HOME", "/x")]),
        home.clone(),
    );
    assert_eq!(s.cache, PathBuf::from("/h/hub"));
    let s = HubSettings::from_vars(
        env(&[
            ("HF_HUB_CACHE", "/hc"),
            ("HF_HOME", "/h"),
            ("HF_HUB_OFFLINE", "1"),
            ("HF_ENDPOINT", "http://mirror.local/"),
            ("HF_TOKEN", "hf_abc"),
        ]),
        home.clone(),
    );
    assert_eq!(s.cache, PathBuf::from("/hc"));
    assert!(s.offline);
    assert_eq!(s.endpoint, "http://mirror.local");
    assert_eq!(s.token.as_deref(), Some("hf_abc"));
    for (v, off) in [
        ("true", true),
        ("YES", true),
        ("on", true),
        ("0", false),
        ("", false),
    ] {
        let s = HubSettings::from_vars(
            move |k: &str| (k == "HF_HUB_OFFLINE").then(|| v.to_string()),
            home.clone(),
        );
        assert_eq!(s.offline, off, "HF_HUB_OFFLINE={v}");
    }
}

#[test]
fn a_cached_model_opens_offline_and_embeds_as_its_folder_does() {
    let t = tempfile::tempdir().unwrap();
    let folder = t.path().join("ckpt");
    let genes = tiny_checkpoint(&folder, true);
    let cache = t.path().join("hub");
    let snap = cache_model(&cache, REPO, "main", COMMIT, &folder_files(&folder));
    // Offline, with an endpoint nothing listens on: the cache alone must do.
    let opts = settings(cache.clone(), "http://127.0.0.1:9", true);
    let src = ModelSource::parse(REPO).unwrap();
    assert_eq!(src, ModelSource::Hub(ModelId::parse(REPO).unwrap()));
    let p = Pretrained::open(&src, &opts, &mut ignore_events).unwrap();
    assert_eq!(p.folder, snap);
    assert_eq!(p.name(), REPO);
    let by_folder = Pretrained::open(
        &ModelSource::Folder(folder.clone()),
        &OpenOptions::default(),
        &mut ignore_events,
    )
    .unwrap();
    assert_eq!(embed(&p, &genes), embed(&by_folder, &genes));
    // A pinned commit names the snapshot directly.
    let pinned = ModelSource::parse(&format!("{REPO}@{COMMIT}")).unwrap();
    assert_eq!(
        Pretrained::open(&pinned, &opts, &mut ignore_events)
            .unwrap()
            .folder,
        snap
    );
    // Absent model, absent revision: typed errors naming the id and the cache.
    for (id, what) in [
        ("genbio-ai/AIDO.Cell-none", "no folder"),
        ("genbio-ai/AIDO.Cell-tiny@v9", "no revision 'v9'"),
    ] {
        let e = Pretrained::open(&ModelSource::parse(id).unwrap(), &opts, &mut ignore_events)
            .unwrap_err();
        assert!(matches!(e, PipelineError::HubOffline { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains(id)
                && text.contains(&cache.display().to_string())
                && text.contains(what)
                && text.contains("HF_HUB_OFFLINE"),
            "{text}"
        );
    }
}

#[test]
fn a_model_is_downloaded_into_the_cache_once_and_a_dropped_connection_leaves_nothing_complete() {
    let t = tempfile::tempdir().unwrap();
    let folder = t.path().join("ckpt");
    let genes = tiny_checkpoint(&folder, true);
    let files = folder_files(&folder);
    let mut revs = HashMap::new();
    revs.insert(
        "main".to_string(),
        Served {
            commit: COMMIT.into(),
            files: files.clone(),
        },
    );
    let hub = Hub::start(REPO, revs);
    let cache = t.path().join("hub");
    let opts = settings(cache.clone(), &hub.endpoint, false);
    let src = ModelSource::parse(REPO).unwrap();

    // 1. The server drops the connection halfway through the weights.
    hub.truncate
        .lock()
        .unwrap()
        .push("model.safetensors".into());
    let e = Pretrained::open(&src, &opts, &mut ignore_events).unwrap_err();
    assert!(
        matches!(e, PipelineError::HubDownload { ref file, .. } if file == "model.safetensors"),
        "{e:?}"
    );
    assert!(e.to_string().contains(REPO), "{e}");
    // No snapshot entry a later run (or huggingface_hub) would take for the complete file.
    let snap = cache
        .join("models--genbio-ai--AIDO.Cell-tiny/snapshots")
        .join(COMMIT);
    assert!(!snap.join("model.safetensors").exists());
    assert!(aido_pipeline::hub::cached_snapshot(&ModelId::parse(REPO).unwrap(), &cache).is_err());
    // Offline now: still absent, said so.
    let off = settings(cache.clone(), &hub.endpoint, true);
    assert!(matches!(
        Pretrained::open(&src, &off, &mut ignore_events),
        Err(PipelineError::HubOffline { .. })
    ));

    // 2. The connection holds: the download completes (resuming the partial blob), with
    // progress events, into the huggingface_hub layout.
    hub.truncate.lock().unwrap().clear();
    let mut downloaded = Vec::new();
    let p = Pretrained::open(&src, &opts, &mut |e| {
        if let aido_pipeline::Event::Download {
            file, done, total, ..
        } = e
        {
            downloaded.push((file, done, total));
        }
    })
    .unwrap();
    assert_eq!(p.folder, snap);
    for (name, bytes) in &files {
        assert_eq!(&std::fs::read(snap.join(name)).unwrap(), bytes, "{name}");
    }
    assert_eq!(
        std::fs::read_to_string(cache.join("models--genbio-ai--AIDO.Cell-tiny/refs/main"))
            .unwrap()
            .trim(),
        COMMIT
    );
    let w = files["model.safetensors"].len() as u64;
    assert!(
        downloaded
            .iter()
            .any(|(f, d, t)| f == "model.safetensors" && *d == w && *t == w),
        "{downloaded:?}"
    );
    let by_folder = Pretrained::open(
        &ModelSource::Folder(folder),
        &OpenOptions::default(),
        &mut ignore_events,
    )
    .unwrap();
    assert_eq!(embed(&p, &genes), embed(&by_folder, &genes));

    // 3. A second open makes no request: the cache answers.
    let before = hub.requests.lock().unwrap().len();
    Pretrained::open(&src, &opts, &mut ignore_events).unwrap();
    assert_eq!(hub.requests.lock().unwrap().len(), before);

    // 4. Unknown revision and unknown model: typed errors naming the id, the hub and the cache.
    let e = Pretrained::open(
        &ModelSource::parse(&format!("{REPO}@nope")).unwrap(),
        &opts,
        &mut ignore_events,
    )
    .unwrap_err();
    assert!(matches!(e, PipelineError::HubNotFound { .. }), "{e:?}");
    assert!(
        e.to_string().contains("no revision 'nope'")
            && e.to_string().contains(&cache.display().to_string()),
        "{e}"
    );
    let e = Pretrained::open(
        &ModelSource::parse("genbio-ai/Nope").unwrap(),
        &opts,
        &mut ignore_events,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("genbio-ai/Nope") && e.to_string().contains("no such model"),
        "{e}"
    );
}

#[test]
fn the_gene_list_falls_back_to_the_built_in_one_for_full_length_models_only() {
    let v = aido_pipeline::vocabulary::builtin().unwrap();
    assert_eq!(v.len(), 19_264);
    assert_eq!(v.names()[0], "A1BG");
    // The shipped file (data/README.md: md5 631077feeb2452af70b0258765118c87, 228,232 bytes).
    assert_eq!(aido_pipeline::vocabulary::BUILTIN_TSV.len(), 228_232);
    let t = tempfile::tempdir().unwrap();
    let folder = t.path().join("ckpt");
    tiny_checkpoint(&folder, false);
    let e = Pretrained::open(
        &ModelSource::Folder(folder.clone()),
        &OpenOptions::default(),
        &mut ignore_events,
    )
    .unwrap_err();
    assert!(
        matches!(e, PipelineError::NoGeneList { positions: 26, .. }),
        "{e:?}"
    );
    // A folder that does not exist says so (not "no gene list").
    let e = Pretrained::open(
        &ModelSource::Folder(t.path().join("missing")),
        &OpenOptions::default(),
        &mut ignore_events,
    )
    .unwrap_err();
    assert!(e.to_string().contains("no such file or folder"), "{e}");
    let e = ModelSource::parse("definitely-not-here").unwrap_err();
    assert!(e.to_string().contains("no such file or folder"), "{e}");
}
