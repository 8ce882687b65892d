"""Hostile specs: sizes past the limits, non-finite numbers, YAML bombs, bad bytes and shapes.

Every case goes through `zoo generate --dry-run` (the CLI a stranger's spec meets first) and
must end in one line on stderr, exit code 2, the field or file named, no traceback, and no
allocation beyond a bound (tracemalloc peak for Python objects, peak RSS for tensors).
"""

from __future__ import annotations

import copy
import re
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from generators.cli import main
from tests.conftest import TINY_SPEC
from zoo import limits
from zoo.errors import SpecError
from zoo.specfile import load_spec, parse_spec

PYTHON_BOUND = 20_000_000  # bytes of Python objects a refused spec may allocate
RSS_BOUND = 200_000_000  # bytes the peak resident set may grow by (tensors included)


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


@contextmanager
def bounded_allocation():
    """Fail if the block allocates more than PYTHON_BOUND (Python) or RSS_BOUND (resident)."""
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set (VmHWM)
    rss = _peak_rss()
    tracemalloc.start()
    try:
        yield
        _, python_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert python_peak < PYTHON_BOUND, f"{python_peak} bytes of Python objects"
    assert _peak_rss() - rss < RSS_BOUND, f"peak RSS grew by {_peak_rss() - rss} bytes"


def _spec(**changes) -> dict:
    body = copy.deepcopy(TINY_SPEC)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = body
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return body


def _grid(load_axis="width", load=(4, 8), temperature_axis="batch_size", temperature=(128,)):
    return {"load": {"axis": load_axis, "values": list(load)},
            "temperature": {"axis": temperature_axis, "values": list(temperature)}}


