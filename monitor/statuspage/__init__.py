"""The status page (``/status``, ``/api/v1/status``, badges): what a person outside sees.

- :mod:`~monitor.statuspage.options`: ``status_page:`` in the target file, and which targets
  each group shows (the one rule of membership);
- :mod:`~monitor.statuspage.windows`: what the page needs of maintenance windows (a Protocol);
- :mod:`~monitor.statuspage.model`: the page's model, a pure function of history, live states
  and windows (the banner rule, the day cells, the sparkline);
- :mod:`~monitor.statuspage.snapshot`: the history read from the store, kept between refreshes;
- :mod:`~monitor.statuspage.render`: HTML (Jinja2, autoescaped) and JSON of a model;
- :mod:`~monitor.statuspage.badges`: the SVG badges;
- :mod:`~monitor.statuspage.web`: the background refresh, the cached renderings, the handlers
  and the read-only second port.

Nothing here is imported by a command other than ``run`` (the config model only).
"""
