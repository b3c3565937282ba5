#!/usr/bin/env bash
# Compiles every translation unit of cp2 against another LibTorch's headers, without linking:
# the whole build (library, `cp2`, tests) and the LibTorch-only core with `cp2_gpu_check`
# (CP2_CORE_ONLY, what tools/gpu_check.sh builds). It checks, on a machine that has neither
# that LibTorch's libraries nor a GPU, that the code compiles against LibTorch 2.x; it cannot
# find a symbol a LibTorch declares but does not export (that needs the real link).
#
#   bash tools/check_libtorch.sh LIBTORCH_DIR [WORK_DIR]
#
# LIBTORCH_DIR: an unpacked LibTorch (libtorch-*.zip from pytorch.org): its include/ and
# share/cmake/ are used, lib/ may be empty (stub libraries stand in while CMake configures).
# The C++ standard follows CMakeLists.txt's rule (C++20 from LibTorch 2.12 on). Where the
# system has LibTorch headers of its own (Debian's libtorch-dev in /usr/include), they are
# hidden from the compiler, so that nothing falls back on them unseen. Exit 0 when every
# translation unit compiled; otherwise the failing files and their first errors, exit 1.
# Takes about 20 minutes on 2 cores (full 15, core 5); CONFIGS=core checks the core alone,
# JOBS=N sets the parallelism and FILES=REGEX compiles only the sources whose path matches
# (the precompiled headers always), e.g. FILES='precision|c10d_comm' for a version boundary;
# CMAKE_ARGS='-DX=Y ...' adds configure options.
#
# CONFIGS=nccl compiles the one file with CUDA-only code, dist/c10d_comm.cpp's NCCL process
# group (CP2_WITH_NCCL, on where LibTorch has CUDA), against a CUDA LibTorch's headers, without
# CMake (configuring a CUDA LibTorch needs a working nvcc): set CUDA_INCLUDE to a CUDA
# toolkit's include/ and NCCL_INCLUDE to a folder with nccl.h. It also checks that the object
# refers to ProcessGroupNCCL, so that the NCCL lines were compiled, not left out.
set -euo pipefail

