#!/usr/bin/env bash
# Build the SAM application (functions + the wanflow layer) without a container.
#
# aws-sam-cli is not in requirements.lock: it pins versions that conflict with the project's locked
# dependencies, so it lives in its own virtualenv, .venv-sam/, created on first use.
# Usage: scripts/sam-build.sh [extra sam build arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

SAM_CLI_VERSION="${SAM_CLI_VERSION:-1.170.0}"
SAM_VENV=".venv-sam"
PYTHON="${PYTHON:-python3}"

# sam build with BuildMethod python3.13 needs a working python3.13 on PATH. A pyenv shim may exist
# without the version being selected, so test that it runs, not only that it is found.
python313_works() { python3.13 -c "import sys" >/dev/null 2>&1; }
if ! python313_works; then
    for candidate in "${HOME:-/root}"/.pyenv/versions/3.13*/bin /root/.pyenv/versions/3.13*/bin; do
        if [ -x "$candidate/python3.13" ]; then
            PATH="$candidate:$PATH"
            break
        fi
    done
fi
if ! python313_works; then
    echo "sam-build: a working python3.13 is needed on PATH (the Lambda runtime of template.yaml)" >&2
    exit 1
fi
export PATH

if [ ! -x "$SAM_VENV/bin/sam" ] || ! "$SAM_VENV/bin/sam" --version 2>/dev/null | grep -q "$SAM_CLI_VERSION"; then
    "$PYTHON" -m venv "$SAM_VENV"
    "$SAM_VENV/bin/pip" install --quiet "aws-sam-cli==$SAM_CLI_VERSION"
fi

# No telemetry and no update checks: builds stay offline apart from the package index.
export SAM_CLI_TELEMETRY=0
export SAM_CLI_DISABLE_VERSION_CHECK=1
exec "$SAM_VENV/bin/sam" build --template template.yaml "$@"
