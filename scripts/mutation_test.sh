#!/usr/bin/env bash
# Mutation testing of the core modules with mutmut (docs/testing.md). Not part of CI: it runs the fast tests
# once per mutant (tens of minutes per module on 2 cores).
#
#   scripts/mutation_test.sh                      # glocal/koopman.py, glocal/hypergrad.py, glocal/dynamics.py
#   scripts/mutation_test.sh hypergrad            # one module (or several: koopman dynamics)
#
# Environment: MUTATION_OUT (report folder, default results/mutation/<date>), MUTATION_JOBS (parallel
# mutants, default 1), MUTATION_WORKDIR (scratch copy, default a fresh temporary folder), MUTATION_SAMPLE=k
# (run every k-th mutant only: a trial that estimates the score and the duration at 1/k of the cost).
# Needs the `mutation` extra: pip install -e ".[mutation]". The settings (modules, test selection) are
# [tool.mutmut] in pyproject.toml; the tests use the hypothesis profile `mutation` (5 fixed examples).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
modules=("$@")
[ ${#modules[@]} -eq 0 ] && modules=(koopman hypergrad dynamics)
for m in "${modules[@]}"; do
  [ -f "$repo/glocal/$m.py" ] || { echo "mutation_test: no module glocal/$m.py" >&2; exit 2; }
done
command -v mutmut >/dev/null || { echo "mutation_test: mutmut not found; pip install -e '.[mutation]'" >&2; exit 2; }

out=${MUTATION_OUT:-$repo/results/mutation/$(date +%Y%m%d-%H%M%S)}
work=${MUTATION_WORKDIR:-$(mktemp -d -t glocal-mutation.XXXXXX)}
mkdir -p "$out" "$work"

# mutmut writes mutants/ next to the sources: work in a copy of the checkout (tracked and untracked files,
# ignored ones left out), never in the checkout itself
(cd "$repo" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - 2>/dev/null) | (cd "$work" && tar -xf -)
cd "$work"

export HYPOTHESIS_PROFILE=mutation OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
patterns=()
for m in "${modules[@]}"; do patterns+=("glocal.$m.*"); done

echo "mutation_test: modules ${modules[*]} in $work -> $out"
start=$(date +%s)
if [ -n "${MUTATION_SAMPLE:-}" ]; then
  # generate the mutants and record which tests reach which function (a pattern that names no mutant),
  # then run every k-th mutant of the chosen modules
  mutmut run --max-children "${MUTATION_JOBS:-1}" "glocal.__no_mutant__*" > "$out/stats.log" 2>&1 || true
  mapfile -t names < <(python3 - "$MUTATION_SAMPLE" "${modules[@]}" <<'PY'
import json, sys
k, modules = int(sys.argv[1]), sys.argv[2:]
for m in modules:
    keys = sorted(json.load(open(f"mutants/glocal/{m}.py.meta"))["exit_code_by_key"])
    print("\n".join(keys[::k]))
PY
)
  echo "mutation_test: sample of ${#names[@]} mutants (every ${MUTATION_SAMPLE}th)"
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
out, elapsed, modules = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
counts = {}
for line in (out / "results.txt").read_text().splitlines():
    name, _, status = line.strip().rpartition(": ")
    if name.startswith("glocal.") and any(name.startswith(f"glocal.{m}.") for m in modules):
        counts[status] = counts.get(status, 0) + 1
killed = counts.get("killed", 0)
judged = killed + counts.get("survived", 0) + counts.get("timeout", 0) + counts.get("suspicious", 0)
score = killed / judged if judged else None
counts.pop("not checked", None)  # outside a sample
summary = {"modules": modules, "elapsed_s": elapsed, "counts": counts,
           "score": score, "score_definition": "killed / (killed + survived + timeout + suspicious)"}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(f"mutation_test: {counts} score {score if score is None else round(score, 3)} in {elapsed} s "
      f"(survivors: grep survived {out / 'results.txt'}; inspect one with `mutmut show NAME` in the work dir)")
PY
