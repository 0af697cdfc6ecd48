"""Stage 1: semi-global matching (Hirschmueller, TPAMI 2008) on rectified stereo pairs.

One module per step of the matcher, each a set of Numba kernels with a NumPy reference in the tests:

- :mod:`pseudolabel.sgm.params` -- :class:`SGMParams` (every parameter) and :class:`SGMResult`;
- :mod:`pseudolabel.sgm.cost` -- census / AD / Birchfield-Tomasi cost volume, ``uint8`` (H, W, D);
- :mod:`pseudolabel.sgm.aggregation` -- path-wise aggregation along 4, 8 or 16 directions, ``uint16``;
- :mod:`pseudolabel.sgm.disparity` -- winner-takes-all in both views, uniqueness and left-right check;
- :mod:`pseudolabel.sgm.refinement` -- sub-pixel refinement, median, speckle removal, hole filling;
- :mod:`pseudolabel.sgm.matcher` -- :class:`Matcher` and :func:`match`, which run them in order;
- :mod:`pseudolabel.sgm.batch` -- a whole dataset into one proxies file (:func:`run_sgm`).

Only numpy, numba and OpenCV are imported here: never torch.
"""

from pseudolabel.sgm.matcher import Matcher, match, release_buffers
from pseudolabel.sgm.params import SGMParams, SGMResult

__all__ = ["Matcher", "SGMParams", "SGMResult", "match", "release_buffers"]
