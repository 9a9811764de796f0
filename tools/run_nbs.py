"""Execute notebooks and keep their outputs, so a chapter teaches on GitHub, on the docs site and in Colab without being run.

    python tools/run_nbs.py                      # every notebook under nbs/, in place
    python tools/run_nbs.py nbs/02_metrics.ipynb # some notebooks, in place
    python tools/run_nbs.py nbs/06_viz.ipynb --out /tmp/x   # executed copies in /tmp/x, sources untouched

Cells run as `nbdev_test` runs them (execnb's shell, in the notebook's folder), except that outputs are saved:
cells flagged with one of settings.ini's `tst_flags` (`#| slow`, `#| gpu`, `#| network`) or `#| eval: false` are not
run and keep their code and whatever output they had. PNG figures keep the size they were drawn at (the inline
backend's 100 dpi; the docs page scales them to its column); only one wider than `--max-width` pixels is downscaled, and
each is palette-quantized when that is smaller. `nbdev_clean` then strips metadata and execution counts (settings.ini has
`clear_all = False`, so outputs stay). A notebook that raises is not written.

What teaches stays, the noise of running goes (`QUIET_ENV`, `quiet_outputs`): progress bars (`Loading weights`, `Map:`,
tqdm), the trainer's raw log dicts and empty displays are left out of the saved outputs. A person running the notebook
still sees the bars and logs; chapters show what the logs say as a table or a curve (`trainer.state.log_history`).
"""
import argparse, base64, contextlib, io, multiprocessing, os, re, sys, time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from fastcore.xtras import working_directory
from nbdev.config import get_config
from nbdev.process import extract_directives

ROOT = Path(__file__).resolve().parent.parent
MAX_NB_BYTES = 1_500_000
MAX_WIDTH = 1200  # px: library figures are at most 11.5 in (1150 px at 100 dpi, tests/test_figures.py); larger ones are downscaled
# progress bars off while a notebook executes (transformers' `Loading weights`, the hub's downloads, datasets' `Map:`,
# tqdm's defaults), advisory warnings of transformers too; a person running the notebook sees them all
QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1",
             "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
_PROGRESS = re.compile(r"\d+%\|.*\|.*(?:it/s|s/it|\?it)|^\s*(?:Loading weights|Map|Filter|Generating \w+ split)\b.*:\s+\d+%")
_TRAINER_LOG = re.compile(r"^\{'[\w/.-]+': .*'(?:epoch|train_runtime)': .*\}$")  # a Trainer's printed log dict


def skip_flags() -> set[str]:
    "settings.ini's `tst_flags`: cells flagged with one of them are not run (here or by nbdev_test)."
    return set(get_config().get("tst_flags", "").split())


def skipped(cell, flags=None) -> bool:
    "Is `cell` left unexecuted: not code, the export call, `#| eval: false`, or flagged with a skip flag."
    if cell.cell_type != "code": return True
    if "nbdev_export" + "(" in cell.source: return True
    direc = extract_directives(cell, remove=False)
    if direc.get("eval:", [""])[0].lower() == "false": return True
    return bool((skip_flags() if flags is None else flags) & set(direc))


def shrink_png(data: bytes, max_width: int = MAX_WIDTH) -> bytes:
    "A PNG at most `max_width` wide, re-encoded (palette-quantized when that is smaller); never larger than needed."
    from PIL import Image
    img = Image.open(io.BytesIO(data))
    resized = img.width > max_width
    if resized: img = img.resize((max_width, round(img.height * max_width / img.width)), Image.LANCZOS)
    rgba = img.convert("RGBA")
    encoded = [] if resized else [data]
    for im in (rgba, rgba.quantize(256, method=Image.Quantize.FASTOCTREE)):
        buf = io.BytesIO(); im.save(buf, format="PNG", optimize=True); encoded.append(buf.getvalue())
    return min(encoded, key=len)


def shrink_outputs(nb, max_width: int = MAX_WIDTH) -> int:
    "Downscale every PNG output of `nb` in place; returns how many there are."
    n = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            png = out.get("data", {}).get("image/png")
            if not png: continue
            small = shrink_png(base64.b64decode(png if isinstance(png, str) else "".join(png)), max_width)
            out["data"]["image/png"] = base64.b64encode(small).decode()
            out.get("metadata", {}).pop("image/png", None)  # sizes of the original (retina) rendering
            n += 1
    return n


def noise(line: str) -> bool:
    "Is `line` (of a stream output) a progress bar or a trainer's raw log dict?"
    last = line.rsplit("\r", 1)[-1].strip()  # a progress bar redraws itself after carriage returns
    return bool(_PROGRESS.search(last) or _TRAINER_LOG.match(last) or ("\r" in line and not last))


