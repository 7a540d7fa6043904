#!/usr/bin/env bash
# Builds the installable Grafana plugin: the backend executable (cargo), the
# frontend (pkg/, npm), then assembles
#
#   dist/                                   the folder Grafana loads
#     plugin.json  module.js  module.js.map
#     gpx_mongopulse_linux_<arch>           amd64 or arm64, from `uname -m`
#     img/logo.svg  README.md  CHANGELOG.md  LICENSE  docs/img/*.png
#                                           (README's relative links made absolute,
#                                           on the plugin.json "Source code" link, as
#                                           the catalog shows README.md on its own)
#   mongopulse-analytics-datasource-<version>.zip
#                                           the same files under one top folder
#                                           named after the plugin id, as Grafana
#                                           plugins are distributed
#
# Usage: scripts/package.sh            (from anywhere; installs npm packages itself)
set -euo pipefail
cd "$(dirname "$0")/.."

field() { python3 -c "import json,sys; print(json.load(open('plugin.json'))$1)"; }
id=$(field "['id']")
version=$(field "['info']['version']")
executable=$(field "['executable']")

case "$(uname -m)" in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) echo "unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac

echo "==> cargo build --release --bin $executable"
cargo build --release --locked --bin "$executable"

echo "==> frontend: pkg/dist/module.js"
pkg/scripts/ensure-deps.sh
(cd pkg && npm run --silent build)

echo "==> dist/"
rm -rf dist
mkdir -p dist/img dist/docs/img
cp plugin.json CHANGELOG.md LICENSE dist/
python3 - <<'PY'
import json, re
links = json.load(open("plugin.json"))["info"]["links"]
repo = next(l["url"] for l in links if l["name"] == "Source code").rstrip("/")
def absolute(m):
    bang, text, target = m.group(1), m.group(2), m.group(3)
    if re.match(r"^(https?:|mailto:|#)", target):
        return m.group(0)
    kind = "raw" if bang else "blob"
    return f"{bang}[{text}]({repo}/{kind}/main/{target})"
readme = open("README.md").read()
open("dist/README.md", "w").write(re.sub(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)", absolute, readme))
PY
cp pkg/dist/module.js pkg/dist/module.js.map dist/
cp -R img/. dist/img/
# plugin.json's screenshots (the browser test's) and the README's images.
if compgen -G "docs/img/*.png" > /dev/null; then cp docs/img/*.png dist/docs/img/; fi
# Exactly 0755: Grafana's plugin validator refuses any other mode on the executable.
# cargo builds into $CARGO_TARGET_DIR when that is set.
install -m 0755 "${CARGO_TARGET_DIR:-target}/release/$executable" "dist/${executable}_linux_${arch}"

zip="${id}-${version}.zip"
echo "==> $zip"
python3 - "$id" "$zip" <<'PY'
import os, sys, zipfile
top, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for root, dirs, files in os.walk("dist"):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            arc = os.path.join(top, os.path.relpath(path, "dist"))
            info = zipfile.ZipInfo.from_file(path, arc)
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as f:
                z.writestr(info, f.read())  # keeps the executable bit (external_attr)
PY
ls -l dist "$zip"
