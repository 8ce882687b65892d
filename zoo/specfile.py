"""Reading zoo specs: YAML files and built-in specs, validated into a ZooSpec before any work."""

from __future__ import annotations

import json
import math
from dataclasses import fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, Hashable, Mapping

import yaml

from zoo import limits
from zoo.errors import SpecError
from zoo.phases import check_choices
from zoo.spec import (AUGMENTATIONS, GRAPHS, LOAD_AXES, OPTIMIZERS, PRECISIONS, SCHEDULES,
                      STACKING, TEMPERATURE_AXES, ArchitectureSpec, Axis, CurveSpec, DataSpec,
                      HessianSpec, MetricsSpec, SimilaritySpec, TrainingSpec, ZooSpec)


def _fail(path: str, value: Any, allowed: str) -> SpecError:
    return limits.refuse(path, value, allowed)


def _check_keys(section: Mapping[str, Any], path: str, allowed: tuple[str, ...]) -> None:
    if not isinstance(section, Mapping):
        raise _fail(path, section, "a mapping")
    for key in section:
        if key not in allowed:
            where = f"{path}.{key}" if path else limits.short_repr(key, 40).strip("'") or "''"
            raise SpecError(f"{where}: unknown field; allowed fields: {', '.join(allowed)}")


def _number(value: Any, path: str, *, low: float, high: float | None = None,
            integer: bool = False, low_open: bool = False) -> Any:
    """A finite number (an integer when `integer`, then at most MAX_INTEGER unless `high`)."""
    kind = "an integer" if integer else "a number"
    is_int = isinstance(value, int) and not isinstance(value, bool)
    ok = is_int if integer else (is_int or isinstance(value, float))
    if not ok:
        raise _fail(path, value, kind)
    if not is_int and not math.isfinite(value):
        raise _fail(path, value, "a finite number")
    if high is None:
        high = limits.MAX_INTEGER if integer else float("inf")
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
    if len(values) > limits.MAX_AXIS_VALUES:
        raise _fail(f"{path}.values", values, f"at most {limits.MAX_AXIS_VALUES} values")
    integer = name in ("width", "model_dim", "batch_size")
    high = {"data_fraction": 1.0, "width": limits.MAX_WIDTH,
            "model_dim": limits.MAX_WIDTH}.get(name)
    low_open = name in ("data_fraction", "learning_rate")
    low = 1 if integer else 0.0
    checked = tuple(_number(v, f"{path}.values[{i}]", low=low, high=high, integer=integer,
                            low_open=low_open and not integer) for i, v in enumerate(values))
    if len(set(checked)) != len(checked):
        raise _fail(f"{path}.values", values, "distinct values")
    return Axis(name, checked)


SECTION_LIMITS = {  # integer fields held below MAX_INTEGER
    "training.epochs": limits.MAX_EPOCHS,
    "metrics.curve.points": limits.MAX_CURVE_POINTS,
    "metrics.hessian.max_iter": limits.MAX_ITERATIONS,
}


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
            value = _number(value, where, low=1, integer=True, high=SECTION_LIMITS.get(where))
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
        every = _number(raw["every"], "checkpoints.every", low=1, integer=True,
                        high=limits.MAX_EPOCHS)
        kept.update(range(0, epochs + 1, every))
    if "epochs" in raw:
        kept.update(_epoch_list(raw["epochs"], "checkpoints.epochs", epochs))
    return tuple(sorted(kept))


def _seeds(raw: Any) -> tuple[int, ...]:
    if isinstance(raw, int) and not isinstance(raw, bool):
        count = _number(raw, "seeds", low=1, integer=True, high=limits.MAX_SEEDS)
        return tuple(range(count))
    if not isinstance(raw, list) or not raw:
        raise _fail("seeds", raw, "a count >= 1 or a non-empty list of integers")
    if len(raw) > limits.MAX_SEEDS:
        raise _fail("seeds", raw, f"at most {limits.MAX_SEEDS} seeds")
    seeds = tuple(_number(s, f"seeds[{i}]", low=0, integer=True, high=limits.MAX_SEED_VALUE)
                  for i, s in enumerate(raw))
    if len(set(seeds)) != len(seeds):
        raise _fail("seeds", raw, "distinct seeds")
    return seeds