if [[ $# -lt 1 || ! -d "$1/include/torch" || ! -d "$1/share/cmake/Torch" ]]; then
  echo "usage: bash tools/check_libtorch.sh LIBTORCH_DIR [WORK_DIR]" >&2
  echo "  LIBTORCH_DIR must hold include/torch and share/cmake/Torch (an unpacked LibTorch)" >&2
  exit 2
fi
for c in ${CONFIGS:-full core}; do
  [[ $c == full || $c == core || $c == nccl ]] ||
    { echo "CONFIGS: expected full, core and/or nccl, found '$c'" >&2; exit 2; }
  if [[ $c == nccl ]]; then
    [[ -f $1/include/torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp ]] ||
      { echo "CONFIGS=nccl: $1 is not a CUDA LibTorch (no torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp)" >&2; exit 2; }
    [[ -f ${CUDA_INCLUDE:-}/cuda_runtime_api.h ]] ||
      { echo "CONFIGS=nccl: CUDA_INCLUDE must be a folder with cuda_runtime_api.h, found '${CUDA_INCLUDE:-}'" >&2; exit 2; }
    [[ -f ${NCCL_INCLUDE:-}/nccl.h ]] ||
      { echo "CONFIGS=nccl: NCCL_INCLUDE must be a folder with nccl.h, found '${NCCL_INCLUDE:-}'" >&2; exit 2; }
  fi
done
if [[ -n ${FILES:-} ]]; then
  python3 -c 'import re,sys; re.compile(sys.argv[1])' "$FILES" 2>/dev/null ||
    { echo "FILES: expected a Python regular expression, found '$FILES'" >&2; exit 2; }
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
lt=$(cd "$1" && pwd)
work=${2:-/tmp/cp2-libtorch-check}
jobs=${JOBS:-$(nproc)}
mkdir -p "$work"
work=$(cd "$work" && pwd)

# A prefix that looks installed to TorchConfig.cmake: the real headers, a copy of share/
# (TorchConfig finds its prefix from its own path) and empty libraries where lib/ has none.
prefix=$work/libtorch
rm -rf "$prefix"
mkdir -p "$prefix/lib"
ln -s "$lt/include" "$prefix/include"
cp -r "$lt/share" "$prefix/share"
# Some nightly archives (2.0.0.dev) leave the ABI value empty, which breaks libstdc++'s
# headers; such builds use the pre-C++11 ABI.
sed -i 's/-D_GLIBCXX_USE_CXX11_ABI=")/-D_GLIBCXX_USE_CXX11_ABI=0")/' "$prefix/share/cmake/Torch/TorchConfig.cmake"
for lib in $(grep -ho '${_IMPORT_PREFIX}/lib/[^"]*' "$prefix"/share/cmake/Caffe2/*Targets*.cmake | sed 's|.*/lib/||' | sort -u); do
  if [[ -e "$lt/lib/$lib" ]]; then ln -s "$lt/lib/$lib" "$prefix/lib/$lib"
  else echo 'int cp2_stub;' | c++ -shared -fPIC -x c++ -o "$prefix/lib/$lib" -; fi
done
version=$(cat "$lt/build-version" 2>/dev/null || echo unknown)

# The compiler's default include path, with the system's own LibTorch headers taken out.
flags=""
if [[ -d /usr/include/torch || -d /usr/include/ATen ]]; then
  sysinc=$work/sysinc
  rm -rf "$sysinc"
  mkdir -p "$sysinc"
  for e in /usr/include/*; do
    case $(basename "$e") in ATen|c10|caffe2|torch) ;; *) ln -s "$e" "$sysinc/$(basename "$e")" ;; esac
  done
  flags="-nostdinc"
  while read -r d; do
    [[ $d == /usr/include ]] && d=$sysinc
    [[ $d == /usr/include/* && $d != /usr/include/c++* ]] && d=$sysinc/${d#/usr/include/}
    flags+=" -isystem $d"
  done < <(echo | c++ -xc++ -E -v - 2>&1 | sed -n '/#include <...> search starts here/,/End of search list/p' | sed '1d;$d')
fi

status=0
check() {  # name, extra cmake args...
  local name=$1; shift
  local b=$work/build-$name
  rm -rf "$b"
  echo "== $name: configuring against LibTorch $version ($lt)"
  if ! cmake -S "$repo" -B "$b" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
       -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON -DCP2_UNITY=OFF ${CMAKE_ARGS:-} "$@" > "$b.configure.log" 2>&1; then
    echo "   configure failed: $b.configure.log"; tail -20 "$b.configure.log"; status=1; return
  fi
  grep -E "^-- cp2:" "$b.configure.log" | sed 's/^/   /'
  # Each compile command as CMake wrote it (precompiled headers first; one source per unit, so
  # FILES can pick them and a failure names its file); nothing is linked.
  python3 "$repo/tools/compile_units.py" "$b" "$jobs" --only "${FILES:-}" || status=1
}

# The NCCL lines alone, as CMake would compile them for a CUDA LibTorch: its standard rule,
# the ABI its TorchConfig sets, the definitions of its torch_cpu and torch_cuda targets.
check_nccl() {
  local mm std abi obj=$work/c10d_comm_nccl.o
  mm=$(sed -E 's/^([0-9]+)\.([0-9]+).*/\1 \2/' <<< "$version")
  std=gnu++17
  if [[ $mm =~ ^[0-9]+\ [0-9]+$ ]] && (( ${mm% *} > 2 || (${mm% *} == 2 && ${mm#* } >= 12) )); then std=gnu++20; fi
  abi=$(grep -o -- '-D_GLIBCXX_USE_CXX11_ABI=[01]' "$prefix/share/cmake/Torch/TorchConfig.cmake" | head -1 || true)
  echo "== nccl: dist/c10d_comm.cpp with CP2_WITH_NCCL against LibTorch $version, -std=$std $abi"
  # shellcheck disable=SC2086
  if ! c++ -std=$std -O2 -Wall -Wextra -Wno-unused-parameter $abi -DUSE_DISTRIBUTED -DUSE_C10D_GLOO \
       -DUSE_C10D_NCCL -DCP2_WITH_NCCL -I"$repo/src" -isystem "$lt/include" \
       -isystem "$lt/include/torch/csrc/api/include" -isystem "$CUDA_INCLUDE" -isystem "$NCCL_INCLUDE" $flags \
       -c "$repo/src/cp2/dist/c10d_comm.cpp" -o "$obj" 2> "$work/nccl.build.log"; then
    echo "   failed ($work/nccl.build.log):"; grep -E ": (fatal )?error: " "$work/nccl.build.log" | head -5 | sed 's/^/     /'
    status=1; return
  fi
  grep ": warning: " "$work/nccl.build.log" | head -20 | sed 's/^/   warning: /' || true
  local refs
  refs=$(nm -C "$obj" | grep -c ProcessGroupNCCL || true)
  if [[ $refs == 0 ]]; then echo "   compiled, but the object has no ProcessGroupNCCL: the NCCL lines were left out"; status=1
  else echo "   compiled; $refs ProcessGroupNCCL symbols in the object"; fi
}

for c in ${CONFIGS:-full core}; do
  case $c in
    full) check full -DCP2_BUILD_TESTS=ON ;;
    core) check core -DCP2_CORE_ONLY=ON ;;
    nccl) check_nccl ;;
  esac
done
checked="${CONFIGS:-full core}${FILES:+, sources matching '$FILES'}"
if [[ $status == 0 ]]; then echo "PASS ($checked): every file compiled against LibTorch $version"
else echo "FAIL: see above (logs under $work)"; fi
exit $status
