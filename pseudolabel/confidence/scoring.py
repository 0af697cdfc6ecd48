"""``pseudolabel confidence score`` on a whole proxies file: :func:`score_proxies`.

It writes ``confidence/<name>`` for every selected pair, from the conventional measures of
:mod:`pseudolabel.confidence.measures` (:func:`parse_measures` reads their names) and a confidence
network (a checkpoint of :mod:`pseudolabel.confidence.checkpoints`, or :data:`SHIPPED_MODEL`). The file
is edited in place and crash-safely (:func:`pseudolabel.confidence.files.edit_in_batches`); a rerun
skips the datasets that are up to date.

Importing this module does not import torch; :func:`score_proxies` imports it when a network runs.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pseudolabel import __version__
from pseudolabel.cluster import connected
from pseudolabel.confidence.files import PairEdit, edit_in_batches, selected_keys, split_names
from pseudolabel.confidence.images import IMAGE_CHANNELS, pair_gray_images
from pseudolabel.confidence.measures import MEASURES, RangeParams, compute_measures
from pseudolabel.errors import InputError
from pseudolabel.outputs import check_editable_file
from pseudolabel.progress import Progress
from pseudolabel.store.names import key_to_name
from pseudolabel.store.proxies import ProxyFile, open_proxies
from pseudolabel.threads import apply_threads, tune_allocator

if TYPE_CHECKING:
    from pseudolabel.confidence.checkpoints import NetworkRecipe

#: ``measures`` of :func:`score_proxies` by default: none, because no later stage reads a conventional
#: measure unless told to (labels, adapt, show and the report read the network's ``confidence/ccnn``).
DEFAULT_MEASURES: str = "none"


#: ``model`` of :func:`score_proxies` that selects the CCNN shipped with the package.
SHIPPED_MODEL: str = "shipped"


def parse_measures(text: str | Sequence[str]) -> list[str]:
    """Conventional measures by name: ``"all"`` -> every registered one, ``"none"``/``""`` -> none, else a
    comma-separated list (or a sequence of names), each checked against :data:`MEASURES`."""
    if isinstance(text, str):
        if text.strip() == "all":
            return list(MEASURES)
        if text.strip() in ("none", ""):
            return []
        names = split_names(text)
    else:
        names = list(text)
    unknown = [name for name in names if name not in MEASURES]
    if unknown:
        raise InputError(f"--measures: unknown measure(s) {', '.join(unknown)}; choose from {', '.join(MEASURES)} or all/none")
    return names


@dataclass
class ScoreSummary:
    """What :func:`score_proxies` did: the scored ``keys``, the ``written`` dataset names (network first) and
    the requested measures left out as ``unavailable`` (name -> the datasets it needs that some pair lacks,
    e.g. the SGM costs of a file made by ``pseudolabel import``), and the network whose confidence was
    ``kept`` as ``sgm --store minimal`` stored it (its inputs are not in the file, its output is)."""

    keys: list[str]
    written: list[str]
    unavailable: dict[str, list[str]] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)


def _load_network(model: str | os.PathLike[str], name: str | None, device: str, precision: str) -> tuple[NetworkRecipe, str, dict[str, Any]]:
    """The network recipe, output name and dataset attributes of a checkpoint (or of the shipped CCNN)."""
    from pseudolabel.confidence import checkpoints

    shipped = isinstance(model, str) and model == SHIPPED_MODEL
    path = checkpoints.shipped_ccnn_path() if shipped else Path(model)
    if shipped and not path.is_file():
        raise InputError(f"the shipped CCNN {path} is missing; reinstall pseudolabel or pass --model")
    if not shipped and not path.is_file():
        from pseudolabel.learn.shipped import shipped_models, shipped_weights_folder

        names = shipped_models("confidence")
        if len(path.parts) == 1 and path.stem in names:
            path = shipped_weights_folder() / f"{path.stem}.pt"
        else:
            listed = f"; shipped confidence models: {', '.join(names)}" if names else ""
            raise InputError(
                f"--model {model}: no such confidence model; give a .pt written by `pseudolabel confidence train`{listed} "
                "(without --model: the shipped ccnn)"
            )
    if device != "auto":
        from pseudolabel.models.devices import resolve_device

        resolve_device(device)  # a one-line error now for a device this machine lacks
    recipe, _ = checkpoints.load_recipe(path, device, precision)
    network_name = name or (SHIPPED_NAME if shipped else path.stem)
    return recipe, network_name, _network_attrs(path, network_name, recipe)


def _network_attrs(path: Path, network_name: str, recipe: NetworkRecipe) -> dict[str, Any]:
    """The attributes of ``confidence/<network_name>`` written by the network of checkpoint ``path``."""
    from pseudolabel.confidence import checkpoints

    return {
        "measure": network_name,
        "calibrated": recipe.calibration.method if recipe.calibration is not None else "none",
        "source": "network",
        "model": str(path),
        "model_sha256": checkpoints.file_digest(path),
        "created_by": f"pseudolabel {__version__}",
    }


#: The dataset name of the shipped CCNN's confidence (``confidence/ccnn``).
SHIPPED_NAME: str = "ccnn"


@functools.cache
def _shipped_network() -> tuple[NetworkRecipe, dict[str, Any]]:
    """This process's shipped CCNN and the attributes of its dataset, loaded once (``sgm --store minimal``
    scores every pair it matches)."""
    from pseudolabel.confidence import checkpoints

    path = checkpoints.shipped_ccnn_path()
    recipe, _ = checkpoints.load_recipe(path)
    return recipe, _network_attrs(path, SHIPPED_NAME, recipe)


def score_matched_pair(arrays: Mapping[str, np.ndarray], params: RangeParams, threads: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The shipped CCNN's confidence of a pair just matched, and the attributes of ``confidence/ccnn``
    (those :func:`score_proxies` writes, so it finds the dataset up to date): what ``sgm --store minimal``
    keeps instead of the cost features the CCNN reads.

    Args:
        arrays: the pair's datasets as :func:`pseudolabel.store.layout.result_arrays` gives them (on-disk
            dtypes; read here as :meth:`~pseudolabel.store.proxies.ProxyFile.read` would).
        params: the SGM parameters of the pair.
        threads: torch CPU threads (the matcher's).

    Returns:
        ``float32`` (H, W) confidence in [0, 1] and the dataset's attributes. Imports torch.
    """
    import torch

    from pseudolabel.store.layout import RESULT_DATASETS

    recipe, attrs = _shipped_network()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    features = {name: np.asarray(arrays[name]).astype(RESULT_DATASETS[name]) for name in sorted(network_needs(recipe))}
    result = score_pair(recipe, ScorePayload(features, params, [], True, None))
    return result[NETWORK_RESULT], attrs


