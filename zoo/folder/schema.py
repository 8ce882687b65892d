"""Column names of the zoo tables: a public API declared once, used by writers, loaders, cards."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class Column:
    """One column: its name, Arrow type and what it means (units included)."""

    name: str
    type: pa.DataType
    description: str


def _c(name: str, type_: pa.DataType, description: str) -> Column:
    return Column(name, type_, description)


F64, I64, STR, BOOL = pa.float64(), pa.int64(), pa.string(), pa.bool_()
F64_LIST = pa.list_(pa.float64())

IDENTITY = (
    _c("cell_id", STR, "hash of everything that defines the cell's models but the seed"),
    _c("spec_hash", STR, "hash of the resolved zoo spec that produced the row"),
    _c("zoo", STR, "zoo spec name"),
    _c("architecture", STR, "architecture family"),
    _c("data", STR, "data set name"),
    _c("load_axis", STR, "name of the load-like axis (width, model_dim, data_fraction, beta)"),
    _c("load_value", F64, "the cell's value on the load-like axis"),
    _c("temperature_axis", STR, "name of the temperature-like axis"),
    _c("temperature_value", F64, "the cell's value on the temperature-like axis"),
    _c("width", I64, "model width (hidden units, channels, base ResNet width, model_dim)"),
    _c("data_fraction", F64, "fraction of the training set used"),
    _c("beta", F64, "PDE coefficient (convection speed; PINN zoos only)"),
    _c("batch_size", I64, "training batch size"),
    _c("learning_rate", F64, "peak learning rate"),
    _c("weight_decay", F64, "weight decay (L2) of the optimizer"),
)

EVALUATION = tuple(
    _c(f"{split}_{what}", F64, f"{text} on the full {split} set, eval mode")
    for split in ("train", "test")
    for what, text in (
        ("loss", "mean loss"),
        ("accuracy", "accuracy in [0, 1] (classification and next-token; null for PINNs)"),
        ("error", "error: 1 - accuracy, or the relative L2 error for PINNs"),
    )
)

HESSIAN = tuple(
    _c(f"hessian_{what}_{split}", F64, f"{text} of the loss Hessian on the fixed {split} probe set")
    for split in ("train", "test")
    for what, text in (
        ("top_eigenvalue", "largest algebraic eigenvalue (Lanczos)"),
        ("trace", "trace (Hutchinson, Rademacher probes)"),
        ("trace_stderr", "standard error of the Hutchinson trace"),
    )
) + (
    _c("hessian_samples", I64, "probe samples per split (batches × batch size)"),
    _c("hessian_max_iter", I64, "maximum iterations of eigenvalue and trace estimators"),
    _c("hessian_tol", F64, "relative tolerance of eigenvalue and trace estimators"),
)

CELL_JOINED = ("phase", "phase_confident", "cka_mean", "cka_mixup_mean", "mc_train_error_mean",
               "mc_test_error_mean", "mc_train_loss_mean", "mc_test_loss_mean",
               "linear_barrier_train_loss_mean", "linear_barrier_test_error_mean")
# cells columns repeated in every model row of the cell, so one table answers most questions

MODEL_COLUMNS: tuple[Column, ...] = (
    _c("model_id", STR, "hash of everything that defines the model (cell identity + seed)"),
    *IDENTITY,
    _c("seed", I64, "seed of initialisation, data order and probes"),
    _c("epoch", I64, "epoch of the checkpoint (0 = initialisation)"),
    _c("is_metric_epoch", BOOL, "landscape metrics were measured at this epoch"),
    *EVALUATION,
    _c("finite", BOOL, "weights and losses are finite (false: training diverged)"),
    *HESSIAN,
    _c("heavy_tail_alpha", F64, "mean WeightWatcher power-law exponent over weight matrices"),
    _c("heavy_tail_alphas", F64_LIST, "per weight matrix exponent, layout order (NaN: skipped; "
       "empty: not measured at this epoch)"),
    _c("heavy_tail_min_eigenvalues", I64, "layers with fewer nonzero eigenvalues get no alpha"),
    _c("trained_by", STR, "'single' (one model) or 'stacked' (a vmapped population)"),
    _c("num_params", I64, "number of stored values (parameters and buffers)"),
    _c("layout", STR, "key of layouts/<layout>.json: names, shapes, offsets of `weights`"),
    _c("weights", pa.large_binary(), "all parameters and buffers, flat, state_dict order, as "
       "little-endian float32 bytes: numpy.frombuffer(weights, '<f4') (empty when the "
       "checkpoint is too large for a row: see weights_file)"),
    _c("weights_file", STR, "per-model HDF5 file holding this checkpoint (null: inline weights)"),
    _c("weights_index", I64, "index of this checkpoint in weights_file's datasets"),
    _c("weights_sha256", STR, "digest of the checkpoint's flat float32 bytes: sha256 (hex) of "
       "those in weights_file, or 'blake3:<hex>' of the inline weights (format 7; null in "
       "older zoos)"),
    _c("data_fingerprint", STR, "sha256 of the data set tensors"),
    _c("code_version", STR, "phase-zoo version"),
    _c("torch_version", STR, "torch version that trained the model"),
    _c("train_seconds", F64, "wall-clock seconds of training (same for all epochs of a model)"),
    _c("phase", STR, "the cell's phase label (cells table), copied when the cell is committed "
       "or relabelled"),
    _c("phase_confident", BOOL, "the cell's phase_confident (cells table), copied with phase"),
    *(_c(name, F64, f"the cell's {name} (cells table), copied when the cell is committed")
      for name in CELL_JOINED[2:]),
)

CELL_MEANS = ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "train_error",
              "test_error", "hessian_top_eigenvalue_train", "hessian_trace_train",
              "hessian_top_eigenvalue_test", "hessian_trace_test", "heavy_tail_alpha",
              "cka", "cka_mixup", "mc_train_error", "mc_test_error", "mc_train_loss",
              "mc_test_loss", "linear_barrier_train_loss", "linear_barrier_test_error",
              "mc_projected")

CELL_COLUMNS: tuple[Column, ...] = (
    *IDENTITY,
    _c("metric_epoch", I64, "epoch at which the cell's metrics were taken"),
    _c("num_models", I64, "models (seeds) in the cell"),
    _c("num_pairs", I64, "seed pairs in the cell"),
    _c("finite_fraction", F64, "fraction of the cell's models that stayed finite"),
    *(col for name in CELL_MEANS for col in (
        _c(f"{name}_mean", F64, f"mean of {name} over the cell's models or pairs"),
        _c(f"{name}_std", F64, f"standard deviation of {name} over models or pairs"),
    )),
    _c("num_pairs_converged", I64, "seed pairs whose Bezier fit converged (mc_converged)"),
    _c("phase", STR, "phase label: I, II, III, IV-A, IV-B (Yang et al. 2021); null where a "
                     "metric it needs (train loss, mc, CKA for phase IV) is off or failed"),
    _c("phase_confident", BOOL, "true when each mean that decided the label (train loss vs "
                                "phase_high_loss; mc_train_error vs the phase's mc bounds; "
                                "the phase_cka_metric vs phase_cka in phase IV) lies more "
                                "than one standard deviation (over >= 2 models or pairs) "
                                "from its threshold, and mc_projected_mean lies within the "
                                "same mc bounds (drift cannot move the label); all seeds "
                                "diverged: true"),
    _c("phase_high_loss", F64, "threshold: train loss in nats (PINN: relative L2 error) above "
                               "it is 'high'; default a fixed fraction of ln(classes)"),
    _c("phase_mc", F64, "threshold: |mc_train_error| (error points; PINN: relative L2 "
                        "error) below it is 'well connected'"),
    _c("phase_cka", F64, "threshold: CKA at or above it is 'high'"),
    _c("phase_cka_metric", STR, "the CKA that decides IV-A / IV-B: 'cka_mixup' (Yang et al.'s "
                                "softmax on mixup inputs; the default where measured) or "
                                "'cka' (logits on test data)"),
    _c("phase_mc_bound", STR, "'two-sided' (Yang et al.: IV needs |mc| < phase_mc; low loss "
                              "with mc >= phase_mc is unlabelled) or 'lower' (IV needs only "
                              "mc >= -phase_mc)"),
)

CURVE_LISTS = tuple(
    _c(f"curve_{split}_{what}", F64_LIST, f"{split} {what} along the Bezier curve at curve_ts")
    for split in ("train", "test") for what in ("loss", "error")
)
LINE_LISTS = tuple(
    _c(f"linear_{split}_{what}", F64_LIST, f"{split} {what} along the straight segment")
    for split in ("train", "test") for what in ("loss", "error")
)

PAIR_COLUMNS: tuple[Column, ...] = (
    _c("cell_id", STR, "cell of both models"),
    _c("spec_hash", STR, "hash of the resolved zoo spec"),
    _c("model_id_a", STR, "first model"),
    _c("model_id_b", STR, "second model"),
    _c("seed_a", I64, "seed of the first model"),
    _c("seed_b", I64, "seed of the second model"),
    _c("epoch", I64, "metric epoch of both checkpoints"),
    _c("cka", F64, "linear CKA of output logits on test samples, per batch then averaged"),
    _c("cka_mixup", F64, "linear CKA of softmax outputs on pooled mixup train inputs, "
                         "lambda ~ Beta(a, a) per batch (Yang et al. 2021); batches x batch "
                         "size and a are the spec's metrics.similarity.mixup_batches x "
                         "batch_size and mixup_alpha (defaults 6 x 128 and 16)"),
    _c("cka_samples", I64, "samples per CKA estimate (batches × batch size)"),
    *(col for split in ("train", "test") for what in ("error", "loss") for col in (
        _c(f"mc_{split}_{what}", F64, f"mode connectivity on {split} {what} "
                                      + ("(error points, 0-100; PINN: relative L2 error)"
                                         if what == "error" else "(loss units: nats)")),
        _c(f"t_star_{split}_{what}", F64, f"t* of mc_{split}_{what}"),
    )),
    _c("curve_ts", F64_LIST, "evaluated points t of the Bezier curve"),
    *CURVE_LISTS,
    _c("curve_steps", I64, "optimizer steps used to fit the Bezier curve, all rounds"),
    _c("curve_rounds", I64, "fit rounds (each curve_steps / curve_rounds steps, schedule "
                            "restarted); mc_train_error is measured after each"),
    _c("curve_mc_history", F64_LIST, "mc_train_error after each fit round"),
    _c("curve_tolerance", F64, "the fit stops once the projected remaining drift of "
                               "mc_train_error (mc_drift) is below this (error points)"),
    _c("mc_converged", BOOL, "|mc_drift| < curve_tolerance (at least three rounds whose mc "
                             "steps shrink, or a zero last step)"),
    _c("mc_drift", F64, "projected remaining drift of mc_train_error: a geometric tail fitted "
                        "to the last three rounds of curve_mc_history (Aitken); +-inf where "
                        "the steps do not shrink, in the last step's direction"),
    _c("mc_projected", F64, "mc_train_error + mc_drift, capped at the ends' mean train error "
                            "(mc can never exceed it): where mc is heading"),
    _c("curve_bn_samples", I64, "train samples that re-estimate BatchNorm at each curve point"),
    _c("curve_learning_rate", F64, "learning rate of the curve fit"),
    _c("curve_batch_size", I64, "batch size of the curve fit"),
    _c("linear_alphas", F64_LIST, "evaluated points alpha of the straight segment"),
    *LINE_LISTS,
    _c("linear_barrier_train_loss", F64, "max_alpha L(alpha) - linear interpolation of ends"),
    _c("linear_barrier_test_error", F64, "the same on test error, in points"),
)

TABLES: dict[str, tuple[Column, ...]] = {
    "models": MODEL_COLUMNS, "cells": CELL_COLUMNS, "pairs": PAIR_COLUMNS,
}


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of `table` ('models', 'cells' or 'pairs')."""
    return pa.schema([pa.field(c.name, c.type) for c in TABLES[table]])


