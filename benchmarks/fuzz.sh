#!/usr/bin/env bash
# The fuzz tests of tests/test_fuzz.py with many more examples than CI runs (default 20000 per
# target; FUZZ_EXAMPLES=N to choose). Prints hypothesis' statistics: examples tried per target,
# and any failing input, shrunk.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_EXAMPLES="${FUZZ_EXAMPLES:-20000}" exec python -m pytest -q -p no:cacheprovider \
  --hypothesis-show-statistics tests/test_fuzz.py "$@"
