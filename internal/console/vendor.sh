#!/usr/bin/env bash
# Refreshes the vendored uPlot (charts of the web console) from the npm
# registry: `internal/console/vendor.sh 1.6.32`. Writes assets/vendor/.
set -euo pipefail
version=${1:?usage: vendor.sh UPLOT_VERSION}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
(cd "$scratch" && npm pack "uplot@$version" --silent >/dev/null && tar xzf "uplot-$version.tgz")
cp "$scratch/package/dist/uPlot.iife.min.js" "$scratch/package/dist/uPlot.min.css" "$here/assets/vendor/"
cp "$scratch/package/LICENSE" "$here/assets/vendor/uPlot.LICENSE"
echo "uPlot $version written to $here/assets/vendor; update the version in assets/vendor/README.md" >&2
