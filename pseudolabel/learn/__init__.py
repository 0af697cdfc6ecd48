"""Stage 4: training and adapting deep stereo networks (torch).

Library calls (what ``pseudolabel train``, ``adapt``, ``predict`` and ``eval`` run):

- :func:`pseudolabel.learn.supervised.train_network` -- supervised training;
- :func:`pseudolabel.learn.adapt.adapt_network` -- guided-confidence adaptation with proxy labels;
- :func:`pseudolabel.learn.predict.predict_pairs`, :func:`~pseudolabel.learn.predict.evaluate_pairs`,
  :func:`~pseudolabel.learn.predict.predict_disparity` -- inference and evaluation.

Building blocks:

- :mod:`pseudolabel.learn.run` -- :class:`~pseudolabel.learn.run.RunOptions` (how a run executes),
  the trainer's configuration and result (no torch import);
- :mod:`pseudolabel.learn.trainer` -- the step loop (:class:`~pseudolabel.learn.trainer.Trainer`), with
  :mod:`pseudolabel.learn.distributed` (DDP) and :mod:`pseudolabel.learn.precision` (mixed precision);
- :mod:`pseudolabel.learn.samples` -- crops, augmentation and the datasets (synthetic, labelled on disk);
- :mod:`pseudolabel.learn.adaptation_data` -- the adaptation dataset read from a proxies file;
- :mod:`pseudolabel.learn.losses` -- the losses against labels and the registry of loss terms, with
  :mod:`pseudolabel.learn.photometric` (losses from the images) and :mod:`pseudolabel.learn.masked`;
- :mod:`pseudolabel.learn.tau` -- fixed, learnable and predicted thresholds;
- :mod:`pseudolabel.learn.adaptation` -- the adaptation objective;
- :mod:`pseudolabel.learn.checkpoint` -- checkpoints of disparity networks;
- :mod:`pseudolabel.learn.networks` -- :func:`~pseudolabel.learn.networks.open_network`, which turns a
  ``--model`` (checkpoint, shipped name, or ``package.module:factory`` of a network of the user's,
  :mod:`pseudolabel.models.external`) into a network.
"""
