"""`c360:bench`: the benchmark, the synthetic data set it runs on, and the floors it is measured against."""
