"""CCNN: confidence from a 9x9 disparity patch (Poggi and Mattoccia, BMVC 2016).

Architecture (``filters=64``, ``fc_filters=100`` as in the paper): four 3x3 convolutions without
padding, each followed by ReLU (a 9x9 patch shrinks to 1x1), two 1x1 convolutions ("fully connected"
layers) with ReLU, and a 1x1 convolution to one logit; ``sigmoid(logit)`` is the confidence. The
input is the disparity normalised by the searched range, ``(d - min_disp) / (max_disp - min_disp)``.

Being fully convolutional, the network scores a whole image in one pass: the disparity map is padded
by 4 pixels by reflection, so that the output has the input's size and each output pixel equals the
network applied to that pixel's 9x9 (reflected) patch.

Importing this module imports torch; the rest of the pipeline only imports it through
:mod:`pseudolabel.confidence.training` and :mod:`pseudolabel.confidence.checkpoints`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pseudolabel.confidence.calibration import invalid_share as pair_invalid_share
from pseudolabel.errors import InputError
from pseudolabel.models import devices

if TYPE_CHECKING:
    from pseudolabel.confidence.calibration import Calibration
    from pseudolabel.confidence.measures import RangeParams

#: Side of the receptive field (the input patch), pixels.
PATCH_SIZE: int = 9
#: Reflection padding that keeps the output at the input's size, pixels.
PADDING: int = PATCH_SIZE // 2


class ConfidenceNetwork(nn.Module):
    """What every registered confidence network has: a fully convolutional map from (B, C, H, W) input
    channels (:attr:`inputs`, see :func:`build_inputs`) to (B, 1, H - 2p, W - 2p) logits without padding,
    where ``p`` = :attr:`padding` (the receptive field is ``2p + 1`` pixels square)."""

    architecture: str = ""
    padding: int = PADDING
    inputs: tuple[str, ...] = ("disparity",)

    def config(self) -> dict[str, Any]:
        """Constructor arguments (stored in checkpoints)."""
        raise NotImplementedError

    def forward_full(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits of every pixel: reflection padding by :attr:`padding`, then ``forward``; (B, 1, H, W)."""
        padded = F.pad(inputs, (self.padding, self.padding, self.padding, self.padding), mode="reflect")
        return self(padded)

    def input_convolutions(self) -> list[tuple[nn.Conv2d, list[int]]]:
        """The convolutions that read the input channels, each with the indices of the channels it reads, in order."""
        raise NotImplementedError

    def foldable_input_convolutions(self) -> list[tuple[nn.Conv2d, list[int]]]:
        """:meth:`input_convolutions`, checked to absorb a per-channel map (unpadded, with a bias).

        Raises:
            InputError: the architecture cannot (checked before a training on standardised inputs starts).
        """
        try:
            convolutions = self.input_convolutions()
        except NotImplementedError:
            convolutions = []
        if not convolutions or any(tuple(conv.padding) != (0, 0) or conv.bias is None for conv, _ in convolutions):
            raise InputError(
                f"{self.architecture or type(self).__name__}: its input convolutions cannot absorb standardised inputs; train without --standardise"
            )
        return convolutions

    @torch.no_grad()
    def fold_input_affine(self, shift: np.ndarray, scale: np.ndarray) -> None:
        """Change the weights so that the network on inputs ``x`` gives what it gave on ``(x - shift) * scale``.

        Exact (up to float rounding): the convolutions that read the inputs have no padding, so every input pixel
        they read went through the same per-channel map. Training on standardised inputs, then folding the
        standardisation in, leaves a network of the same architecture that reads the raw inputs.

        Args:
            shift, scale: (C,) per input channel (C = ``len(self.inputs)``).
        """
        shift64, scale64 = np.asarray(shift, np.float64), np.asarray(scale, np.float64)
        for convolution, channels in self.foldable_input_convolutions():
            weight = convolution.weight.double()
            channel_scale = torch.from_numpy(scale64[channels]).to(weight)
            channel_shift = torch.from_numpy(shift64[channels]).to(weight)
            scaled = weight * channel_scale[None, :, None, None]
            bias = convolution.bias
            assert bias is not None  # checked by foldable_input_convolutions
            bias.copy_(bias.double() - (scaled * channel_shift[None, :, None, None]).sum(dim=(1, 2, 3)))
            convolution.weight.copy_(scaled)


