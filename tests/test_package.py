"""The installable package: ``pip install .`` into a fresh virtual environment, then, from another folder, the
command line's layer table and the served app (strings and style found as package data); and the README's test
command is the one ``.ci/run`` runs.

The build works on a copy of ``pyproject.toml``, ``requirements.txt`` and ``resnet/`` only (nothing else of the
repository can leak into the package, and no ``build/`` or ``*.egg-info`` lands in the checkout); torch, gradio and
the rest come from the running interpreter's environment (``--system-site-packages``, and a ``.pth`` file when
it is itself a virtual environment), so nothing is downloaded.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, free_port, wait_for_app

CJK = re.compile(r"[\u4e00-\u9fff]")


def run(argv: list, **kwargs) -> subprocess.CompletedProcess:
    out = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=180, **kwargs)
    assert out.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def see_the_running_environment(python: Path) -> None:
    """Let the inner venv import what this interpreter imports. ``--system-site-packages`` reaches the base
    Python's site-packages only; run from inside a virtual environment (torch installed there), the inner venv would
    lack torch, so a ``.pth`` file adds this environment's site-packages after the inner venv's own (as site dirs:
    their own ``.pth`` files count, as the system's do)."""
    if sys.prefix == sys.base_prefix:
        return
    inner = run([python, "-c", "import site; print(site.getsitepackages()[0])"]).stdout.strip()
    lines = [f"import site; site.addsitedir({folder!r})" for folder in site.getsitepackages()]
    (Path(inner) / "outer_environment.pth").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv with the package installed from a wheel built from a copy of the sources; yields
    (python, its bin folder, the installed package folder, a folder far from the checkout, a clean environment)."""
    root = tmp_path_factory.mktemp("package")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "requirements.txt"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "resnet", src / "resnet", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", root / "wheels", src])
    wheel = next((root / "wheels").glob("resnet_lab-*.whl"))
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv])
    python = venv / "bin" / "python"
    see_the_running_environment(python)
    # The system's pip, run by the venv's python, installs into the venv (even where the checkout is installed
    # editable in the system's site-packages: that copy is outside the venv and stays untouched).
    run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--force-reinstall", wheel])
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "RESNET_"))}
    # Offline and without weights, the app would prepare the built-in source in the background (tests/test_prepare.py):
    # minutes of a core these tests do not need.
    env.update(GRADIO_ANALYTICS_ENABLED="False", RESNET_ALLOW_DOWNLOAD="0", RESNET_PREPARE_SOURCE="0",
               TORCH_HOME=str(root / "torch_home"),
               GRADIO_TEMP_DIR=str(root / "gradio"), MPLBACKEND="Agg")
    where = run([python, "-c", "import resnet; print(resnet.__file__)"], cwd=elsewhere, env=env).stdout.strip()
    package = Path(where).resolve().parent
    assert package.is_relative_to(venv.resolve()), f"resnet was imported from {where}, not from the venv"
    yield python, venv / "bin", package, elsewhere, env


@pytest.fixture(scope="module")
def installed_app(installed):
    """``resnet-lab`` (the installed entry point, the same as ``python app.py``) on a free port, started from another
    folder; yields its URL once ``GET /`` answers 200."""
    _, bin_dir, _, elsewhere, env = installed
    port = free_port()
    env = dict(env, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1")
    log_path = elsewhere / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(bin_dir / "resnet-lab")], cwd=elsewhere, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_app(url, proc, log_path, timeout=180)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


@pytest.mark.served
def test_the_installed_command_line_prints_resnet50s_table_from_another_folder(installed):
    python, _, _, elsewhere, env = installed
    out = run([python, "-m", "resnet", "table", "resnet50"], cwd=elsewhere, env=env).stdout
    # ResNet-50 (torchvision's v1.5) in total: torchvision's parameter count, its multiply-adds at 224 px.
    assert "25,557,032" in out and "4,089,184,256" in out, out


@pytest.mark.served
def test_the_installed_app_serves_its_page_from_another_folder(installed_app):
    with urllib.request.urlopen(installed_app, timeout=30) as r:
        assert r.status == 200 and "<html" in r.read().decode("utf-8", "replace").lower()


@pytest.mark.served
def test_the_installed_app_has_its_strings_and_style(installed, installed_app):
    _, _, package, _, _ = installed
    assert list((package / "assets" / "i18n").glob("*.json")), "no string tables in the installed package"
    with urllib.request.urlopen(f"{installed_app}config", timeout=30) as r:
        config = json.load(r)
    strings = config["i18n_translations"]
    assert any("ResNet" in text for text in strings["en"].values()), "the page has no English strings"
    assert any(CJK.search(text) for text in strings["zh-CN"].values()), "the page has no Chinese strings"
    assert set(strings["en"]) == set(strings["zh-CN"])
    style = (package / "assets" / "style.css").read_text(encoding="utf-8").strip()
    assert style and style in (config.get("css") or ""), "the page lacks the package's style.css"


@pytest.mark.unit
def test_ci_runs_the_readme_s_test_command():
    """README's second command (install, then test) is what ``.ci/run`` runs, flags such as ``-q`` aside."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.search(r"```bash\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    test_command = next(c for c in commands if "pytest" in c)
    ci_lines = [line.split() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    for part in test_command.split("&&"):
        words = [w for w in part.split() if w != "-q"]
        assert any([w for w in line if w != "-q"][:len(words)] == words for line in ci_lines), \
            f".ci/run does not run `{part.strip()}` (README's test command)"
