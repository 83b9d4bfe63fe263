#!/usr/bin/env python3
"""Summarise an Autobahn|TestSuite index.json (used by ci/autobahn.sh).

usage: ci/autobahn_summary.py --line [--strict] INDEX_JSON
         one line on stdout (failed / non-strict case lists on stderr):
           autobahn: N cases, P ok, F failed, X non-strict, U unimplemented, I informational
         exit 1 if any case FAILED (with --strict: or is NON-STRICT), 2 if no cases, else 0
       ci/autobahn_summary.py INDEX_JSON [TOOL_SUMMARY_LINE]
         the Markdown report on stdout (results/autobahn/summary.md)

Verdicts (what the HTML report paints red is FAILED): FAILED = behavior not in
OK/NON-STRICT/INFORMATIONAL/NO_CLOSE/UNIMPLEMENTED, or behaviorClose FAILED/UNCLEAN;
NON-STRICT also covers NO_CLOSE and behaviorClose WRONG CODE.
"""
import datetime
import json
import sys

COLS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]


def verdict(case):
    b, bc = case.get("behavior"), case.get("behaviorClose")
    if b == "UNIMPLEMENTED":
        return "UNIMPLEMENTED"
    if b not in ("OK", "NON-STRICT", "INFORMATIONAL", "NO_CLOSE") or bc in ("FAILED", "UNCLEAN"):
        return "FAILED"
    if b == "INFORMATIONAL":
        return "INFORMATIONAL"
    if b in ("NON-STRICT", "NO_CLOSE") or bc == "WRONG CODE":
        return "NON-STRICT"
    return "OK"


def key(cid):
    return [int(x) if x.isdigit() else x for x in cid.split(".")]


def line(path, strict):
    with open(path) as f:
        agents = json.load(f)
    totals = dict.fromkeys(COLS, 0)
    bad, soft = [], []
    for cases in agents.values():
        for cid in sorted(cases, key=key):
            c = cases[cid]
            v = verdict(c)
            totals[v] += 1
            label = f"{cid}({c.get('behavior')}/{c.get('behaviorClose')})"
            if v == "FAILED":
                bad.append(label)
            elif v == "NON-STRICT":
                soft.append(label)
    n = sum(totals.values())
    if n == 0:
        print(f"autobahn: ERROR: 0 cases in {path}", file=sys.stderr)
        return 2
    for label, lst in (("failed", bad), ("non-strict", soft)):
        if lst:
            print(f"autobahn: {label}: " + " ".join(lst[:40]) + (" ..." if len(lst) > 40 else ""),
                  file=sys.stderr)
    print(f"autobahn: {n} cases, {totals['OK']} ok, {totals['FAILED']} failed, "
          f"{totals['NON-STRICT']} non-strict, {totals['UNIMPLEMENTED']} unimplemented, "
          f"{totals['INFORMATIONAL']} informational")
    return 1 if bad or (strict and soft) else 0


def main():
    args = sys.argv[1:]
    if args[:1] == ["--line"]:
        strict = args[1:2] == ["--strict"]
        rest = args[2:] if strict else args[1:]
        if len(rest) != 1:
            sys.exit(__doc__)
        sys.exit(line(rest[0], strict))
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        agents = json.load(f)
    tool_line = sys.argv[2] if len(sys.argv) == 3 else "(not given)"

    out = ["# Autobahn|TestSuite results", ""]
    out.append(f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}")
    out.append(f"- Tool summary: `{tool_line.strip()}`")
    for agent, cases in sorted(agents.items()):
        totals = dict.fromkeys(COLS, 0)
        sections = {}
        bad, soft = [], []
        secs = 0
        for cid in sorted(cases, key=key):
            c = cases[cid]
            v = verdict(c)
            totals[v] += 1
            sec = sections.setdefault(int(key(cid)[0]), dict.fromkeys(COLS, 0))
            sec[v] += 1
            secs += c.get("duration", 0) or 0
            label = f"{cid} ({c.get('behavior')}/{c.get('behaviorClose')})"
            if v == "FAILED":
                bad.append(label)
            elif v == "NON-STRICT":
                soft.append(label)
        out.append(f"- Agent: `{agent}`, {len(cases)} cases, "
                   f"case time {secs / 1000:.1f} s (sum of per-case durations)")
        out.append("")
        out.append("| " + " | ".join(COLS) + " |")
        out.append("|" + "---:|" * len(COLS))
        out.append("| " + " | ".join(str(totals[c]) for c in COLS) + " |")
        out.append("")
        out.append("| Section | Cases | " + " | ".join(COLS) + " |")
        out.append("|---:|---:|" + "---:|" * len(COLS))
        for s in sorted(sections):
            row = sections[s]
            out.append(f"| {s} | {sum(row.values())} | " + " | ".join(str(row[c]) for c in COLS) + " |")
        for title, lst in (("Failed cases", bad), ("Non-strict cases", soft)):
            if lst:
                out.append("")
                out.append(f"{title} ({len(lst)}): " + ", ".join(lst[:60]) + (" ..." if len(lst) > 60 else ""))
    print("\n".join(out))


if __name__ == "__main__":
    main()
