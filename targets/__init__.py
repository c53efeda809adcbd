"""Targets that lower a compressed model: PyTorch, ONNX, the integer simulator, C and Vitis HLS."""
