#!/usr/bin/env python3
"""Parser for bench/sync.sh: one line per timed run, then the table.

  sync_parse.py run TOOL N OUT TIME_V EXPECTED_JSON   -> one TSV line
  sync_parse.py table RUNS_TSV                        -> the median table

`run` also checks our tally against the fixture's known counts and exits 1
(with the differences) when they are not equal: the benchmark's
correctness check.
"""

import json
import re
import statistics
import sys


def time_v(path):
    """Wall s, CPU s and peak RSS KiB from `/usr/bin/time -v` output."""
    text = open(path).read()

    def field(name):
        m = re.search(re.escape(name) + r".*?: (.+)", text)
        if not m:
            sys.exit(f"{path}: no '{name}' in /usr/bin/time -v output")
        return m.group(1).strip()

    wall = 0.0
    for part in field("Elapsed (wall clock) time").split(":"):
        wall = wall * 60 + float(part)
    cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
    return wall, cpu, int(field("Maximum resident set size (kbytes)"))


def files(count):
    return count["files"]


def ours(out, exp):
    """(to send, to delete, unchanged) from our --json summary, after
    checking every class against the fixture: the default comparison falls
    back to modification times where a listing has no ETags (directories),
    so it must find exactly the fixture's changes."""
    summary = json.load(open(out))
    tally = summary.get("sync")
    if not tally:
        sys.exit(f"{out}: the summary has no 'sync' tally")
    changed = tally["changed"]
    want = {
        "new": exp["new"],
        "target_only": exp["target_only"],
        "deletes": exp["target_only"],
        "changed.size": exp["changed_size"],
        "target_newer": {"files": 0, "bytes": 0},
        "compared": exp["keys"] + files(exp["target_only"]),
    }
    have = {
        "new": tally["new"],
        "target_only": tally["target_only"],
        "deletes": tally["deletes"],
        "changed.size": changed.get("size", {"files": 0, "bytes": 0}),
        "target_newer": tally["target_newer"],
        "compared": tally["compared"],
    }
    want["changed.mtime"] = exp["changed_same_size"]
    have["changed.mtime"] = changed.get("mtime", {"files": 0, "bytes": 0})
    want["changed (attributes)"] = ["mtime", "size"]
    have["changed (attributes)"] = sorted(changed)
    want["unchanged"] = exp["unchanged"]
    have["unchanged"] = tally["unchanged"]
    bad = [k for k in want if want[k] != have[k]]
    if bad:
        lines = [f"  {k}: want {want[k]}, got {have[k]}" for k in bad]
        sys.exit(f"!! ours: the diff does not match the fixture ({out}):\n" + "\n".join(lines))
    copy = files(tally["new"]) + sum(files(v) for v in changed.values())
    return copy, files(tally["deletes"]), files(tally["unchanged"])


def rclone_sync(err, exp):
    text = open(err).read()
    return text.count("Skipped copy"), text.count("Skipped delete"), None


def rclone_check(err, exp):
    text = open(err).read()

    def notice(pattern):
        m = re.search(r"NOTICE: .*?: (\d+) " + pattern, text)
        return int(m.group(1)) if m else 0

    missing_on_target = len(re.findall(r"ERROR : .*: file not in .*/tgt$", text, re.M))
    missing_on_source = len(re.findall(r"ERROR : .*: file not in .*/src$", text, re.M))
    differ = len(re.findall(r"ERROR : .*: sizes differ", text))
    return missing_on_target + differ, missing_on_source, notice("matching files")


def run(tool, n, out, timev, expected):
    exp = json.load(open(expected))
    if exp["keys"] != int(n):
        sys.exit(f"{expected}: fixture of {exp['keys']} keys, not {n}")
    wall, cpu, rss = time_v(timev)
    parse = {
        "ours": lambda: ours(out, exp),
        "rclone-sync": lambda: rclone_sync(out + ".err", exp),
        "rclone-check": lambda: rclone_check(out + ".err", exp),
        "find": lambda: (None, None, None),
    }[tool]
    copy, delete, same = parse()
    cell = lambda v: "-" if v is None else str(v)
    print("\t".join([tool, n, f"{wall:.3f}", f"{cpu:.3f}", str(rss), cell(copy), cell(delete), cell(same)]))


def table(runs):
    rows = {}
    for line in open(runs):
        tool, n, wall, cpu, rss, copy, delete, same = line.rstrip("\n").split("\t")
        r = rows.setdefault((tool, int(n)), {"wall": [], "cpu": [], "rss": [], "found": set()})
        r["wall"].append(float(wall))
        r["cpu"].append(float(cpu))
        r["rss"].append(int(rss))
        r["found"].add((copy, delete, same))
    order = ["ours", "rclone-sync", "rclone-check", "find"]
    keys = sorted(rows, key=lambda k: (k[1], order.index(k[0])))
    head = f"{'tool':<13} {'keys/side':>9} {'runs':>4} {'wall s':>7} {'keys/s':>9} {'CPU s':>6} {'peak RSS':>9} {'to send':>7} {'to delete':>9} {'unchanged':>9}"
    print(head)
    print("-" * len(head))
    for tool, n in keys:
        r = rows[(tool, n)]
        wall = statistics.median(r["wall"])
        cpu = statistics.median(r["cpu"])
        rss = statistics.median(r["rss"]) / 1024
        found = r["found"]
        copy, delete, same = sorted(found)[0] if len(found) == 1 else ("varies",) * 3
        print(f"{tool:<13} {n:>9,} {len(r['wall']):>4} {wall:>7.2f} {2 * n / wall:>9,.0f} {cpu:>6.2f} {rss:>5.1f} MiB {copy:>7} {delete:>9} {same:>9}")
    sizes = sorted({n for _, n in rows})
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        print(f"\npeak RSS at {hi:,} keys / at {lo:,} keys (median):")
        for tool in order:
            if (tool, lo) in rows and (tool, hi) in rows:
                a = statistics.median(rows[(tool, lo)]["rss"])
                b = statistics.median(rows[(tool, hi)]["rss"])
                print(f"  {tool:<13} {b / a:.2f}x ({a / 1024:.1f} -> {b / 1024:.1f} MiB)")
    print("\nkeys/s: keys listed on both sides (2 x keys/side) / wall time; median of the runs.")
    print("to send / to delete / unchanged: what each tool found (rclone: to copy) ('-': not reported).")


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(*sys.argv[2:7])
    elif sys.argv[1] == "table":
        table(sys.argv[2])
    else:
        sys.exit(__doc__)
