//! Perturbation conditions and GEARS's splits of them, reproduced draw for draw.
//!
//! A condition names one or two perturbed genes the way GEARS and the Norman 2019 h5ad do:
//! `A+ctrl` (or `ctrl+A`) is a single, `A+B` a double, the control value alone is the control.
//!
//! The splits are GEARS's (`gears/data_utils.py`, `DataSplitter`, cell-gears 0.1.2), made with the
//! same draws from numpy's legacy `RandomState` (MT19937, [`NumpyRandomState`]), so that a seed
//! gives the very conditions GEARS's seed gives on the same data:
//!
//! - [`simulation_split`]: a `train_gene_fraction` of the perturbed genes is "seen"; test =
//!   singles of unseen genes, doubles with one unseen gene, doubles of two unseen genes, and a
//!   (1 − `combo_seen2_train_fraction`) share of the doubles of two seen genes; validation is the
//!   same rule applied to the training part with fractions 0.9 / 0.9;
//! - [`combo_split`] (`combo_seen0/1/2`): test genes drawn *with replacement* (as GEARS's
//!   `np.random.choice` default), test = their singles and doubles; for `seen 0` the doubles
//!   pairing a test gene with a non-test gene are held out of every part (GEARS's hold-out; they
//!   get no split), for `seen 2` a tenth of the doubles, drawn with replacement.
//!
//! Every condition also gets its [`PertGroup`]: for test and validation conditions of the
//! simulation split GEARS's own subgroup, otherwise how many of its genes occur in training
//! conditions.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Result, TaskError};

/// numpy's legacy `RandomState` for the draws GEARS makes: MT19937 seeded as
/// `np.random.seed(int)`, `permutation`, `choice(replace=False)` and `randint` / `choice` with
/// replacement (masked rejection sampling, as numpy's `random_interval` and bounded ints).
pub struct NumpyRandomState {
    mt: [u32; 624],
    index: usize,
}

impl NumpyRandomState {
    /// `np.random.seed(seed)` (MT19937 `init_genrand`).
    pub fn new(seed: u32) -> Self {
        let mut mt = [0u32; 624];
        mt[0] = seed;
        for i in 1..624 {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        Self { mt, index: 624 }
    }

    /// The next 32-bit output of MT19937.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            for i in 0..624 {
                let y = (self.mt[i] & 0x8000_0000) | (self.mt[(i + 1) % 624] & 0x7fff_ffff);
                let mut v = self.mt[(i + 397) % 624] ^ (y >> 1);
                if y & 1 == 1 {
                    v ^= 0x9908_b0df;
                }
                self.mt[i] = v;
            }
            self.index = 0;
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// A uniform integer in `0..=max` by masked rejection (numpy's `random_interval`).
    pub fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for s in [1, 2, 4, 8, 16] {
            mask |= mask >> s;
        }
        loop {
            let v = self.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// `np.random.permutation(n)`: Fisher–Yates from the top, as numpy's shuffle.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.interval(i as u32) as usize;
            v.swap(i, j);
        }
        v
    }

    /// `np.random.randint(0, n, k)` (n ≥ 1).
    pub fn randint(&mut self, n: usize, k: usize) -> Vec<usize> {
        (0..k)
            .map(|_| self.interval((n - 1) as u32) as usize)
            .collect()
    }

    /// `np.random.choice(n, k, replace=False)`: the first `k` of a permutation.
    pub fn choice_without_replacement(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut p = self.permutation(n);
        p.truncate(k);
        p
    }

    /// `np.random.choice(n, k)` (with replacement; draws nothing when `k` is 0).
    pub fn choice_with_replacement(&mut self, n: usize, k: usize) -> Vec<usize> {
        if k == 0 {
            Vec::new()
        } else {
            self.randint(n, k)
        }
    }
}

/// A perturbation condition: its name as in the data and its perturbed genes (none for control).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// The name as in the condition column (`A+B`, `A+ctrl`, `ctrl`).
    pub name: String,
    /// The perturbed genes (0, 1 or 2).
    pub genes: Vec<String>,
}

impl Condition {
    /// Parses a condition name; `control` is the control value (GEARS: `ctrl`).
    pub fn parse(name: &str, control: &str) -> Result<Self> {
        let bad = |why: &str| {
            TaskError::Labels(format!(
                "condition {name:?}: {why} (expected {control:?}, GENE+{control} or GENE+GENE)"
            ))
        };
        if name == control {
            return Ok(Self {
                name: name.into(),
                genes: vec![],
            });
        }
        let parts: Vec<&str> = name.split('+').collect();
        if parts.len() != 2 || parts.iter().any(|p| p.trim().is_empty()) {
            return Err(bad("not two '+'-separated parts"));
        }
        let genes: Vec<String> = parts
            .iter()
            .filter(|p| **p != control)
            .map(|p| p.to_string())
            .collect();
        match genes.len() {
            0 => Err(bad("both parts are the control")),
            2 if genes[0] == genes[1] => Err(bad("the same gene twice")),
            _ => Ok(Self {
                name: name.into(),
                genes,
            }),
        }
    }

