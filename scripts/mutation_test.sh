#!/usr/bin/env bash
# Mutation testing of the core modules with mutmut (docs/testing.md). Not part of CI: it runs the fast tests
# once per mutant (tens of minutes per module on 2 cores).
#
#   scripts/mutation_test.sh                      # glocal/koopman.py, glocal/hypergrad.py, glocal/dynamics.py
#   scripts/mutation_test.sh hypergrad            # one module (or several: koopman dynamics)
#
# Environment:
#   MUTATION_OUT       report folder (default results/mutation/<date>)
#   MUTATION_JOBS      mutants run in parallel (default 1)
#   MUTATION_WORKDIR   scratch copy of the checkout (default a fresh temporary folder)
#   MUTATION_SAMPLE    run every k-th mutant only, a trial at 1/k of the cost: a number for every module, or
#                      per module, e.g. koopman=2,hypergrad=3,dynamics=3 (a bare number sets the others)
#   MUTATION_SAMPLE_OFFSET  start the every-k-th sample at this index (default 0): offsets 0..k-1 give
#                      disjoint samples, e.g. a fresh sample to measure tests written against another
#   MUTATION_MUTANTS   a file of mutant names, one a line (e.g. a previous run's survivors.txt): run only those
#   MUTATION_TESTS     test files to run instead of pyproject's selection, space-separated, e.g.
#                      "tests/test_koopman.py tests/test_hypergrad.py tests/test_dynamics.py"
# Needs the `mutation` extra: pip install -e ".[mutation]". The settings (modules, test selection) are
# [tool.mutmut] in pyproject.toml; the tests use the hypothesis profile `mutation` (5 fixed examples).
# Writes run.log, results.txt (every mutant and its status), summary.json (per module: mutants generated and
# run, counts by status, mutant-seconds, score) and survivors.txt (one name a line; their diffs in
# survivors.diff).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
modules=("$@")
[ ${#modules[@]} -eq 0 ] && modules=(koopman hypergrad dynamics)
for m in "${modules[@]}"; do
  [ -f "$repo/glocal/$m.py" ] || { echo "mutation_test: no module glocal/$m.py" >&2; exit 2; }
done
command -v mutmut >/dev/null || { echo "mutation_test: mutmut not found; pip install -e '.[mutation]'" >&2; exit 2; }
if [ -n "${MUTATION_MUTANTS:-}" ]; then
  [ -f "$MUTATION_MUTANTS" ] || { echo "mutation_test: MUTATION_MUTANTS=$MUTATION_MUTANTS is not a file" >&2; exit 2; }
  MUTATION_MUTANTS=$(cd "$(dirname "$MUTATION_MUTANTS")" && pwd)/$(basename "$MUTATION_MUTANTS")
fi

out=${MUTATION_OUT:-$repo/results/mutation/$(date +%Y%m%d-%H%M%S)}
work=${MUTATION_WORKDIR:-$(mktemp -d -t glocal-mutation.XXXXXX)}
mkdir -p "$out" "$work"
out=$(cd "$out" && pwd)

# mutmut writes mutants/ next to the sources: work in a copy of the checkout (tracked and untracked files,
# ignored ones left out), never in the checkout itself
(cd "$repo" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - 2>/dev/null) | (cd "$work" && tar -xf -)
cd "$work"
if [ -n "${MUTATION_TESTS:-}" ]; then
  for t in $MUTATION_TESTS; do [ -f "$t" ] || { echo "mutation_test: MUTATION_TESTS names $t, not a file" >&2; exit 2; }; done
  # the scratch copy's pyproject.toml only: replace the test selection of [tool.mutmut]
  python3 - "$MUTATION_TESTS" <<'PY'
import re, sys
from pathlib import Path
p = Path("pyproject.toml")
files = ", ".join(f'"{t}"' for t in sys.argv[1].split())
text, n = re.subn(r"pytest_add_cli_args_test_selection = \[[^\]]*\]", f"pytest_add_cli_args_test_selection = [{files}]",
                  p.read_text())
if n != 1:
    sys.exit("mutation_test: no pytest_add_cli_args_test_selection in pyproject.toml")
p.write_text(text)
PY
fi

export HYPOTHESIS_PROFILE=mutation OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
patterns=()
for m in "${modules[@]}"; do patterns+=("glocal.$m.*"); done

echo "mutation_test: modules ${modules[*]} in $work -> $out${MUTATION_TESTS:+ (tests: $MUTATION_TESTS)}"
start=$(date +%s)
if [ -n "${MUTATION_SAMPLE:-}${MUTATION_MUTANTS:-}${MUTATION_SAMPLE_OFFSET:-}" ]; then
  # generate the mutants and record which tests reach which function (a pattern that names no mutant),
  # then run the chosen mutants of the chosen modules
  mutmut run --max-children "${MUTATION_JOBS:-1}" "glocal.__no_mutant__*" > "$out/stats.log" 2>&1 || true
  mapfile -t names < <(python3 - "${MUTATION_SAMPLE:-1}" "${MUTATION_MUTANTS:-}" "${MUTATION_SAMPLE_OFFSET:-0}" "${modules[@]}" <<'PY'
import json, sys
spec, names_file, offset, modules = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
if not offset.isdigit():
    sys.exit(f"mutation_test: MUTATION_SAMPLE_OFFSET={offset!r}: expected an integer >= 0")
every = {}
for part in filter(None, spec.split(",")):
    m, _, k = part.rpartition("=")
    if not k.isdigit() or int(k) < 1 or (m and m not in modules):
        sys.exit(f"mutation_test: MUTATION_SAMPLE entry {part!r}: expected k or module=k (k >= 1, module among {modules})")
    every[m] = int(k)
wanted = set(open(names_file).read().split()) if names_file else None
for m in modules:
    keys = sorted(json.load(open(f"mutants/glocal/{m}.py.meta"))["exit_code_by_key"])
    keys = keys[int(offset) :: every.get(m, every.get("", 1))]
    for k in keys:
        if wanted is None or k in wanted:
            print(k)
PY
)
  [ ${#names[@]} -gt 0 ] || { echo "mutation_test: no mutant selected" >&2; exit 2; }
  echo "mutation_test: ${#names[@]} mutants selected (MUTATION_SAMPLE=${MUTATION_SAMPLE:-all}, offset ${MUTATION_SAMPLE_OFFSET:-0}${MUTATION_MUTANTS:+, from $MUTATION_MUTANTS})"
  mutmut run --max-children "${MUTATION_JOBS:-1}" "${names[@]}" 2>&1 | tail -n 40 | tee "$out/run.log"
else
  mutmut run --max-children "${MUTATION_JOBS:-1}" "${patterns[@]}" 2>&1 | tail -n 40 | tee "$out/run.log"
fi
elapsed=$(( $(date +%s) - start ))

mutmut results --all true > "$out/results.txt" 2>&1 || true
mutmut export-cicd-stats >/dev/null 2>&1 || true
[ -f mutants/mutmut-cicd-stats.json ] && cp mutants/mutmut-cicd-stats.json "$out/stats.json"
python3 - "$out" "$elapsed" "${modules[@]}" <<'PY'
import json, sys
from pathlib import Path
from mutmut.stats import status_by_exit_code

out, elapsed, modules = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
per_module, survivors = {}, []
for m in modules:
    meta = json.load(open(f"mutants/glocal/{m}.py.meta"))
    codes, durations = meta["exit_code_by_key"], meta.get("durations_by_key", {})
    counts = {}
    for name, code in codes.items():
        status = status_by_exit_code[code]
        counts[status] = counts.get(status, 0) + 1
        if status == "survived":
            survivors.append(name)
    killed = counts.get("killed", 0)
    judged = killed + sum(counts.get(s, 0) for s in ("survived", "timeout", "suspicious", "segfault"))
    per_module[m] = {
        "generated": len(codes), "run": len(codes) - counts.pop("not checked", 0), "counts": counts,
        # mutant-seconds: the sum of the mutants' run times (the wall time when MUTATION_JOBS=1)
        "mutant_seconds": round(sum(durations.get(k, 0.0) for k, c in codes.items() if c is not None), 1),
        "score": killed / judged if judged else None,
    }
total = {k: sum(v[k] for v in per_module.values()) for k in ("generated", "run")}
judged = {s: sum(v["counts"].get(s, 0) for v in per_module.values())
          for s in ("killed", "survived", "timeout", "suspicious", "segfault")}
n = sum(judged.values())
summary = {"modules": modules, "elapsed_s": elapsed, "per_module": per_module, **total, "counts": judged,
           "score": judged["killed"] / n if n else None,
           "score_definition": "killed / (killed + survived + timeout + suspicious + segfault)"}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
(out / "survivors.txt").write_text("".join(f"{s}\n" for s in sorted(survivors)))
for m, v in per_module.items():
    score = v["score"] if v["score"] is None else round(v["score"], 3)
    print(f"mutation_test: {m}: {v['generated']} generated, {v['run']} run, {v['counts']}, "
          f"{v['mutant_seconds']:.0f} mutant-s, score {score}")
print(f"mutation_test: {len(survivors)} survivors in {elapsed} s ({out / 'survivors.txt'}; "
      f"inspect one with `mutmut show NAME` in the work dir)")
PY
while read -r name; do mutmut show "$name" 2>&1; echo; done < "$out/survivors.txt" > "$out/survivors.diff" || true
