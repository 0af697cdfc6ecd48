"""Pictures: one disparity colour map, one confidence heat map, one sparsification plot, the HTML report.

- :mod:`pseudolabel.viz.colour` -- colour maps, colour bars, error maps, label overlays, darkening;
- :mod:`pseudolabel.viz.plots` -- sparsification curves and reliability diagrams (SVG, and PNG through the same drawing);
- :mod:`pseudolabel.viz.report` -- the self-contained HTML report of ``demo`` and ``show``;
- :mod:`pseudolabel.viz.show` -- :func:`~pseudolabel.viz.show.render_proxies`, the pictures of a proxies file (``show``).
"""
