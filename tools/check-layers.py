#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Check that no file in src/ includes or calls a layer above its own.

The layers, the arrows allowed for now and the files allowed over the line
limit are listed in tools/layers.txt (read it first). From each src/*.c the
script takes the nbuf_* functions and variables it defines (non-static),
and from the headers the nbuf_* inline functions and macros (owned by the
file whose "---- x.c ----" section holds them, else by the header). An
arrow is a file using a symbol another file owns (a call, a read, an
inline function or macro expanded, a header declaring it) or including a
header. (Functions a macro generates, like the typed reads, are not seen:
nothing inside nbuf calls them.) It fails on:
- an arrow from a lower layer to a higher one that layers.txt does not
  allow, and an allowed arrow that no longer exists (so the list shrinks);
- a cycle of files through code (calls, inline functions, macros), leaving
  out the allowed arrows;
- a use of a layer past the interface layers.txt gives it;
- a file over max-lines lines that layers.txt does not list.
Each failure names the arrow, the symbol and the file:line of a use.

Usage: tools/check-layers.py [--root DIR] [--graph]
  --graph  also print every arrow between two files (one symbol each)
Exit status: 0 clean, 1 failures, 2 a bad layers.txt or a file in no layer.
Python 3 standard library only.
"""
import os
import re
import sys

MAX_LINES_DEFAULT = 600

IDENT = re.compile(r"\bnbuf_\w+")
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)
SECTION = re.compile(r"^/\* -{2,} (\w+\.[ch]) -{2,} \*/", re.M)
DEFINE = re.compile(r"^\s*#\s*define\s+(\w+)")


