#!/usr/bin/env bash
# Installs the prebuilt OHIF Viewer 3.x that Strata serves at /viewer/: the `dist/` folder of the
# npm package @ohif/app, at an exact pinned version, checked against its pinned sha512.
#
#   scripts/install-viewer.sh [DIR]        (DIR defaults to target/viewer in the repository)
#
# Only this script touches the npm registry; Strata itself never fetches anything at run time.
# The dist is installed unmodified, its own app-config.js included: Strata rewrites the few files
# that hard-code "/" and generates app-config.js (data source, routerBasename) when it serves them.
# Idempotent: DIR/.ohif-version records the installed version, and a second run with the same
# version does nothing. Environment: OHIF_TARBALL=path uses an already downloaded
# ohif-app-<version>.tgz instead of `npm pack` (it is checked against the same sha512).
set -euo pipefail

OHIF_PACKAGE=@ohif/app
OHIF_VERSION=3.13.2
# `npm view @ohif/app@3.13.2 dist.integrity`
OHIF_INTEGRITY=sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==

DIR=${1:-"$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/viewer"}
MARKER_NAME=.ohif-version
WANT="$OHIF_PACKAGE@$OHIF_VERSION"

if [[ -f "$DIR/$MARKER_NAME" && -f "$DIR/index.html" && -f "$DIR/app-config.js" ]] \
    && [[ "$(cat "$DIR/$MARKER_NAME")" == "$WANT" ]]; then
  echo "install-viewer: $WANT already in $DIR"
  exit 0
fi

# Never replace a directory this script did not create.
if [[ -e "$DIR" && ! -f "$DIR/$MARKER_NAME" ]]; then
  if [[ ! -d "$DIR" ]] || [[ -n "$(ls -A "$DIR")" ]]; then
    echo "install-viewer: $DIR exists and is not an OHIF install (no $MARKER_NAME); not touching it" >&2
    exit 1
  fi
fi

for tool in tar openssl base64; do
  command -v "$tool" >/dev/null || { echo "install-viewer: $tool is required" >&2; exit 1; }
done

parent=$(dirname "$DIR")
mkdir -p "$parent"
work=$(mktemp -d "$parent/.viewer-install.XXXXXX")
trap 'rm -rf "$work"' EXIT

if [[ -n "${OHIF_TARBALL:-}" ]]; then
  tarball=$OHIF_TARBALL
else
  command -v npm >/dev/null || { echo "install-viewer: npm is required" >&2; exit 1; }
  echo "install-viewer: npm pack $WANT (about 50 MB)"
  name=$(cd "$work" && npm pack "$WANT" --silent)
  tarball="$work/$name"
fi
[[ -f "$tarball" ]] || { echo "install-viewer: no tarball at $tarball" >&2; exit 1; }

got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 | tr -d '\n')"
if [[ "$got" != "$OHIF_INTEGRITY" ]]; then
  echo "install-viewer: $tarball has integrity $got, expected $OHIF_INTEGRITY" >&2
  exit 1
fi

mkdir "$work/x"
tar -xzf "$tarball" -C "$work/x" package/package.json package/dist
version=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' "$work/x/package/package.json")
if [[ "$version" != "$OHIF_VERSION" ]]; then
  echo "install-viewer: tarball holds version '$version', expected $OHIF_VERSION" >&2
  exit 1
fi
for f in index.html app-config.js; do
  [[ -f "$work/x/package/dist/$f" ]] || { echo "install-viewer: dist/$f missing" >&2; exit 1; }
done
echo "$WANT" > "$work/x/package/dist/$MARKER_NAME"

# Swap in the new tree; the old one (another pinned version) goes with the temp dir.
if [[ -e "$DIR" ]]; then
  mv "$DIR" "$work/old"
fi
mv "$work/x/package/dist" "$DIR"
echo "install-viewer: installed $WANT into $DIR ($(du -sh "$DIR" | cut -f1))"