    /// True for the control condition.
    pub fn is_control(&self) -> bool {
        self.genes.is_empty()
    }
    /// True for a single-gene perturbation.
    pub fn is_single(&self) -> bool {
        self.genes.len() == 1
    }
    /// True for a two-gene perturbation.
    pub fn is_double(&self) -> bool {
        self.genes.len() == 2
    }
}

pub use crate::split::SplitPart;

/// GEARS's evaluation groups (the paper's 1/1, 0/2, 1/2, 2/2 unseen are `unseen_single`,
/// `combo_seen2`, `combo_seen1`, `combo_seen0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PertGroup {
    /// A single whose gene is seen in training (and the control).
    SeenSingle,
    /// A single of a gene never perturbed in training.
    UnseenSingle,
    /// A double of two unseen genes.
    ComboSeen0,
    /// A double with one seen gene.
    ComboSeen1,
    /// A double of two seen genes.
    ComboSeen2,
}

impl PertGroup {
    /// The group's name as in the reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SeenSingle => "seen_single",
            Self::UnseenSingle => "unseen_single",
            Self::ComboSeen0 => "combo_seen0",
            Self::ComboSeen1 => "combo_seen1",
            Self::ComboSeen2 => "combo_seen2",
        }
    }
    /// Parses a group name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::SeenSingle,
            Self::UnseenSingle,
            Self::ComboSeen0,
            Self::ComboSeen1,
            Self::ComboSeen2,
        ]
        .into_iter()
        .find(|g| g.as_str() == s)
    }
}

/// A split of conditions: the part of every condition (`None`: held out by GEARS's `combo_seen0`
/// rule, in no part) and its group.
#[derive(Debug, Clone, Default)]
pub struct PerturbSplit {
    /// Condition name → part.
    pub part: BTreeMap<String, Option<SplitPart>>,
    /// Condition name → group.
    pub group: BTreeMap<String, PertGroup>,
}

impl PerturbSplit {
    /// Conditions of one part, in name order.
    pub fn conditions(&self, part: SplitPart) -> Vec<&str> {
        self.part
            .iter()
            .filter(|(_, p)| **p == Some(part))
            .map(|(c, _)| c.as_str())
            .collect()
    }
}

/// Sorted unique perturbed genes of some conditions (`np.unique` order).
fn genes_of(conds: &[&Condition]) -> Vec<String> {
    let set: BTreeSet<&String> = conds.iter().flat_map(|c| c.genes.iter()).collect();
    set.into_iter().cloned().collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Single,
    Double,
}

/// Conditions of `kind` that perturb any of `genes`, in list order (GEARS's `get_perts_from_genes`).
fn with_genes<'a>(
    genes: &BTreeSet<String>,
    list: &[&'a Condition],
    kind: Kind,
) -> Vec<&'a Condition> {
    list.iter()
        .copied()
        .filter(|c| match kind {
            Kind::Single => c.is_single(),
            Kind::Double => c.is_double(),
        })
        .filter(|c| c.genes.iter().any(|g| genes.contains(g)))
        .collect()
}

fn count_in(c: &Condition, genes: &BTreeSet<String>) -> usize {
    c.genes.iter().filter(|g| genes.contains(*g)).count()
}

/// `int(n · fraction)` as Python truncates it.
fn take(n: usize, fraction: f64) -> usize {
    (n as f64 * fraction) as usize
}

struct Simulated<'a> {
    train: Vec<&'a Condition>,
    held: Vec<(&'a Condition, PertGroup)>,
}

fn simulation_step<'a>(
    list: &[&'a Condition],
    gene_fraction: f64,
    combo_fraction: f64,
    seed: u32,
) -> Simulated<'a> {
    let genes = genes_of(list);
    let mut rng = NumpyRandomState::new(seed);
    let seen: BTreeSet<String> = rng
        .choice_without_replacement(genes.len(), take(genes.len(), gene_fraction))
        .into_iter()
        .map(|i| genes[i].clone())
        .collect();
    let unseen: BTreeSet<String> = genes
        .iter()
        .filter(|g| !seen.contains(*g))
        .cloned()
        .collect();
    let mut train = with_genes(&seen, list, Kind::Single);
    let combos = with_genes(&seen, list, Kind::Double);
    let mut held: Vec<(&Condition, PertGroup)> = Vec::new();
    let mut both: Vec<&Condition> = Vec::new();
    for c in combos {
        if count_in(c, &seen) == 1 {
            held.push((c, PertGroup::ComboSeen1));
        } else {
            both.push(c);
        }
    }
    // np.setdiff1d: sorted, unique names.
    both.sort_by(|a, b| a.name.cmp(&b.name));
    both.dedup_by(|a, b| a.name == b.name);
    let mut rng = NumpyRandomState::new(seed);
    let picked: BTreeSet<usize> = rng
        .choice_without_replacement(both.len(), take(both.len(), combo_fraction))
        .into_iter()
        .collect();
    for (i, c) in both.iter().enumerate() {
        if picked.contains(&i) {
            train.push(c);
        } else {
            held.push((c, PertGroup::ComboSeen2));
        }
    }
    for c in with_genes(&unseen, list, Kind::Single) {
        held.push((c, PertGroup::UnseenSingle));
    }
    for c in with_genes(&unseen, list, Kind::Double) {
        if count_in(c, &seen) == 0 {
            held.push((c, PertGroup::ComboSeen0));
        }
    }
    Simulated { train, held }
}

