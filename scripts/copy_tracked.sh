#!/usr/bin/env bash
# Copies the tracked files of the checkout REPO, as they are in its working tree, into DEST
# (created if needed): `git ls-files`, so uncommitted edits to tracked files come along while
# untracked files and build output (target/, _build/, priv/native) do not. A tracked file deleted
# in the working tree is skipped. Files already in DEST and not tracked are left as they are.
# No rsync: a fresh Debian machine lacks it. Used by test_otp.sh and test_cross_otp.sh.
set -euo pipefail

repo=${1:?usage: scripts/copy_tracked.sh REPO DEST}
dest=${2:?usage: scripts/copy_tracked.sh REPO DEST}

mkdir -p "$dest"
git -C "$repo" ls-files -z --cached |
  (cd "$repo" && xargs -0 -r sh -c 'for f; do [ -e "$f" ] || [ -L "$f" ] && printf "%s\0" "$f"; done' sh) |
  tar -C "$repo" --null -T - -cf - | tar -C "$dest" -xf -
