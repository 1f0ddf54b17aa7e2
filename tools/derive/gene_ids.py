#!/usr/bin/env python3
"""Derive the human gene-identifier table shipped as
``aido-tokenize/data/gene_ids.tsv.gz``.

The table lets ``aido`` align a dataset whose genes are named by Ensembl gene
IDs (CELLxGENE, Cell Ranger ``features.tsv`` column 1) or by old / new HGNC
symbols to the AIDO.Cell vocabulary, which holds gene symbols.

What it reads
-------------
``--sqlite``: ``org.Hs.eg.sqlite`` from the Bioconductor annotation package
org.Hs.eg.db, as shipped by Debian's ``r-bioc-org.hs.eg.db`` (version 3.16.0-1
in Debian bookworm; file
``usr/lib/R/site-library/org.Hs.eg.db/extdata/org.Hs.eg.sqlite``)::

    cd /tmp && apt-get download r-bioc-org.hs.eg.db \\
        && dpkg-deb -x r-bioc-org.hs.eg.db_*_all.deb /tmp/orghs && cd -
    python3 tools/derive/gene_ids.py \\
        --sqlite /tmp/orghs/usr/lib/R/site-library/org.Hs.eg.db/extdata/org.Hs.eg.sqlite \\
        --out aido-tokenize/data/gene_ids.tsv.gz

Tables used (all keyed by the internal ``_id``, mapped to the Entrez Gene ID
through ``genes.gene_id``):

* ``gene_info.symbol``: the official symbol (Bioconductor map ``SYMBOL``);
* ``ensembl.ensembl_id``: Ensembl gene IDs (map ``ENSEMBL``, from NCBI's
  ``gene2ensembl``);
* ``alias.alias_symbol``: every symbol the gene has carried, the official one
  included (map ``ALIAS2EG``).

The exact rule
--------------
One row per Entrez Gene record in ``genes``, ordered by Entrez ID as an
integer. Columns::

    entrez<TAB>symbol<TAB>ensembl<TAB>aliases

* ``ensembl``: the gene's distinct Ensembl IDs, sorted (Python string order),
  joined with ``|``; empty when it has none.
* ``aliases``: the gene's distinct ``alias_symbol`` values other than its own
  official symbol, sorted, joined with ``|``. Aliases that contain a tab, a
  ``|`` or a comma are free-text descriptions rather than symbols
  (e.g. ``beta-1,3-GalTase 5``) and are left out; the script prints how many.

No ambiguity is resolved here: the table keeps every link, and the reader in
``aido-tokenize`` (``gene_ids.rs``) applies the rules (an alias maps only when
exactly one gene carries it and it is nobody's official symbol; an Ensembl ID
maps only when exactly one gene has it).

Output: gzip-compressed, written with mtime = 0 and no file name, so a rerun
on the same input is byte-identical. Python 3 standard library only.
"""

import argparse
import gzip
import io
import sqlite3
import sys
from collections import defaultdict


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sqlite", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    db = sqlite3.connect(f"file:{a.sqlite}?mode=ro", uri=True)
    entrez = dict(db.execute("SELECT _id, gene_id FROM genes"))
    symbol = dict(db.execute("SELECT _id, symbol FROM gene_info"))
    ens = defaultdict(set)
    for i, e in db.execute("SELECT _id, ensembl_id FROM ensembl"):
        ens[i].add(e)
    alias = defaultdict(set)
    dropped = 0
    for i, s in db.execute("SELECT _id, alias_symbol FROM alias"):
        if any(c in s for c in "\t|,\n"):
            dropped += 1
            continue
        if s != symbol.get(i):
            alias[i].add(s)

    rows = sorted(entrez.items(), key=lambda kv: int(kv[1]))
    buf = io.StringIO()
    buf.write("entrez\tsymbol\tensembl\taliases\n")
    n_ens = n_alias = 0
    for i, eg in rows:
        sym = symbol.get(i, "")
        e = "|".join(sorted(ens.get(i, ())))
        al = "|".join(sorted(alias.get(i, ())))
        n_ens += bool(e)
        n_alias += bool(al)
        buf.write(f"{eg}\t{sym}\t{e}\t{al}\n")

    raw = buf.getvalue().encode("utf-8")
    with open(a.out, "wb") as f:
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as gz:
            gz.write(raw)
    print(
        f"{len(rows)} genes, {n_ens} with Ensembl IDs, {n_alias} with aliases; "
        f"{dropped} free-text aliases left out -> {a.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