fn check_unique(conds: &[Condition]) -> Result<()> {
    let mut seen = BTreeSet::new();
    for c in conds {
        if !seen.insert(&c.name) {
            return Err(TaskError::Split(format!(
                "condition {:?} listed twice",
                c.name
            )));
        }
    }
    Ok(())
}

/// The group of a condition by how many of its genes occur in training conditions (`trained`):
/// a single of a trained gene (and the control) is `seen_single`, else `unseen_single`; a double
/// is `combo_seen0/1/2`.
pub fn group_by_training(c: &Condition, trained: &BTreeSet<String>) -> PertGroup {
    match (c.genes.len(), count_in(c, trained)) {
        (0, _) | (1, 1) => PertGroup::SeenSingle,
        (1, _) => PertGroup::UnseenSingle,
        (_, 0) => PertGroup::ComboSeen0,
        (_, 1) => PertGroup::ComboSeen1,
        _ => PertGroup::ComboSeen2,
    }
}

/// Groups of conditions that GEARS does not label: by how many genes occur in training.
fn fill_groups(conds: &[Condition], split: &mut PerturbSplit) {
    let trained: BTreeSet<String> = conds
        .iter()
        .filter(|c| split.part.get(&c.name) == Some(&Some(SplitPart::Train)))
        .flat_map(|c| c.genes.iter().cloned())
        .collect();
    for c in conds {
        if split.group.contains_key(&c.name) {
            continue;
        }
        split
            .group
            .insert(c.name.clone(), group_by_training(c, &trained));
    }
}

/// A split the user gives: the part of every condition (an obs column of train / val / test,
/// constant within a condition); groups by how many of a condition's genes occur in training
/// conditions. The control must be in training.
pub fn user_split(
    conds: &[Condition],
    parts: &BTreeMap<String, SplitPart>,
) -> Result<PerturbSplit> {
    check_unique(conds)?;
    let mut split = PerturbSplit::default();
    for c in conds {
        let p = *parts.get(&c.name).ok_or_else(|| {
            TaskError::Split(format!("condition {:?} has no part in the split", c.name))
        })?;
        if c.is_control() && p != SplitPart::Train {
            return Err(TaskError::Split(format!(
                "the control condition {:?} is in {}: it must be in train (every prediction starts from control cells)",
                c.name,
                p.as_str()
            )));
        }
        split.part.insert(c.name.clone(), Some(p));
    }
    fill_groups(conds, &mut split);
    Ok(split)
}

/// GEARS's `simulation` split of `conds` (in the order of first appearance in the data, the
/// control among them or not). The control is always training.
pub fn simulation_split(
    conds: &[Condition],
    seed: u32,
    train_gene_fraction: f64,
    combo_seen2_train_fraction: f64,
) -> Result<PerturbSplit> {
    check_unique(conds)?;
    if !(0.0..=1.0).contains(&train_gene_fraction)
        || !(0.0..=1.0).contains(&combo_seen2_train_fraction)
    {
        return Err(TaskError::Config(
            "split fractions must lie in [0, 1]".into(),
        ));
    }
    let perts: Vec<&Condition> = conds.iter().filter(|c| !c.is_control()).collect();
    let first = simulation_step(
        &perts,
        train_gene_fraction,
        combo_seen2_train_fraction,
        seed,
    );
    let second = simulation_step(&first.train, 0.9, 0.9, seed);
    let mut split = PerturbSplit::default();
    for c in conds.iter().filter(|c| c.is_control()) {
        split.part.insert(c.name.clone(), Some(SplitPart::Train));
    }
    for c in &second.train {
        split.part.insert(c.name.clone(), Some(SplitPart::Train));
    }
    for (held, part) in [
        (&second.held, SplitPart::Val),
        (&first.held, SplitPart::Test),
    ] {
        for (c, g) in held.iter() {
            split.part.insert(c.name.clone(), Some(part));
            split.group.insert(c.name.clone(), *g);
        }
    }
    fill_groups(conds, &mut split);
    Ok(split)
}

/// One `get_split_list` call of GEARS's `combo` split: (kept, test, held out).
fn combo_step<'a>(
    list: &[&'a Condition],
    seen: u8,
    test_fraction: f64,
    rng: &mut NumpyRandomState,
) -> (Vec<&'a Condition>, BTreeSet<String>, BTreeSet<String>) {
    let n_single = list.iter().filter(|c| c.is_single()).count();
    let genes = genes_of(list);
    let picks = if genes.is_empty() {
        Vec::new()
    } else {
        rng.choice_with_replacement(genes.len(), take(n_single, test_fraction))
    };
    let test_genes: BTreeSet<String> = picks.into_iter().map(|i| genes[i].clone()).collect();
    let mut held = BTreeSet::new();
    let test: BTreeSet<String> = if seen == 2 {
        let combos: Vec<&Condition> = list.iter().copied().filter(|c| c.is_double()).collect();
        let k = take(combos.len(), test_fraction);
        if combos.is_empty() {
            BTreeSet::new()
        } else {
            rng.choice_with_replacement(combos.len(), k)
                .into_iter()
                .map(|i| combos[i].name.clone())
                .collect()
        }
    } else {
        let mut t: BTreeSet<String> = with_genes(&test_genes, list, Kind::Single)
            .into_iter()
            .map(|c| c.name.clone())
            .collect();
        for c in with_genes(&test_genes, list, Kind::Double) {
            let outside = c.genes.len() - count_in(c, &test_genes);
            if outside > seen as usize {
                held.insert(c.name.clone());
            } else {
                t.insert(c.name.clone());
            }
        }
        t
    };
    let kept = list
        .iter()
        .copied()
        .filter(|c| !test.contains(&c.name) && !held.contains(&c.name))
        .collect();
    (kept, test, held)
}

