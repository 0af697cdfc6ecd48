"""pseudolabel: sparse disparity pseudo-labels from unlabeled stereo pairs.

Pipeline stages, one module each: :mod:`pseudolabel.cost`, :mod:`pseudolabel.aggregation`,
:mod:`pseudolabel.disparity`, :mod:`pseudolabel.refinement` (orchestrated by
:mod:`pseudolabel.sgm`), :mod:`pseudolabel.confidence`, :mod:`pseudolabel.labels`,
:mod:`pseudolabel.io`, :mod:`pseudolabel.losses`, :mod:`pseudolabel.training`.

Importing this package (or the SGM / HDF5 modules) never imports torch.
"""

__version__ = "0.1.0"
