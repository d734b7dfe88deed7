#!/usr/bin/env bash
# Re-fetch the vendored browser libraries from the npm registry (no CDN at run time): the
# dashboard's chart library (uPlot) and the API docs' Swagger UI and Redoc. The files are
# committed under src/loglens/dashboard/static/vendor/ and src/loglens/api/docs_static/ so
# installs need no node; this script makes that step reproducible: `make vendor`.
set -euo pipefail

UPLOT_VERSION="${UPLOT_VERSION:-1.6.32}"
SWAGGER_UI_VERSION="${SWAGGER_UI_VERSION:-5.35.0}"
REDOC_VERSION="${REDOC_VERSION:-2.5.4}"  # 2.x: its standalone bundle is a classic script (3.x is an ES module)
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

DOCS="$ROOT/src/loglens/api/docs_static"
(cd "$WORK" && rm -rf package && npm pack --silent "swagger-ui-dist@${SWAGGER_UI_VERSION}" >/dev/null \
  && tar xzf "swagger-ui-dist-${SWAGGER_UI_VERSION}.tgz")
mkdir -p "$DOCS"
# the bundle without its sourceMappingURL line: the map is not shipped
sed '/^\/\/# sourceMappingURL=/d' "$WORK/package/swagger-ui-bundle.js" > "$DOCS/swagger-ui-bundle.js"
sed '/sourceMappingURL=/d' "$WORK/package/swagger-ui.css" > "$DOCS/swagger-ui.css"
cp "$WORK/package/favicon-32x32.png" "$DOCS/favicon-32x32.png"
cp "$WORK/package/LICENSE" "$DOCS/swagger-ui.LICENSE"
cp "$WORK/package/NOTICE" "$DOCS/swagger-ui.NOTICE"
(cd "$WORK" && rm -rf package && npm pack --silent "redoc@${REDOC_VERSION}" >/dev/null && tar xzf "redoc-${REDOC_VERSION}.tgz")
# The bundle's one request to another host is the menu's Redocly logo; it gets an empty data:
# URL instead (the component hides the image when it fails to load), so the page stays offline.
sed -e '/^\/\/# sourceMappingURL=/d' -e 's#https://cdn.redoc.ly/redoc/logo-mini.svg#data:,#g' \
  "$WORK/package/bundles/redoc.standalone.js" > "$DOCS/redoc.standalone.js"
grep -q 'cdn.redoc.ly' "$DOCS/redoc.standalone.js" && { echo "redoc still references its CDN" >&2; exit 1; }
cp "$WORK/package/bundles/redoc.standalone.js.LICENSE.txt" "$DOCS/redoc.standalone.js.LICENSE.txt"
cp "$WORK/package/LICENSE" "$DOCS/redoc.LICENSE"
printf 'swagger-ui-dist %s\nredoc %s\n' "$SWAGGER_UI_VERSION" "$REDOC_VERSION" > "$DOCS/VERSIONS"
echo "vendored swagger-ui-dist ${SWAGGER_UI_VERSION} and redoc ${REDOC_VERSION} into ${DOCS#"$ROOT"/}"
