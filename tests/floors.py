#!/usr/bin/env python3
"""Checks that tact's floors only look down.

The library is built in four floors (docs/architecture.md draws them):

  facade      the runtime class: asyncio's loop methods, distribution
  protocols   ready-made protocols (echo, relay, RESP, framing)
  transports  one transport kind per file pair, with its loop operation
  core        the loop, light actors, messages, errors, the transport
              handle and the protocol interfaces

A file may include headers of its own floor and of the floors below it,
never of a floor above. Every include of a tact header must name a file
that exists (or tact/export.hpp, which the build generates), a public
header includes no detail/ header (those are not installed), and no
source file includes a .cpp. Exits 1 and lists each
offence otherwise.

    python3 tests/floors.py [--root DIR]
"""

import argparse
import pathlib
import re
import sys
import tempfile

# Bottom to top. A file belongs to the floor of the longest prefix that
# matches its path.
FLOORS = [
    ("core", ["runtime/", "actors/"]),
    ("transports", ["transports/"]),
    ("protocols", ["protocols/"]),
    ("facade", ["runtime/runtime.hpp", "runtime/runtime.cpp",
                "runtime/operations.cpp", "runtime/cluster_tls.cpp",
                "runtime/detail/cluster_tls.hpp"]),
]

FOLDERS = ["runtime", "actors", "transports", "protocols"]

# Made by the build (CMake's generate_export_header): the TACT_EXPORT macro.
GENERATED = {"export.hpp"}

INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]tact/([^">]+)[">]', re.M)


def floor_of(path):
    best, level = -1, None
    for index, (_, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            if path.startswith(prefix) and len(prefix) > best:
                best, level = len(prefix), index
    return level


def check(root):
    offences = []
    files = sorted(p for folder in FOLDERS
                   for p in (root / folder).rglob("*")
                   if p.suffix in (".hpp", ".cpp"))
    for file in files:
        rel = file.relative_to(root).as_posix()
        own = floor_of(rel)
        if own is None:
            offences.append(f"{rel}: in no floor (add it to FLOORS)")
            continue
        text = file.read_text()
        for match in INCLUDE.finditer(text):
            target = match.group(1)
            line = text.count("\n", 0, match.start()) + 1
            where = f"{rel}:{line}"
            if target in GENERATED:
                continue
            if target.endswith(".cpp"):
                offences.append(f"{where}: includes the source file {target}")
                continue
            if not (root / target).is_file():
                offences.append(f"{where}: includes {target}, which does "
                                "not exist")
                continue
            if ("/detail/" in target and "/detail/" not in rel
                    and rel.endswith(".hpp")):
                offences.append(f"{where}: the public header includes "
                                f"{target}, which is not installed")
            theirs = floor_of(target)
            if theirs is None:
                offences.append(f"{where}: includes {target}, outside the "
                                "library's folders")
            elif theirs > own:
                offences.append(f"{where}: {FLOORS[own][0]} includes "
                                f"{target}, of the {FLOORS[theirs][0]} floor "
                                "above it")
    return files, offences


def self_test():
    """The check finds each kind of offence in a tree made to have them."""
    with tempfile.TemporaryDirectory(prefix="tact-floors-") as tmp:
        root = pathlib.Path(tmp)
        tree = {
            "runtime/runtime.hpp": '#include "tact/transports/tls.hpp"',
            "runtime/errc.hpp": "",
            "runtime/low.hpp": '#include "tact/transports/tls.hpp"',
            "actors/protocol.hpp": '#include <tact/runtime/errc.hpp>',
            "transports/tls.hpp": '#include "tact/runtime/errc.hpp"',
            "transports/tls.cpp": '#include "tact/runtime/runtime.hpp"\n'
                                  '#include "tact/transports/gone.hpp"',
            "protocols/echo.cpp": '#include "tact/protocols/echo.cpp"',
            "protocols/echo.hpp": '  #  include "tact/transports/tls.hpp"\n'
                                  '#include "tact/export.hpp"',
            "protocols/relay.hpp": '#include "tact/protocols/detail/x.hpp"',
            "protocols/detail/x.hpp": "",
        }
        for rel, text in tree.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text + "\n")
        _, offences = check(root)
        expected = ["runtime/low.hpp:1: core includes transports/tls.hpp",
                    "transports/tls.cpp:1: transports includes "
                    "runtime/runtime.hpp",
                    "transports/tls.cpp:2: includes transports/gone.hpp",
                    "protocols/echo.cpp:1: includes the source file",
                    "protocols/relay.hpp:1: the public header includes"]
        found = [e for e in expected if any(o.startswith(e) for o in offences)]
        if found != expected or len(offences) != len(expected):
            print("self-test failed: expected", expected, "got", offences)
            return False
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=pathlib.Path,
                        default=pathlib.Path(__file__).resolve().parent.parent)
    args = parser.parse_args()
    if not self_test():
        return 2
    files, offences = check(args.root)
    for offence in offences:
        print(offence)
    counts = {}
    for file in files:
        level = floor_of(file.relative_to(args.root).as_posix())
        if level is not None:
            counts[FLOORS[level][0]] = counts.get(FLOORS[level][0], 0) + 1
    summary = ", ".join(f"{name} {counts.get(name, 0)}" for name, _ in FLOORS)
    print(f"{len(files)} files ({summary}); {len(offences)} offences")
    return 1 if offences else 0


if __name__ == "__main__":
    sys.exit(main())
