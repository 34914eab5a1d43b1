#!/usr/bin/env bash
# On the GPU machine: keep one carried part of scripts/gpu/stage.sh's wheels (sha256 checked) in $DEST;
# once every part is there, join them, check the whole, and unpack the wheels into $DEST/wheels
# (run.sh's default WHEELS). Idempotent: a repeated call replaces its part.
#
#   bash scripts/gpu/receive.sh .gpu-stage/parts/wheels.tar.part-00   (its SHA256SUMS carried beside it)
set -euo pipefail

DEST="${GPU_STAGE_DEST:-/var/tmp/clipxai-gpu}"
part="${1:?usage: receive.sh PART}"
sums="$(dirname "$part")/SHA256SUMS"
name="$(basename "$part")"

die() { echo "receive.sh: $*" >&2; exit 1; }

expected="$(awk -v n="$name" '$2 == n { print $1 }' "$sums")"
[[ -n "$expected" ]] || die "$name is not in $sums"
[[ "$(sha256sum "$part" | cut -d' ' -f1)" == "$expected" ]] || die "$name: sha256 differs from $sums (transfer broken?)"
mkdir -p "$DEST/parts"
cp "$part" "$DEST/parts/$name"
cp "$sums" "$DEST/parts/SHA256SUMS"

mapfile -t all < <(awk '$2 ~ /^wheels\.tar\.part-/ { print $2 }' "$DEST/parts/SHA256SUMS")
have=0
for p in "${all[@]}"; do
    [[ -f "$DEST/parts/$p" ]] && have=$((have + 1))
done
echo "receive.sh: $name ok; $have of ${#all[@]} part(s) in $DEST/parts"
((have == ${#all[@]})) || exit 0

(cd "$DEST/parts" && sha256sum -c --quiet <(grep ' wheels\.tar\.part-' SHA256SUMS)) || die "a kept part is damaged"
(cd "$DEST/parts" && cat "${all[@]}") > "$DEST/wheels.tar"
(cd "$DEST" && sha256sum -c --quiet <(grep ' wheels\.tar$' parts/SHA256SUMS)) || die "the joined wheels.tar differs"
rm -rf "$DEST/wheels"
tar -xf "$DEST/wheels.tar" -C "$DEST"
rm "$DEST/wheels.tar"
(cd "$DEST/wheels" && sha256sum -c --quiet SHA256SUMS) || die "a wheel's sha256 differs"
echo "receive.sh: wheels ready in $DEST/wheels:"; (cd "$DEST/wheels" && printf "  %s\n" *.whl)
