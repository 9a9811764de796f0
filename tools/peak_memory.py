"""Run a command and print the peak memory of its whole process tree when it ends (`make test` prints it last).

    python tools/peak_memory.py bash tools/test.sh

Every 0.5 s it sums the resident memory (RSS) of the command and all its descendants (psutil, which accelerate
already needs); at the end it prints the largest sum and the largest single process, and exits with the command's status.
"""
import subprocess, sys, threading

import psutil


def tree_rss(root: psutil.Process) -> tuple[int, int]:
    "(sum, max) of the RSS of `root` and its descendants, in bytes; processes that end while being read are skipped."
    sizes = []
    for p in [root, *root.children(recursive=True)]:
        try: sizes.append(p.memory_info().rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied): pass
    return sum(sizes), max(sizes, default=0)


def main(cmd: list[str]) -> int:
    proc = subprocess.Popen(cmd)
    peak, largest, done = 0, 0, threading.Event()
    def sample():
        nonlocal peak, largest
        root = psutil.Process(proc.pid)
        while not done.wait(0.5):
            try: total, one = tree_rss(root)
            except psutil.NoSuchProcess: return
            peak, largest = max(peak, total), max(largest, one)
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    code = proc.wait()
    done.set(); thread.join()
    print(f"\npeak memory of the test run: {peak / 2**30:.2f} GiB summed over its processes (largest single process "
          f"{largest / 2**30:.2f} GiB; sampled every 0.5 s; budget 8 GiB)")
    return code


if __name__ == "__main__":
    if len(sys.argv) < 2: sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
