"""An example sqc plugin, installed by the test suite to exercise entry-point discovery end to end.

It offers one pass, ``clip`` (:class:`sqc_plugin_example.clip.Clip`), through the ``sqc.passes``
entry-point group declared in this package's ``pyproject.toml``. Importing the package itself is
cheap: the registry imports ``sqc_plugin_example.clip`` only when the pass is used or listed.
"""
