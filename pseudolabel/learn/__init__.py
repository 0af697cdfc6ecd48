"""Stage 4: training and adapting deep stereo networks (torch).

- :mod:`pseudolabel.learn.samples` -- crops, augmentation and the datasets (synthetic, labelled on disk);
- :mod:`pseudolabel.learn.adaptation_data` -- the adaptation dataset read from a proxies file;
- :mod:`pseudolabel.learn.losses` -- the registry of loss terms (guided, reconstruction, smoothness, ...);
- :mod:`pseudolabel.learn.tau` -- fixed, learnable and predicted thresholds;
- :mod:`pseudolabel.learn.adaptation` -- the adaptation objective and :func:`adapt`;
- :mod:`pseudolabel.learn.trainer` -- the step loop (:class:`Trainer`), with
  :mod:`pseudolabel.learn.distributed` (DDP) and :mod:`pseudolabel.learn.precision` (mixed precision);
- :mod:`pseudolabel.learn.checkpoint` -- checkpoints of disparity networks;
- :mod:`pseudolabel.learn.predict` -- inference and evaluation on image pairs.
"""
