"""Stage 3: how far each proxy disparity can be trusted, and the sparse labels it selects.

- :mod:`pseudolabel.confidence.measures` -- the registry of conventional measures (``lrc``, ``apkr``, ...),
  each a function of the SGM cost features;
- :mod:`pseudolabel.confidence.training` -- learning a CCNN (with ground truth, or "wild" without it) and
  scoring with it (imports torch);
- :mod:`pseudolabel.confidence.sparsification` -- sparsification curves and their area (AUC);
- :mod:`pseudolabel.confidence.labels` -- the proxy disparity where ``confidence > tau``;
- :mod:`pseudolabel.confidence.evaluation` -- scoring and labelling whole proxies files, and evaluating
  measures against ground truth (what the ``confidence`` and ``labels`` commands call).

Importing this package does not import torch; :mod:`pseudolabel.confidence.training` does.
"""

from pseudolabel.confidence.labels import label_density, label_statistics, threshold_labels
from pseudolabel.confidence.measures import MEASURES, compute_measure, compute_measures, measure_names, register_measure

__all__ = [
    "MEASURES",
    "compute_measure",
    "compute_measures",
    "label_density",
    "label_statistics",
    "measure_names",
    "register_measure",
    "threshold_labels",
]
