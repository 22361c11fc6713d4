"""Read-only views of what mirrormount made: the propagation graph (graph.py), the Prometheus
metrics (metrics.py) and the systemd unit (unit.py). Each module is pure: it takes parsed
mount tables, guest reports or paths and returns text or frozen records; the CLI (cli/graph.py,
cli/metrics.py, cli/unit.py) does the reading.
"""
