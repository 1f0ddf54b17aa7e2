//! Metrics, each to a published definition (scikit-learn 1.9, scib-metrics), computed in f64.
//!
//! - [`cluster`]: agreement of two labellings (ARI, NMI, AMI, homogeneity, completeness).
//! - [`classify`]: accuracy, per-class and macro F1, the confusion matrix.
//! - [`silhouette`]: silhouette (euclidean / cosine, in tiles), scib's label and batch ASW.
//! - [`graph`]: scib's graph connectivity and iLISI / cLISI on exact kNN graphs.

pub mod classify;
pub mod cluster;
pub mod graph;
pub mod silhouette;
