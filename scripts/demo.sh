#!/usr/bin/env bash
# Set up, build, and run the main job on built-in data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
"${BUILD_DIR:-build}/cp2" demo "$@"