def _refused(capsys, path: Path, out: Path, message: str) -> None:
    """`zoo generate PATH --dry-run` exits 2 with one line matching `message`."""
    with bounded_allocation():
        code = main(["generate", str(path), "--out", str(out), "--dry-run", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert re.search(message, lines[0]), lines[0]
    assert len(lines[0]) < 600
    assert not out.exists()


# (changes to TINY_SPEC, the message) for specs written as YAML by yaml.safe_dump
FIELD_CASES = [
    ({"training__epochs": float("inf")},
     r"training\.epochs: inf is not allowed; expected a finite number"),
    ({"training__learning_rate": float("inf")},
     r"training\.learning_rate: inf is not allowed; expected a finite number"),
    ({"training__learning_rate": float("nan")}, r"training\.learning_rate: nan is not allowed"),
    ({"training__momentum": float("-inf")}, r"training\.momentum: -inf is not allowed"),
    ({"phases": {"mc": float("nan")}}, r"phases\.mc: nan is not allowed; expected a finite"),
    ({"data__fraction": float("nan")}, r"data\.fraction: nan is not allowed"),
    ({"data__beta": float("inf")}, r"data\.beta: inf is not allowed; expected a finite number"),
    ({"grid": _grid(temperature_axis="learning_rate", temperature=(0.1, float("inf")))},
     r"grid\.temperature\.values\[1\]: inf is not allowed; expected a finite number"),
    ({"metrics__hessian__tol": float("nan")}, r"metrics\.hessian\.tol: nan is not allowed"),
    ({"architecture__args__depth": float("inf")},
     r"architecture\.args\.depth: inf is not allowed; expected a finite number"),
    ({"training__epochs": 10**9},
     rf"training\.epochs: 1000000000 is not allowed; .*<= {limits.MAX_EPOCHS}"),
    ({"architecture__width": 10**7}, r"architecture\.width: 10000000 is not allowed; .*<= 65536"),
    ({"grid": _grid(load=(4, 10**6))}, r"grid\.load\.values\[1\]: 1000000 is not allowed"),
    ({"grid": _grid(load_axis="model_dim", load=(10**9,))},
     r"grid\.load\.values\[0\]: 1000000000 is not allowed; expected an integer >= 1 and <= 65536"),
    ({"grid": _grid(load=range(1, 1202))},
     rf"grid\.load\.values: \[1, 2, .*\.\.\. is not allowed; expected at most "
     rf"{limits.MAX_AXIS_VALUES} values"),
    ({"grid": _grid(load=range(1, 201), temperature=range(1, 201))},
     r"grid: 40000 cells \(load values x temperature values\) is not allowed; expected at most"),
    ({"grid": _grid(load=range(1, 101), temperature=range(1, 101)), "seeds": 11},
     r"seeds: 10000 cells x 11 seeds = 110000 models is not allowed"),
    ({"grid": _grid(load=range(1, 101), temperature=range(1, 51)), "seeds": 2,
      "training__epochs": 1000}, r"checkpoints: 10000 models x 1001 kept epochs = 10010000"),
    ({"architecture__args__depth": 10**6},
     r"architecture\.args\.depth: 1000000 is not allowed; expected at most 256"),
    ({"architecture": {"family": "gpt", "width": 8, "args": {"heads": 10**9}}},
     r"architecture\.args\.heads: 1000000000 is not allowed; expected at most 1024"),
    ({"architecture__args": "depth"},
     r"architecture\.args: 'depth' is not allowed; expected a mapping of arguments"),
    ({"data": {"name": "convection", "args": {"collocation": 10**12}}},
     r"data\.args\.collocation: 1000000000000 is not allowed; expected at most 10000000"),
    ({"data": {"name": "convection", "args": {"grid": [10**6, 4]}}},
     r"data\.args\.grid\[0\]: 1000000 is not allowed; expected at most 8192"),
    ({"data": {"name": "mnist1d", "args": [["a", 1]]}},
     r"data\.args: \[\['a', 1\]\] is not allowed; expected a mapping of arguments"),
    ({"seeds": 10**6}, r"seeds: 1000000 is not allowed; expected an integer >= 1 and <= 1000"),
    ({"seeds": list(range(2000))}, r"seeds: \[0, 1, 2, .*\.\.\. is not allowed; expected at most"),
    ({"seeds": [0, 2**40]}, r"seeds\[1\]: 1099511627776 is not allowed; .*<= 4294967295"),
    ({"metrics__curve__steps": 10**12},
     r"metrics\.curve\.steps: 1000000000000 is not allowed; .*<= 100000000"),
    ({"metrics__curve__points": 10**8},
     r"metrics\.curve\.points: 100000000 is not allowed; expected an integer >= 1 and <= 1001"),
    ({"metrics__hessian__max_iter": 10**7}, r"metrics\.hessian\.max_iter: 10000000 is not allowed"),
    ({"checkpoints": {"every": 10**12}}, r"checkpoints\.every: 1000000000000 is not allowed"),
    ({"name": "n" * 500}, r"name: 'nnnn.*\.\.\. is not allowed; expected a non-empty name of at"),
    ({"description": "d" * 20_000}, r"description: 'ddd.*\.\.\. is not allowed; expected a string"),
    ({"x" * 5000: 1}, r"^zoo: error: xxxxx.*\.\.\.: unknown field; allowed fields"),
]


@pytest.mark.parametrize("changes, message", FIELD_CASES,
                         ids=[f"field-{i}" for i in range(len(FIELD_CASES))])
def test_hostile_fields_are_refused_naming_the_field(tmp_path, capsys, changes, message):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_spec(**changes)))
    _refused(capsys, path, tmp_path / "out", message)


BILLION_LAUGHS = "\n".join(
    ["name: tiny", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)])
DEEP_FLOW = "name: tiny\narchitecture: " + "[" * 5000 + "]" * 5000 + "\n"
DEEP_BLOCK = "name: tiny\narchitecture:\n" + "".join(f"{'  ' * (i + 1)}k{i}:\n" for i in range(60))

