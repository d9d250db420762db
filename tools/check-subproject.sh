#!/usr/bin/env bash
# nbuf as a meson subproject (issue 16): build tests/embed/parent with this
# source tree as subprojects/nbuf and check that nbuf adds nothing to the
# parent but a static library: no tests, fuzz replayers, benchmarks or
# examples in the parent's `meson test`, nothing of nbuf's in its install,
# and the parent program's malloc still the C library's.
# Usage: tools/check-subproject.sh [work dir]   (default: a fresh mktemp -d)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
fail() { echo "check-subproject: $*" >&2; exit 1; }

rm -rf "$work/parent"
mkdir -p "$work/parent/subprojects"
cp "$root"/tests/embed/parent/meson.build "$root"/tests/embed/malloc_check.c "$work/parent/"
ln -s "$root" "$work/parent/subprojects/nbuf"
cd "$work/parent"
meson setup build --prefix=/usr >build.log 2>&1 || { cat build.log; fail "meson setup failed"; }
meson compile -C build >>build.log 2>&1 || { cat build.log; fail "meson compile failed"; }

tests=$(meson test -C build --list 2>/dev/null | grep -v "^ninja:" | sed "s/^ *//")
[ "$tests" = "parent-malloc" ] ||
    fail "the parent's meson test lists more than its own test: $(echo "$tests" | tr '\n' ' ')"
meson test -C build --print-errorlogs >/dev/null || fail "the parent's test failed"

# Every target nbuf defines in the parent build: only its libraries.
targets=$(meson introspect build --targets |
    python3 -c 'import json,sys; print("\n".join(t["name"] for t in json.load(sys.stdin) if t["subproject"] == "nbuf"))' |
    sort | tr '\n' ' ')
case "$targets" in
    "nbuf nbuf nbuf_internal " | "nbuf nbuf_internal ") ;;
    *) fail "nbuf builds more than its library in a parent: $targets" ;;
esac

DESTDIR="$work/parent/stage" meson install -C build --quiet >/dev/null
installed=$(cd stage && find . -type f -o -type l | sort | tr '\n' ' ')
[ "$installed" = "./usr/bin/parent_app " ] ||
    fail "the parent's install holds more than its program: $installed"
./build/parent_app >/dev/null || fail "parent_app failed"
echo "check-subproject: ok (tests: $tests; nbuf targets: $targets; installed: $installed)"
