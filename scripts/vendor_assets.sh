#!/usr/bin/env bash
# Re-fetch the dashboard's vendored chart library from the npm registry (no CDN at run time).
# The files are committed under src/loglens/dashboard/static/vendor/ so installs need no node;
# this script makes that step reproducible: `make vendor`.
set -euo pipefail

UPLOT_VERSION="${UPLOT_VERSION:-1.6.32}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/src/loglens/dashboard/static/vendor"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

command -v npm >/dev/null || { echo "npm is needed (apt-get install npm)" >&2; exit 1; }
(cd "$WORK" && npm pack --silent "uplot@${UPLOT_VERSION}" >/dev/null && tar xzf "uplot-${UPLOT_VERSION}.tgz")
mkdir -p "$DEST"
cp "$WORK/package/dist/uPlot.iife.min.js" "$DEST/uPlot.iife.min.js"
cp "$WORK/package/dist/uPlot.min.css" "$DEST/uPlot.min.css"
cp "$WORK/package/LICENSE" "$DEST/uPlot.LICENSE"
echo "uplot ${UPLOT_VERSION}" > "$DEST/VERSIONS"
echo "vendored uPlot ${UPLOT_VERSION} into ${DEST#"$ROOT"/}"
