#!/bin/sh
# A virtualenv's shared objects made smaller: debug symbols out, as Debian strips the ones it
# packages, and identical files stored once.
#
# Many wheels ship their extension modules unstripped (uvloop's 13 MB loop module is 1.4 MB
# without its symbols), and nothing in a serving container reads those symbols. Runs in the
# environment build's strip stage, on an image with GNU binutils (-C strip_image); with none,
# it says so and strips nothing. A file is stripped only when the loader can map it (ldd), and
# kept stripped only when it still can and its dynamic symbol table, which is all the loader and
# Python look up, is the same; else it is put back. That catches what strip does to libraries
# that auditwheel rewrote with patchelf (numpy's bundled libgfortran: "ELF load command
# address/offset not page-aligned").
#
# Then files with the same bytes become hard links to one file (NumPy and SciPy bundle the same
# libgfortran and libquadmath), which the image layer stores once. Done last: strip writes a
# new file, which would part the links.
#
#     sh strip.sh VENV_DIR
set -eu
venv=$1
work=$(mktemp -d)
before=$(du -sm "$venv" | cut -f1)
kept=0
find "$venv" -type f \( -name '*.so' -o -name '*.so.*' \) > "$work/files"
to_strip="$work/files"
if ! command -v strip >/dev/null 2>&1 || ! command -v nm >/dev/null 2>&1; then
    echo "No GNU binutils (strip, nm) in the strip image: shared objects keep their debug" \
         "symbols; -C strip_image=<an image with binutils> leaves them out"
    to_strip=/dev/null
fi
while IFS= read -r file; do
    ldd "$file" >/dev/null 2>&1 || continue  # not a shared object this image can map
    nm -D --defined-only "$file" > "$work/before" 2>/dev/null || continue
    cp -p "$file" "$work/original"
    if ! strip --strip-unneeded "$file" 2>/dev/null \
        || ! ldd "$file" >/dev/null 2>&1 \
        || ! nm -D --defined-only "$file" > "$work/after" 2>/dev/null \
        || ! cmp -s "$work/before" "$work/after"; then
        cp -p "$work/original" "$file"
        kept=$((kept + 1))
    fi
done < "$to_strip"
stripped=$(du -sm "$venv" | cut -f1)
linked=0
tr '\n' '\0' < "$work/files" | xargs -0 -r sha256sum | sort > "$work/sums"
previous=
while read -r sum file; do
    if [ "$sum" = "$previous" ] && cmp -s "$first" "$file"; then
        ln -f "$first" "$file"
        linked=$((linked + 1))
    else
        previous=$sum first=$file
    fi
done < "$work/sums"
rm -rf "$work"
echo "Shared objects: ${before} MB -> ${stripped} MB stripped of debug symbols (${kept} left as" \
     "they were), $(du -sm "$venv" | cut -f1) MB with ${linked} identical files linked"
