"""Built-in passes of sqc, one per file, named after the pass."""
