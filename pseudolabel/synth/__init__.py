"""Synthetic stereo pairs with exact ground truth in both views (a FlyingThings-style source domain).

- :mod:`pseudolabel.synth.scene` -- rendering one pair (:func:`render_pair`) or an endless stream;
- :mod:`pseudolabel.synth.files` -- a rendered dataset on disk (resumable), and its preview picture.

numpy and OpenCV only.
"""

from pseudolabel.synth.files import read_synth_meta, read_synth_pair, write_synth_dataset
from pseudolabel.synth.scene import SynthConfig, SynthPair, pair_seed, pair_stream, render_pair

__all__ = [
    "SynthConfig",
    "SynthPair",
    "pair_seed",
    "pair_stream",
    "read_synth_meta",
    "read_synth_pair",
    "render_pair",
    "write_synth_dataset",
]
