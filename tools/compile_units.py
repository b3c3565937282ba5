"""Runs the compile commands CMake wrote (compile_commands.json) of a build folder, without
linking, and reports: the shared step of tools/check_libtorch.sh (another LibTorch's headers)
and tools/check_aarch64.sh (the cross compiler).

  python3 tools/compile_units.py BUILD_DIR JOBS [--only REGEX] [--cross CXX]

As written (check_libtorch.sh): precompiled headers first, then every unit, objects written.
With --cross CXX, every unit but the precompiled headers is run with CXX -fsyntax-only, the
host's /usr/include after CXX's own C and C++ headers (-idirafter), so that libc and libstdc++
are the target's and only the libraries' headers (LibTorch, OpenCV, ...) the host's; the
precompiled header's text is included, not the host's .gch. Writes BUILD_DIR.build.log,
prints a line of counts, the warnings and the first errors of each failed unit; exit 1 when a
unit failed.
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor


def cross_command(e, cxx):
    args = shlex.split(e["command"])[1:]
    out, skip = [cxx, "-fsyntax-only"], False
    for i, a in enumerate(args):
        if skip:
            skip = False
        elif a == "-o" or (a in ("-isystem", "-I") and args[i + 1] == "/usr/include"):
            skip = True
        elif a not in ("-I/usr/include", "-Winvalid-pch"):
            out.append(a)
    return out + ["-idirafter", "/usr/include", "-idirafter", "/usr/include/x86_64-linux-gnu"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("build")
    p.add_argument("jobs", type=int)
    p.add_argument("--only", default="")
    p.add_argument("--cross", default="")
    a = p.parse_args()
    entries = json.load(open(os.path.join(a.build, "compile_commands.json")))
    is_pch = lambda e: e["file"].endswith(".hxx.cxx")
    if a.only:
        entries = [e for e in entries if is_pch(e) or re.search(a.only, e["file"])]
        if all(is_pch(e) for e in entries):
            sys.exit(f"   FILES={a.only!r} matches no source file of this configuration")

    def compile_one(e):
        if a.cross:
            r = subprocess.run(cross_command(e, a.cross), cwd=e["directory"], capture_output=True, text=True)
        else:
            args = shlex.split(e["command"])
            out = os.path.join(e["directory"], e.get("output") or args[args.index("-o") + 1])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            r = subprocess.run(e["command"], shell=True, cwd=e["directory"], capture_output=True, text=True)
        return e["file"], r.returncode, r.stderr

    pch = [] if a.cross else [e for e in entries if is_pch(e)]
    with ThreadPoolExecutor(a.jobs) as ex:
        results = list(ex.map(compile_one, pch))
        results += list(ex.map(compile_one, [e for e in entries if not is_pch(e)]))
    with open(a.build + ".build.log", "w") as log:
        for f, rc, err in results:
            log.write(f"== {f} (exit {rc})\n{err}")
    failed = [(f, err) for f, rc, err in results if rc != 0]
    target = f" with {a.cross}" if a.cross else ""
    print(f"   {len(results) - len(failed)} of {len(results)} translation units compiled{target} ({a.build}.build.log)")
    for w in sorted({l for _, _, err in results for l in err.splitlines() if ": warning: " in l})[:20]:
        print("   warning:", w[:300])
    for f, err in failed:
        print("   failed:", f)
        for l in [l for l in err.splitlines() if re.search(r": (fatal )?error: ", l)][:5]:
            print("     ", l[:300])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
