"""The runtime passes run on: data files and loaders, the evaluator and fine-tuner (``data``,
``loaders``, ``training``), devices, executors for sweeps, and progress notes."""
