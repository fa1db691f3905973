"""``make bench``: fan-out throughput, latency, loss and memory of ws4redis_channels
against the obvious designs and a floor, on this machine.

``python -m tests.bench --help`` lists the options; README.md beside this file
explains the method. Modules: ``client`` (the load client), ``servers`` (what
is compared), ``reference``/``reference_settings``/``group_bridge`` (the
reference designs), ``floor`` (the floor server), ``scenarios`` (what is
measured), ``measure`` (``/proc`` and Redis readings), ``profile`` (py-spy),
``report`` (table and JSON). Pytest collects nothing here.
"""