def quiet_outputs(nb) -> int:
    """Drop progress bars and trainer log dicts from the stream outputs of `nb` (an emptied stream goes), and displays with
    no data (a widget's view where no front end renders it); returns the stream lines dropped."""
    dropped = 0
    for cell in nb.cells:
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text = out["text"] if isinstance(out["text"], str) else "".join(out["text"])
                lines = text.split("\n")
                keep = [l for l in lines if not noise(l)]
                dropped += len(lines) - len(keep)
                out["text"] = "\n".join(keep)
                if not out["text"].strip(): continue
            elif out.get("output_type") in ("display_data", "execute_result") and not out.get("data"): continue  # shows nothing
            kept.append(out)
        if cell.cell_type == "code": cell.outputs = kept
    return dropped


@contextlib.contextmanager
def quiet_env():
    "`QUIET_ENV` set while executing (restored after: tests call `execute` in their own process)."
    old = {k: os.environ.get(k) for k in QUIET_ENV}
    os.environ.update(QUIET_ENV)
    try: yield
    finally:
        for k, v in old.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v


def execute(src: Path, dest: Path | None = None, max_width: int = MAX_WIDTH, flags: set[str] | None = None) -> dict:
    "Run `src` in its own folder (skipping `skipped` cells) and write it with its outputs to `dest` (default: in place)."
    src, dest = Path(src).resolve(), Path(dest or src).resolve()
    nb = read_nb(src)
    flags = skip_flags() if flags is None else flags
    for cell in nb.cells:  # execnb keeps a cell's old outputs when its new run prints nothing: start from none
        if cell.cell_type == "code": cell.outputs, cell.execution_count = [], None
    t0 = time.time()
    shell = CaptureShell(src, mpl_format="png")  # not execnb's default 'retina' (twice the pixels); matplotlib's rc as nbdev_test has it
    with working_directory(src.parent), quiet_env():
        try: shell.run_all(nb, exc_stop=True, preproc=lambda c: skipped(c, flags))
        except Exception: raise RuntimeError(f"{src.name} raised while executing:\n{shell.prettytb(fname=src)}") from None
    noisy = quiet_outputs(nb)
    figures = shrink_outputs(nb, max_width)
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_nb(nb, dest)
    clean(dest)
    info = dict(notebook=str(src.relative_to(ROOT) if src.is_relative_to(ROOT) else src), seconds=round(time.time() - t0, 1),
                figures=figures, kbytes=round(dest.stat().st_size / 1e3), noise_lines_dropped=noisy)
    if dest.stat().st_size > MAX_NB_BYTES: info["warning"] = f"over {MAX_NB_BYTES / 1e6} MB: lower --max-width or plot less"
    return info


def clean(path: Path):
    "nbdev_clean on one notebook, with settings.ini's options (metadata and execution counts go, outputs stay)."
    from nbdev.clean import nbdev_clean
    with working_directory(ROOT): nbdev_clean(fname=str(path))


def notebooks(paths: list[str]) -> list[Path]:
    "The notebooks named, or every notebook under nbs/ (tutorials included) in reading order."
    if paths: return [Path(p).resolve() for p in paths]
    nbs = get_config().nbs_path
    return sorted(p for p in nbs.rglob("*.ipynb") if not any(part.startswith((".", "_")) for part in p.relative_to(nbs).parts))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("notebooks", nargs="*", help="notebooks to run (default: all under nbs/)")
    p.add_argument("--out", default=None, help="write executed copies into this folder instead of in place")
    p.add_argument("--max-width", type=int, default=MAX_WIDTH, help="PNG figures wider than this (pixels) are downscaled")
    p.add_argument("--n-workers", type=int, default=1, help="notebooks run at once")
    a = p.parse_args(argv)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    jobs = [(nb, Path(a.out) / nb.name if a.out else nb) for nb in notebooks(a.notebooks)]
    failed = []
    # one fresh process per notebook, as nbdev_test runs them: no state (registrations, seeds, figures) leaks between them
    with ProcessPoolExecutor(a.n_workers, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:
        futures = {pool.submit(execute, nb, dest, a.max_width): nb for nb, dest in jobs}
        for f in as_completed(futures):
            try: print(f.result(), flush=True)
            except RuntimeError as e: print(e, file=sys.stderr, flush=True); failed.append(futures[f].name)
    if failed: raise SystemExit(f"not written (they raised): {', '.join(sorted(failed))}")


if __name__ == "__main__": main()
