#!/usr/bin/env bash
# Starts the switchyard demo: a throwaway local PostgreSQL primary + replicas and the proxy
# in front of them (see `switchyard demo --help`). Installs PostgreSQL first if missing.
#
# Usage: scripts/demo.sh [DEMO ARGS...]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/deps.sh --no-drivers
exec cargo run --release -- demo "$@"
