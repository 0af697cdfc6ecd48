"""Inference and evaluation of stereo networks on image pairs.

:func:`predict_disparity` runs a network on one pair; :func:`predict_pairs` writes the predictions of
a dataset (``pseudolabel predict``); :func:`evaluate_pairs` scores a network or stored predictions
against ground truth (``pseudolabel eval``); :func:`evaluate_network` scores a network on pairs held
in memory (the adaptation benchmark). Metrics are those of :func:`pseudolabel.metrics.disparity_metrics`
(EPE in pixels, bad-k and D1 in percent), averaged by :func:`pseudolabel.metrics.average_metrics`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import torch

from pseudolabel.datasets import evaluation_mask, occlusion_free
from pseudolabel.errors import InputError
from pseudolabel.learn.samples import find_pairs, to_tensor_image
from pseudolabel.models.registry import StereoNetwork
from pseudolabel.outputs import check_output_folder
from pseudolabel.progress import Progress, or_silent

if TYPE_CHECKING:  # pragma: no cover
    from pseudolabel.datasets import PairInfo
    from pseudolabel.learn.adaptation_data import AdaptationPair
    from pseudolabel.learn.networks import NetworkSpec

#: A network to run: a checkpoint, a shipped model name, ``package.module:factory`` (or a
#: :class:`~pseudolabel.learn.networks.NetworkSpec` with its arguments), or a network already built.
ModelArgument: TypeAlias = "str | os.PathLike[str] | NetworkSpec | StereoNetwork"

__all__ = ["PredictSummary", "evaluate_network", "evaluate_pairs", "pair_mask", "predict_disparity", "predict_pairs", "safe_key"]


@torch.no_grad()
def predict_disparity(model: StereoNetwork, left: np.ndarray, right: np.ndarray, device: str | torch.device = "cpu") -> np.ndarray:
    """Left-view disparity of one pair with a trained network.

    Args:
        model: a network in eval mode (e.g. from :func:`pseudolabel.learn.checkpoint.load_model`).
        left, right: (H, W) or (H, W, 3) ``uint8``/``uint16`` RGB images of equal size.
        device: where ``model`` is.

    Returns:
        (H, W) ``float32`` disparity in pixels (>= 0).

    Raises:
        InputError: the two images differ in size.
    """
    if left.shape[:2] != right.shape[:2]:
        raise InputError(f"left {left.shape[:2]} and right {right.shape[:2]} images differ in size; give a rectified pair")
    device = torch.device(device)
    left_t = to_tensor_image(left)[None].to(device)
    right_t = to_tensor_image(right)[None].to(device)
    output = model(left_t, right_t)
    return output.disparity[0, 0].float().cpu().numpy()


def safe_key(key: str) -> str:
    """A pair key as a file name: runs of other characters than letters, digits, ``._-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(key)).strip("_") or "pair"


def _load(model: ModelArgument, device: str, threads: int | None, first: PairInfo) -> tuple[StereoNetwork, torch.device]:
    """The network (a checkpoint, a shipped name, a factory, or a network already built) in eval mode on
    ``device``; a network of the user's is first tried on the ``first`` pair (:func:`pseudolabel.learn.networks.probe_network`)."""
    from pseudolabel.io import read_image
    from pseudolabel.learn.networks import open_network, probe_network
    from pseudolabel.models.devices import resolve_device
    from pseudolabel.threads import apply_threads

    apply_threads(threads)
    torch_device = resolve_device(device)
    network = model if isinstance(model, StereoNetwork) else open_network(model).network
    network = network.to(torch_device).eval()
    probe_network(network, to_tensor_image(read_image(first.left)), to_tensor_image(read_image(first.right)))
    return network, torch_device


@dataclass
class PredictSummary:
    """What :func:`predict_pairs` did: pairs predicted now, pairs whose outputs existed, the output folder."""

    predicted: int
    skipped: int
    out: Path


@dataclass
class PlacedNetwork:
    """A stereo network as it travels to where it runs (this process, or each Dask worker once): the
    network and the ``--device`` to run it on, resolved and moved there on first use (:meth:`placed`)."""

    network: StereoNetwork
    device: str = "auto"
    _placed: tuple[StereoNetwork, torch.device] | None = field(default=None, repr=False, compare=False)

    def placed(self) -> tuple[StereoNetwork, torch.device]:
        """The network in eval mode on its resolved device, and that device."""
        if self._placed is None:
            from pseudolabel.models.devices import resolve_device

            torch_device = resolve_device(self.device)
            self._placed = (self.network.to(torch_device).eval(), torch_device)
        return self._placed

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_placed"] = None  # placed where it lands
        return state


def predict_pair_files(network: PlacedNetwork, left: str, right: str) -> np.ndarray:
    """The left disparity ((H, W) ``float32``, pixels) of the pair in image files ``left`` and ``right``, in
    this process or on a Dask worker (the same function; a worker reads the files at these paths)."""
    from pseudolabel.io import read_image

    model, torch_device = network.placed()
    return predict_disparity(model, read_image(left), read_image(right), torch_device)


