"""The front end: reading model files without running them (``loading``, ``pt2``) and capturing a model
into the IR (``trace`` with torch.fx, ``capture`` with torch.export)."""
