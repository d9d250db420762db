#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Benchmark report: turns the TSVs that tests/bench/report.sh collects into a
Markdown page with tables (absolute figures, ratios against each peer, the
targets with met/missed) and gnuplot plots.

usage: report.py --data DIR --out FILE.md

DIR holds machine.tsv and the --tsv output of bench_alloc (alloc.tsv and
callgrind.tsv), bench_flush (flush.tsv), docs/examples/kv/bench.sh (kv.tsv)
and docs/examples/http/bench.sh (http.tsv); each file's records are described
where it is written. A missing file leaves its section out with a note. The
plots go to FILE's directory/<FILE's stem>/*.png; the gnuplot scripts and
their data stay in DIR/plots/. Python standard library only; gnuplot draws
with pngcairo (or png when pngcairo is missing).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys

PEERS_ALLOC = ["glibc", "jemalloc", "tcmalloc", "mimalloc"]
COLORS = {
    "nbuf": "#d62728",
    "nbuf-default": "#8b0000",
    "glibc": "#1f77b4",
    "jemalloc": "#2ca02c",
    "tcmalloc": "#9467bd",
    "mimalloc": "#ff7f0e",
    "memcpy+write": "#1f77b4",
    "writev": "#2ca02c",
    "evbuffer": "#9467bd",
    "nbuf-add_iov": "#8c564b",
    "nbuf-adjacent": "#e377c2",
    "redis-server": "#1f77b4",
    "nbuf-kv": "#d62728",
    "nginx": "#2ca02c",
    "nbuf-http": "#d62728",
}
CHUNK_MIB = 4  # the default chunk size: "within two chunks" is 8 MiB
# nbuf-kv's memory target: RSS <= redis-server's at each of these value sizes (bytes).
KV_MEMORY_SIZES = [100, 1000, 20000, 100000]


# ---------------------------------------------------------------- reading


def read_tsv(path):
    """Records of a TSV file as lists of fields, or None when the file is missing."""
    if not os.path.exists(path):
        return None
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            out.append(line.split("\t"))
    return out


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def read_machine(data):
    recs = read_tsv(os.path.join(data, "machine.tsv")) or []
    return {r[0]: (r[1] if len(r) > 1 else "") for r in recs}


class Alloc:
    def __init__(self, recs):
        self.meta, self.variants, self.desc, self.ok, self.role = {}, [], {}, {}, {}
        self.rows, self.values, self.medians, self.info, self.rss = [], {}, {}, {}, {}
        for r in recs:
            kind = r[0]
            if kind == "meta":
                self.meta[r[1]] = r[2]
            elif kind == "variant":
                self.variants.append(r[1])
                self.desc[r[1]] = r[2]
                self.ok[r[1]] = r[3] == "ok"
                # nbuf or peer; older files had no role and one nbuf variant, "nbuf".
                self.role[r[1]] = r[4] if len(r) > 4 else ("nbuf" if r[1] == "nbuf" else "peer")
            elif kind == "info":
                self.info.setdefault(r[1], []).append(r[3])
            elif kind == "row":
                self.rows.append(
                    dict(key=r[1], label=r[2], unit=r[3], better=r[4], target=r[5], limit=num(r[6]))
                )
            elif kind == "value":
                self.values.setdefault(r[1], {}).setdefault(r[2], []).append(num(r[4]))
            elif kind == "median":
                self.medians.setdefault(r[1], {})[r[2]] = num(r[3])
            elif kind == "rss":
                self.rss.setdefault(r[1], []).append(
                    (r[2], int(r[3]), num(r[4]), num(r[5]), num(r[6]))
                )
        # The variants under test (nbuf's explicit and default pools) are never each other's peer.
        self.nbufs = [v for v in self.variants if self.role.get(v) == "nbuf"]
        self.peers = [v for v in self.variants if self.role.get(v) != "nbuf" and self.ok.get(v)]

    def med(self, key, variant):
        return self.medians.get(key, {}).get(variant)

    def cost_ratio(self, row, a, b):
        """a's cost over b's: time / time, RSS / RSS, 1/throughput over 1/throughput."""
        x, y = self.med(row["key"], a), self.med(row["key"], b)
        if x is None or y is None:
            return None
        if row["better"] == "higher":
            x, y = y, x
        if y == 0:
            return 1.0 if x == 0 else None
        return x / y

    def per_run_ratio(self, row, a, b):
        """Median over the runs of a's cost over b's in the same run (the runs alternate the
        variants, so the two figures of a run share the machine's load of that moment)."""
        xs = self.values.get(row["key"], {}).get(a, [])
        ys = self.values.get(row["key"], {}).get(b, [])
        if not xs or len(xs) != len(ys):
            return None
        r = []
        for x, y in zip(xs, ys):
            if row["better"] == "higher":
                x, y = y, x
            if x is not None and y:
                r.append(x / y)
        return median(r)

    def best_peer(self, row):
        vals = [(self.med(row["key"], p), p) for p in self.peers]
        vals = [(v, p) for v, p in vals if v is not None]
        if not vals:
            return None, None
        v, p = (max if row["better"] == "higher" else min)(vals)
        return p, v


# ---------------------------------------------------------------- formatting


def fmt(x, unit=""):
    if x is None:
        return "n/a"
    a = abs(x)
    if a >= 10000:
        s = f"{x:,.0f}".replace(",", " ")
    elif a >= 100:
        s = f"{x:.0f}"
    elif a >= 10:
        s = f"{x:.1f}"
    else:
        s = f"{x:.2f}"
    return s + unit


def fmt_ratio(x):
    return "n/a" if x is None else f"{x:.2f}"


def verdict(ok, detail=""):
    if ok is None:
        return "n/a"
    return ("met" if ok else "**missed**") + (f" ({detail})" if detail else "")


def size_label(n):
    n = int(n)
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n >> 10} KiB"
    return f"{n} B"


class Md:
    def __init__(self):
        self.lines = []

    def __call__(self, s=""):
        self.lines.append(s)

    def table(self, header, rows, align=None):
        align = align or ["---"] + ["---:"] * (len(header) - 1)
        self("| " + " | ".join(header) + " |")
        self("|" + "|".join(align) + "|")
        for r in rows:
            self("| " + " | ".join(str(c) for c in r) + " |")
        self()

    def text(self):
        return "\n".join(self.lines).rstrip() + "\n"


# ---------------------------------------------------------------- plotting


class Plots:
    """Writes a gnuplot script and its data per plot into DIR/plots, runs gnuplot."""

    def __init__(self, data_dir, img_dir, md_dir):
        self.dir = os.path.join(data_dir, "plots")
        os.makedirs(self.dir, exist_ok=True)
        self.img_dir = img_dir
        self.md_dir = md_dir
        self.gnuplot = shutil.which("gnuplot")
        self.term = None
        if self.gnuplot:
            probe = subprocess.run(
                [self.gnuplot, "-e", "set terminal pngcairo"], capture_output=True, text=True
            )
            self.term = "pngcairo" if probe.returncode == 0 and not probe.stderr else "png"
        self.made = []
        self.failed = []

    def data(self, name, rows):
        path = os.path.join(self.dir, name)
        with open(path, "w", encoding="utf-8") as f:
            for r in rows:
                if r is None:
                    f.write("\n\n")  # a new gnuplot data block
                    continue
                f.write(" ".join(q(c) for c in r) + "\n")
        return path

    def plot(self, name, body, size=(900, 520)):
        """Draw DIR/plots/name.gp into img_dir/name.png; returns the Markdown image or a note."""
        png = os.path.join(self.img_dir, name + ".png")
        font = "DejaVu Sans,10" if self.term == "pngcairo" else "10"
        script = (
            f"set terminal {self.term or 'pngcairo'} size {size[0]},{size[1]} "
            f"noenhanced font '{font}'\n"
            f"set output {q(png)}\n"
            "set grid lc rgb '#dddddd'\nset key outside right top\nset border 3\n"
            "set tics nomirror\n" + body
        )
        gp = os.path.join(self.dir, name + ".gp")
        with open(gp, "w", encoding="utf-8") as f:
            f.write(script)
        if not self.gnuplot:
            self.failed.append(name + " (no gnuplot)")
            return f"*(plot {name}.png not drawn: gnuplot is not installed)*"
        res = subprocess.run([self.gnuplot, gp], capture_output=True, text=True)
        if res.returncode != 0 or not os.path.exists(png):
            sys.stderr.write(f"report.py: gnuplot {gp} failed:\n{res.stderr}\n")
            self.failed.append(name)
            return f"*(plot {name}.png failed: see {gp})*"
        self.made.append(png)
        rel = os.path.relpath(png, self.md_dir)
        return f"![{name}]({rel})"


def q(s):
    """A gnuplot string or data field."""
    if isinstance(s, (int, float)):
        return repr(s) if isinstance(s, int) else f"{s:.6g}"
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def style(name, width=2):
    return f"lc rgb '{COLORS.get(name, '#555555')}' lw {3 if name.startswith('nbuf') else width}"


def style_dashed(name):
    """style(), and dashed for nbuf-default, so that it shows where it covers nbuf's line."""
    return style(name) + (" dt 2" if name == "nbuf-default" else "")


def size_tics(sizes):
    """Tics labelled in bytes, and room for the first and last points (log2 x axis)."""
    return (
        f"set xrange [{min(sizes) / 1.4}:{max(sizes) * 1.4}]\n"
        + "set xtics ("
        + ", ".join(f"{q(size_label(s))} {s}" for s in sizes)
        + ")\n"
    )


# ---------------------------------------------------------------- sections


def section_machine(md, m):
    mem_gib = (num(m.get("mem_kib")) or 0) / (1 << 20)
    dirty = m.get("git_dirty", "").split()
    subject = m.get("git_subject", "")
    subject = subject if len(subject) <= 80 else subject[:77].rstrip() + "..."
    commit = f"`{m.get('git_commit', '?')}` ({subject}"
    commit += ")" if not dirty else f") plus uncommitted changes to {', '.join(dirty)}"
    total = num(m.get("seconds_total"))
    md(
        f"**Machine:** {m.get('cpu', '?')}, {m.get('cpus', '?')} CPUs, {mem_gib:.1f} GiB RAM; "
        f"{m.get('kernel', '?')} ({m.get('arch', '?')}), Debian {m.get('debian', '?')}, "
        f"glibc {m.get('glibc', '?')}; {m.get('compiler', '?')}, {m.get('buildtype', '?')}; "
        f"{m.get('date_start', '?')}; load average (1, 5, 15 min) {m.get('load_start', '?')} "
        f"at the start and {m.get('load_end', '?')} at the end; nbuf at commit {commit}; "
        f"{m.get('mode', '?')} mode, "
        + (f"{total / 60:.1f} minutes in all." if total else "duration unknown.")
    )
    md()
    cpus = num(m.get("cpus")) or 0
    loads = [num(m.get(k, "").split()[0]) if m.get(k) else None for k in ("load_start", "load_end")]
    busy = [x for x in loads if x is not None and cpus and x > 0.5 * cpus]
    if busy:
        md(
            f"**The machine was busy:** a load average of {max(busy):.1f} on {cpus:.0f} CPUs "
            "(other jobs were running). Absolute figures are inflated and noisy; read the "
            "ratios, and the instruction counts, which do not depend on the load. "
            "Producer -> consumer (c) needs both CPUs at once and suffers most."
        )
        md()
    st = [
        (k[len("status_") :], m[k]) for k in m if k.startswith("status_") and m[k] not in ("0", "")
    ]
    if st:
        md(
            "**Some benchmarks did not finish cleanly:** "
            + ", ".join(f"{n} (exit status {s})" for n, s in st)
            + f". Their output is in `{m.get('data_dir', 'build-report/report')}`."
        )
        md()


def section_targets(md, rows):
    md("## Targets")
    md()
    md(
        'The targets of [docs/api.md, "Performance targets"](api.md#performance-targets) (the '
        "allocation and flush rows), and the bar docs/http.md sets for nbuf-http (at least "
        "nginx's requests per second), applied to nbuf-kv against redis-server too (docs/api.md "
        "sets no number for the example servers). "
        "Each verdict is taken from the medians of this run and is strict (a ratio of 1.01 is a "
        "miss); on a shared machine ratios within a few percent of 1.00 are within the "
        "run-to-run noise, which the sections below show with every figure."
    )
    md()
    md.table(
        ["target", "source", "result in this run", "verdict"], rows, ["---", "---", "---", "---"]
    )


def row_verdict(a, r, nv):
    """nbuf variant nv on row r: (target text, ok or None, verdict cell, ratio to the best peer,
    the best peer). "abs+peer" rows must meet both their limit and the best peer."""
    best, _ = a.best_peer(r)
    rb = a.cost_ratio(r, nv, best) if best else None
    x = a.med(r["key"], nv)
    limit, unit = r["limit"], r["unit"]
    if r["target"] == "peer":
        ok = None if rb is None else rb <= 1.0
        why = "" if ok in (None, True) else f"by {(rb - 1) * 100:.0f}%"
        return "<= best peer", ok, verdict(ok, why), rb, best
    if r["target"] == "abs":
        ok = None if x is None else x <= limit
        return f"<= {limit:g} {unit}", ok, verdict(ok), rb, best
    if r["target"] == "abs+peer":
        ok = None if x is None or rb is None else x <= limit and rb <= 1.0
        why = ([f"> {limit:g} {unit}"] if x is not None and x > limit else []) + (
            [f"{rb:.2f}x the best peer"] if rb is not None and rb > 1.0 else []
        )
        return f"<= {limit:g} {unit} and <= best peer", ok, verdict(ok, "; ".join(why)), rb, best
    return "(none)", None, "", rb, best


def alloc_section(md, plots, a, cg, targets):
    md("## Allocation: nbuf against glibc, jemalloc, tcmalloc and mimalloc")
    md()
    mode = a.meta.get("mode", "?")
    md(
        "`tests/bench/bench_alloc` (see [bench-alloc.md](bench-alloc.md) for the method): every "
        "allocator in its own executable, one process per run and workload, runs alternated "
        f"with the order rotated; {mode} mode, median of {a.meta.get('reps', '?')} runs each. "
        "nbuf calls `nbuf_alloc(pool, n)`/`nbuf_release` on a pool of its own "
        "(`nbuf_pool_new(NULL)`), nbuf-default `nbuf_alloc(NULL, n)` on the default pool (as "
        "users call it; configured from `NBUF_*` variables), the peers `malloc`/`free`. "
        "docs/api.md holds both nbuf variants to the same targets; neither is the other's peer. "
        "Load average "
        f"{a.meta.get('load_before', '?')} before, {a.meta.get('load_after', '?')} after."
    )
    md()
    for v in a.variants:
        md(f"- {v}: {a.desc.get(v, '')}" + ("" if a.ok.get(v) else " (**failed or refused**)"))
        for i in a.info.get(v, []):
            md(f"  - {i}")
    md()
    md("### Medians")
    md()
    header = ["workload", "unit"] + a.variants + [f"{v} runs (min-max)" for v in a.nbufs]
    rows = []
    for r in a.rows:
        spreads = []
        for nv in a.nbufs:
            vals = [x for x in a.values.get(r["key"], {}).get(nv, []) if x is not None]
            spreads.append(f"{fmt(min(vals))}-{fmt(max(vals))}" if vals else "n/a")
        rows.append(
            [r["label"], r["unit"]] + [fmt(a.med(r["key"], v)) for v in a.variants] + spreads
        )
    md.table(header, rows, ["---", "---"] + ["---:"] * (len(header) - 2))

    md("### Ratios: each nbuf variant's cost over each peer's")
    md()
    md(
        "Time over time, RSS over RSS, and for throughput the peer's buffers/s over nbuf's, so "
        "that below 1.00 nbuf is better everywhere; ratios of the medians above. *Per run*: the "
        "median over the runs of nbuf's figure over the best peer's in the same run (a run "
        "takes every variant back to back, so this ratio is less exposed to the load's drift). "
        "The targets of docs/api.md compare with the best peer of each row, and the verdict reads "
        "the ratio of medians, as `bench_alloc` does; (d) has absolute targets, and its steady "
        "ratio must also be no worse than the best peer's."
    )
    md()
    header = (
        ["workload", "nbuf variant"]
        + [f"vs {p}" for p in a.peers]
        + ["best peer", "variant / best", "per run", "target", "verdict"]
    )
    rows = []
    for r in a.rows:
        for nv in a.nbufs:
            tgt, _ok, v, rb, best = row_verdict(a, r, nv)
            x = a.med(r["key"], nv)
            rows.append(
                [r["label"], nv]
                + [fmt_ratio(a.cost_ratio(r, nv, p)) for p in a.peers]
                + [
                    best or "n/a",
                    fmt_ratio(rb),
                    fmt_ratio(a.per_run_ratio(r, nv, best) if best else None),
                    tgt,
                    v,
                ]
            )
            if r["target"] != "none":
                if r["target"] in ("peer", "abs+peer"):
                    bv = fmt(a.med(r["key"], best))
                    res = f"{nv} {fmt(x)} {r['unit']}, best peer {best} {bv}: {fmt_ratio(rb)}x"
                else:
                    res = f"{nv} {fmt(x)} {r['unit']}"
                targets.append([f"alloc {r['label']}, {nv}: {tgt}", "docs/api.md", res, v])
    md.table(
        header,
        rows,
        ["---", "---"] + ["---:"] * len(a.peers) + ["---", "---:", "---:", "---", "---"],
    )

    if cg:
        callgrind_section(md, a, cg, targets)

    # (a) cost against buffer size
    pair_rows = [r for r in a.rows if r["key"].startswith("a.")]
    sizes = [int(r["key"][2:]) for r in pair_rows]
    if pair_rows:
        data = []
        for v in a.variants:
            for r, s in zip(pair_rows, sizes):
                x = a.med(r["key"], v)
                if x is not None:
                    data.append([s, x])
            data.append(None)
        path = plots.data("alloc-pairs.dat", data)
        body = size_tics(sizes)
        body += (
            "set logscale xy 2\nset logscale y 10\nset xlabel 'buffer size'\n"
            "set ylabel 'ns per alloc+release pair (median)'\n"
            "set title 'Allocation cost against buffer size, same thread (lower is better)'\n"
            "plot "
            + ", ".join(
                f"{q(path)} index {i} using 1:2 with linespoints pt 7 {style(v)} title {q(v)}"
                for i, v in enumerate(a.variants)
            )
            + "\n"
        )
        md("### Cost against buffer size")
        md()
        md(plots.plot("alloc-pairs", body))
        md()
        data, lines = [], []
        for nv in a.nbufs:
            for p in a.peers:
                for r, s in zip(pair_rows, sizes):
                    x = a.cost_ratio(r, nv, p)
                    if x is not None:
                        data.append([s, x])
                data.append(None)
                lines.append((nv, p))
        path = plots.data("alloc-ratio.dat", data)
        body = size_tics(sizes)
        body += (
            "set logscale x 2\nset logscale y 2\nset xlabel 'buffer size'\n"
            "set ylabel 'nbuf time / peer time'\n"
            "set title 'nbuf alloc+release against each peer (below 1: nbuf faster; "
            "dashed: the default pool)'\n"
            "set arrow from graph 0, first 1 to graph 1, first 1 nohead lc rgb 'black' dt 2\n"
            "plot "
            + ", ".join(
                f"{q(path)} index {i} using 1:2 with linespoints pt 7 {style(p)} "
                f"dt {1 if nv == 'nbuf' else 2} title {q(nv + ' vs ' + p)}"
                for i, (nv, p) in enumerate(lines)
            )
            + "\n"
        )
        md(plots.plot("alloc-ratio", body))
        md()

    rss_section(md, plots, a)


def rss_section(md, plots, a):
    """Workload (d): the table of its rows for every allocator, with the targets, and the plot of
    RSS over the trace of each allocator's first run: fill, replacements, free all, the idle
    with no allocator call (against time: no operation happens there), then the trim."""
    d_rows = [r for r in a.rows if r["key"].startswith("d.")]
    if not d_rows and not a.rss:
        return
    md("### Workload (d): RSS at steady state, after an idle, after the trim")
    md()
    idle_s = num(a.meta.get("idle_s"))
    idle_reps = a.meta.get("idle_reps")
    quick_idle = " (quick mode: not the 3 s of docs/api.md, so its verdict is not the target's)"
    idle_txt = (
        "no allocator idled (no d.idle)"
        if idle_s is None
        else f"each allocator idled {idle_s:g} s"
        + (quick_idle if idle_s < 3 else "")
        + (
            ""
            if not idle_reps
            else " in its first run of (d)"
            if idle_reps == "1"
            else f" in its first {idle_reps} runs of (d) (d.idle is their median)"
        )
    )
    md(
        "A live set of random sizes (64 B-64 KiB, every page written) filled up to the target, "
        "random replacements, then everything freed, then an idle with no allocator call at all "
        "(sleep; RSS read from /proc every 100 ms), then the allocator's trim. RSS is the "
        f"process's above its RSS at the start. In this run {idle_txt}. The first row gives "
        "the targets of docs/api.md, which the nbuf variants' cells are judged against."
    )
    md()
    if d_rows:
        header = ["allocator"] + [f"{r['label'][4:]} ({r['unit']})" for r in d_rows]
        trow = ["**target (nbuf)**"]
        for r in d_rows:
            tgt = row_verdict(a, r, a.nbufs[0])[0] if a.nbufs else "(none)"
            best, bv = a.best_peer(r)
            if r["target"] in ("peer", "abs+peer") and best:
                tgt += f" (best peer here: {best} {fmt(bv)})"
            trow.append(tgt)
        rows = [trow]
        for v in a.variants:
            row = [v]
            for r in d_rows:
                cell = fmt(a.med(r["key"], v))
                if v in a.nbufs and r["target"] != "none" and a.med(r["key"], v) is not None:
                    cell += ": " + row_verdict(a, r, v)[2]
                row.append(cell)
            rows.append(row)
        md.table(header, rows, ["---"] + ["---"] * len(d_rows))
    if not a.rss:
        return

    # The plot: operations on the left panel, seconds of idle (and the trim) on the right.
    ops_data, idle_data, names = [], [], []
    bounds, live, idle_len, ys = {}, None, 0.0, [0.0]
    for v in a.variants:
        s = a.rss.get(v)
        if not s:
            continue
        start = next((x[3] for x in s if x[0] == "start"), s[0][3])
        idle = [x for x in s if x[0] == "idle"]
        trim = [x for x in s if x[0] == "trim"]
        end = max(x[1] for x in s)
        for phase, op, _ms, rss, _lv in s:
            if phase in ("fill", "replace", "free"):
                bounds[phase] = max(bounds.get(phase, 0), op)
            if phase in ("start", "fill", "replace", "free") or (phase == "trim" and not idle):
                ops_data.append([op + (0.02 * end if phase == "trim" else 0), rss - start])
                ys.append(rss - start)
        ops_data.append(None)
        if idle:
            t0 = idle[0][2]
            for _p, _op, ms, rss, _lv in idle:
                idle_data.append([(ms - t0) / 1e3, rss - start])
                ys.append(rss - start)
                idle_len = max(idle_len, (ms - t0) / 1e3)
            for _p, _op, _ms, rss, _lv in trim:
                idle_data.append(["trim", rss - start])  # placed once the idle's length is known
                ys.append(rss - start)
        idle_data.append(None)
        names.append(v)
        if live is None:
            live = [(op, lv) for phase, op, _ms, _r, lv in s if phase not in ("trim", "idle")]
    has_idle = any(r for r in idle_data if r)
    trim_x = idle_len * 1.12 if idle_len else 1.0
    idle_data = [r if r is None or r[0] != "trim" else [trim_x, r[1]] for r in idle_data]
    path = plots.data("rss-trace.dat", ops_data)
    ipath = plots.data("rss-idle.dat", idle_data)
    lpath = plots.data("rss-live.dat", [[op, lv, 1.15 * lv] for op, lv in (live or [])])
    for op, lv in live or []:
        ys.append(1.15 * lv)
    ymin, ymax = min(ys), max(ys)
    yr = f"set yrange [{min(0.0, ymin * 1.05):g}:{ymax * 1.1 + 1:g}]\n"
    end_all = max(x[0] for x in ops_data if x)
    left = "set xlabel 'operations'\nset ylabel 'MiB above the start'\nset format x '%.1s%c'\n"
    left += f"set xrange [0:{end_all * 1.03}]\n" + yr
    prev = 0
    phases = (("fill", "fill"), ("replace", "random replacements"), ("free", "free all"))
    for phase, label in phases:
        if phase in bounds:
            b = bounds[phase]
            left += f"set arrow from {b}, graph 0 to {b}, graph 1 nohead lc rgb '#999999' dt 3\n"
            left += (
                f"set label {q(label)} at {(prev + b) / 2}, graph 0.97 center tc rgb '#555555'\n"
            )
            prev = b
    lines = ", ".join(
        f"{q(path)} index {i} using 1:2 with lines {style_dashed(v)} "
        + (f"title {q(v)}" if not has_idle else "notitle")
        for i, v in enumerate(names)
    )
    lines += (
        f", {q(lpath)} using 1:2 with lines lc rgb 'black' lw 1 title 'live requested'"
        f", {q(lpath)} using 1:3 with lines lc rgb 'black' lw 1 dt 2 title '1.15 x live'\n"
    )
    if not has_idle:
        # An older run, or one without the idle: the trim is the last point of each line.
        if "free" in bounds:
            left += (
                f"set label 'trim' at {bounds['free'] * 1.02}, graph 0.92 center "
                "tc rgb '#555555'\n"
            )
        body = "set title 'RSS above the start over the trace of workload (d)'\n" + left
        body += "plot " + lines
        md(plots.plot("rss-trace", body, (1000, 560)))
        md()
        return
    body = (
        "set multiplot title 'RSS above the start over workload (d): the trace, then the idle "
        "with no allocator call, then the trim'\n"
        "set lmargin at screen 0.07\nset rmargin at screen 0.60\n"
        "set tmargin at screen 0.90\nset bmargin at screen 0.11\n"
        "set key inside center bottom\n" + left + "plot " + lines
    )
    body += (
        "unset arrow\nunset label\n"
        "set lmargin at screen 0.62\nset rmargin at screen 0.84\n"
        "set key outside right top\nset format y ''\nunset ylabel\n"
        "set xlabel 'seconds after free all'\nset format x '%g'\n"
        f"set xrange [{-0.04 * trim_x:g}:{trim_x * 1.06:g}]\n"
        f"set arrow from {idle_len:g}, graph 0 to {idle_len:g}, graph 1 nohead "
        "lc rgb '#999999' dt 3\n"
        f"set label {q(f'idle {idle_s or idle_len:g} s, no call')} at {idle_len / 2:g}, "
        "graph 0.97 center tc rgb '#555555'\n"
        f"set label 'trim' at {trim_x:g}, graph 0.92 center tc rgb '#555555'\n"
        "plot "
        + ", ".join(
            f"{q(ipath)} index {i} using 1:2 with linespoints pt 7 ps 0.4 {style_dashed(v)} "
            f"title {q(v)}"
            for i, v in enumerate(names)
        )
        + "\nunset multiplot\n"
    )
    md(plots.plot("rss-trace", body, (1200, 580)))
    md()


class Callgrind:
    """bench_alloc --callgrind --tsv: instructions per operation, per variant."""

    def __init__(self, recs):
        self.meta, self.variants, self.role, self.ok = {}, [], {}, {}
        self.ops, self.ir = [], {}
        for r in recs:
            if r[0] == "meta":
                self.meta[r[1]] = r[2]
            elif r[0] == "variant":
                self.variants.append(r[1])
                self.role[r[1]] = r[2]
                self.ok[r[1]] = r[3] == "ok"
            elif r[0] == "op":
                self.ops.append(dict(key=r[1], label=r[2], iters=int(r[3])))
            elif r[0] == "callgrind" and len(r) >= 4:
                self.ir[(r[1], r[2])] = num(r[3])
            elif r[0] == "callgrind":  # the older format: 64 B pairs only, "callgrind <v> <n>"
                if not self.ops:
                    iters = int(self.meta.get("iters", 0) or 0)
                    self.ops.append(dict(key="a.64", label="(a) pair, 64 B", iters=iters))
                if r[1] not in self.variants:
                    self.variants.append(r[1])
                    self.role[r[1]] = "nbuf" if r[1] == "nbuf" else "peer"
                    self.ok[r[1]] = True
                self.ir[("a.64", r[1])] = num(r[2])
        self.nbufs = [v for v in self.variants if self.role.get(v) == "nbuf"]
        self.peers = [v for v in self.variants if self.role.get(v) != "nbuf"]

    def fewest_peer(self, key):
        vals = [(self.ir.get((key, p)), p) for p in self.peers]
        vals = [(x, p) for x, p in vals if x]
        return min(vals)[::-1] if vals else (None, None)


def fmt_ir(x):
    return "n/a" if x is None else (f"{x:.0f}" if x >= 1000 else f"{x:.1f}")


def callgrind_section(md, a, recs, targets):
    c = Callgrind(recs)
    if not c.ops:
        return
    md("### Instructions per operation (callgrind)")
    md()
    iters = sorted({op["iters"] for op in c.ops})
    md(
        "`bench_alloc --callgrind`: every variant under `valgrind --tool=callgrind`, a fixed "
        f"count of operations ({' or '.join(f'{n:,}'.replace(',', ' ') for n in iters)} per "
        "row), counted inside the benchmark loop only (`--toggle-collect=run_pairs`, each size's "
        "call dumped on its own, and `--toggle-collect=run_live`): the warm-up is not counted, "
        "the loop and its one-byte store are (about 12 instructions per pair). (b) counts one "
        "release plus one allocation of a random size per replacement. Unlike time, this does "
        "not move with the machine's load. *variant / fewest*: instructions over the fewest of "
        "any peer's in that row; below 1.00 nbuf runs fewer."
    )
    md()
    header = (
        ["operation"] + c.variants + ["fewest peer"] + [f"{nv} / fewest" for nv in c.nbufs]
    )
    rows = []
    for op in c.ops:
        best, bx = c.fewest_peer(op["key"])
        row = [op["label"]] + [fmt_ir(c.ir.get((op["key"], v))) for v in c.variants]
        row.append(best or "n/a")
        for nv in c.nbufs:
            x = c.ir.get((op["key"], nv))
            row.append(fmt_ratio(x / bx if x and bx else None))
        rows.append(row)
    md.table(header, rows, ["---"] + ["---:"] * len(c.variants) + ["---"] + ["---:"] * len(c.nbufs))

    # docs/api.md, Performance targets (a): fewer instructions per pair than the fastest peer
    # (by time), 64 B-64 KiB.
    if not a:
        return
    for nv in c.nbufs:
        res, bad, n = [], [], 0
        for r in a.rows:
            if not r["key"].startswith("a.") or r["target"] != "peer":
                continue
            fastest, _ = a.best_peer(r)
            x, y = c.ir.get((r["key"], nv)), c.ir.get((r["key"], fastest))
            if not x or not y:
                continue
            n += 1
            size = size_label(int(r["key"][2:]))
            res.append(f"{size} {fmt_ir(x)} vs {fastest} {fmt_ir(y)}")
            if x >= y:
                bad.append(size)
        if n:
            targets.append(
                [
                    f"alloc (a) pairs 64 B-64 KiB, {nv}: fewer instructions than the fastest peer",
                    "docs/api.md (callgrind)",
                    f"fewer at {n - len(bad)} of {n} sizes ({'; '.join(res)})",
                    verdict(not bad),
                ]
            )


def flush_section(md, plots, recs, targets):
    meta = {r[1]: r[2] for r in recs if r[0] == "meta"}
    frames, strategies, sizes = {}, [], []
    for r in recs:
        if r[0] == "frame":
            s, st = int(r[1]), r[2]
            frames[(s, st)] = (num(r[3]), num(r[4]))
            if st not in strategies:
                strategies.append(st)
            if s not in sizes:
                sizes.append(s)
    md("## Frame flush: nbuf composites against memcpy+write, writev and libevent")
    md()
    md(
        f"`tests/bench/bench_flush`: a {meta.get('header', 16)} B header plus "
        f"{int(meta.get('payload', 65536)) // 1024} KiB of payload in slices of S bytes (no two "
        "adjacent), sent through a UNIX socketpair that a reader thread drains; the strategies "
        f"alternate, median of {meta.get('reps', '?')} runs of {meta.get('frames', '?')} frames "
        f"({meta.get('mode', '?')} mode). *nbuf*: `nbuf_composite_add_slice` per slice and "
        "`nbuf_composite_writev`; *nbuf-add_iov*: every slice in one `nbuf_composite_add_iov` "
        "call; *nbuf-adjacent*: slices laid back to back, merged into one component. Wall time "
        "per frame includes the reader's wake-ups; the sending thread's CPU time is its own "
        "work, whatever else runs."
    )
    md()
    if not frames:
        md("*(no frame records)*")
        md()
        return
    for title, idx in (
        ("Wall time per frame, µs (median)", 0),
        ("Sending thread's CPU time per frame, µs (median)", 1),
    ):
        md(f"### {title}")
        md()
        rows = []
        for s in sizes:
            rows.append(
                [size_label(s)]
                + [
                    fmt(
                        frames.get((s, st), (None, None))[idx] / 1000
                        if frames.get((s, st))
                        else None
                    )
                    for st in strategies
                ]
            )
        md.table(["S"] + strategies, rows)

    peers = [p for p in ("memcpy+write", "writev", "evbuffer") if p in strategies]
    mine = [p for p in ("nbuf", "nbuf-add_iov") if p in strategies]

    def ratio(s, a, b, idx=0):
        x, y = frames.get((s, a)), frames.get((s, b))
        if not x or not y or not y[idx]:
            return None
        return x[idx] / y[idx]

    def best_of(s, idx=0):
        c = [(frames[(s, p)][idx], p) for p in ("memcpy+write", "writev") if (s, p) in frames]
        return min(c)[1] if c else None

    md("### Ratios: nbuf's time over each peer's (below 1.00: nbuf faster)")
    md()
    md(
        "Target (docs/api.md): at least as fast as the better of memcpy+write and writev for "
        "every S from 16 B to 64 KiB, and faster than libevent's evbuffer. The verdict reads the "
        "wall medians; the last two columns apply the same test to the sending thread's CPU "
        "time, which the machine's other load disturbs less."
    )
    md()
    header = (
        ["S", "strategy"]
        + [f"vs {p}" for p in peers]
        + ["vs best(memcpy, writev)", "verdict", "CPU: vs best, vs evbuffer", "CPU verdict"]
    )
    rows, met, cpu_met = [], {m: [] for m in mine}, {m: [] for m in mine}
    for s in sizes:
        for m in mine:
            b = best_of(s)
            rb = ratio(s, m, b) if b else None
            re = ratio(s, m, "evbuffer") if "evbuffer" in strategies else None
            ok = None if rb is None else (rb <= 1.0 and (re is None or re < 1.0))
            met[m].append((s, ok))
            cb = best_of(s, 1)
            crb = ratio(s, m, cb, 1) if cb else None
            cre = ratio(s, m, "evbuffer", 1) if "evbuffer" in strategies else None
            cok = None if crb is None else (crb <= 1.0 and (cre is None or cre < 1.0))
            cpu_met[m].append((s, cok))
            rows.append(
                [size_label(s), m]
                + [fmt_ratio(ratio(s, m, p)) for p in peers]
                + [
                    f"{fmt_ratio(rb)} ({b})",
                    verdict(ok),
                    f"{fmt_ratio(crb)}, {fmt_ratio(cre)}",
                    verdict(cok),
                ]
            )
    md.table(header, rows, ["---:", "---"] + ["---:"] * (len(peers) + 1) + ["---", "---:", "---"])
    for m in mine:
        for what, res in (("wall time", met[m]), ("sending thread's CPU time", cpu_met[m])):
            oks = [s for s, ok in res if ok]
            bad = [size_label(s) for s, ok in res if ok is False]
            targets.append(
                [
                    f"flush, {m}, {what}: <= best of memcpy+write and writev, and < evbuffer, "
                    "every S from 16 B to 64 KiB",
                    "docs/api.md" if what == "wall time" else "docs/api.md, on CPU time",
                    f"met at {len(oks)} of {len(res)} sizes"
                    + (f"; missed at {', '.join(bad)}" if bad else ""),
                    verdict(not bad if res else None),
                ]
            )

    # plots: wall time and ratios against S
    data = []
    for st in strategies:
        for s in sizes:
            if (s, st) in frames:
                data.append([s, frames[(s, st)][0] / 1000])
        data.append(None)
    path = plots.data("flush-time.dat", data)
    body = size_tics(sizes) + (
        "set logscale x 2\nset logscale y 10\nset xlabel 'slice size S'\n"
        "set ylabel 'µs per frame (wall, median)'\n"
        "set title 'Frame flush: 16 B header + 64 KiB in slices of S (lower is better)'\n"
        "plot "
        + ", ".join(
            f"{q(path)} index {i} using 1:2 with linespoints pt 7 {style(st)} title {q(st)}"
            for i, st in enumerate(strategies)
        )
        + "\n"
    )
    md("### Cost against slice size")
    md()
    md(plots.plot("flush-time", body))
    md()
    data, titles = [], []
    for m in mine:
        for p in [x for x in ("best", "evbuffer") if x == "best" or x in peers]:
            for s in sizes:
                b = best_of(s) if p == "best" else p
                x = ratio(s, m, b) if b else None
                if x is not None:
                    data.append([s, x])
            data.append(None)
            titles.append((m, p))
    path = plots.data("flush-ratio.dat", data)
    plots_list = []
    for i, (m, p) in enumerate(titles):
        dt = 1 if m == "nbuf" else 2
        color = COLORS["evbuffer"] if p == "evbuffer" else "#000000"
        plots_list.append(
            f"{q(path)} index {i} using 1:2 with linespoints pt 7 lc rgb '{color}' lw 2 dt {dt} "
            f"title {q(m + ' / ' + (p if p != 'best' else 'best(memcpy, writev)'))}"
        )
    body = size_tics(sizes) + (
        "set logscale x 2\nset logscale y 2\nset xlabel 'slice size S'\n"
        "set ylabel 'nbuf time / peer time (wall)'\n"
        "set title 'Frame flush: nbuf against the targets (below 1: nbuf faster)'\n"
        "set arrow from graph 0, first 1 to graph 1, first 1 nohead lc rgb 'black' dt 2\n"
        "plot " + ", ".join(plots_list) + "\n"
    )
    md(plots.plot("flush-ratio", body, (1000, 520)))
    md()

    gets = [(int(r[1]), num(r[2])) for r in recs if r[0] == "get"]
    if gets:
        md("## Composite lookup: cost against component count")
        md()
        md(
            "Random `nbuf_composite_get` of 8 bytes at a random offset of a composite of n "
            "components of 16 B (one run per count). docs/api.md sets no target; the lookup is "
            "meant to grow as O(log n)."
        )
        md()
        md.table(
            ["components", "ns per get"], [[f"{c:,}".replace(",", " "), fmt(x)] for c, x in gets]
        )
        path = plots.data("composite-get.dat", [[c, x] for c, x in gets])
        body = (
            "set logscale x 10\nset xlabel 'components'\nset ylabel 'ns per nbuf_composite_get'\n"
            f"set xrange [{gets[0][0] / 1.5}:{gets[-1][0] * 1.5}]\n"
            "set yrange [0:*]\nset key off\n"
            "set title 'Random 8-byte get against component count'\n"
            f"plot {q(path)} using 1:2 with linespoints pt 7 {style('nbuf')}\n"
        )
        md(plots.plot("composite-get", body, (800, 460)))
        md()
    builds = [(r[1], num(r[2]), int(r[3]), num(r[4])) for r in recs if r[0] == "build"]
    if builds:
        md("### Building and freeing a composite")
        md()
        md.table(
            ["components", "how", "ns per composite", "ns per component"],
            [[n, what, fmt(ns), fmt(per)] for what, ns, n, per in builds],
            ["---:", "---", "---:", "---:"],
        )


def kv_section(md, plots, recs, targets):
    meta = {r[1]: r[2] for r in recs if r[0] == "meta"}
    runs = {}
    for r in recs:
        if r[0] == "run":
            runs.setdefault(r[1], {})[int(r[2])] = (num(r[3]), num(r[4]))
    cpu = {r[1]: num(r[2]) for r in recs if r[0] == "cpu"}
    hwm = {r[1]: num(r[2]) for r in recs if r[0] == "hwm"}
    md("## nbuf-kv against redis-server")
    md()
    md(
        "`docs/examples/kv/bench.sh` (see [kv.md](kv.md)): `redis-benchmark -t set,get -P 16 "
        f"-c 50 -n {meta.get('n', '?')} -q` against each server, alternated "
        f"{meta.get('reps', '?')} times; redis-server {meta.get('redis_version', '?')} "
        "(Debian's, `--save '' --appendonly no`). Server CPU per request is the server's "
        "user+system time over all runs divided by the requests (10 ms tick resolution). Load "
        f"average {meta.get('load_before', '?')} before, {meta.get('load_after', '?')} after."
    )
    md()
    r_runs, k_runs = runs.get("redis-server", {}), runs.get("nbuf-kv", {})
    rows = []
    for i, name in ((0, "SET ops/s"), (1, "GET ops/s")):
        rm = median([v[i] for v in r_runs.values()])
        km = median([v[i] for v in k_runs.values()])
        per = median([k_runs[j][i] / r_runs[j][i] for j in k_runs if j in r_runs and r_runs[j][i]])
        rows.append(
            [
                name,
                fmt(rm),
                fmt(km),
                fmt_ratio(km / rm if rm and km else None),
                fmt_ratio(per),
                "higher",
            ]
        )
        ok = None if per is None else per >= 1.0
        targets.append(
            [
                f"kv {name}: nbuf-kv >= redis-server",
                "docs/http.md's bar (no docs/api.md target)",
                f"{fmt(km)} against {fmt(rm)}; median of per-run ratios {fmt_ratio(per)}",
                verdict(ok),
            ]
        )
    rc, kc = cpu.get("redis-server"), cpu.get("nbuf-kv")
    rows.append(
        [
            "server CPU ns per request",
            fmt(rc),
            fmt(kc),
            fmt_ratio(kc / rc if rc and kc else None),
            "",
            "lower",
        ]
    )
    rh, kh = hwm.get("redis-server"), hwm.get("nbuf-kv")
    rows.append(
        [
            "peak RSS (VmHWM), KiB",
            fmt(rh),
            fmt(kh),
            fmt_ratio(kh / rh if rh and kh else None),
            "",
            "lower",
        ]
    )
    md("### Throughput")
    md()
    md.table(
        [
            "",
            "redis-server",
            "nbuf-kv",
            "nbuf-kv / redis-server (medians)",
            "median of per-run ratios",
            "better",
        ],
        rows,
    )
    runs_txt = "; ".join(
        f"run {j}: redis-server {fmt(r_runs[j][0])} / {fmt(r_runs[j][1])}, "
        f"nbuf-kv {fmt(k_runs[j][0])} / {fmt(k_runs[j][1])}"
        for j in sorted(k_runs)
        if j in r_runs
    )
    md(f"Each run (SET / GET ops/s): {runs_txt}.")
    md()
    if r_runs and k_runs:
        path = plots.data(
            "kv.dat",
            [
                [
                    "SET",
                    median([v[0] for v in r_runs.values()]) / 1e6,
                    median([v[0] for v in k_runs.values()]) / 1e6,
                ],
                [
                    "GET",
                    median([v[1] for v in r_runs.values()]) / 1e6,
                    median([v[1] for v in k_runs.values()]) / 1e6,
                ],
            ],
        )
        body = (
            "set style data histograms\nset style histogram clustered gap 1\n"
            "set style fill solid 0.85 border -1\nset boxwidth 0.9\nset yrange [0:*]\n"
            "set ylabel 'M requests/s (median)'\n"
            "set title 'redis-benchmark -t set,get -P 16 -c 50 (higher is better)'\n"
            f"plot {q(path)} using 2:xtic(1) lc rgb '{COLORS['redis-server']}' "
            "title 'redis-server', "
            f"'' using 3 lc rgb '{COLORS['nbuf-kv']}' title 'nbuf-kv'\n"
        )
        md(plots.plot("kv", body, (760, 440)))
        md()

    mem = [r for r in recs if r[0] == "memory"]
    if mem:
        md("### Memory: RSS after random overwrites")
        md()
        md(
            "`redis-benchmark -t set -P 16 -c 50 -r KEYS -d SIZE -n REQUESTS` against a fresh "
            "server each; RSS after the run. nbuf-kv copies values below 64 KiB by default; "
            "`--copy-below 16k` and *slice all* keep more values as slices of the read buffers. "
            "Target: nbuf-kv's RSS (default options) no more than redis-server's at "
            + ", ".join(f"{n} B" for n in KV_MEMORY_SIZES)
            + " values; the verdict reads the ratio of the two RSS figures."
        )
        md()
        cfgs = []
        by = {}
        for r in mem:
            size, keys, reqs, key, label = r[1], r[2], r[3], r[4], r[5]
            if key not in [c[0] for c in cfgs]:
                cfgs.append((key, label))
            by.setdefault((size, keys, reqs), {})[key] = (
                num(r[6]),
                num(r[7]),
                num(r[8]),
                num(r[9]),
            )
        header = ["value size", "keys", "requests", "live values MB"]
        header += [f"{label} RSS MiB" for _k, label in cfgs]
        header += ["nbuf-kv (default) / redis-server", "target <= 1.00"]
        rows, data = [], []
        for (size, keys, reqs), d in by.items():
            base = d.get("redis", (None, None, None, None))[2]
            # The live set sets the scale: with a few MB, each server's fixed RSS decides.
            row = [f"{size} B", fmt(num(keys)), fmt(num(reqs)), fmt(num(size) * num(keys) / 1e6)]
            drow = [size_label(int(size))]
            for k, _label in cfgs:
                rss = d.get(k, (None, None, None, None))[2]
                cell = fmt(rss / 1024 if rss else None)
                if k != "redis" and rss and base:
                    cell += f" ({rss / base:.2f}x)"
                row.append(cell)
                drow.append(rss / 1024 if rss else 0)
            dflt = d.get("default", (None, None, None, None))[2]
            ok = dflt <= base if dflt and base else None
            # Three decimals: a miss by 0.3% must not read as 1.00.
            row += [f"{dflt / base:.3f}" if ok is not None else "n/a", verdict(ok)]
            rows.append(row)
            data.append(drow)
            if ok is not None:
                targets.append(
                    [
                        f"kv memory, {size} B values: nbuf-kv (default) RSS <= redis-server's",
                        "issue 12's target (docs/api.md sets none for the examples)",
                        f"{fmt(dflt / 1024)} MiB against {fmt(base / 1024)} MiB "
                        f"({dflt / base:.3f}x)",
                        verdict(ok),
                    ]
                )
        measured = {int(size) for size, _k, _r in by}
        missing = [n for n in KV_MEMORY_SIZES if n not in measured]
        for n in missing:
            targets.append(
                [
                    f"kv memory, {n} B values: nbuf-kv (default) RSS <= redis-server's",
                    "issue 12's target (docs/api.md sets none for the examples)",
                    "not measured in this run (MEMORY_SPECS)",
                    verdict(None),
                ]
            )
        md.table(header, rows, ["---:"] * 4 + ["---:"] * len(cfgs) + ["---:", "---"])
        md(
            "(x): RSS over redis-server's. *live values*: value size x keys, the most the "
            "servers can hold; where that is a few MB (report.sh's quick mode), each server's "
            "fixed RSS weighs in and the ratio says less about the target."
            + (
                " Not measured in this run: " + ", ".join(f"{n} B" for n in missing) + "."
                if missing
                else ""
            )
        )
        md()
        path = plots.data("kv-memory.dat", data)
        colors = ["#1f77b4", "#d62728", "#ff7f0e", "#9467bd"]
        parts = []
        for i, (_k, label) in enumerate(cfgs):
            src = q(path) if i == 0 else "''"
            xt = ":xtic(1)" if i == 0 else ""
            parts.append(
                f"{src} using {i + 2}{xt} lc rgb '{colors[i % len(colors)]}' title {q(label)}"
            )
        body = (
            "set style data histograms\nset style histogram clustered gap 1\n"
            "set style fill solid 0.85 border -1\nset boxwidth 0.9\nset yrange [0:*]\n"
            "set xlabel 'value size'\nset ylabel 'RSS after the run, MiB'\n"
            "set key outside bottom center horizontal\n"
            "set title 'nbuf-kv memory against redis-server (lower is better)'\n"
            "plot " + ", ".join(parts) + "\n"
        )
        md(plots.plot("kv-memory", body, (900, 500)))
        md()


def http_section(md, plots, recs, targets):
    meta = {r[1]: r[2] for r in recs if r[0] == "meta"}
    runs, files = {}, []
    for r in recs:
        if r[0] == "run":
            runs.setdefault((r[1], r[2]), {})[int(r[3])] = (num(r[4]), num(r[5]))
            if r[2] not in files:
                files.append(r[2])
    md("## nbuf-http against nginx")
    md()
    md(
        "`docs/examples/http/bench.sh` (see [http.md](http.md)): `wrk "
        f"-t{meta.get('wrk_threads', '?')} -c{meta.get('conns', '?')} "
        f"-d{meta.get('duration', '?')}s` "
        f"against each server, {meta.get('workers', '?')} worker(s) each, keep-alive, the "
        f"servers alternated {meta.get('reps', '?')} times per file; "
        f"{meta.get('nginx_version', '?')} "
        "with `sendfile on; tcp_nopush on; access_log off`, nbuf-http with its defaults. Server "
        "CPU per request: user+system time of all the server's threads and processes. Load "
        f"average {meta.get('load_before', '?')} before, {meta.get('load_after', '?')} after."
    )
    md()
    rows, data = [], []
    for f in files:
        n, h = runs.get(("nginx", f), {}), runs.get(("nbuf-http", f), {})
        nm, hm = median([v[0] for v in n.values()]), median([v[0] for v in h.values()])
        nc, hc = median([v[1] for v in n.values()]), median([v[1] for v in h.values()])
        per = median([h[j][0] / n[j][0] for j in h if j in n and n[j][0]])
        ok = None if per is None else per >= 1.0
        label = {"1k": "1 KiB", "1m": "1 MiB"}.get(f, f)
        rows.append(
            [
                label,
                fmt(nm),
                fmt(hm),
                fmt_ratio(hm / nm if nm and hm else None),
                fmt_ratio(per),
                fmt(nc),
                fmt(hc),
                fmt_ratio(hc / nc if nc and hc else None),
                verdict(ok),
            ]
        )
        targets.append(
            [
                f"http, {label} file: nbuf-http req/s >= nginx's",
                "docs/http.md",
                f"{fmt(hm)} against {fmt(nm)} req/s; median of per-run ratios {fmt_ratio(per)}",
                verdict(ok),
            ]
        )
        data.append([label, nm or 0, hm or 0])
    md.table(
        [
            "file",
            "nginx req/s",
            "nbuf-http req/s",
            "nbuf-http / nginx (medians)",
            "median of per-run ratios",
            "nginx CPU µs/req",
            "nbuf-http CPU µs/req",
            "CPU nbuf-http / nginx",
            "target >= nginx req/s",
        ],
        rows,
        ["---"] + ["---:"] * 7 + ["---"],
    )
    md(
        "The per-run ratio compares two back-to-back runs, which share the machine's load of the "
        "moment; it is the figure the verdict reads."
    )
    md()
    if data:
        path = plots.data("http.dat", data)
        n = len(data)
        body = f"set multiplot layout 1,{n} title 'wrk requests/s, median (higher is better)'\n"
        body += (
            "set style data histograms\nset style histogram clustered gap 1\n"
            "set style fill solid 0.85 border -1\nset boxwidth 0.9\nset yrange [0:*]\n"
            "set key outside bottom center horizontal\nset xtics format ''\n"
        )
        for i, row in enumerate(data):
            body += (
                f"set title {q(row[0] + ' file')}\n"
                f"plot {q(path)} every ::{i}::{i} using 2 lc rgb '{COLORS['nginx']}' "
                "title 'nginx', "
                f"'' every ::{i}::{i} using 3 lc rgb '{COLORS['nbuf-http']}' title 'nbuf-http'\n"
            )
        body += "unset multiplot\n"
        md(plots.plot("http", body, (820, 440)))
        md()


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="directory of machine.tsv and the benchmark TSVs")
    ap.add_argument("--out", required=True, help="the Markdown file to write")
    args = ap.parse_args()

    out_dir = os.path.dirname(os.path.abspath(args.out))
    stem = os.path.splitext(os.path.basename(args.out))[0]
    img_dir = os.path.join(out_dir, stem)
    os.makedirs(img_dir, exist_ok=True)
    for f in os.listdir(img_dir):  # the plots of an earlier report
        if f.endswith(".png"):
            os.remove(os.path.join(img_dir, f))
    plots = Plots(args.data, img_dir, out_dir)
    m = read_machine(args.data)
    m["data_dir"] = args.data

    md = Md()
    md("# Benchmarks")
    md()
    md(
        "Generated by `bash tests/bench/report.sh` (all four benchmarks in one run; "
        "`tests/bench/report.py` writes this page from their `--tsv` output). Do not edit: run "
        "it again. Every ratio compares figures of the same run, taken alternately on the same "
        "machine; on a shared machine the absolute numbers move with the load, the in-run "
        "ratios much less."
    )
    md()
    section_machine(md, m)

    body = Md()
    targets = []
    alloc = read_tsv(os.path.join(args.data, "alloc.tsv"))
    cg = read_tsv(os.path.join(args.data, "callgrind.tsv"))
    if alloc:
        alloc_section(body, plots, Alloc(alloc), cg, targets)
    else:
        body("## Allocation\n\n*(not run: no alloc.tsv)*\n")
        if cg:
            callgrind_section(body, None, cg, targets)
    flush = read_tsv(os.path.join(args.data, "flush.tsv"))
    if flush:
        flush_section(body, plots, flush, targets)
    else:
        body("## Frame flush\n\n*(not run: no flush.tsv)*\n")
    kv = read_tsv(os.path.join(args.data, "kv.tsv"))
    if kv:
        kv_section(body, plots, kv, targets)
    else:
        body("## nbuf-kv against redis-server\n\n*(not run: no kv.tsv)*\n")
    http = read_tsv(os.path.join(args.data, "http.tsv"))
    if http:
        http_section(body, plots, http, targets)
    else:
        body("## nbuf-http against nginx\n\n*(not run: no http.tsv)*\n")

    section_targets(md, targets)
    met = sum(1 for t in targets if t[3].startswith("met"))
    missed = sum(1 for t in targets if "missed" in t[3])
    md(f"{met} met, {missed} missed.")
    md()
    md.lines += body.lines
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(md.text())
    sys.stderr.write(
        f"report.py: wrote {args.out} and {len(plots.made)} plots in {img_dir}"
        + (f"; failed: {', '.join(plots.failed)}" if plots.failed else "")
        + "\n"
    )
    return 1 if plots.failed else 0


if __name__ == "__main__":
    sys.exit(main())
