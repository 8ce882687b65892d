"""The zoo folder's README.md: a dataset card with the YAML `configs:` that load_dataset reads."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from zoo.errors import ZooFolderError
from zoo.folder.commits import replace_document, write_card_under
from zoo.folder.layoutstable import LAYOUTS_COLUMNS, LAYOUTS_SCHEMA, layouts_parquet
from zoo.folder.names import LAYOUTS_TABLE, README, confined, read_bounded
from zoo.folder.reader import ZooReader
from zoo.folder.schema import TABLES
from zoo.folder.splits import FRACTIONS, SPLITS, owners
from zoo.folder.storefolder import StoreFolder
from zoo.folder.zoofolder import ZooFolder

if TYPE_CHECKING:
    from huggingface_hub import DatasetCardData

HF_SPLITS = {"train": "train", "val": "validation", "test": "test"}  # ZooDataset -> Hub names
TASK_CATEGORIES = ("tabular-regression", "tabular-classification")  # accuracy, phase
SIZE_CATEGORIES = ((1e3, "n<1K"), (1e4, "1K<n<10K"), (1e5, "10K<n<100K"), (1e6, "100K<n<1M"),
                   (1e7, "1M<n<10M"), (1e8, "10M<n<100M"), (1e9, "100M<n<1B"),
                   (1e10, "1B<n<10B"), (1e11, "10B<n<100B"), (1e12, "100B<n<1T"))
BENCHMARK_RESULTS = "benchmark/results.md"  # written by `zoo benchmark` (analysis.benchmark)
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
            "float": "float32", "large_binary": "large_binary"}[str(type_)]


def card_data(reader: ZooReader, layouts_bytes: int) -> "DatasetCardData":
    """The card's metadata, built and checked by huggingface_hub's DatasetCardData.

    Each table with shards is a config (models the default) with train / validation / test
    splits: whole cells by the hash rule of zoo.folder.splits, so the splits are those of
    ZooDataset(split_by="cell") ("val" is the Hub's "validation"); `layouts` (layouts.parquet
    of `layouts_bytes` bytes, written by `write_card`) is one train split of every layout's
    entries.
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
    if reader.manifest.layouts:
        configs.append({"config_name": "layouts",
                        "data_files": [{"split": "train", "path": [LAYOUTS_TABLE]}]})
        entries = sum(len(reader.layout(k).entries) for k in reader.manifest.layouts)
        infos.append({"config_name": "layouts", "features": features(LAYOUTS_SCHEMA),
                      "splits": [{"name": "train", "num_bytes": layouts_bytes,
                                  "num_examples": entries}]})
    models = sum(s.rows for s in reader.manifest.shards_of("models"))
    return DatasetCardData(
        license="cc-by-4.0", pretty_name=f"Phase Zoo: {reader.record.spec['name']}",
        task_categories=list(TASK_CATEGORIES), size_categories=[size_category(models)],
        tags=list(TAGS), configs=configs, dataset_info=infos)


def front_matter(reader: ZooReader, layouts_bytes: int) -> str:
    """YAML front matter between '---' lines, from `card_data`."""
    return f"---\n{card_data(reader, layouts_bytes).to_yaml()}\n---\n"


def schema_table(table: str) -> str:
    """A Markdown table of `table`'s columns, generated from zoo.folder.schema."""
    return columns_table((c.name, c.type, c.description) for c in TABLES[table])


