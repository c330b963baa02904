#!/usr/bin/env bash
# Run the HIL suite on real SocketCAN (vcan0/vcan1) inside one throw-away QEMU VM
# (../shared/hil/run-in-vcan-vm; see hil/README.md). Extra arguments go to pytest.
# HIL_RWDIR=dir keeps results: the JUnit file is written there as hil-junit.xml.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNNER=${DCM_HIL_RUNNER:-../shared/hil/run-in-vcan-vm}
[ -x "$RUNNER" ] || { echo "run-in-vm.sh: $RUNNER not found (the VM runner lives beside the repo)" >&2; exit 2; }
args=()
if [ -n "${HIL_RWDIR:-}" ]; then
  mkdir -p "$HIL_RWDIR"
  export HIL_RWDIR=$(cd "$HIL_RWDIR" && pwd)
  args+=(--junitxml "$HIL_RWDIR/hil-junit.xml")
fi
# -p no:cacheprovider: the VM's root is a throw-away overlay; nothing worth caching.
# Exit status 125 means the VM itself failed (QEMU under TCG has been seen to abort at boot, once);
# that is retried once. A test failure (any other status) is never retried.
for attempt in 1 2; do
  status=0
  "$RUNNER" .venv/bin/python -m pytest -q -p no:cacheprovider "${args[@]}" hil "$@" || status=$?
  [ "$status" -eq 125 ] && [ "$attempt" -eq 1 ] && { echo "run-in-vm.sh: the VM failed (125); booting it once more" >&2; continue; }
  exit "$status"
done
