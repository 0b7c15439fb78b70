#!/usr/bin/env bash
# The torch range, tried: one virtual environment per torch version, the package and its `test`
# extra installed there as a new user would (`pip install torch==V -e ".[test]"`, pip's default
# builds: from PyPI on Linux those are CUDA builds of several GB), then the tests that need
# neither Slurm nor a GPU (`-m "not slurm and not cuda"`). Prints one table row per version.
#
#   bash scripts/torch-matrix.sh                      # the default versions below
#   bash scripts/torch-matrix.sh 2.1.2 latest         # these only ("latest": the newest on PyPI)
#   bash scripts/torch-matrix.sh --keep 2.4.1         # keep the venv (and reuse it next time)
#
# Options: --dir DIR (venvs and logs; default /tmp/torch-matrix), --keep (keep each venv; a kept
# venv that already holds the version is reused, not rebuilt), --timeout SECONDS (pytest's
# limit per version, default 3600), --python PYTHON (the interpreter the venvs are made from).
# Each version's full pytest output stays in DIR/logs/torch-V.log; the table is DIR/table.md too.
# pyproject's pytest addopts apply (-ra --strict-markers -n 2 --dist loadgroup). Exit 1 when any
# version failed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DIR=/tmp/torch-matrix
KEEP=0
LIMIT=3600
PYTHON=python3
VERSIONS=()
while (($#)); do
    case "$1" in
        --dir) DIR=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --timeout) LIMIT=$2; shift 2 ;;
        --python) PYTHON=$2; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "torch-matrix.sh: unknown option $1" >&2; exit 2 ;;
        *) VERSIONS+=("$1"); shift ;;
    esac
done
((${#VERSIONS[@]})) || VERSIONS=(2.1.2 2.4.1 2.6.0 2.13.0 latest)
mkdir -p "$DIR/logs"

# A site-wide pip constraint may cap torch (this project's machines cap it at the release they
# keep on disk): the matrix must reach newer releases, so its pip runs take their constraints
# from an empty file (an empty PIP_CONSTRAINT does not override a config file's constraint).
# Everything else of pip's configuration (indexes, find-links, cache) is kept.
export PIP_CONSTRAINT=/dev/null
export PIP_DISABLE_PIP_VERSION_CHECK=1

rows=()
failed=0
for version in "${VERSIONS[@]}"; do
    venv="$DIR/venv-$version"
    log="$DIR/logs/torch-$version.log"
    spec="torch==$version"
    [[ $version == latest ]] && spec=torch
    echo "== torch $version: $venv" >&2
    if [[ $KEEP == 1 && -x $venv/bin/python ]] \
        && "$venv/bin/python" -c "import autograd_check" 2>/dev/null; then
        echo "   reusing the kept venv" >&2
    else
        rm -rf "$venv"
        "$PYTHON" -m venv "$venv"
        # A fresh venv: every dependency comes at the newest release its range allows, as a new
        # user gets it (numpy 2 beside an old torch included, when something pulls numpy in).
        if ! "$venv/bin/python" -m pip install -q "$spec" -e "$ROOT[test]" >"$log" 2>&1; then
            echo "   install failed (see $log)" >&2
            rows+=("| $version | - | - | install failed | - | - |")
            failed=1
            ((KEEP)) || rm -rf "$venv"
            continue
        fi
    fi
    # stderr of these imports goes away on purpose: only the version strings are wanted here
    torch_v=$("$venv/bin/python" -c "import torch; print(torch.__version__)" 2>/dev/null || echo "?")
    numpy_v=$("$venv/bin/python" -c "import numpy; print(numpy.__version__)" 2>/dev/null \
        || echo "none")
    start=$(date +%s)
    rc=0
    (cd "$ROOT" && timeout "$LIMIT" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
        -m "not slurm and not cuda" >>"$log" 2>&1) || rc=$?
    took=$(($(date +%s) - start))
    # pytest's closing line, "3 failed, 1480 passed, 6 skipped, 72 deselected in 812.10s" (-q;
    # without -q between "=" rules)
    summary=$(grep -E '^(=+ )?(no tests ran|[0-9]+ (passed|failed|errors?|skipped|deselected)).* in [0-9.]+s' \
        "$log" | tail -1 || true)
    count() { grep -oE "[0-9]+ $1" <<<"$summary" | grep -oE '^[0-9]+' || echo 0; }
    passed=$(count passed)
    fails=$(($(count failed) + $(count 'errors?')))
    skipped=$(count skipped)
    note=""
    ((rc == 124)) && note="timed out after ${LIMIT}s"
    ((rc != 0)) && failed=1
    [[ -z $summary && -z $note ]] && note="pytest exit $rc, no summary line"
    rows+=("| $torch_v | $numpy_v | $passed | $fails | $skipped | $((took / 60))m$((took % 60))s ${note:+($note)} |")
    echo "   ${rows[-1]}" >&2
    ((KEEP)) || rm -rf "$venv"
done

{
    echo "| torch | numpy | passed | failed | skipped | time |"
    echo "| --- | --- | ---: | ---: | ---: | ---: |"
    printf '%s\n' "${rows[@]}"
} | tee "$DIR/table.md"
exit "$failed"
