#!/usr/bin/env python3
"""Checks that the docs name only files the repository has.

Reads README.md and every docs/*.md, takes each file name they mention
(a word ending in a source, script or document extension, or the target
of a Markdown link) and looks it up: as a path from the repository root,
from the document's folder, without a leading `tact/` (how sources include
headers), or, for a bare name without a folder, anywhere in the tree.
`folder/name.hpp/.cpp` names both files of a pair. Exits 1 and lists each
name that is not there.

    python3 tests/docs_files.py [--root DIR]
"""

import argparse
import pathlib
import re
import subprocess
import sys
import tempfile

EXTENSIONS = ("cpp", "hpp", "py", "sh", "cmake", "md", "txt", "png", "json",
              "toml", "conf", "pem", "in")
NAME = re.compile(r"(?<![\w/.-])(\.{0,2}/?[\w.+-]+(?:/[\w.+-]+)*\.(?:"
                  + "|".join(EXTENSIONS) + r"))(/\.(?:cpp|hpp))?(?![\w/-])")
LINK = re.compile(r"\[[^\]]+\]\(([\w-]*[./][\w./-]*)(?:#[^)]*)?\)")
# Names that are not the repository's own files: absolute paths (the
# system's), CAF's headers, certificates the reader makes with the
# commands shown, and what the build writes into its directory.
SKIP = re.compile(r"^(/|caf/)|\.pem$|^compile_commands\.json$")


def tree_files(root):
    try:
        # What a clean checkout has: the files git tracks.
        out = subprocess.run(["git", "-C", str(root), "ls-files"],
                             capture_output=True, text=True,
                             check=True).stdout.split("\n")
        files = {f for f in out if f}
    except (OSError, subprocess.CalledProcessError):
        files = {p.relative_to(root).as_posix()
                 for p in root.rglob("*") if p.is_file()}
    return files


def exists(name, doc, root, files, basenames):
    name = name.strip()
    if name.startswith("./"):
        name = name[2:]
    candidates = [name, (doc.parent / name).resolve().relative_to(root)
                  .as_posix() if (doc.parent / name).resolve()
                  .is_relative_to(root) else name]
    if name.startswith("tact/"):
        candidates.append(name[len("tact/"):])
    if any(c in files for c in candidates):
        return True
    # A folder: some file lies below it.
    if any(f.startswith(c.rstrip("/") + "/") for c in candidates for f in files):
        return True
    if "/" not in name:
        return name in basenames
    # A folder given from somewhere inside the tree: `bench/run.sh`.
    return any(f.endswith("/" + name) for f in files)


def check(root):
    files = tree_files(root)
    basenames = {f.rsplit("/", 1)[-1] for f in files}
    docs = [root / "README.md"] + sorted((root / "docs").glob("*.md"))
    missing = []
    for doc in docs:
        if not doc.is_file():
            continue
        rel = doc.relative_to(root).as_posix()
        for number, line in enumerate(doc.read_text().split("\n"), 1):
            names = []
            for match in NAME.finditer(line):
                names.append(match.group(1))
                if match.group(2):
                    names.append(match.group(1).rsplit(".", 1)[0]
                                 + match.group(2)[1:])
            names += LINK.findall(line)
            for name in dict.fromkeys(names):
                if SKIP.search(name):
                    continue
                if not exists(name, doc, root, files, basenames):
                    missing.append(f"{rel}:{number}: {name}")
    return docs, missing


def self_test():
    """The check finds names that are not there, and only those."""
    with tempfile.TemporaryDirectory(prefix="tact-docs-") as tmp:
        root = pathlib.Path(tmp)
        for rel in ["README.md", "runtime/errc.hpp", "runtime/errc.cpp",
                    "tests/bench/run.sh", "docs/x.png"]:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text("")
        (root / "docs" / "a.md").write_text(
            "See runtime/errc.hpp/.cpp, `tact/runtime/errc.hpp`, run.sh,\n"
            "![plot](x.png), [b](b.md), transports/loop.cpp and\n"
            "runtime/errc.hpp/.hpp... gone.py\n")
        _, missing = check(root)
        expected = ["docs/a.md:2: b.md", "docs/a.md:2: transports/loop.cpp",
                    "docs/a.md:3: gone.py"]
        if sorted(missing) != sorted(expected):
            print("self-test failed: expected", expected, "got", missing)
            return False
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=pathlib.Path,
                        default=pathlib.Path(__file__).resolve().parent.parent)
    args = parser.parse_args()
    if not self_test():
        return 2
    docs, missing = check(args.root.resolve())
    for name in missing:
        print(name)
    print(f"{len(docs)} documents; {len(missing)} names of missing files")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
