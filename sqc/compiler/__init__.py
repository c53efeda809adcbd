"""The compiler: the pass base and its context, the pipeline (grammar, recipes, pass manager), the
registry of passes, targets and formats, pass instrumentation, and the allocation analyses."""
