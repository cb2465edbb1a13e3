#!/usr/bin/env bash
# One check of a GPU or TPU machine, ending in one table:
#   - the GPT-2 124M train step in bf16 (configs/gpt2_124m.py via benchmarks.run: tokens/s, MFU),
#   - decode (gpt_jax.generate, KV cache) of GPT-2 124M at batch 1 and 16,
#   - the tests marked `accelerator` (the cuDNN / splash attention kernels against the einsum reference).
#
#   benchmarks/device_check.sh           # on a GPU/TPU machine (minutes); refuses a CPU-only JAX
#   benchmarks/device_check.sh --tiny    # tiny shapes on any backend, CPU included (about a minute):
#                                        # checks the script itself (tests/test_attention_kernels.py runs it)
#
# Environment: OUT (folder for bench.json, accelerator.xml, device_check.md; default a new temp folder),
# PYTHON (default: python), DEVICE_CHECK_TESTS (pytest paths for `-m accelerator`, default: tests).
# Exit status: 0 when every benchmark ran and no accelerator test failed; 1 otherwise; 2 for bad usage.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

tiny=0
case "${1:-}" in
  "") ;;
  --tiny) tiny=1 ;;
  *) echo "usage: benchmarks/device_check.sh [--tiny]" >&2; exit 2 ;;
esac
PY="${PYTHON:-python}"
OUT="${OUT:-$(mktemp -d -t device_check.XXXXXX)}"
mkdir -p "$OUT" || exit 2
TESTS="${DEVICE_CHECK_TESTS:-tests}"

backend=$("$PY" -c "import jax; print(jax.default_backend())" 2>/dev/null) || {
  echo "error: JAX does not import with $PY; install the project first (pip install -e .)" >&2; exit 2; }
if [[ $tiny == 0 && $backend == cpu ]]; then
  echo "error: JAX sees no GPU or TPU (backend cpu); install jax[cuda12] or jax[tpu], or pass --tiny to check the script on CPU" >&2
  exit 2
fi

if [[ $tiny == 1 ]]; then
  bench=(--quick --cases=gpt2_124m,tiny)
else
  bench=(--cases=gpt2_124m,gpt2)
fi
echo "== benchmarks ($backend) -> $OUT/bench.json"
"$PY" -m benchmarks.run --only=train,decode "${bench[@]}" --out="$OUT/bench.json" --note=device_check
bench_rc=$?

echo "== tests marked accelerator ($TESTS)"
# shellcheck disable=SC2086  # DEVICE_CHECK_TESTS may name several paths
"$PY" -m pytest -m accelerator -q -rs -p no:cacheprovider --junitxml="$OUT/accelerator.xml" $TESTS
tests_rc=$?
[[ $tests_rc == 5 ]] && tests_rc=0  # none collected: nothing failed

"$PY" - "$OUT" "$bench_rc" "$tests_rc" <<'EOF'
import json, pathlib, sys
import xml.etree.ElementTree as ET

out, bench_rc, tests_rc = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rows = []
try:
    doc = json.loads((out / "bench.json").read_text())
except (OSError, ValueError) as e:
    doc = {}
    rows.append(("benchmarks", f"no results ({type(e).__name__})"))
if doc:
    rows.append(("machine", f"{doc.get('device_count')} x {doc.get('device_kind')} ({doc.get('backend')}), jax {doc.get('jax_version')}"))
for r in doc.get("train", []):
    what = f"train {r.get('case')}"
    if "error" in r:
        rows.append((what, "FAILED: " + r["error"]))
        continue
    mfu = "n/a" if r.get("mfu") is None else f"{r['mfu']:.1%}"
    rows.append((f"{what} {r['dtype']} ({r['batch_size']} x {r['block_size']})",
                 f"{r['tokens_per_sec']:,.0f} tokens/s, MFU {mfu}, {r['ms_per_step']:,.1f} ms/step"))
for r in doc.get("decode", []):
    what = f"decode {r.get('model')}"
    if "error" in r:
        rows.append((what, "FAILED: " + r["error"]))
        continue
    rows.append((f"{what} batch {r['batch']}",
                 f"{r['decode_tokens_per_sec']:,.0f} tokens/s, {r['ms_per_token']:.2f} ms/token"))
try:
    suite = ET.parse(out / "accelerator.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n, f, e, s = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    rows.append(("accelerator tests", f"{n - f - e - s} passed, {f + e} failed, {s} skipped"))
except (OSError, ET.ParseError, AttributeError) as exc:
    rows.append(("accelerator tests", f"no report ({type(exc).__name__})"))
ok = bench_rc == 0 and tests_rc == 0
rows.append(("status", "OK" if ok else f"FAILED (benchmarks exit {bench_rc}, tests exit {tests_rc})"))
text = "| check | result |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
(out / "device_check.md").write_text(text + "\n")
print("\n== device check\n" + text)
sys.exit(0 if ok else 1)
EOF
