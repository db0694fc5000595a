"""Weight normalization (Salimans & Kingma, 2016) for MindSpore.

``w = g * v / ||v||``: a layer's weight is trained as a magnitude ``g`` and a direction
``v``. The weight is computed from them inside the traced computation, so gradients reach
both in PyNative and GRAPH_MODE alike. Spectral normalization (``w = W / sigma(W)``, for GAN
discriminators) runs on the same mechanism.
"""
import importlib.util as _importlib_util

# numpy-only: the checkpoint reader's errors (and ``python -m ms_weightnorm.checkpoint``) work
# on a machine without MindSpore.
from ._checkpoint.errors import CheckpointError, UnsafeCheckpointError

_HAS_MINDSPORE = _importlib_util.find_spec("mindspore") is not None

if _HAS_MINDSPORE:
    from ._compat import check_version as _check_version

    # Warns once when the installed MindSpore is outside the tested window (see _compat).
    _check_version()

    from . import functional
    from .functional import norm_except_dim
    from .init import data_dependent_init
    from .layers import MeanOnlyBatchNorm
    from . import parametrize
    from .parametrize import (
        Parametrization,
        StaleTrainerWarning,
        cached,
        invalidate_compiled_graphs,
        is_parametrized,
        parametrizations_of,
        register_parametrization,
        remove_parametrization,
        remove_parametrizations,
        transfer_parametrizations_and_params,
        type_before_parametrizations,
    )
    # A module, as torch.nn.utils.parametrizations; calling it is the deprecated parametrizations_of.
    from . import parametrizations
    from .parametrizations import orthogonal
    from . import torch_io
    from .torch_io import (
        LoadResult,
        load_torch_state_dict,
        read_torch_checkpoint,
        save_torch_checkpoint,
        save_torch_state_dict,
        to_torch_state_dict,
    )
    from .spectral_norm import (
        SpectralNormParametrization,
        is_spectral_normed,
        remove_spectral_norm,
        spectral_norm,
        spectral_norms,
    )
    from .weight_norm import (
        WeightNorm,
        WeightNormParametrization,
        apply_weight_norm,
        is_weight_normed,
        remove_all_weight_norm,
        remove_weight_norm,
        torch_dim,
        weight_norm,
        weight_norms,
    )
else:
    def __getattr__(name: str):
        # PEP 562: everything but the checkpoint errors needs MindSpore; say so by name.
        if name in __all__ or name in ("torch_io", "functional", "weight_norm", "spectral_norm", "parametrize",
                                       "parametrizations", "init", "layers", "integrations", "distributed", "demo"):
            raise ImportError(
                f"ms_weightnorm.{name} needs MindSpore, which is not installed here "
                f"(pip install 'mindspore>=2.7,<3'). Without it, only the checkpoint tool "
                f"(python -m ms_weightnorm.checkpoint) and ms_weightnorm.CheckpointError are available.")
        raise AttributeError(f"module 'ms_weightnorm' has no attribute {name!r}")

__version__ = "0.2.0"

__all__ = [
    "functional",
    "norm_except_dim",
    "weight_norm",
    "remove_weight_norm",
    "apply_weight_norm",
    "remove_all_weight_norm",
    "is_weight_normed",
    "weight_norms",
    "torch_dim",
    "WeightNorm",
    "WeightNormParametrization",
    "spectral_norm",
    "remove_spectral_norm",
    "is_spectral_normed",
    "spectral_norms",
    "SpectralNormParametrization",
    "Parametrization",
    "register_parametrization",
    "remove_parametrization",
    "parametrizations",
    "parametrizations_of",
    "parametrize",
    "orthogonal",
    "remove_parametrizations",
    "type_before_parametrizations",
    "cached",
    "transfer_parametrizations_and_params",
    "is_parametrized",
    "invalidate_compiled_graphs",
    "StaleTrainerWarning",
    "data_dependent_init",
    "MeanOnlyBatchNorm",
    "torch_io",
    "load_torch_state_dict",
    "save_torch_state_dict",
    "to_torch_state_dict",
    "save_torch_checkpoint",
    "read_torch_checkpoint",
    "LoadResult",
    "CheckpointError",
    "UnsafeCheckpointError",
]
