#!/usr/bin/env bash
# Compiles every translation unit of cp2 for aarch64 (64-bit Arm: the Grace host of a GH200,
# AWS Graviton) with Debian's cross compiler, against this machine's LibTorch and library
# headers, without linking (-fsyntax-only): a check that nothing x86-specific escapes its
# guards (cp2's AVX2 kernels and FMA SGD compile to their stubs there, `__x86_64__`). It
# cannot link or run anything for Arm; Debian 12's arm64 libtorch-dev has the same headers.
#
#   bash tools/check_aarch64.sh [WORK_DIR]
#
# Needs `apt-get install g++-aarch64-linux-gnu`. CONFIGS=full and/or core (default both: the
# library, `cp2` and the tests; the LibTorch-only core with `cp2_gpu_check`); JOBS=N;
# FILES=REGEX compiles only the sources whose path matches (as check_libtorch.sh). Exit 0
# when every unit compiled without errors; warnings are listed. About 10 minutes on 2 cores.
set -euo pipefail
# --help prints the comment above; any other option is a mistake for a folder name.
case ${1:-} in
  -h | --help) sed -n '2,/^set -/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
  -*) echo "usage: bash tools/check_aarch64.sh [WORK_DIR] (--help: what it does)" >&2; exit 2 ;;
esac

cxx=aarch64-linux-gnu-g++
command -v $cxx > /dev/null ||
  { echo "check_aarch64: $cxx not found; install it with: apt-get install g++-aarch64-linux-gnu" >&2; exit 2; }
for c in ${CONFIGS:-full core}; do
  [[ $c == full || $c == core ]] || { echo "CONFIGS: expected full and/or core, found '$c'" >&2; exit 2; }
done
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/cp2-aarch64-check}
jobs=${JOBS:-$(nproc)}
mkdir -p "$work"
work=$(cd "$work" && pwd)

status=0
for c in ${CONFIGS:-full core}; do
  b=$work/build-$c
  rm -rf "$b"
  args=(-DCMAKE_EXPORT_COMPILE_COMMANDS=ON)
  # FILES names sources: compile each alone, not in the unity units that would hide its path.
  [[ -n ${FILES:-} ]] && args+=(-DCP2_UNITY=OFF)
  [[ $c == core ]] && args+=(-DCP2_CORE_ONLY=ON)
  echo "== $c: configuring (host compiler; the commands are then run with $cxx)"
  if ! cmake -S "$repo" -B "$b" -DCMAKE_BUILD_TYPE=Release "${args[@]}" > "$b.configure.log" 2>&1; then
    echo "   configure failed: $b.configure.log"; tail -20 "$b.configure.log"; status=1; continue
  fi
  # Each command with the cross compiler, -fsyntax-only; the host's library headers after the
  # cross compiler's own C and C++ headers (tools/compile_units.py).
  python3 "$repo/tools/compile_units.py" "$b" "$jobs" --cross "$cxx" --only "${FILES:-}" || status=1
done
if [[ $status == 0 ]]; then echo "PASS (${CONFIGS:-full core}): every unit compiled for aarch64"; else echo "FAIL"; fi
exit $status
