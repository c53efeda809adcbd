"""The IR, the ground every other layer stands on: the tensor records and the model (``records``), the
op vocabulary and the open ATen set (``ops``), the naming rule every reader and target shares
(``names``), and the IR's stable text form (``text``). It imports nothing of sqc but ``sqc.errors``."""
