"""The package as a user gets it: `python -m build` makes an sdist and a wheel; the wheel, installed into a fresh
venv, runs the console script from outside the repository, with its shipped model, recipes and configs."""
import os, shlex, subprocess, sys, tarfile, time, zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH = shlex.split(os.environ.get("TORCH") or "torch==2.13.0")  # the Makefile's; installed first, so `torch>=2.4` never pulls a CUDA build


def sh(*args, cwd=None, timeout=600, env=None):
    r = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, f"{' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    "sdist and wheel built from the working tree (the wheel from the sdist, as `python -m build` does)."
    out = tmp_path_factory.mktemp("dist")
    t0 = time.time()
    sh(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT, cwd=ROOT)
    print(f"build: {time.time() - t0:.1f} s")
    return out


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory):
    "A fresh venv with the CPU torch and the built wheel (and its dependencies from the package index or pip's cache)."
    v = tmp_path_factory.mktemp("venv")
    t0 = time.time()
    sh(sys.executable, "-m", "venv", v)
    pip = [v / "bin" / "python", "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check"]
    sh(*pip, *TORCH)
    sh(*pip, next(dist.glob("*.whl")))
    print(f"fresh venv with the wheel: {time.time() - t0:.1f} s")
    return v


def test_sdist_and_wheel_contents(dist):
    sdist, wheel = next(dist.glob("*.tar.gz")), next(dist.glob("*.whl"))
    names = tarfile.open(sdist).getnames()
    for f in ["settings.ini", "setup.py", "README.md", "pyproject.toml", "saliency_r1/recipes/tiny_cpu.yaml"]:
        assert any(n.endswith("/" + f) for n in names), f"sdist lacks {f}"
    files = zipfile.ZipFile(wheel).namelist()
    shipped = [p.relative_to(ROOT).as_posix() for d in ["checkpoints", "recipes", "configs"]
               for p in (ROOT / "saliency_r1" / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert shipped and not set(shipped) - set(files), f"wheel lacks {sorted(set(shipped) - set(files))}"
    assert not any("torch" in f for f in files if f.endswith(".so"))


def test_wheel_in_fresh_venv(venv, tmp_path):
    "From a folder outside the repository: --help, the recipe list, a small demo and one GRPO step of a recipe named without a path."
    exe = venv / "bin" / "saliency-r1"
    env = dict(os.environ, PATH=f"{venv / 'bin'}:{os.environ['PATH']}", PYTHONPATH="", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    run = lambda *a, **k: sh(exe, *a, cwd=tmp_path, env=env, **k)
    located = sh(venv / "bin" / "python", "-c", "import saliency_r1; print(saliency_r1.__file__)", cwd=tmp_path, env=env).stdout
    assert str(venv) in located and str(ROOT) not in located, located
    assert "train" in run("--help").stdout
    assert len(run("train", "--help").stdout.splitlines()) < 70
    assert "tiny_cpu" in run("train", "--list-recipes").stdout
    t0 = time.time()
    r = run("demo", "--n", "8", "--out", tmp_path / "demo")
    assert (tmp_path / "demo" / "metrics.json").exists() and (tmp_path / "demo" / "examples.png").exists(), r.stdout
    print(f"demo --n 8: {time.time() - t0:.1f} s")
    t0 = time.time()
    r = run("train", "--recipe", "tiny_cpu", "--max_steps", "1", "--per_device_train_batch_size", "8", "--num_generations", "8",
            "--max_completion_length", "16", "--n_train", "8", "--logging_steps", "1", "--save_steps", "1000",
            "--output_dir", tmp_path / "grpo")
    assert '"steps": 1' in r.stdout, r.stdout[-2000:]
    assert (tmp_path / "grpo" / "adapter_model.safetensors").exists()
    print(f"train --recipe tiny_cpu, one step: {time.time() - t0:.1f} s")
