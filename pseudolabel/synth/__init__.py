"""Synthetic stereo pairs with exact ground truth in both views (a FlyingThings-style source domain).

- :mod:`pseudolabel.synth.config` -- :class:`SynthConfig` (every parameter) and :class:`SynthPair` (a result);
- :mod:`pseudolabel.synth.scene` -- rendering one pair (:func:`render_pair`) or an endless stream;
- :mod:`pseudolabel.synth.textures` -- textures and silhouettes of the layers;
- :mod:`pseudolabel.synth.photometry` -- the differences between the two cameras;
- :mod:`pseudolabel.synth.files` -- a rendered dataset on disk (resumable), and its preview picture.

numpy and OpenCV only.
"""

from pseudolabel.synth.config import SynthConfig, SynthPair
from pseudolabel.synth.files import read_synth_meta, read_synth_pair, write_synth_dataset, write_synth_preview
from pseudolabel.synth.scene import pair_seed, pair_stream, render_pair

__all__ = [
    "SynthConfig",
    "SynthPair",
    "pair_seed",
    "pair_stream",
    "read_synth_meta",
    "read_synth_pair",
    "render_pair",
    "write_synth_dataset",
    "write_synth_preview",
]
