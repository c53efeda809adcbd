"""Reference models and demo data for sqc.

These are the two MNIST networks from Deep Compression (Han et al., 2016), kept here so that tests,
benchmarks and documentation all compress the *same* small, well-understood models and can compare
their numbers with the paper. The trained checkpoints and a 1,000-image test subset sit next to this
module; see ``README.md`` in this directory for how they were produced.
"""