def to_arrow(table: str, rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Build an Arrow table from row dicts; absent keys are null, unknown keys are an error.

    A missing list value is stored as an empty list, not null: datasets' numpy and torch
    formats fail on a list column whose first row is null.
    """
    columns = TABLES[table]
    names = {c.name for c in columns}
    for row in rows:
        unknown = set(row) - names
        if unknown:
            raise KeyError(f"{table} rows have undeclared columns: {sorted(unknown)}")
    arrays = []
    for column in columns:
        values = [row.get(column.name) for row in rows]
        if column.name == "weights":
            arrays.append(float32_bytes(values))
        elif pa.types.is_list(column.type):
            arrays.append(pa.array([[] if v is None else v for v in values], type=column.type))
        else:
            arrays.append(pa.array(values, type=column.type))
    return pa.Table.from_arrays(arrays, schema=arrow_schema(table))


def float32_bytes(values: Iterable[np.ndarray | None]) -> pa.Array:
    """A large_binary array of flat float32 vectors as little-endian bytes (None: empty),
    built without per-element Python work: what the `weights` column holds."""
    vectors = [np.zeros(0, "<f4") if v is None else np.asarray(v, dtype="<f4").ravel()
               for v in values]
    offsets = np.zeros(len(vectors) + 1, dtype=np.int64)
    np.cumsum([v.nbytes for v in vectors], out=offsets[1:])
    data = np.concatenate(vectors) if vectors else np.zeros(0, "<f4")
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(vectors),
                                            [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def python_value(value: Any) -> Any:
    """A column value as plain Python: numpy scalars become int, float, bool or str."""
    return value.item() if isinstance(value, np.generic) else value


def stored_weights(schema: pa.Schema | None, stored: pa.Schema) -> pa.Schema | None:
    """`schema` with the `weights` type a shard stores (list<float32> in formats 3 and 4),
    to read it by; `conformed` then gives the current type."""
    if schema is None or "weights" not in schema.names or "weights" not in stored.names:
        return schema
    index = schema.get_field_index("weights")
    return schema.set(index, schema.field(index).with_type(stored.field("weights").type))


def conformed(table: pa.Table, schema: pa.Schema | None,
              columns: Sequence[str] | None = None) -> pa.Table:
    """`table` as `schema`'s fields (`columns` of them when given): a column the shard lacks
    is null, list<float32> weights (formats 3 and 4) become bytes; no schema: as read."""
    if schema is None:
        return table
    names = list(columns) if columns is not None else schema.names
    target = pa.schema([schema.field(n) for n in names])
    if table.schema.equals(target):  # stored as read: nothing to convert
        return table
    arrays, present = [], set(table.column_names)
    for name in names:
        kind = schema.field(name).type
        if name not in present:
            arrays.append(pa.nulls(table.num_rows, kind))
        elif name == "weights" and pa.types.is_list(table.schema.field(name).type):
            lists = table.column(name).combine_chunks()
            offsets = lists.offsets.to_numpy()
            values = lists.values.to_numpy(zero_copy_only=False)
            arrays.append(float32_bytes(values[a:b] for a, b in zip(offsets[:-1], offsets[1:])))
        elif table.schema.field(name).type == kind:
            arrays.append(table.column(name))
        else:
            arrays.append(table.column(name).cast(kind))
    return pa.Table.from_arrays(arrays, schema=target)