def columns_table(columns: Iterable[tuple[str, object, str]]) -> str:
    """A Markdown table of (column, type, meaning) rows."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | {type_} | {meaning} |" for name, type_, meaning in columns]
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
        f"{k['batch_size']}, lr {k['learning_rate']}, schedule restarted each round; a cell's "
        f"seed pairs fitted together) until the projected remaining drift of mc on train "
        f"error (a geometric tail fitted to the last three rounds, `mc_drift`; "
        f"`mc_projected` is where it heads) is below {_tolerance(k)}, at most "
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
        "means lie clear of the thresholds and the projected mc stays in the phase's range. "
        "The thresholds are stored in every cells row (`phase_*`); `zoo relabel` applies "
        "others.", "", *thresholds_section(), ""]


def thresholds_section() -> list[str]:
    """Every phase threshold and definition with its origin."""
    return [
        "| threshold | default | origin |", "|---|---|---|",
        "| `phase_high_loss` | 0.2 nats × ln C / ln 10 (classification); 2.0 nats at a "
        "256-symbol vocabulary, scaled by ln V (language models); relative L2 error 0.1 "
        "(PINN) | ours: Yang et al. and the phase-transition zoo say \"high\" without a "
        "number; fitted on our mnist1d pilot |",
        "| `phase_mc` | 2 error points (PINN: 0.02) | ours: Yang et al. define phase IV by "
        "mc ≈ 0 and publish no bound |",
        "| `phase_mc_bound` | `two-sided`: IV needs \\|mc\\| < `phase_mc`; low loss with "
        "mc ≥ `phase_mc` gets no label | Yang et al.'s table (mc ≈ 0); `lower` (IV needs only "
        "mc ≥ -`phase_mc`) is our earlier rule, an option |",
        "| `phase_cka` | 0.75 (`cka_mixup`), 0.9 (`cka`) | ours: 0.9 set on logit CKA in our "
        "mnist1d pilot; 0.75 in the gap between the mixup CKA of the demo's low-loss cells "
        "(0.61–0.66 at width 128, 0.85–0.89 at the more accurate width 512) |",
        "| `phase_cka_metric` | `cka_mixup` (classification; others `cka`) | Yang et al. "
        "(softmax outputs on mixup inputs); `cka` (logits on test data, the phase-transition "
        "zoo's choice) is an option, and both are stored |",
        "| `curve_tolerance` | 1 error point (half of `phase_mc`) | ours |",
    ]


def _held_reader(folder: ZooFolder) -> ZooReader:
    """A ZooReader over the folder's held manifest and record (documents not checked: the
    card about to be rewritten may be stale)."""
    if isinstance(folder, StoreFolder):  # committed shards are in the store, not the scratch
        return ZooReader(folder.url, check_documents=False)
    manifest, record = folder.manifest(), folder.record()
    if manifest is None or record is None:
        raise ZooFolderError(f"{folder.root}: no manifest.json or zoo.json; not a zoo folder")
    return ZooReader.opened(folder.root, manifest, record)


DATA_SOURCES = {  # built-in data sets: origin and licence, for the card's Source Data
    "mnist1d": "MNIST-1D (Greydanus, *Scaling down deep learning*, arXiv:2011.14439, 2020), "
               "generated offline by the `mnist1d` package (Apache-2.0)",
    "digits": "the UCI Optical Recognition of Handwritten Digits set as scikit-learn ships it "
              "(`sklearn.datasets.load_digits`; UCI, CC BY 4.0)",
}


def template_sections(spec: dict) -> list[str]:
    """The Hugging Face dataset-card template's sections, filled from the zoo's spec."""
    data, family = spec["data"]["name"], spec["architecture"]["family"]
    source = DATA_SOURCES.get(data, f"`{data}`, read from a local copy; it keeps its own "
                                    f"licence and terms")
    return [
        "## Dataset Description", "",
        f"Checkpoints of `{family}` models trained on `{data}` over a grid of a load-like and "
        f"a temperature-like hyperparameter, each with its train/test metrics, loss-landscape "
        f"metrics and the phase (Yang et al.) of its grid cell. Curated by the Phase Zoo "
        f"generator from the spec below; every number is reproducible from it.", "",
        "## Uses", "",
        "- Weight-space learning: predicting accuracy, generalisation gap, phase or "
        "hyperparameters from weights (`zoo benchmark` gives the protocol and baselines); "
        "model averaging, pruning and fine-tuning studies across phases.", "",
        "### Out-of-scope use", "",
        "- The models are small research models on a small data set: not for deployment or "
        "any decision about people. Results on this zoo need not transfer to other "
        "architectures, data sets or training recipes.", "",
        "## Source Data", "",
        f"Data set: {source}. The models were trained here; no data about people is "
        f"included.", "",
        "## Bias, Risks, and Limitations", "",
        "- One architecture family and one data set; the grid's values, seeds and epochs bound "
        "what the zoo covers. Phases are labelled per cell from seed means with fixed "
        "thresholds; a label marked not confident may change under `zoo relabel`.",
        "- Checkpoints of one cell share hyperparameters: split by cell (the default) or the "
        "hyperparameters leak into test scores; the `zoo benchmark` control measures how far "
        "hyperparameters alone go.", ""]


def benchmark_section(root: Path) -> list[str]:
    """The card's benchmark section: `zoo benchmark`'s results.md, when it has been run."""
    path = Path(root) / BENCHMARK_RESULTS
    if not path.is_file():
        return []
    table = read_bounded(confined(root, BENCHMARK_RESULTS), "benchmark results", 1 << 20)
    return ["## Benchmark", "",
            "`zoo benchmark` (see `analysis.benchmark`): each baseline's score, mean ± 95 % "
            "interval over folds; `hyperparameters` is the control (grid axes and epoch, no "
            "weights); margin: the best weights-only baseline minus the control.", "",
            table.decode("utf-8").strip(), ""]


def card_text(root: ZooFolder | Path, layouts_bytes: int) -> str:
    """The dataset card of the zoo in `root`, from its zoo.json, manifest and cells table
    (`layouts_bytes`: the size of its layouts.parquet)."""
    folder = ZooFolder.of(root)
    reader = _held_reader(folder)
    spec = reader.record.spec
    cells = reader.table("cells", columns=["phase"]).column("phase").to_pylist()
    rows = sum(s.rows for s in reader.manifest.shards_of("models"))
    phases = Counter(p or "unlabelled" for p in cells)
    phase_lines = "\n".join(f"| {p} | {n} |" for p, n in sorted(phases.items()))
    grid = (f"{spec['load_axis']['name']} {spec['load_axis']['values']} × "
            f"{spec['temperature_axis']['name']} {spec['temperature_axis']['values']}")
    return "\n".join([
        front_matter(reader, layouts_bytes),
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
        *template_sections(spec),
        "## Phases", "", "| phase | cells |", "|---|---|", phase_lines, "",
        *metrics_section(spec),
        *benchmark_section(folder.root),
        "## Loading", "", "```python",
        "import datasets",
        "models = datasets.load_dataset('PATH')            # one row per model and kept epoch",
        "cells = datasets.load_dataset('PATH', 'cells')    # one row per grid cell, with phase",
        "pairs = datasets.load_dataset('PATH', 'pairs')    # one row per seed pair of a cell",
        "layouts = datasets.load_dataset('PATH', 'layouts', split='train')  # weight shapes",
        "everything = datasets.load_dataset('PATH', split='train+validation+test')",
        "# a zoo larger than memory or disk: streaming=True reads the shards in place as you",
        "# iterate (no cache copy), for every config and split",
        "stream = datasets.load_dataset('PATH', 'models', split='train', streaming=True)",
        "", "from loaders import ZooDataset, load_model",
        "# the same train split, by cell; split='all', epochs='all' for every row",
        "ds = ZooDataset('PATH', split_by='cell', representation='flat',",
        "                targets=['test_accuracy'])",
        "print(ds)          # rows, models, layouts, split; ds.splits() counts every split",
        "# larger than memory: ZooDataset reads rows lazily above 512 MiB of weights;",
        "# several DataLoader workers or GPUs: ZooStream gives each row once per epoch",
        "```", "",
        f"Splits: whole cells go to train, validation or test by a hash of the cell id "
        f"(fractions {FRACTIONS}; every split holds at least one cell when there are three), "
        "the same rows as `ZooDataset(split_by='cell')` ('val' is 'validation' here). Model "
        "rows carry their cell's `phase` and landscape means.", "",
        "Weights are flat float32 vectors in state_dict order (BatchNorm buffers included), "
        "stored as their little-endian bytes (a row group decodes at memory speed): "
        "`numpy.frombuffer(row['weights'], '<f4')` or `torch.frombuffer(bytearray(row["
        "'weights']), dtype=torch.float32)`; `layouts/<layout>.json` gives names, shapes and "
        "offsets, and the `layouts` config "
        f"(`{LAYOUTS_TABLE}`) the same as a table, one row per state_dict entry. No pickles "
        "anywhere.", "",
        "## Resolved spec", "", "```json", json.dumps(spec, indent=1, sort_keys=True), "```", "",
        *(part for table in TABLES
          for part in (f"## Table `{table}`", "", schema_table(table), "")),
        "## Table `layouts`", "",
        columns_table((f.name, f.type, LAYOUTS_COLUMNS[f.name]) for f in LAYOUTS_SCHEMA), "",
        "## Licence and citation", "",
        "Released under CC BY 4.0 (the YAML header's `license`); the data sets keep their own "
        "licences. Cite the zoo by its spec hash and these papers:", "",
        "Yang et al., Taxonomizing local versus global structure in neural network loss "
        "landscapes, NeurIPS 2021. Schürholt et al., A Model Zoo on Phase Transitions in "
        "Neural Networks, 2025.", "", "```bibtex", CITATION, "```", "",
    ])


def write_card(root: ZooFolder | Path) -> Path:
    """Write (or rewrite) `root/layouts.parquet` (the `layouts` config) and `root/README.md`
    atomically (confined), each recorded in the manifest; returns the README's path."""
    folder = ZooFolder.of(root)
    table = layouts_parquet(_held_reader(folder))  # readers accept old or new, each rename
    replace_document(folder, LAYOUTS_TABLE, hashlib.sha256(table).hexdigest(),
                     lambda: folder.write(LAYOUTS_TABLE, table))
    write_card_under(folder, card_text(folder, len(table)))
    return folder.root / README