def _metrics(raw: Any, epochs: int) -> MetricsSpec:
    raw = raw or {}
    _check_keys(raw, "metrics", ("epochs", "hessian", "similarity", "curve", "spectra",
                                 "spectra_min_eigenvalues"))
    metric_epochs = _epoch_list(raw.get("epochs", "last"), "metrics.epochs", epochs)
    if not metric_epochs:  # a cell's phase row is taken at its last metric epoch
        raise _fail("metrics.epochs", [], "at least one epoch (turn single metrics off with "
                    "hessian/similarity/curve: {enabled: false}, spectra: false)")
    spectra = raw.get("spectra", True)
    if not isinstance(spectra, bool):
        raise _fail("metrics.spectra", spectra, "true or false")
    curve = _section(raw, "curve", CurveSpec, "metrics.curve")
    if curve.points < 3:
        raise _fail("metrics.curve.points", curve.points, "an integer >= 3")
    for name in ("steps", "bn_samples"):  # optional: None means the documented default
        if getattr(curve, name) is not None:
            _number(getattr(curve, name), f"metrics.curve.{name}", low=1, integer=True)
    if curve.tolerance is not None:
        _number(curve.tolerance, "metrics.curve.tolerance", low=0.0, low_open=True)
        curve = replace(curve, tolerance=float(curve.tolerance))
    similarity = _section(raw, "similarity", SimilaritySpec, "metrics.similarity")
    if similarity.mixup_alpha <= 0:
        raise _fail("metrics.similarity.mixup_alpha", similarity.mixup_alpha, "a number > 0")
    min_eigenvalues = _number(raw.get("spectra_min_eigenvalues", 50),
                              "metrics.spectra_min_eigenvalues", low=2, integer=True)
    return MetricsSpec(
        epochs=metric_epochs,
        hessian=_section(raw, "hessian", HessianSpec, "metrics.hessian"),
        similarity=similarity, curve=curve, spectra=spectra,
        spectra_min_eigenvalues=min_eigenvalues,
    )


TOP_LEVEL = ("name", "description", "architecture", "data", "training", "grid", "seeds",
             "checkpoints", "metrics", "phases")