def predict_pairs(
    model: ModelArgument,
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    device: str = "auto",
    threads: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
    scheduler: str | None = None,
) -> PredictSummary:
    """Predict the left disparity of every pair: ``KEY.pfm``, ``KEY.png`` (KITTI 16-bit, value/256) and ``KEY_color.png``.

    The colour picture uses the disparity colours of :mod:`pseudolabel.viz.colour` (turbo over
    :func:`~pseudolabel.viz.colour.display_range`), as ``pseudolabel show`` does. Pairs whose three files
    exist are skipped unless ``force``, so an interrupted run resumes; each file is written atomically.

    Args:
        model: checkpoint, shipped model name, ``package.module:factory`` (or a
            :class:`~pseudolabel.learn.networks.NetworkSpec`), or a network.
        inputs: dataset folders (KITTI, Middlebury, synth) or ``[LEFT_DIR, RIGHT_DIR]``.
        out: output folder (created).
        device: ``auto``, ``cpu`` or ``cuda``; ``threads``: torch CPU threads (``None``: torch's choice).
        force: recompute pairs whose outputs exist.
        progress: one unit per pair.
        scheduler: the address of a running ``dask.distributed`` scheduler: the pairs run on its workers
            (the network travels to each worker once and runs on its ``device``, with the worker's thread
            count; the workers read the images at the same paths, a shared filesystem; a network of your
            own must be importable there); this process writes the files. ``None``: in this process.

    Raises:
        InputError: no pairs, a missing model, images of different sizes, an unreachable scheduler or
            workers that do not see the images (before anything is written).
    """
    from pseudolabel.cluster import check_files_visible, connected, run_on_cluster, share
    from pseudolabel.io import write_disparity_png16, write_image, write_pfm
    from pseudolabel.threads import tune_allocator
    from pseudolabel.viz.colour import disparity_image, display_range

    out_dir = check_output_folder(out, "--out")
    pairs = find_pairs(inputs)
    tune_allocator()
    with connected(scheduler) as client:
        # on a cluster the network is checked here on the CPU and placed on each worker's device
        network, _ = _load(model, "cpu" if client is not None else device, threads, pairs[0])
        recipe = PlacedNetwork(network, device)
        todo = []
        for pair in pairs:
            key = safe_key(pair.key)
            targets = (out_dir / f"{key}.pfm", out_dir / f"{key}.png", out_dir / f"{key}_color.png")
            if force or not all(target.exists() for target in targets):
                todo.append((str(pair.key), (os.path.abspath(pair.left), os.path.abspath(pair.right)), targets))
        if client is not None:
            check_files_visible(client, [path for _, files, _ in todo for path in files])
        out_dir.mkdir(parents=True, exist_ok=True)
        progress = or_silent(progress)
        progress.start("predict", len(pairs), len(pairs) - len(todo))
        targets_of = {key: targets for key, _, targets in todo}

        def write(key: str, disparity: np.ndarray) -> None:
            pfm, png, colour = targets_of[key]
            write_pfm(pfm, disparity)
            write_disparity_png16(png, disparity)
            write_image(colour, disparity_image(disparity, *display_range(disparity)))
            progress.advance(1, key)

        try:
            if client is None:
                for key, (left, right), _ in todo:
                    write(key, predict_pair_files(recipe, left, right))
            else:
                jobs = ((key, files) for key, files, _ in todo)
                run_on_cluster(client, predict_pair_files, jobs, write, "predict", [share(client, recipe)])
        finally:
            progress.finish()
    return PredictSummary(predicted=len(todo), skipped=len(pairs) - len(todo), out=out_dir)


def pair_mask(pair: PairInfo, name: str | None) -> np.ndarray | None:
    """The evaluation mask ``name`` of a dataset pair, (H, W) ``bool`` (True = evaluate), or ``None``.

    ``nonocc`` (or ``noc``) falls back on the pair's ``occlusion`` mask (255 = occluded), and is
    ``None`` when the ground truth itself is non-occluded only (KITTI ``disp_noc``).

    Raises:
        InputError: the pair has no mask of that name.
    """
    if name is None:
        return None

    masks = getattr(pair, "masks", None) or {}
    if name in ("nonocc", "noc") and "nonocc" not in masks:
        if "occlusion" in masks:  # 255 = occluded
            return occlusion_free(masks["occlusion"])
        return None  # KITTI disp_noc and similar: the ground truth itself is non-occluded only
    if name not in masks:
        raise InputError(f"--mask {name}: pair {pair.key} has no such mask (it has: {', '.join(masks) or 'none'})")
    return evaluation_mask(masks[name])


