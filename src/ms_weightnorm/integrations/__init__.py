"""Opt-in integrations with other packages. The core library never imports them.

- :mod:`ms_weightnorm.integrations.mindspore_api`: ``mindspore.nn.utils.weight_norm`` and
  friends (PyTorch's signatures) where MindSpore lacks them.
- :mod:`ms_weightnorm.integrations.mindone`: makes mindone's model ports use this library's
  weight norm (``install()`` / ``uninstall()``). Imports mindone only when called.
- :mod:`ms_weightnorm.integrations.mindnlp`: fixes the weight norm of mindnlp's mindtorch
  (``install()`` / ``uninstall()``). Imports mindnlp only when called.
"""
