#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Run doxygen on the public headers and fail on any warning.

Runs DOXYGEN with the configured Doxyfile (meson's configure_file of
docs/Doxyfile.in), writing into OUTDIR instead of the docs target's
directory, with every warning that matters forced on whatever the Doxyfile
says: WARN_IF_UNDOCUMENTED (doxygen checks parameters only of documented
members when it is on), WARN_NO_PARAMDOC (every parameter and return value
documented) and WARN_IF_DOC_ERROR, with WARN_AS_ERROR off so that one run
lists them all (WARN_IF_INCOMPLETE_DOC keeps doxygen's default, on). The
warnings go to a log file. The check passes when doxygen exits 0 and the
log is empty, and it prints every warning otherwise.

Usage: tools/check-doxygen.py DOXYGEN DOXYFILE OUTDIR
Exit status: 0 no warning, 1 warnings or doxygen failed, 2 bad usage.
Python 3 standard library only.
"""
import os
import subprocess
import sys


def main(argv):
    if len(argv) != 4:
        print(__doc__.strip().splitlines()[-3], file=sys.stderr)
        return 2
    doxygen, doxyfile, outdir = argv[1:]
    os.makedirs(outdir, exist_ok=True)
    log = os.path.join(outdir, "doxygen-warnings.log")
    config = os.path.join(outdir, "Doxyfile.check")
    with open(config, "w", encoding="utf-8") as f:
        f.write(
            f'@INCLUDE = "{os.path.abspath(doxyfile)}"\n'
            f'OUTPUT_DIRECTORY = "{os.path.abspath(outdir)}"\n'
            f'WARN_LOGFILE = "{log}"\n'
            "WARN_IF_UNDOCUMENTED = YES\n"
            "WARN_NO_PARAMDOC = YES\n"
            "WARN_IF_DOC_ERROR = YES\n"
            "WARN_AS_ERROR = NO\n"
            "QUIET = YES\n"
        )
    if os.path.exists(log):
        os.remove(log)
    run = subprocess.run([doxygen, config], capture_output=True, text=True)
    warnings = ""
    if os.path.exists(log):
        with open(log, encoding="utf-8", errors="replace") as f:
            warnings = f.read().strip()
    # Anything doxygen printed besides the log (errors it does not log).
    stray = "\n".join(
        line for line in (run.stdout + run.stderr).splitlines() if line.strip()
    )
    count = sum(1 for line in warnings.splitlines() if "warning:" in line or "error:" in line)
    if run.returncode != 0 or warnings or stray:
        if warnings:
            print(warnings)
        if stray:
            print(stray)
        print(f"doxygen: exit status {run.returncode}, {count} warnings (log: {log})")
        return 1
    print(f"doxygen: 0 warnings ({os.path.basename(doxyfile)}, WARN_NO_PARAMDOC=YES)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
