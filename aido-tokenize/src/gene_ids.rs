//! Human gene identifiers: official symbols, Ensembl gene IDs and HGNC aliases.
//!
//! The table (`data/gene_ids.tsv.gz`, compiled into the crate) is derived once by
//! `tools/derive/gene_ids.py` from Bioconductor's org.Hs.eg.db 3.16.0 (Debian
//! `r-bioc-org.hs.eg.db` 3.16.0-1; NCBI Entrez Gene data of 2022-09-12): one row per Entrez
//! Gene record with its official symbol, its Ensembl gene IDs and the other symbols it has
//! carried. See `aido-tokenize/data/README.md` for the licence and coverage.
//!
//! The rules applied here, used by [`GeneAlignment`](crate::GeneAlignment):
//!
//! - an **official symbol** resolves to the gene(s) carrying it (a handful of symbols belong to
//!   more than one Entrez record, e.g. `HBD`; all of them are returned);
//! - an **alias** resolves only when it is nobody's official symbol and exactly one gene
//!   carries it (`ATP1A1` is an old alias of ATP1A3 but is ATP1A1's own symbol, so it resolves
//!   to ATP1A1 only; an alias shared by two genes resolves to neither);
//! - an **Ensembl gene ID** (`ENSG…`, the `.version` suffix ignored) resolves to the gene(s)
//!   NCBI links it to.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::str::FromStr;
use std::sync::OnceLock;

/// How a dataset's gene names are interpreted when aligning them to the vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GeneIdMode {
    /// Each name by its shape: `ENSG…` names as Ensembl IDs, the others as symbols (exact, then
    /// through the alias table). The report says which the column mostly holds.
    #[default]
    Auto,
    /// Names are gene symbols: exact match, then renamed symbols through the alias table.
    /// Ensembl-shaped names are never looked up.
    Symbol,
    /// Names are Ensembl gene IDs; any other name is dropped.
    Ensembl,
    /// Exact vocabulary symbols only, no alias table: the authors' preprocessing (and what
    /// `aido` did before identifier routes existed).
    Exact,
}

impl GeneIdMode {
    /// The flag value (`auto`, `symbol`, `ensembl`).
    pub fn as_str(self) -> &'static str {
        match self {
            GeneIdMode::Auto => "auto",
            GeneIdMode::Symbol => "symbol",
            GeneIdMode::Ensembl => "ensembl",
            GeneIdMode::Exact => "exact",
        }
    }
}

impl fmt::Display for GeneIdMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GeneIdMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(GeneIdMode::Auto),
            "symbol" | "symbols" => Ok(GeneIdMode::Symbol),
            "ensembl" => Ok(GeneIdMode::Ensembl),
            "exact" => Ok(GeneIdMode::Exact),
            other => Err(format!(
                "'{other}' is not a gene id kind: expected symbol, ensembl, auto or exact"
            )),
        }
    }
}

/// Whether `name` looks like a human Ensembl gene ID: `ENSG` followed by digits, optionally
/// `.version`.
pub fn looks_like_ensembl(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("ENSG") else {
        return false;
    };
    let id = strip_version(rest);
    !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && (id.len() == rest.len() || rest[id.len() + 1..].bytes().all(|b| b.is_ascii_digit()))
}

/// An Ensembl ID without its `.version` suffix (`ENSG00000141510.17` → `ENSG00000141510`).
pub fn strip_version(id: &str) -> &str {
    match id.find('.') {
        Some(i) => &id[..i],
        None => id,
    }
}

/// What a symbol resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbolHit<'a> {
    /// The official symbol of these genes (table rows).
    Official(&'a [u32]),
    /// An unambiguous alias of this gene (table row).
    Alias(u32),
    /// An alias carried by this many genes, none of which has it as official symbol.
    Ambiguous(usize),
    /// Not in the table.
    Unknown,
}

/// The identifier table: genes (rows) with their symbol, Ensembl IDs and aliases.
#[derive(Debug, Clone)]
pub struct GeneIdTable {
    symbols: Vec<String>,
    official: HashMap<String, Vec<u32>>,
    alias: HashMap<String, Vec<u32>>,
    ensembl: HashMap<String, Vec<u32>>,
}