/// GEARS's `combo_seen0`, `combo_seen1` or `combo_seen2` split (`seen` ∈ {0, 1, 2}), test and
/// validation fractions 0.1 as GEARS's defaults.
pub fn combo_split(conds: &[Condition], seen: u8, seed: u32) -> Result<PerturbSplit> {
    check_unique(conds)?;
    if seen > 2 {
        return Err(TaskError::Config(format!(
            "combo_seen{seen}: seen must be 0, 1 or 2"
        )));
    }
    let perts: Vec<&Condition> = conds.iter().filter(|c| !c.is_control()).collect();
    let mut rng = NumpyRandomState::new(seed);
    let (train, test, held_a) = combo_step(&perts, seen, 0.1, &mut rng);
    let (train, val, held_b) = combo_step(&train, seen, 0.1, &mut rng);
    let train: BTreeSet<&str> = train.iter().map(|c| c.name.as_str()).collect();
    let mut split = PerturbSplit::default();
    for c in conds {
        let part = if c.is_control() || train.contains(c.name.as_str()) {
            Some(SplitPart::Train)
        } else if val.contains(&c.name) {
            Some(SplitPart::Val)
        } else if test.contains(&c.name) {
            Some(SplitPart::Test)
        } else {
            debug_assert!(held_a.contains(&c.name) || held_b.contains(&c.name));
            None
        };
        split.part.insert(c.name.clone(), part);
    }
    fill_groups(conds, &mut split);
    Ok(split)
}

/// A weighted, directed gene–gene edge `source → target` (indices into the gene list).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeneEdge {
    /// The neighbour whose embedding flows in.
    pub source: usize,
    /// The gene that receives it.
    pub target: usize,
    /// The edge weight (|r| for co-expression, Jaccard for GO).
    pub weight: f64,
}

/// The cells GEARS computes its co-expression graph over: those of training conditions whose
/// name contains the control (the control itself and the training singles — GEARS's code,
/// `'ctrl' in condition`; pass `control_only` for the control cells alone).
pub fn coexpression_cells(
    cell_conditions: &[&Condition],
    split: &PerturbSplit,
    control_only: bool,
) -> Vec<usize> {
    cell_conditions
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            let train = split.part.get(&c.name) == Some(&Some(SplitPart::Train));
            c.is_control() || (!control_only && train && c.is_single())
        })
        .map(|(i, _)| i)
        .collect()
}

/// GEARS's co-expression graph: Pearson correlation between genes over the rows of `x`
/// (row-major `[cells, genes]` log-normalized values), |r| (0 for a gene without variance,
/// clipped to 1); for every target gene its `k + 1` largest |r| (itself included), kept when
/// above `threshold`. Edges come grouped by target, each group by ascending weight.
pub fn coexpression_graph(
    x: &[f64],
    genes: usize,
    threshold: f64,
    k: usize,
) -> Result<Vec<GeneEdge>> {
    use rayon::prelude::*;
    if genes == 0 || x.is_empty() || !x.len().is_multiple_of(genes) {
        return Err(TaskError::Config(format!(
            "co-expression: {} values are not whole rows of {genes} genes",
            x.len()
        )));
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(TaskError::Config(format!(
            "co-expression: non-finite value in cell {}, gene {}",
            i / genes,
            i % genes
        )));
    }
    let n = x.len() / genes;
    // Centered columns, gene-major, and their sums of squares.
    let mut cols = vec![0.0f64; x.len()];
    let mut ss = vec![0.0f64; genes];
    for g in 0..genes {
        let mean = (0..n).map(|c| x[c * genes + g]).sum::<f64>() / n as f64;
        for c in 0..n {
            let v = x[c * genes + g] - mean;
            cols[g * n + c] = v;
            ss[g] += v * v;
        }
    }
    let edges: Vec<Vec<GeneEdge>> = (0..genes)
        .into_par_iter()
        .map(|t| {
            let ct = &cols[t * n..(t + 1) * n];
            let mut r: Vec<(f64, usize)> = (0..genes)
                .map(|s| {
                    let cs = &cols[s * n..(s + 1) * n];
                    let dot: f64 = ct.iter().zip(cs).map(|(a, b)| a * b).sum();
                    let v = (dot / (ss[t] * ss[s]).sqrt()).clamp(-1.0, 1.0).abs();
                    (if v.is_finite() { v } else { 0.0 }, s)
                })
                .collect();
            r.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            r[genes.saturating_sub(k + 1)..]
                .iter()
                .filter(|(w, _)| *w > threshold)
                .map(|&(weight, source)| GeneEdge {
                    source,
                    target: t,
                    weight,
                })
                .collect()
        })
        .collect();
    Ok(edges.into_iter().flatten().collect())
}

