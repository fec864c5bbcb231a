"""The Ray engine of ``ovperc label``: an actor pool on Ray Data runs the chain, this process writes.

The work is planned here, in dataset order (:func:`~ovperc.labeling.runner.plan_batches`):
one Ray Data row per batch of files. Ray Data reads and decodes the files in parallel and
an actor pool runs the chain (:mod:`~ovperc.labeling.ray_worker`); every actor builds its
pipeline once, from a picklable factory (never a pickled model), and returns each image's
result in a compact form (arrays, masks as COCO RLE). This process puts the rows back in
dataset order and writes them through the same
:class:`~ovperc.labeling.sink.ResultRecorder` as the local engine, so both engines write
the same bytes, the manifest records each image once, and a run
started on one engine resumes on the other.

When an actor dies (a lost node, an out-of-memory kill), Ray restarts it and runs its
batches again, up to ``max_retries`` times; a batch that comes back twice is written once.
A worker that keeps dying stops the run with an error instead of looping: what was
written stays, and the run resumes from there.

Example:
    >>> from functools import partial
    >>> engine = RayEngine(partial(Pipeline.from_preset, "detect"), num_workers=2)  # doctest: +SKIP
    >>> label_folder(pipe, "photos/", "dataset/", classes="dog", engine=engine)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ovperc.labeling.engine import FATAL_ERRORS, given_boxes, plan_batches
from ovperc.labeling.ray_worker import Failure, Labeler, Outcome, decode_row
from ovperc.labeling.scan import ScanEntry
from ovperc.labeling.sink import ResultRecorder

if TYPE_CHECKING:
    from ovperc.ontology import Ontology
    from ovperc.pipeline import Pipeline
    from ovperc.result import Perception

logger = logging.getLogger(__name__)

INSTALL_HINT = 'the Ray engine needs Ray Data: pip install "ovperc[ray]"'
#: most Ray Data blocks (one batch of files per block up to this many).
MAX_BLOCKS = 4096


def import_ray() -> Any:
    """Import ``ray`` (with Ray Data), or raise an ``ImportError`` saying how to install it.

    Example:
        >>> ray = import_ray()  # doctest: +SKIP
    """
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise ImportError(f"{INSTALL_HINT} ({error})") from error
    return ray


# ------------------------------------------------------------------------ the engine
@dataclass
class RayEngine:
    """Runs ``ovperc label`` on Ray Data; pass it to :func:`~ovperc.labeling.label_folder`.

    Args:
        factory: a picklable zero-argument callable that builds the pipeline in each actor
            (e.g. ``functools.partial(Pipeline.from_preset, "detect", detector=...)``).
        address: a running cluster to join (``"auto"``, ``"ray://head:10001"``, ...);
            ``None`` starts a local Ray instance for the run (or uses the one this process
            already started).
        num_workers: actors, each holding one copy of the models. Default: one per GPU
            when the cluster has GPUs, else one per node.
        gpus_per_worker: GPUs per actor (fractions share a GPU). Default: 1 when the
            cluster has GPUs, else 0.
        cpus_per_worker: CPUs per actor. Default: 1 with GPUs; without, the node's CPUs
            shared among the actors placed on it.
        num_cpus: CPUs of a local instance (default: all of this machine's).
        quiet: silence Ray Data's own progress output while the run shows its own.
        max_retries: how many times a dead actor is restarted and its batch run again
            before the run stops with an error (default 3).

    Example:
        >>> engine = RayEngine(factory, address="auto", gpus_per_worker=1)  # doctest: +SKIP
        >>> report = label_folder(pipe, "/data/photos", "/data/ds", classes="dog",
        ...                       engine=engine)  # doctest: +SKIP
    """

    factory: Callable[[], Pipeline]
    address: str | None = None
    num_workers: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float | None = None
    num_cpus: int | None = None
    quiet: bool = True
    max_retries: int = 3

    def __post_init__(self) -> None:
        for name in ("num_workers", "num_cpus"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {self.max_retries!r}")
        for name in ("gpus_per_worker", "cpus_per_worker"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be 0 or more, got {value!r}")
        import_ray()

    # ----------------------------------------------------------------- LabelEngine
    def run(self, todo: list[ScanEntry], recorder: ResultRecorder, *, ontology: Ontology | None,
            tag_merge: bool, batch_size: int, decode_workers: int, max_pixels: int,
            progress: bool) -> None:
        """Label ``todo`` on Ray and record the results in dataset order (see ``LabelEngine``)."""
        from tqdm.auto import tqdm

        report = recorder.report
        bar = tqdm(total=len(todo), unit="img", desc="labelling (ray)", disable=not progress,
                   dynamic_ncols=True, smoothing=0.1)
        try:
            for entry in todo:
                if entry.problem is not None:
                    recorder.skip(entry, entry.problem)
                    bar.update(1)
            batches = plan_batches(todo, batch_size)
            if not batches:
                return
            with self._session() as ray, self._quiet(ray), contextlib.closing(
                    self._rows(ray, batches, ontology=ontology, tag_merge=tag_merge,
                               decode_workers=decode_workers, max_pixels=max_pixels)) as rows:
                for index, decode_s, outcomes in rows:
                    entries = batches[index]
                    report.add_time("decode", decode_s)
                    kept = []
                    for entry, outcome in zip(entries, outcomes):
                        if isinstance(outcome, Failure) and outcome.kind in ("decode", "image"):
                            recorder.skip(entry, outcome.message())
                        else:
                            kept.append((entry, _as_result(outcome)))
                    recorder.record([e for e, _ in kept], [r for _, r in kept])
                    bar.update(len(entries))
                    bar.set_postfix(skipped=len(report.skipped), refresh=False)
        finally:
            bar.close()

    # ----------------------------------------------------------------- Ray plumbing
    def _rows(self, ray: Any, batches: list[list[ScanEntry]], *, ontology: Ontology | None,
              tag_merge: bool, decode_workers: int, max_pixels: int
              ) -> Iterator[tuple[int, float, list[Outcome]]]:
        """``(batch index, decode seconds, outcomes)`` in batch order, each batch once."""
        workers, gpus, cpus = self._sizes(ray)
        logger.info("Ray engine: %d workers, %s GPUs and %s CPUs each", workers, gpus, cpus)
        items = [{"index": i, "paths": [os.fsencode(str(e.path)) for e in batch]}
                 for i, batch in enumerate(batches)]
        for item, batch in zip(items, batches):
            given = given_boxes(batch)
            if given is not None:  # boxes to segment (a segment job): they travel with the batch
                item["given"] = pickle.dumps(given, protocol=pickle.HIGHEST_PROTOCOL)
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), MAX_BLOCKS))
        if gpus > 0:
            # decode on CPU tasks while the GPUs run the models
            ds = ds.map(decode_row, fn_kwargs={"max_pixels": max_pixels, "workers": 1},
                        num_cpus=0.5)
        ds = self._map_labeler(ray, ds, (self.factory, ontology, tag_merge, max_pixels,
                                         decode_workers, max(1, int(cpus))),
                               workers=workers, cpus=cpus, gpus=gpus)
        pending: dict[int, tuple[float, list[Outcome]]] = {}
        expected = 0
        rows = ds.iter_rows()
        iterator = iter(rows)
        try:
            for row in iterator:
                index = int(row["index"])
                if index < expected or index in pending:
                    logger.info("batch %d came back twice (a retried task); written once", index)
                    continue
                pending[index] = (float(row["decode_s"]), pickle.loads(row["outcomes"]))
                while expected in pending:
                    decode_s, outcomes = pending.pop(expected)
                    yield expected, decode_s, outcomes
                    expected += 1
        except Exception as error:
            cause = _user_error(error)
            if cause is not None:
                raise cause from error
            if _actor_died(ray, error):
                tries = self.max_retries + 1
                raise RuntimeError(
                    f"a Ray worker died on the same batch {tries} time{'s' * (tries > 1)} (out "
                    "of memory? a crashing library?); what was written is kept: run the same "
                    "command again to resume, perhaps with a smaller --batch-size") from error
            raise
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        if expected != len(batches):
            raise RuntimeError(f"Ray returned {expected} of {len(batches)} batches")

    def _map_labeler(self, ray: Any, ds: Any, args: tuple[Any, ...], *, workers: int,
                     cpus: float, gpus: float) -> Any:
        """``ds`` mapped through an actor pool of :class:`Labeler`, with bounded retries."""
        import warnings

        common = {"fn_constructor_args": args, "compute": ray.data.ActorPoolStrategy(size=workers),
                  "num_cpus": cpus, "num_gpus": gpus}
        # Ray Data restarts dead actors forever unless told otherwise; a batch that kills
        # its worker every time must end the run instead. These are generic remote
        # arguments, which newer Ray releases warn about and may one day refuse.
        retries = {"max_restarts": self.max_retries, "max_task_retries": self.max_retries}
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
                return ds.map(Labeler, **common, **retries)
        except TypeError as error:
            logger.warning("this Ray does not take max_restarts (%s): dead workers are "
                           "restarted as Ray Data decides", error)
            return ds.map(Labeler, **common)

    def _sizes(self, ray: Any) -> tuple[int, float, float]:
        """``(actors, GPUs per actor, CPUs per actor)`` for this cluster."""
        total = ray.cluster_resources()
        cluster_gpus = float(total.get("GPU", 0))
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        gpus = self.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if cluster_gpus >= 1 else 0.0
        if gpus > cluster_gpus:
            raise ValueError(f"gpus_per_worker={gpus} but the cluster has {cluster_gpus:g} GPUs")
        workers = self.num_workers
        if workers is None:
            workers = max(1, int(cluster_gpus // gpus)) if gpus > 0 else max(1, len(nodes))
        cpus = self.cpus_per_worker
        if cpus is None:
            if gpus > 0:
                cpus = 1.0
            else:
                node_cpus = max((float(n.get("Resources", {}).get("CPU", 1)) for n in nodes), default=1.0)
                per_node = max(1, -(-workers // max(1, len(nodes))))
                cpus = max(1.0, float(int(node_cpus // per_node)))
        return workers, float(gpus), float(cpus)

    @contextlib.contextmanager
    def _session(self) -> Iterator[Any]:
        """Ray, initialised for the run: joins ``address``, or starts (and stops) a local instance."""
        ray = import_ray()
        if ray.is_initialized():
            yield ray
            return
        if self.address is None:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a local instance reports nothing
            ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        else:
            ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        started_before = {thread.ident for thread in threading.enumerate()}
        try:
            yield ray
        except KeyboardInterrupt as interrupt:
            # The traceback's frames hold Ray Data's iterators: released now, while Ray still
            # runs, they close and their worker threads end (the traceback of a Ctrl-C is not
            # shown). Other errors keep theirs and are not waited for.
            interrupt.__traceback__ = None
            gc.collect()
            _wait_for_data_threads(started_before)
            raise
        else:
            _wait_for_data_threads(started_before)
        finally:
            ray.shutdown()

    @contextlib.contextmanager
    def _quiet(self, ray: Any) -> Iterator[None]:
        """Turn off Ray Data's progress bars and INFO logs for the run (restored after)."""
        if not self.quiet:
            yield
            return
        ctx = ray.data.DataContext.get_current()
        saved = {k: getattr(ctx, k) for k in ("enable_progress_bars", "enable_operator_progress_bars")
                 if hasattr(ctx, k)}
        data_logger = logging.getLogger("ray.data")
        level = data_logger.level
        for key in saved:
            setattr(ctx, key, False)
        data_logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for key, value in saved.items():
                setattr(ctx, key, value)
            data_logger.setLevel(level)


def _wait_for_data_threads(started_before: set[int | None], timeout_s: float = 30.0) -> None:
    """Let the threads Ray Data started for this run end before Ray stops.

    A dataset iterator's threads (its executor, block prefetcher and batch workers) can be
    inside a Ray call when the iterator closes; one still there when ``ray.shutdown()`` runs
    makes Ray end the whole process ("the core worker has already been shutdown", exit
    status 1), which turned a Ctrl-C into a crash instead of a clean, resumable stop. A
    block prefetcher is stopped only at the end of a complete iteration (its ``__del__``
    never runs while its own thread holds it), so it is told to stop here.
    """
    deadline = time.monotonic() + timeout_s
    for thread in threading.enumerate():
        if thread.ident in started_before or thread is threading.current_thread():
            continue
        target = getattr(thread, "_target", None)  # a plain Thread(target=...): its function
        module = getattr(target, "__module__", None) or type(thread).__module__
        if not module.startswith("ray.data"):
            continue
        owner = getattr(target, "__self__", None)
        if type(owner).__name__.endswith("Prefetcher") and callable(getattr(owner, "stop", None)):
            owner.stop()
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            logger.warning("Ray Data thread %s still running as Ray stops", thread.name)


def _as_result(outcome: Outcome) -> Perception | BaseException:
    if isinstance(outcome, Failure):
        return RemotePipelineError(outcome.error_type, outcome.reason)
    return outcome.to_perception()


class RemotePipelineError(RuntimeError):
    """The chain failed on an image inside a Ray actor.

    Attributes:
        error_type: the original exception's type name (the report shows it, as the local
            engine shows the exception's own).
    """

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def _cause(error: BaseException, kinds: type[BaseException] | tuple[type[BaseException], ...]
           ) -> BaseException | None:
    """The first error of ``kinds`` in ``error``'s chain of causes (Ray wraps errors)."""
    seen: BaseException | None = error
    for _ in range(6):
        if seen is None or isinstance(seen, kinds):
            return seen
        seen = getattr(seen, "cause", None) or seen.__cause__
    return None


def _actor_died(ray: Any, error: BaseException) -> bool:
    """Whether a Ray actor's death is behind ``error`` (after its retries ran out)."""
    died = getattr(ray.exceptions, "ActorDiedError", None) or ray.exceptions.RayActorError
    return _cause(error, died) is not None


def _user_error(error: BaseException) -> BaseException | None:
    """A fatal setup error (model not available, ...) inside Ray's wrappers, if there is one."""
    return _cause(error, FATAL_ERRORS)
