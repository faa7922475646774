"""The mutation-testing summary of the numerical core (``diffusion/``), from mutmut's results.

    mutmut run            # configured in pyproject.toml ([tool.mutmut]); hours on 2 CPUs
    python benchmarks/mutation.py [--equivalent benchmarks/results/mutation_equivalent.txt]

Writes ``benchmarks/results/mutation.{json,md}``: per module, mutants killed, timed out (a
mutant that makes the tests hang is detected), survived, not covered by any test, and not run;
the surviving mutants with their diffs, and those listed as equivalent (a file of
``<mutant name>  <why>`` lines, kept by hand) left out of the score.
"""

from __future__ import annotations

import argparse
import collections
import json
import shlex
import subprocess
import sys
from pathlib import Path

STATUS = {
    "killed": "killed",
    "timeout": "timeout",
    "survived": "survived",
    "no tests": "no_tests",
    "not checked": "not_run",
    "suspicious": "suspicious",
    "skipped": "skipped",
    "segfault": "killed",
}


def _mutmut(*args: str) -> str:
    return subprocess.run(["mutmut", *args], capture_output=True, text=True, check=True).stdout


def read_results() -> dict[str, str]:
    out = {}
    for line in _mutmut("results", "--all", "true").splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            out[name] = STATUS.get(status.strip(), status.strip())
    return out


def module_of(name: str) -> str:
    """``pkg.mod.x_func__mutmut_3`` or ``pkg.mod.xǁClassǁmethod__mutmut_1`` -> ``pkg.mod``."""
    return name.split(".x_")[0].split(".xǁ")[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--equivalent", default="benchmarks/results/mutation_equivalent.txt")
    ap.add_argument("--out", default="benchmarks/results/mutation")
    args = ap.parse_args()
    results = read_results()
    eq_path = Path(args.equivalent)
    equivalent = {}
    if eq_path.exists():
        for line in eq_path.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                name, _, why = line.strip().partition(" ")
                equivalent[name] = why.strip()
    per = collections.defaultdict(collections.Counter)
    for name, status in results.items():
        per[module_of(name)]["equivalent" if name in equivalent else status] += 1
    survivors = sorted(n for n, s in results.items() if s == "survived" and n not in equivalent)
    diffs = {n: _mutmut("show", n) for n in survivors}
    cmd = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    write(Path(args.out), per, survivors, diffs, equivalent, cmd)


def _score(c: collections.Counter, kills_only: bool = False) -> float | None:
    detected = c["killed"] + (0 if kills_only else c["timeout"])
    judged = c["killed"] + c["timeout"] + c["survived"] + c["no_tests"]
    return detected / judged if judged else None


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def write(out: Path, per, survivors, diffs, equivalent, cmd: str) -> None:
    from diffusion_policy_dist.provenance import header

    total = sum(per.values(), collections.Counter())
    head = header(cmd, "cpu")
    md = [
        "# Mutation testing of diffusion/\n",
        f"Command: `mutmut run` (pyproject.toml), then `{cmd}`  ",
        f"Commit `{head['git_commit']}`, {head['date']}\n",
        "Detected = (killed + timed out) / (killed + timed out + survived + no tests); killed = "
        "the same without the timeouts. Equivalent mutants (listed below, with why) and mutants "
        "not run are left out. Each mutant runs in a process forked from mutmut's fork server "
        '(`process_isolation = "forkserver"`): forked from the process that had run the tests, '
        "torch's LAPACK calls deadlocked and surviving mutants were reported as timeouts.\n",
        "| module | killed | timeout | survived | no tests | equivalent | not run | detected "
        "| killed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mod, c in [*sorted(per.items()), ("**all**", total)]:
        md.append(
            f"| {mod} | {c['killed']} | {c['timeout']} | {c['survived']} | {c['no_tests']} "
            f"| {c['equivalent']} | {c['not_run']} | {_pct(_score(c))} "
            f"| {_pct(_score(c, kills_only=True))} |"
        )
    md += ["\n## Equivalent mutants (not counted)\n"]
    md += [f"- `{n}`: {why}" for n, why in sorted(equivalent.items())] or ["(none listed)"]
    md += ["\n## Surviving mutants\n"]
    for n in survivors:
        md += [f"### {n}\n", "```diff", diffs[n].strip(), "```\n"]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    data = {
        "header": head,
        "per_module": {k: dict(v) for k, v in per.items()},
        "survivors": survivors,
        "equivalent": equivalent,
    }
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    print("\n".join(md[: 8 + len(per)]))


if __name__ == "__main__":
    main()
