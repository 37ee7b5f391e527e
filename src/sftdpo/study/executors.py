"""Where a study's cells run: in this process, one after another (`local`), or as Ray tasks on a
local machine or a cluster (`ray`). Both take the same cells and the same `execute(cell)` and yield
`(cell, outcome)` as cells finish; the runner records each outcome in the store, so only the
driver process ever writes the SQLite file and resume works the same with either.

Ray (`pip install -e ".[ray]"`): each cell is a remote task asking for `cpus_per_cell` CPUs and
`gpus_per_cell` GPUs (fractions pack several small cells on one GPU); at most as many cells are
in flight as the cluster's resources fit, so a cell marked `running` is running (or starting).
On a multi-node cluster, the study directory and the data directory must be on a filesystem
every node sees at the same path (the workers write the run directories; the driver the store).
"""

from __future__ import annotations

import logging
import math
import os
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ..errors import DataError, UsageError
from .grid import Cell

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
FORWARDED_ENV = ("SFTDPO_CACHE_DIR", "SFTDPO_DATA_DIR", "HF_HOME", "HF_HUB_OFFLINE", "HF_ENDPOINT",
                 "TOKENIZERS_PARALLELISM", "ACCELERATE_MIXED_PRECISION")
"""Environment variables a Ray instance started by the study passes on to its workers."""


@dataclass(frozen=True)
class CellOutcome:
    """What running one cell gave: `done` with its metrics and dev curve, or `failed` with an error."""

    status: str
    summary: str
    seconds: float
    metrics: dict | None = None
    curve: list | None = None
    error: str | None = None


Execute = Callable[[Cell], CellOutcome]
Started = Callable[[Cell], None]


class LocalExecutor:
    """Every cell in this process, in grid order. Ctrl-C (and a cell's Interrupted) stop the study."""

    name = "local"

    def start(self) -> None:
        pass

    def map(self, cells: Iterable[Cell], execute: Execute, started: Started) -> Iterator[tuple[Cell, CellOutcome]]:
        for cell in cells:
            started(cell)
            yield cell, execute(cell)

    def close(self) -> None:
        pass


def _ray():
    try:
        import ray
    except ImportError:
        raise DataError('--executor ray needs Ray, which is not installed: pip install -e ".[ray]"') from None
    return ray


def _remote_execute(execute: Execute, cell: Cell) -> CellOutcome:
    """The Ray task: one cell in a worker process (module level, so workers import it by name)."""
    return execute(cell)


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail at once, not after minutes of Ray's retries, when HOST:PORT of a cluster does not answer."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray-address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise DataError(f"no Ray cluster answers at {address} ({e.strerror or e}); start one with "
                        "`ray start --head` there, or leave out --ray-address for a local Ray instance") from None


class RayExecutor:
    """Cells as Ray remote tasks with resource requests; results come back to this (driver) process.

    address: a running cluster ("auto", "ray://host:10001", "host:6379"); None starts a local Ray
    instance, unless this process already called ray.init, which is then used as it is.
    gpus_per_cell: None = 1 if the cluster has GPUs, else 0.
    """

    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_cell: float = 1.0, gpus_per_cell: float | None = None):
        if cpus_per_cell <= 0:
            raise UsageError(f"--cpus-per-cell must be positive, got {cpus_per_cell:g}")
        if gpus_per_cell is not None and gpus_per_cell < 0:
            raise UsageError(f"--gpus-per-cell must be >= 0, got {gpus_per_cell:g}")
        self.ray = _ray()
        self.address, self.cpus, self.gpus = address, float(cpus_per_cell), gpus_per_cell
        self.started_ray = False

    def start(self) -> None:
        """Connect to the cluster (or start a local Ray instance) now, so a bad address fails before
        anything is written."""
        ray = self.ray
        if ray.is_initialized():
            return
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        address = self.address or os.environ.get("RAY_ADDRESS")
        if address and address not in ("auto", "local"):
            _check_reachable(address)
        try:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=True,
                     runtime_env={"env_vars": env} if env else None, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
            reason = str(e).splitlines()[0].strip("'\"") if str(e) else repr(e)
            raise DataError(f"could not start or reach {where}: {reason}") from None
        self.started_ray = True

    def capacity(self) -> int:
        """How many cells fit the cluster's resources now (at least 1; autoscaled nodes count once up)."""
        total = self.ray.cluster_resources()
        fit = math.floor(total.get("CPU", 1) / self.cpus + 1e-9)
        if self.gpus_per_cell:
            fit = min(fit, math.floor(total.get("GPU", 0) / self.gpus_per_cell + 1e-9))
        return max(1, fit)

    @property
    def gpus_per_cell(self) -> float:
        if self.gpus is None:
            self.gpus = 1.0 if self.ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        return self.gpus

    def map(self, cells: Iterable[Cell], execute: Execute, started: Started) -> Iterator[tuple[Cell, CellOutcome]]:
        self.start()
        ray = self.ray
        task = ray.remote(_remote_execute).options(num_cpus=self.cpus, num_gpus=self.gpus_per_cell,
                                                   name="sftdpo-cell")
        shared = ray.put(execute)
        queue, in_flight = list(cells), {}
        log.info("ray: %s CPU and %s GPU per cell, up to %d cells at once", f"{self.cpus:g}",
                 f"{self.gpus_per_cell:g}", self.capacity())
        try:
            while queue or in_flight:
                limit = self.capacity()
                while queue and len(in_flight) < limit:
                    cell = queue.pop(0)
                    started(cell)
                    in_flight[task.remote(shared, cell)] = cell
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                cell = in_flight.pop(ready[0])
                try:
                    outcome = ray.get(ready[0])
                except ray.exceptions.RayError as e:  # the worker died (OOM, node lost) or the task broke
                    text = "".join(traceback.format_exception_only(type(e), e)).strip()
                    outcome = CellOutcome("failed", text.splitlines()[-1][:300], 0.0, error=text[-4000:])
                yield cell, outcome
        finally:
            for ref in in_flight:  # Ctrl-C or an error in the driver: the unfinished cells stay `running`
                ray.cancel(ref, force=False)

    def close(self) -> None:
        if self.started_ray and self.ray.is_initialized():
            self.ray.shutdown()
            self.started_ray = False


def make_executor(name: str = "local", ray_address: str | None = None, cpus_per_cell: float | None = None,
                  gpus_per_cell: float | None = None):
    """The executor `sftdpo study --executor NAME` asks for."""
    if name == "local":
        given = [flag for flag, value in (("--ray-address", ray_address), ("--cpus-per-cell", cpus_per_cell),
                                           ("--gpus-per-cell", gpus_per_cell)) if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} apply to --executor ray only")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(ray_address, 1.0 if cpus_per_cell is None else cpus_per_cell, gpus_per_cell)
    raise UsageError(f"unknown executor '{name}'; choose {', '.join(EXECUTORS)}")