/// Reads a gene graph file — TSV (optionally gzip-compressed, by a `.gz` name) with a header
/// `gene_a<TAB>gene_b<TAB>weight`, one edge `gene_a → gene_b` per line, weight finite and > 0 —
/// keeping the edges whose genes are both in `genes` (the rest is counted in the second value).
/// The shipped GO graph (`aido-tasks/data/go_jaccard_top20.tsv.gz`) is in this format.
pub fn read_gene_graph(path: &std::path::Path, genes: &[String]) -> Result<(Vec<GeneEdge>, usize)> {
    let (edges, dropped, _) = parse_gene_graph(open_graph(path)?, path, genes, false)?;
    Ok((edges, dropped))
}

fn open_graph(path: &std::path::Path) -> Result<Box<dyn std::io::Read>> {
    let file = std::fs::File::open(path).map_err(crate::error::io(path))?;
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

/// A gene graph file as [`read_gene_graph`] reads it, over **all** its genes: the nodes are
/// `genes` (indices `0..genes.len()`) followed by the file's other genes in their first
/// appearance; every edge is kept. Upstream GEARS's perturbation graph spans its whole GO graph
/// in this way, so a measured gene keeps the neighbours that were not measured.
pub fn read_gene_graph_over(
    path: &std::path::Path,
    genes: &[String],
) -> Result<(Vec<GeneEdge>, Vec<String>)> {
    let (edges, _, nodes) = parse_gene_graph(open_graph(path)?, path, genes, true)?;
    Ok((edges, nodes))
}

/// The shipped GO graph over all its genes, as [`read_gene_graph_over`].
pub fn go_graph_over(genes: &[String]) -> Result<(Vec<GeneEdge>, Vec<String>)> {
    let (edges, _, nodes) = parse_gene_graph(
        Box::new(flate2::read::MultiGzDecoder::new(GO_GRAPH_GZ)),
        std::path::Path::new("<shipped go_jaccard_top20.tsv.gz>"),
        genes,
        true,
    )?;
    Ok((edges, nodes))
}

/// The GO-Jaccard graph shipped with the crate (`data/go_jaccard_top20.tsv.gz`: GEARS's rule,
/// top 20 partners per gene, derived from Bioconductor's org.Hs.eg.db; see `data/README.md`).
pub const GO_GRAPH_GZ: &[u8] = include_bytes!("../data/go_jaccard_top20.tsv.gz");

/// The shipped GO graph ([`GO_GRAPH_GZ`]) restricted to `genes`, as [`read_gene_graph`].
pub fn go_graph(genes: &[String]) -> Result<(Vec<GeneEdge>, usize)> {
    let (edges, dropped, _) = parse_gene_graph(
        Box::new(flate2::read::MultiGzDecoder::new(GO_GRAPH_GZ)),
        std::path::Path::new("<shipped go_jaccard_top20.tsv.gz>"),
        genes,
        false,
    )?;
    Ok((edges, dropped))
}

/// Edges, edges dropped (a gene not in `genes`, when not `extend`), nodes (`genes`, then with
/// `extend` the file's other genes).
fn parse_gene_graph(
    reader: Box<dyn std::io::Read + '_>,
    path: &std::path::Path,
    genes: &[String],
    extend: bool,
) -> Result<(Vec<GeneEdge>, usize, Vec<String>)> {
    use std::io::{BufRead, BufReader};
    let mut index: BTreeMap<String, usize> = genes
        .iter()
        .enumerate()
        .map(|(i, g)| (g.clone(), i))
        .collect();
    let mut nodes = genes.to_vec();
    let bad = |line: usize, why: String| {
        TaskError::Config(format!("{}: line {line}: {why}", path.display()))
    };
    let mut edges = Vec::new();
    let mut dropped = 0;
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.map_err(crate::error::io(path))?;
        let no = i + 1;
        if i == 0 {
            let h: Vec<&str> = line.trim_end().split('\t').collect();
            if h != ["gene_a", "gene_b", "weight"] {
                return Err(bad(
                    no,
                    format!("header must be gene_a<TAB>gene_b<TAB>weight, found {line:?}"),
                ));
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.trim_end().split('\t').collect();
        if f.len() != 3 {
            return Err(bad(no, format!("{} fields, expected 3", f.len())));
        }
        let w: f64 = f[2]
            .parse()
            .map_err(|_| bad(no, format!("weight {:?} is not a number", f[2])))?;
        if !w.is_finite() || w <= 0.0 {
            return Err(bad(no, format!("weight {w} must be finite and > 0")));
        }
        if extend {
            for name in [f[0], f[1]] {
                if !index.contains_key(name) {
                    index.insert(name.to_string(), nodes.len());
                    nodes.push(name.to_string());
                }
            }
        }
        match (index.get(f[0]), index.get(f[1])) {
            (Some(&source), Some(&target)) => edges.push(GeneEdge {
                source,
                target,
                weight: w,
            }),
            _ => dropped += 1,
        }
    }
    Ok((edges, dropped, nodes))
}

/// Ahlmann-Eltze, Huber & Anders (2025)'s protocol for double perturbations: every single (and
/// the control) trains; the doubles, shuffled with `seed` (numpy's legacy generator), go half to
/// test; of the other half a tenth (at least one) validates (GEARS's model selection) and the
/// rest train. Needs at least four doubles.
pub fn double_split(conds: &[Condition], seed: u32) -> Result<PerturbSplit> {
    check_unique(conds)?;
    let doubles: Vec<&Condition> = conds.iter().filter(|c| c.is_double()).collect();
    if doubles.len() < 4 {
        return Err(TaskError::Split(format!(
            "the double protocol needs at least 4 double perturbations (2 to test, 1 to train, 1 to validate); the screen has {}",
            doubles.len()
        )));
    }
    let mut rng = NumpyRandomState::new(seed);
    let order = rng.permutation(doubles.len());
    let n_test = doubles.len() / 2;
    let rest = doubles.len() - n_test;
    let n_val = (rest / 10).max(1);
    let mut split = PerturbSplit::default();
    for c in conds {
        if !c.is_double() {
            split.part.insert(c.name.clone(), Some(SplitPart::Train));
        }
    }
    for (rank, &i) in order.iter().enumerate() {
        let part = if rank < n_test {
            SplitPart::Test
        } else if rank < n_test + n_val {
            SplitPart::Val
        } else {
            SplitPart::Train
        };
        split.part.insert(doubles[i].name.clone(), Some(part));
    }
    fill_groups(conds, &mut split);
    Ok(split)
}

/// The number of top DE genes the metrics are read on (GEARS and the paper: 20).
pub const TOP_DE: usize = 20;

/// The top `n` DE genes of a condition against the control: scanpy's t-test score (Welch, on
/// log-normalized values) ranked by |t| (`aido_eval::de`). Rows are row-major `[cells, genes]`.
pub fn top_de_genes(
    condition: &[f64],
    control: &[f64],
    genes: usize,
    n: usize,
) -> Result<Vec<usize>> {
    let t = aido_eval::de::welch_t(condition, control, genes)?;
    let mut order = aido_eval::de::rank_by_abs(&t);
    order.truncate(n);
    Ok(order)
}

/// What is known of one condition for scoring: its name, part, group, the mean log-normalized
/// expression of its cells (`[genes]`) and its top DE genes against the control.
#[derive(Debug, Clone)]
pub struct ConditionTruth {
    /// The condition.
    pub condition: Condition,
    /// Its part of the split.
    pub part: Option<SplitPart>,
    /// Its group.
    pub group: PertGroup,
    /// Mean log-normalized expression of its cells, `[genes]`.
    pub mean: Vec<f64>,
    /// Its top DE genes (indices), by |t| against the control.
    pub top_de: Vec<usize>,
    /// Its cells.
    pub n_cells: usize,
}

/// The baselines every perturbation report shows beside the model, from the control mean and the
/// training conditions only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Baseline {
    /// The control mean: the perturbation changes nothing.
    NoChange,
    /// The control mean plus the mean change of the training perturbations.
    MeanDelta,
    /// For a double whose two singles are in training: control + both singles' changes.
    Additive,
}

impl Baseline {
    /// The name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoChange => "no_change",
            Self::MeanDelta => "mean_delta",
            Self::Additive => "additive",
        }
    }
}

