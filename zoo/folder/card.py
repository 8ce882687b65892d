"""The zoo folder's README.md: a dataset card with the YAML `configs:` that load_dataset reads."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from zoo.folder.names import README, TABLE_FOLDERS, write_atomically
from zoo.folder.reader import ZooReader
from zoo.folder.schema import TABLES

def front_matter(name: str, tables: list[str]) -> str:
    """YAML front matter: one `configs:` entry per table that has shards (models is default)."""
    lines = ["---", "license: cc-by-4.0", f'pretty_name: "Phase Zoo: {name}"',
             "tags: [model-zoo, weight-space-learning, loss-landscape, phase-transitions]",
             "configs:"]
    for table in tables:
        lines.append(f"- config_name: {table}")
        if table == "models":
            lines.append("  default: true")
        lines.append(f'  data_files: "{TABLE_FOLDERS[table]}/*.parquet"')
    return "\n".join([*lines, "---", ""])


def schema_table(table: str) -> str:
    """A Markdown table of `table`'s columns, generated from zoo.folder.schema."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{c.name}` | {c.type} | {c.description} |" for c in TABLES[table]]
    return "\n".join(lines)


def metrics_section(spec: dict) -> list[str]:
    """Definitions of the landscape metrics with the parameters this zoo used."""
    m = spec["metrics"]
    h, c, k = m["hessian"], m["similarity"], m["curve"]
    return [
        "## Metrics", "",
        f"Measured at epochs {m['epochs']} (`is_metric_epoch`), in eval mode, following Yang et "
        "al. 2021 and the phase-transition model zoo:", "",
        f"- **Hessian** of the mean training loss (weight decay excluded) on a fixed seeded "
        f"subset of {h['batches']} × {h['batch_size']} train samples, and on as many test "
        f"samples: top eigenvalue by Lanczos (largest algebraic, not largest magnitude), trace "
        f"by Hutchinson with Rademacher probes and its standard error; at most {h['max_iter']} "
        f"iterations, relative tolerance {h['tol']}.",
        f"- **CKA**: linear CKA of the output logits of every seed pair of a cell on "
        f"{c['batches']} × {c['batch_size']} test samples, per batch then averaged (`cka`); "
        "Yang's convention, softmax outputs on mixup-perturbed train inputs (`cka_mixup`).",
        f"- **Mode connectivity**: a quadratic Bezier curve between the two seeds, ends fixed, "
        f"control point trained {k['steps']} SGD steps (batch {k['batch_size']}, lr "
        f"{k['learning_rate']}), evaluated at {k['points']} points with BatchNorm statistics "
        "re-estimated; `mc = (L(w1)+L(w2))/2 - L(phi(t*))` at `t* = argmax |L(phi(t)) - "
        "(L(w1)+L(w2))/2|`, on train and test error (percentage points) and loss; mc < 0 is a "
        "barrier, mc > 0 under-trained ends, mc ≈ 0 well connected. The straight segment's "
        "barrier is stored beside it (positive = barrier).",
        "- **Heavy-tail alpha**: per weight matrix, the power-law exponent of the eigenvalues of "
        "WᵀW (WeightWatcher's alpha, x_min by the KS distance).",
        "- **Phase** per cell (Yang et al.): I high loss & mc < 0, II high loss & mc ≥ 0, III low "
        "loss & mc < -threshold, IV-A / IV-B low loss & |mc| small with low / high CKA; the "
        "thresholds are stored in every cells row (`phase_*`).", ""]


def card_text(root: Path) -> str:
    """The dataset card of the zoo in `root`, from its zoo.json, manifest and cells table."""
    reader = ZooReader(root)
    spec = reader.record.spec
    cells = reader.table("cells", columns=["phase"]).column("phase").to_pylist()
    rows = sum(s.rows for s in reader.manifest.shards_of("models"))
    phases = Counter(p or "unlabelled" for p in cells)
    phase_lines = "\n".join(f"| {p} | {n} |" for p, n in sorted(phases.items()))
    grid = (f"{spec['load_axis']['name']} {spec['load_axis']['values']} × "
            f"{spec['temperature_axis']['name']} {spec['temperature_axis']['values']}")
    return "\n".join([
        front_matter(spec["name"], [t for t in TABLES if reader.manifest.shards_of(t)]),
        f"# Phase Zoo: {spec['name']}",
        "", spec.get("description", "").strip(), "",
        f"A population of `{spec['architecture']['family']}` models trained on "
        f"`{spec['data']['name']}` over the grid {grid}, seeds {spec['seeds']}, "
        f"{spec['training']['epochs']} epochs, checkpoints at epochs "
        f"{spec['checkpoint_epochs']}, landscape metrics at epochs {spec['metrics']['epochs']}.",
        "", f"- cells: {len(cells)}", f"- model rows (model × kept epoch): {rows}",
        f"- spec hash: `{reader.record.spec_hash}`",
        f"- data fingerprint: `{reader.record.data_fingerprint}`",
        f"- produced with: {json.dumps(dict(reader.record.versions), sort_keys=True)}", "",
        "## Phases", "", "| phase | cells |", "|---|---|", phase_lines, "",
        *metrics_section(spec),
        "## Loading", "", "```python",
        "import datasets",
        "models = datasets.load_dataset('PATH')            # one row per model and kept epoch",
        "cells = datasets.load_dataset('PATH', 'cells')    # one row per grid cell, with phase",
        "pairs = datasets.load_dataset('PATH', 'pairs')    # one row per seed pair of a cell",
        "", "from loaders import ZooDataset, load_model",
        "ds = ZooDataset('PATH', representation='flat', targets=['test_accuracy'])",
        "```", "",
        "Weights are flat float32 vectors in state_dict order (BatchNorm buffers included); "
        "`layouts/<layout>.json` gives names, shapes and offsets. No pickles anywhere.", "",
        "## Resolved spec", "", "```json", json.dumps(spec, indent=1, sort_keys=True), "```", "",
        *(part for table in TABLES
          for part in (f"## Table `{table}`", "", schema_table(table), "")),
        "## Licence and citation", "",
        "Released under CC BY 4.0 (the YAML header's `license`); the data sets keep their own "
        "licences. Cite the zoo by its spec hash and these papers:", "",
        "Yang et al., Taxonomizing local versus global structure in neural network loss "
        "landscapes, NeurIPS 2021. Schürholt et al., A Model Zoo on Phase Transitions in "
        "Neural Networks, 2025.", "",
    ])


def write_card(root: Path) -> Path:
    """Write (or rewrite) `root/README.md` atomically; returns its path."""
    path = Path(root) / README
    write_atomically(path, card_text(root).encode())
    return path
