#!/bin/sh
# Freeze the oscar supervisor (oscar_faas.supervisor) into a standalone folder with
# PyInstaller: DEST/supervisor/supervisor plus DEST/supervisor/_internal/.
#
# Used by the template's builder stages (glibc and musl) and by tests/packaging, so the
# image and the tests freeze it the same way.
#
#   build-supervisor.sh DEST [SRC]
#
# SRC holds supervisor_entry.py and the oscar_faas package (default: this script's folder,
# as prepared by `python -m oscar_faas.stack template ./template`). PYINSTALLER names the
# pyinstaller command (default: pyinstaller on PATH).
#
# Why --onedir: the classic watchdog starts the supervisor once per request; a --onefile
# build unpacks itself to /tmp on every start (about 0.37 s per call against 0.16 s here).
# Why --strip: debug symbols of libpython and extension modules double the size.
set -eu

dest=${1:?usage: build-supervisor.sh DEST [SRC]}
src=${2:-$(dirname "$0")}
pyinstaller=${PYINSTALLER:-pyinstaller}

if [ ! -f "$src/oscar_faas/supervisor/__main__.py" ]; then
    echo "build-supervisor.sh: $src/oscar_faas/supervisor is missing;" \
         "prepare the template with: python -m oscar_faas.stack template ./template" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

"$pyinstaller" --onedir --name supervisor --strip --noconfirm --clean --log-level WARN \
    --paths "$src" --distpath "$dest" --workpath "$work/build" --specpath "$work" \
    --exclude-module tkinter --exclude-module setuptools --exclude-module pydoc \
    --exclude-module unittest --exclude-module readline \
    "$src/supervisor_entry.py"
