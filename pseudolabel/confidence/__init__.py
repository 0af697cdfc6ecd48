"""Stage 3: how far each proxy disparity can be trusted, and the sparse labels it selects.

- :mod:`pseudolabel.confidence.measures` -- the registry of conventional measures (``lrc``, ``apkr``, ...),
  each a function of the SGM cost features;
- :mod:`pseudolabel.confidence.targets` -- training targets of a network: from ground truth, "wild"
  (the agreement of conventional measures, no ground truth), or the votes of independent matchers and the
  wild labels (``wild-agree`` / ``wild-soft``, no ground truth);
- :mod:`pseudolabel.confidence.teachers` -- those independent matchers (OpenCV StereoSGBM / StereoBM, SGM
  with another cost);
- :mod:`pseudolabel.confidence.training` -- training a CCNN (imports torch);
- :mod:`pseudolabel.confidence.checkpoints` -- its checkpoints and the scorer that runs one (imports torch);
- :mod:`pseudolabel.confidence.from_proxies` -- training and calibrating on whole proxies files (imports
  torch; ``confidence train`` is its :func:`~pseudolabel.confidence.from_proxies.train_confidence_from_proxies`);
- :mod:`pseudolabel.confidence.calibration` -- calibration maps (isotonic, temperature, isotonic-pair: the
  isotonic map moved by how hard each pair is) and the expected calibration error;
- :mod:`pseudolabel.confidence.images` -- the image channels of networks that read the image (image,
  photometric error, texture along the rows);
- :mod:`pseudolabel.confidence.sparsification` -- sparsification curves and their area (AUC);
- :mod:`pseudolabel.confidence.labels` -- the proxy disparity where ``confidence > tau``;
- :mod:`pseudolabel.confidence.scoring` -- scoring whole proxies files (``confidence score``);
- :mod:`pseudolabel.confidence.labelling` -- labelling whole proxies files (``labels``);
- :mod:`pseudolabel.confidence.evaluation` -- evaluating measures of whole proxies files against ground
  truth (``confidence eval``);
- :mod:`pseudolabel.confidence.files` -- the steps those whole-file calls share.

Importing this package does not import torch; :mod:`~pseudolabel.confidence.training`,
:mod:`~pseudolabel.confidence.checkpoints` and :mod:`~pseudolabel.confidence.from_proxies` do.
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