/// The baselines' predictions (mean log-normalized expression, `[genes]`) of `target`, or
/// `None` where a baseline does not apply (additive for anything but a double of two training
/// singles). `control` is the control mean, `truths` every condition (only training ones used).
pub fn baseline_prediction(
    baseline: Baseline,
    target: &Condition,
    control: &[f64],
    truths: &[ConditionTruth],
) -> Option<Vec<f64>> {
    let train = || {
        truths
            .iter()
            .filter(|t| t.part == Some(SplitPart::Train) && !t.condition.is_control())
    };
    match baseline {
        Baseline::NoChange => Some(control.to_vec()),
        Baseline::MeanDelta => {
            let n = train().count();
            let mut out = control.to_vec();
            if n > 0 {
                for t in train() {
                    for ((o, m), c) in out.iter_mut().zip(&t.mean).zip(control) {
                        *o += (m - c) / n as f64;
                    }
                }
            }
            Some(out)
        }
        Baseline::Additive => {
            if !target.is_double() {
                return None;
            }
            let single = |g: &String| {
                train().find(|t| t.condition.is_single() && &t.condition.genes[0] == g)
            };
            let (a, b) = (single(&target.genes[0])?, single(&target.genes[1])?);
            Some(
                control
                    .iter()
                    .zip(&a.mean)
                    .zip(&b.mean)
                    .map(|((c, x), y)| c + (x - c) + (y - c))
                    .collect(),
            )
        }
    }
}

