#!/usr/bin/env bash
# Set up, build from scratch if needed, and run every test (CTest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
cd "${BUILD_DIR:-build}"
# Disk before and after: the suite keeps only failed tests' folders (tests/main.cpp); a
# full disk shows up here rather than as scattered write errors.
echo "disk before tests: $(df -h . | tail -1)"
rc=0
ctest --output-on-failure -j "$(nproc)" --timeout 1200 || rc=$?
echo "disk after tests: $(df -h . | tail -1); kept: $(du -sh test_tmp fixtures 2>/dev/null | tr '\n' ' ')"
exit "$rc"
