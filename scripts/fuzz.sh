#!/usr/bin/env bash
# Runs every fuzz target of every workspace module for FUZZTIME (default 5s).
# A real finding fails at once (the failing input is written to testdata/fuzz).
# Go's fuzz coordinator sometimes ends a short run with only "context deadline
# exceeded" when the machine is loaded; such a run is retried, up to three tries.
set -euo pipefail
fuzztime=${FUZZTIME:-5s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
count=0
for mod in $(go list -m -f '{{.Dir}}'); do
  for dir in $(cd "$mod" && go list -f '{{.Dir}}' ./...); do
    for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
      count=$((count + 1))
      for try in 1 2 3; do
        echo "fuzz ${dir#"$PWD"/} $target ($fuzztime, try $try)"
        if (cd "$dir" && go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" .) >"$log" 2>&1; then
          break
        fi
        if [ "$try" -lt 3 ] && grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"; then
          echo "  coordinator timed out (no finding); retrying"
          continue
        fi
        cat "$log"
        exit 1
      done
    done
  done
done
echo "fuzz: $count targets passed"