/// The metrics of one predictor on one condition (the fields of [`GroupScore`], before the
/// group's mean).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConditionScore {
    /// The condition's name (a key where reports write it, not serialized).
    #[serde(skip)]
    pub condition: String,
    /// Its test group (likewise).
    #[serde(skip)]
    pub group: PertGroup,
    /// MSE of the prediction on the condition's top DE genes (GEARS).
    pub mse_top20_de: f64,
    /// Pearson of predicted and true changes from the control mean on those genes (GEARS; 0
    /// where a side is constant).
    pub pearson_delta: f64,
    /// L2 distance ‖ŷ − y‖₂ on the 1,000 genes most expressed in control (Ahlmann-Eltze et al.
    /// 2025).
    pub l2_top1000: f64,
    /// Pearson of the changes from the control mean on those genes (Ahlmann-Eltze).
    pub pearson_delta_top1000: f64,
    /// Pearson of the changes from the mean of the training perturbation centroids, all genes
    /// (Systema).
    pub pearson_delta_centroid: f64,
    /// The same on the condition's top-20 DE genes (Systema).
    pub pearson_delta_centroid_top20_de: f64,
    /// 1 when the prediction is strictly closest (Euclidean) to this condition's true profile
    /// among the scored part's conditions, else 0 (Systema's centroid accuracy, per condition).
    pub centroid_accuracy: f64,
    /// cell-eval's `overlap_at_N` on predicted vs real cells (NaN, `null` in JSON, when cells
    /// were not scored).
    #[serde(rename = "overlap_at_N")]
    pub overlap_at_n: f64,
    /// cell-eval's `discrimination_score_l1` among the scored conditions.
    pub discrimination_score_l1: f64,
    /// cell-eval's pseudobulk `mae`.
    pub mae: f64,
}

impl ConditionScore {
    fn values(&self) -> [f64; 10] {
        [
            self.mse_top20_de,
            self.pearson_delta,
            self.l2_top1000,
            self.pearson_delta_top1000,
            self.pearson_delta_centroid,
            self.pearson_delta_centroid_top20_de,
            self.centroid_accuracy,
            self.overlap_at_n,
            self.discrimination_score_l1,
            self.mae,
        ]
    }
}

/// The metrics of one predictor over one group: means over its conditions' [`ConditionScore`]s.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GroupScore {
    /// Mean over conditions of the MSE on each condition's top DE genes (GEARS).
    pub mse_top20_de: f64,
    /// Mean over conditions of the Pearson correlation of predicted and true changes from the
    /// control mean there (GEARS).
    pub pearson_delta: f64,
    /// Mean L2 distance ‖ŷ − y‖₂ on the 1,000 genes most expressed in control (Ahlmann-Eltze
    /// et al. 2025; all genes when there are fewer).
    pub l2_top1000: f64,
    /// Mean Pearson of the changes from the control mean on those genes (Ahlmann-Eltze).
    pub pearson_delta_top1000: f64,
    /// Mean Pearson of the changes from the mean of the training perturbation centroids, all
    /// genes (Systema).
    pub pearson_delta_centroid: f64,
    /// The same on each condition's top-20 DE genes (Systema).
    pub pearson_delta_centroid_top20_de: f64,
    /// Share of conditions whose prediction is strictly closest (Euclidean) to its own true
    /// profile among the test conditions' (Systema's centroid accuracy).
    pub centroid_accuracy: f64,
    /// cell-eval's `overlap_at_N` on predicted vs real cells (NaN when cells were not scored).
    #[serde(rename = "overlap_at_N")]
    pub overlap_at_n: f64,
    /// cell-eval's `discrimination_score_l1` among the scored conditions.
    pub discrimination_score_l1: f64,
    /// cell-eval's pseudobulk `mae`.
    pub mae: f64,
    /// Conditions scored.
    pub n_conditions: usize,
}

impl GroupScore {
    /// The means of `scores` (one group's conditions; `None` when empty).
    pub fn mean_of<'a>(scores: impl IntoIterator<Item = &'a ConditionScore>) -> Option<Self> {
        let mut s = [0.0f64; 10];
        let mut n = 0usize;
        for c in scores {
            for (a, v) in s.iter_mut().zip(c.values()) {
                *a += v;
            }
            n += 1;
        }
        if n == 0 {
            return None;
        }
        let m = |k: usize| s[k] / n as f64;
        Some(Self {
            mse_top20_de: m(0),
            pearson_delta: m(1),
            l2_top1000: m(2),
            pearson_delta_top1000: m(3),
            pearson_delta_centroid: m(4),
            pearson_delta_centroid_top20_de: m(5),
            centroid_accuracy: m(6),
            overlap_at_n: m(7),
            discrimination_score_l1: m(8),
            mae: m(9),
            n_conditions: n,
        })
    }
}

/// The genes most expressed in the control (`n` of them; all when fewer), by mean descending,
/// ties in gene order.
pub fn top_expressed(control: &[f64], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..control.len()).collect();
    order.sort_by(|&a, &b| control[b].total_cmp(&control[a]).then(a.cmp(&b)));
    order.truncate(n);
    order
}

/// Pearson correlation, 0 where undefined (a constant side), as GEARS reports it.
fn pearson0(a: &[f64], b: &[f64]) -> f64 {
    let r = aido_eval::perturb::pearson(a, b);
    if r.is_finite() { r } else { 0.0 }
}

