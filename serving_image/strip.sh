#!/bin/sh
# Debug symbols out of a virtualenv's shared objects, as Debian strips the ones it packages.
#
# Many wheels ship their extension modules unstripped (uvloop's 13 MB loop module is 1.4 MB
# without its symbols), and nothing in a serving container reads those symbols. Runs in the
# environment build's strip stage, on an image with GNU binutils (-C strip_image); with none,
# it says so and changes nothing. A file is stripped only when the loader can map it (ldd), and
# kept stripped only when it still can and its dynamic symbol table, which is all the loader and
# Python look up, is the same; else it is put back. That catches what strip does to libraries
# that auditwheel rewrote with patchelf (numpy's bundled libgfortran: "ELF load command
# address/offset not page-aligned").
#
#     sh strip.sh VENV_DIR
set -eu
venv=$1
if ! command -v strip >/dev/null 2>&1 || ! command -v nm >/dev/null 2>&1; then
    echo "No GNU binutils (strip, nm) in the strip image: shared objects keep their debug" \
         "symbols; -C strip_image=<an image with binutils> leaves them out"
    exit 0
fi
work=$(mktemp -d)
before=$(du -sm "$venv" | cut -f1)
kept=0
find "$venv" -type f \( -name '*.so' -o -name '*.so.*' \) > "$work/files"
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
done < "$work/files"
rm -rf "$work"
echo "Stripped debug symbols from the shared objects: ${before} MB -> $(du -sm "$venv" | cut -f1) MB" \
     "(${kept} left as they were)"