def parse_spec(raw: Any) -> ZooSpec:
    """Validate a raw mapping (parsed YAML) into a ZooSpec; SpecError names the bad field.

    Sizes are held to the limits in `zoo.limits` before anything is expanded or allocated.
    """
    if raw is None:
        raise SpecError("spec: the document is empty; expected a mapping of fields "
                        f"({', '.join(TOP_LEVEL)})")
    limits.check_document(raw)
    _check_keys(raw, "", TOP_LEVEL)
    for required in ("name", "architecture", "data", "grid"):
        if required not in raw:
            raise SpecError(f"{required}: missing; a zoo spec needs {required}")
    name = raw["name"]
    plain = isinstance(name, str) and name.replace("-", "").replace("_", "").isalnum() and \
        len(name) <= limits.MAX_NAME
    if not plain:
        raise _fail("name", name, f"a non-empty name of at most {limits.MAX_NAME} letters, "
                                  "digits, '-' and '_'")

    arch_raw = raw["architecture"]
    _check_keys(arch_raw, "architecture", ("family", "width", "args"))
    arch_args = arch_raw.get("args") or {}
    limits.check_arguments(arch_args, "architecture.args", limits.ARCHITECTURE_ARG_LIMITS)
    architecture = ArchitectureSpec(
        family=str(arch_raw.get("family")),
        width=_number(arch_raw.get("width", 32), "architecture.width", low=1, integer=True,
                      high=limits.MAX_WIDTH),
        args=dict(arch_args),
    )
    data_raw = raw["data"]
    _check_keys(data_raw, "data", ("name", "root", "fraction", "beta", "args"))
    root = data_raw.get("root")
    if root is not None:
        limits.check_folder_path("data.root", root)
    data_args = data_raw.get("args") or {}
    limits.check_arguments(data_args, "data.args", limits.DATA_ARG_LIMITS)
    data = DataSpec(
        name=str(data_raw.get("name")), root=root,
        fraction=_number(data_raw.get("fraction", 1.0), "data.fraction", low=0.0, high=1.0,
                         low_open=True),
        beta=_number(data_raw.get("beta", 1.0), "data.beta", low=0.0),
        args=dict(data_args),
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
    _check_keys(phases, "phases", ("high_loss", "mc", "cka", "cka_metric", "mc_bound"))
    phases = {k: v if k in ("cka_metric", "mc_bound") else _number(v, f"phases.{k}", low=0.0)
              for k, v in phases.items()}
    check_choices(phases)

    description = raw.get("description", "")
    if not isinstance(description, str) or len(description) > limits.MAX_TEXT:
        raise _fail("description", description, f"a string of at most {limits.MAX_TEXT} "
                                                "characters")
    seeds = _seeds(raw.get("seeds", [0, 1]))
    checkpoint_epochs = _checkpoints(raw.get("checkpoints"), training.epochs)
    metrics = _metrics(raw.get("metrics"), training.epochs)
    limits.check_totals(len(load.values) * len(temperature.values), len(seeds),
                        len(set(checkpoint_epochs) | set(metrics.epochs)))
    return ZooSpec(
        name=name, architecture=architecture, data=data, training=training,
        load_axis=load, temperature_axis=temperature, seeds=seeds,
        checkpoint_epochs=checkpoint_epochs, metrics=metrics, phases=phases,
        description=description,
    )


RENAMED_SPECS = {"pinn-convection": "pinn-convection-700"}  # old built-in name -> new one


def builtin_specs() -> dict[str, str]:
    """Built-in spec names mapped to their one-line descriptions."""
    out = {}
    for entry in sorted(resources.files("zoo.specs").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            raw = yaml.safe_load(entry.read_text())
            out[entry.name[: -len(".yaml")]] = str(raw.get("description", "")).strip()
    return out


class _SpecLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses documents nested deeper than MAX_NESTING while composing
    (before Python's recursion limit is reached); alias expansion is bounded later, in
    `limits.check_document`, since an alias only shares a node that is already built."""

    def __init__(self, stream: str, where: str) -> None:
        super().__init__(stream)
        self.where, self.depth = where, 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > limits.MAX_NESTING:
                line = self.peek_event().start_mark.line + 1
                raise SpecError(f"{self.where}: line {line}: nested more than "
                                f"{limits.MAX_NESTING} levels deep; expected at most "
                                f"{limits.MAX_NESTING}")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """A mapping whose keys are distinct; YAML would keep the last of a repeated key."""
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` keys are merged, not repeated
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable) and key in seen:
                line = key_node.start_mark.line + 1
                raise SpecError(f"{self.where}: line {line}: {limits.short_repr(key, 40)} "
                                f"appears twice in one mapping; expected each key once")
            if isinstance(key, Hashable):
                seen.add(key)
        return super().construct_mapping(node, deep)


def _one_line(error: Exception, length: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= length else f"{text[:length - 3]}..."


def read_yaml(text: str, where: str) -> Any:
    """Parse one YAML document with `_SpecLoader`; any failure is a SpecError naming `where`."""
    loader = None
    try:
        loader = _SpecLoader(text, where)
        return loader.get_single_data()
    except SpecError:
        raise
    except yaml.YAMLError as error:
        raise SpecError(f"{where}: not valid YAML ({_one_line(error)})") from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        raise SpecError(f"{where}: a value cannot be read ({_one_line(error)})") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_spec_file(path: Path) -> str:
    """A spec file's text: at most MAX_SPEC_BYTES of UTF-8, checked before it is parsed."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limits.MAX_SPEC_BYTES + 1)
    except OSError as error:
        raise SpecError(f"{path}: cannot be read ({error.strerror or error})") from None
    if len(data) > limits.MAX_SPEC_BYTES:
        raise SpecError(f"{path}: larger than {limits.MAX_SPEC_BYTES} bytes; expected a "
                        f"spec file of at most {limits.MAX_SPEC_BYTES} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SpecError(f"{path}: byte {error.start} ({data[error.start]:#04x}) is not UTF-8; "
                        f"expected a UTF-8 YAML text file") from None


def load_spec(name_or_path: str | Path, *, data_root: str | None = None) -> ZooSpec:
    """Read a spec from a YAML file path, or a built-in spec by name (`zoo specs` lists them).

    `data_root` replaces the spec's `data.root` (local-folder data sets such as CIFAR-10).
    """
    path = Path(name_or_path)
    if path.is_file():
        text = read_spec_file(path)
    else:
        entry = resources.files("zoo.specs") / f"{name_or_path}.yaml"
        plain = str(name_or_path).replace("-", "").replace("_", "").isalnum()
        if not plain or not entry.is_file():
            if str(name_or_path) in RENAMED_SPECS:
                raise SpecError(f"spec: {str(name_or_path)!r} was renamed; use "
                                f"{RENAMED_SPECS[str(name_or_path)]!r}")
            known = ", ".join(builtin_specs())
            raise SpecError(f"spec: {str(name_or_path)!r} is neither a file nor a built-in "
                            f"spec; built-in specs: {known}")
        text = entry.read_text()
    raw = read_yaml(text, str(name_or_path))
    limits.check_document(raw, str(name_or_path))  # an alias bomb is refused naming the file
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
    from zoo import architectures, dataroot, datasets

    architectures.validate_args(spec.architecture.family, spec.architecture.args)
    if spec.data.root is None and datasets.needs_root(spec.data.name):
        return
    dataroot.validate(spec.data.name, spec.data.root, spec.data.args)


def spec_from_dict(resolved: Mapping[str, Any]) -> ZooSpec:
    """Rebuild (and re-validate) a ZooSpec from its `to_dict()` form, e.g. a zoo.json's spec."""
    raw = {
        "name": resolved["name"], "description": resolved.get("description", ""),
        "architecture": resolved["architecture"], "data": resolved["data"],
        "training": resolved["training"],
        "grid": {axis: {"axis": resolved[f"{axis}_axis"]["name"],
                        "values": list(resolved[f"{axis}_axis"]["values"])}
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