# (file bytes, the message): documents that are not a spec at all
DOCUMENT_CASES = [
    (BILLION_LAUGHS.encode(),
     r"^zoo: error: \S+/spec\.yaml: more than 100000 values \(YAML aliases expanded\)"),
    (DEEP_FLOW.encode(), r"^zoo: error: \S+/spec\.yaml: line 2: nested more than 32 levels "
                         r"deep; expected at most 32$"),
    (DEEP_BLOCK.encode(), r"^zoo: error: \S+/spec\.yaml: line 33: nested more than 32 levels"),
    (b"name: tiny\ndescription: caf\xe9 \xff\n", r"spec\.yaml: byte 27 \(0xe9\) is not UTF-8"),
    (b"\xff\xfe\x00n\x00a", r"spec\.yaml: byte 0 \(0xff\) is not UTF-8"),
    (b"name: tiny\n" + b"#" * (limits.MAX_SPEC_BYTES + 10),
     rf"spec\.yaml: larger than {limits.MAX_SPEC_BYTES} bytes"),
    (b"- 1\n- 2\n", r"spec: \[1, 2\] is not allowed; expected a mapping"),
    (b"just a string\n", r"spec: 'just a string' is not allowed; expected a mapping"),
    (b"", r"spec: the document is empty; expected a mapping of fields"),
    (b"# only a comment\n", r"spec: the document is empty"),
    (b"name: tiny\n---\nname: other\n", r"spec\.yaml: not valid YAML .*expected a single document"),
    (b"name: !!python/object/apply:os.system [echo hi]\n",
     r"spec\.yaml: not valid YAML .*could not determine a constructor"),
    (b"name: tiny\nseeds: " + b"9" * 5000 + b"\n", r"spec\.yaml: a value cannot be read"),
    (b"name: [unclosed\n", r"spec\.yaml: not valid YAML"),
    (b"name: tiny\n\x00\n", r"spec\.yaml: not valid YAML .*special characters are not allowed"),
    (b"1: 2\n", r"^zoo: error: 1: unknown field; allowed fields: name"),
    (b'"": 2\n', r"^zoo: error: '': unknown field; allowed fields: name"),
    (b"? [a, b]\n: 1\n", r"spec\.yaml: not valid YAML .*unhashable key"),
]


@pytest.mark.parametrize("data, message", DOCUMENT_CASES,
                         ids=[f"document-{i}" for i in range(len(DOCUMENT_CASES))])
def test_hostile_documents_are_refused_naming_the_file(tmp_path, capsys, data, message):
    path = tmp_path / "spec.yaml"
    path.write_bytes(data)
    _refused(capsys, path, tmp_path / "out", message)


def test_deep_nesting_given_as_a_dict_is_refused_without_recursion():
    body = _spec()
    node = body["architecture"]["args"] = {}
    for _ in range(100_000):
        node["a"] = {}
        node = node["a"]
    with bounded_allocation(), pytest.raises(
            SpecError, match=r"^architecture\.args(\.a)+: nested more than 32 levels deep"):
        parse_spec(body)


def test_an_alias_bomb_given_as_a_dict_is_refused_quickly():
    layer: list = ["x"] * 10
    for _ in range(9):
        layer = [layer] * 10
    with bounded_allocation(), pytest.raises(SpecError, match=r"^spec: more than 100000 values"):
        parse_spec(_spec(description="bomb", architecture={"family": "mlp", "args": layer}))


def test_a_width_past_the_parameter_limit_is_refused_before_it_is_built(tmp_path, capsys):
    # 40 -> 40000 -> 40000 -> 10: 1.6e9 stored values, 6.4 GB a checkpoint; counted on meta
    import torch

    with torch.device("meta"):  # the first use imports torch's meta kernels (not a bomb)
        torch.nn.Linear(2, 2)
    path = tmp_path / "wide.yaml"
    path.write_text(yaml.safe_dump(_spec(grid=_grid(load=(8, 40_000)), architecture__args={
        "depth": 2})))
    _refused(capsys, path, tmp_path / "out",
             r"grid\.load\.values\[1\]: width 40000 gives 1,602,080,010 values per "
             r"checkpoint; expected at most 1,000,000,000")


@pytest.mark.parametrize("name", ["../../zoo/specs/demo", "demo/../demo", "."])
def test_spec_names_that_are_paths_are_not_built_in_specs(name):
    with pytest.raises(SpecError, match="is neither a file nor a built-in spec"):
        load_spec(name)


def test_the_limits_pass_every_built_in_spec_and_a_spec_at_the_limits(tmp_path):
    from zoo.specfile import builtin_specs

    for name in builtin_specs():
        load_spec(name)
    at_limit = _spec(training={"epochs": limits.MAX_EPOCHS},
                     grid=_grid(load=(1, limits.MAX_WIDTH)), seeds=4)
    spec = parse_spec(at_limit)
    assert spec.training.epochs == limits.MAX_EPOCHS and len(spec.seeds) == 4
