//! Opening a model: a checkpoint folder or a Hugging Face id, its gene list, and the checks
//! every task needs (sequence length, precision, backend), each in one place with one text.

use std::path::{Path, PathBuf};

use aido_model::load::{LoadMode, load_checkpoint};
use aido_model::model::AidoCell;
use aido_model::{AidoCellConfig, Precision};
use aido_tokenize::GeneVocab;
use burn::prelude::Backend;

use crate::error::{PipelineError, Result};
use crate::hub::{self, CONFIG_FILE, GENES_FILE, HubSettings, ModelId, WEIGHTS_FILES};
use crate::{Event, vocabulary};

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A checkpoint folder (`config.json` + `model.safetensors` or `pytorch_model.bin`
    /// [+ `genes.tsv`]).
    Folder(PathBuf),
    /// A Hugging Face model id.
    Hub(ModelId),
}

impl ModelSource {
    /// An existing path is a folder; otherwise `ORG/NAME[@REVISION]` is a hub id; anything else
    /// is [`PipelineError::ModelNotFound`].
    pub fn parse(s: &str) -> Result<ModelSource> {
        let p = Path::new(s);
        if p.exists() {
            return Ok(ModelSource::Folder(p.to_path_buf()));
        }
        match ModelId::parse(s) {
            Some(id) => Ok(ModelSource::Hub(id)),
            None => Err(PipelineError::ModelNotFound {
                given: s.to_string(),
            }),
        }
    }
}

impl std::str::FromStr for ModelSource {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        ModelSource::parse(s).map_err(|e| e.to_string())
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::Folder(p) => write!(f, "{}", p.display()),
            ModelSource::Hub(id) => write!(f, "{id}"),
        }
    }
}

/// A hub lookup that failed for a name that could also have been a relative folder (`runs/model`
/// with no `@`): the error also says that no such folder exists here.
fn no_folder_either(e: PipelineError, id: &ModelId) -> PipelineError {
    let shown = id.to_string();
    if shown.contains('@') {
        return e;
    }
    let also = format!("; nor is there a folder {shown} here");
    match e {
        PipelineError::HubNotFound {
            id,
            detail,
            endpoint,
            cache,
        } => PipelineError::HubNotFound {
            id,
            detail: detail + &also,
            endpoint,
            cache,
        },
        PipelineError::HubOffline { id, cache, detail } => PipelineError::HubOffline {
            id,
            cache,
            detail: detail + &also,
        },
        e => e,
    }
}

/// How to open a model.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// The gene list (`gene_name<TAB>index`); `None`: the folder's `genes.tsv`, else the
    /// built-in AIDO.Cell list for a 19,266-position model.
    pub genes: Option<PathBuf>,
    /// Hub settings; `None`: [`HubSettings::from_env`].
    pub hub: Option<HubSettings>,
}

/// A model ready to load: its files, configuration and gene list, checked against each other.
#[derive(Debug, Clone)]
pub struct Pretrained {
    /// Where it came from.
    pub source: ModelSource,
    /// The checkpoint folder (a hub id's cache snapshot).
    pub folder: PathBuf,
    /// Its configuration (`config.json`).
    pub config: AidoCellConfig,
    /// Its gene list, position order.
    pub vocab: GeneVocab,
    /// Where the gene list came from (a path, or the built-in list's name).
    pub genes_from: String,
}

impl Pretrained {
    /// Opens `source`: resolves a hub id (downloading into the cache when allowed, with
    /// [`Event::Download`] progress), reads `config.json`, finds the gene list and checks that
    /// it has the model's length. The weights are read by [`Pretrained::load`].
    pub fn open(
        source: &ModelSource,
        options: &OpenOptions,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<Pretrained> {
        let folder = match source {
            ModelSource::Folder(p) => {
                if !p.exists() {
                    return Err(PipelineError::ModelNotFound {
                        given: p.display().to_string(),
                    });
                }
                if !p.is_dir() {
                    return Err(PipelineError::NotACheckpoint {
                        folder: p.clone(),
                        detail: "it is a file, not a folder".into(),
                    });
                }
                p.clone()
            }
            ModelSource::Hub(id) => {
                let settings = options.hub.clone().unwrap_or_else(HubSettings::from_env);
                hub::resolve(id, &settings, on_event).map_err(|e| no_folder_either(e, id))?
            }
        };
        if !folder.join(CONFIG_FILE).is_file() {
            return Err(PipelineError::NotACheckpoint {
                folder,
                detail: format!("no {CONFIG_FILE}"),
            });
        }
        if !WEIGHTS_FILES.iter().any(|w| folder.join(w).is_file()) {
            return Err(PipelineError::NotACheckpoint {
                folder,
                detail: format!("no {}", WEIGHTS_FILES.join(" or ")),
            });
        }
        let config = AidoCellConfig::from_hf_json(&folder.join(CONFIG_FILE))?;
        let name = source.to_string();
        let (vocab, genes_from) = match &options.genes {
            Some(g) => (GeneVocab::from_tsv(g)?, g.display().to_string()),
            None if folder.join(GENES_FILE).is_file() => {
                let g = folder.join(GENES_FILE);
                (GeneVocab::from_tsv(&g)?, g.display().to_string())
            }
            None if config.seq_len() == vocabulary::BUILTIN_GENES + 2 => {
                (vocabulary::builtin()?, vocabulary::BUILTIN_NAME.to_string())
            }
            None => {
                return Err(PipelineError::NoGeneList {
                    model: name,
                    positions: config.seq_len(),
                });
            }
        };
        if vocab.seq_len() != config.seq_len() {
            return Err(PipelineError::GeneListLength {
                genes: genes_from,
                n_genes: vocab.len(),
                model: name,
                model_genes: config.seq_len() - 2,
            });
        }
        Ok(Pretrained {
            source: source.clone(),
            folder,
            config,
            vocab,
            genes_from,
        })
    }

    /// Opens a model named as on the command line (a folder or a hub id).
    pub fn open_str(
        model: &str,
        options: &OpenOptions,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<Pretrained> {
        Self::open(&ModelSource::parse(model)?, options, on_event)
    }

    /// The model's name for reports and output metadata (the folder as given, or the id).
    pub fn name(&self) -> String {
        self.source.to_string()
    }

    /// Loads the weights on `device` and sets the compute precision (refused by name on a
    /// backend without it, before any output exists).
    pub fn load<B: Backend>(
        &self,
        mode: LoadMode,
        precision: Precision,
        device: &B::Device,
    ) -> Result<AidoCell<B>> {
        let (mut model, _) = load_checkpoint::<B>(&self.folder, mode, device)?;
        model.bert.set_precision(precision)?;
        Ok(model)
    }

    /// The vocabulary position of each gene in `genes`, or an error naming the first gene the
    /// list lacks (`option` names the caller's option in the error).
    pub fn positions(&self, genes: &[String], option: &'static str) -> Result<Vec<usize>> {
        genes
            .iter()
            .map(|g| {
                self.vocab.position(g).ok_or_else(|| {
                    PipelineError::option(
                        option,
                        format!("'{g}' is not in the gene list {}", self.genes_from),
                    )
                })
            })
            .collect()
    }
}
