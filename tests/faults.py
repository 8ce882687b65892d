"""Fault injection for process-level tests, from the test side: product code has no hooks.

`python -m tests.faults FAULT zoo-arguments...` runs the `zoo` CLI with the task its worker
actors run wrapped. FAULT is "kill-once:<marker file>" (the first task to run kills its worker
process, as a crash would; Ray restarts the actor and runs the task again),
"kill-once-saved:<marker file>" (a worker dies inside a model, as soon as any training state of
its task is saved; the retried task resumes from it),
"kill-once-stored:<marker file>" (a zoo on a store: a worker dies inside a model as soon as a
training state of its task is on the store, and its local scratch goes with it, as on another
node; the retried task writes `<marker file>.resumed`, a line per state it resumes from) or
"raise:<cell_id>" (training that cell raises inside
the task, as a bug in a cell would), or "sigkill-after-copies:N" (`zoo sync` kills its own
process with SIGKILL as object N+1 is being stored).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable


def faulty(fault: str) -> Callable[..., Any]:
    """generators.executor._task failing on purpose as `fault` says.

    The wrapper looks the task and `run_cell_group` up in the worker's own executor module
    (a captured function object would travel by value, with its own copy of the globals).
    """
    kind, _, argument = fault.partition(":")
    if kind not in ("kill-once", "kill-once-saved", "kill-once-stored", "raise"):
        raise ValueError(f"fault: {fault!r} is not allowed; expected kill-once:PATH, "
                         f"kill-once-saved:PATH, kill-once-stored:PATH or raise:CELL")

    def task(spec: Any, work: Any, bundle: Any, state_folder: Any, *rest: Any) -> Any:  # worker
        import generators.executor as executor

        if kind == "kill-once" and not os.path.exists(argument):
            open(argument, "w").close()
            os._exit(1)  # a real worker death
        watching = _die_once_saved(state_folder, argument) if kind == "kill-once-saved" else None
        if kind == "kill-once-stored":
            watching = _die_once_stored(state_folder, argument)
        real = executor.run_cell_group

        def run_cell_group(spec: Any, cells: Any, *rest: Any) -> Any:
            if kind == "raise" and any(jobs[0].cell_id == argument for jobs in cells):
                raise RuntimeError(f"injected fault in cell {argument}")
            return real(spec, cells, *rest)

        executor.run_cell_group = run_cell_group  # this worker process only, this task only
        try:
            return executor._task(spec, work, bundle, state_folder, *rest)
        finally:
            executor.run_cell_group = real
            if watching is not None:
                watching.set()

    return task


def _die_once_saved(state_folder: Any, marker: str) -> Any:
    """Kill this worker, once, as soon as a training state appears in `state_folder` (watched
    from a thread until the returned event is set)."""
    import threading
    from pathlib import Path

    from zoo.train import STATE_JSON

    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.002):
            if any(Path(state_folder).glob(f"*/{STATE_JSON}")) and not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    return done


def _die_once_stored(states: Any, marker: str) -> Any:
    """Kill this worker, once, as soon as a training state of `states` (a StoreStates) is on
    the store, removing its scratch first; once killed, record each state a task resumes from
    in `marker`.resumed. Returns what ends it with the task (`.set()`)."""
    import shutil
    import threading
    from types import SimpleNamespace

    import zoo.train.state as state
    from zoo.folder.location import open_location

    done = threading.Event()
    if os.path.exists(marker):
        real = state.load_state

        def load_state(store: Any) -> Any:
            saved = real(store)
            if saved is not None:
                with open(f"{marker}.resumed", "a") as out:
                    out.write(f"{store.key} {saved.epoch}\n")
            return saved

        state.load_state = load_state  # this worker process, this task only: undone after it
        return SimpleNamespace(set=lambda: setattr(state, "load_state", real))
    store = open_location(states.url)

    def watch() -> None:
        while not done.wait(0.01):
            if any(n.endswith("/state.json") for n in store.listing()):
                open(marker, "w").close()
                shutil.rmtree(states.scratch, ignore_errors=True)
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    return done


def kill_copy_after(count: int) -> None:
    """Make `zoo.folder.sync` SIGKILL this process when it stores object `count` + 1."""
    import signal

    import zoo.folder.sync as sync

    real, done = sync._copy, []

    def copy(*args: Any) -> int:
        if len(done) == count:
            os.kill(os.getpid(), signal.SIGKILL)
        done.append(args[2])
        return real(*args)

    sync._copy = copy


def main(argv: list[str]) -> int:
    """Wrap the executor's task (or the copy of `zoo sync`) by `argv[0]`, then run the CLI on
    the rest."""
    import generators.executor as executor
    from generators.cli import main as cli

    kind, _, argument = argv[0].partition(":")
    if kind == "sigkill-after-copies":
        kill_copy_after(int(argument))
    else:
        executor._task = faulty(argv[0])
    return cli(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
