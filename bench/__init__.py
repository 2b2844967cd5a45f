"""The ingestion benchmark: `make bench` or `python -m bench.run`."""
