"""The configs/ tree (and odecli's Hydra plugins) ship inside the wheel, so a plain
`pip install .` finds them anywhere."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO

from odecli.paths import config_dir


def test_wheel_contains_every_config_file(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("odecli-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"odecli/configs/{p.relative_to(config_dir()).as_posix()}"
                for p in config_dir().rglob("*.yaml")}
    assert "odecli/configs/train.yaml" in expected
    assert expected <= names
    # Hydra instantiates launchers and sweepers only from the hydra_plugins namespace
    assert {"hydra_plugins/odecli_plugins/slurm_launcher.py",
            "hydra_plugins/odecli_plugins/continue_sweeper.py"} <= names
    assert "hydra_plugins/__init__.py" not in names  # a namespace shared with Hydra's plugins
    assert "odecli/dynamics/datasets/hare_lynx.csv" in names  # system=hare_lynx, offline
    assert {"odecli/cde/datasets/JapaneseVowels_TRAIN.ts.gz",  # odecli cde, offline
            "odecli/cde/datasets/JapaneseVowels_TEST.ts.gz",
            "odecli/cde/datasets/README.md"} <= names
    entry = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "odecli = odecli.cli:main" in entry


def test_help_and_list_do_not_import_torch():
    code = ("import sys; from odecli.cli import main; sys.argv=['odecli','list'];\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "assert 'hydra' not in sys.modules, 'hydra imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_every_module_imports():
    """Every module of the package and its Hydra plugins imports on this Python: what CI's
    other Pythons check first (a syntax or standard-library change shows here)."""
    import importlib
    import pkgutil

    import hydra_plugins.odecli_plugins as plugin
    import odecli

    names = [m.name for pkg in (odecli, plugin)
             for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
    assert len(names) > 80 and "odecli.cde.models" in names
    for name in names:
        importlib.import_module(name)


def _tree(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "train.yaml").write_text("quiet: false\n")
    return folder


def test_code_from_a_checkout_reads_that_checkout_s_configs(tmp_path, monkeypatch):
    # An editable install maps odecli.configs to the checkout it was made from; code imported
    # from a second checkout (a git worktree) must not run on the first one's configs.
    import importlib.machinery
    import importlib.util

    from odecli import paths

    first = _tree(tmp_path / "first" / "configs")
    spec = importlib.machinery.ModuleSpec("odecli.configs", None, is_package=True)
    spec.submodule_search_locations = [str(first)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec)
    second = tmp_path / "second"
    _tree(second / "configs")
    (second / "pyproject.toml").write_text('[project]\nname = "odecli"\n')
    monkeypatch.setattr(paths, "__file__", str(second / "odecli" / "paths.py"))
    assert paths.config_dir() == second / "configs"
    # installed: a stray configs/ beside the package (site-packages) is not a checkout
    site = tmp_path / "site-packages"
    _tree(site / "configs")
    monkeypatch.setattr(paths, "__file__", str(site / "odecli" / "paths.py"))
    assert paths.config_dir() == first