def network_needs(recipe: NetworkRecipe) -> set[str]:
    """The stored datasets a network reads: the disparity, what its input measures need, and ``valid``
    when its calibration reads the pair (``isotonic-pair``)."""
    needs = {"disparity"} | {need for m in recipe.inputs[1:] if m in MEASURES for need in MEASURES[m].needs}
    if recipe.calibration is not None and recipe.calibration.reads_pair:
        needs.add("valid")
    return needs


@dataclass
class ScorePayload:
    """What :func:`score_pair` needs of one pair: its stored arrays (``features``: the disparity, filled
    with 0 where it is NaN, and the SGM arrays the measures read; the gray images for a network that
    reads them), its SGM parameters, the conventional measures to compute, whether the network runs,
    and where the disparity is unknown ((H, W) ``bool``, or ``None``: nowhere)."""

    features: dict[str, np.ndarray]
    params: Any  # SGMParams (a RangeParams)
    measures: list[str]
    run_network: bool
    unknown: np.ndarray | None


def score_pair(recipe: NetworkRecipe | None, payload: ScorePayload) -> dict[str, np.ndarray]:
    """The confidences of one pair: ``{measure or "network": (H, W) float32 in [0, 1]}``, 0 where the
    disparity is unknown. Runs in this process or on a Dask worker (the same function)."""
    # the measures as computed (never zeroed) are shared by the stored measures and the network's inputs, so the
    # network's output does not depend on which measures are stored
    computed: dict[str, np.ndarray] = {}
    result = compute_measures(payload.measures, payload.features, payload.params, computed)
    if payload.unknown is not None:
        result = {name: np.where(payload.unknown, np.float32(0), confidence) for name, confidence in result.items()}
    if recipe is not None and payload.run_network:
        confidence = recipe.scorer().confidence_from_features(payload.features, payload.params, computed)
        if payload.unknown is not None:
            confidence[payload.unknown] = 0.0
        result[NETWORK_RESULT] = confidence
    return result


