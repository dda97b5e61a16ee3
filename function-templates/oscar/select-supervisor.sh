#!/bin/sh
# Pick the supervisor build that runs on this image (run by the template's "select" stage,
# which is FROM the function's BASE_IMAGE), and prove it runs.
#
#   select-supervisor.sh CANDIDATES OUT
#
# CANDIDATES holds glibc/supervisor/ (built on an old glibc) and musl/supervisor/ plus
# musl/loader/ld-musl-<arch>.so.1 (built on Alpine). OUT receives supervisor/ (with a LIBC
# file naming the choice) and, in the fallback case, the musl loader.
#
# Builds are tried in order, and the first whose smoke test passes (empty body, no SCRIPT:
# it must exit 0) is kept:
# - a base with a musl loader (/lib/ld-musl-*, e.g. Alpine): musl, then glibc;
# - any other base: glibc, then "musl-loader": the musl build with its own musl loader,
#   which the final stage links into /lib. musl is self-contained, so this runs whatever the
#   base's libc is: it is the way for glibc older than the builder's (Ubuntu 18.04,
#   CentOS 7, RHEL 8). It is never tried on a musl base, whose own loader it would replace.
# OSCAR_LIBDIR (default /lib) is where the libc is looked for and the loader linked: tests
# point it elsewhere.
set -eu

candidates=${1:?usage: select-supervisor.sh CANDIDATES OUT}
out=${2:?usage: select-supervisor.sh CANDIDATES OUT}
libdir=${OSCAR_LIBDIR:-/lib}
mkdir -p "$out"

smoke() {
    "$1/supervisor" </dev/null >/dev/null 2>"$out/smoke.log"
}

install_musl_loader() {
    for loader in "$candidates"/musl/loader/ld-musl-*.so.1; do
        [ -e "$loader" ] || continue
        name=${loader##*/}
        arch=${name#ld-musl-}
        arch=${arch%.so.1}
        cp "$loader" "$out/$name"
        # For the smoke test; the final stage makes the same links to /oscar/lib.
        ln -sf "$out/$name" "$libdir/$name"
        ln -sf "$out/$name" "$libdir/libc.musl-$arch.so.1"
    done
}

set -- "$libdir"/ld-musl-*.so.1
if [ -e "$1" ]; then
    order="musl glibc"
else
    order="glibc musl-loader"
fi

chosen=""
for libc in $order; do
    case $libc in
        glibc) build="$candidates/glibc/supervisor" ;;
        musl) build="$candidates/musl/supervisor" ;;
        musl-loader)
            install_musl_loader
            build="$candidates/musl/supervisor"
            ;;
    esac
    if smoke "$build"; then
        chosen=$libc
        break
    fi
    echo "select-supervisor: the $libc build does not run on this base image:" >&2
    cat "$out/smoke.log" >&2
done

rm -f "$out/smoke.log"
if [ -z "$chosen" ]; then
    echo "select-supervisor: no oscar supervisor build runs on this base image" >&2
    exit 1
fi
mv "$build" "$out/supervisor"
echo "$chosen" >"$out/supervisor/LIBC"
echo "select-supervisor: using the $chosen build"
