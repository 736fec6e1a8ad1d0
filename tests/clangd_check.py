"""Runs `clangd --check` on every source file of the build's compile
database and fails if clangd reports an error in any of them: a newcomer's
editor must understand the tree after a plain configure.

    clangd_check.py --build BUILD_DIR [--jobs N]
"""

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys


def check(clangd, build, path):
    # --check-lines=1: the diagnostics of the whole file, and the editor
    # features (hover, refactorings) tried on line 1 only, not on every
    # token (minutes per file, and clangd 14 fails some refactorings on
    # correct code).
    out = subprocess.run([clangd, "--check=" + path, "--check-lines=1",
                          "--compile-commands-dir=" + build],
                         capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    ok = out.returncode == 0 \
        and re.search(r"All checks completed, 0 errors", text) is not None
    # clangd logs every diagnostic, warnings too, as "E[...]": only errors
    # count, as clangd counts them.
    shown = [line for line in text.splitlines() if line.startswith("E[")]
    return path, ok, shown or text.splitlines()[-3:]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build", required=True)
    p.add_argument("--jobs", type=int, default=2)
    opts = p.parse_args()
    clangd = shutil.which("clangd")
    if clangd is None:
        print("FAIL: clangd is not installed (cmake/deps.sh installs it)")
        return 1
    db = os.path.join(opts.build, "compile_commands.json")
    with open(db) as f:
        files = sorted({entry["file"] for entry in json.load(f)})
    if not files:
        print("FAIL: %s lists no source file" % db)
        return 1
    failed = 0
    with concurrent.futures.ThreadPoolExecutor(opts.jobs) as pool:
        for path, ok, detail in pool.map(
                lambda f: check(clangd, opts.build, f), files):
            if not ok:
                failed += 1
                print("FAIL %s:\n  %s" % (path, "\n  ".join(detail)))
    print("%d of %d source files checked clean by clangd"
          % (len(files) - failed, len(files)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