static BUILTIN_GZ: &[u8] = include_bytes!("../data/gene_ids.tsv.gz");

impl GeneIdTable {
    /// The table compiled into the crate (org.Hs.eg.db 3.16.0), parsed once per process.
    pub fn builtin() -> &'static GeneIdTable {
        static TABLE: OnceLock<GeneIdTable> = OnceLock::new();
        TABLE.get_or_init(|| {
            let mut text = String::new();
            flate2::read::GzDecoder::new(BUILTIN_GZ)
                .read_to_string(&mut text)
                .expect("the compiled-in gene id table is valid gzip UTF-8 (checked by tests)");
            GeneIdTable::parse(&text)
                .expect("the compiled-in gene id table parses (checked by tests)")
        })
    }

    /// Parses the TSV `entrez<TAB>symbol<TAB>ensembl<TAB>aliases` (lists joined with `|`, a
    /// header line first). The error names the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut t = GeneIdTable {
            symbols: Vec::new(),
            official: HashMap::new(),
            alias: HashMap::new(),
            ensembl: HashMap::new(),
        };
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, h)) if h.starts_with("entrez\tsymbol\tensembl\taliases") => {}
            _ => return Err("line 1: expected the header entrez\tsymbol\tensembl\taliases".into()),
        }
        for (i, line) in lines {
            if line.is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() != 4 {
                return Err(format!("line {}: {} fields, expected 4", i + 1, f.len()));
            }
            let row = t.symbols.len() as u32;
            t.symbols.push(f[1].to_string());
            if !f[1].is_empty() {
                t.official.entry(f[1].to_string()).or_default().push(row);
            }
            for e in f[2].split('|').filter(|s| !s.is_empty()) {
                t.ensembl.entry(e.to_string()).or_default().push(row);
            }
            for a in f[3].split('|').filter(|s| !s.is_empty()) {
                t.alias.entry(a.to_string()).or_default().push(row);
            }
        }
        Ok(t)
    }

    /// Number of genes (rows).
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// The official symbol of row `gene`.
    pub fn symbol(&self, gene: u32) -> &str {
        &self.symbols[gene as usize]
    }

    /// Resolves a symbol: official first, then an unambiguous alias.
    pub fn resolve_symbol(&self, symbol: &str) -> SymbolHit<'_> {
        if let Some(rows) = self.official.get(symbol) {
            return SymbolHit::Official(rows);
        }
        match self.alias.get(symbol).map(Vec::as_slice) {
            Some([row]) => SymbolHit::Alias(*row),
            Some(rows) if !rows.is_empty() => SymbolHit::Ambiguous(rows.len()),
            _ => SymbolHit::Unknown,
        }
    }

    /// The genes an Ensembl gene ID (version suffix ignored) is linked to; empty when unknown.
    pub fn resolve_ensembl(&self, id: &str) -> &[u32] {
        self.ensembl
            .get(strip_version(id))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ensembl_shape() {
        assert!(looks_like_ensembl("ENSG00000141510"));
        assert!(looks_like_ensembl("ENSG00000141510.17"));
        assert!(!looks_like_ensembl("ENSMUSG00000059552"));
        assert!(!looks_like_ensembl("ENSG"));
        assert!(!looks_like_ensembl("ENSG0001.x"));
        assert!(!looks_like_ensembl("TP53"));
        assert_eq!(strip_version("ENSG00000141510.17"), "ENSG00000141510");
    }

    #[test]
    fn modes_parse() {
        assert_eq!("Ensembl".parse::<GeneIdMode>(), Ok(GeneIdMode::Ensembl));
        assert_eq!("symbol".parse::<GeneIdMode>(), Ok(GeneIdMode::Symbol));
        assert!(
            "entrez"
                .parse::<GeneIdMode>()
                .unwrap_err()
                .contains("entrez")
        );
    }

    #[test]
    fn parse_errors_name_the_line() {
        assert!(GeneIdTable::parse("x\n").unwrap_err().contains("line 1"));
        let e = GeneIdTable::parse("entrez\tsymbol\tensembl\taliases\n1\tA\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }
}
