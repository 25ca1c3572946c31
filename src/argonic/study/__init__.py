"""The SONIC scaling study.

- ``latency_model``: the paper's Eq. 1-5, their fit to a measured module-time-vs-clients
  curve (``fit_module_time``), and the same system by mean value analysis;
- ``driver``: `argonic study` (N client processes released together against one server,
  per-module times, /metrics scraping, CSV, summary, plots), from argonic.settings' ``StudySettings`` (its
  options), ``workload`` (each event measured once in the parent), ``phase`` (one N: the
  client processes, started and stopped on argonic.procs) and ``summary`` (aggregates,
  Table 3, the fits and the printed report);
- ``client``: one client process (real or emulated client CPU);
- ``netem``: a TCP delay/bandwidth proxy for wide-area conditions;
- ``scrape``: Prometheus text parsing and polling;
- ``plots``: Figures 6 and 7; ``sizing``: servers needed and event time for a farm.
"""
