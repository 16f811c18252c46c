#!/usr/bin/env python3
"""Flat and inclusive profile of a NativeAOT process from `perf script` output (bench/profile.sh).

perf does not symbolise these stripped executables correctly; their addresses in `perf script` are the
executable's own virtual addresses, which are the .dbg file's, so they are mapped here with `nm -n` of the .dbg.
    perf script -i perf.data -F comm,tid,ip,sym,dso | bench/perfsym.py EXE_NAME SYMBOLS.dbg [TOP]
Prints: the share of samples per symbol (self), per symbol anywhere on the stack (inclusive, each symbol counted
once per sample), and per group (kernel, libc, libcrypto, the executable by namespace prefix).
FOCUS=TEXT (environment) adds what runs under the first frame whose symbol contains TEXT: its callees, inclusive and
self, as shares of all samples (what a symbol's inclusive share is made of).
"""
import bisect, collections, os, re, subprocess, sys

exe, dbg = sys.argv[1], sys.argv[2]
top = int(sys.argv[3]) if len(sys.argv) > 3 else 60
addrs, names = [], []
for line in subprocess.run(["nm", "-n", "--defined-only", dbg], capture_output=True, text=True, check=True).stdout.splitlines():
    parts = line.split(" ", 2)
    if len(parts) == 3 and parts[1] in "tTwW":
        addrs.append(int(parts[0], 16))
        names.append(parts[2])

def sym_of(addr):
    i = bisect.bisect_right(addrs, addr) - 1
    return names[i] if i >= 0 else hex(addr)

frame_re = re.compile(r"^\s+([0-9a-f]+)\s+(.*?)\s+\((.*)\)$")
samples = []
cur = None
for line in sys.stdin:
    if not line.strip():
        if cur:
            samples.append(cur)
        cur = None
        continue
    m = frame_re.match(line)
    if m:
        addr, sym, dso = m.groups()
        if dso.endswith("/" + exe):
            sym = sym_of(int(addr, 16))
        else:
            sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
            if sym == "[unknown]":
                sym = "[unknown " + dso.rsplit("/", 1)[-1] + "]"
            if dso.startswith("[kernel"):
                sym = "[k] " + sym
            elif not dso.endswith(exe):
                sym = sym + " [" + dso.rsplit("/", 1)[-1] + "]"
        if cur is None:
            cur = []
        cur.append(sym)
    elif cur is None:
        cur = []
if cur:
    samples.append(cur)
samples = [s for s in samples if s]
n = len(samples)
self_c = collections.Counter(s[0] for s in samples)
incl = collections.Counter()
for s in samples:
    for sym in set(s):
        incl[sym] += 1

def group(sym):
    if sym.startswith("[k]"):
        return "kernel"
    m = re.search(r"\[([^\]]+)\]$", sym)
    if m:
        return m.group(1)
    m = re.match(r"([A-Za-z0-9]+_[A-Za-z0-9]+(?:_[A-Za-z0-9]+)?)", sym)
    return exe + ":" + (m.group(1) if m else sym[:30])
groups = collections.Counter(group(s[0]) for s in samples)
print(f"{n} samples\n\n## self, by group")
for g, c in groups.most_common(25):
    print(f"{100 * c / n:6.2f}%  {g}")
print("\n## self, by symbol")
for sym, c in self_c.most_common(top):
    print(f"{100 * c / n:6.2f}%  {sym[:160]}")
print("\n## inclusive, by symbol")
for sym, c in incl.most_common(top * 2):
    print(f"{100 * c / n:6.2f}%  {sym[:160]}")

focus = os.environ.get("FOCUS")
if focus:
    under, under_self, hits = collections.Counter(), collections.Counter(), 0
    for s in samples:
        # frames are leaf first: the outermost frame that matches, and everything nearer the leaf
        idx = [i for i, sym in enumerate(s) if focus in sym]
        if not idx:
            continue
        hits += 1
        callees = s[:idx[-1]]
        under_self[callees[0] if callees else s[idx[-1]]] += 1
        for sym in set(callees):
            under[sym] += 1
    print(f"\n## under {focus}: {100 * hits / n:.2f}% of the samples; its callees, inclusive")
    for sym, c in under.most_common(top):
        print(f"{100 * c / n:6.2f}%  {sym[:160]}")
    print(f"\n## under {focus}: self")
    for sym, c in under_self.most_common(top // 2):
        print(f"{100 * c / n:6.2f}%  {sym[:160]}")
