"""Stage 3: how far each proxy disparity can be trusted, and the sparse labels it selects.

- :mod:`pseudolabel.confidence.measures` -- the registry of conventional measures (``lrc``, ``apkr``, ...),
  each a function of the SGM cost features;
- :mod:`pseudolabel.confidence.targets` -- training targets of a network: from ground truth, or "wild"
  (the agreement of conventional measures, no ground truth);
- :mod:`pseudolabel.confidence.training` -- learning a CCNN from proxies files and scoring with it
  (imports torch; ``confidence train`` is its :func:`~pseudolabel.confidence.training.train_confidence_from_proxies`);
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
