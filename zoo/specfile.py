"""Reading zoo specs: YAML files and built-in specs, validated into a ZooSpec before any work."""

from __future__ import annotations

import json
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from zoo.errors import SpecError
from zoo.spec import (AUGMENTATIONS, GRAPHS, LOAD_AXES, OPTIMIZERS, PRECISIONS, SCHEDULES,
                      STACKING, TEMPERATURE_AXES, ArchitectureSpec, Axis, CurveSpec, DataSpec,
                      HessianSpec, MetricsSpec, SimilaritySpec, TrainingSpec, ZooSpec)


def _fail(path: str, value: Any, allowed: str) -> SpecError:
    return SpecError(f"{path}: {value!r} is not allowed; expected {allowed}")


def _check_keys(section: Mapping[str, Any], path: str, allowed: tuple[str, ...]) -> None:
    if not isinstance(section, Mapping):
        raise _fail(path, section, "a mapping")
    for key in section:
        if key not in allowed:
            where = f"{path}.{key}" if path else key
            raise SpecError(f"{where}: unknown field; allowed fields: {', '.join(allowed)}")


def _number(value: Any, path: str, *, low: float, high: float = float("inf"),
            integer: bool = False, low_open: bool = False) -> Any:
    kind = "an integer" if integer else "a number"
    is_int = isinstance(value, int) and not isinstance(value, bool)
    ok = is_int if integer else (is_int or isinstance(value, float))
    if not ok or value != value:
        raise _fail(path, value, kind)
    below = value <= low if low_open else value < low
    if below or value > high:
        bound = f"> {low}" if low_open else f">= {low}"
        upper = "" if high == float("inf") else f" and <= {high}"
        raise _fail(path, value, f"{kind} {bound}{upper}")
    return value if integer else float(value)