#: The key of the network's confidence in :func:`score_pair`'s result.
NETWORK_RESULT = "network"


def _up_to_date(proxies: ProxyFile, key: str, dataset: str, attrs: Mapping[str, Any]) -> bool:
    """``dataset`` of ``key`` is stored with every attribute of ``attrs``."""
    if not proxies.has(key, dataset):
        return False
    stored = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in proxies.h5["pairs"][key_to_name(key)][dataset].attrs.items()}
    return all(stored.get(k) == v for k, v in attrs.items())


def score_proxies(
    path: str | os.PathLike[str],
    measures: str | Sequence[str] = DEFAULT_MEASURES,
    model: str | os.PathLike[str] | None = SHIPPED_MODEL,
    name: str | None = None,
    keys: Sequence[str] = (),
    exclude: Sequence[str] = (),
    device: str = "auto",
    precision: str = "auto",
    threads: int | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    scheduler: str | None = None,
) -> ScoreSummary:
    """Write ``confidence/<name>`` ((H, W) in [0, 1], read back as ``float32``) for every selected pair of a proxies file.

    Args:
        path: proxies HDF5 file written by ``pseudolabel sgm``; edited crash-safely.
        measures: conventional measures to store (:func:`parse_measures`: ``"all"``, ``"none"`` (the default:
            only the network, whose input measures are computed in memory), ``"lrc,apkr"`` or names).
        model: confidence network checkpoint (``.pt``), :data:`SHIPPED_MODEL` (the CCNN shipped with the
            package, written as ``confidence/ccnn``) or ``None`` (no network, torch is not imported). A
            checkpoint with a calibration map writes the calibrated confidence (dataset attribute
            ``calibrated``: the method, ``"none"`` without); a network reading the image (``lfn``) reads
            the pair's images (pair attributes ``left``/``right``).
        name: dataset name of the network's output (default: the checkpoint's file stem).
        keys, exclude: globs choosing pairs (:func:`pseudolabel.selection.select_keys`).
        device, precision, threads: where and how the network runs
            (:class:`pseudolabel.models.ccnn.ConfidenceScorer`; ``threads`` sets torch's CPU threads).
        overwrite: recompute datasets already stored by the same measure / model.
        progress: told of each scored pair (phase ``"scoring"``).
        scheduler: the address of a running ``dask.distributed`` scheduler: the pairs are scored on its
            workers (the network travels to each worker once; each worker uses its own thread count and
            ``device``); this process reads and writes the file. ``None``: in this process.

    Returns:
        The scored keys, the written dataset names, and the requested measures left out because some
        selected pair lacks a dataset they need (a file of ``pseudolabel import`` has no SGM costs;
        :func:`unavailable_note` words them in one line; a network reading such measures is left out the
        same way, under its name). Where an imported ``disparity`` is NaN the
        confidences are 0.

    Raises:
        InputError: unknown measure, missing model, no pair selected, nothing (available) to score, name
            collision, an unreachable scheduler (before the file is touched).
    """
    check_editable_file(path, "--proxies")
    conventional = parse_measures(measures)
    chosen = selected_keys(path, keys, exclude)
    unavailable = _unavailable_measures(path, chosen, conventional)
    conventional = [m for m in conventional if m not in unavailable]
    recipe: NetworkRecipe | None = None
    network_name: str | None = None
    network_attrs: dict[str, Any] = {}
    kept: str | None = None
    if model is not None:
        recipe, network_name, network_attrs = _load_network(model, name, device, precision)
    elif name is not None:
        raise InputError("--name names the network's output; it needs a --model")
    if recipe is not None and network_name is not None:
        blocked = _unavailable_measures(path, chosen, [m for m in recipe.inputs[1:] if m in MEASURES])
        if blocked and _stored_by_sgm(path, chosen, network_name, network_attrs):
            kept = network_name  # `sgm --store minimal` scored every pair with this very network
            recipe, network_name = None, None
        elif blocked:  # its input measures cannot be computed: the network is unavailable like them
            unavailable[network_name] = sorted({need for needs in blocked.values() for need in needs})
            recipe, network_name = None, None
    if recipe is None and not conventional:
        if kept is not None:
            return ScoreSummary(chosen, [], unavailable, kept=[kept])
        if unavailable:
            raise InputError(f"{path}: nothing to score: {', '.join(unavailable)} need {_listing(unavailable)}, which the file lacks")
        raise InputError("nothing to score: --model none stores only the --measures asked for; pass --measures all (or a list)")
    if network_name is not None and network_name in conventional:
        raise InputError(f"--name {network_name} collides with the conventional measure of that name; choose another --name")
    conventional_attrs = {"source": "conventional", "created_by": f"pseudolabel {__version__}"}

    def prepare(proxies: ProxyFile, key: str) -> ScorePayload | None:
        todo = [m for m in conventional if overwrite or not _up_to_date(proxies, key, f"confidence/{m}", {"measure": m, **conventional_attrs})]
        run_network = recipe is not None and (overwrite or not _up_to_date(proxies, key, f"confidence/{network_name}", network_attrs))
        if not todo and not run_network:
            return None
        needed = sorted({need for m in todo for need in MEASURES[m].needs} | (network_needs(recipe) if recipe is not None and run_network else set()))
        features = proxies.read(key, needed) if needed else {}
        # an imported disparity is NaN where its matcher gave none: score a filled copy, confidence 0 there
        unknown = ~np.isfinite(features["disparity"]) if "disparity" in features else None
        if unknown is not None and unknown.any():
            features["disparity"] = np.where(unknown, 0.0, features["disparity"]).astype(np.float32)
        else:
            unknown = None
        if run_network and recipe is not None and any(m in IMAGE_CHANNELS for m in recipe.inputs):
            features.update(pair_gray_images(path, proxies.pair_attrs(key), key))
        return ScorePayload(features, proxies.pair_params(key), todo, run_network, unknown)

    def store(proxies: ProxyFile, key: str, result: dict[str, np.ndarray]) -> None:
        for measure in conventional:
            if measure in result:
                proxies.write(key, f"confidence/{measure}", result[measure], attrs={"measure": measure, **conventional_attrs})
        if NETWORK_RESULT in result:
            proxies.write(key, f"confidence/{network_name}", result[NETWORK_RESULT], attrs=network_attrs)

    with connected(scheduler) as client:
        if client is None:
            apply_threads(threads)
            tune_allocator()
        edit_in_batches(path, chosen, PairEdit(prepare, score_pair, store, (recipe,)), "scoring", progress, client=client)
    return ScoreSummary(chosen, ([network_name] if network_name else []) + conventional, unavailable, kept=[kept] if kept else [])