def _stored_prediction(pred_dir: Path, pair: PairInfo) -> np.ndarray:
    """The prediction ``KEY.pfm`` (or ``KEY.png``) of a pair written by :func:`predict_pairs`."""
    from pseudolabel.io import read_disparity

    key = safe_key(pair.key)
    found = next((path for path in (pred_dir / f"{key}.pfm", pred_dir / f"{key}.png") if path.exists()), None)
    if found is None:
        raise InputError(f"--pred {pred_dir}: no {key}.pfm or {key}.png for pair {pair.key}; run `pseudolabel predict` on the same data")
    return read_disparity(found)


def evaluate_pairs(
    data: Sequence[str | os.PathLike[str]],
    *,
    model: ModelArgument | None = None,
    predictions: str | os.PathLike[str] | None = None,
    mask: str | None = None,
    device: str = "auto",
    threads: int | None = None,
    gt_dir: str | os.PathLike[str] | None = None,
    gt_scale: float | None = None,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Score a network, or the predictions stored by :func:`predict_pairs`, against the pairs' ground truth.

    Args:
        data: pairs with ground truth: dataset folders or ``[LEFT_DIR, RIGHT_DIR]``.
        model: checkpoint, shipped name, factory (:class:`~pseudolabel.learn.networks.NetworkSpec`) or
            network to run on the pairs; or
        predictions: folder of ``KEY.pfm`` (or ``KEY.png``) (exactly one of the two).
        mask: evaluate only inside this named mask of each pair (:func:`pair_mask`).
        device, threads: where and with how many CPU threads the network runs.
        gt_dir, gt_scale: ground truth of the pairs from a folder of ``<key>.pfm/.png`` (or a native
            dataset root), instead of what their dataset names (:func:`pseudolabel.learn.evaluate_files.ground_truth_of_keys`).

    Returns:
        ``(rows, mean)``: one row per pair (``key`` and :func:`pseudolabel.metrics.disparity_metrics`)
        and their mean (:func:`pseudolabel.metrics.average_metrics`).

    Raises:
        InputError: both or neither of ``model`` and ``predictions``, no pairs, a missing prediction,
            pairs without ground truth, a missing mask.
    """
    from pseudolabel.io import read_disparity, read_image
    from pseudolabel.metrics import average_metrics, disparity_metrics

    if (model is None) == (predictions is None):
        raise InputError("give either --model with --data, or --pred with --gt")
    pairs = find_pairs(data)
    if gt_dir is not None:
        from pseudolabel.learn.evaluate_files import ground_truth_of_keys

        lookup = ground_truth_of_keys(gt_dir, [str(pair.key) for pair in pairs], gt_scale)
        pairs = [
            replace(pair, gt_left=lookup[str(pair.key)][0], gt_scale=lookup[str(pair.key)][1]) if str(pair.key) in lookup else pair for pair in pairs
        ]
    if model is not None:
        network, torch_device = _load(model, device, threads, pairs[0])
        predicted = [predict_disparity(network, read_image(p.left), read_image(p.right), torch_device) for p in pairs]
    else:
        predicted = [_stored_prediction(Path(str(predictions)), pair) for pair in pairs]
    missing_gt = [p.key for p in pairs if getattr(p, "gt_left", None) is None]
    if missing_gt:
        raise InputError(f"{len(missing_gt)} pair(s) have no ground truth (e.g. {missing_gt[0]}); evaluation needs it")
    rows: list[dict[str, Any]] = []
    for pair, prediction in zip(pairs, predicted):
        if pair.gt_left is None:  # pragma: no cover - checked above
            raise InputError(f"pair {pair.key} has no ground truth")
        ground_truth = read_disparity(pair.gt_left, pair.gt_scale)
        rows.append({"key": str(pair.key), **disparity_metrics(prediction, ground_truth, pair_mask(pair, mask))})
    return rows, average_metrics(rows)


@torch.no_grad()
def evaluate_network(model: torch.nn.Module, pairs: Sequence[AdaptationPair], device: str | torch.device = "cpu") -> list[dict[str, Any]]:
    """Whole-image predictions of ``model`` on pairs held in memory, scored against their ground truth.

    Args:
        model: a stereo network (``model(left, right).disparity``), put in eval mode here.
        pairs: pairs read with ``with_ground_truth=True`` (:func:`pseudolabel.learn.adaptation_data.load_adaptation_pairs`;
            pairs without ground truth are skipped).
        device: where the network is.

    Returns:
        One row per pair: ``key`` and :func:`pseudolabel.metrics.disparity_metrics` inside the pair's
        evaluation mask when it has one.
    """
    from pseudolabel.metrics import disparity_metrics

    model.eval()
    rows: list[dict[str, Any]] = []
    for pair in pairs:
        if pair.ground_truth is None:
            continue
        prediction = predict_disparity(model, pair.left, pair.right, device)  # type: ignore[arg-type]  # any stereo module
        rows.append({"key": pair.key, **disparity_metrics(prediction, pair.ground_truth, pair.mask)})
    return rows