class CCNN(ConfidenceNetwork):
    """Confidence CNN on a normalised disparity map (and optionally conventional measures).

    Args:
        filters: channels of the four 3x3 convolutions (64 in the paper).
        fc_filters: channels of the two 1x1 convolutions (100 in the paper).
        inputs: input channels: ``"disparity"`` (the normalised disparity, the paper's only input)
            followed by names of conventional measures of :mod:`pseudolabel.confidence.measures` (maps in
            [0, 1]) stacked as extra channels -- an extension in the spirit of the feature-fusion
            variants of CCNN; ``("disparity",)`` is the paper's network.
    """

    architecture: str = "ccnn"

    def __init__(self, filters: int = 64, fc_filters: int = 100, inputs: Sequence[str] = ("disparity",)) -> None:
        super().__init__()
        self.filters = int(filters)
        self.fc_filters = int(fc_filters)
        self.inputs = tuple(str(name) for name in inputs)
        if not self.inputs or self.inputs[0] != "disparity":
            raise InputError(f"CCNN inputs must start with 'disparity', got {list(self.inputs)}")
        layers: list[nn.Module] = []
        channels = len(self.inputs)
        for _ in range(4):
            layers += [nn.Conv2d(channels, self.filters, kernel_size=3), nn.ReLU(inplace=True)]
            channels = self.filters
        layers += [
            nn.Conv2d(self.filters, self.fc_filters, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(self.fc_filters, self.fc_filters, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(self.fc_filters, 1, kernel_size=1),
        ]
        self.layers = nn.Sequential(*layers)

    def config(self) -> dict[str, Any]:
        """Constructor arguments (stored in checkpoints)."""
        return {"filters": self.filters, "fc_filters": self.fc_filters, "inputs": list(self.inputs)}

    def input_convolutions(self) -> list[tuple[nn.Conv2d, list[int]]]:
        """The first convolution reads every input channel."""
        first = self.layers[0]
        assert isinstance(first, nn.Conv2d)
        return [(first, list(range(len(self.inputs))))]

    def forward(self, normalised_disparity: torch.Tensor) -> torch.Tensor:
        """Logits without padding.

        Args:
            normalised_disparity: (B, C, H, W) ``float`` disparity divided by the range (see module doc),
                then the extra input channels of :attr:`inputs`.

        Returns:
            (B, 1, H - 8, W - 8) logits; ``sigmoid`` gives the confidence of each 9x9 patch's centre.
        """
        return self.layers(normalised_disparity)


#: Confidence networks by architecture name (the name stored in checkpoints); modules of
#: :data:`CONFIDENCE_NETWORK_MODULES` add theirs when imported.
CONFIDENCE_NETWORKS: dict[str, type[ConfidenceNetwork]] = {"ccnn": CCNN}
#: Modules that register further confidence networks (imported by :func:`available_confidence_networks`).
CONFIDENCE_NETWORK_MODULES: tuple[str, ...] = ("pseudolabel.models.lfn",)


def available_confidence_networks() -> list[str]:
    """Names of every registered confidence network (importing the modules that register them)."""
    import importlib

    for module in CONFIDENCE_NETWORK_MODULES:
        importlib.import_module(module)
    return sorted(CONFIDENCE_NETWORKS)


def build_confidence_network(architecture: str, **kwargs: Any) -> ConfidenceNetwork:
    """Build a registered confidence network from its checkpoint name and constructor arguments."""
    known = available_confidence_networks()
    if architecture not in CONFIDENCE_NETWORKS:
        raise InputError(f"unknown confidence network {architecture!r}; known: {', '.join(known)}")
    return CONFIDENCE_NETWORKS[architecture](**kwargs)


def normalise_disparity(disparity: np.ndarray, min_disp: float, max_disp: float) -> np.ndarray:
    """``(d - min_disp) / (max_disp - min_disp)`` as ``float32`` (H, W) (non-finite values become 0)."""
    span = float(max_disp - min_disp)
    if span <= 0:
        raise InputError(f"disparity range [{min_disp}, {max_disp}) is empty")
    normalised = (np.asarray(disparity, dtype=np.float32) - np.float32(min_disp)) / np.float32(span)
    return np.nan_to_num(normalised, nan=0.0, posinf=1.0, neginf=0.0).astype(np.float32)


def build_inputs(
    features: Mapping[str, np.ndarray], params: RangeParams, inputs: Sequence[str], measures: Mapping[str, np.ndarray] | None = None
) -> np.ndarray:
    """Stack the network's input channels.

    Args:
        features: the pair's stored arrays (HDF5 names), holding ``disparity`` and what the measures need.
        params: the pair's SGM parameters (``min_disp``, ``max_disp`` used for the normalisation).
        inputs: channel names (``"disparity"`` then measure names, or the image channels ``image`` and
            ``photometric`` of :mod:`pseudolabel.confidence.images`, which need the features
            ``left_gray`` / ``right_gray``).
        measures: measure maps of this pair already computed (by name, as
            :func:`pseudolabel.confidence.measures.compute_measures` returns them): reused, also by the measures
            that read them (``dlrc`` reads ``lrc``).

    Returns:
        ``float32`` (C, H, W).
    """
    from pseudolabel.confidence.images import IMAGE_CHANNELS, image_channel
    from pseudolabel.confidence.measures import compute_measures

    computed = dict(measures or {})
    channels = [normalise_disparity(features["disparity"], params.min_disp, params.max_disp)]
    for name in inputs[1:]:
        if name in IMAGE_CHANNELS:
            channels.append(image_channel(name, features))
        else:
            channels.append(compute_measures([name], features, params, computed)[name])
    return np.stack(channels).astype(np.float32)


class ConfidenceScorer:
    """Whole-image inference with a trained confidence network.

    Args:
        model: the network (any device; moved to ``device``).
        device: ``torch.device`` to run on.
        precision: ``float32``, ``bfloat16`` or ``auto`` (``bfloat16`` on CPUs with native support,
            which halves the time; the ranking of pixels barely changes, ``float32`` elsewhere).
        tile_rows: output rows per pass (bounds memory on large images); 0 = automatic: the whole image
            in one pass up to about 2 million pixels (fastest), bands of that size beyond.
        calibration: applied to the confidence (not to the logits) by :meth:`confidence_from_features` and
            :meth:`confidence` (a :class:`pseudolabel.confidence.calibration.Calibration`; one that reads the
            pair, ``isotonic-pair``, takes the pair's invalid share from the feature ``valid``); None = raw.

    A :class:`CCNN` keeps its first convolution in ``float32`` (it sees the raw disparity) and runs the
    rest in ``precision``; other networks run in ``channels_last`` under ``torch.autocast`` to
    ``precision`` (LFN: 2-3x faster in bfloat16 on a CPU with native support, logits within about
    1e-2 of ``float32``).
    """

    def __init__(
        self,
        model: ConfidenceNetwork,
        device: torch.device | str = "cpu",
        precision: str = "auto",
        tile_rows: int = 0,
        calibration: Calibration | None = None,
    ) -> None:
        self.device = torch.device(device)
        if precision == "auto":
            precision = "bfloat16" if (self.device.type == "cpu" and devices.bfloat16_supported()) or self.device.type == "cuda" else "float32"
        if precision not in ("float32", "bfloat16"):
            raise InputError(f"precision must be auto, float32 or bfloat16, not {precision!r}")
        self.precision = precision
        self.dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
        self.tile_rows = int(tile_rows)
        self.inputs = model.inputs
        self.padding = int(model.padding)
        self.calibration = calibration
        model = copy.deepcopy(model).to(self.device).eval()
        self.autocast = not isinstance(model, CCNN) and precision != "float32"
        if not isinstance(model, CCNN):
            self.head: nn.Module = nn.Identity()
            self.tail: nn.Module = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            return
        # The first convolution sees the raw normalised disparity: it stays in float32 (bfloat16 would
        # quantise the input to about 1/256 of the range); the rest runs in ``self.dtype``. (torch's stubs
        # lack the ``memory_format`` argument that ``Module.to`` accepts.)
        self.head = model.layers[:2].to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.tail = model.layers[2:].to(dtype=self.dtype, memory_format=torch.channels_last)  # type: ignore[call-overload]

    def logits(self, disparity: np.ndarray, min_disp: float, max_disp: float) -> np.ndarray:
        """Logits of every pixel: ``float32`` (H, W) for a ``float32`` (H, W) disparity in pixels (disparity-only networks)."""
        if self.inputs != ("disparity",):
            raise InputError(f"this network also needs {', '.join(self.inputs[1:])}; use logits_from_features")
        return self.logits_from_inputs(normalise_disparity(disparity, min_disp, max_disp)[None])

    def logits_from_features(
        self, features: Mapping[str, np.ndarray], params: RangeParams, measures: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Logits from a pair's stored arrays (see :func:`build_inputs`); ``float32`` (H, W)."""
        return self.logits_from_inputs(build_inputs(features, params, self.inputs, measures))

    def confidence_from_features(
        self, features: Mapping[str, np.ndarray], params: RangeParams, measures: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Confidence in [0, 1] from a pair's stored arrays; ``float32`` (H, W). A calibration that reads
        the pair needs ``features["valid"]`` (``bool`` (H, W), SGM's checks)."""
        invalid_share = None
        if self.calibration is not None and self.calibration.reads_pair:
            if "valid" not in features:
                raise InputError("this network's calibration (isotonic-pair) needs the pair's SGM validity mask 'valid'")
            invalid_share = pair_invalid_share(features["valid"])
        return self._calibrated(_sigmoid(self.logits_from_features(features, params, measures)), invalid_share)

    def _calibrated(self, confidence: np.ndarray, invalid_share: float | None = None) -> np.ndarray:
        return confidence if self.calibration is None else self.calibration.apply(confidence, invalid_share)

    def raw_confidence_from_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """``sigmoid`` of :meth:`logits_from_inputs`, never calibrated: ``float32`` (H, W) in [0, 1]."""
        return _sigmoid(self.logits_from_inputs(inputs))

    @torch.inference_mode()
    def logits_from_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """Logits of every pixel for ``float32`` (C, H, W) input channels (see :func:`build_inputs`)."""
        normalised = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))[None]
        pad = self.padding
        padded = F.pad(normalised, (pad, pad, pad, pad), mode="reflect")
        height = normalised.shape[-2]
        step = self.tile_rows if self.tile_rows > 0 else max(1, 2_000_000 // max(1, normalised.shape[-1]))
        outputs = []
        for start in range(0, height, step):
            stop = min(start + step, height)
            tile = padded[:, :, start : stop + 2 * pad].to(self.device)
            features = self.head(tile.contiguous(memory_format=torch.channels_last))
            if self.autocast:
                with torch.autocast(self.device.type, dtype=self.dtype):
                    outputs.append(self.tail(features).float().cpu())
            else:
                outputs.append(self.tail(features.to(self.dtype)).float().cpu())
        return torch.cat(outputs, dim=2)[0, 0].numpy().astype(np.float32)

    def confidence(self, disparity: np.ndarray, min_disp: float, max_disp: float, invalid_share: float | None = None) -> np.ndarray:
        """``sigmoid`` of :meth:`logits` (then the calibration; ``invalid_share``: the pair's share of pixels SGM's
        checks rejected, for a calibration that reads the pair): ``float32`` (H, W) in [0, 1], higher = more trustworthy."""
        return self._calibrated(_sigmoid(self.logits(disparity, min_disp, max_disp)), invalid_share)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))).astype(np.float32)
