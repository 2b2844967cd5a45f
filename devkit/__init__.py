"""What serves only the demo, the tests and the benchmark: kept out of the
installed package."""
