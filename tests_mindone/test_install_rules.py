"""Two rules of install()/uninstall() pinned (issue 28).

- uninstall() restores a name only where install()'s value is still in place: a name the user
  rebound after install() keeps the user's value and is not reported as restored;
- install() compares the full mindone version with the tested releases: 0.5.1 is refused (a
  patch release can move where weight norm is bound), as are 0.5 and 0.5.0.1.
"""
import mindspore as ms
import pytest

import mindone
import mindone.utils
import mindone.utils.weight_norm as mindone_wn
from ms_weightnorm.integrations import mindone as integration


class UsersOwn:
    """A value the user binds after install()."""


def test_uninstall_leaves_names_the_user_rebound():
    integration.install()
    import mindone.transformers.models.encodec.modeling_encodec as encodec
    try:
        mindone.utils.WeightNorm = UsersOwn
        encodec.WeightNorm = UsersOwn
        restored = integration.uninstall()
        assert mindone.utils.WeightNorm is UsersOwn and encodec.WeightNorm is UsersOwn
        assert "mindone.utils.WeightNorm" not in restored
        assert "mindone.transformers.models.encodec.modeling_encodec.WeightNorm" not in restored
        # Names still holding install()'s value were restored, and reported.
        assert mindone_wn.WeightNorm is not integration.WeightNorm
        assert "mindone.utils.weight_norm.WeightNorm" in restored
    finally:
        mindone.utils.WeightNorm = mindone_wn.WeightNorm
        encodec.WeightNorm = mindone_wn.WeightNorm
        integration.install()
    assert mindone.utils.WeightNorm is integration.WeightNorm


@pytest.mark.parametrize("version", ["0.5.1", "0.5", "0.5.0.1", "0.5.0rc1"])
def test_only_the_full_tested_version_is_installed(monkeypatch, version):
    integration.uninstall()
    try:
        before = mindone_wn.WeightNorm
        monkeypatch.setattr(mindone, "__version__", version)
        with pytest.raises(RuntimeError) as info:
            integration.install()
        # The rule: the version as installed, against the tested list, and nothing changed.
        assert f"mindone {version} is not a tested release" in str(info.value), str(info.value)
        assert "(tested: 0.5.0)" in str(info.value) and "nothing was changed" in str(info.value)
        assert mindone_wn.WeightNorm is before and mindone.utils.WeightNorm is before
        assert not integration.is_installed() and not hasattr(ms.nn.utils, "weight_norm")
    finally:
        monkeypatch.undo()
        integration.install()
    assert integration.is_installed()