def _stored_by_sgm(path: str | os.PathLike[str], keys: Sequence[str], network_name: str, attrs: Mapping[str, Any]) -> bool:
    """Every pair of ``keys`` holds ``confidence/<network_name>`` from the same network file (its digest):
    what ``sgm --store minimal`` writes, the cost features the network reads being dropped."""
    wanted = {"source": "network", "model_sha256": attrs["model_sha256"]}
    with open_proxies(path, "r") as proxies:
        return all(_up_to_date(proxies, key, f"confidence/{network_name}", wanted) for key in keys)


def _unavailable_measures(path: str | os.PathLike[str], keys: Sequence[str], measures: Sequence[str]) -> dict[str, list[str]]:
    """The ``measures`` some pair of ``keys`` lacks a needed dataset for, with the datasets missing."""
    with open_proxies(path, "r") as proxies:
        present = set.intersection(*(set(proxies.datasets(key)) for key in keys)) if keys else set()
    return {m: [need for need in MEASURES[m].needs if need not in present] for m in measures if not set(MEASURES[m].needs) <= present}


def _listing(unavailable: Mapping[str, Sequence[str]]) -> str:
    """``cost_best, cost_mean`` -- the datasets that the ``unavailable`` measures miss, each once."""
    return ", ".join(sorted({need for needs in unavailable.values() for need in needs}))


def unavailable_note(path: str | os.PathLike[str], summary: ScoreSummary) -> str:
    """One line naming the measures :func:`score_proxies` left out and the datasets they need ("" when none)."""
    if not summary.unavailable:
        return ""
    return f"note: not available for {path} (it lacks {_listing(summary.unavailable)}, e.g. no SGM costs): {', '.join(summary.unavailable)}"
