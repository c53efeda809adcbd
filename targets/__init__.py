"""Targets that lower a compressed model: PyTorch (built in here), C and HLS later."""
