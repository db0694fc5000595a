"""install(): where it binds, idempotence, exact reversal, refusal and its override."""
import importlib
import os
import subprocess
import sys
import types

import pytest

from mindtorch import nn

from ms_weightnorm.integrations import _mindtorch as ours
from ms_weightnorm.integrations import mindnlp as integration

OLD_API = importlib.import_module("mindtorch.nn.utils.weight_norm")
PARAMETRIZATIONS = importlib.import_module("mindtorch.nn.utils.parametrizations")
ORIGINALS = {ours.MINDTORCH_PARAMETRIZATION: ours.WeightNormParametrization,
             ours.MINDTORCH_WEIGHT_NORM: ours.WeightNorm,
             ours.MINDTORCH_REMOVE_WEIGHT_NORM: ours.remove_weight_norm}
EXPECTED = ["mindtorch.nn.utils.WeightNorm", "mindtorch.nn.utils.parametrizations._WeightNorm",
            "mindtorch.nn.utils.remove_weight_norm", "mindtorch.nn.utils.weight_norm.WeightNorm",
            "mindtorch.nn.utils.weight_norm.remove_weight_norm"]


def _bindings(value):
    return sorted(f"{name}.{key}" for name, mod in list(sys.modules.items())
                  if isinstance(getattr(mod, "__dict__", None), dict) and not name.startswith("ms_weightnorm")
                  for key, v in list(vars(mod).items()) if v is value)


def _all_bindings():
    return {id(obj): _bindings(obj) for pair in ORIGINALS.items() for obj in pair}


def test_install_replaces_every_binding_and_is_idempotent():
    assert integration.is_installed()
    changed = integration.install()
    assert [c for c in EXPECTED if c not in changed] == []
    # Nothing of mindnlp's is left bound anywhere; ours is bound exactly where it was.
    for old in ORIGINALS:
        assert _bindings(old) == []
    assert sorted(sum((_bindings(new) for new in ORIGINALS.values()), [])) == sorted(changed)
    before = _all_bindings()
    assert integration.install() == changed  # a second call changes nothing
    assert integration.install() == changed
    assert _all_bindings() == before


def test_uninstall_restores_the_originals_exactly():
    changed = integration.install()
    installed = _all_bindings()
    # A module that imported mindtorch's class by name before install() (as transformers' model
    # modules import functions from torch.nn.utils) is re-bound too.
    fake = types.ModuleType("fake_user_module")
    fake.WN = ours.MINDTORCH_WEIGHT_NORM
    integration.uninstall()
    sys.modules["fake_user_module"] = fake
    try:
        assert "fake_user_module.WN" in integration.install()
        assert fake.WN is ours.WeightNorm
        restored = integration.uninstall()
        assert not integration.is_installed() and integration.uninstall() == []
        assert sorted(restored) == sorted(changed + ["fake_user_module.WN"])
        assert fake.WN is ours.MINDTORCH_WEIGHT_NORM
        assert OLD_API.WeightNorm is ours.MINDTORCH_WEIGHT_NORM
        assert OLD_API.remove_weight_norm is ours.MINDTORCH_REMOVE_WEIGHT_NORM
        assert PARAMETRIZATIONS._WeightNorm is ours.MINDTORCH_PARAMETRIZATION
        assert nn.utils.WeightNorm is ours.MINDTORCH_WEIGHT_NORM
        assert nn.utils.remove_weight_norm is ours.MINDTORCH_REMOVE_WEIGHT_NORM
        for new in ORIGINALS.values():
            assert _bindings(new) == []
        # After uninstall, mindtorch's own weight norm is back: the zero g gradient included.
        m = nn.utils.weight_norm(nn.Linear(4, 3))
        assert "weight" in dict(m.named_parameters())
    finally:
        del sys.modules["fake_user_module"]
        integration.install()
    assert _all_bindings() == installed


