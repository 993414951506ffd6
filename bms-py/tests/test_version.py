"""The package's version is the crate's: `bms.__version__` (CARGO_PKG_VERSION, compiled into
the native module) and the installed distribution's metadata (maturin's dynamic version)
both equal `version` in the workspace Cargo.toml."""

import os
import re
from importlib import metadata

import bms

from conftest import ROOT


def _workspace_version():
    with open(os.path.join(ROOT, "Cargo.toml"), encoding="utf-8") as f:
        text = f.read()
    try:
        import tomllib  # Python >= 3.11
    except ImportError:  # 3.9, 3.10: the [workspace.package] table by hand
        section = re.search(r"^\[workspace\.package\]\n(.*?)(?=^\[)", text, re.M | re.S)
        assert section, "no [workspace.package] in Cargo.toml"
        m = re.search(r'^version\s*=\s*"([^"]+)"', section.group(1), re.M)
        assert m, "no version in [workspace.package]"
        return m.group(1)
    return tomllib.loads(text)["workspace"]["package"]["version"]


def test_version_is_the_crate_version():
    assert bms.__version__ == _workspace_version()
    assert bms._bms.__version__ == bms.__version__


def test_installed_distribution_has_the_crate_version():
    assert metadata.version("bms-py") == bms.__version__


def test_imported_from_the_expected_install():
    """scripts/test-wheel.sh sets BMS_EXPECT_INSTALLED_UNDER to the fresh venv's
    site-packages: the tests must run on the installed wheel, not on the source tree."""
    where = os.environ.get("BMS_EXPECT_INSTALLED_UNDER")
    if not where:
        return
    where = os.path.realpath(where)
    for f in (bms.__file__, bms._bms.__file__):
        assert os.path.realpath(f).startswith(where + os.sep), (f, where)
