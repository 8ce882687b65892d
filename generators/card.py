"""The zoo folder's README.md: a dataset card with the YAML `configs:` that load_dataset reads."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from loaders.reader import ZooReader
from zoo.folder import README, TABLE_FOLDERS, write_atomically
from zoo.schema import TABLES

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
    """A Markdown table of `table`'s columns, generated from zoo.schema."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{c.name}` | {c.type} | {c.description} |" for c in TABLES[table]]
    return "\n".join(lines)


def _round_length(curve: dict) -> str:
    return f"{curve['steps']} steps" if curve.get("steps") else f"{curve.get('epochs', 10)} epochs"


def _tolerance(curve: dict) -> str:
    if curve.get("tolerance") is None:
        return "half the default phase mc threshold"
    return f"{curve['tolerance']} points"


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
        f"Yang et al.'s convention (`cka_mixup`): softmax outputs on "
        f"{c.get('mixup_batches', 6)} × {c['batch_size']} pooled train samples, each batch "
        f"mixed with a permutation of itself, one λ ~ Beta({c.get('mixup_alpha', 16.0)}, "
        f"{c.get('mixup_alpha', 16.0)}) per batch.",
        f"- **Mode connectivity**: a quadratic Bezier curve between the two seeds, ends fixed, "
        f"control point trained by SGD in rounds of {_round_length(k)} (batch "
        f"{k['batch_size']}, lr {k['learning_rate']}, schedule restarted each round) until mc "
        f"on train error changes by less than {_tolerance(k)} between two rounds, at most "
        f"{k.get('max_rounds', 1)} rounds (`mc_converged`, "
        f"`curve_mc_history`); evaluated at {k['points']} points with BatchNorm statistics "
        "re-estimated on the train set (`curve_bn_samples`); `mc = (L(w1)+L(w2))/2 - "
        "L(phi(t*))` at `t* = argmax |L(phi(t)) - (L(w1)+L(w2))/2|`, on train and test error "
        "(percentage points) and loss (nats); mc < 0 is a barrier, mc > 0 under-trained ends, "
        "mc ≈ 0 well connected. The straight segment's barrier is stored beside it (positive "
        "= barrier).",
        "- **Heavy-tail alpha**: per weight matrix, the power-law exponent of the eigenvalues of "
        "WᵀW (WeightWatcher's alpha, x_min by the KS distance; conv kernels as WeightWatcher: "
        "the eigenvalues of every (out, in) slice per kernel position pooled), only for "
        f"matrices with at least {m.get('spectra_min_eigenvalues', 10)} nonzero eigenvalues.",
        "- **Phase** per cell (Yang et al.): I high loss & mc < 0, II high loss & mc ≥ 0, III low "
        "loss & mc < -threshold, IV-A / IV-B low loss & |mc| small with low / high CKA; no "
        "label where a metric it needs is off or failed; `phase_confident` says whether the "
        "curves converged and the means lie clear of the thresholds. The thresholds are "
        "stored in every cells row (`phase_*`); `zoo relabel` applies others.", ""]


def card_text(root: Path) -> str:
    """The dataset card of the zoo in `root`, from its zoo.json, manifest and cells table."""
    reader = ZooReader(root)
    spec = reader.zoo_json["spec"]
    cells = reader.table("cells", columns=["phase"]).column("phase").to_pylist()
    rows = sum(s.rows for s in reader.manifest.shards_of("models"))
    phases = Counter(p or "unlabelled" for p in cells)
    phase_lines = "\n".join(f"| {p} | {n} |" for p, n in sorted(phases.items()))
    grid = (f"{spec['load']['name']} {spec['load']['values']} × "
            f"{spec['temperature']['name']} {spec['temperature']['values']}")
    return "\n".join([
        front_matter(spec["name"], [t for t in TABLES if reader.manifest.shards_of(t)]),
        f"# Phase Zoo: {spec['name']}",
        "", spec.get("description", "").strip(), "",
        f"A population of `{spec['architecture']['family']}` models trained on "
        f"`{spec['data']['name']}` over the grid {grid}, seeds {spec['seeds']}, "
        f"{spec['training']['epochs']} epochs, checkpoints at epochs "
        f"{spec['checkpoint_epochs']}, landscape metrics at epochs {spec['metrics']['epochs']}.",
        "", f"- cells: {len(cells)}", f"- model rows (model × kept epoch): {rows}",
        f"- spec hash: `{reader.zoo_json['spec_hash']}`",
        f"- data fingerprint: `{reader.zoo_json['data_fingerprint']}`",
        f"- produced with: {json.dumps(reader.zoo_json['versions'], sort_keys=True)}", "",
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
