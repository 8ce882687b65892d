"""The zoo folder's README.md: a dataset card with the YAML `configs:` that load_dataset reads."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from zoo.errors import ZooFolderError
from zoo.folder.documents import record_documents
from zoo.folder.names import README
from zoo.folder.reader import ZooReader
from zoo.folder.schema import TABLES
from zoo.folder.splits import FRACTIONS, SPLITS, owners
from zoo.folder.zoofolder import ZooFolder

if TYPE_CHECKING:
    from huggingface_hub import DatasetCardData

HF_SPLITS = {"train": "train", "val": "validation", "test": "test"}  # ZooDataset -> Hub names
TASK_CATEGORIES = ("tabular-regression", "tabular-classification")  # accuracy, phase
SIZE_CATEGORIES = ((1e3, "n<1K"), (1e4, "1K<n<10K"), (1e5, "10K<n<100K"), (1e6, "100K<n<1M"),
                   (1e7, "1M<n<10M"), (1e8, "10M<n<100M"), (1e9, "100M<n<1B"),
                   (1e10, "1B<n<10B"), (1e11, "10B<n<100B"), (1e12, "100B<n<1T"))
TAGS = ("model-zoo", "weight-space-learning", "loss-landscape", "phase-transitions")
CITATION = """@misc{phase_zoo,
  title = {Phase Zoo: model zoos over the phases of neural network training},
  note = {cite the zoo by its spec hash, with Yang et al. 2021 and Schurholt et al. 2025},
  year = {2026}
}"""


def size_category(rows: int) -> str:
    """The Hub's size category of a table of `rows` rows."""
    for bound, name in SIZE_CATEGORIES:
        if rows < bound:
            return name
    return "n>1T"


def features(schema: pa.Schema) -> list[dict[str, str]]:
    """`dataset_info` features in datasets' YAML form, from a shard's Arrow schema (a zoo
    written before a column was added keeps a card that matches its files)."""
    out = []
    for field in schema:
        if pa.types.is_list(field.type):
            out.append({"name": field.name, "list": _dtype(field.type.value_type)})
        else:
            out.append({"name": field.name, "dtype": _dtype(field.type)})
    return out


def _dtype(type_: pa.DataType) -> str:
    return {"string": "string", "double": "float64", "int64": "int64", "bool": "bool",
            "float": "float32"}[str(type_)]


def card_data(reader: ZooReader) -> "DatasetCardData":
    """The card's metadata, built and checked by huggingface_hub's DatasetCardData.

    Each table with shards is a config (models the default) with train / validation / test
    splits: whole cells by the hash rule of zoo.folder.splits, so the splits are those of
    ZooDataset(split_by="cell") ("val" is the Hub's "validation").
    """
    from huggingface_hub import DatasetCardData

    cells = sorted({s.cell_id for s in reader.manifest.shards})
    owner = owners(cells, FRACTIONS)
    configs, infos = [], []
    for table in (t for t in TABLES if reader.manifest.shards_of(t)):
        files: dict[str, list[str]] = {s: [] for s in SPLITS}
        rows, sizes = dict.fromkeys(SPLITS, 0), dict.fromkeys(SPLITS, 0)
        for shard in reader.manifest.shards_of(table):
            files[owner[shard.cell_id]].append(shard.path)
            rows[owner[shard.cell_id]] += shard.rows
            sizes[owner[shard.cell_id]] += shard.bytes  # the files' bytes, as the Hub counts
        present = [s for s in SPLITS if files[s]]
        configs.append({"config_name": table, **({"default": True} if table == "models" else {}),
                        "data_files": [{"split": HF_SPLITS[s], "path": sorted(files[s])}
                                       for s in present]})
        first = reader.manifest.shards_of(table)[0]
        schema = reader.parquet_metadata(first).schema.to_arrow_schema()
        infos.append({"config_name": table, "features": features(schema),
                      "splits": [{"name": HF_SPLITS[s], "num_bytes": sizes[s],
                                  "num_examples": rows[s]} for s in present]})
    models = sum(s.rows for s in reader.manifest.shards_of("models"))
    return DatasetCardData(
        license="cc-by-4.0", pretty_name=f"Phase Zoo: {reader.record.spec['name']}",
        task_categories=list(TASK_CATEGORIES), size_categories=[size_category(models)],
        tags=list(TAGS), configs=configs, dataset_info=infos)


def front_matter(reader: ZooReader) -> str:
    """YAML front matter between '---' lines, from `card_data`."""
    return f"---\n{card_data(reader).to_yaml()}\n---\n"


def schema_table(table: str) -> str:
    """A Markdown table of `table`'s columns, generated from zoo.folder.schema."""
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


def _held_reader(folder: ZooFolder) -> ZooReader:
    """A ZooReader over the folder's held manifest and record (documents not checked: the
    card about to be rewritten may be stale)."""
    manifest, record = folder.manifest(), folder.record()
    if manifest is None or record is None:
        raise ZooFolderError(f"{folder.root}: no manifest.json or zoo.json; not a zoo folder")
    return ZooReader.opened(folder.root, manifest, record)


def card_text(root: ZooFolder | Path) -> str:
    """The dataset card of the zoo in `root`, from its zoo.json, manifest and cells table."""
    reader = _held_reader(ZooFolder.of(root))
    spec = reader.record.spec
    cells = reader.table("cells", columns=["phase"]).column("phase").to_pylist()
    rows = sum(s.rows for s in reader.manifest.shards_of("models"))
    phases = Counter(p or "unlabelled" for p in cells)
    phase_lines = "\n".join(f"| {p} | {n} |" for p, n in sorted(phases.items()))
    grid = (f"{spec['load_axis']['name']} {spec['load_axis']['values']} × "
            f"{spec['temperature_axis']['name']} {spec['temperature_axis']['values']}")
    return "\n".join([
        front_matter(reader),
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
        "everything = datasets.load_dataset('PATH', split='train+validation+test')",
        "", "from loaders import ZooDataset, load_model",
        "# the same train split, by cell; split='all', epochs='all' for every row",
        "ds = ZooDataset('PATH', split_by='cell', representation='flat',",
        "                targets=['test_accuracy'])",
        "print(ds)          # rows, models, layouts, split; ds.splits() counts every split",
        "```", "",
        f"Splits: whole cells go to train, validation or test by a hash of the cell id "
        f"(fractions {FRACTIONS}; every split holds at least one cell when there are three), "
        "the same rows as `ZooDataset(split_by='cell')` ('val' is 'validation' here). Model "
        "rows carry their cell's `phase` and landscape means.", "",
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
        "Neural Networks, 2025.", "", "```bibtex", CITATION, "```", "",
    ])


def write_card(root: ZooFolder | Path) -> Path:
    """Write (or rewrite) `root/README.md` atomically (confined); returns its path."""
    folder = ZooFolder.of(root)
    path = folder.write(README, card_text(folder).encode())
    record_documents(folder, (README,))
    return path
