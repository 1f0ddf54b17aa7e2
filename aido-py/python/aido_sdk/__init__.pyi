"""Type stubs of aido_sdk (see the module docstring and each function's docstring)."""

import os
from typing import Any

import anndata

__version__: str

class Model:
    """A model opened by :func:`load_model`."""
    @property
    def name(self) -> str: ...
    @property
    def folder(self) -> str: ...
    @property
    def hidden_size(self) -> int: ...
    @property
    def genes(self) -> list[str]: ...
    @property
    def genes_from(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def precision(self) -> str: ...

def load_model(model: str | os.PathLike[str], *, genes: str | os.PathLike[str] | None = ...,
               device: str = ..., precision: str = ...) -> Model: ...
def embed(adata: anndata.AnnData, model: Model | str, *, layer: str | None = ...,
          gene_column: str | None = ..., gene_id: str = ..., pooling: str = ...,
          batch_size: int = ..., key_added: str = ..., gene_embeddings: list[str] | None = ...,
          allow_non_integer: bool = ..., progress: bool = ..., copy: bool = ...) -> anndata.AnnData | None: ...
def finetune(adata: anndata.AnnData, model: Model | str, label_column: str,
             out_dir: str | os.PathLike[str], *, trainable: str = ..., pooling: str = ...,
             split_column: str | None = ..., val_fraction: float = ..., test_fraction: float = ...,
             epochs: int = ..., batch_size: int = ..., lr: float = ..., class_weights: str = ...,
             patience: int = ..., seed: int = ..., baselines: bool = ..., layer: str | None = ...,
             gene_column: str | None = ..., progress: bool = ...) -> dict[str, Any]: ...
def predict(adata: anndata.AnnData, classifier: str | os.PathLike[str], *, batch_size: int = ...,
            layer: str | None = ..., gene_column: str | None = ..., key_added: str = ...,
            progress: bool = ..., copy: bool = ...) -> anndata.AnnData | None: ...
def insilico(adata: anndata.AnnData, model: Model | str, *, genes: list[str] | None = ...,
             all_genes: bool = ..., mode: str = ..., max_cells: int | None = ...,
             batch_size: int = ..., layer: str | None = ..., progress: bool = ...) -> anndata.AnnData: ...
def cluster(adata: anndata.AnnData, *, use_rep: str | None = ..., label_column: str | None = ...,
            batch_column: str | None = ..., n_clusters: int | None = ..., resolution: float | None = ...,
            n_pcs: int = ..., n_neighbors: int = ..., seed: int = ..., layer: str | None = ...,
            copy: bool = ..., use_rep_as_is: bool = ...,
            key_added: str | None = ...) -> dict[str, Any] | tuple[dict[str, Any], anndata.AnnData]: ...
def evaluate(adata: anndata.AnnData, label_column: str, *, cluster_column: str | None = ...,
             prediction_column: str | None = ..., embedding: str | None = ...,
             batch_column: str | None = ...) -> dict[str, Any]: ...
def perturb_fit(adata: anndata.AnnData, out_dir: str | os.PathLike[str], *,
                model: Model | str | None = ..., condition_column: str = ..., control_value: str = ...,
                split: str = ..., seed: int = ..., epochs: int = ..., batch_size: int = ...,
                lr: float = ..., hidden: int = ..., train_gene_fraction: float = ...,
                coexpress_all_cells: bool = ..., pool: int = ..., min_cells: int = ...,
                gene_graph: str | os.PathLike[str] | None = ..., layer: str | None = ...,
                gene_column: str | None = ...) -> dict[str, Any]: ...
def perturb_predict(model_dir: str | os.PathLike[str], conditions: list[str] | str) -> dict[str, Any]: ...
def set_threads(threads: int) -> None: ...
