"""The ``pseudolabel`` command line (installed as :mod:`pseudolabel.cli`)."""
