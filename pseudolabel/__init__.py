"""pseudolabel: sparse disparity pseudo-labels from unlabeled stereo pairs.

Pipeline stages, one module each: :mod:`pseudolabel.sgm.cost`, :mod:`pseudolabel.sgm.aggregation`,
:mod:`pseudolabel.sgm.disparity`, :mod:`pseudolabel.sgm.refinement` (orchestrated by
:mod:`pseudolabel.sgm`), :mod:`pseudolabel.confidence.measures`, :mod:`pseudolabel.confidence.labels`,
:mod:`pseudolabel.io`, :mod:`pseudolabel.learn.losses`, :mod:`pseudolabel.learn.trainer`.

Importing this package (or the SGM / HDF5 modules) never imports torch.
"""

__version__ = "0.1.0"