def strip_c(text):
    """Comments and string/char literals blanked, newlines kept (so offsets
    keep their line numbers)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "/" and text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(c + re.sub(r"[^\n]", " ", text[i + 1 : j - 1]) + c)
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def split_preprocessor(text):
    """(code with every preprocessor line blanked, [(line, directive text)])."""
    lines = text.split("\n")
    code, directives = [], []
    k = 0
    while k < len(lines):
        if lines[k].lstrip().startswith("#"):
            start, body = k, [lines[k]]
            while lines[k].endswith("\\") and k + 1 < len(lines):
                k += 1
                body.append(lines[k])
            directives.append((start + 1, "\n".join(body)))
            code.extend([""] * len(body))
        else:
            code.append(lines[k])
        k += 1
    return "\n".join(code), directives


def line_of(text, pos):
    return text.count("\n", 0, pos) + 1


def top_level(code):
    """Top-level declarations: (head, body or None, offset of head, offset of
    body). head is the text before a function body or the whole declaration."""
    decls = []
    i, n, start = 0, len(code), 0
    paren = 0
    while i < n:
        c = code[i]
        if c == "(":
            paren += 1
        elif c == ")":
            paren -= 1
        elif c == ";" and paren == 0:
            decls.append((code[start:i], None, start, None))
            start = i + 1
        elif c == "{" and paren == 0:
            head = code[start:i]
            depth, j = 1, i + 1
            while j < n and depth:
                if code[j] == "{":
                    depth += 1
                elif code[j] == "}":
                    depth -= 1
                j += 1
            if head.rstrip().endswith(")") and "=" not in head:
                decls.append((head, code[i:j], start, i))
                start = j
                i = j
                continue
            i = j  # a struct, enum or initializer: the declaration ends at ';'
            continue
        i += 1
    return decls


def words(s):
    return set(re.findall(r"\b\w+\b", s))


def declared_name(head):
    """The nbuf_* name a top-level declaration defines, or None."""
    w = words(head)
    if "static" in w or "extern" in w or "typedef" in w:
        return None
    m = re.search(r"\b(nbuf_\w+)\s*\(", head)
    if m:
        return m.group(1)
    before = head.split("=", 1)[0]
    before = re.sub(r"\b(struct|enum|union)\s+\w+", " ", before)
    before = re.sub(r"__attribute__\s*\(\(.*?\)\)", " ", before, flags=re.S)
    names = IDENT.findall(before)
    return names[-1] if names else None


class Source:
    def __init__(self, root, name):
        self.name = name
        with open(os.path.join(root, "src", name), encoding="utf-8") as f:
            self.raw = f.read()
        self.nlines = self.raw.count("\n") + (0 if self.raw.endswith("\n") else 1)
        self.includes = [
            (m.group(1), line_of(self.raw, m.start())) for m in INCLUDE.finditer(self.raw)
        ]
        self.code, self.directives = split_preprocessor(strip_c(self.raw))
        self.sections = [(line_of(self.raw, m.start()), m.group(1)) for m in SECTION.finditer(self.raw)]
        self.defs = {}  # symbol -> (owner file, line)
        self.declared = set()  # symbols a header declares
        self.uses = []  # (owner of the using code, symbol, line, "use" or "decl")

    def owner_at(self, line):
        owner = self.name
        for start, sec in self.sections:
            if start <= line:
                owner = sec
        return owner

    def scan(self):
        header = self.name.endswith(".h")
        for head, body, hoff, boff in top_level(self.code):
            if header:
                line = line_of(self.code, hoff + len(head) - len(head.lstrip()))
                owner = self.owner_at(line)
                if body is None:
                    # A declaration makes a symbol visible to every includer:
                    # it belongs to its section's file, which thus uses it.
                    for u in IDENT.finditer(head):
                        line = line_of(self.code, hoff + u.start())
                        self.uses.append((owner, u.group(0), line, "decl"))
                        self.declared.add(u.group(0))
                    continue
                m = re.search(r"\b(nbuf_\w+)\s*\(", head)
                if m:
                    self.defs[m.group(1)] = (owner, line)
                for u in IDENT.finditer(body):
                    line = line_of(self.code, boff + u.start())
                    self.uses.append((owner, u.group(0), line, "use"))
            else:
                name = declared_name(head)
                if name:
                    line = line_of(self.code, hoff + head.find(name))
                    self.defs.setdefault(name, (self.name, line))
        # Macros: an nbuf_* macro of a header is a symbol of its section's
        # file; what other macros use counts for the file defining them.
        for line, text in self.directives:
            m = DEFINE.match(text)
            if not m:
                continue
            owner = self.name
            if header and m.group(1).startswith("nbuf_"):
                owner = self.owner_at(line)
                self.defs[m.group(1)] = (owner, line)
            for k, part in enumerate(text.split("\n")):
                body = part[m.end() :] if k == 0 else part
                for u in IDENT.finditer(body):
                    self.uses.append((owner, u.group(0), line + k, "use"))
        if not header:
            for m in IDENT.finditer(self.code):
                self.uses.append((self.name, m.group(0), line_of(self.code, m.start()), "use"))


def read_layers(path):
    """layers: [(name, [files])], allow: {(from, to, symbol): line},
    long: {file: line}, max_lines, interfaces: {(lower, upper): (names, line)}."""
    layers, allow, long_ok, interfaces = [], {}, {}, {}
    max_lines = MAX_LINES_DEFAULT
    errors = []
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            kind, _, rest = text.partition(" ")
            if kind == "layer":
                name, _, files = rest.partition(":")
                layers.append((name.strip(), files.split()))
            elif kind == "allow":
                parts = rest.split()
                if len(parts) != 3 or "#" not in line:
                    errors.append(f"{path}:{no}: allow needs <from> <to> <symbol>  # why")
                    continue
                allow[tuple(parts)] = no
            elif kind == "long":
                parts = rest.split()
                if len(parts) != 1 or "#" not in line:
                    errors.append(f"{path}:{no}: long needs <file>  # why")
                    continue
                long_ok[parts[0]] = no
            elif kind == "interface":
                m = re.match(r"(\w+) to (\w+):(.*)", rest)
                if not m:
                    errors.append(f"{path}:{no}: interface needs <lower> to <upper>: <names>")
                    continue
                interfaces[(m.group(1), m.group(2))] = (set(m.group(3).split()), no)
            elif kind == "max-lines":
                max_lines = int(rest)
            else:
                errors.append(f"{path}:{no}: unknown entry '{kind}'")
    return layers, allow, long_ok, max_lines, interfaces, errors


def cycles(edges):
    """A shortest cycle through each strongly connected component of more
    than one file (Tarjan, then a breadth-first search in the component)."""
    succ = {}
    for a, b in edges:
        succ.setdefault(a, set()).add(b)
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(succ.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(succ):
        if v not in index:
            visit(v)
    out = []
    for comp in comps:
        start = min(comp)
        prev, todo = {start: None}, [start]
        while todo:
            v = todo.pop(0)
            for w in sorted(succ[v] & comp):
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    out.append((sorted(comp), path[::-1] + [start]))
                    todo = []
                    break
                if w not in prev:
                    prev[w] = v
                    todo.append(w)
    return out


def main(argv):
    root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    graph = False
    args = argv[1:]
    while args:
        a = args.pop(0)
        if a == "--root" and args:
            root = args.pop(0)
        elif a == "--graph":
            graph = True
        else:
            usage = __doc__[__doc__.index("Usage:") :].strip()
            print(usage, file=sys.stdout if a in ("-h", "--help") else sys.stderr)
            return 0 if a in ("-h", "--help") else 2
    layers_path = os.path.join(root, "tools", "layers.txt")
    rel = os.path.relpath(layers_path, root)
    layers, allow, long_ok, max_lines, interfaces, errors = read_layers(layers_path)
    rank, layer_name = {}, {}
    for r, (name, files) in enumerate(layers):
        for f in files:
            if f in rank:
                errors.append(f"{rel}: {f} is in two layers")
            rank[f], layer_name[f] = r, name
    src = os.path.join(root, "src")
    names = sorted(f for f in os.listdir(src) if f.endswith((".c", ".h")))
    errors += [f"{rel}: src/{f} is in no layer: add it to one" for f in names if f not in rank]
    errors += [f"{rel}: {f} is listed but src/{f} does not exist" for f in rank if f not in names]
    layer_names = {name for name, _ in layers}
    for (lower, upper), (_, no) in interfaces.items():
        if lower not in layer_names or upper not in layer_names:
            errors.append(f"{rel}:{no}: interface names a layer that does not exist")
    if errors:
        print("\n".join(errors))
        return 2

    srcs = {f: Source(root, f) for f in names}
    owner = {}
    for s in srcs.values():
        s.scan()
        for sym, (own, line) in s.defs.items():
            if own not in rank:
                print(f"src/{s.name}:{line}: section '{own}' is in no layer")
                return 2
            owner.setdefault(sym, own)

    # (from, to) -> {symbol or "#include": (file, line, kind)}
    arrows = {}
    for s in srcs.values():
        for inc, line in s.includes:
            if inc in srcs and inc != s.name:
                arrows.setdefault((s.name, inc), {}).setdefault("#include", (s.name, line, "include"))
        for frm, sym, line, kind in s.uses:
            to = owner.get(sym)
            if to is None or to == frm:
                continue
            seen = arrows.setdefault((frm, to), {})
            if sym not in seen or (kind == "use" and seen[sym][2] != "use"):
                seen[sym] = (s.name, line, kind)

    def describe(frm, to):
        return f"{frm} ({layer_name[frm]}) -> {to} ({layer_name[to]})"

    up, allowed = [], []
    for (frm, to), syms in sorted(arrows.items()):
        for sym, where in sorted(syms.items()):
            if (frm, to, sym) in allow:
                allowed.append((frm, to, sym, where))
            elif rank[to] > rank[frm]:
                up.append((frm, to, sym, where))
    stale = sorted(k for k in allow if k not in {(a, b, c) for a, b, c, _ in allowed})
    # A layer that uses another only through an interface: the headers it
    # names (what they define or declare) and the symbols it lists.
    narrow = []
    for (lower, upper), (through, no) in sorted(interfaces.items()):
        ok = set(through)
        for h in through:
            if h in srcs:
                ok |= srcs[h].declared | {k for k, (o, _) in srcs[h].defs.items()}
        for (frm, to), syms in sorted(arrows.items()):
            if layer_name[frm] != upper or layer_name[to] != lower:
                continue
            for sym, where in sorted(syms.items()):
                if (to if sym == "#include" else sym) not in ok and (frm, to, sym) not in allow:
                    narrow.append((frm, to, sym, where, no))
    # Cycles through code (calls, inline functions, macros) of the arrows
    # that are not allowed: an allowed one is counted above and goes with its
    # entry.
    code_edges = [
        (frm, to)
        for (frm, to), syms in arrows.items()
        if any(k == "use" and (frm, to, sym) not in allow for sym, (_, _, k) in syms.items())
    ]
    loops = cycles(code_edges)
    long_files = {f: srcs[f].nlines for f in names if srcs[f].nlines > max_lines}
    long_bad = [f for f in long_files if f not in long_ok]
    long_stale = sorted(f for f in long_ok if f not in long_files)

    if graph:
        print("arrows between files (lower layers first; one symbol each):")
        for (frm, to), syms in sorted(arrows.items(), key=lambda a: (rank[a[0][0]], a[0])):
            sym, (f, line, kind) = sorted(syms.items())[0]
            more = f" (+{len(syms) - 1} more)" if len(syms) > 1 else ""
            mark = "  UP" if rank[to] > rank[frm] else ""
            mark += "  (allowed)" if any((frm, to, k) in allow for k in syms) else ""
            print(f"  {describe(frm, to)}: {sym} src/{f}:{line}{more}{mark}")
        print()

    print(f"check-layers: {len(names)} files in {len(layers)} layers, {len(arrows)} arrows between files")
    if allowed:
        print(f"allowed for now ({rel}), {len(allowed)} arrows:")
        for frm, to, sym, (f, line, _) in allowed:
            print(f"  src/{f}:{line}: {describe(frm, to)}: {sym}  ({rel}:{allow[(frm, to, sym)]})")
    for f in sorted(long_files):
        if f in long_ok:
            print(f"allowed for now ({rel}:{long_ok[f]}): src/{f} has {long_files[f]} lines (over {max_lines})")
    failed = False
    if up:
        failed = True
        print(f"FAIL: {len(up)} arrows back up (a lower layer includes or uses a higher one):")
        for frm, to, sym, (f, line, kind) in up:
            what = {"include": "includes it", "decl": f"declares {sym}"}.get(kind, f"uses {sym}")
            print(f"  src/{f}:{line}: {describe(frm, to)}: {what}")
    if stale:
        failed = True
        print(f"FAIL: {len(stale)} allowed arrows no longer exist: remove them from {rel}")
        for frm, to, sym in stale:
            print(f"  {rel}:{allow[(frm, to, sym)]}: {frm} -> {to} {sym}")
    if loops:
        failed = True
        print(f"FAIL: {len(loops)} cycles through code (calls, inline functions, macros):")
        for comp, path in loops:
            print(f"  {len(comp)} files reach each other: {', '.join(comp)}; for instance")
            for frm, to in zip(path, path[1:]):
                sym, (f, line, _) = sorted(
                    (k, v) for k, v in arrows[(frm, to)].items() if v[2] == "use"
                )[0]
                print(f"    src/{f}:{line}: {frm} -> {to}: {sym}")
    if narrow:
        failed = True
        print(f"FAIL: {len(narrow)} uses past an interface (the layer above uses only what it names):")
        for frm, to, sym, (f, line, kind), no in narrow:
            what = "includes it" if sym == "#include" else f"uses {sym}"
            print(f"  src/{f}:{line}: {describe(frm, to)}: {what}  (interface: {rel}:{no})")
    if long_bad:
        failed = True
        print(f"FAIL: files over {max_lines} lines (split them by concern):")
        for f in long_bad:
            print(f"  src/{f}: {long_files[f]} lines")
    if long_stale:
        failed = True
        print(f"FAIL: files allowed over {max_lines} lines that no longer are: remove them from {rel}")
        for f in long_stale:
            print(f"  {rel}:{long_ok[f]}: {f}")
    if failed:
        return 1
    print("check-layers: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
