"""Torch networks and shipped weights (installed as :mod:`pseudolabel.models`).

Importing this package imports torch; the SGM and HDF5 code never imports it.
"""