/// Scores predictions (`name → [genes]` means) of the conditions of `part` per group, averaged
/// over the group's conditions: GEARS's MSE on the top DE genes and Pearson of changes from the
/// control mean, Ahlmann-Eltze's L2 and Pearson Δ on the 1,000 most expressed control genes,
/// Systema's Pearson Δ against the mean of the training perturbation centroids (all genes and
/// top-20 DE genes) and centroid accuracy among the `part`'s conditions. Conditions without a
/// prediction are skipped (an additive baseline, say).
pub fn score_groups(
    truths: &[ConditionTruth],
    part: SplitPart,
    control: &[f64],
    predicted: &BTreeMap<String, Vec<f64>>,
) -> Result<BTreeMap<PertGroup, GroupScore>> {
    score_groups_with_cells(truths, part, control, predicted, None)
}

/// [`score_groups`] plus the cell-eval trio per group from per-condition cell-level scores
/// (`condition → scores`, e.g. from `perturb_fit::cell_level_scores`); NaN without them.
pub fn score_groups_with_cells(
    truths: &[ConditionTruth],
    part: SplitPart,
    control: &[f64],
    predicted: &BTreeMap<String, Vec<f64>>,
    cells: Option<&BTreeMap<String, aido_eval::perturb::PerturbationScores>>,
) -> Result<BTreeMap<PertGroup, GroupScore>> {
    Ok(group_means(&score_conditions(
        truths, part, control, predicted, cells,
    )?))
}

/// Per group, the means of the conditions' scores.
pub fn group_means(scores: &[ConditionScore]) -> BTreeMap<PertGroup, GroupScore> {
    let mut by: BTreeMap<PertGroup, Vec<&ConditionScore>> = BTreeMap::new();
    for s in scores {
        by.entry(s.group).or_default().push(s);
    }
    by.into_iter()
        .filter_map(|(g, v)| GroupScore::mean_of(v).map(|m| (g, m)))
        .collect()
}

/// The metrics of [`score_groups_with_cells`] for each condition of `part` with a prediction,
/// in the order of `truths` (what the group means are taken over).
pub fn score_conditions(
    truths: &[ConditionTruth],
    part: SplitPart,
    control: &[f64],
    predicted: &BTreeMap<String, Vec<f64>>,
    cells: Option<&BTreeMap<String, aido_eval::perturb::PerturbationScores>>,
) -> Result<Vec<ConditionScore>> {
    let g = control.len();
    let top1000 = top_expressed(control, 1000);
    let train: Vec<&ConditionTruth> = truths
        .iter()
        .filter(|t| t.part == Some(SplitPart::Train) && !t.condition.is_control())
        .collect();
    let reference: Vec<f64> = if train.is_empty() {
        control.to_vec()
    } else {
        (0..g)
            .map(|j| train.iter().map(|t| t.mean[j]).sum::<f64>() / train.len() as f64)
            .collect()
    };
    let tested: Vec<&ConditionTruth> = truths
        .iter()
        .filter(|t| t.part == Some(part) && !t.condition.is_control())
        .collect();
    let dist = |a: &[f64], b: &[f64]| -> f64 {
        a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>()
    };
    let on = |v: &[f64], genes: &[usize], base: &[f64]| -> Vec<f64> {
        genes.iter().map(|&j| v[j] - base[j]).collect()
    };
    let all: Vec<usize> = (0..g).collect();
    let mut out = Vec::with_capacity(tested.len());
    for (i, t) in tested.iter().enumerate() {
        let Some(p) = predicted.get(&t.condition.name) else {
            continue;
        };
        let mse = aido_eval::de::mse_on(p, &t.mean, &t.top_de)?;
        let r = aido_eval::de::pearson_delta_on(p, &t.mean, control, &t.top_de)?;
        let l2 = top1000
            .iter()
            .map(|&j| (p[j] - t.mean[j]) * (p[j] - t.mean[j]))
            .sum::<f64>()
            .sqrt();
        let r1000 = pearson0(&on(p, &top1000, control), &on(&t.mean, &top1000, control));
        let rc = pearson0(&on(p, &all, &reference), &on(&t.mean, &all, &reference));
        let rc20 = pearson0(
            &on(p, &t.top_de, &reference),
            &on(&t.mean, &t.top_de, &reference),
        );
        let own = dist(p, &t.mean);
        let closest = tested
            .iter()
            .enumerate()
            .all(|(q, o)| q == i || own < dist(p, &o.mean));
        let ce = cells.and_then(|c| c.get(&t.condition.name));
        let trio = ce.map_or([f64::NAN; 3], |c| {
            [c.overlap_at_n, c.discrimination_score_l1, c.mae]
        });
        out.push(ConditionScore {
            condition: t.condition.name.clone(),
            group: t.group,
            mse_top20_de: mse,
            pearson_delta: r,
            l2_top1000: l2,
            pearson_delta_top1000: r1000,
            pearson_delta_centroid: rc,
            pearson_delta_centroid_top20_de: rc20,
            centroid_accuracy: if closest { 1.0 } else { 0.0 },
            overlap_at_n: trio[0],
            discrimination_score_l1: trio[1],
            mae: trio[2],
        });
    }
    Ok(out)
}
