"""The application: the Python API (``api``), inspection, and the command line (``cli``)."""
