#!/usr/bin/env bash
# The browser side of tests/viewer: OHIF's pinned static build and playwright-core (drives the system's
# Chromium; it downloads no browser). Both from the npm registry, each checked against a pinned hash:
# the OHIF tarball here, playwright-core by npm ci against package-lock.json. Idempotent: a build already
# unpacked from the pinned tarball is kept.
set -euo pipefail
cd "$(dirname "$0")"

OHIF_VERSION=3.13.2
# npm's integrity of @ohif/app@3.13.2 (npm view @ohif/app@3.13.2 dist.integrity)
OHIF_INTEGRITY=sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==
CACHE=.cache # gitignored
STAMP="$CACHE/ohif/pinned"

if ! command -v node >/dev/null 2>&1 || ! node -e 'process.exit(parseInt(process.versions.node) >= 20 ? 0 : 1)'; then
  echo "tests/viewer/setup.sh: node >= 20 and npm are needed (playwright-core needs node 20)" >&2
  exit 1
fi

if [[ -f $CACHE/ohif/package/dist/index.html && "$(cat "$STAMP" 2>/dev/null)" == "$OHIF_INTEGRITY" ]]; then
  echo "OHIF $OHIF_VERSION: already in tests/viewer/$CACHE/ohif"
else
  rm -rf "$CACHE/download" "$CACHE/ohif" "$CACHE/ohif.partial"
  mkdir -p "$CACHE/download" "$CACHE/ohif.partial"
  npm pack --silent --pack-destination "$CACHE/download" "@ohif/app@$OHIF_VERSION" >/dev/null
  tarball="$CACHE/download/ohif-app-$OHIF_VERSION.tgz"
  # the integrity npm publishes: sha512-<base64 digest> (node, not openssl: node is here anyway)
  actual=$(node -e 'const hash = require("crypto").createHash("sha512");
    hash.update(require("fs").readFileSync(process.argv[1]));
    process.stdout.write("sha512-" + hash.digest("base64"))' "$tarball")
  if [[ $actual != "$OHIF_INTEGRITY" ]]; then
    echo "tests/viewer/setup.sh: $tarball is not the pinned @ohif/app@$OHIF_VERSION ($actual)" >&2
    exit 1
  fi
  tar -xzf "$tarball" -C "$CACHE/ohif.partial"
  echo "$OHIF_INTEGRITY" >"$CACHE/ohif.partial/pinned"
  mv "$CACHE/ohif.partial" "$CACHE/ohif" # whole or not at all
  rm -rf "$CACHE/download"
  echo "OHIF $OHIF_VERSION: unpacked into tests/viewer/$CACHE/ohif"
fi

npm ci --silent --no-audit --no-fund --ignore-scripts