def test_uninstall_leaves_names_rebound_after_install():
    integration.install()
    sentinel = object()
    OLD_API.remove_weight_norm = sentinel  # someone else's choice, made after install()
    try:
        restored = integration.uninstall()
        assert OLD_API.remove_weight_norm is sentinel
        assert "mindtorch.nn.utils.weight_norm.remove_weight_norm" not in restored
        assert nn.utils.remove_weight_norm is ours.MINDTORCH_REMOVE_WEIGHT_NORM  # the others are restored
    finally:
        OLD_API.remove_weight_norm = ours.MINDTORCH_REMOVE_WEIGHT_NORM  # as it was before install()
        integration.install()
    assert OLD_API.remove_weight_norm is ours.remove_weight_norm


def test_untested_version_is_refused_before_anything_changes(monkeypatch):
    integration.uninstall()
    try:
        monkeypatch.setattr(integration, "mindnlp_version", lambda: "0.6.0")
        with pytest.raises(RuntimeError, match=r"mindnlp 0\.6\.0 is not a tested release \(tested: 0\.5\.0, "
                                               r"0\.5\.1\); nothing was changed.*allow_untested=True"):
            integration.install()
        assert not integration.is_installed()
        assert OLD_API.WeightNorm is ours.MINDTORCH_WEIGHT_NORM
        assert PARAMETRIZATIONS._WeightNorm is ours.MINDTORCH_PARAMETRIZATION
        # The explicit override installs all the same.
        assert sorted(integration.install(allow_untested=True)) == sorted(EXPECTED)
        assert OLD_API.WeightNorm is ours.WeightNorm
    finally:
        monkeypatch.undo()
        integration.uninstall()
        integration.install()


def test_version_comes_from_the_distribution_metadata():
    import mindnlp
    assert mindnlp.__version__ == "0.5.0rc2"  # what 0.5.0 and 0.5.1 both say
    assert integration.mindnlp_version() == "0.5.1"


def test_models_built_meanwhile_stay_valid_after_uninstall():
    integration.install()
    old = nn.utils.weight_norm(nn.Linear(4, 3))
    new = nn.utils.parametrizations.weight_norm(nn.Linear(4, 3))
    integration.uninstall()
    try:
        # mindtorch's own remove_weight_norm recognises the hook (a subclass of its class).
        nn.utils.remove_weight_norm(old)
        assert sorted(n for n, _ in old.named_parameters()) == ["bias", "weight"]
        nn.utils.parametrize.remove_parametrizations(new, "weight")
        assert sorted(n for n, _ in new.named_parameters()) == ["bias", "weight"]
    finally:
        integration.install()


def test_hooks_made_before_install_are_removed_by_the_new_remove_weight_norm():
    integration.uninstall()
    try:
        m = nn.utils.weight_norm(nn.Linear(4, 3))  # mindtorch's hook, its extra "weight" Parameter
    finally:
        integration.install()
    nn.utils.remove_weight_norm(m)
    assert sorted(n for n, _ in m.named_parameters()) == ["bias", "weight"]
    with pytest.raises(ValueError, match="weight_norm of 'weight' not found in Linear"):
        nn.utils.remove_weight_norm(m)


def test_two_hooks_on_one_parameter_are_refused():
    m = nn.utils.weight_norm(nn.Linear(4, 3))
    with pytest.raises(RuntimeError, match="Cannot register two weight_norm hooks on the same parameter weight"):
        nn.utils.weight_norm(m)


def test_importing_ms_weightnorm_never_imports_mindnlp():
    code = ("import sys, ms_weightnorm, ms_weightnorm.integrations, ms_weightnorm.integrations.mindnlp\n"
            "bad = [m for m in ('mindnlp', 'mindtorch', 'transformers', 'torch') if m in sys.modules]\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_install_before_import_mindnlp_is_refused():
    code = ("from ms_weightnorm.integrations import mindnlp as i\n"
            "try:\n    i.install()\nexcept RuntimeError as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert "call it after `import mindnlp` (which sets up mindtorch); nothing was changed" in proc.stdout, proc.stderr[-2000:]
