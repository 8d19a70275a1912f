"""asv benchmarks for deleverage (configured by asv.conf.json at the repository root)."""