def _choice(value: Any, path: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise _fail(path, value, f"one of {', '.join(allowed)}")
    return value


def _axis(raw: Any, path: str, allowed: tuple[str, ...]) -> Axis:
    _check_keys(raw, path, ("axis", "values"))
    name = _choice(raw.get("axis"), f"{path}.axis", allowed)
    values = raw.get("values")
    if not isinstance(values, list) or not values:
        raise _fail(f"{path}.values", values, "a non-empty list")
    integer = name in ("width", "model_dim", "batch_size")
    high = 1.0 if name == "data_fraction" else float("inf")
    low_open = name in ("data_fraction", "learning_rate")
    low = 1 if integer else 0.0
    checked = tuple(_number(v, f"{path}.values[{i}]", low=low, high=high, integer=integer,
                            low_open=low_open and not integer) for i, v in enumerate(values))
    if len(set(checked)) != len(checked):
        raise _fail(f"{path}.values", values, "distinct values")
    return Axis(name, checked)


def _section(raw: Mapping[str, Any], key: str, cls: type, path: str) -> Any:
    """Build a flat dataclass from a mapping, checking keys and the type of every default."""
    section = raw.get(key) or {}
    names = tuple(f.name for f in fields(cls))
    _check_keys(section, path, names)
    values = {}
    for f in fields(cls):
        if f.name not in section:
            continue
        value, where = section[f.name], f"{path}.{f.name}"
        default = getattr(cls, f.name, None)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise _fail(where, value, "true or false")
        elif isinstance(default, int):
            value = _number(value, where, low=1, integer=True)
        elif isinstance(default, float):
            value = _number(value, where, low=0.0)
        values[f.name] = value
    return cls(**values)


def _epoch_list(raw: Any, path: str, epochs: int) -> tuple[int, ...]:
    items = raw if isinstance(raw, list) else [raw]
    out = set()
    for i, item in enumerate(items):
        if item == "last":
            out.add(epochs)
            continue
        out.add(_number(item, f"{path}[{i}]", low=0, high=epochs, integer=True))
    return tuple(sorted(out))


def _checkpoints(raw: Any, epochs: int) -> tuple[int, ...]:
    raw = raw if raw is not None else {"every": 1}
    _check_keys(raw, "checkpoints", ("every", "epochs"))
    kept = {0, epochs}
    if "every" in raw:
        every = _number(raw["every"], "checkpoints.every", low=1, integer=True)
        kept.update(range(0, epochs + 1, every))
    if "epochs" in raw:
        kept.update(_epoch_list(raw["epochs"], "checkpoints.epochs", epochs))
    return tuple(sorted(kept))


def _seeds(raw: Any) -> tuple[int, ...]:
    if isinstance(raw, int) and not isinstance(raw, bool):
        count = _number(raw, "seeds", low=1, integer=True)
        return tuple(range(count))
    if not isinstance(raw, list) or not raw:
        raise _fail("seeds", raw, "a count >= 1 or a non-empty list of integers")
    seeds = tuple(_number(s, f"seeds[{i}]", low=0, integer=True) for i, s in enumerate(raw))
    if len(set(seeds)) != len(seeds):
        raise _fail("seeds", raw, "distinct seeds")
    return seeds


def _metrics(raw: Any, epochs: int) -> MetricsSpec:
    raw = raw or {}
    _check_keys(raw, "metrics", ("epochs", "hessian", "similarity", "curve", "spectra"))
    metric_epochs = _epoch_list(raw.get("epochs", "last"), "metrics.epochs", epochs)
    spectra = raw.get("spectra", True)
    if not isinstance(spectra, bool):
        raise _fail("metrics.spectra", spectra, "true or false")
    curve = _section(raw, "curve", CurveSpec, "metrics.curve")
    if curve.points < 3:
        raise _fail("metrics.curve.points", curve.points, "an integer >= 3")
    return MetricsSpec(
        epochs=metric_epochs,
        hessian=_section(raw, "hessian", HessianSpec, "metrics.hessian"),
        similarity=_section(raw, "similarity", SimilaritySpec, "metrics.similarity"),
        curve=curve, spectra=spectra,
    )


TOP_LEVEL = ("name", "description", "architecture", "data", "training", "grid", "seeds",
             "checkpoints", "metrics", "phases")


def parse_spec(raw: Any) -> ZooSpec:
    """Validate a raw mapping (parsed YAML) into a ZooSpec; SpecError names the bad field."""
    _check_keys(raw, "", TOP_LEVEL)
    for required in ("name", "architecture", "data", "grid"):
        if required not in raw:
            raise SpecError(f"{required}: missing; a zoo spec needs {required}")
    name = raw["name"]
    plain = isinstance(name, str) and name.replace("-", "").replace("_", "").isalnum()
    if not plain:
        raise _fail("name", name, "a non-empty name of letters, digits, '-' and '_'")

    arch_raw = raw["architecture"]
    _check_keys(arch_raw, "architecture", ("family", "width", "args"))
    architecture = ArchitectureSpec(
        family=str(arch_raw.get("family")),
        width=_number(arch_raw.get("width", 32), "architecture.width", low=1, integer=True),
        args=dict(arch_raw.get("args") or {}),
    )
    data_raw = raw["data"]
    _check_keys(data_raw, "data", ("name", "root", "fraction", "beta", "args"))
    root = data_raw.get("root")
    if root is not None and not isinstance(root, str):
        raise _fail("data.root", root, "a folder path")
    data = DataSpec(
        name=str(data_raw.get("name")), root=root,
        fraction=_number(data_raw.get("fraction", 1.0), "data.fraction", low=0.0, high=1.0,
                         low_open=True),
        beta=_number(data_raw.get("beta", 1.0), "data.beta", low=0.0),
        args=dict(data_raw.get("args") or {}),
    )
    training = _section(raw, "training", TrainingSpec, "training")
    _choice(training.optimizer, "training.optimizer", OPTIMIZERS)
    _choice(training.schedule, "training.schedule", SCHEDULES)
    _choice(training.augmentation, "training.augmentation", AUGMENTATIONS)
    _choice(training.stacking, "training.stacking", STACKING)
    _choice(training.graphs, "training.graphs", GRAPHS)
    _choice(training.precision, "training.precision", PRECISIONS)
    if training.learning_rate <= 0:
        raise _fail("training.learning_rate", training.learning_rate, "a number > 0")

    grid = raw["grid"]
    _check_keys(grid, "grid", ("load", "temperature"))
    for key in ("load", "temperature"):
        if key not in grid:
            raise SpecError(f"grid.{key}: missing; a zoo grid needs a load and a temperature axis")
    load = _axis(grid["load"], "grid.load", LOAD_AXES)
    temperature = _axis(grid["temperature"], "grid.temperature", TEMPERATURE_AXES)

    phases = raw.get("phases") or {}
    _check_keys(phases, "phases", ("high_loss", "mc", "cka"))
    phases = {k: _number(v, f"phases.{k}", low=0.0) for k, v in phases.items()}

    description = raw.get("description", "")
    if not isinstance(description, str):
        raise _fail("description", description, "a string")
    return ZooSpec(
        name=name, architecture=architecture, data=data, training=training,
        load=load, temperature=temperature, seeds=_seeds(raw.get("seeds", [0, 1])),
        checkpoint_epochs=_checkpoints(raw.get("checkpoints"), training.epochs),
        metrics=_metrics(raw.get("metrics"), training.epochs), phases=phases,
        description=description,
    )


def builtin_specs() -> dict[str, str]:
    """Built-in spec names mapped to their one-line descriptions."""
    out = {}
    for entry in sorted(resources.files("zoo.specs").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            raw = yaml.safe_load(entry.read_text())
            out[entry.name[: -len(".yaml")]] = str(raw.get("description", "")).strip()
    return out


def load_spec(name_or_path: str | Path, *, data_root: str | None = None) -> ZooSpec:
    """Read a spec from a YAML file path, or a built-in spec by name (`zoo specs` lists them).

    `data_root` replaces the spec's `data.root` (local-folder data sets such as CIFAR-10).
    """
    path = Path(name_or_path)
    if path.is_file():
        text = path.read_text()
    else:
        entry = resources.files("zoo.specs") / f"{name_or_path}.yaml"
        if not entry.is_file():
            known = ", ".join(builtin_specs())
            raise SpecError(f"spec: {str(name_or_path)!r} is neither a file nor a built-in "
                            f"spec; built-in specs: {known}")
        text = entry.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpecError(f"spec: {name_or_path}: not valid YAML ({error})") from None
    if data_root is not None and isinstance(raw, dict) and isinstance(raw.get("data"), dict):
        raw["data"]["root"] = data_root
    spec = parse_spec(raw)
    validate_registries(spec)
    return spec


def validate_registries(spec: ZooSpec) -> None:
    """Check the architecture and data set against their registries (files included).

    A folder data set without a root passes here (a dry run needs no data); generation
    itself asks for the root before any work.
    """
    from zoo import architectures, datasets

    architectures.validate_args(spec.architecture.family, spec.architecture.args)
    if spec.data.root is None and datasets.needs_root(spec.data.name):
        return
    datasets.validate(spec.data.name, spec.data.root, spec.data.args)


def spec_from_dict(resolved: Mapping[str, Any]) -> ZooSpec:
    """Rebuild (and re-validate) a ZooSpec from its `to_dict()` form, e.g. a zoo.json's spec."""
    raw = {
        "name": resolved["name"], "description": resolved.get("description", ""),
        "architecture": resolved["architecture"], "data": resolved["data"],
        "training": resolved["training"],
        "grid": {axis: {"axis": resolved[axis]["name"], "values": list(resolved[axis]["values"])}
                 for axis in ("load", "temperature")},
        "seeds": list(resolved["seeds"]),
        "checkpoints": {"epochs": list(resolved["checkpoint_epochs"])},
        "metrics": {**resolved["metrics"], "epochs": list(resolved["metrics"]["epochs"])},
        "phases": resolved.get("phases", {}),
    }
    spec = parse_spec(raw)
    if spec.to_dict() != json.loads(json.dumps(dict(resolved))):
        raise SpecError("spec: the resolved spec does not round-trip; it was edited by hand")
    return spec
