#!/usr/bin/env bash
# One-step setup + run for a fresh Debian / Raspberry Pi OS machine.
#   ./run.sh demo [dcm demo options]   install everything, then run the end-to-end demo
#   ./run.sh test [pytest options]     install everything, then run the test suite
#   ./run.sh setup                     install only
set -euo pipefail
cd "$(dirname "$0")"
VENV=${DCM_VENV:-.venv}

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
[ "${1:-demo}" != test ] || command -v java >/dev/null 2>&1 || need_apt+=(default-jre-headless)  # Spark tests
if [ "${1:-demo}" = test ]; then  # the dashboard's browser tests (tests/test_api_browser.py)
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "run.sh: installing Debian packages: ${need_apt[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# the test suite also runs the batch views on Spark (PySpark + a JRE); a demo or a Pi does not need it
EXTRAS=${DCM_EXTRAS:-test}
CHECK=duckdb
if [ "${1:-demo}" = test ] || [ -n "${CI:-}" ]; then EXTRAS=test,spark; CHECK=duckdb,pyspark; fi
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import dcm, can, cantools, aiomqtt, pyarrow, pytest, '"$CHECK" >/dev/null 2>&1 \
   || [ pyproject.toml -nt "$VENV/.dcm-installed" ]; then
  echo "run.sh: installing Python dependencies into $VENV" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
  touch "$VENV/.dcm-installed"
fi

cmd=${1:-demo}; shift || true
case "$cmd" in
  setup) ;;
  demo)  # for a person: the demo, then the dashboard on its data (--json or --no-serve: just the summary)
    serve=(--serve)
    args=()
    for a in "$@"; do
      case "$a" in --json|--serve|--serve=*) serve=() ;; esac
      [ "$a" = --no-serve ] && serve=() || args+=("$a")
    done
    exec "$VENV/bin/dcm" demo ${serve[@]+"${serve[@]}"} ${args[@]+"${args[@]}"} ;;
  test) exec "$VENV/bin/python" -m pytest "$@" ;;
  *) echo "usage: ./run.sh demo|test|setup [args]" >&2; exit 2 ;;
esac
